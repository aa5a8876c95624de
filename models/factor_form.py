"""The K-factor form F F' + diag(d) of a risk model, for the optimiser at large N.

Units: annualised variances and covariances of simple returns (as :class:`models.risk.RiskModel`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.risk import PCA_IDIO_FLOOR, PCA_MAX_DEFAULT_FACTORS, RiskModel

#: A factor fit with at most this relative off-diagonal residual reproduces Sigma (rounding).
EXACT_RESIDUAL = 1e-9
#: :func:`factor_form` adds a factor while the fit is not exact and one more factor cuts the
#: residual to at most this share of it: m equal factors the eigenvalue count missed (weak ones
#: beside a very volatile asset) fall by sqrt((m - 1) / m) a factor (0.71 for two, 0.89 for five),
#: while the least-squares misfit of a Sigma without that structure falls by a few percent.
MISSING_FACTOR_DROP = 0.9


@dataclass(frozen=True)
class FactorFit:
    """A K-factor form F F' + diag(d) of a risk model, and how well it reproduces Sigma.

    ``residual`` = ||offdiag(Sigma - F F' - diag(d))||_F / ||Sigma||_F (0: exact; the diagonal is
    matched exactly unless a variance hit the floor); ``iterations`` of the fit (0: no fit needed).
    """

    model: RiskModel
    residual: float
    iterations: int


def _factor_count(lam: np.ndarray, cov_diag: np.ndarray, max_factors: int) -> int:
    """K for :func:`factor_form`: the eigenvalues above the largest variance, clipped to [1, max].

    For Sigma = F F' + diag(d) (K0 factors), Weyl's inequalities put every eigenvalue beyond the
    K0-th at or below max_i d_i <= max_i Sigma_ii, so a factor that dominates the diagonal is counted.
    """
    k = int(np.sum(lam > float(np.max(cov_diag))))
    return min(max(k, 1), max_factors, len(lam))


def factor_form(model: RiskModel, max_factors: int = PCA_MAX_DEFAULT_FACTORS, *, tol: float = 1e-13,
                max_iter: int = 300) -> FactorFit:
    """A K-factor form (K <= ``max_factors``) of ``model``'s Sigma, for the optimiser at large N.

    A model with at most ``max_factors`` loading columns is returned as is. Otherwise (e.g. the
    full-rank form of ``RiskModel.from_covariance``) iterated principal factors fit Sigma = F F' +
    diag(d): start from the top-K eigenpairs (K from :func:`_factor_count`), then repeat
    d = max(diag(Sigma - F F'), floor) and one Rayleigh-Ritz step of Sigma - diag(d) on the current
    K-dimensional subspace (its top-K eigenpairs give F = V sqrt(lambda)), until d moves by less than
    ``tol`` x max_i Sigma_ii. While the fit is not exact (residual above ``EXACT_RESIDUAL``) and
    K + 1 factors (started from Sigma less the K-factor fit's d) cut the residual to at most
    ``MISSING_FACTOR_DROP`` of it, K grows by one (the eigenvalue count misses weak factors
    beside a very volatile asset).
    When Sigma has that structure with K <= ``max_factors``
    the fit is exact up to rounding (the residual says how close); otherwise it is the usual
    least-squares (ULS) factor model. Each
    variance Sigma_ii is kept (d takes the rest, floored at PCA_IDIO_FLOOR x mean variance > 0).
    Cost: one eigen-decomposition (O(N^3)) and O(N^2 K) per iteration; memory O(N^2).
    """
    if model.loadings.shape[1] <= max_factors:
        return FactorFit(model, 0.0, 0)
    cov = model.covariance
    lam, vec = np.linalg.eigh(cov)
    k = _factor_count(lam, np.diag(cov), max_factors)
    fit, d = _fit_factors(model, cov, (lam, vec), k, tol, max_iter)
    while k < min(max_factors, len(lam)) and fit.residual > EXACT_RESIDUAL:
        # start K + 1 from Sigma less the K-factor fit's idiosyncratic part: a factor hidden
        # under a large variance on Sigma's own eigenvectors shows once that variance is off
        more, d_more = _fit_factors(model, cov, np.linalg.eigh(cov - np.diag(d)), k + 1, tol,
                                    max_iter)
        if more.residual > MISSING_FACTOR_DROP * fit.residual:
            break  # no factor missing: one more only trims the least-squares misfit
        k, fit, d = k + 1, more, d_more
    return fit


def _fit_factors(model: RiskModel, cov: np.ndarray, eig: tuple[np.ndarray, np.ndarray], k: int,
                 tol: float, max_iter: int) -> tuple[FactorFit, np.ndarray]:
    """The iterated principal-factor fit of :func:`factor_form` with ``k`` factors from the top
    ``k`` eigenpairs ``eig`` (ascending, as numpy's eigh) of Sigma, or of Sigma less a diagonal;
    and the fitted idiosyncratic variances d."""
    lam, vec = eig
    diag = np.diag(cov).copy()
    floor = max(PCA_IDIO_FLOOR * float(np.mean(diag)), 1e-16)
    V, lam_k = vec[:, ::-1][:, :k], np.clip(lam[::-1][:k], 0.0, None)
    d = np.maximum(diag - (V * V) @ lam_k, floor)
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007 - the count is reported
        Q, _ = np.linalg.qr(cov @ V - d[:, None] * V)
        T = Q.T @ cov @ Q - (Q.T * d) @ Q
        mu, W = np.linalg.eigh(0.5 * (T + T.T))
        V, lam_k = Q @ W[:, ::-1], np.clip(mu[::-1], 0.0, None)
        d_new = np.maximum(diag - (V * V) @ lam_k, floor)
        moved = float(np.max(np.abs(d_new - d)))
        d = d_new
        if moved <= tol * float(np.max(diag)):
            break
    F = V * np.sqrt(lam_k)
    resid = cov - F @ F.T
    np.fill_diagonal(resid, 0.0)
    scale = float(np.linalg.norm(cov))
    residual = float(np.linalg.norm(resid)) / scale if scale > 0 else 0.0
    fitted = RiskModel(model.symbols, F, d, method=f"{model.method}+factor{k}",
                       basis_cov=model.basis_cov, basis_method=model.basis_method)
    return FactorFit(fitted, residual, it), d
