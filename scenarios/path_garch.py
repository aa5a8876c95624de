"""GARCH(1,1) with Student-t innovations and a Gaussian copula, fitted to a :class:`JointHistory`.

Per asset a GARCH(1,1) with Student-t innovations fitted by ``arch`` to the log returns l_t (in
percent):
    l_t = mu + e_t,  e_t = sigma_t z_t,  sigma_t^2 = omega + alpha e_{t-1}^2 + beta sigma_{t-1}^2,
z_t standardised Student-t with nu degrees of freedom (unit variance: fat tails, kurtosis > 3;
alpha > 0: volatility clustering; alpha + beta is capped at ``MAX_PERSISTENCE``, omega then set so
that omega / (1 - alpha - beta) is the sample variance). The innovations are tied by a Gaussian
copula: z_t = F_nu^-1(Phi(L n_t)) * sqrt((nu - 2) / nu), n_t ~ N(0, I), L the Cholesky factor of
the correlation R of the fitted standardised residuals (constant conditional correlation:
per-asset variances lower the unconditional correlation of returns a little). Funding and basis
are block-bootstrapped from the history (independently of the returns,
:func:`scenarios.path_bootstrap.stationary_indices`). Simple returns exp(l / 100) - 1 > -1. The fit
needs at least ``MIN_GARCH_RETURNS`` source returns (and the bootstrap ``mean_block``).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from models.errors import ValidationError
from models.trailing_risk import MIN_RISK_ROWS
from scenarios.market_path import MarketPath
from scenarios.path_bootstrap import SOURCE_HISTORY_FIX, check_block_rows, stationary_indices
from scenarios.path_history import (
    JointHistory,
    PathFrame,
    SeedLike,
    as_generator,
    build_market_path,
    check_steps,
)

#: Largest alpha + beta kept from a GARCH fit. Each asset's variance follows its own recursion
#: (constant conditional correlation), so near-integrated variances drift apart for long spells
#: and lower the unconditional correlation of returns below the fitted R; capping the persistence
#: keeps clustering (half-life ~34 steps) while keeping the cross-section close to R.
MAX_PERSISTENCE = 0.98
#: Fewest source returns a GARCH(1,1)-t is fitted to (5 parameters per asset: mu, omega, alpha,
#: beta, nu): the project's floor for estimating a risk model from trailing returns.
MIN_GARCH_RETURNS = MIN_RISK_ROWS


@dataclass(frozen=True)
class GarchParams:
    """Fitted per-asset GARCH(1,1)-t parameters (returns in percent): mu, omega, alpha, beta, nu."""

    mu: np.ndarray
    omega: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    nu: np.ndarray

    def __post_init__(self) -> None:
        if np.any(self.nu <= 2.0):
            raise ValidationError("garch.nu", f"is {self.nu}", "give degrees of freedom > 2")
        if np.any(self.alpha < 0) or np.any(self.beta < 0) or np.any(self.omega <= 0):
            raise ValidationError("garch.params", "has omega <= 0 or a negative alpha/beta",
                                  "give omega > 0, alpha >= 0, beta >= 0")
        if np.any(self.alpha + self.beta >= 1.0):
            raise ValidationError("garch.params", f"has alpha + beta = {self.alpha + self.beta} >= 1",
                                  "give a stationary model (alpha + beta < 1)")

    @property
    def long_run_variance(self) -> np.ndarray:
        """omega / (1 - alpha - beta), per asset (percent^2 per step)."""
        result: np.ndarray = self.omega / (1.0 - self.alpha - self.beta)
        return result


def fit_garch_t(log_returns: np.ndarray) -> tuple[GarchParams, np.ndarray]:
    """Fit a GARCH(1,1)-t per column of ``log_returns`` (T x N, fractions) with ``arch``: the
    parameters and the standardised residuals e_t / sigma_t (T x N)."""
    from arch import arch_model

    cols = log_returns.shape[1]
    mu, omega, alpha, beta, nu = (np.zeros(cols) for _ in range(5))
    resid = np.zeros_like(log_returns)
    for i in range(cols):
        model = arch_model(100.0 * log_returns[:, i], mean="Constant", vol="GARCH", p=1, q=1,
                           dist="t", rescale=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence chatter: the result is checked below
            res = model.fit(disp="off", show_warning=False)
        prm = res.params
        mu[i], omega[i] = float(prm["mu"]), max(float(prm["omega"]), 1e-8)
        alpha[i], beta[i], nu[i] = float(prm["alpha[1]"]), float(prm["beta[1]"]), float(prm["nu"])
        persistence = alpha[i] + beta[i]
        if persistence > MAX_PERSISTENCE:  # (near-)integrated: cap it; long-run = sample variance
            long_run = float(np.var(100.0 * log_returns[:, i]))
            alpha[i], beta[i] = (alpha[i] * MAX_PERSISTENCE / persistence,
                                 beta[i] * MAX_PERSISTENCE / persistence)
            omega[i] = long_run * (1.0 - MAX_PERSISTENCE)
        nu[i] = max(nu[i], 2.1)
        std = np.asarray(res.std_resid, dtype=float)
        resid[:, i] = np.where(np.isfinite(std), std, 0.0)
    return GarchParams(mu=mu, omega=omega, alpha=alpha, beta=beta, nu=nu), resid


def nearest_correlation(c: np.ndarray, floor: float = 1e-8) -> np.ndarray:
    """A symmetric unit-diagonal positive definite matrix near ``c`` (eigenvalues floored)."""
    sym = (c + c.T) / 2.0
    vals, vecs = np.linalg.eigh(sym)
    fixed = (vecs * np.maximum(vals, floor)) @ vecs.T
    d = np.sqrt(np.diag(fixed))
    out = fixed / np.outer(d, d)
    np.fill_diagonal(out, 1.0)
    return np.asarray(out, dtype=float)


@dataclass(frozen=True)
class GarchT:
    """Fat-tailed returns with volatility clustering: per-asset GARCH(1,1)-t tied by a Gaussian
    copula with correlation ``correlation``; funding and basis block-bootstrapped from ``history``.
    Build it with :meth:`fit`."""

    history: JointHistory
    frame: PathFrame
    params: GarchParams
    correlation: np.ndarray
    mean_block: float = 20.0

    def __post_init__(self) -> None:
        n = len(self.history.assets)
        if self.correlation.shape != (n, n):
            raise ValidationError("garch.correlation", f"has shape {self.correlation.shape}",
                                  f"give a {n} x {n} correlation matrix")
        if not (math.isfinite(self.mean_block) and self.mean_block >= 1.0):
            raise ValidationError("montecarlo.mean_block", f"is {self.mean_block!r}",
                                  "give a mean block length >= 1 step")
        check_block_rows(self.history.rows, self.mean_block)  # funding and basis are bootstrapped

    @staticmethod
    def fit(history: JointHistory, frame: PathFrame, mean_block: float = 20.0) -> GarchT:
        """Fit the marginals to the history's log returns and R to the standardised residuals;
        refused below ``MIN_GARCH_RETURNS`` returns (the fit would not be identified)."""
        if history.rows < MIN_GARCH_RETURNS:
            raise ValidationError("montecarlo.generator", f'is "garch_t" on a source history of '
                                  f"{history.rows} returns, fewer than the {MIN_GARCH_RETURNS} a "
                                  "GARCH(1,1)-t fit needs",
                                  f'{SOURCE_HISTORY_FIX}, or use generator = "bootstrap"')
        params, resid = fit_garch_t(np.log1p(history.returns))
        corr = np.corrcoef(resid, rowvar=False) if resid.shape[1] > 1 else np.ones((1, 1))
        return GarchT(history=history, frame=frame, params=params,
                      correlation=nearest_correlation(np.atleast_2d(corr)), mean_block=mean_block)

    @property
    def name(self) -> str:
        return "GARCH(1,1)-t with a Gaussian copula"

    @property
    def step(self) -> pd.Timedelta:
        return self.history.step

    def innovations(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` rows of copula-tied standardised Student-t innovations z_t (unit variance)."""
        p = self.params
        chol = np.linalg.cholesky(self.correlation)
        normals = rng.standard_normal((n, len(p.mu))) @ chol.T
        u = np.clip(stats.norm.cdf(normals), 1e-12, 1.0 - 1e-12)
        return np.asarray(stats.t.ppf(u, p.nu) * np.sqrt((p.nu - 2.0) / p.nu), dtype=float)

    def log_returns(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` rows of simulated log returns (fractions), started at the long-run variance."""
        p = self.params
        z = self.innovations(rng, n)
        var = p.long_run_variance.copy()
        eps_prev = np.zeros(len(p.mu))
        out = np.empty_like(z)
        for k in range(n):
            if k > 0:
                var = p.omega + p.alpha * eps_prev**2 + p.beta * var
            eps_prev = np.sqrt(var) * z[k]
            out[k] = p.mu + eps_prev
        return out / 100.0

    def generate(self, seed: SeedLike, steps: int) -> MarketPath:
        check_steps(steps)
        rng = as_generator(seed)
        n = steps + 1
        returns = np.expm1(self.log_returns(rng, n))
        idx = stationary_indices(rng, self.history.rows, n, self.mean_block)
        h = self.history
        return build_market_path(h, self.frame, returns, h.funding[idx], h.basis[idx])
