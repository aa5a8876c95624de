"""Book-file [risk] on a data folder: the basis risk of the perpetuals, from their mark closes.

The tracking error counts the basis b = mark / spot - 1 a futures position adds (``risk.basis_risk``,
on by default; models.risk.RiskModel.basis_cov). With ``[risk] source = "data"`` and no
``[risk.basis_vols]``, :func:`data_basis` estimates it the way the synthetic history's is
(models.risk.basis_covariance): the annualised covariance of the daily change of b, from the
perpetual mark closes (``perp_mark_4h/<ASSET>``, the 4 h bar that closes at 00:00 UTC) and the
daily spot closes at the same times, over the risk model's lookback up to the market time (no
look-ahead). Each perpetual takes its underlying's basis. A perpetual whose underlying has no mark
file, or fewer than ``MIN_BASIS_DAYS`` daily basis changes in the window, and every dated contract (its
basis to a quarterly is another series) get no basis risk, and the data label names them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from fbr.config_sources import ParseContext, spot_closes, until
from models.book import Book
from models.data_files import optional_file
from models.data_layout import MARK_BAR_HOURS, MARK_FOLDER
from models.instruments import ContractKind

#: Fewest daily basis changes an underlying needs in the window to be estimated.
MIN_BASIS_DAYS = 30


def daily_marks(data_dir: Path, asset: str, end: pd.Timestamp) -> pd.Series | None:
    """The perpetual mark of ``asset`` at each 00:00 UTC close up to ``end`` (USD, indexed by close
    time); None without a mark file."""
    from models.io import load_mark_closes

    if optional_file(data_dir, MARK_FOLDER, asset) is None:
        return None
    closes = load_mark_closes(data_dir, [asset])[asset]
    closes.index = pd.DatetimeIndex(closes.index) + pd.Timedelta(hours=MARK_BAR_HOURS)
    closes = closes.loc[closes.index.normalize() == closes.index]
    return until(closes.to_frame(), end)[asset]


def _basis_changes(data_dir: Path, assets: Sequence[str], end: pd.Timestamp, lookback: int,
                   skipped: dict[str, str]) -> pd.DataFrame:
    """Daily changes of each asset's basis over the last ``lookback`` days to ``end`` (columns:
    the assets with enough marks; the others go to ``skipped`` with the reason)."""
    spot = until(spot_closes(data_dir, assets, "risk"), end)
    out: dict[str, pd.Series] = {}
    for asset in assets:
        marks = daily_marks(data_dir, asset, end)
        if marks is None:
            skipped[asset] = "no mark file"
            continue
        basis = (marks / spot[asset].reindex(marks.index) - 1.0).dropna().tail(lookback + 1)
        change = basis.diff().dropna()
        if len(change) < MIN_BASIS_DAYS:
            skipped[asset] = f"{len(change)} daily basis changes in the window"
            continue
        out[asset] = change
    return pd.DataFrame(out)


def data_basis(book: Book, data_dir: Path, end: pd.Timestamp, lookback: int,
               ctx: ParseContext) -> np.ndarray:
    """The basis covariance (M x M, contract order, annualised on 365 days) estimated from the data
    folder's perpetual marks (module docstring); zero rows and columns for the contracts left out.

    Sigma_b = 365 cov(Delta b) on the days every estimated underlying has (divisor T - 1; with
    fewer than ``MIN_BASIS_DAYS`` such days, each underlying's own variance on its own days and
    no cross terms, still positive semi-definite)."""
    perps = [c for c in book.contracts if c.kind == ContractKind.PERPETUAL]
    assets = list(dict.fromkeys(c.underlying for c in perps))
    skipped: dict[str, str] = {}
    changes = _basis_changes(data_dir, assets, end, lookback, skipped) if assets else pd.DataFrame()
    common = changes.dropna()
    if len(common) >= MIN_BASIS_DAYS:
        cov = np.atleast_2d(np.cov(common.to_numpy(dtype=float), rowvar=False, ddof=1))
    else:
        cov = np.diag([float(changes[a].dropna().var(ddof=1)) for a in changes.columns])
    cov = cov * 365.0
    col = {a: i for i, a in enumerate(changes.columns)}
    m = len(book.contracts)
    out = np.zeros((m, m))
    rows = [(j, col[c.underlying]) for j, c in enumerate(book.contracts)
            if c.kind == ContractKind.PERPETUAL and c.underlying in col]
    for j, a in rows:
        for k, b in rows:
            out[j, k] = cov[a, b]
    left = [f"{c.symbol} ({skipped[c.underlying]})" for c in perps if c.underlying in skipped]
    left += [f"{c.symbol} (dated)" for c in book.contracts if c.kind != ContractKind.PERPETUAL]
    ctx.labels.append(f"basis risk: estimated from daily perpetual mark vs spot closes in {data_dir} "
                      f"({len(common)} common days)" + (f"; none for {', '.join(left)}" if left else ""))
    return out
