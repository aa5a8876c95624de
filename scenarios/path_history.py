"""What the Monte Carlo path generators share: the source history they are fitted to, the frame
of a generated path, and turning generated rows into a :class:`~scenarios.market_path.MarketPath`.

- :class:`JointHistory`: per step t = 1..T of the source, the assets' simple returns r_t
  (fractions), the perp funding of each settlement in (t-1, t] (fractions per funding interval)
  and the perp basis b_t = mark / spot - 1 (a fraction), with the step length, the settlement
  offsets, half spreads (fractions) and ADV (USD) per asset;
- :class:`PathFrame`: where a path starts (UTC time, USD prices) and which contracts it prices;
- :func:`build_market_path`: prices p_k = p_{k-1} (1 + r_k) from the start prices, one timestamp
  per step; funding settlements of step k stamped ``t_k - offset``; contracts take their
  underlying's series (mark = spot x (1 + basis), funding for perpetuals only); half spread and
  ADV are the source's, held constant; labelled synthetic;
- :class:`PathGenerator`: the protocol every generator follows (:mod:`scenarios.path_bootstrap`,
  :mod:`scenarios.path_garch`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd

from models.errors import ValidationError
from models.instruments import ContractKind, FuturesContract
from scenarios.market_path import MarketPath, by_symbol

SeedLike = int | np.random.Generator | np.random.SeedSequence
#: Default funding interval (hours) when the book has no perpetual on an asset.
DEFAULT_FUNDING_HOURS = 8.0


def as_generator(seed: SeedLike) -> np.random.Generator:
    """A numpy Generator from an int, a SeedSequence or a Generator (returned as is)."""
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


# ---------------------------------------------------------------------------------------------
# the source history


@dataclass(frozen=True)
class JointHistory:
    """Per-step joint rows of a source history (T rows, N assets, S settlements per step).

    ``returns`` (T x N): simple returns of step t; ``funding`` (T x S x N): rate per settlement
    (fraction, positive: longs pay) of the settlements stamped ``t - settle_offsets[s]``;
    ``basis`` (T x N): mark / spot - 1 at the end of step t; ``step``: the step length;
    ``half_spread`` (fraction) and ``adv`` (USD/day, NaN: unknown) per asset.
    """

    assets: tuple[str, ...]
    returns: np.ndarray
    funding: np.ndarray
    basis: np.ndarray
    step: pd.Timedelta
    settle_offsets: tuple[pd.Timedelta, ...]
    half_spread: Mapping[str, float] = field(default_factory=dict)
    adv: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        t, n = self.returns.shape if self.returns.ndim == 2 else (0, 0)
        if self.returns.ndim != 2 or n != len(self.assets) or t < 2:
            raise ValidationError("history.returns", f"has shape {self.returns.shape}",
                                  f"give at least 2 rows of {len(self.assets)} asset returns")
        if self.funding.shape != (t, len(self.settle_offsets), n):
            raise ValidationError("history.funding", f"has shape {self.funding.shape}",
                                  f"give (rows, settlements per step, assets) = "
                                  f"({t}, {len(self.settle_offsets)}, {n})")
        if self.basis.shape != (t, n):
            raise ValidationError("history.basis", f"has shape {self.basis.shape}",
                                  f"give (rows, assets) = ({t}, {n})")
        for name, arr in (("returns", self.returns), ("funding", self.funding), ("basis", self.basis)):
            if not np.all(np.isfinite(arr)):
                raise ValidationError(f"history.{name}", "has missing or non-finite values",
                                      "drop or fill the gaps in the source history")
        if np.any(self.returns <= -1.0) or np.any(self.basis <= -1.0):
            raise ValidationError("history.returns", "has a return or basis <= -100%",
                                  "give prices > 0")

    @property
    def rows(self) -> int:
        """T, the number of joint rows."""
        return int(self.returns.shape[0])

    @staticmethod
    def from_market_path(path: MarketPath, contracts: Sequence[FuturesContract],
                         assets: Sequence[str]) -> JointHistory:
        """The joint rows of a market path (e.g. ``MarketPath.from_synthetic`` or ``from_data``).

        Per asset the funding and basis come from its first perpetual among ``contracts`` (an asset
        without one has no funding and mark = spot). Settlements are put on a regular grid of
        ``interval``, the longest of the perpetuals' funding intervals and of the source's own
        spacings of their settlements (the median gap; a source that settled every 8 h under a
        book that says 4 h gives 8 h slots, so a replay of a generated path measures the spacing
        whose rates it pays, rather than every other slot at 0), ending at each step's timestamp:
        the rate at
        grid time s is the sum of the perpetual's settlements in (s - interval, s] (0 when none;
        rows where it did not settle, ``MarketPath.funding_settled``, are not settlements), so each
        step's funding is the source's whatever its spacing, and a step of length ``step`` holds
        ``step / interval`` slots. The step is the median spacing of the path.
        """
        syms = list(assets)
        missing = [a for a in syms if a not in path.spot.columns]
        if missing:
            raise ValidationError("history.spot", f"has no prices for {missing}",
                                  "give a spot column for every asset of the book")
        index = pd.DatetimeIndex(path.spot.index)
        if len(index) < 3:
            raise ValidationError("history.spot", f"has {len(index)} rows",
                                  "give a history of at least 3 steps")
        step = pd.Timedelta(pd.Series(index).diff().dropna().median())
        perp: dict[str, FuturesContract] = {}
        for c in contracts:
            if c.kind == ContractKind.PERPETUAL and c.underlying in syms and c.underlying not in perp:
                perp[c.underlying] = c
        hours = [max(source_hours(path, c), c.funding_interval_h) for c in perp.values()]
        interval = pd.Timedelta(hours=max(hours, default=DEFAULT_FUNDING_HOURS))
        ratio = step / interval
        if ratio < 1 or abs(ratio - round(ratio)) > 1e-9:
            raise ValidationError("montecarlo.step", f"is {step}, not a whole number of funding "
                                  f"intervals ({interval})", 'use step = "1d" or "8h"')
        offsets = tuple(k * interval for k in range(round(ratio)))
        spot = path.spot[syms].to_numpy(dtype=float)
        returns = spot[1:] / spot[:-1] - 1.0
        ends = index[1:]
        funding = np.zeros((len(ends), len(offsets), len(syms)))
        basis = np.zeros((len(ends), len(syms)))
        for i, a in enumerate(syms):
            pc = perp.get(a)
            if pc is None:
                continue
            col = path.settlements(pc.symbol)
            if col is not None:
                funding[:, :, i] = _slot_sums(col, ends, offsets, interval)
            if path.mark is not None and pc.symbol in path.mark.columns:
                basis[:, i] = path.mark[pc.symbol].to_numpy(dtype=float)[1:] / spot[1:, i] - 1.0
        half = _per_asset(path.half_spread, perp)
        adv_src = path.adv.median() if isinstance(path.adv, pd.DataFrame) else path.adv
        adv = _per_asset(adv_src, perp)
        return JointHistory(assets=tuple(syms), returns=returns, funding=funding, basis=basis,
                            step=step, settle_offsets=offsets, half_spread=half, adv=adv)


def _slot_sums(col: pd.Series, ends: pd.DatetimeIndex, offsets: Sequence[pd.Timedelta],
               interval: pd.Timedelta) -> np.ndarray:
    """(T x S) the sum of the settlements (rates, fractions) with time in each slot
    (end - offset - interval, end - offset]: every settlement of a step counted once, whatever
    its spacing (2-4 h in November 2022 for SOL; 8 h data under a 4 h book), 0 in an empty slot."""
    times = pd.DatetimeIndex(col.index)
    values = col.to_numpy(dtype=float)
    out = np.zeros((len(ends), len(offsets)))
    for s, off in enumerate(offsets):
        hi = times.searchsorted(ends - off, side="right")
        lo = times.searchsorted(ends - off - interval, side="right")
        out[:, s] = [values[a:b].sum() for a, b in zip(lo, hi, strict=True)]  # one: exact
    return out


def _per_asset(values: pd.Series | None, perp: Mapping[str, FuturesContract]) -> dict[str, float]:
    """A per-contract series re-keyed by the underlying of each asset's perpetual (finite only)."""
    if values is None:
        return {}
    out: dict[str, float] = {}
    for a, c in perp.items():
        if c.symbol in values.index and math.isfinite(float(values[c.symbol])):
            out[a] = float(values[c.symbol])
    return out


# ---------------------------------------------------------------------------------------------
# the generated path


@dataclass(frozen=True)
class PathFrame:
    """Where a generated path starts and which contracts it prices.

    ``start``: the first timestamp (tz-aware UTC); ``start_prices``: USD per asset at ``start``;
    ``contracts``: the book's futures contracts (each one's underlying must be an asset).
    """

    start: pd.Timestamp
    start_prices: Mapping[str, float]
    contracts: tuple[FuturesContract, ...] = ()

    def __post_init__(self) -> None:
        if self.start.tzinfo is None:
            raise ValidationError("montecarlo.start", f"is {self.start} (no time zone)",
                                  "give a UTC timestamp")
        bad = {a: p for a, p in self.start_prices.items() if not (math.isfinite(p) and p > 0)}
        if bad:
            raise ValidationError("montecarlo.start_prices", f"has {bad}", "give USD prices > 0")
        for c in self.contracts:
            if c.underlying not in self.start_prices:
                raise ValidationError(f"contracts.{c.symbol}.underlying",
                                      f"is {c.underlying!r}, which has no start price",
                                      "give every underlying a start price")


def source_hours(path: MarketPath, contract: FuturesContract) -> float:
    """The spacing of ``contract``'s settlements in ``path`` (hours, the median gap between its
    own settlements), or its funding interval when the path holds fewer than two."""
    col = path.settlements(contract.symbol)
    if col is None or len(col) < 2:
        return float(contract.funding_interval_h)
    gaps = pd.Series(pd.DatetimeIndex(col.index)).diff().dropna() / pd.Timedelta(hours=1)
    return float(gaps.median())


def build_market_path(history: JointHistory, frame: PathFrame, returns: np.ndarray,
                      funding: np.ndarray, basis: np.ndarray) -> MarketPath:
    """A ``MarketPath`` of ``len(returns)`` timestamps from generated rows (see the module doc).

    ``returns`` ((steps + 1) x N, row 0 ignored), ``funding`` ((steps + 1) x S x N),
    ``basis`` ((steps + 1) x N), in ``history.assets`` order.
    """
    assets = list(history.assets)
    n_rows = returns.shape[0]
    index = pd.DatetimeIndex([frame.start + k * history.step for k in range(n_rows)], name="timestamp")
    p0 = np.array([frame.start_prices[a] for a in assets], dtype=float)
    growth = np.vstack([np.ones(len(assets)), np.cumprod(1.0 + returns[1:], axis=0)])
    spot = pd.DataFrame(p0 * growth, index=index, columns=assets)
    col = {a: i for i, a in enumerate(assets)}
    cons = [c for c in frame.contracts if c.underlying in col]
    mark = pd.DataFrame({c.symbol: spot[c.underlying].to_numpy() * (1.0 + basis[:, col[c.underlying]])
                         for c in cons}, index=index, columns=[c.symbol for c in cons], dtype=float)
    offsets = history.settle_offsets
    settle_times = [t - off for t in index for off in offsets]
    rates = funding.reshape(n_rows * len(offsets), len(assets))
    order = np.argsort(np.array([t.value for t in settle_times]), kind="stable")
    settle_index = pd.DatetimeIndex([settle_times[k] for k in order], name="timestamp")
    perps = [c for c in cons if c.kind == ContractKind.PERPETUAL]
    fund = pd.DataFrame({c.symbol: rates[order, col[c.underlying]] for c in perps},
                        index=settle_index, columns=[c.symbol for c in perps], dtype=float)
    half = by_symbol(history.half_spread, cons)
    adv = by_symbol(history.adv, cons, assets)
    spot_half = by_symbol(history.half_spread, (), assets)
    return MarketPath(spot=spot, mark=mark, funding=fund, half_spread=half,
                      adv=adv if len(adv) else None, spot_half_spread=spot_half, synthetic=True)


def check_steps(steps: int) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 1:
        raise ValidationError("montecarlo.steps", f"is {steps!r}", "give a whole number of steps >= 1")



@runtime_checkable
class PathGenerator(Protocol):
    """Makes market paths: ``generate(seed, steps)`` -> a ``MarketPath`` of ``steps + 1`` timestamps.
    Implementations are frozen, picklable data (they travel to worker processes)."""

    @property
    def name(self) -> str:
        """A short label for reports."""
        ...

    @property
    def step(self) -> pd.Timedelta:
        """The time between two steps of a generated path."""
        ...

    def generate(self, seed: SeedLike, steps: int) -> MarketPath:
        """One path from ``seed`` (same seed -> same path)."""
        ...
