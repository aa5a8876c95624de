"""Dated futures marked at the real Binance quarterly closes, and the basis term structure fitted
to them for the times they do not cover.

Units: prices USD; the basis is annualised (fraction per year of 365 days); days to expiry in
days; times UTC (int64 ns where an expiry is passed as a number).

- :class:`BasisTermStructure` is an annualised basis by days to expiry, ``b(tau) = a + slope x tau``,
  fitted by least squares to the real Binance quarterlies (``../shared/data/quarterly_1d``,
  :func:`quarterly_basis_samples`; an underlying with no quarterly file is modelled from the
  pooled BTC/ETH fit, else from whatever files exist, :func:`fit_quarterly_term_structure`);
- :func:`quarterly_marks` and :func:`with_quarterly_marks` mark a path's dated contracts at the real
  daily closes where they exist and at that fitted (modelled) basis elsewhere, and label each
  mark's source (:data:`REAL`, :data:`REAL_FFILL`, :data:`MODELLED`) in
  ``MarketPath.mark_source``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from models.data_layout import QUARTERLY_FOLDER, SPOT_DAILY_FOLDER, SUFFIXES
from models.errors import ValidationError
from models.instruments import FuturesContract
from models.io import load_quarterly_closes, load_spot_closes, quarterly_files
from scenarios.dated_basis import DAYS_PER_YEAR, NS_PER_DAY, dated_contracts, days_left
from scenarios.market_path import MarketPath
from scenarios.settlement import expiry_ns

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
        result: np.ndarray = np.asarray(spot, dtype=float) * (1.0 + self.annual(tau) * tau / DAYS_PER_YEAR)
        return result


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
    return any((Path(data_dir) / SPOT_DAILY_FOLDER / f"{underlying}{sfx}").is_file() for sfx in SUFFIXES)


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
      expiry always ``S_t`` (modelled; the replay settles on the first step at or after it, at the
      spot interpolated to the expiry, ``scenarios.settlement.spot_at_expiry``).
    """
    index = pd.DatetimeIndex(spot.index)
    s = spot.to_numpy(dtype=float)
    tau = days_left(index, expiry)
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
    dated = dated_contracts(path, contracts)
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
        _check_delivery_time(data_dir, f"{c.underlying}{quote}", delivery, c.symbol)
        real = load_quarterly_closes(data_dir, f"{c.underlying}{quote}", delivery)
        values, src = quarterly_marks(path.spot[c.underlying].astype(float), real, expiry, term)
        mark[c.symbol] = values
        source[c.symbol] = src
    funding = path.funding
    if funding is not None:
        funding = funding.drop(columns=[c.symbol for c in dated if c.symbol in funding.columns])
    return replace(path, mark=mark.astype(float), funding=funding, mark_source=source), term


def _check_delivery_time(data_dir: Path | str, pair: str, delivery: pd.Timestamp,
                         symbol: str) -> None:
    """Refuse a dated contract whose expiry has the date of a quarterly file but not its time (a
    bare date, 00:00 UTC, for a contract delivering at 08:00): its real closes would be left out
    and every mark modelled."""
    files = quarterly_files(data_dir, pair)
    if delivery in files:
        return
    for when, path in files.items():
        if when.date() == delivery.date():
            raise ValidationError(f"contracts.{symbol}.expiry", f"is {delivery}, but {path} "
                                  f"delivers at {when}",
                                  f'give expiry = "{when:%Y-%m-%dT%H:%M:%SZ}"')
