"""Book-file [risk] on a data folder: the basis risk of the perpetuals, from their mark closes.

The tracking error counts the basis b = mark / spot - 1 a futures position adds (``risk.basis_risk``,
on by default; models.risk.RiskModel.basis_cov). With ``[risk] source = "data"`` and no
``[risk.basis_vols]``, :func:`data_basis` estimates it the way the synthetic history's is
(models.risk.basis_covariance): the annualised covariance of the daily change of b, from the
perpetual mark closes (``perp_mark_4h/<ASSET>``, the 4 h bar that closes at 00:00 UTC) and the
daily spot closes at the same times, over the risk model's lookback up to the market time (no
look-ahead). Each contract takes its underlying's perpetual basis: a dated contract too (as the
synthetic estimate does; its own basis to a quarterly is another series, at least this risky, so
it is not priced as basis-free beside a perpetual). A contract whose underlying has no mark file,
or fewer than ``MIN_BASIS_DAYS`` daily basis changes in the window, gets none, and the data label
names them. :class:`BasisHistory` holds the series once, so a replay re-estimates it at each refresh of
its trailing risk model from the days before it only (fbr.backtest_risk).
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
from models.instruments import ContractKind

#: Fewest daily basis changes an underlying needs in the window to be estimated.
MIN_BASIS_DAYS = 30


def daily_marks(data_dir: Path, asset: str) -> pd.Series | None:
    """The perpetual mark of ``asset`` at each 00:00 UTC close (USD, indexed by close time; the
    4 h closes of fbr.config_market.mark_closes); None without a mark file."""
    closes = mark_closes(data_dir, asset)
    if closes is None:
        return None
    idx = pd.DatetimeIndex(closes.index)
    return closes.loc[idx.normalize() == idx]


@dataclass(frozen=True)
class BasisEstimate:
    """``cov`` (M x M, contract order, annualised on 365 days), the days every estimated
    underlying has (``common_days``) and why each other perpetual's underlying got none."""

    cov: np.ndarray
    common_days: int
    skipped: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BasisHistory:
    """A book's contracts and the daily basis b = mark / spot - 1 of their underlyings' perpetuals
    (columns: the underlyings with a mark file; ``no_marks`` the others), by close time."""

    book: Book
    basis: pd.DataFrame
    no_marks: tuple[str, ...]

    @staticmethod
    def load(book: Book, data_dir: Path) -> BasisHistory:
        """The daily marks of every perpetual's underlying against the folder's daily spot closes."""
        assets = list(dict.fromkeys(c.underlying for c in book.contracts))
        spot = spot_closes(data_dir, assets, "risk") if assets else pd.DataFrame()
        out: dict[str, pd.Series] = {}
        missing: list[str] = []
        for asset in assets:
            marks = daily_marks(data_dir, asset)
            if marks is None:
                missing.append(asset)
                continue
            out[asset] = (marks / spot[asset].reindex(marks.index) - 1.0).dropna()
        return BasisHistory(book, pd.DataFrame(out), tuple(missing))

    def estimate(self, end: pd.Timestamp, lookback: int) -> BasisEstimate:
        """The estimate from the ``lookback`` + 1 daily values of b up to ``end`` (module docstring).

        Sigma_b = 365 cov(Delta b) on the days every estimated underlying has (divisor T - 1; with
        fewer than ``MIN_BASIS_DAYS`` such days, each underlying's own variance on its own days and
        no cross terms, still positive semi-definite)."""
        skipped = dict.fromkeys(self.no_marks, "no mark file")
        changes: dict[str, pd.Series] = {}
        for asset in self.basis.columns:
            b = until(self.basis[[asset]].dropna(), end)[asset].tail(lookback + 1)
            change = b.diff().dropna()
            if len(change) < MIN_BASIS_DAYS:
                skipped[str(asset)] = f"{len(change)} daily basis changes in the window"
            else:
                changes[str(asset)] = change
        frame = pd.DataFrame(changes)
        common = frame.dropna()
        if len(common) >= MIN_BASIS_DAYS:
            cov = np.atleast_2d(np.cov(common.to_numpy(dtype=float), rowvar=False, ddof=1))
        else:
            cov = np.diag([float(frame[a].dropna().var(ddof=1)) for a in frame.columns])
        return BasisEstimate(self._by_contract(365.0 * cov, list(frame.columns)), len(common), skipped)

    def _by_contract(self, cov: np.ndarray, assets: list[str]) -> np.ndarray:
        """``cov`` over ``assets`` as the contracts' M x M: each contract takes its underlying's
        rows, zeros where the underlying was not estimated."""
        col = {a: i for i, a in enumerate(assets)}
        m = len(self.book.contracts)
        rows = [(j, col[c.underlying]) for j, c in enumerate(self.book.contracts) if c.underlying in col]
        out = np.zeros((m, m))
        for j, a in rows:
            for k, b in rows:
                out[j, k] = cov[a, b]
        return out


def left_out(book: Book, skipped: Mapping[str, str]) -> list[str]:
    """The contracts with no basis risk, each with the reason."""
    return [f"{c.symbol} ({skipped[c.underlying]})" for c in book.contracts if c.underlying in skipped]


def data_basis(book: Book, data_dir: Path, end: pd.Timestamp, lookback: int,
               ctx: ParseContext) -> np.ndarray:
    """The basis covariance (M x M) estimated from the data folder's perpetual marks up to
    ``end`` over ``lookback`` days (:meth:`BasisHistory.estimate`), with a data label."""
    est = BasisHistory.load(book, data_dir).estimate(end, lookback)
    left = left_out(book, est.skipped)
    dated = [c.symbol for c in book.contracts if c.kind != ContractKind.PERPETUAL]
    ctx.labels.append(f"basis risk: estimated from daily perpetual mark vs spot closes in {data_dir} "
                      f"({est.common_days} common days)"
                      + (f"; dated contracts at their underlying's perpetual basis: {', '.join(dated)}"
                         if dated else "")
                      + (f"; none for {', '.join(left)}" if left else ""))
    return est.cov
