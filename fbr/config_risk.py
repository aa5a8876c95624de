"""Book-file [risk]: the risk model.

Either explicit, Sigma = D C D with D = diag(annualised vols) and C a correlation matrix (or one
common correlation), or estimated by models.risk.estimate_risk from daily returns (synthetic or a
data folder) up to the market time. Optional basis risk per contract: basis_vols (diagonal), or
estimated from the synthetic history's or the data folder's perpetual marks vs spot (fbr.config_basis).
Vols are annualised on a 365-day year.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fbr.config_sources import (
    MARKET_SOURCES,
    History,
    ParseContext,
    resolve_data_dir,
    spot_closes,
    synthetic_history,
    synthetic_params,
    until,
)
from fbr.config_values import (
    Table,
    boolean,
    check_keys,
    choice,
    in_range,
    join,
    known,
    number,
    positive,
    string,
    sub_table,
    whole,
)
from models.book import Book
from models.errors import FbrError, ValidationError
from models.market import MarketSnapshot
from models.risk import SINGULAR_EIG, RiskModel, singular_eigenvalue
from models.trailing_risk import DEFAULT_HALFLIFE_DAYS, MIN_RISK_ROWS, RiskEstimator

if TYPE_CHECKING:  # pandas is imported where it runs: off a plain solve's start-up path
    import pandas as pd

RISK_EXPLICIT_KEYS = ("vols", "correlation")
RISK_ESTIMATE_KEYS = (
    "method", "lookback_days", "halflife", "n_factors", "seed", "days", "start", "data_dir",
)
RISK_KEYS = ("source", *RISK_EXPLICIT_KEYS, *RISK_ESTIMATE_KEYS, "basis_risk", "basis_vols")
DEFAULT_LOOKBACK_DAYS = 365


def parse_risk(table: Table, book: Book, market: MarketSnapshot, market_table: Table,
               ctx: ParseContext) -> tuple[RiskModel, RiskEstimator | None]:
    """[risk]: explicit vols + correlation, or estimated from synthetic or real returns; with the
    estimator's settings of an estimated model (None for an explicit one)."""
    check_keys(table, RISK_KEYS, "risk")
    basis_on = boolean(table.get("basis_risk", True), "risk.basis_risk")  # checked before any read
    symbols = book.asset_symbols
    source = _risk_source(table, market_table)
    est: RiskEstimator | None = None
    if source == "explicit":
        model = _explicit_risk(table, symbols)
        ctx.labels.append("risk model: vols and correlation given in the book file")
    else:
        model, est = _estimated_risk(table, source, symbols, market, market_table, ctx)
    if not basis_on:  # no basis term anywhere: solve, status, whatif and the loop's gate alike
        if "basis_vols" in table:
            raise ValidationError("risk.basis_vols", "is given but risk.basis_risk = false, so it "
                                  "would be ignored", "remove basis_vols, or set basis_risk = true")
        return model, est
    if "basis_vols" in table:
        model = _with_basis(model, sub_table(table, "basis_vols", "risk"), book)
    elif source == "synthetic":
        model = _synthetic_basis(model, table, book, market, market_table, ctx)
    elif source == "data" and book.contracts:
        import pandas as pd

        from fbr.config_basis import data_basis

        lookback = whole(table.get("lookback_days", DEFAULT_LOOKBACK_DAYS), "risk.lookback_days", 2)
        cov = data_basis(book, _data_dir(table, market_table, ctx), pd.Timestamp(market.time),
                         lookback, ctx)
        model = dataclasses.replace(model, basis_cov=cov, basis_method="estimated")
    return model, est


def _risk_source(table: Table, market_table: Table) -> str:
    """explicit when vols are given; else [risk].source; else the market's source if it has one."""
    if "source" in table:
        src = choice(table["source"], "risk.source", MARKET_SOURCES, str)
    elif "vols" in table or "correlation" in table:
        src = "explicit"
    else:
        src = str(market_table.get("source", "explicit")).lower()
        if src not in ("synthetic", "data"):
            raise ValidationError("risk", "gives no risk model",
                                  "add risk.vols and risk.correlation, or set risk.source = "
                                  '"synthetic" or "data" to estimate one')
    wrong = RISK_ESTIMATE_KEYS if src == "explicit" else RISK_EXPLICIT_KEYS
    for key in wrong:
        if key in table:
            raise ValidationError(join("risk", key), f"is {table[key]!r} but the risk model is "
                                  f"{'explicit' if src == 'explicit' else 'estimated'} "
                                  f"(source {src!r})",
                                  "remove it, or change risk.source")
    return src


def _explicit_risk(table: Table, symbols: Sequence[str]) -> RiskModel:
    """Sigma = D C D from annual vols (D) and a correlation matrix C (or one common value)."""
    vols_table = sub_table(table, "vols", "risk")
    for sym, v in vols_table.items():
        known(sym, symbols, f"risk.vols.{sym}", "an asset of the book", v)
    missing = [s for s in symbols if s not in vols_table]
    if missing:
        raise ValidationError("risk.vols", f"has no vol for {missing}",
                              "give an annualised vol for every asset, e.g. BTC = 0.6 or \"60%\"")
    vols = {s: _vol(vols_table[s], f"risk.vols.{s}") for s in vols_table}
    order = list(vols_table)
    if "correlation" not in table and len(order) > 1:
        raise ValidationError("risk.correlation", "is missing",
                              "give one correlation for all pairs (e.g. 0.7) or a matrix")
    corr = _correlation(table.get("correlation", 1.0), order)
    d = np.array([vols[s] for s in order])
    model = RiskModel.from_covariance(order, corr * np.outer(d, d), method="given")
    return model.subset(list(symbols))


#: The largest annualised vol a book may state (a fraction: 100 = 10,000% a year). The most
#: volatile listed coins run at 1-3; past this bound the number is a typo or a unit slip, and its
#: square would swamp every other term of the objective.
MAX_VOL = 100.0


def _vol(value: object, path: str, *, zero: bool = False) -> float:
    """An annualised volatility: a fraction in (0, MAX_VOL] ("60%" allowed); 0 too when ``zero``."""
    v = number(value, path, percent=True)
    if v < 0 or (v == 0 and not zero) or v > MAX_VOL:
        low = ">= 0" if zero else "> 0"
        raise ValidationError(path, f"is {value!r}, not a realistic annualised vol",
                              f'give an annualised vol {low} and at most {MAX_VOL:g} '
                              f'({100 * MAX_VOL:,.0f}%), e.g. 0.6 or "60%"')
    return v


def _correlation(value: object, order: Sequence[str]) -> np.ndarray:
    """A symmetric, positive semi-definite correlation matrix over ``order`` (the vols' order)."""
    n = len(order)
    path = "risk.correlation"
    if not isinstance(value, list):
        rho = in_range(value, path, -1.0, 1.0)
        corr = np.full((n, n), rho)
        np.fill_diagonal(corr, 1.0)
    else:
        corr = _matrix(value, n, path, order)
    lam_min = float(np.linalg.eigvalsh(corr).min()) if n else 1.0
    if lam_min < -SINGULAR_EIG:
        raise ValidationError(path, f"is {value!r}, which is not positive semi-definite "
                              f"(smallest eigenvalue {lam_min:.3g})",
                              "give a valid correlation matrix (e.g. estimate it from returns); "
                              "pairwise values cannot be set independently")
    if lam_min <= SINGULAR_EIG:
        raise ValidationError(path, f"is {value!r}, which is singular (smallest eigenvalue "
                              f"{lam_min:.3g}): some mix of the assets would carry no risk, so "
                              "many hedges would tie and the answer would be arbitrary",
                              "give correlations strictly inside (-1, 1), e.g. 0.99 for two "
                              "assets that move almost as one")
    return corr


def _matrix(value: list[object], n: int, path: str, order: Sequence[str]) -> np.ndarray:
    """An n x n matrix with unit diagonal, entries in [-1, 1], symmetric."""
    rows = [r for r in value if isinstance(r, list)]
    if len(value) != n or len(rows) != n or not all(len(r) == n for r in rows):
        shape = f"{len(value)} rows" + (f" of lengths {[len(r) for r in rows]}"
                                        if len(rows) == len(value) else "")
        raise ValidationError(path, f"has {shape}, expected {n} x {n}",
                              f"give one row and one column per asset in the order of risk.vols: "
                              f"{', '.join(order)}")
    corr = np.array([[in_range(x, f"{path}[{i}][{j}]", -1.0, 1.0) for j, x in enumerate(row)]
                     for i, row in enumerate(rows)])
    for i in range(n):
        if abs(corr[i, i] - 1.0) > 1e-9:
            raise ValidationError(f"{path}[{i}][{i}]", f"is {rows[i][i]!r}",
                                  "the diagonal of a correlation matrix is 1")
    bad = np.argwhere(np.abs(corr - corr.T) > 1e-9)
    if len(bad):
        i, j = (int(x) for x in bad[0])
        raise ValidationError(f"{path}[{i}][{j}]", f"is {rows[i][j]!r} but {path}[{j}][{i}] is "
                              f"{rows[j][i]!r}: the matrix is not symmetric",
                              f"give the same correlation for {order[i]}/{order[j]} both ways")
    return corr


def _estimated_risk(table: Table, source: str, symbols: Sequence[str], market: MarketSnapshot,
                    market_table: Table, ctx: ParseContext) -> tuple[RiskModel, RiskEstimator]:
    """models.risk.estimate_risk on daily returns up to the market time (no look-ahead), and the
    estimator's settings."""
    from models.risk import estimate_risk

    method = string(table.get("method", "ledoit_wolf"), "risk.method")
    lookback = table.get("lookback_days", DEFAULT_LOOKBACK_DAYS)
    if isinstance(lookback, bool) or not isinstance(lookback, int) or lookback < 2:
        raise ValidationError("risk.lookback_days", f"is {lookback!r}", "give whole days >= 2")
    halflife = positive(table.get("halflife", DEFAULT_HALFLIFE_DAYS), "risk.halflife")
    n_factors = table.get("n_factors")
    if n_factors is not None and (isinstance(n_factors, bool) or not isinstance(n_factors, int)
                                  or n_factors < 1):
        raise ValidationError("risk.n_factors", f"is {n_factors!r}", "give a whole number >= 1")
    returns, what = _risk_returns(table, source, symbols, market, market_table, ctx)
    returns = returns.tail(lookback)
    if len(returns) < MIN_RISK_ROWS:
        raise ValidationError("risk.lookback_days", f"is {lookback} and leaves {len(returns)} "
                              f"daily returns up to market.time (an estimate needs at least "
                              f"{MIN_RISK_ROWS})", "use a longer lookback or a later market time, "
                              "or give risk.vols and risk.correlation")
    try:
        model = estimate_risk(returns, method, periods_per_year=365.0, halflife=halflife,
                              n_factors=n_factors)
    except FbrError:
        raise
    except ValueError as exc:
        raise ValidationError("risk.method", f"is {method!r}: {exc}",
                              "use a method models.risk.estimate_risk knows") from exc
    _check_not_singular(model.subset(list(symbols)).covariance, len(returns), method)
    ctx.labels.append(f"risk model: {method} estimated on {len(returns)} days of {what}")
    return model.subset(list(symbols)), RiskEstimator(method, lookback, halflife, n_factors)


def _check_not_singular(cov: np.ndarray, rows: int, method: str) -> None:
    """An estimate whose covariance is singular (a sample or EWMA estimate on fewer returns than
    assets, say) leaves hedges that tie at zero risk: the answer would be arbitrary. Refused."""
    lam = singular_eigenvalue(cov)
    if lam is not None:
        raise ValidationError("risk.method", f"is {method!r} and its estimate on {rows} daily "
                              f"returns of {cov.shape[0]} assets is singular (smallest eigenvalue "
                              f"{lam:.3g}): some mix of the assets would carry no risk",
                              "use method = \"ledoit_wolf\", or a longer lookback_days (more "
                              "returns than assets)")


def _risk_returns(table: Table, source: str, symbols: Sequence[str], market: MarketSnapshot,
                  market_table: Table, ctx: ParseContext) -> tuple[pd.DataFrame, str]:
    """Daily simple returns for the estimate, cut at the market time."""
    if source == "synthetic":
        hist, end, seed = _risk_history(table, symbols, market, market_table, ctx)
        return until(hist.returns, end), f"synthetic returns (seed {seed})"
    for key in ("seed", "days", "start"):
        if key in table:
            raise ValidationError(join("risk", key), f"is {table[key]!r} but risk.source is "
                                  "'data'", 'remove it, or set risk.source = "synthetic"')
    import pandas as pd

    d = _data_dir(table, market_table, ctx)
    return _data_returns(d, symbols, pd.Timestamp(market.time)), f"daily spot returns from {d}"


def _data_dir(table: Table, market_table: Table, ctx: ParseContext) -> Path:
    """The data folder of a [risk] estimated from data: its own ``data_dir``, else the market's."""
    if "data_dir" not in table and "data_dir" in market_table:
        return resolve_data_dir(market_table, "market", ctx)
    return resolve_data_dir(table, "risk", ctx)


def _risk_history(table: Table, symbols: Sequence[str], market: MarketSnapshot,
                  market_table: Table, ctx: ParseContext) -> tuple[History, pd.Timestamp | None, int]:
    """The synthetic history the risk estimate uses, the time to cut it at, and its seed.

    When the market is synthetic too, missing seed/days/start come from [market] (one shared
    history) and the history is cut at the market time (no look-ahead).
    """
    import pandas as pd

    same = str(market_table.get("source", "")).lower() == "synthetic"
    seed, days, start = synthetic_params(table, "risk", market_table if same else None)
    hist = synthetic_history(symbols, seed, days, start, ctx, "risk")
    return hist, (pd.Timestamp(market.time) if same else None), seed


def _data_returns(data_dir: Path, symbols: Sequence[str], end: pd.Timestamp) -> pd.DataFrame:
    """Daily simple returns of the data folder's spot closes up to ``end``, common span only, each
    over one day: where a bar is missing (in any symbol's file) the return across the gap spans
    two days or more and is left out, not counted as one day's."""
    import pandas as pd

    from models.trailing_risk import one_step_returns

    return one_step_returns(until(spot_closes(data_dir, symbols, "risk"), end), pd.Timedelta(days=1))


def _synthetic_basis(model: RiskModel, table: Table, book: Book, market: MarketSnapshot,
                     market_table: Table, ctx: ParseContext) -> RiskModel:
    """basis_cov from the synthetic history's mark vs spot (each contract takes its underlying's
    basis), over the same lookback as the return estimate."""
    from models.risk import basis_covariance

    hist, end, _ = _risk_history(table, book.asset_symbols, market, market_table, ctx)
    lookback = whole(table.get("lookback_days", DEFAULT_LOOKBACK_DAYS), "risk.lookback_days", 2) + 1
    mark = until(hist.mark, end).tail(lookback)
    spot = until(hist.spot, end).tail(lookback)
    cov = basis_covariance(mark, spot)
    idx = {str(s): i for i, s in enumerate(mark.columns)}
    rows = [idx[c.underlying] for c in book.contracts]
    ctx.labels.append("basis risk: estimated from synthetic mark vs spot")
    return dataclasses.replace(model, basis_cov=cov[np.ix_(rows, rows)], basis_method="estimated")


def _with_basis(model: RiskModel, table: Table, book: Book) -> RiskModel:
    """basis_cov = diag(basis_vol_j^2) in contract order (0 for contracts not listed)."""
    csyms = book.contract_symbols
    for sym, v in table.items():
        known(sym, csyms, f"risk.basis_vols.{sym}", "a contract", v)
    vols = [_vol(table[s], f"risk.basis_vols.{s}", zero=True) if s in table else 0.0
            for s in csyms]
    return dataclasses.replace(model, basis_cov=np.diag(np.square(vols)))
