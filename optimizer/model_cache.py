"""The risk model, basis factor and margin tiers a problem is built from, each cached per input
object (by identity), so a replay that re-uses one risk model and one contracts tuple across its
steps computes them once.

Units: the risk model's covariance is annualised (returns squared per year); the basis factor Gb
(M x K) gives Sigma_basis = Gb Gb' in the same units; the margin model's tiers are in USD.
"""

from __future__ import annotations

import numpy as np

from models.errors import ValidationError
from models.factor_form import EXACT_RESIDUAL, factor_form
from models.instruments import FuturesContract
from models.margin import MarginModel
from models.risk import RiskModel
from optimizer.settings import OptimizerSettings

#: MarginModel per contracts tuple (by identity): contracts are immutable and a replay keeps the
#: same tuple across steps, so the tier arrays are built once
_MARGIN_CACHE: dict[int, tuple[tuple[FuturesContract, ...], MarginModel]] = {}


def cached_margin_model(contracts: tuple[FuturesContract, ...]) -> MarginModel:
    """The :class:`MarginModel` of ``contracts`` (tiers in USD), built once per contracts tuple."""
    hit = _MARGIN_CACHE.get(id(contracts))
    if hit is not None and hit[0] is contracts:
        return hit[1]
    mm = MarginModel.from_contracts(contracts)
    if len(_MARGIN_CACHE) > 256:
        _MARGIN_CACHE.clear()
    _MARGIN_CACHE[id(contracts)] = (contracts, mm)
    return mm


#: basis factor per risk model (by identity): an eigen-decomposition a replay need not redo each step
_BASIS_CACHE: dict[int, tuple[RiskModel, np.ndarray | None]] = {}


def cached_basis_factor(risk: RiskModel, n_contracts: int) -> np.ndarray | None:
    """Gb (M x K) with Sigma_basis = Gb Gb' (eigen form, null directions dropped), None without one."""
    hit = _BASIS_CACHE.get(id(risk))
    if hit is not None and hit[0] is risk:
        return hit[1]
    Gb: np.ndarray | None = None
    if risk.basis_cov is not None:
        bc = np.asarray(risk.basis_cov, dtype=float)
        if bc.shape != (n_contracts,) * 2:
            raise ValidationError("risk.basis_cov", f"has shape {bc.shape}",
                                  "give an M x M covariance over the book's contracts")
        lam, vec = np.linalg.eigh(0.5 * (bc + bc.T))
        keep = lam > 1e-14 * max(1.0, float(lam.max(initial=0.0)))
        Gb = vec[:, keep] * np.sqrt(lam[keep])
    if len(_BASIS_CACHE) > 256:
        _BASIS_CACHE.clear()
    _BASIS_CACHE[id(risk)] = (risk, Gb)
    return Gb


#: the factor form per (risk model, assets, settings) (by identity): a replay re-uses one risk model
_FACTOR_CACHE: dict[tuple[int, tuple[str, ...], int, int, int], tuple[RiskModel, RiskModel, str | None]] = {}


def solver_risk(risk: RiskModel, assets: list[str],
                settings: OptimizerSettings) -> tuple[RiskModel, str | None]:
    """The risk model the problem is built from (``risk`` over ``assets``), and a note when it is
    not that model itself.

    A model of at most ``settings.factor_max`` loading columns, or of at most N / 2 (a factor
    model already, whose own form costs O(N K)), is used as it is. With N >=
    ``settings.factor_min_assets`` assets and more columns (a full covariance), the K-factor form
    of :func:`models.factor_form.factor_form` (K <= factor_max) when it reproduces Sigma
    (off-diagonal residual <= ``EXACT_RESIDUAL``): the tracking error then costs O(N K)
    Parameters instead of O(N^2), and compiling it O(N^2) memory instead of O(N^3). A Sigma
    without that structure is solved as it is below ``settings.factor_approx_assets`` assets
    (exact; the dense compile's memory is still small there) and in its K-factor form from there
    on, an approximation the note states with its residual. Cached per model, so a replay fits
    once.
    """
    key = (id(risk), tuple(assets), settings.factor_min_assets, settings.factor_max,
           settings.factor_approx_assets)
    hit = _FACTOR_CACHE.get(key)
    if hit is not None and hit[0] is risk:
        return hit[1], hit[2]
    sub = risk.subset(assets)
    n, k = sub.loadings.shape
    if n < settings.factor_min_assets or k <= settings.factor_max or 2 * k <= n:
        return sub, None
    fit = factor_form(sub, settings.factor_max)
    kf = fit.model.loadings.shape[1]
    exact = fit.residual <= EXACT_RESIDUAL
    chosen: RiskModel = fit.model
    note: str | None = (
        f"risk model: {n} assets with {k} loading columns; solved with its "
        f"{kf}-factor form F F' + diag(d), off-diagonal residual {fit.residual:.2g} of ||Sigma|| "
        + ("(exact)" if exact else
           f"(an approximation: Sigma has no {settings.factor_max}-factor structure; from "
           f"{settings.factor_approx_assets} assets on the full form's compile would need too "
           f"much memory)"))
    if not exact and n < settings.factor_approx_assets:
        chosen, note = sub, None
    if len(_FACTOR_CACHE) > 16:
        _FACTOR_CACHE.clear()
    _FACTOR_CACHE[key] = (risk, chosen, note)
    return chosen, note
