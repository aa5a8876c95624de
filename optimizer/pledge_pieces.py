"""The pledged collateral a spot trade leaves, exactly, for the margin rows of the spot leg.

An asset pledged at one flat ratio h over its whole holding moves the collateral linearly, h per
USD of value (optimizer.spot_data.collateral_gains). Any other rule has kinks: Portfolio Margin's
tier edges, or a pledged ``quantity`` Q below what may be held (value above Q x price is not
pledged). For those assets the rows use the exact value. With v_i the value held today (USD), p_i
the price, t_i the net spot trade (weights, buy > 0) and f = 1 + r the scenario's move of the asset
(f = 1 today), the collateral value after the trade is

    G(v + t V) = C(f min(v + t V, Q p)) = min( min_k [a_k + c_k f (v + t V)],  C(f Q p) )

(``models.collateral.CollateralRule.lines``: C(u) = min_k (a_k + c_k u); C non-decreasing, so the
cap is the flat line C(f Q p); without a quantity it is left out). In weights (USD / V) that is
min_p (alpha_p + beta_p t) with

    alpha_k = (a_k + c_k f v) / V,  beta_k = c_k f;   cap: alpha = C(f Q p) / V, beta = 0,

concave in t, so "collateral >= requirement" stays a convex row: a variable y <= alpha_p + beta_p t
for every piece p stands for G / V (optimizer.margin_constraints), and y >= 0 (G >= 0 for any
holding) keeps it bounded. The rows also move the trade's cash, -t, through the linear gain
(kappa = 1 for these assets).

Row 0 of the arrays is today's prices (the initial-margin row), row 1 + s stress scenario s. Assets
with fewer pieces repeat their first piece, so every asset has P pieces and the problem's shape is
fixed by the book's rules (``Structure.pledge_assets``, ``Structure.pledge_pieces``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.book import Book
from models.collateral import CollateralRule


@dataclass(frozen=True)
class PledgePieces:
    """The pieces of the kinked pledges (module docstring): ``assets`` their indices in book
    order; ``alpha``, ``beta`` (1 + S, n, P) weights per piece; ``now`` (1 + S, n) the collateral
    value today (t = 0), weights."""

    assets: tuple[int, ...]
    alpha: np.ndarray
    beta: np.ndarray
    now: np.ndarray

    @property
    def pieces(self) -> int:
        """P, the pieces per asset."""
        return int(self.alpha.shape[2])

    def value(self, row: int, trade: np.ndarray) -> np.ndarray:
        """G / V per kinked asset after a net trade (``trade``: weights, all N assets) at row
        ``row`` (0 today, 1 + s scenario s)."""
        t = np.asarray(trade, dtype=float)[list(self.assets)]
        result: np.ndarray = np.min(self.alpha[row] + self.beta[row] * t[:, None], axis=1)
        return result

    def change(self, row: int, trade: np.ndarray) -> float:
        """sum_i (G_i after - G_i today) / V at row ``row``: the pledged value the trade moves."""
        return float(np.sum(self.value(row, trade) - self.now[row]))


def kinked(book: Book) -> tuple[int, ...]:
    """Indices of the assets pledged by a rule that is not one flat ratio over the whole holding."""
    return tuple(i for i, rule in enumerate(book.pledge_rules())
                 if rule is not None and not rule.linear)


def _rows(rule: CollateralRule, value: float, price: float, factors: np.ndarray,
          V: float) -> tuple[np.ndarray, np.ndarray]:
    """(alpha, beta), each (len(factors), P_rule), of one asset (module docstring)."""
    a, c = rule.lines()
    alpha = (a[None, :] + c[None, :] * factors[:, None] * value) / V
    beta = c[None, :] * factors[:, None]
    if rule.quantity is not None:
        cap = np.array([rule.value(f * rule.quantity * price) for f in factors]) / V
        alpha = np.column_stack([alpha, cap])
        beta = np.column_stack([beta, np.zeros(len(factors))])
    return alpha, beta


def pledge_pieces(book: Book, values: np.ndarray, prices: np.ndarray, V: float,
                  stress_r: np.ndarray) -> PledgePieces | None:
    """The :class:`PledgePieces` of ``book`` at asset values ``values`` and ``prices`` (USD, book
    order) with stress returns ``stress_r`` (S x N); None when every pledge is linear."""
    idx = kinked(book)
    if not idx:
        return None
    rules = book.pledge_rules()
    r = np.asarray(stress_r, dtype=float).reshape(-1, len(values))
    per: list[tuple[np.ndarray, np.ndarray]] = []
    for i in idx:
        rule = rules[i]
        assert rule is not None
        factors = np.concatenate([[1.0], 1.0 + r[:, i]])
        per.append(_rows(rule, float(values[i]), float(prices[i]), factors, V))
    P = max(al.shape[1] for al, _ in per)
    alpha = np.stack([np.column_stack([al, np.repeat(al[:, :1], P - al.shape[1], axis=1)])
                      for al, _ in per], axis=1)
    beta = np.stack([np.column_stack([be, np.repeat(be[:, :1], P - be.shape[1], axis=1)])
                     for _, be in per], axis=1)
    return PledgePieces(assets=idx, alpha=alpha, beta=beta, now=alpha.min(axis=2))
