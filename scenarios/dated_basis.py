"""A basis model for dated futures and the dated marks it gives a market path.

Units: prices USD; the basis ``b`` is annualised (fraction per year of 365 days); funding rates are
fractions per funding interval (``FuturesContract.funding_interval_h`` hours, 8 by default); days
to expiry ``tau`` in days.

- :class:`BasisModel` gives ``b_u(t)`` per underlying u (constant, or fitted causally from the
  path's perpetual funding or premium). A dated contract expiring at T is priced
  ``P(t) = S(t) x (1 + b_u(t) x tau / 365)``, ``tau = max(T - t, 0)`` in days, so ``P(T) = S(T)``:
  the contract converges to spot at expiry (and stays at spot after it).
- :func:`with_dated_marks` returns a copy of a :class:`~scenarios.market_path.MarketPath` whose mark
  columns for the dated contracts follow that model (dated futures pay no funding).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from models.errors import ValidationError
from models.instruments import ContractKind, FuturesContract
from scenarios.market_path import MarketPath
from scenarios.settlement import expiry_ns

DAYS_PER_YEAR = 365.0
HOURS_PER_YEAR = 24.0 * DAYS_PER_YEAR
NS_PER_DAY = 86_400 * 10**9
#: Annualised basis used where nothing is fitted: the synthetic generator's calm funding
#: (1e-4 per 8 h) as carry, 1e-4 x 3 x 365 = 10.95% a year.
DEFAULT_BASIS = 1e-4 * 3 * DAYS_PER_YEAR
#: Trailing window of the fitted basis (funding settlements or perp premia in (t - window, t]).
BASIS_WINDOW = pd.Timedelta(days=30)


def days_left(index: pd.DatetimeIndex, expiry: int) -> np.ndarray:
    """max(T - t, 0) in days for every t of ``index`` (T as UTC int64 ns)."""
    t_ns = pd.DatetimeIndex(index).tz_convert("UTC").as_unit("ns").asi8
    result: np.ndarray = np.maximum((expiry - t_ns).astype(float), 0.0) / NS_PER_DAY
    return result


@dataclass(frozen=True)
class BasisModel:
    """Annualised basis ``b_u(t)`` per underlying u (fraction per year; > 0: contango).

    ``rates`` maps an underlying to a constant or to a Series indexed by time (tz-aware UTC; read
    as of t: the last value at or before t, ``default`` before its first value or where NaN);
    an underlying not in ``rates`` gets ``default``.
    """

    rates: Mapping[str, float | pd.Series] = field(default_factory=dict)
    default: float = DEFAULT_BASIS

    def __post_init__(self) -> None:
        if not math.isfinite(self.default):
            raise ValidationError("basis.default", f"is {self.default}",
                                  "give an annualised basis as a finite fraction (0.1 = 10%/yr)")
        for u, r in self.rates.items():
            if isinstance(r, pd.Series):
                if not isinstance(r.index, pd.DatetimeIndex) or r.index.tz is None:
                    raise ValidationError(f"basis.rates.{u}", "is not indexed by tz-aware time",
                                          "index it by a UTC DatetimeIndex")
                values = r.to_numpy(dtype=float)
                if np.any(np.isinf(values)):
                    raise ValidationError(f"basis.rates.{u}", "has infinite values",
                                          "give finite annualised rates (NaN: use the default)")
            elif not math.isfinite(float(r)):
                raise ValidationError(f"basis.rates.{u}", f"is {r}",
                                      "give an annualised basis as a finite fraction")

    @staticmethod
    def constant(rates: Mapping[str, float], default: float = DEFAULT_BASIS) -> BasisModel:
        """A flat basis per underlying (fraction per year)."""
        return BasisModel(rates={u: float(r) for u, r in rates.items()}, default=default)

    @staticmethod
    def fit(path: MarketPath, contracts: Sequence[FuturesContract], *,
            window: pd.Timedelta | str = BASIS_WINDOW, default: float = DEFAULT_BASIS) -> BasisModel:
        """Fit ``b_u(t)`` from the path's perpetuals, with no look-ahead (data up to t only).

        Per underlying u, from the first perpetual on u in ``contracts`` (interval h hours):

        - with funding in ``path.funding``: the funding-implied carry
          ``b = mean(f over settlements in (s - window, s]) x 8760 / h`` (s the last settlement at
          or before t; 8 h: ``mean f x 3 x 365``; only the perpetual's own settlements: rows
          where it did not settle, ``MarketPath.funding_settled``, are left out);
        - else with a perp mark in ``path.mark``: the premium as a per-interval rate proxy,
          ``b = mean(mark / spot - 1 over steps in (t - window, t]) x 8760 / h``;
        - else (no perpetual on u, or neither series): ``default`` (the synthetic carry).
        """
        win = pd.Timedelta(window)
        if not win > pd.Timedelta(0):
            raise ValidationError("basis.window", f"is {window}", "give a positive duration")
        rates: dict[str, float | pd.Series] = {}
        for c in contracts:
            u = c.underlying
            if c.kind != ContractKind.PERPETUAL or u in rates:
                continue
            per_year = HOURS_PER_YEAR / c.funding_interval_h
            f = path.settlements(c.symbol)
            if f is not None:
                rates[u] = f.rolling(win).mean() * per_year
            elif path.mark is not None and c.symbol in path.mark.columns and u in path.spot.columns:
                premium = path.mark[c.symbol].astype(float) / path.spot[u].astype(float) - 1.0
                rates[u] = premium.rolling(win).mean() * per_year
        return BasisModel(rates=rates, default=default)

    def annual(self, underlying: str, index: pd.DatetimeIndex) -> np.ndarray:
        """``b_u(t)`` for every t of ``index`` (fraction per year)."""
        r = self.rates.get(underlying)
        if r is None:
            return np.full(len(index), self.default)
        if not isinstance(r, pd.Series):
            return np.full(len(index), float(r))
        src = r.sort_index()
        src = src[~src.index.duplicated(keep="last")]
        pos = src.index.searchsorted(pd.DatetimeIndex(index), side="right") - 1
        values = src.to_numpy(dtype=float)
        out = np.where(pos >= 0, values[np.maximum(pos, 0)], np.nan)
        return np.where(np.isnan(out), self.default, out)

    def dated_price(self, contract: FuturesContract, spot: pd.Series) -> pd.Series:
        """``P(t) = S(t) x (1 + b_u(t) x max(T - t, 0) / 365)`` (USD) for a dated ``contract``,
        ``spot`` the underlying's closes (tz-aware index)."""
        expiry = expiry_ns(contract)
        if expiry is None:
            raise ValidationError(f"contracts.{contract.symbol}", "is not a dated future",
                                  "price only contracts with kind DATED and an expiry")
        index = pd.DatetimeIndex(spot.index)
        b = self.annual(contract.underlying, index)
        tau = days_left(index, expiry)
        values = spot.to_numpy(dtype=float) * (1.0 + b * tau / DAYS_PER_YEAR)
        return pd.Series(values, index=index, name=contract.symbol)


def dated_contracts(path: MarketPath, contracts: Sequence[FuturesContract]) -> list[FuturesContract]:
    """The dated contracts of ``contracts``, each checked to have its underlying in ``path.spot``."""
    dated = [c for c in contracts if c.kind == ContractKind.DATED]
    for c in dated:
        if c.underlying not in path.spot.columns:
            raise ValidationError(f"contracts.{c.symbol}.underlying",
                                  f"is {c.underlying!r}, not in the path's spot",
                                  f"use one of {list(path.spot.columns)[:10]}")
    return dated


def with_dated_marks(path: MarketPath, contracts: Sequence[FuturesContract],
                     basis: BasisModel) -> MarketPath:
    """A copy of ``path`` whose mark columns for the dated contracts of ``contracts`` are
    ``basis.dated_price`` of their underlying's spot (any existing column for them, e.g. the
    perp mark ``MarketPath.from_synthetic`` / ``from_data`` give, is replaced) and whose funding
    has no column for them (dated futures pay none). Other columns are kept as they are."""
    dated = dated_contracts(path, contracts)
    mark = (path.mark.copy() if path.mark is not None
            else pd.DataFrame(index=path.spot.index, dtype=float))
    for c in dated:
        mark[c.symbol] = basis.dated_price(c, path.spot[c.underlying].astype(float)).to_numpy()
    funding = path.funding
    if funding is not None:
        funding = funding.drop(columns=[c.symbol for c in dated if c.symbol in funding.columns])
    return replace(path, mark=mark.astype(float), funding=funding)
