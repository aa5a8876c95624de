"""Assets no contract can hedge: the optimiser can only offset them by proxy, and says so.

An asset i with a target or a holding but no contract on it (row i of B all zero) keeps its effective
weight e_i = s_i whatever the futures do, so its gap e_i - w*_i stays; the optimiser offsets it
through contracts on correlated assets. Units: weights (fractions of the base V); tracking error
annualised (a fraction). With dev = s + B z - w*, Sigma dev = F (F' dev) + d * dev and
TE = sqrt(dev' Sigma dev + ||Gb' z||^2), asset i's Euler contribution to the asset part of TE is
dev_i (Sigma dev)_i / TE (the contributions of all assets sum to dev' Sigma dev / TE).
"""

from __future__ import annotations

import math

import numpy as np

from optimizer.data import ProblemData

#: Contracts named per unhedgeable asset (the held ones most correlated with it).
MAX_PROXIES = 3


def unhedgeable_assets(d: ProblemData) -> np.ndarray:
    """Indices of assets with a target or a holding (w*_i > 0 or s_i > 0) and no contract on them."""
    wanted = (d.w > 0) | (d.s > 0)
    return np.flatnonzero(wanted & ~(d.B != 0).any(axis=1))


def _correlations(d: ProblemData, i: int) -> np.ndarray:
    """Correlation of asset i with each contract's underlying (M), from Sigma = F F' + diag(d)."""
    under = np.argmax(d.B, axis=0)
    var = np.einsum("ik,ik->i", d.F, d.F) + d.sqrt_idio ** 2
    vol = np.sqrt(np.clip(var, 0.0, None))
    cov = d.F[under] @ d.F[i] + np.where(under == i, d.sqrt_idio[i] ** 2, 0.0)
    denom = vol[under] * vol[i]
    result: np.ndarray = np.divide(cov, denom, out=np.zeros_like(cov), where=denom > 0)
    return result


def proxy_hedge_messages(d: ProblemData, z: np.ndarray) -> list[str]:
    """One line per unhedgeable asset: its gap, the held contracts it is hedged through (with their
    correlation to it), the tracking error left and the asset's contribution to it."""
    idx = unhedgeable_assets(d)
    if idx.size == 0:
        return []
    dev = d.s + d.B @ z - d.w
    sdev = d.F @ (d.F.T @ dev) + d.sqrt_idio ** 2 * dev
    te = math.sqrt(max(float(dev @ sdev) + float(np.sum((d.Gb.T @ z) ** 2)), 0.0))
    held = np.flatnonzero(np.abs(z) > 1e-9)
    out: list[str] = []
    for i in idx:
        rho = _correlations(d, int(i))
        best = held[np.argsort(-np.abs(rho[held]), kind="stable")][:MAX_PROXIES]
        via = (", ".join(f"{d.contracts[j]} (correlation {rho[j]:.2f})" for j in best)
               if best.size else "no contract (none is held)")
        part = float(dev[i] * sdev[i]) / te if te > 0 else 0.0
        out.append(f"{d.assets[i]} has no futures contract: its gap of {100 * dev[i]:+.2f} pp "
                   f"(target {100 * d.w[i]:.2f}%, held {100 * d.s[i]:.2f}%) cannot be hedged "
                   f"directly; it is hedged by proxy (correlation) through {via}. Tracking error "
                   f"left: {100 * te:.3f}% annualised, of which {d.assets[i]} contributes "
                   f"{100 * part:.3f}%")
    return out
