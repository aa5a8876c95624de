"""Embedded synthetic market data: a seeded, deterministic generator calibrated to crypto.

Everything here is SYNTHETIC (snapshots carry ``synthetic=True``); it exists so the engine, the
tests and the examples run without a network or a data directory.

The model, per day t and asset i (daily log returns, 365-day year):

    l_it = s_i * sqrt(h_t) * (b_i z_t + c u_{g(i),t} + e_i eps_it)

- z_t: the common crypto factor, u_g: a sector factor (sector g(i)), eps_i: idiosyncratic; all
  Student-t with ``T_DF`` degrees of freedom scaled to unit variance (fat tails), clipped at
  +-``SHOCK_CLIP`` standard deviations.
- h_t: a market-wide GARCH(1,1) variance multiplier with unit mean driven by the common shock,
  h_t = w + a h_{t-1} z_{t-1}^2 + b h_{t-1} (w = 1 - a - b): volatility clustering. Sharing it keeps
  the conditional correlations fixed.
- b_i^2 + c^2 + e_i^2 = 1, so the correlation of two assets is b_i b_j (+ c^2 in the same sector):
  0.56 .. 0.89 with the loadings used here.
- s_i: daily vol; each asset's log-return series is finally rescaled so its realised annual vol
  equals its calibrated target (BTC 55%, ETH 70%, SOL 95%, others 60% .. 120%).

Funding (fraction per 8 h settlement, at 00/08/16 UTC) follows a market-wide 3-state Markov chain
(calm +0.01%, hot +0.03 .. 0.05%, negative -0.01 .. -0.03%; stationary mix 80/10/10, so the mean is
about +0.01% per 8 h) with small per-asset noise. The perp mark is spot * (1 + basis), the basis an
AR(1) pulled towards the day's mean funding rate. ADV is USD per day; half spreads are fractions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd

from models.errors import ValidationError
from models.instruments import ContractKind, FuturesContract
from models.market import MarketSnapshot
from models.risk import returns_from_prices

DAYS_PER_YEAR = 365.0
T_DF = 4.0
SHOCK_CLIP = 6.0
GARCH_ALPHA = 0.08
GARCH_BETA = 0.90
SECTOR_LOADING = 0.25
SETTLEMENT_HOURS = (0, 8, 16)
SETTLEMENTS_PER_DAY = len(SETTLEMENT_HOURS)

#: Funding regimes: calm, hot, negative. Per-8h transition matrix (rows: from, columns: to).
FUNDING_CALM = 1e-4
FUNDING_TRANSITIONS = np.array([
    [0.970, 0.015, 0.015],
    [0.120, 0.880, 0.000],
    [0.120, 0.000, 0.880],
])
BASIS_PERSISTENCE = 0.8
#: Longest history generated (days; pandas timestamps end in 2262, 100 years is plenty).
MAX_DAYS = 36_500
#: Settlements (30 days) averaged for a dated future's carry in ``SyntheticHistory.snapshot``.
CARRY_WINDOW = 90
BASIS_NOISE = 3e-4


class CoinSpec(NamedTuple):
    """Calibration of one named coin: start price (USD), annual vol, market loading, sector,
    average daily volume (USD/day) and half spread (fraction)."""

    price: float
    vol: float
    beta: float
    sector: int
    adv_usd: float
    half_spread: float


#: Named coins in the order ``default_symbols`` lists them; then SYN011, SYN012, ...
NAMED_COINS: dict[str, CoinSpec] = {
    "BTC": CoinSpec(60000.0, 0.55, 0.92, 0, 20e9, 0.5e-4),
    "ETH": CoinSpec(3000.0, 0.70, 0.90, 1, 10e9, 0.5e-4),
    "SOL": CoinSpec(150.0, 0.95, 0.84, 1, 3e9, 1.0e-4),
    "BNB": CoinSpec(550.0, 0.65, 0.80, 1, 1.5e9, 1.0e-4),
    "XRP": CoinSpec(0.55, 0.85, 0.78, 2, 2e9, 1.0e-4),
    "ADA": CoinSpec(0.45, 0.85, 0.82, 1, 5e8, 1.5e-4),
    "DOGE": CoinSpec(0.12, 1.10, 0.78, 2, 1e9, 1.5e-4),
    "AVAX": CoinSpec(30.0, 1.00, 0.82, 1, 4e8, 2.0e-4),
    "LINK": CoinSpec(15.0, 0.95, 0.82, 3, 4e8, 2.0e-4),
    "LTC": CoinSpec(80.0, 0.80, 0.85, 0, 4e8, 2.0e-4),
}


def default_symbols(n: int) -> tuple[str, ...]:
    """``n`` asset symbols: the named coins first, then SYN011, SYN012, ... (n >= 1)."""
    if n < 1:
        raise ValidationError("synthetic.n", f"is {n}", "ask for at least one symbol")
    named = list(NAMED_COINS)[:n]
    return (*named, *(f"SYN{i:03d}" for i in range(len(NAMED_COINS) + 1, n + 1)))


def _coin_specs(symbols: Sequence[str], rng: np.random.Generator) -> list[CoinSpec]:
    """Named coins use the table; others get random but plausible parameters (from ``rng``)."""
    n_sectors = 4 + min(len(symbols) // 100, 8)
    specs = []
    for sym in symbols:
        draws = rng.uniform(size=5)  # drawn for every symbol so positions stay reproducible
        if sym in NAMED_COINS:
            specs.append(NAMED_COINS[sym])
            continue
        adv = 10 ** (6.7 + 2.0 * draws[4])  # 5e6 .. 5e8 USD/day
        specs.append(CoinSpec(
            price=float(10 ** (-1.3 + 4.0 * draws[0])),  # 0.05 .. 500 USD
            vol=float(0.60 + 0.60 * draws[1]),
            beta=float(0.75 + 0.13 * draws[2]),
            sector=int(draws[3] * n_sectors),
            adv_usd=float(adv),
            half_spread=float(np.clip(1e-4 * math.sqrt(1e9 / adv), 1e-4, 2e-3)),
        ))
    return specs


def _student_t(rng: np.random.Generator, size: tuple[int, ...]) -> np.ndarray:
    """Student-t(T_DF) draws scaled to unit variance (var of t(df) is df / (df - 2)), clipped."""
    z = rng.standard_t(T_DF, size=size) * math.sqrt((T_DF - 2.0) / T_DF)
    return np.clip(z, -SHOCK_CLIP, SHOCK_CLIP)


def _garch_multiplier(shocks: np.ndarray) -> np.ndarray:
    """Unit-mean GARCH(1,1) variance path h_t for shocks (T, ...): h_0 = 1,
    h_t = (1 - a - b) + a h_{t-1} z_{t-1}^2 + b h_{t-1}."""
    h = np.ones_like(shocks)
    omega = 1.0 - GARCH_ALPHA - GARCH_BETA
    for t in range(1, shocks.shape[0]):
        h[t] = omega + h[t - 1] * (GARCH_ALPHA * shocks[t - 1] ** 2 + GARCH_BETA)
    return h


def _log_returns(specs: list[CoinSpec], n_days: int, rng: np.random.Generator) -> np.ndarray:
    """Daily log returns (n_days, N), zero expected drift, each column rescaled so its realised
    annual vol (std * sqrt(365)) equals the target."""
    n = len(specs)
    beta = np.array([s.beta for s in specs])
    sector = np.array([s.sector for s in specs])
    idio_w = np.sqrt(1.0 - beta**2 - SECTOR_LOADING**2)
    z = _student_t(rng, (n_days, 1))
    u = _student_t(rng, (n_days, int(sector.max()) + 1))
    eps = _student_t(rng, (n_days, n))
    x = np.sqrt(_garch_multiplier(z)) * (beta * z + SECTOR_LOADING * u[:, sector] + idio_w * eps)
    target = np.array([s.vol for s in specs]) / math.sqrt(DAYS_PER_YEAR)
    realised = x.std(axis=0, ddof=1) if n_days > 1 else np.ones(n)  # one day: no estimate
    scale = target / np.maximum(realised, 1e-12)
    return np.asarray(x * scale, dtype=float)


def _funding_regimes(n: int, rng: np.random.Generator) -> np.ndarray:
    """Market-wide regime per settlement (0 calm, 1 hot, 2 negative), a Markov chain from calm."""
    cum = np.cumsum(FUNDING_TRANSITIONS, axis=1)
    draws = rng.uniform(size=n)
    states = np.zeros(n, dtype=int)
    for k in range(1, n):
        states[k] = int(np.searchsorted(cum[states[k - 1]], draws[k], side="right"))
    return np.minimum(states, 2)


def _funding_rates(n_settle: int, n_assets: int, rng: np.random.Generator) -> np.ndarray:
    """Funding per 8 h settlement (n_settle, N): a regime level per asset plus small noise."""
    states = _funding_regimes(n_settle, rng)
    hot = rng.uniform(3e-4, 5e-4, size=n_assets)
    neg = rng.uniform(-3e-4, -1e-4, size=n_assets)
    levels = np.vstack([np.full(n_assets, FUNDING_CALM), hot, neg])  # (3, N)
    noise_sd = np.array([1e-5, 5e-5, 5e-5])[states][:, None]
    return np.asarray(levels[states] + noise_sd * rng.standard_normal((n_settle, n_assets)))


def _basis(daily_funding: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Daily perp basis (mark / spot - 1): b_t = phi b_{t-1} + (1 - phi) f_t + sigma eps_t,
    f_t the day's mean funding per 8 h; starts at f_0."""
    eps = rng.standard_normal(daily_funding.shape) * BASIS_NOISE
    b = np.empty_like(daily_funding)
    b[0] = daily_funding[0]
    for t in range(1, b.shape[0]):
        b[t] = BASIS_PERSISTENCE * b[t - 1] + (1 - BASIS_PERSISTENCE) * daily_funding[t] + eps[t]
    return b


def _row(frame: pd.DataFrame, pos: int) -> dict[str, float]:
    """Row ``pos`` of ``frame`` as {column: float}."""
    values = frame.to_numpy(dtype=float)[pos]
    return {str(c): float(v) for c, v in zip(frame.columns, values, strict=True)}


def _utc(ts: pd.Timestamp | str) -> pd.Timestamp:
    t = pd.Timestamp(ts)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


@dataclass(frozen=True)
class SyntheticHistory:
    """A synthetic market history (see the module docstring for the model).

    ``spot`` and ``mark``: daily closes (USD), UTC index at 00:00, one column per asset;
    ``funding``: fraction per 8 h settlement at 00/08/16 UTC; ``adv_usd`` (USD/day) and
    ``half_spread`` (fraction) per asset; ``seed`` the generator's seed.
    """

    spot: pd.DataFrame
    mark: pd.DataFrame
    funding: pd.DataFrame
    adv_usd: dict[str, float]
    half_spread: dict[str, float]
    seed: int

    @property
    def symbols(self) -> tuple[str, ...]:
        """Asset symbols, in column order."""
        return tuple(str(c) for c in self.spot.columns)

    @property
    def returns(self) -> pd.DataFrame:
        """Daily simple returns p_t / p_{t-1} - 1 (first day dropped)."""
        return returns_from_prices(self.spot)

    def _day_position(self, at: pd.Timestamp | None) -> int:
        """Row of the last daily close at or before ``at`` (the last day when None)."""
        if at is None:
            return len(self.spot.index) - 1
        t = _utc(at)
        pos = int(self.spot.index.searchsorted(t, side="right")) - 1
        if pos < 0:
            raise ValidationError("snapshot.at", f"is {t}, before the history starts "
                                  f"({self.spot.index[0]})", "pick a time inside the history")
        return pos

    def _funding_at(self, t: pd.Timestamp) -> dict[str, float]:
        """The latest settlement's rates at or before ``t`` (the first one if ``t`` is earlier)."""
        pos = max(int(self.funding.index.searchsorted(t, side="right")) - 1, 0)
        return _row(self.funding, pos)

    def _carry_rate(self, asset: str, t: pd.Timestamp) -> float:
        """Mean funding per 8 h over the ``CARRY_WINDOW`` settlements at or before ``t``."""
        end = max(int(self.funding.index.searchsorted(t, side="right")), 1)
        column = self.funding[asset].to_numpy(dtype=float)
        return float(column[max(end - CARRY_WINDOW, 0):end].mean())

    def _contract_mark(self, c: FuturesContract, t: pd.Timestamp, spot: float,
                       perp_mark: float) -> float:
        """Perp: the synthetic mark. Dated: the perp mark plus the carry the recent funding
        implies until expiry, spot * f_bar * 3 * days_left (f_bar: trailing mean per 8 h)."""
        if c.kind != ContractKind.DATED or c.expiry is None:
            return perp_mark
        days_left = max((_utc(pd.Timestamp(c.expiry)) - t).total_seconds() / 86400.0, 0.0)
        carry = self._carry_rate(c.underlying, t) * SETTLEMENTS_PER_DAY * days_left
        return perp_mark + spot * carry

    def snapshot(self, contracts: Sequence[FuturesContract] = (),
                 at: pd.Timestamp | None = None) -> MarketSnapshot:
        """The market at ``at`` (default: the last day), labelled ``synthetic=True``.

        Spot for every asset; per contract (matched by ``contract.underlying``) the mark, the latest
        funding at or before ``at`` (scaled to the contract's interval: rate_8h * interval_h / 8;
        none for dated futures), half spread and ADV of the underlying.
        """
        pos = self._day_position(at)
        t = pd.Timestamp(self.spot.index[pos])
        funding_row = self._funding_at(_utc(at) if at is not None else t)
        spot = _row(self.spot, pos)
        perp_mark = _row(self.mark, pos)
        mark: dict[str, float] = {}
        funding: dict[str, float] = {}
        half: dict[str, float] = {}
        adv: dict[str, float] = {}
        for c in contracts:
            if c.underlying not in self.spot.columns:
                raise ValidationError(f"contracts.{c.symbol}.underlying",
                                      f"is {c.underlying!r}, not in the synthetic history",
                                      f"use one of {list(self.symbols)[:10]} or generate it")
            rate_8h = funding_row[c.underlying]
            mark[c.symbol] = self._contract_mark(c, t, spot[c.underlying],
                                                 perp_mark[c.underlying])
            if c.kind == ContractKind.PERPETUAL:
                funding[c.symbol] = rate_8h * c.funding_interval_h / 8.0
            half[c.symbol] = self.half_spread[c.underlying]
            adv[c.symbol] = self.adv_usd[c.underlying]
        return MarketSnapshot(time=t, spot=spot, mark=mark, funding=funding, half_spread=half,
                              adv=adv, spot_half_spread=dict(self.half_spread), synthetic=True)


def _check_args(symbols: Sequence[str], days: int, start: str) -> pd.Timestamp:
    if isinstance(symbols, str) or len(symbols) == 0:
        raise ValidationError("synthetic.symbols", f"is {symbols!r}",
                              "give a non-empty list of symbols, e.g. ['BTC', 'ETH', 'SOL']")
    if any(not isinstance(s, str) or not s for s in symbols):
        raise ValidationError("synthetic.symbols", "has an empty or non-string symbol",
                              "give symbols as non-empty strings")
    dup = sorted({s for k, s in enumerate(symbols) if s in symbols[:k]})
    if dup:
        raise ValidationError("synthetic.symbols", f"repeats {dup}", "give each symbol once")
    if int(days) != days or days < 2:
        raise ValidationError("synthetic.days", f"is {days}", "give an integer number of days >= 2")
    try:
        t0 = _utc(start).normalize()
    except (ValueError, TypeError):
        raise ValidationError("synthetic.start", f"is {start!r}",
                              "give an ISO date such as '2023-01-01'") from None
    last = pd.Timestamp.max.tz_localize("UTC").normalize()
    if int(days) > MAX_DAYS or t0 + pd.Timedelta(days=int(days) - 1) > last:
        raise ValidationError("synthetic.days", f"is {int(days)}: the history would run past "
                              f"{last:%Y-%m-%d} (or above {MAX_DAYS} days)",
                              f"give at most {min(MAX_DAYS, (last - t0).days + 1)} days from "
                              f"{t0:%Y-%m-%d}")
    return t0


def generate_history(symbols: Sequence[str] = ("BTC", "ETH", "SOL"), *, days: int = 730,
                     start: str = "2023-01-01", seed: int = 7) -> SyntheticHistory:
    """Generate ``days`` daily closes (first close = the coin's start price) for ``symbols``,
    with perp marks, 8-hourly funding, ADV and half spreads. Same seed -> identical output."""
    t0 = _check_args(symbols, days, start)
    syms = [str(s) for s in symbols]
    rng = np.random.default_rng(seed)
    specs = _coin_specs(syms, rng)
    logret = _log_returns(specs, days - 1, rng)
    start_px = np.array([s.price for s in specs])
    prices = start_px * np.exp(np.vstack([np.zeros(len(syms)), np.cumsum(logret, axis=0)]))
    funding = _funding_rates(days * SETTLEMENTS_PER_DAY, len(syms), rng)
    daily_funding = funding.reshape(days, SETTLEMENTS_PER_DAY, len(syms)).mean(axis=1)
    mark = prices * (1.0 + _basis(daily_funding, rng))
    day_index = pd.date_range(t0, periods=days, freq="D", name="timestamp")
    settle_index = pd.date_range(t0, periods=days * SETTLEMENTS_PER_DAY, freq="8h",
                                 name="timestamp")
    return SyntheticHistory(
        spot=pd.DataFrame(prices, index=day_index, columns=syms),
        mark=pd.DataFrame(mark, index=day_index, columns=syms),
        funding=pd.DataFrame(funding, index=settle_index, columns=syms),
        adv_usd={s: c.adv_usd for s, c in zip(syms, specs, strict=True)},
        half_spread={s: c.half_spread for s, c in zip(syms, specs, strict=True)},
        seed=int(seed),
    )
