"""The collateral value of spot pledged as futures margin (exchange rules).

Units: USD for values, fractions for rates and buffers, base units for quantities.

A pledged holding of USD value ``u >= 0`` counts as margin ``C(u)``, by one of the exchanges' rules:

- **Binance Multi-Assets mode** (USD-M, cross margin): ``C(u) = u (1 - b)`` with ``b`` the asset's
  ``bidBuffer`` from ``GET /fapi/v1/assetIndex`` and ``u = quantity x index``;
- **Portfolio Margin** (tiered collateral rates by USD value): tiers k = 1..K with bounds
  ``0 = m_1 < M_1 = m_2 < M_2 = ... < M_K`` (``M_K`` may be ``inf``) and rates ``c_k``:

      C(u) = sum_k c_k * clip(u - m_k, 0, M_k - m_k),

  each rate applies to the part of the value inside its tier; value above ``M_K`` counts at 0.
  With ``c_1 >= c_2 >= ... >= c_K`` (required) C is concave, piecewise linear, continuous and
  non-decreasing, with kinks at the tier edges. Example: tiers [0, 1M, 0.95], [1M, 5M, 0.9],
  u = 3M: C = 0.95 x 1M + 0.9 x 2M = 2.75M USD;
- **a flat ratio** ``h`` (a book file's ``SYMBOL = 0.95``): one tier [0, inf, h], ``C(u) = h u``.
  Multi-Assets mode is the flat case with ``h = 1 - b``.

Under a stress with asset return ``r > -1`` the holding is re-priced, ``C(u (1 + r))``: concave in
r, so a margin surplus built from it stays concave (one liquidating move each way).

A rule may pledge only part of a spot holding: ``quantity`` (base units) caps the pledged amount,
``u = min(quantity, held) x price`` (the futures wallet holds ``quantity``; the rest is elsewhere).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.errors import ValidationError

#: How an exchange account's pledged spot is read (``[book] pledge_source``, the ccxt gateway's
#: ``pledge_source``): Binance USD-M Multi-Assets mode's ``bidBuffer`` (the default) or Portfolio
#: Margin's tiered collateral rates (executor/ccxt_collateral.py).
PLEDGE_SOURCES = ("multi_assets", "portfolio_margin")
DEFAULT_PLEDGE_SOURCE = PLEDGE_SOURCES[0]


@dataclass(frozen=True)
class CollateralTier:
    """One collateral tier: the part of a holding's USD value in [min_usd, max_usd) counts at
    ``rate`` (a fraction in [0, 1])."""

    min_usd: float
    max_usd: float
    rate: float

    def value(self, usd: float) -> float:
        """rate x clip(usd - min_usd, 0, max_usd - min_usd) (USD)."""
        return self.rate * min(max(usd - self.min_usd, 0.0), self.max_usd - self.min_usd)


@dataclass(frozen=True)
class CollateralRule:
    """How the exchange values one pledged asset (see the module docstring).

    ``tiers`` contiguous from 0 with non-increasing rates; ``bid_buffer`` is set when the rule
    comes from Binance Multi-Assets mode (then one tier of rate 1 - bid_buffer); ``quantity`` caps
    the pledged amount in base units (None: the whole spot holding is pledged). Build rules with
    :func:`flat_rule`, :func:`bid_buffer_rule` or :func:`tiered_rule`, which validate.
    """

    tiers: tuple[CollateralTier, ...]
    bid_buffer: float | None = None
    quantity: float | None = None

    def value(self, usd: float) -> float:
        """C(u) = sum_k c_k clip(u - m_k, 0, M_k - m_k) (USD) for a pledged value u >= 0 (USD)."""
        u = max(float(usd), 0.0)
        return math.fsum(t.value(u) for t in self.tiers)

    @property
    def flat_ratio(self) -> float | None:
        """h when the rule is one open-ended tier from 0 (C(u) = h u), else None."""
        if len(self.tiers) == 1 and self.tiers[0].min_usd == 0 and math.isinf(self.tiers[0].max_usd):
            return self.tiers[0].rate
        return None

    @property
    def first_rate(self) -> float:
        """The rate of the first tier: C(u) / u for small u, an upper bound of C(u) / u."""
        return self.tiers[0].rate

    @property
    def linear(self) -> bool:
        """True when the whole holding is pledged at one flat ratio: C is linear in the value held
        (a quantity cap or a tier edge puts a kink in it)."""
        return self.flat_ratio is not None and self.quantity is None

    def lines(self) -> tuple[np.ndarray, np.ndarray]:
        """Intercepts a_k (USD) and slopes c_k of the lines C(u) = min_k (a_k + c_k u), u >= 0:
        each tier's line a_k = C(m_k) - c_k m_k, and a flat line at C(M_K) when the last tier
        ends at a finite M_K. Exact because C is concave (non-increasing rates): every tier's
        line lies on C within its tier and above it elsewhere; a_k >= 0 since C(0) = 0."""
        a = [self.value(t.min_usd) - t.rate * t.min_usd for t in self.tiers]
        c = [t.rate for t in self.tiers]
        last = self.tiers[-1].max_usd
        if math.isfinite(last):
            a.append(self.value(last))
            c.append(0.0)
        return np.array(a), np.array(c)

    def edges(self) -> tuple[float, ...]:
        """The finite tier edges (USD) where C has a kink: every M_k < inf."""
        return tuple(t.max_usd for t in self.tiers if math.isfinite(t.max_usd))

    def pledged_fraction(self, held: float) -> float:
        """The fraction of a holding of ``held`` base units that is pledged:
        min(1, quantity / held) (1 without a quantity; 0 when nothing is held)."""
        if held <= 0:
            return 0.0
        if self.quantity is None:
            return 1.0
        return min(1.0, self.quantity / held)


Pledge = float | CollateralRule
"""A book's ``[pledged]`` entry: a flat collateral ratio, or a rule."""


# --- building and checking rules -------------------------------------------------------------------

def _check_rate(rate: float, path: str, what: str) -> None:
    if not (math.isfinite(rate) and 0.0 <= rate <= 1.0):
        raise ValidationError(path, f"has {what} {rate!r}", f"give the {what} as a fraction in [0, 1]")


def _check_quantity(quantity: float | None, path: str) -> None:
    if quantity is not None and not (math.isfinite(quantity) and quantity >= 0):
        raise ValidationError(f"{path}.quantity", f"is {quantity!r}",
                              "give the pledged quantity in base units (finite, >= 0)")


def flat_rule(ratio: float, path: str = "pledged", quantity: float | None = None) -> CollateralRule:
    """One tier [0, inf) at ``ratio``: C(u) = ratio x u."""
    _check_rate(float(ratio), path, "collateral ratio")
    _check_quantity(quantity, path)
    return CollateralRule((CollateralTier(0.0, math.inf, float(ratio)),), quantity=quantity)


def bid_buffer_rule(bid_buffer: float, path: str = "pledged",
                    quantity: float | None = None) -> CollateralRule:
    """Binance Multi-Assets mode: C(u) = u (1 - bidBuffer), u = quantity x index (USD)."""
    b = float(bid_buffer)
    if not (math.isfinite(b) and 0.0 <= b <= 1.0):
        raise ValidationError(f"{path}.bid_buffer", f"is {bid_buffer!r}",
                              "give the exchange's bidBuffer as a fraction in [0, 1] (e.g. 0.05)")
    _check_quantity(quantity, path)
    return CollateralRule((CollateralTier(0.0, math.inf, 1.0 - b),), bid_buffer=b, quantity=quantity)


def tiered_rule(rows: Sequence[tuple[float, float, float]], path: str = "pledged",
                quantity: float | None = None) -> CollateralRule:
    """Tiers (min USD, max USD, rate), checked: at least one; the first starts at 0; each starts
    where the previous ends (contiguous, no overlap); max > min; rates in [0, 1] and non-increasing
    (so C is concave); only the last max may be inf. The error names ``{path}.tiers[k]``."""
    if not rows:
        raise ValidationError(f"{path}.tiers", "is empty",
                              "give at least one tier [min_usd, max_usd, rate], e.g. [[0, inf, 0.95]]")
    tiers: list[CollateralTier] = []
    for k, (lo, hi, rate) in enumerate(rows):
        p = f"{path}.tiers[{k}]"
        lo, hi, rate = float(lo), float(hi), float(rate)
        _check_tier(tiers, lo, hi, rate, p, last=k == len(rows) - 1)
        tiers.append(CollateralTier(lo, hi, rate))
    _check_quantity(quantity, path)
    return CollateralRule(tuple(tiers), quantity=quantity)


def _check_tier(before: Sequence[CollateralTier], lo: float, hi: float, rate: float, path: str,
                *, last: bool) -> None:
    """Raise a ValidationError naming ``path`` unless tier [lo, hi) at ``rate`` may follow ``before``."""
    start = before[-1].max_usd if before else 0.0
    if lo != start:
        where = "the first tier must start at 0 USD" if not before else \
            f"the previous tier ends at {start:,.6g} USD (tiers must be contiguous, no gap or overlap)"
        raise ValidationError(path, f"starts at {lo:,.6g} USD but {where}",
                              f"set its min_usd to {start:,.6g}")
    if not hi > lo or (math.isinf(hi) and not last):
        raise ValidationError(path, f"ends at {hi:,.6g} USD (min {lo:,.6g})",
                              "give max_usd > min_usd; only the last tier may be open-ended (inf)")
    _check_rate(rate, path, "rate")
    if before and rate > before[-1].rate:
        raise ValidationError(path, f"has rate {rate!r} above the previous tier's {before[-1].rate!r}",
                              "give non-increasing rates (larger holdings count at lower rates)")


def check_rule(rule: CollateralRule, path: str) -> None:
    """Re-check a rule built elsewhere (e.g. directly); raises a ValidationError naming ``path``."""
    tiered_rule([(t.min_usd, t.max_usd, t.rate) for t in rule.tiers], path, rule.quantity)


def as_rule(pledge: Pledge, path: str = "pledged") -> CollateralRule:
    """A ``[pledged]`` entry as a rule (a flat ratio becomes one tier)."""
    if isinstance(pledge, CollateralRule):
        return pledge
    return flat_rule(float(pledge), path)


# --- valuing pledged holdings ----------------------------------------------------------------------

def pledged_collateral(rules: Sequence[CollateralRule | None], pledged_usd: np.ndarray) -> float:
    """sum_i C_i(u_i) (USD) over assets with a rule; ``pledged_usd`` u_i the pledged value (USD)."""
    return math.fsum(rule.value(float(u)) for rule, u in zip(rules, pledged_usd, strict=True)
                     if rule is not None)


def stressed_collateral(wallet: float, rules: Sequence[CollateralRule | None],
                        pledged_usd: np.ndarray, returns: np.ndarray) -> float:
    """collateral(r) = W + sum_i C_i(u_i (1 + r_i)) (USD): the margin balance after asset returns
    r (each > -1) with the wallet W (stable cash + unrealised PnL, USD) held fixed; the futures
    PnL of the move is counted separately (``MarginModel.stress_surplus``'s ``g' x``)."""
    moved = np.asarray(pledged_usd, dtype=float) * (1.0 + np.asarray(returns, dtype=float))
    return wallet + pledged_collateral(rules, moved)
