"""The market path a backtest replays: aligned spot, mark, funding, spread and ADV series.

:class:`MarketPath` validates the series (tz-aware sorted index, finite values, marks and ADV
frames on the spot index) and is built from the embedded generator (``MarketPath.from_synthetic``)
or from real data in the shared layout (``MarketPath.from_data`` / :func:`path_from_data`, read by
``scenarios.read_history``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from models.errors import ValidationError
from models.instruments import ContractKind, FuturesContract
from models.synthetic import SyntheticHistory
from scenarios.read_history import load_market_data


def _check_index(name: str, index: pd.Index) -> None:
    if not isinstance(index, pd.DatetimeIndex) or index.tz is None:
        raise ValidationError(f"market_path.{name}", "is not indexed by tz-aware timestamps",
                              "index it by a UTC pandas DatetimeIndex")
    if not index.is_monotonic_increasing or not index.is_unique:
        raise ValidationError(f"market_path.{name}", "has an unsorted or repeated index",
                              "sort the index and drop duplicate timestamps")


def _check_finite(name: str, frame: pd.DataFrame) -> None:
    if not np.all(np.isfinite(frame.to_numpy(dtype=float))):
        raise ValidationError(f"market_path.{name}", "has missing or non-finite values",
                              "align the series on their common span and drop or fill the gaps")


def _check_half_spreads(name: str, values: pd.Series | None) -> None:
    """Half spreads (fractions) in [0, 0.5)."""
    if values is None:
        return
    arr = values.to_numpy(dtype=float)
    bad = np.flatnonzero(~np.isfinite(arr) | (arr < 0) | (arr >= 0.5))
    if bad.size:
        raise ValidationError(f"market_path.{name}.{values.index[int(bad[0])]}",
                              f"is {arr[bad[0]]}", "give the half spread as a fraction in [0, 0.5)")


def _check_settled(funding: pd.DataFrame | None, settled: pd.DataFrame | None) -> None:
    """``funding_settled``: bool, on the funding index, a column per funding column, and every
    cell that did not settle holds a rate of 0 (it pays nothing)."""
    if settled is None:
        return
    if funding is None or not settled.index.equals(funding.index):
        raise ValidationError("market_path.funding_settled", "is not on the funding index",
                              "give it the funding frame's settlement times (or leave it out)")
    missing = [c for c in funding.columns if c not in settled.columns]
    if missing:
        raise ValidationError("market_path.funding_settled", f"has no column for {missing}",
                              "give a column per funding column (True where it settled)")
    mask = settled[list(funding.columns)]
    if not all(pd.api.types.is_bool_dtype(t) for t in mask.dtypes):
        raise ValidationError("market_path.funding_settled", "is not boolean",
                              "give True where the contract settled, False where it did not")
    unsettled_rates = funding.to_numpy(dtype=float)[~mask.to_numpy(dtype=bool)]
    if np.any(unsettled_rates != 0.0):
        raise ValidationError("market_path.funding", "has a non-zero rate where funding_settled "
                              "is False", "give 0 where a contract did not settle")


@dataclass(frozen=True)
class MarketPath:
    """Aligned market history for a backtest.

    ``spot``: closes (USD), index = the steps (tz-aware UTC), one column per asset symbol.
    ``mark``: mark closes per contract symbol on the same index; a contract without a column is
    marked at its underlying's spot. ``funding``: rate per settlement (fraction, positive: longs pay)
    per contract symbol, indexed by settlement timestamps (irregular allowed; a contract without a
    column pays none). ``funding_settled`` (optional, bool, on ``funding``'s index with a column for
    each of its columns; extra columns ignored): True where that contract settled at that time.
    A False cell is "did not settle" (its rate must be 0: it pays nothing) and is not a rate,
    whereas a True 0 is a real settlement at a zero rate. None: every row of ``funding`` is a
    settlement of every contract with a column (an exact 0 is a zero rate, as ``fbr solve`` reads
    it). ``scenarios.read_history`` fills a union of schedules and sets it.
    ``half_spread`` (fraction) per contract symbol; a missing half spread defaults to 1 bp
    (``models.market.DEFAULT_HALF_SPREAD``). ``adv`` (USD/day) per contract
    symbol (its futures trades' impact) and per asset symbol (the spot market's volume: its spot
    trades' impact); no ADV means no impact. ``spot_half_spread`` (fraction) per asset symbol:
    what a spot trade pays on top of its fee (1 bp when missing, as the optimiser's spot leg
    assumes). ``adv`` is either one value per symbol (a Series) or a frame on the spot index (a
    value per step; NaN: no impact at that step).
    ``synthetic`` labels generated data. ``mark_source`` (optional, same index as spot, one
    column per contract it describes) labels where each mark comes from, e.g. "real",
    "real_ffill" or "modelled" (``scenarios.quarterly_basis.with_quarterly_marks``); the replay ignores it.
    """

    spot: pd.DataFrame
    mark: pd.DataFrame | None = None
    funding: pd.DataFrame | None = None
    half_spread: pd.Series | None = None
    adv: pd.Series | pd.DataFrame | None = None
    spot_half_spread: pd.Series | None = None
    synthetic: bool = False
    mark_source: pd.DataFrame | None = None
    funding_settled: pd.DataFrame | None = None

    def __post_init__(self) -> None:
        _check_index("spot", self.spot.index)
        if len(self.spot.index) < 1:
            raise ValidationError("market_path.spot", "is empty", "give at least one close")
        _check_finite("spot", self.spot)
        if self.mark is not None:
            if not self.mark.index.equals(self.spot.index):
                raise ValidationError("market_path.mark", "is not on the spot index",
                                      "align marks to the spot closes (reindex them)")
            _check_finite("mark", self.mark)
        if self.mark_source is not None and not self.mark_source.index.equals(self.spot.index):
            raise ValidationError("market_path.mark_source", "is not on the spot index",
                                  "label the marks on the spot closes' index")
        _check_half_spreads("spot_half_spread", self.spot_half_spread)
        if self.funding is not None:
            _check_index("funding", self.funding.index)
            _check_finite("funding", self.funding)
        _check_settled(self.funding, self.funding_settled)
        if isinstance(self.adv, pd.DataFrame):
            if not self.adv.index.equals(self.spot.index):
                raise ValidationError("market_path.adv", "is a frame not on the spot index",
                                      "align the ADV frame to the spot closes, or give a Series")
            values = self.adv.to_numpy(dtype=float)
            if np.any(~np.isnan(values) & ~(np.isfinite(values) & (values > 0))):
                raise ValidationError("market_path.adv", "has values <= 0 or infinite",
                                      "give ADV in USD/day (> 0), NaN where unknown")

    def settlements(self, symbol: str) -> pd.Series | None:
        """Contract ``symbol``'s funding rates (fractions per settlement) at its own settlements
        only: the rows of ``funding`` where ``funding_settled`` says it did not settle (a zero
        filled in for another contract's schedule) are dropped; None when it has no column."""
        if self.funding is None or symbol not in self.funding.columns:
            return None
        col = self.funding[symbol].astype(float)
        if self.funding_settled is None:
            return col
        return col[self.funding_settled[symbol].to_numpy(dtype=bool)]

    @staticmethod
    def from_data(data_dir: Path | str, contracts: Sequence[FuturesContract], *,
                  start: str | None = None, end: str | None = None, step: str = "8h",
                  assets: Sequence[str] = ()) -> MarketPath:
        """A path from real data in the shared layout (``models.io``; e.g. ``default_data_dir()``).

        See :func:`path_from_data` for the sources, alignment and the no-look-ahead ADV.
        """
        return path_from_data(data_dir, contracts, start=start, end=end, step=step, assets=assets)

    @staticmethod
    def from_synthetic(hist: SyntheticHistory, contracts: Sequence[FuturesContract],
                       *, with_adv: bool = True) -> MarketPath:
        """A path from the embedded generator: daily spot; per contract the synthetic perp mark
        (the dated-future carry of ``SyntheticHistory.snapshot`` is not modelled: dated futures are
        marked at the perp mark and pay no funding; ``scenarios.dated_basis.with_dated_marks`` re-prices
        them from a basis model); perps pay the 8 h funding of their underlying at its 8 h
        settlement times; half spread and (``with_adv``) ADV of the underlying, and of each asset
        for its spot trades."""
        for c in contracts:
            if c.underlying not in hist.spot.columns:
                raise ValidationError(f"contracts.{c.symbol}.underlying",
                                      f"is {c.underlying!r}, not in the synthetic history",
                                      f"use one of {list(hist.symbols)[:10]}")
        syms = [c.symbol for c in contracts]
        mark = pd.DataFrame({c.symbol: hist.mark[c.underlying] for c in contracts},
                            index=hist.spot.index, columns=syms, dtype=float)
        perps = [c for c in contracts if c.kind == ContractKind.PERPETUAL]
        funding = pd.DataFrame({c.symbol: hist.funding[c.underlying] for c in perps},
                               index=hist.funding.index, columns=[c.symbol for c in perps], dtype=float)
        assets = list(hist.spot.columns)
        half = by_symbol(hist.half_spread, contracts)
        adv = by_symbol(hist.adv_usd, contracts, assets) if with_adv else None
        spot_half = by_symbol(hist.half_spread, (), assets)
        return MarketPath(spot=hist.spot.astype(float), mark=mark, funding=funding, half_spread=half,
                          adv=adv, spot_half_spread=spot_half, synthetic=True)


def by_symbol(values: Mapping[str, float], contracts: Sequence[FuturesContract],
              assets: Sequence[str] = ()) -> pd.Series:
    """A per-underlying value (half spread, ADV) as a path's Series by symbol: each contract
    takes its underlying's value, then each asset its own (the spot market's), where ``values``
    has one."""
    return pd.Series({**{c.symbol: values[c.underlying] for c in contracts
                         if c.underlying in values},
                      **{a: values[a] for a in assets if a in values}}, dtype=float)


def path_from_data(data_dir: Path | str, contracts: Sequence[FuturesContract], *,
                   start: str | None = None, end: str | None = None, step: str = "8h",
                   assets: Sequence[str] = ()) -> MarketPath:
    """A market path from files in the shared layout (see ``models.io``; e.g. ``default_data_dir()``).

    Steps every ``step`` ("4h", "8h" or "1d"), stamped at bar close; spot of the contracts'
    underlyings then ``assets``; perp marks (else spot); irregular funding kept (with
    ``funding_settled``: which contract settled at each time); ADV lagged one
    step. See :func:`scenarios.read_history.load_market_data` for the sources, the alignment and
    the warning naming the series that limited the span.
    """
    data = load_market_data(data_dir, contracts, start=start, end=end, step=step, assets=assets)
    return MarketPath(spot=data.spot, mark=data.mark, funding=data.funding, adv=data.adv,
                      funding_settled=data.funding_settled)
