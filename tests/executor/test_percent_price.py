"""PERCENT_PRICE: Binance USD-M refuses a LIMIT BUY priced above mark x multiplierUp (-4016 "Price is
higher than mark price multiplier cap.") and a LIMIT SELL below mark x multiplierDown (-4024 "Price is
lower than mark price multiplier floor."); ccxt maps both to BadRequest. The emulator enforces it at
its current mark; fbr reads the band from the market's ``info.filters`` and holds each limit price
inside it (a buy at min(mark x (1 + guard), mark x up) rounded down to the tick, a sell at
max(mark x (1 - guard), mark x down) rounded up), with a plan warning naming the contracts clamped.
Real ccxt against the emulator.

Markets here: ETHUSDT with a 0.98 / 1.02 band (Binance lists bands that narrow), BTCUSDT and SOLUSDT
0.95 / 1.05; marks BTC 60,123.45 (tick 0.1), ETH 3,001.37 (tick 0.01), SOL 150.07 (tick 0.01). The
seed book's plan sells BTC and buys ETH and SOL.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import ccxt
import pytest
from binance_emulator import DEFAULT_MARKETS, BinanceEmulator, EmuMarket
from exec_helpers import SEED_BOOK, SimClock

from executor.base import OrderStatus, Outcome
from executor.ccxt_gateway import CcxtGateway
from executor.journal import Journal
from executor.live import JournaledExecutor, PlanBasis, RetryPolicy
from executor.plan import OrderType, PlanOptions, plan_orders
from executor.workflow import Prepared, account_view, prepare_plan
from fbr.config import load_book_file

ETH = "ETH/USDT:USDT"
MARKS = {"BTCUSDT": 60_123.45, "ETHUSDT": 3_001.37, "SOLUSDT": 150.07}


def _markets() -> tuple[EmuMarket, ...]:
    """The default markets, ETHUSDT's band narrowed to 0.98 / 1.02."""
    return tuple(dataclasses.replace(m, multiplier_up="1.0200", multiplier_down="0.9800")
                 if m.symbol == "ETHUSDT" else m for m in DEFAULT_MARKETS)


def _prepared(emu: BinanceEmulator, guard: float) -> tuple[CcxtGateway, Prepared]:
    """The seed book's limit plan at slippage guard ``guard`` on ``emu`` at :data:`MARKS`."""
    for sym, px in MARKS.items():
        emu.set_mark(sym, px)
    loaded = load_book_file(SEED_BOOK)
    gw = CcxtGateway(emu.exchange(timeout=400), base_delay_s=0.0)
    prep = prepare_plan(gw, loaded.book, loaded.market, loaded.risk, loaded.settings,
                        PlanOptions(order_type=OrderType.LIMIT, slippage_guard=guard))
    return gw, prep


def _prices(prep: Prepared) -> dict[str, tuple[str, float | None]]:
    return {leg.symbol: (leg.side.value, leg.limit_price) for leg in prep.plan.legs}


# --- the emulator --------------------------------------------------------------------------------

def test_the_emulator_refuses_limits_outside_percent_price_at_its_mark() -> None:
    """Mark 3,000: cap 3,000 x 1.05 = 3,150, floor 3,000 x 0.95 = 2,850. A buy at 3,150.01 or a
    sell at 2,849.99 is refused (-4016 / -4024, BadRequest); the edges themselves are accepted, and
    so are a buy below the mark and a sell above it (PERCENT_PRICE bounds one side each)."""
    with BinanceEmulator() as emu:
        ex = emu.exchange(timeout=400)
        ex.load_markets()
        ioc = {"timeInForce": "IOC"}
        with pytest.raises(ccxt.BadRequest, match=r"-4016.*multiplier cap"):
            ex.create_order(ETH, "limit", "buy", 0.01, 3_150.01, ioc)
        with pytest.raises(ccxt.BadRequest, match=r"-4024.*multiplier floor"):
            ex.create_order(ETH, "limit", "sell", 0.01, 2_849.99, ioc)
        assert emu.accepted_orders() == [] and emu.positions["ETHUSDT"] == 0.0
        assert ex.create_order(ETH, "limit", "buy", 0.01, 3_150.0, ioc)["status"] == "closed"
        assert ex.create_order(ETH, "limit", "sell", 0.01, 2_850.0, ioc)["status"] == "closed"
        assert ex.create_order(ETH, "limit", "buy", 0.01, 2_000.0)["status"] == "open"
        assert ex.create_order(ETH, "limit", "sell", 0.01, 4_000.0)["status"] == "open"
        emu.set_mark("ETHUSDT", 2_900.0)  # the band follows the mark: cap 3,045
        with pytest.raises(ccxt.BadRequest, match="-4016"):
            ex.create_order(ETH, "limit", "buy", 0.01, 3_045.01, ioc)
        assert ex.create_order(ETH, "limit", "buy", 0.01, 3_045.0, ioc)["status"] == "closed"


def test_market_orders_are_not_bound_by_percent_price() -> None:
    with BinanceEmulator() as emu:
        ex = emu.exchange(timeout=400)
        ex.load_markets()
        assert ex.create_order(ETH, "market", "buy", 0.01)["status"] == "closed"


# --- the plan ------------------------------------------------------------------------------------

def test_the_gateway_reads_each_contracts_band() -> None:
    with BinanceEmulator(markets=_markets()) as emu:
        _, prep = _prepared(emu, 0.005)
        bands = {s: i.price_band for s, i in prep.instruments.items()}
        assert bands == {"BTC-PERP": (0.95, 1.05), "ETH-PERP": (0.98, 1.02),
                         "SOL-PERP": (0.95, 1.05)}


def test_a_wide_guard_is_held_inside_the_band_and_the_plan_fills(tmp_path: Path) -> None:
    """Guard 0.10 (accepted: [0, 0.5)). By hand:
    BTC sell: max(60,123.45 x 0.90 = 54,111.105, 60,123.45 x 0.95 = 57,117.2775) -> up to 0.1:
    57,117.3; ETH buy: min(3,001.37 x 1.10 = 3,301.507, 3,001.37 x 1.02 = 3,061.3974) -> down to
    0.01: 3,061.39; SOL buy: min(165.077, 150.07 x 1.05 = 157.5735) -> 157.57. Every leg is sent
    and fills (none refused -4016/-4024); the plan's warning names the three contracts and bands."""
    clock = SimClock()
    with BinanceEmulator(markets=_markets(), lag_clock=clock.now).start() as emu:
        gw, prep = _prepared(emu, 0.10)
        assert _prices(prep) == {"BTC-PERP": ("sell", 57_117.3), "ETH-PERP": ("buy", 3_061.39),
                                 "SOL-PERP": ("buy", 157.57)}
        (warning,) = prep.plan.warnings
        for text in ("slippage guard 10.00%", "PERCENT_PRICE", "BTC-PERP (band 0.95-1.05",
                     "ETH-PERP (band 0.98-1.02", "SOL-PERP (band 0.95-1.05",
                     "buy limit 3,061.39 USD at mark 3,001.37, not 3,301.5", "at most 2.00%"):
            assert text in warning
        j = Journal(tmp_path / "j.sqlite")
        loaded = load_book_file(SEED_BOOK)
        ex = JournaledExecutor(gw, j, PlanBasis(prep.book, prep.market, prep.instruments,
                                                loaded.risk),
                               retry=RetryPolicy(base_delay_s=0.0), sleep=clock.sleep)
        report = ex.execute(prep.plan)
        assert report.outcome == Outcome.COMPLETE
        assert {r.status for r in j.orders(prep.plan.plan_id)} == {OrderStatus.FILLED}
        for book_sym, bsym in (("BTC-PERP", "BTCUSDT"), ("ETH-PERP", "ETHUSDT"),
                               ("SOL-PERP", "SOLUSDT")):
            assert emu.positions[bsym] == pytest.approx(prep.plan.reachable[book_sym], abs=1e-9)
        j.close()


def test_only_the_contracts_whose_band_the_guard_passes_are_clamped() -> None:
    """Guard 0.03: ETH's cap 1.02 < 1.03 -> 3,061.39; BTC (0.97 > 0.95): 60,123.45 x 0.97 =
    58,319.7465 -> up to 0.1: 58,319.8; SOL (1.03 < 1.05): 150.07 x 1.03 = 154.5721 -> 154.57.
    The warning names ETH-PERP alone."""
    with BinanceEmulator(markets=_markets()) as emu:
        _, prep = _prepared(emu, 0.03)
        assert _prices(prep) == {"BTC-PERP": ("sell", 58_319.8), "ETH-PERP": ("buy", 3_061.39),
                                 "SOL-PERP": ("buy", 154.57)}
        (warning,) = prep.plan.warnings
        assert "ETH-PERP (band 0.98-1.02" in warning
        assert "BTC-PERP" not in warning and "SOL-PERP" not in warning


def test_a_guard_inside_the_band_leaves_the_plan_unchanged() -> None:
    """Guard 0.005: BTC 60,123.45 x 0.995 = 59,822.83275 -> up to 0.1: 59,822.9; ETH 3,001.37 x
    1.005 = 3,016.37685 -> 3,016.37; SOL 150.07 x 1.005 = 150.82035 -> 150.82: the guard's prices,
    no warning, the same legs as on instruments without a band."""
    with BinanceEmulator(markets=_markets()) as emu:
        _, prep = _prepared(emu, 0.005)
        assert _prices(prep) == {"BTC-PERP": ("sell", 59_822.9), "ETH-PERP": ("buy", 3_016.37),
                                 "SOL-PERP": ("buy", 150.82)}
        assert prep.plan.warnings == ()
        bandless = {s: dataclasses.replace(i, price_band=None) for s, i in prep.instruments.items()}
        again = plan_orders(prep.solution, prep.book, prep.market, bandless, prep.plan.options,
                            plan_id=prep.plan.plan_id)
        assert again.legs == prep.plan.legs and again.warnings == ()


def test_resume_after_a_move_keeps_limit_legs_inside_todays_band(tmp_path: Path) -> None:
    """A plan journalled, then a crash before its first send; ETH's mark falls 3% before the
    resume. The plan's ETH buy limit (3,061.39, the band's edge at the old mark 3,001.37 x 1.02)
    is above today's cap 2,911.33 x 1.02 = 2,969.5566 (Binance refuses it, -4016): the resume
    prices its limit legs at today's marks, as it re-plans (executor.leg_limits.at_marks), so no
    leg is refused and the plan completes (a review of this session's diff)."""
    clock = SimClock()
    with BinanceEmulator(markets=_markets(), lag_clock=clock.now).start() as emu:
        gw, prep = _prepared(emu, 0.10)
        j = Journal(tmp_path / "j.sqlite")
        j.record_plan(prep.plan, str(SEED_BOOK), gw.account_key())  # journalled, then a crash
        emu.set_mark("ETHUSDT", round(MARKS["ETHUSDT"] * 0.97, 2))  # 2,911.33
        loaded = load_book_file(SEED_BOOK)
        acc_b, market, instruments = account_view(gw, loaded.book, loaded.market)
        ex = JournaledExecutor(gw, j, PlanBasis(acc_b, market, instruments, loaded.risk),
                               retry=RetryPolicy(base_delay_s=0.0), sleep=clock.sleep)
        report = ex.resume(prep.plan.plan_id)
        rows = j.orders(prep.plan.plan_id)
        cap = 2_911.33 * 1.02
        eth = [leg for leg in prep.plan.legs if leg.symbol == "ETH-PERP"]
        assert eth and eth[0].limit_price is not None
        rejected = [r for r in rows if r.status == OrderStatus.REJECTED]
        assert rejected == [], f"ETH buy limit {eth[0].limit_price} > today's cap {cap:.4f}"
        assert report.outcome == Outcome.COMPLETE
        j.close()
