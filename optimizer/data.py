"""The numbers of one rebalance in weight units: :class:`ProblemData`, the :class:`Structure` that
fixes the compiled problem's shape, and the initial-margin row's :class:`MarginBudget`.

Every cvxpy Parameter value of a rebalance is one of these arrays, computed once per rebalance by
``optimizer.prepare.prepare``, so the problem itself only sees arrays. Weight units: USD divided by
the target base V. The decision variable is z = x / V (signed futures notional per contract as a
fraction of V).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from models.costs import CostModel
from models.errors import ValidationError
from models.margin import MarginModel
from optimizer.settings import OptimizerSettings
from optimizer.spot_data import SpotLegData


@dataclass(frozen=True)
class Structure:
    """What fixes the shape of the compiled problem; a new value means a rebuild.

    Parameter *values* may change freely between solves; these may not.
    """

    n_assets: int
    n_contracts: int
    n_factors: int
    idio: bool
    n_basis_factors: int
    n_tiers: int
    mm_floor: bool
    exposure: bytes
    stress_names: tuple[str, ...]
    cluster_members: tuple[tuple[int, ...], ...]
    cluster_names: tuple[str, ...]
    capped: tuple[int, ...]
    trade_limited: tuple[int, ...]
    margin: bool
    leverage: bool
    vol_cap: bool
    funding_budget: bool
    trading: bool
    impact: bool
    carry: bool
    objective_scale: float
    #: the spot leg (optimizer.spot_data): buy/sell variables, their impact, tax pieces (0: no tax)
    spot_leg: bool = False
    spot_impact: bool = False
    tax_pieces: int = 0
    #: dated contracts the min_days_to_expiry row watches (``constraints.expiry_row``; () = no row)
    expiry_guarded: tuple[int, ...] = ()
    #: the objective prices the stablecoin reserve (``costs.reserve_cost`` with a stress scenario;
    #: optimizer.reserve_term)
    reserve_cost: bool = False
    #: the tax of realising futures gains is priced (``spot.futures_tax``; optimizer.terms.FuturesTax)
    futures_tax: bool = False
    #: the quadratic cost-to-go is priced (``costs.cost_to_go`` > 0; optimizer.terms.CostToGo)
    cost_to_go: bool = False
    #: assets whose pledge has kinks, and their pieces (optimizer.pledge_pieces; () / 0: none)
    pledge_assets: tuple[int, ...] = ()
    pledge_pieces: int = 0
    #: contracts the exchange does not trade now, held where they are (optimizer.constraints.Halted)
    halted: tuple[int, ...] = ()


@dataclass(frozen=True)
class MarginBudget:
    """Right-hand side of the initial-margin row sum_j |z_j| / L_j <= budget, in weight units (USD / V).

    With C the collateral, b = ``margin_buffer_usd``, f = ``margin_buffer_fraction`` in [0, 1) and
    x0 the current positions:

    - ``hard``   = (C - b) / V: the most margin the book may ever use;
    - ``target`` = (C - b - f max(C, 0)) / V: the most *new* margin it takes (f C is kept free);
    - ``held``   = sum_j |x0_j| / L_j / V: the margin the current positions use;
    - ``budget`` = target without hysteresis; with hysteresis
      ``min(hard, max(target, held))`` (held clipped into [target, hard]).

    So with hysteresis the row never forces a cut while the current positions fit under the hard
    bound, and never lets the book grow past max(held, target): a bound that moves by less than the
    band f C leaves the current book feasible and forces no trade, and the book does not follow the
    hard bound up. A cut is forced only when the hard bound falls below ``held``, and then only down
    to the hard bound. Re-growing needs target > held, i.e. the
    collateral must rise by a factor of about 1 / (1 - f) over the level the book was cut at, which
    stops round trips on bound moves smaller than the band. The budget is a Parameter value:
    the compiled (DPP) problem is the same with or without it.
    """

    hard: float
    target: float
    held: float
    hysteresis: bool
    fraction: float = 0.0

    @property
    def budget(self) -> float:
        """The row's right-hand side (weight units)."""
        if not self.hysteresis:
            return self.target
        return min(self.hard, max(self.target, self.held))

    @property
    def per_collateral(self) -> float:
        """d budget / d collateral: 1 - f at the target (collateral > 0), 0 while holding, 1 at
        the hard bound."""
        if self.holding:
            return 0.0
        return 1.0 - self.fraction if self.budget == self.target < self.hard else 1.0

    @property
    def holding(self) -> bool:
        """True when hysteresis lets the current positions keep more margin than the target."""
        return self.hysteresis and self.held > self.target and self.budget > self.target


def margin_budget(collateral: float, held_usd: float, V: float,
                  settings: OptimizerSettings) -> MarginBudget:
    """The :class:`MarginBudget` of a book with ``collateral`` (USD) whose positions use ``held_usd``
    of initial margin, validating the two buffer settings."""
    cs = settings.constraints
    if not (math.isfinite(cs.margin_buffer_usd) and cs.margin_buffer_usd >= 0):
        raise ValidationError("constraints.margin_buffer_usd", f"is {cs.margin_buffer_usd}",
                              "give a buffer >= 0 USD")
    f = cs.margin_buffer_fraction
    if not (math.isfinite(f) and 0.0 <= f < 1.0):
        raise ValidationError("constraints.margin_buffer_fraction", f"is {f}",
                              "give the share of collateral kept free as a fraction in [0, 1), "
                              "e.g. 0.2")
    hard = collateral - cs.margin_buffer_usd
    return MarginBudget(hard=hard / V, target=(hard - f * max(collateral, 0.0)) / V,
                        held=held_usd / V, hysteresis=cs.margin_hysteresis, fraction=f)


@dataclass(frozen=True)
class ProblemData:
    """One rebalance in weight units (see module docstring). Arrays are indexed i (asset), j (contract)."""

    assets: tuple[str, ...]
    contracts: tuple[str, ...]
    V: float
    nav: float
    collateral: float
    s: np.ndarray
    w: np.ndarray
    B: np.ndarray
    z0: np.ndarray
    F: np.ndarray
    FtB: np.ndarray
    sqrt_idio: np.ndarray
    Gb: np.ndarray
    lin_cost: np.ndarray
    impact_cost: np.ndarray
    carry: np.ndarray
    inv_lev: np.ndarray
    im_budget: float
    mmr: np.ndarray
    cum: np.ndarray
    stress_g: np.ndarray
    stress_coll: np.ndarray
    stress_names: tuple[str, ...]
    max_gross: float
    caps: np.ndarray
    cap_source: tuple[str, ...]
    cluster_members: tuple[tuple[int, ...], ...]
    cluster_names: tuple[str, ...]
    cluster_bands: np.ndarray
    vol_cap: float
    funding_budget: float
    trade_limits: np.ndarray
    prices: np.ndarray
    costs: CostModel
    margin_model: MarginModel
    settings: OptimizerSettings
    gamma_trade: float = 1.0
    gamma_fund: float = 1.0
    #: how ``im_budget`` was set (relative buffer, hysteresis); None: plain collateral - buffer
    margin_budget: MarginBudget | None = None
    #: per contract, True for a dated future (its expiry row may bind; see ``near_expiry``)
    dated: tuple[bool, ...] = ()
    #: set when the risk model was replaced by its factor form (optimizer.model_cache.solver_risk)
    risk_note: str | None = None
    #: the spot leg's numbers (None: overlay only, spot untouched)
    spot: SpotLegData | None = None
    #: per contract, c_j = gamma_tax x futures rate x max(U_j, 0) / |x0_j| (fraction of V per unit
    #: of weight by which position j is reduced; optimizer.spot_data.futures_tax_coefficients),
    #: with or without the spot leg; None: the tax of realising futures gains is not priced
    futures_tax_coef: np.ndarray | None = None
    #: per contract, 1.0 when it is a dated contract within ``min_days_to_expiry`` of its expiry at
    #: the market time (only reduced or closed: optimizer.constraints.ExpiryGuard), else 0.0;
    #: None when ``constraints.expiry_row`` is off
    near_expiry: np.ndarray | None = None
    #: per contract, 1.0 when it settled before this (later) step of a plan starts: held at 0
    #: (optimizer.plan_expiry); None (as 0) for today's problem
    expired: np.ndarray | None = None
    #: per contract, 1.0 when it was near expiry at the plan's step before this (later) one too:
    #: its expiry row bounds z_h by z_{h-1} (optimizer.plan_expiry); None (as 0) for today's problem
    expiry_chained: np.ndarray | None = None
    #: the planner's H x M days from each step's start to each contract's expiry (+inf without
    #: one; optimizer.plan_expiry.expiry_days_path); None when no contract settles within the plan
    expiry_days: np.ndarray | None = None
    #: R = sqrt(kappa) Q_p^{1/2} (N x N, symmetric) of the cost-to-go kappa (e - w*)' Q_p (e - w*)
    #: = ||R (e - w*)||^2 (annualised variance, weight units; optimizer.cost_to_go.power_shape);
    #: None when ``costs.cost_to_go`` is 0 (off)
    cost_to_go_root: np.ndarray | None = None
    #: the planner's carry per step (H x M, fractions of notional a long pays over each step;
    #: optimizer.carry.carry_path); None for the single-period problem (H = 1)
    carry_steps: np.ndarray | None = None
    #: delta0 (M, USD): exposure less exchange notional of each held position
    #: (``Book.exposure_offset``; an inverse position's USD PnL q x size x (mark/entry - 1), 0 for
    #: linear). z0 V is the exposure, z0 V - delta0 the held notional the exchange margins. A
    #: traded inverse position moves by the exchange's fill rule (models.fill_rule; one kept at
    #: q0 keeps z0 V; optimizer.rounding.contracts_of). None: all zero
    exposure_offset: np.ndarray | None = None
    #: per contract, the exchange's status while it does not trade it (``MarketSnapshot.halted``:
    #: its trade is 0, optimizer.constraints.Halted), None while it trades; () when all trade
    halted: tuple[str | None, ...] = ()

    def held_notional(self) -> np.ndarray:
        """The exchange's notional of today's positions (USD): z0 V - delta0 (face value for an
        inverse position; z0 V for linear ones)."""
        x0 = self.z0 * self.V
        if self.exposure_offset is None or not np.any(self.exposure_offset):
            return x0
        result: np.ndarray = x0 - self.exposure_offset
        return result

    @cached_property
    def structure(self) -> Structure:
        """The problem shape these numbers need (see :class:`Structure`)."""
        st = self.settings
        capped = tuple(int(j) for j in np.flatnonzero(np.isfinite(self.caps)))
        limited = tuple(int(j) for j in np.flatnonzero(np.isfinite(self.trade_limits)))
        pledge = self.spot.pledge if self.spot is not None else None
        return Structure(
            n_assets=len(self.assets), n_contracts=len(self.contracts),
            n_factors=self.F.shape[1], idio=bool(np.any(self.sqrt_idio > 0)),
            n_basis_factors=self.Gb.shape[1],
            n_tiers=self.mmr.shape[1], mm_floor=bool(np.any(self.cum[:, 0] > 0)),
            exposure=self.B.astype(np.int8).tobytes(),
            stress_names=self.stress_names, cluster_members=self.cluster_members,
            cluster_names=self.cluster_names, capped=capped, trade_limited=limited,
            margin=st.constraints.margin, leverage=math.isfinite(self.max_gross),
            vol_cap=math.isfinite(self.vol_cap), funding_budget=math.isfinite(self.funding_budget),
            trading=st.costs.trading, impact=st.costs.impact, carry=st.costs.carry,
            objective_scale=st.objective_scale if st.objective_scale is not None else 1e4,
            spot_leg=self.spot is not None,
            spot_impact=self.spot is not None and st.costs.impact,
            tax_pieces=self.spot.tax_pieces if self.spot is not None else 0,
            expiry_guarded=self._expiry_guarded(),
            reserve_cost=st.costs.reserve_cost and bool(self.stress_names),
            futures_tax=self.futures_tax_coef is not None,
            cost_to_go=self.cost_to_go_root is not None,
            pledge_assets=pledge.assets if pledge is not None else (),
            pledge_pieces=pledge.pieces if pledge is not None else 0,
            halted=tuple(j for j, h in enumerate(self.halted) if h),
        )

    def _expiry_guarded(self) -> tuple[int, ...]:
        """Indices of the dated contracts (a fixed set per book) when the expiry row is on."""
        if self.near_expiry is None:
            return ()
        return tuple(int(j) for j, c in enumerate(self.dated) if c)

    def naive_z(self) -> np.ndarray:
        """The seed rule in weight units: per asset, hedge w* - s through its first contract."""
        z = np.zeros(len(self.contracts))
        gap = self.w - self.s - self.B @ self.z0
        done: set[int] = set()
        for j in range(len(self.contracts)):
            i = int(np.argmax(self.B[:, j]))
            z[j] = self.z0[j]
            if i not in done:
                z[j] += gap[i]
                done.add(i)
        return z

