"""Dated futures in the replay: a basis term-structure model, dated marks, and rolling a chain.

Units: prices USD; the basis ``b`` is annualised (fraction per year of 365 days); funding rates are
fractions per funding interval (``FuturesContract.funding_interval_h`` hours, 8 by default).

- :class:`BasisModel` gives ``b_u(t)`` per underlying u. A dated contract expiring at T is priced
  ``P(t) = S(t) x (1 + b_u(t) x tau / 365)``, ``tau = max(T - t, 0)`` in days, so ``P(T) = S(T)``:
  the contract converges to spot at expiry (and stays at spot after it).
- :func:`with_dated_marks` returns a copy of a :class:`~scenarios.market_path.MarketPath` whose mark
  columns for the dated contracts follow that model (dated futures pay no funding).
- :class:`BasisTermStructure` is an annualised basis by days to expiry, ``b(tau) = a + slope x tau``,
  fitted by least squares to the real Binance quarterlies (``../shared/data/quarterly_1d``,
  :func:`quarterly_basis_samples`; an underlying with no quarterly file is modelled from the
  pooled BTC/ETH fit, else from whatever files exist); :func:`with_quarterly_marks` marks a
  path's dated contracts at the real daily closes where they exist and at that fitted (modelled)
  basis elsewhere, and labels each mark's source in ``MarketPath.mark_source``.
- Settlement at expiry is done by :func:`scenarios.replay.run_backtest` (step 2b: closed at
  spot, ``taker_fee`` charged, trade kind "settle").
- :class:`RollingPolicy` wraps a policy that targets one "front" contract symbol and moves the
  position along a chain of dated contracts (quarterlies), rolling ``roll_days_before`` days before
  each expiry; the backtest records the rolls in ``BacktestResult.rolls``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from models.book import Book, FuturesPosition
from models.errors import ValidationError
from models.instruments import ContractKind, FuturesContract
from models.data_layout import QUARTERLY_FOLDER, SUFFIXES
from models.io import load_quarterly_closes, load_spot_closes, quarterly_files
from models.market import MarketSnapshot
from optimizer.policies import Policy, TargetHoldings
from scenarios.backtest_result import RollTargets
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


def _days_left(index: pd.DatetimeIndex, expiry: int) -> np.ndarray:
    """max(T - t, 0) in days for every t of ``index`` (T as UTC int64 ns)."""
    t_ns = pd.DatetimeIndex(index).tz_convert("UTC").as_unit("ns").asi8
    return np.maximum((expiry - t_ns).astype(float), 0.0) / NS_PER_DAY


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
          or before t; 8 h: ``mean f x 3 x 365``);
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
            if path.funding is not None and c.symbol in path.funding.columns:
                f = path.funding[c.symbol].astype(float)
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
        tau = _days_left(index, expiry)
        values = spot.to_numpy(dtype=float) * (1.0 + b * tau / DAYS_PER_YEAR)
        return pd.Series(values, index=index, name=contract.symbol)


def with_dated_marks(path: MarketPath, contracts: Sequence[FuturesContract],
                     basis: BasisModel) -> MarketPath:
    """A copy of ``path`` whose mark columns for the dated contracts of ``contracts`` are
    ``basis.dated_price`` of their underlying's spot (any existing column for them, e.g. the
    perp mark ``MarketPath.from_synthetic`` / ``from_data`` give, is replaced) and whose funding
    has no column for them (dated futures pay none). Other columns are kept as they are."""
    dated = [c for c in contracts if c.kind == ContractKind.DATED]
    for c in dated:
        if c.underlying not in path.spot.columns:
            raise ValidationError(f"contracts.{c.symbol}.underlying",
                                  f"is {c.underlying!r}, not in the path's spot",
                                  f"use one of {list(path.spot.columns)[:10]}")
    mark = (path.mark.copy() if path.mark is not None
            else pd.DataFrame(index=path.spot.index, dtype=float))
    for c in dated:
        mark[c.symbol] = basis.dated_price(c, path.spot[c.underlying].astype(float)).to_numpy()
    funding = path.funding
    if funding is not None:
        funding = funding.drop(columns=[c.symbol for c in dated if c.symbol in funding.columns])
    return replace(path, mark=mark.astype(float), funding=funding)


#: Observations closer to expiry than this are left out of the term-structure fit: annualising a
#: basis over a few days (b x 365 / tau) turns tick noise into huge rates.
MIN_FIT_DAYS = 7.0
#: Labels of ``MarketPath.mark_source``: the real daily close at that time; the basis of a real
#: close under a day old applied to the step's spot; the fitted term structure.
REAL, REAL_FFILL, MODELLED = "real", "real_ffill", "modelled"
#: Underlyings whose quarterlies are pooled when none of the contracts' own underlyings has a
#: quarterly file (Binance USD-M lists quarterlies for these two; the shared data holds them).
FALLBACK_UNDERLYINGS = ("BTC", "ETH")


@dataclass(frozen=True)
class BasisTermStructure:
    """Annualised basis by days to expiry tau: ``b(tau) = a + slope x tau`` (fraction per year;
    slope per day), fitted by ordinary least squares to observations (tau_k, b_k) with
    ``b_k = (P_k / S_k - 1) x 365 / tau_k`` (P a dated close, S the spot close at the same time).
    A dated contract is priced ``P = S (1 + b(tau) tau / 365)``, so ``P = S`` at expiry.
    ``median`` (the median b_k), ``n`` (observations) and ``rmse`` (of the fit) are reported;
    ``underlyings``: whose quarterly files were fitted (empty when not fitted to files).
    """

    a: float
    slope: float = 0.0
    median: float = math.nan
    n: int = 0
    rmse: float = math.nan
    underlyings: tuple[str, ...] = ()

    @staticmethod
    def fit(days: np.ndarray, basis_annual: np.ndarray, *,
            min_days: float = MIN_FIT_DAYS) -> BasisTermStructure:
        """Least squares of ``basis_annual`` on [1, days] over the finite observations with
        ``days >= min_days``; a flat fit (slope 0) when the days do not vary."""
        tau = np.asarray(days, dtype=float)
        b = np.asarray(basis_annual, dtype=float)
        keep = np.isfinite(tau) & np.isfinite(b) & (tau >= min_days)
        tau, b = tau[keep], b[keep]
        if len(b) == 0:
            raise ValidationError("basis.term_structure", f"has no observation with at least "
                                  f"{min_days:g} days to expiry", "give dated closes further "
                                  "from expiry (or a constant BasisModel)")
        if len(b) < 2 or float(np.ptp(tau)) == 0.0:
            a, slope = float(b.mean()), 0.0
        else:
            X = np.column_stack([np.ones_like(tau), tau])
            coef, *_ = np.linalg.lstsq(X, b, rcond=None)
            a, slope = float(coef[0]), float(coef[1])
        resid = b - (a + slope * tau)
        return BasisTermStructure(a=a, slope=slope, median=float(np.median(b)), n=len(b),
                                  rmse=float(np.sqrt(np.mean(resid**2))))

    def annual(self, days: np.ndarray) -> np.ndarray:
        """``b(tau)`` (fraction per year) for days to expiry ``days``."""
        return self.a + self.slope * np.asarray(days, dtype=float)

    def price(self, spot: np.ndarray, days: np.ndarray) -> np.ndarray:
        """``S (1 + b(tau) tau / 365)`` (USD), tau = max(days, 0)."""
        tau = np.maximum(np.asarray(days, dtype=float), 0.0)
        return np.asarray(spot, dtype=float) * (1.0 + self.annual(tau) * tau / DAYS_PER_YEAR)


def quarterly_basis_samples(data_dir: Path | str, underlyings: Sequence[str], *,
                            quote: str = "USDT") -> pd.DataFrame:
    """Every real quarterly close with the same-time spot close, for the term-structure fit.

    Per underlying u and file ``quarterly_1d/<u><quote>_<YYMMDD>`` (``models.io``): each daily
    close P (stamped at bar close, 00:00 UTC) against the ``spot_1d`` close S of the same day
    (stamped the same way); the delivery-day close (08:00) has no spot_1d match and is left out.
    Columns: underlying, delivery, time, days (to delivery), basis (P / S - 1), basis_annual
    (basis x 365 / days). Empty when there are no files.
    """
    rows: list[pd.DataFrame] = []
    for u in underlyings:
        files = quarterly_files(data_dir, f"{u}{quote}")
        if not files:
            continue
        spot = load_spot_closes(data_dir, [u], interval="1d")[u].astype(float)
        spot.index = pd.DatetimeIndex(spot.index) + pd.Timedelta(days=1)
        for delivery in files:
            p = load_quarterly_closes(data_dir, f"{u}{quote}", delivery)
            s_at = spot.reindex(p.index)
            ok = s_at.notna().to_numpy() & (p.index < delivery)
            t = pd.DatetimeIndex(p.index[ok])
            days = (delivery - t).total_seconds().to_numpy() / 86400.0
            basis = p.to_numpy(dtype=float)[ok] / s_at.to_numpy(dtype=float)[ok] - 1.0
            rows.append(pd.DataFrame({"underlying": u, "delivery": delivery, "time": t,
                                      "days": days, "basis": basis,
                                      "basis_annual": basis * DAYS_PER_YEAR / days}))
    cols = ["underlying", "delivery", "time", "days", "basis", "basis_annual"]
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=cols)


def _has_spot_1d(data_dir: Path | str, underlying: str) -> bool:
    return any((Path(data_dir) / "spot_1d" / f"{underlying}{sfx}").is_file() for sfx in SUFFIXES)


def quarterly_underlyings(data_dir: Path | str, *, quote: str = "USDT") -> list[str]:
    """Underlyings u with a file ``<data_dir>/quarterly_1d/<u><quote>_<YYMMDD>`` and a
    ``spot_1d/<u>`` file (both needed by :func:`quarterly_basis_samples`), sorted."""
    folder = Path(data_dir) / QUARTERLY_FOLDER
    if not folder.is_dir():
        return []
    found: set[str] = set()
    for path in folder.iterdir():
        stem = next((path.name[: -len(sfx)] for sfx in SUFFIXES if path.name.endswith(sfx)), None)
        pair, _, code = (stem or "").rpartition("_")
        if (pair.endswith(quote) and len(pair) > len(quote) and pair.isalnum()
                and pair == pair.upper() and code.isdigit() and len(code) == 6):
            found.add(pair[: -len(quote)])
    return sorted(u for u in found if _has_spot_1d(data_dir, u))


def fit_quarterly_term_structure(data_dir: Path | str, underlyings: Sequence[str], *,
                                 quote: str = "USDT",
                                 min_days: float = MIN_FIT_DAYS) -> BasisTermStructure:
    """:meth:`BasisTermStructure.fit` pooled over every real quarterly close of ``underlyings``
    (:func:`quarterly_basis_samples`). The fit uses the whole span of the files, so marks modelled
    from it know the span's average basis (a modelled price series, not a causal forecast).

    Underlyings without a quarterly file (or without a ``spot_1d`` file to pair it with) are left
    out; when none of ``underlyings`` has one, the fit pools :data:`FALLBACK_UNDERLYINGS` (BTC and
    ETH) where their files exist, else every underlying with files
    (:func:`quarterly_underlyings`). ``underlyings`` of the result says which were fitted. No
    quarterly file at all: a ValidationError naming ``<data_dir>/quarterly_1d`` and the fix."""
    usable = quarterly_underlyings(data_dir, quote=quote)
    own = [u for u in dict.fromkeys(underlyings) if u in usable]
    if not own:
        own = [u for u in FALLBACK_UNDERLYINGS if u in usable] or usable
    if not own:
        folder = Path(data_dir) / QUARTERLY_FOLDER
        raise ValidationError(
            f"data.{QUARTERLY_FOLDER}",
            f"has no quarterly file to fit the basis of dated contracts on ({folder} holds no "
            f"<UNDERLYING>{quote}_<YYMMDD> file with a spot_1d/<UNDERLYING> file beside it)",
            f"put Binance USD-M quarterly daily klines there, e.g. {folder}/BTC{quote}_250627.csv.gz "
            "(timestamp = bar open, UTC; a close column; the shared data folder has BTC and ETH) "
            "with spot_1d/BTC.csv.gz, or list no dated contracts in the book")
    obs = quarterly_basis_samples(data_dir, own, quote=quote)
    fit = BasisTermStructure.fit(obs["days"].to_numpy(dtype=float),
                                 obs["basis_annual"].to_numpy(dtype=float), min_days=min_days)
    return replace(fit, underlyings=tuple(own))


def quarterly_marks(spot: pd.Series, real: pd.Series, expiry: int,
                    term: BasisTermStructure) -> tuple[np.ndarray, np.ndarray]:
    """Marks (USD) and their sources on ``spot``'s index for one dated contract expiring at
    ``expiry`` (UTC ns), from its ``real`` closes (stamped when known, ``models.io``):

    - step t equal to a real close's stamp: that close (``"real"``);
    - else the latest real close stamped at r, t - 1 day < r < t, with the spot known at r: the
      close's basis carried to t, ``S_t x P_r / S_r`` (``"real_ffill"``; at 8 h steps the 08:00
      and 16:00 marks carry the 00:00 close's basis, so the mark moves with spot, not stale);
    - else the fitted term structure, ``S_t (1 + b(tau) tau / 365)`` (``"modelled"``); after the
      expiry always ``S_t`` (modelled; the replay settles at spot on the first step at or after it).
    """
    index = pd.DatetimeIndex(spot.index)
    s = spot.to_numpy(dtype=float)
    tau = _days_left(index, expiry)
    out = term.price(s, tau)
    src = np.full(len(index), MODELLED, dtype=object)
    if len(real):
        r_idx = pd.DatetimeIndex(real.index).tz_convert("UTC")
        t_ns = index.tz_convert("UTC").as_unit("ns").asi8
        r_ns = r_idx.as_unit("ns").asi8
        pos = np.searchsorted(r_ns, t_ns, side="right") - 1
        have = (pos >= 0) & (t_ns <= expiry)
        p_r = np.where(have, real.to_numpy(dtype=float)[np.maximum(pos, 0)], np.nan)
        age = np.where(have, t_ns - r_ns[np.maximum(pos, 0)], np.iinfo(np.int64).max)
        exact = have & (age == 0)
        out[exact] = p_r[exact]
        src[exact] = REAL
        s_at_r = spot.reindex(r_idx).to_numpy(dtype=float)
        s_r = np.where(have, s_at_r[np.maximum(pos, 0)], np.nan)
        ffill = have & (age > 0) & (age < NS_PER_DAY) & np.isfinite(s_r)
        out[ffill] = s[ffill] * p_r[ffill] / s_r[ffill]
        src[ffill] = REAL_FFILL
    return out, src


def with_quarterly_marks(path: MarketPath, contracts: Sequence[FuturesContract],
                         data_dir: Path | str, *, term: BasisTermStructure | None = None,
                         quote: str = "USDT") -> tuple[MarketPath, BasisTermStructure]:
    """A copy of ``path`` whose dated contracts (of ``contracts``) are marked at the real Binance
    quarterly closes of ``<data_dir>/quarterly_1d/<underlying><quote>_<YYMMDD>`` (the file whose
    delivery equals the contract's expiry) where they exist, and at the term structure ``term``
    elsewhere (default: :func:`fit_quarterly_term_structure` over the contracts' underlyings, with
    its BTC/ETH fallback), see
    :func:`quarterly_marks`; ``mark_source`` gets one column per dated contract ("real",
    "real_ffill", "modelled"), and funding has no column for them (dated futures pay none).
    Returns the path and the term structure used."""
    dated = [c for c in contracts if c.kind == ContractKind.DATED]
    for c in dated:
        if c.underlying not in path.spot.columns:
            raise ValidationError(f"contracts.{c.symbol}.underlying",
                                  f"is {c.underlying!r}, not in the path's spot",
                                  f"use one of {list(path.spot.columns)[:10]}")
    if term is None:
        term = fit_quarterly_term_structure(data_dir, sorted({c.underlying for c in dated}),
                                            quote=quote)
    mark = (path.mark.copy() if path.mark is not None
            else pd.DataFrame(index=path.spot.index, dtype=float))
    source = (path.mark_source.copy() if path.mark_source is not None
              else pd.DataFrame(index=path.spot.index))
    for c in dated:
        expiry = expiry_ns(c)
        assert expiry is not None
        delivery = pd.Timestamp(expiry, tz="UTC")
        real = load_quarterly_closes(data_dir, f"{c.underlying}{quote}", delivery)
        values, src = quarterly_marks(path.spot[c.underlying].astype(float), real, expiry, term)
        mark[c.symbol] = values
        source[c.symbol] = src
    funding = path.funding
    if funding is not None:
        funding = funding.drop(columns=[c.symbol for c in dated if c.symbol in funding.columns])
    return replace(path, mark=mark.astype(float), funding=funding, mark_source=source), term


class RollingPolicy(Policy):
    """Roll a position along a chain of dated contracts (quarterlies) on one underlying.

    ``inner`` targets the chain through one symbol, the *front* ``schedule[0].symbol``. At t the
    *active* contract is the first of ``schedule`` (sorted by expiry T_k) with
    ``t < T_k - roll_days_before`` days; when none is left the chain is flat. The inner policy sees
    the book with the whole chain as one position in the front symbol, priced as the active
    contract: contract spec and mark of the active one, notional
    ``N = sum_k q_k x size_k x mark_k`` (the chain's positions at their marks) and entry = mark, its
    unrealised PnL moved into cash (so NAV, wallet and collateral are those of the real book).
    The inner's front target x (USD; default N) goes to the active contract, every other chain
    contract to 0; other contracts and spot pass through. A position still in a non-active chain
    contract is rolled: closed at its mark, x opened in the active one, both legs charged as normal
    futures trades (fee + slippage) and declared in ``RollTargets.rolls`` so the backtest records it
    (``BacktestResult.rolls``, with the basis ``x (P_to - P_from) / P_to`` that the new leg pays as
    it converges). Every contract of the schedule must be in the book.
    """

    def __init__(self, inner: Policy, schedule: Sequence[FuturesContract],
                 roll_days_before: float = 3.0) -> None:
        if not schedule:
            raise ValidationError("schedule", "is empty", "give the chain of dated contracts")
        if not (math.isfinite(roll_days_before) and roll_days_before >= 0):
            raise ValidationError("roll_days_before", f"is {roll_days_before}",
                                  "give the days before expiry to roll (>= 0)")
        expiries: list[int] = []
        for c in schedule:
            e = expiry_ns(c)
            if e is None:
                raise ValidationError(f"schedule.{c.symbol}", "is not a dated future",
                                      "list contracts of kind DATED with an expiry")
            if c.underlying != schedule[0].underlying:
                raise ValidationError(f"schedule.{c.symbol}.underlying",
                                      f"is {c.underlying!r}, not {schedule[0].underlying!r}",
                                      "roll contracts on one underlying")
            if expiries and e <= expiries[-1]:
                raise ValidationError(f"schedule.{c.symbol}.expiry", "is not after the previous one",
                                      "sort the chain by expiry, each contract once")
            expiries.append(e)
        self.inner = inner
        self.schedule = tuple(schedule)
        self.roll_days_before = float(roll_days_before)
        self.front = schedule[0].symbol
        self.name = f"rolling_{inner.name}"
        self._roll_at = [e - round(self.roll_days_before * NS_PER_DAY) for e in expiries]

    def active(self, t: pd.Timestamp) -> FuturesContract | None:
        """The contract the chain is held in at t: the first with t < expiry - roll_days_before."""
        ts = pd.Timestamp(t)
        ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
        t_ns = int(ts.as_unit("ns").value)
        for c, at in zip(self.schedule, self._roll_at, strict=True):
            if t_ns < at:
                return c
        return None

    def _view(self, book: Book, market: MarketSnapshot,
              shown: FuturesContract) -> tuple[Book, MarketSnapshot, float]:
        """The book and market the inner policy sees, and the chain's notional N (USD)."""
        chain = {c.symbol for c in self.schedule}
        missing = sorted(chain - set(book.contract_symbols))
        if missing:
            raise ValidationError("book.contracts", f"lacks the schedule's {missing}",
                                  "list every contract of the roll schedule in the book")
        held = replace(book, futures={s: p for s, p in book.futures.items() if s in chain})
        upnl = held.unrealized_pnl(market)
        notional = float(held.futures_notional(market).sum())
        front = replace(shown, symbol=self.front)
        mark = market.mark_price(shown.symbol)
        contracts: list[FuturesContract] = []
        for c in book.contracts:  # book order, the chain shown once where its first member is
            if c.symbol not in chain:
                contracts.append(c)
            elif not any(k.symbol == self.front for k in contracts):
                contracts.append(front)
        futures = {s: p for s, p in book.futures.items() if s not in chain}
        if notional != 0:
            futures[self.front] = FuturesPosition(front.contracts_for(notional, mark), mark)
        view = replace(book, contracts=tuple(contracts), futures=futures, cash=book.cash + upnl)

        def relabel(values: Mapping[str, float]) -> dict[str, float]:
            out = {s: v for s, v in values.items() if s not in chain}
            if shown.symbol in values:
                out[self.front] = values[shown.symbol]
            return out

        mk = replace(market, mark={**relabel(market.mark), self.front: mark},
                     funding=relabel(market.funding), half_spread=relabel(market.half_spread),
                     adv=relabel(market.adv))
        return view, mk, notional

    def __call__(self, book: Book, market: MarketSnapshot, t: pd.Timestamp) -> TargetHoldings:
        act = self.active(t)
        shown = act if act is not None else self.schedule[-1]
        view, mk, notional = self._view(book, market, shown)
        inner = self.inner(view, mk, t)
        x = float(inner.futures.get(self.front, notional))
        futures = {s: float(v) for s, v in inner.futures.items() if s != self.front}
        rolls: list[tuple[str, str]] = []
        for c in self.schedule:
            futures[c.symbol] = x if act is not None and c.symbol == act.symbol else 0.0
            pos = book.futures.get(c.symbol)
            if act is not None and c.symbol != act.symbol and pos is not None and pos.contracts != 0:
                rolls.append((c.symbol, act.symbol))
        return RollTargets(spot=dict(inner.spot), futures=futures, solution=inner.solution,
                           solve_time_ms=inner.solve_time_ms,
                           solver_fallbacks=inner.solver_fallbacks, rolls=tuple(rolls))
