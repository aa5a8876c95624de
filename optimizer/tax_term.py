"""The tax of spot sales as a convex cvxpy term (one curve per asset, from models.tax).

For asset i with lots sorted by ascending tax per unit (models.tax.breakpoints), the tax of a sale
s_i >= 0 is convex piecewise linear with ascending slopes b_ik, so it is the max of its pieces:

    T_i(s_i) = max_k (a_ik + b_ik * s_i),   0 <= s_i <= H_i (the units held),

with a_ik = T_i(Q_i,k-1) - b_ik Q_i,k-1 (each piece through its left breakpoint). This is the
piecewise sum sum_k b_ik * min(max(s_i - Q_i,k-1, 0), q_ik) written in a form cvxpy accepts (the
sum is not DCP: each of its terms is flat, then rising, then flat, neither convex nor concave; only
their sum is convex, because the slopes ascend). It also equals the
minimum of the lot-variable LP of Moehle, Kochenderfer, Boyd and Ang (2021), with K epigraph rows
instead of K extra variables per asset.

Units follow the curve: USD of tax and units of the asset sold (``TaxCurve`` as built), or
fractions of the base V for both (``TaxCurve.in_weights(V)``: slopes are then tax per USD sold).

DPP: a and b may be cvxpy Parameters. Every product is Parameter x (affine in the variables), never
Parameter x Parameter, and the max of affine expressions is convex, so a problem built once with
:class:`TaxTerm` re-solves for new lots, prices and dates by assigning Parameter values only. The
piece count K is fixed at build time; curves with fewer pieces are padded by repeating their last
piece (which leaves the max unchanged) and an asset with no lots gets pieces of 0 and H_i = 0.

A sale beyond the holdings is not allowed (:func:`sale_limits`): the affine pieces would extend the
last slope past H_i, and short spot sales are not modelled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

import cvxpy as cp
import numpy as np

from models.errors import ValidationError
from models.tax import TaxCurve
from optimizer.cvxpy_adapter import assign

#: (N x K) coefficients: a cvxpy Parameter (DPP) or a numpy array (a fixed problem)
Coefficients: TypeAlias = cp.Parameter | np.ndarray


def _as_vector(sold: cp.Expression) -> cp.Expression:
    """``sold`` as a 1-D expression (a scalar becomes shape (1,))."""
    return cp.reshape(sold, (1,), order="C") if sold.ndim == 0 else sold


def tax_expression(sold: cp.Expression, intercepts: Coefficients, slopes: Coefficients) -> cp.Expression:
    """Per-asset tax T_i(s_i) = max_k (a_ik + b_ik s_i), a convex expression of shape (N,).

    ``sold``: the amount sold per asset (shape (N,) or a scalar for N = 1), >= 0 by
    :func:`sale_limits`; ``intercepts`` a and ``slopes`` b: (N, K) arrays or Parameters with slopes
    ascending along each row. Units are the curve's (see the module docstring).
    """
    s = _as_vector(sold)
    n = s.shape[0]
    if tuple(intercepts.shape) != tuple(slopes.shape) or len(slopes.shape) != 2 or slopes.shape[0] != n:
        raise ValidationError("tax term",
                              f"coefficients {intercepts.shape} and {slopes.shape} for {n} assets",
                              "give (assets x pieces) intercepts and slopes")
    s_column = cp.reshape(s, (n, 1), order="C")  # broadcast across the K pieces
    return cp.max(intercepts + cp.multiply(slopes, s_column), axis=1)


def sale_limits(sold: cp.Expression, holdings: cp.Parameter | np.ndarray) -> list[cp.Constraint]:
    """0 <= s_i <= H_i: nothing sold short, no sale beyond the units held (the curve's units)."""
    s = _as_vector(sold)
    return [s >= 0, s <= holdings]


def curve_coefficients(curves: Sequence[TaxCurve],
                       n_pieces: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(intercepts (N x K), slopes (N x K), holdings (N)) of ``curves`` padded to ``n_pieces``.

    The same numbers as ``TaxCurve.padded`` and ``TaxCurve.holdings`` curve by curve, bit for bit
    (the same element-wise operations and a sequential cumsum along each row), computed for all
    curves at once: this runs on every re-solve with the tax term, and N small numpy calls per
    curve were most of the spot leg's Parameter update.
    """
    n = len(curves)
    widths = np.fromiter((c.slopes.size for c in curves), dtype=np.int64, count=n)
    short = np.flatnonzero(np.maximum(widths, 1) > n_pieces)
    if short.size:  # TaxCurve.padded's check, for the first curve that does not fit
        k = int(widths[short[0]])
        raise ValidationError("tax pieces", f"{n_pieces} < the curve's {k} pieces",
                              "allow at least as many pieces as tax lots")
    slopes = np.zeros((n, n_pieces))
    cum = np.zeros((n, n_pieces + 1))  # Q_0 = 0, then Q_1..Q_k (0 past a curve's last piece)
    total = int(widths.sum())
    if total:
        rows = np.repeat(np.arange(n), widths)
        cols = np.arange(total) - np.repeat(np.cumsum(widths) - widths, widths)
        slopes[rows, cols] = np.concatenate([c.slopes for c in curves])
        cum[rows, cols + 1] = np.concatenate([c.cum_quantity for c in curves])
    starts = cum[:, :-1]
    values = np.cumsum(slopes * (cum[:, 1:] - starts), axis=1)
    at_start = np.zeros((n, n_pieces))
    at_start[:, 1:] = values[:, :-1]
    inter = at_start - slopes * starts
    # pad each curve by repeating its last piece; a curve with no lots has rows of 0 (and H = 0)
    last = np.minimum(np.arange(n_pieces)[None, :], np.maximum(widths - 1, 0)[:, None])
    return (np.take_along_axis(inter, last, axis=1), np.take_along_axis(slopes, last, axis=1),
            cum[np.arange(n), widths])


@dataclass
class TaxTerm:
    """The tax term with Parameters of a fixed shape: build once, update per solve (DPP).

    ``intercepts``/``slopes`` (N x K) and ``holdings`` (N, >= 0) are Parameters; K is the most pieces
    (distinct tax rates per unit, at most the lots) any asset's curve may have.
    """

    n_assets: int
    n_pieces: int
    intercepts: cp.Parameter
    slopes: cp.Parameter
    holdings: cp.Parameter

    @staticmethod
    def create(n_assets: int, n_pieces: int) -> TaxTerm:
        """Parameters for ``n_assets`` curves of up to ``n_pieces`` pieces each."""
        if n_assets < 1 or n_pieces < 1:
            raise ValidationError("tax term", f"{n_assets} assets x {n_pieces} pieces",
                                  "give at least one asset and one piece")
        shape = (n_assets, n_pieces)
        return TaxTerm(n_assets=n_assets, n_pieces=n_pieces,
                       intercepts=cp.Parameter(shape, name="tax_intercepts"),
                       slopes=cp.Parameter(shape, name="tax_slopes"),
                       holdings=cp.Parameter(n_assets, name="tax_holdings", nonneg=True))

    @property
    def parameters(self) -> list[cp.Parameter]:
        """The term's Parameters."""
        return [self.intercepts, self.slopes, self.holdings]

    def per_asset(self, sold: cp.Expression) -> cp.Expression:
        """T_i(s_i) for each asset (shape (N,))."""
        return tax_expression(sold, self.intercepts, self.slopes)

    def expression(self, sold: cp.Expression) -> cp.Expression:
        """Total tax sum_i T_i(s_i) (a convex scalar)."""
        return cp.sum(self.per_asset(sold))

    def constraints(self, sold: cp.Expression) -> list[cp.Constraint]:
        """0 <= s_i <= H_i."""
        return sale_limits(sold, self.holdings)

    def update(self, curves: Sequence[TaxCurve]) -> None:
        """Set the Parameters from one curve per asset (all in the units the variable uses)."""
        if len(curves) != self.n_assets:
            raise ValidationError("tax term", f"{len(curves)} curves for {self.n_assets} assets",
                                  "give one tax curve per asset (an empty curve for no lots)")
        a, b, h = curve_coefficients(curves, self.n_pieces)
        assign(self.intercepts, a)
        assign(self.slopes, b)
        assign(self.holdings, h)
