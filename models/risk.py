"""Risk models: the annualised covariance of asset returns, in factor form for the optimiser.

Sigma = F F' + diag(d) (annualised, 365-day year, returns as fractions). The optimiser only needs
a square-root form G with Sigma = G G' (``sqrt_factor``), so the tracking-error term is a sum of
squares (DPP-friendly, fast at large N).  ``basis_cov`` (M x M, annualised) is the covariance of
each contract's basis return (mark vs spot), used for the basis part of tracking error.

Estimators (``estimate_risk``, ``basis_covariance``, ``returns_from_prices``) turn price and return
histories into these models.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Literal

import numpy as np

from models.errors import ValidationError

if TYPE_CHECKING:  # pandas is imported where it runs: off a plain solve's start-up path
    import pandas as pd

DAYS_PER_YEAR = 365.0
BasisMethod = Literal["given", "estimated"]  # how a basis covariance came (RiskModel.basis_method)


@dataclass(frozen=True)
class RiskModel:
    """An annualised covariance in factor form over ``symbols``.

    ``loadings`` F (N x K), ``idio`` d (N, variances >= 0); Sigma = F F' + diag(d). ``basis_cov``
    (M x M) the contracts' basis covariance: "given" or "estimated" from history (``basis_method``;
    a replay starting before the estimate's end re-estimates it: models.trailing_risk)."""

    symbols: tuple[str, ...]
    loadings: np.ndarray
    idio: np.ndarray
    method: str = "given"
    basis_cov: np.ndarray | None = field(default=None)
    basis_method: BasisMethod = "given"

    def __post_init__(self) -> None:
        n = len(self.symbols)
        if self.loadings.shape[0] != n or self.idio.shape != (n,):
            raise ValidationError("risk", "has shapes that do not match its symbols",
                                  "give loadings (N x K) and idio (N) for N symbols")
        if not np.all(np.isfinite(self.loadings)) or not np.all(np.isfinite(self.idio)):
            raise ValidationError("risk", "has non-finite entries",
                                  "estimate the risk model from clean return data")
        if np.any(self.idio < -1e-15):
            raise ValidationError("risk.idio", "has negative variances", "give variances >= 0")

    @staticmethod
    def from_covariance(symbols: tuple[str, ...] | list[str], cov: np.ndarray,
                        method: str = "given") -> RiskModel:
        """Full-rank factor form of a covariance: F = V sqrt(lambda) (eigen), d = 0.

        Negative eigenvalues (numerical noise) are clipped to zero.
        """
        cov = np.asarray(cov, dtype=float)
        cov = 0.5 * (cov + cov.T)
        lam, vec = np.linalg.eigh(cov)
        lam = np.clip(lam, 0.0, None)
        F = vec * np.sqrt(lam)
        return RiskModel(tuple(symbols), F, np.zeros(len(symbols)), method=method)

    @property
    def covariance(self) -> np.ndarray:
        """Sigma (N x N, annualised)."""
        return np.asarray(self.loadings @ self.loadings.T + np.diag(self.idio), dtype=float)

    def sqrt_factor(self) -> np.ndarray:
        """G (N x (K + N)) with Sigma = G G': [F, diag(sqrt(d))] (idio columns dropped if zero)."""
        if np.all(self.idio <= 0):
            return self.loadings
        return np.hstack([self.loadings, np.diag(np.sqrt(np.clip(self.idio, 0, None)))])

    @property
    def vol(self) -> np.ndarray:
        """Annualised volatility per asset."""
        var = np.einsum("ik,ik->i", self.loadings, self.loadings) + self.idio
        return np.asarray(np.sqrt(np.clip(var, 0.0, None)), dtype=float)

    @property
    def daily_vol(self) -> np.ndarray:
        """Daily volatility per asset (annual / sqrt(365))."""
        return np.asarray(self.vol / np.sqrt(DAYS_PER_YEAR), dtype=float)

    def correlation(self) -> np.ndarray:
        """Correlation matrix (N x N)."""
        v = self.vol
        v = np.where(v > 0, v, 1.0)
        return self.covariance / np.outer(v, v)

    def subset(self, symbols: list[str]) -> RiskModel:
        """The model restricted to ``symbols`` (in that order); unknown symbols raise clearly."""
        if tuple(symbols) == self.symbols:
            return self
        idx = {s: i for i, s in enumerate(self.symbols)}
        missing = [s for s in symbols if s not in idx]
        if missing:
            raise ValidationError("risk.symbols", f"has no data for {missing}",
                                  "give price history for every asset in the book")
        rows = [idx[s] for s in symbols]
        return RiskModel(tuple(symbols), self.loadings[rows], self.idio[rows], self.method,
                         self.basis_cov, self.basis_method)


def tracking_error(deviation: np.ndarray, covariance: np.ndarray,
                   basis_position: np.ndarray | None = None,
                   basis_covariance: np.ndarray | None = None) -> float:
    """The tracking error: sqrt(d' Sigma d + z' Sigma_b z) (annualised, a fraction of the base V).

    ``deviation`` d = e - w* (effective weights minus targets, N), ``covariance`` Sigma (N x N,
    annual); with ``basis_position`` z = x / V (signed futures notional over V, M) and
    ``basis_covariance`` Sigma_b (M x M, annual), the basis moves the futures add. The one
    definition every layer reports (the optimiser's solution, what-if, the order plan's residual).
    """
    te2 = float(deviation @ covariance @ deviation)
    if basis_position is not None and basis_covariance is not None:
        te2 += float(basis_position @ basis_covariance @ basis_position)
    return math.sqrt(max(te2, 0.0))


# ---------------------------------------------------------------------------------------------
# Estimators: returns -> RiskModel
# ---------------------------------------------------------------------------------------------


class RiskMethod(StrEnum):
    """How ``estimate_risk`` turns a return history into a covariance."""

    SAMPLE = "sample"
    EWMA = "ewma"
    LEDOIT_WOLF = "ledoit_wolf"
    PCA = "pca"


#: Above this many assets the EWMA covariance is computed in numpy rather than by pandas'
#: ``ewm().cov()`` (riskfolio-lib's way), which builds every pairwise time series (T x N x N).
#: Both give the same number (same weights, same bias correction; tested).
EWMA_PANDAS_MAX_ASSETS = 32

#: Default cap on the number of PCA factors.
PCA_MAX_DEFAULT_FACTORS = 20

#: Relative floor on PCA idiosyncratic variances: d_i >= PCA_IDIO_FLOOR * mean(diag Sigma).
PCA_IDIO_FLOOR = 1e-6


def _parse_method(method: RiskMethod | str) -> RiskMethod:
    try:
        return RiskMethod(str(method).lower())
    except ValueError:
        valid = ", ".join(repr(m.value) for m in RiskMethod)
        raise ValidationError("risk.method", f"is {method!r}, not a known method",
                              f"use one of {valid}") from None


def _check_positive(field: str, value: float) -> float:
    v = float(value)
    if not np.isfinite(v) or v <= 0:
        raise ValidationError(field, f"is {value}", "give a finite number > 0")
    return v


def _clean_returns(returns: pd.DataFrame) -> pd.DataFrame:
    """Check a return table (rows: time, columns: symbols) and return it as float64."""
    import pandas as pd
    if not isinstance(returns, pd.DataFrame):
        raise ValidationError("returns", f"is a {type(returns).__name__}, not a DataFrame",
                              "pass a pandas DataFrame, one column per symbol")
    if returns.shape[1] == 0:
        raise ValidationError("returns", "has no columns", "give one column per symbol")
    if returns.shape[0] < 2:
        raise ValidationError("returns", f"has {returns.shape[0]} row(s)",
                              "give at least 2 periods of returns (more for a useful estimate)")
    if returns.columns.duplicated().any():
        dup = sorted({str(c) for c in returns.columns[returns.columns.duplicated()]})
        raise ValidationError("returns.columns", f"repeats {dup}", "give each symbol once")
    try:
        values = returns.to_numpy(dtype=float)
    except (TypeError, ValueError):
        raise ValidationError("returns", "has non-numeric entries",
                              "give returns as numbers (fractions per period)") from None
    bad = ~np.isfinite(values)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValidationError(f"returns.{returns.columns[col]}",
                              f"has a non-finite value ({values[row, col]}) "
                              f"at {returns.index[row]}",
                              "drop or fill missing rows first (returns.dropna()), or align the "
                              "price series on their common span before computing returns")
    return pd.DataFrame(values, index=returns.index, columns=[str(c) for c in returns.columns])


def _ewma_covariance_numpy(X: np.ndarray, alpha: float) -> np.ndarray:
    """Exponentially weighted covariance with pandas' ``ewm(alpha, adjust=True).cov()`` convention.

    Weights w_t = (1 - alpha)^(T-1-t) (newest weight 1), mean m = sum w x / sum w,
    C = sum w (x - m)(x - m)' / sum w, bias-corrected by (sum w)^2 / ((sum w)^2 - sum w^2).
    """
    T = X.shape[0]
    w = (1.0 - alpha) ** np.arange(T - 1, -1, -1, dtype=float)
    sw, sw2 = w.sum(), (w * w).sum()
    Xc = X - (w @ X) / sw
    biased = (Xc * w[:, None]).T @ Xc / sw
    return np.asarray(biased * (sw * sw / (sw * sw - sw2)))


def _period_covariance(X: pd.DataFrame, method: RiskMethod, halflife: float) -> np.ndarray:
    """Covariance per period (not annualised) for SAMPLE, EWMA and LEDOIT_WOLF, computed as
    riskfolio-lib's ``covar_matrix`` computes it (hist, ledoit, ewma1: equal bit for bit, tested)
    without importing riskfolio (3 s). SAMPLE: unbiased sample covariance (divisor T - 1).
    LEDOIT_WOLF: sklearn's Ledoit-Wolf shrinkage towards a scaled identity (divisor T). EWMA: decay
    d = 0.5^(1/halflife) per period, alpha = 1 - d, pandas' adjust=True weights, bias-corrected.
    """
    if method == RiskMethod.SAMPLE:
        return np.array(np.cov(X, rowvar=False), ndmin=2, dtype=float)
    if method == RiskMethod.LEDOIT_WOLF:
        from sklearn.covariance import LedoitWolf  # lazily: about 0.9 s to import

        return np.array(LedoitWolf().fit(X).covariance_, ndmin=2, dtype=float)
    decay = 0.5 ** (1.0 / halflife)
    if X.shape[1] <= EWMA_PANDAS_MAX_ASSETS:
        ew = X.ewm(alpha=1 - decay).cov()
        return np.array(ew.loc[ew.index[-1][0]], ndmin=2, dtype=float)
    return _ewma_covariance_numpy(X.to_numpy(), 1.0 - decay)


def default_pca_factors(n_assets: int) -> int:
    """Default K for the PCA model: min(N, max(1, min(N // 10, 20)))."""
    return min(n_assets, max(1, min(n_assets // 10, PCA_MAX_DEFAULT_FACTORS)))


def pca_factor_model(symbols: tuple[str, ...], cov: np.ndarray, n_factors: int) -> RiskModel:
    """K-factor model of an (annualised) covariance from its eigen-decomposition.

    With Sigma = V diag(lambda) V' (lambda descending), F = V_K diag(sqrt(lambda_K)) (top K) and
    d_i = max(Sigma_ii - sum_k F_ik^2, floor), floor = PCA_IDIO_FLOOR * mean(diag Sigma) > 0, so
    F F' + diag(d) is positive definite and keeps each asset's variance (up to the floor).
    """
    n = cov.shape[0]
    if not 1 <= n_factors <= n:
        raise ValidationError("risk.n_factors", f"is {n_factors} for {n} assets",
                              f"give an integer between 1 and {n}")
    cov = 0.5 * (cov + cov.T)
    lam, vec = np.linalg.eigh(cov)
    top = np.argsort(lam)[::-1][:n_factors]
    F = vec[:, top] * np.sqrt(np.clip(lam[top], 0.0, None))
    floor = max(PCA_IDIO_FLOOR * float(np.mean(np.diag(cov))), 1e-16)
    idio = np.maximum(np.diag(cov) - np.sum(F * F, axis=1), floor)
    return RiskModel(symbols, F, idio, method=RiskMethod.PCA.value)


#: A correlation matrix (or a covariance, relative to its mean variance) whose smallest
#: eigenvalue is at most this is singular: some mix of the assets would carry no risk, so many
#: hedges would tie at zero tracking error and the optimiser's answer would be arbitrary.
SINGULAR_EIG = 1e-8


def singular_eigenvalue(matrix: np.ndarray) -> float | None:
    """The smallest eigenvalue of a symmetric ``matrix`` (a correlation or a covariance) when it
    is at most ``SINGULAR_EIG`` x its mean diagonal (singular), else None."""
    if matrix.size == 0:
        return None
    lam = float(np.linalg.eigvalsh(0.5 * (matrix + matrix.T)).min())
    scale = max(float(np.trace(matrix)) / matrix.shape[0], 1e-300)
    return lam if lam <= SINGULAR_EIG * scale else None


def estimate_risk(returns: pd.DataFrame, method: RiskMethod | str = RiskMethod.LEDOIT_WOLF, *,
                  periods_per_year: float = 365.0, halflife: float = 30.0,
                  n_factors: int | None = None) -> RiskModel:
    """Estimate an annualised risk model from simple returns (rows: periods, columns: symbols).

    Sigma_annual = periods_per_year * Sigma_period. SAMPLE, EWMA (``halflife`` in periods) and
    LEDOIT_WOLF are riskfolio-lib's estimators and come back in full-rank factor form
    (``RiskModel.from_covariance``). PCA keeps the top ``n_factors`` eigen-factors of the
    Ledoit-Wolf covariance plus a diagonal idiosyncratic part (``pca_factor_model``); the default K
    is ``default_pca_factors(N)``.
    """
    m = _parse_method(method)
    ppy = _check_positive("risk.periods_per_year", periods_per_year)
    hl = _check_positive("risk.halflife", halflife)
    X = _clean_returns(returns)
    symbols = tuple(str(c) for c in X.columns)
    if m == RiskMethod.PCA:
        cov = _period_covariance(X, RiskMethod.LEDOIT_WOLF, hl) * ppy
        k = default_pca_factors(len(symbols)) if n_factors is None else int(n_factors)
        return pca_factor_model(symbols, cov, k)
    cov = _period_covariance(X, m, hl) * ppy
    return RiskModel.from_covariance(symbols, cov, method=m.value)


def returns_from_prices(prices: pd.DataFrame) -> pd.DataFrame:
    """Simple returns r_t = p_t / p_{t-1} - 1 per column; the first row (no prior price) is dropped.

    Prices must be finite and > 0: a bad one raises naming the column and its first timestamp.
    """
    import pandas as pd
    if not isinstance(prices, pd.DataFrame):
        raise ValidationError("prices", f"is a {type(prices).__name__}, not a DataFrame",
                              "pass a pandas DataFrame of prices, one column per symbol")
    if len(prices) < 2:
        raise ValidationError("prices", f"has {len(prices)} row(s)",
                              "give at least 2 prices per symbol")
    values = prices.to_numpy(dtype=float)
    bad = ~(np.isfinite(values) & (values > 0))
    if bad.any():
        col = int(np.argmax(bad.any(axis=0)))
        row = int(np.argmax(bad[:, col]))
        raise ValidationError(f"prices.{prices.columns[col]}",
                              f"is {values[row, col]} at {prices.index[row]}",
                              "give finite prices > 0 (drop or fill missing rows first)")
    rets = values[1:] / values[:-1] - 1.0
    return pd.DataFrame(rets, index=prices.index[1:], columns=prices.columns)


def basis_covariance(mark: pd.DataFrame, spot: pd.DataFrame, *,
                     periods_per_year: float = 365.0) -> np.ndarray:
    """Annualised covariance of the per-period change of the basis b = mark / spot - 1.

    Columns are matched by name (result ordered as ``mark``'s columns; each must exist in ``spot``)
    and only timestamps present in both frames are used: Sigma_basis = periods_per_year *
    cov(b_t - b_{t-1}) (divisor T - 1), shape (M, M).
    """
    ppy = _check_positive("basis.periods_per_year", periods_per_year)
    missing = [str(c) for c in mark.columns if c not in spot.columns]
    if missing:
        raise ValidationError("basis.spot", f"has no column for {missing}",
                              "give a spot price series for every mark price column")
    if mark.shape[1] == 0:
        raise ValidationError("basis.mark", "has no columns", "give one mark column per symbol")
    index = mark.index.intersection(spot.index).sort_values()
    if len(index) < 3:
        raise ValidationError("basis", f"has {len(index)} common timestamp(s) in mark and spot",
                              "give mark and spot on the same timestamps (at least 3 in common)")
    m = mark.loc[index]
    s = spot.loc[index, list(mark.columns)]
    returns_from_prices(m)  # validates prices (finite, > 0) with a clear message
    returns_from_prices(s)
    basis = m.to_numpy(dtype=float) / s.to_numpy(dtype=float) - 1.0
    cov = np.cov(np.diff(basis, axis=0), rowvar=False, ddof=1)
    return np.atleast_2d(np.asarray(cov, dtype=float)) * ppy
