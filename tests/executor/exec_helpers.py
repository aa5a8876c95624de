"""Shared builders for the executor tests (importable through tests/executor/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from binance_emulator import BinanceEmulator

from executor.journal import Journal
from executor.live import JournaledExecutor
from executor.workflow import Prepared
from models.book import Book, FuturesPosition
from models.instruments import FuturesContract
from models.market import MarketSnapshot
from models.risk import RiskModel
from optimizer.solution import Costs, MarginReport, Position, Solution

ROOT = Path(__file__).resolve().parents[2]
SEED_BOOK = ROOT / "examples" / "seed_example_1.toml"

VOLS = {"BTC": 0.55, "ETH": 0.70, "SOL": 0.95}
RHO = 0.7


def risk_model(symbols: tuple[str, ...] = ("BTC", "ETH", "SOL")) -> RiskModel:
    """Sigma_ij = vol_i vol_j (rho off the diagonal, 1 on it)."""
    v = np.array([VOLS[s] for s in symbols])
    corr = np.full((len(v), len(v)), RHO)
    np.fill_diagonal(corr, 1.0)
    return RiskModel.from_covariance(symbols, np.outer(v, v) * corr)


def covariance(symbols: tuple[str, ...] = ("BTC", "ETH", "SOL")) -> np.ndarray:
    v = np.array([VOLS[s] for s in symbols])
    corr = np.full((len(v), len(v)), RHO)
    np.fill_diagonal(corr, 1.0)
    cov: np.ndarray = np.outer(v, v) * corr
    return cov


def three_asset_book(contracts: Mapping[str, FuturesContract] | None = None,
                     futures: Mapping[str, FuturesPosition] | None = None,
                     cash: float = 3000.0) -> Book:
    """The seed article's book: 0.1 BTC, 1 ETH, 10 SOL, 50/30/20 target, one perp each."""
    from models.instruments import SpotAsset

    cons = contracts or {}
    con = tuple(cons.get(f"{a}-PERP", FuturesContract(f"{a}-PERP", a)) for a in ("BTC", "ETH", "SOL"))
    return Book(assets=tuple(SpotAsset(a) for a in ("BTC", "ETH", "SOL")), contracts=con,
                spot={"BTC": 0.1, "ETH": 1.0, "SOL": 10.0},
                targets={"BTC": 0.5, "ETH": 0.3, "SOL": 0.2}, cash=cash,
                futures=dict(futures or {}), name="test book")


def market(prices: Mapping[str, float] | None = None) -> MarketSnapshot:
    p = dict(prices or {"BTC": 60_000.0, "ETH": 2_500.0, "SOL": 150.0})
    return MarketSnapshot(time=pd.Timestamp("2024-06-01", tz="UTC"), spot=p,
                          mark={f"{a}-PERP": v for a, v in p.items()},
                          half_spread={f"{a}-PERP": 0.0 for a in p})


def solution_with(targets: Mapping[str, float]) -> Solution:
    """A Solution carrying only target notionals (USD) per contract: what plan_orders reads."""
    pos = tuple(Position(s, s.split("-")[0], n, 0.0) for s, n in targets.items())
    return Solution(status="optimal", solver="test", solvers_tried=(), solve_time_ms=0.0,
                    total_time_ms=0.0, nav=0.0, base=1.0, tracking_error_before=0.0,
                    tracking_error_after=0.0, tracking_error_unrounded=0.0, trades=(),
                    target_positions=pos, costs=Costs(0.0, 0.0, 0.0, 0.0, 1.0),
                    margin=MarginReport(0.0, 0.0, 0.0, 0.0, 0.0), gross_leverage=0.0,
                    net_exposure=0.0, effective_weights_before={}, effective_weights_after={},
                    targets={})


def te_reference(spot_usd: np.ndarray, futures_usd: np.ndarray, targets: np.ndarray,
                 cov: np.ndarray, base: float) -> float:
    """sqrt(d' Sigma d), d = (spot + futures) / V - w*: the tracking error by hand."""
    d = (spot_usd + futures_usd) / base - targets
    return float(np.sqrt(d @ cov @ d))


@contextmanager
def cli_emulator(monkeypatch: pytest.MonkeyPatch, api_key: str,
                 secret: str) -> Iterator[BinanceEmulator]:
    """A loopback emulator that `fbr ... --exchange binanceusdm` reaches: the keys in the
    environment variables the CLI reads, the CLI's exchange factory wired to the emulator, no
    backoff sleeps. Stopped on exit."""
    from fbr import execute_wiring

    emu = BinanceEmulator(api_key=api_key, secret=secret).start()
    monkeypatch.setenv("FBR_BINANCEUSDM_API_KEY", api_key)
    monkeypatch.setenv("FBR_BINANCEUSDM_SECRET", secret)
    monkeypatch.setitem(execute_wiring.EXCHANGE_FACTORIES, "binanceusdm",
                        lambda c: emu.exchange(api_key=c.api_key, secret=c.secret, timeout=400))
    monkeypatch.setattr(execute_wiring, "BACKOFF_S", 0.0)
    monkeypatch.setattr(execute_wiring, "RECONCILE_DELAYS_S", (0.0, 0.0))
    monkeypatch.setattr(execute_wiring, "RECONCILE_SETTLE_S", 0.0)
    try:
        yield emu
    finally:
        emu.stop()


class SimClock:
    """A simulated clock (seconds): ``sleep`` moves it on at once. The emulator's lookup lag and
    late executions and the executor's waits share it, so a 15 s reconcile window takes no time."""

    def __init__(self, start_s: float = 1_000.0) -> None:
        self.t = start_s
        self.slept: list[float] = []

    def now(self) -> float:
        """The simulated time (s)."""
        return self.t

    def sleep(self, dt: float) -> None:
        """Advance by ``dt`` seconds (recorded)."""
        self.slept.append(dt)
        self.t += max(float(dt), 0.0)


def seed_executor(emu: BinanceEmulator, journal: Path, clock: SimClock, *,
                  lock_dir: Path | None = None, t0_ms: int = 0
                  ) -> tuple[Prepared, Journal, JournaledExecutor]:
    """The seed book's plan on the emulator through real ccxt, its journal at ``journal`` and a
    journaled executor on ``clock`` (ms: ``t0_ms`` + the clock's seconds x 1000)."""
    from executor.ccxt_gateway import CcxtGateway
    from executor.live import PlanBasis, RetryPolicy
    from executor.plan import PlanOptions
    from executor.workflow import prepare_plan
    from fbr.config import load_book_file

    loaded = load_book_file(SEED_BOOK)
    gw = CcxtGateway(emu.exchange(timeout=400), base_delay_s=0.0)
    prep = prepare_plan(gw, loaded.book, loaded.market, loaded.risk, loaded.settings, PlanOptions())
    j = Journal(journal)
    ex = JournaledExecutor(gw, j, PlanBasis(prep.book, prep.market, prep.instruments, loaded.risk),
                           retry=RetryPolicy(base_delay_s=0.0), sleep=clock.sleep,
                           clock=lambda: t0_ms + int(1000 * clock.now()), lock_dir=lock_dir)
    return prep, j, ex


def filled(emu: BinanceEmulator, symbol: str) -> float:
    """Signed quantity the emulator's trades on ``symbol`` (e.g. BTCUSDT) add up to."""
    return float(sum(t.qty if t.side == "BUY" else -t.qty for t in emu.trades if t.symbol == symbol))
