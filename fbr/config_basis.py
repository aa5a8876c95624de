"""Book-file [risk] on a data folder: the basis risk of the futures, from their mark closes.

The tracking error counts the basis b = mark / spot - 1 a futures position adds (``risk.basis_risk``,
on by default; models.risk.RiskModel.basis_cov). With ``[risk] source = "data"`` and no
``[risk.basis_vols]``, :func:`data_basis` estimates it the way the synthetic history's is
(models.risk.basis_covariance): the annualised covariance of the daily change of b over the risk
model's lookback up to the market time (no look-ahead), at the 00:00 UTC closes:

- a perpetual: its underlying's perpetual mark (``perp_mark_4h/<ASSET>``, the 4 h bar that closes at
  00:00 UTC) against the daily spot close;
- a dated contract: the real quarterly closes of its underlying (``quarterly_1d/<ASSET>USDT_<YYMMDD>``)
  against spot, chained at constant maturity (:func:`nearest_maturity_changes`: each day the change
  of the quarterly whose days to expiry are nearest the contract's own at the market time, never a
  difference across two contracts), since a quarterly's basis moves with its carry times its time to
  expiry (on Binance's BTC/ETH quarterlies 2023-25, 1-8% a year, 4-20 times the perpetual's, and
  little correlated with it: benchmarks/basis_risk.py). An underlying with no quarterly file,
  fewer than ``MIN_BASIS_DAYS`` such changes in the window, or a contract expired at the market
  time, leaves it at its underlying's perpetual basis (a lower bound, as before), and the data
  label says which and why.

A perpetual whose underlying has no mark file, or fewer than ``MIN_BASIS_DAYS`` daily basis changes in
the window, gets none, and the data label names them. :class:`BasisHistory` holds the series once, so
a replay re-estimates it at each refresh of its trailing risk model from the days before it only
(fbr.backtest_risk).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fbr.config_market import mark_closes
from fbr.config_sources import ParseContext, spot_closes, until
from models.book import Book
from models.instruments import ContractKind, FuturesContract
from models.io import load_quarterly_closes, quarterly_files

#: Fewest daily basis changes a series needs in the window to be estimated.
MIN_BASIS_DAYS = 30
#: The quote of the quarterly files' pairs (``<UNDERLYING>USDT_<YYMMDD>``).
QUARTERLY_QUOTE = "USDT"
DAY = pd.Timedelta(days=1)


def daily_marks(data_dir: Path, asset: str) -> pd.Series | None:
    """The perpetual mark of ``asset`` at each 00:00 UTC close (USD, indexed by close time; the
    4 h closes of fbr.config_market.mark_closes); None without a mark file."""
    closes = mark_closes(data_dir, asset)
    if closes is None:
        return None
    idx = pd.DatetimeIndex(closes.index)
    return closes.loc[idx.normalize() == idx]


def perp_basis(data_dir: Path, asset: str, spot: pd.Series) -> pd.Series | None:
    """b = mark / spot - 1 of ``asset``'s perpetual at the daily closes (:func:`daily_marks`
    against ``spot``'s closes at the same times); None without a mark file."""
    marks = daily_marks(data_dir, asset)
    return None if marks is None else (marks / spot.reindex(marks.index) - 1.0).dropna()


def quarterly_bases(data_dir: Path, asset: str, spot: pd.Series) -> dict[pd.Timestamp, pd.Series]:
    """b = close / spot - 1 of each of ``asset``'s quarterly files at the daily closes (the close
    times both have; the delivery-day close, stamped 08:00, has no spot close), by delivery."""
    pair = f"{asset}{QUARTERLY_QUOTE}"
    out: dict[pd.Timestamp, pd.Series] = {}
    for delivery in quarterly_files(data_dir, pair):
        close = load_quarterly_closes(data_dir, pair, delivery)
        out[delivery] = (close / spot.reindex(close.index) - 1.0).dropna()
    return out


def nearest_maturity_changes(bases: Mapping[pd.Timestamp, pd.Series], tau_days: float,
                             end: pd.Timestamp) -> pd.Series:
    """Delta b on each day up to ``end``, of the quarterly whose days to expiry that day are
    nearest ``tau_days`` (ties: the earlier delivery): b_t - b_{t - 1 day} of one contract, so a
    change never spans two contracts or a gap in a file. Indexed by close time, sorted."""
    rows: list[pd.DataFrame] = []
    for delivery, b in sorted(bases.items()):
        change = daily_changes(until(b.to_frame("b"), end)["b"])
        tau = (delivery - pd.DatetimeIndex(change.index)) / DAY
        rows.append(pd.DataFrame({"change": change.to_numpy(), "dist": np.abs(tau - tau_days)},
                                 index=change.index))
    if not rows:
        return pd.Series(dtype=float)
    frame = pd.concat(rows).sort_values("dist", kind="stable")
    first = frame[~frame.index.duplicated(keep="first")]
    return first["change"].sort_index()


def daily_changes(b: pd.Series) -> pd.Series:
    """b_t - b_{t - 1 day} on each day whose previous day ``b`` has: a change across a missing
    day spans two days or more and is left out, not counted as one day's."""
    idx = pd.DatetimeIndex(b.index)
    consecutive = np.zeros(len(idx), dtype=bool)
    consecutive[1:] = (idx[1:] - idx[:-1]) == DAY
    return b.diff()[consecutive].dropna()


@dataclass(frozen=True)
class BasisEstimate:
    """``cov`` (M x M, contract order, annualised on 365 days), the days every estimated
    series has (``common_days``), why each other perpetual's underlying got none (``skipped``),
    the dated contracts estimated on their quarterlies (``dated_own``) and why each other one
    is at its underlying's perpetual basis (``dated_fallback``)."""

    cov: np.ndarray
    common_days: int
    skipped: dict[str, str] = field(default_factory=dict)
    dated_own: tuple[str, ...] = ()
    dated_fallback: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BasisHistory:
    """A book's contracts, the daily basis b = mark / spot - 1 of their underlyings' perpetuals
    (columns: the underlyings with a mark file; ``no_marks`` the others), by close time, and the
    dated contracts' underlyings' quarterly bases (:func:`quarterly_bases`)."""

    book: Book
    basis: pd.DataFrame
    no_marks: tuple[str, ...]
    quarterly: Mapping[str, Mapping[pd.Timestamp, pd.Series]] = field(default_factory=dict)

    @staticmethod
    def load(book: Book, data_dir: Path) -> BasisHistory:
        """The daily marks of every perpetual's underlying, and the quarterly closes of every
        dated contract's, against the folder's daily spot closes."""
        assets = list(dict.fromkeys(c.underlying for c in book.contracts))
        spot = spot_closes(data_dir, assets, "risk") if assets else pd.DataFrame()
        out: dict[str, pd.Series] = {}
        missing: list[str] = []
        for asset in assets:
            b = perp_basis(data_dir, asset, spot[asset])
            if b is None:
                missing.append(asset)
            else:
                out[asset] = b
        dated = dict.fromkeys(c.underlying for c in book.contracts if c.kind == ContractKind.DATED)
        quarterly = {a: quarterly_bases(data_dir, a, spot[a]) for a in dated}
        return BasisHistory(book, pd.DataFrame(out), tuple(missing), quarterly)

    def estimate(self, end: pd.Timestamp, lookback: int) -> BasisEstimate:
        """The estimate from the last ``lookback`` daily changes of each series up to ``end``
        (module docstring).

        Sigma_b = 365 cov(Delta b) on the days every estimated series has (divisor T - 1; with
        fewer than ``MIN_BASIS_DAYS`` such days, each series' own variance on its own days and
        no cross terms, still positive semi-definite)."""
        skipped = dict.fromkeys(self.no_marks, "no mark file")
        changes: dict[str, pd.Series] = {}
        for asset in self.basis.columns:
            b = until(self.basis[[asset]].dropna(), end)[asset].tail(lookback + 1)
            change = daily_changes(b)
            if len(change) < MIN_BASIS_DAYS:
                skipped[str(asset)] = f"{len(change)} daily basis changes in the window"
            else:
                changes[str(asset)] = change
        own, fallback = self._dated_changes(end, lookback)
        changes.update({_dated_key(sym): ch for sym, ch in own.items()})
        frame = pd.DataFrame(changes)
        common = frame.dropna()
        if len(common) >= MIN_BASIS_DAYS:
            cov = np.atleast_2d(np.cov(common.to_numpy(dtype=float), rowvar=False, ddof=1))
        else:
            cov = np.diag([float(frame[a].dropna().var(ddof=1)) for a in frame.columns])
        return BasisEstimate(self._by_contract(365.0 * cov, list(frame.columns)), len(common), skipped,
                             tuple(own), fallback)

    def _dated_changes(self, end: pd.Timestamp,
                       lookback: int) -> tuple[dict[str, pd.Series], dict[str, str]]:
        """Each dated contract's last ``lookback`` constant-maturity changes up to ``end``
        (:func:`nearest_maturity_changes` at its days to expiry at ``end``), or why it has none."""
        own: dict[str, pd.Series] = {}
        fallback: dict[str, str] = {}
        for c in self.book.contracts:
            if c.kind != ContractKind.DATED:
                continue
            tau = float(c.days_to_expiry(end.to_pydatetime()) or 0.0)
            reason = self._no_quarterly(c, tau)
            if reason is None:
                change = nearest_maturity_changes(self.quarterly[c.underlying], tau, end).tail(lookback)
                if len(change) >= MIN_BASIS_DAYS:
                    own[c.symbol] = change
                    continue
                reason = f"{len(change)} daily quarterly basis changes in the window"
            fallback[c.symbol] = reason
        return own, fallback

    def _no_quarterly(self, c: FuturesContract, tau: float) -> str | None:
        """Why ``c``, ``tau`` days from expiry, cannot be estimated on quarterly closes (None when
        it can)."""
        if not self.quarterly.get(c.underlying):
            return "no quarterly file"
        if tau <= 0.0:
            return "expired"
        return None

    def _by_contract(self, cov: np.ndarray, keys: list[str]) -> np.ndarray:
        """``cov`` over the series ``keys`` as the contracts' M x M: a dated contract estimated
        on its quarterlies takes its own rows, every other contract its underlying's perpetual's;
        zeros where that was not estimated."""
        col = {k: i for i, k in enumerate(keys)}
        m = len(self.book.contracts)
        rows = [(j, col[k]) for j, c in enumerate(self.book.contracts)
                for k in [_dated_key(c.symbol) if _dated_key(c.symbol) in col else c.underlying]
                if k in col]
        out = np.zeros((m, m))
        for j, a in rows:
            for k, b in rows:
                out[j, k] = cov[a, b]
        return out


def _dated_key(symbol: str) -> str:
    """The column of a dated contract's own basis changes (apart from the underlyings' names)."""
    return f"dated:{symbol}"


def left_out(book: Book, est: BasisEstimate) -> list[str]:
    """The contracts with no basis risk, each with the reason."""
    return [f"{c.symbol} ({est.skipped[c.underlying]})" for c in book.contracts
            if c.underlying in est.skipped and c.symbol not in est.dated_own]


def data_basis(book: Book, data_dir: Path, end: pd.Timestamp, lookback: int,
               ctx: ParseContext) -> np.ndarray:
    """The basis covariance (M x M) estimated from the data folder's perpetual marks and
    quarterly closes up to ``end`` over ``lookback`` days (:meth:`BasisHistory.estimate`), with a
    data label."""
    est = BasisHistory.load(book, data_dir).estimate(end, lookback)
    left = left_out(book, est)
    own = ", ".join(est.dated_own)
    perp = ", ".join(f"{s} ({why})" for s, why in est.dated_fallback.items())
    ctx.labels.append(f"basis risk: estimated from daily mark vs spot closes in {data_dir} "
                      f"({est.common_days} common days)"
                      + (f"; dated contracts on their quarterly closes at constant maturity: {own}"
                         if own else "")
                      + (f"; dated contracts at their underlying's perpetual basis: {perp}"
                         if perp else "")
                      + (f"; none for {', '.join(left)}" if left else ""))
    return est.cov
