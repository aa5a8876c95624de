"""Numbers of one rebalance in weight units, prepared from the book, market, risk model and settings.

Everything the cvxpy Parameters take is computed here, once per rebalance, so the problem itself only
sees arrays. Weight units: USD divided by the target base V. The decision variable is z = x / V
(signed futures notional per contract as a fraction of V).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from models.book import Book
from models.costs import CostModel
from models.errors import ValidationError
from models.funding_forecast import decay_from_half_life
from models.instruments import ContractKind, FuturesContract
from models.margin import MarginModel
from models.market import MarketSnapshot
from models.risk import RiskModel, factor_form
from optimizer.cost_to_go import power_shape_root
from optimizer.settings import (
    CostSettings,
    FundingForecastRule,
    OptimizerSettings,
    StressScenario,
    check_horizon,
)
from optimizer.spot_data import SpotLegData, prepare_spot

HOURS_PER_DAY = 24.0


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
    #: set when the risk model was replaced by its factor form (see :func:`solver_risk`)
    risk_note: str | None = None
    #: the spot leg's numbers (None: overlay only, spot untouched)
    spot: SpotLegData | None = None
    #: per contract, 1.0 when it is a dated contract within ``min_days_to_expiry`` of its expiry at
    #: the market time (only reduced or closed: optimizer.constraints.ExpiryGuard), else 0.0;
    #: None when ``constraints.expiry_row`` is off
    near_expiry: np.ndarray | None = None
    #: R = sqrt(kappa) Q_p^{1/2} (N x N, symmetric) of the cost-to-go kappa (e - w*)' Q_p (e - w*)
    #: = ||R (e - w*)||^2 (annualised variance, weight units; optimizer.cost_to_go.power_shape);
    #: None when ``costs.cost_to_go`` is 0 (off)
    cost_to_go_root: np.ndarray | None = None
    #: the planner's carry per step (H x M, fractions of notional a long pays over each step;
    #: :func:`carry_path`); None for the single-period problem (H = 1)
    carry_steps: np.ndarray | None = None

    @cached_property
    def structure(self) -> Structure:
        """The problem shape these numbers need (see :class:`Structure`)."""
        st = self.settings
        capped = tuple(int(j) for j in np.flatnonzero(np.isfinite(self.caps)))
        limited = tuple(int(j) for j in np.flatnonzero(np.isfinite(self.trade_limits)))
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
            futures_tax=self.spot is not None and self.spot.futures_tax_coef is not None,
            cost_to_go=self.cost_to_go_root is not None,
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


#: MarginModel per contracts tuple (by identity): contracts are immutable and a replay keeps the
#: same tuple across steps, so the tier arrays are built once
_MARGIN_CACHE: dict[int, tuple[tuple[FuturesContract, ...], MarginModel]] = {}


def _margin_model(contracts: tuple[FuturesContract, ...]) -> MarginModel:
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


def _basis_factor(risk: RiskModel, n_contracts: int) -> np.ndarray | None:
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
_FACTOR_CACHE: dict[tuple[int, tuple[str, ...], int, int], tuple[RiskModel, RiskModel, str | None]] = {}


def solver_risk(risk: RiskModel, assets: list[str],
                settings: OptimizerSettings) -> tuple[RiskModel, str | None]:
    """The risk model the problem is built from (``risk`` over ``assets``), and a note when it is
    not that model itself.

    With N >= ``settings.factor_min_assets`` assets and more than ``settings.factor_max`` loading
    columns, the K-factor form of :func:`models.risk.factor_form` (K <= factor_max): the tracking
    error then costs O(N K) Parameters instead of O(N^2), and compiling it O(N^2) memory instead of
    O(N^3). Cached per model, so a replay fits once.
    """
    key = (id(risk), tuple(assets), settings.factor_min_assets, settings.factor_max)
    hit = _FACTOR_CACHE.get(key)
    if hit is not None and hit[0] is risk:
        return hit[1], hit[2]
    sub = risk.subset(assets)
    n, k = sub.loadings.shape
    if n < settings.factor_min_assets or k <= settings.factor_max:
        return sub, None
    fit = factor_form(sub, settings.factor_max)
    kf = fit.model.loadings.shape[1]
    note = (f"risk model: {n} assets with {k} loading columns (a full covariance); solved with its "
            f"{kf}-factor form F F' + diag(d), off-diagonal residual {fit.residual:.2g} of "
            f"||Sigma|| (0 = exact)")
    if len(_FACTOR_CACHE) > 16:
        _FACTOR_CACHE.clear()
    _FACTOR_CACHE[key] = (risk, fit.model, note)
    return fit.model, note


def check_cost_to_go(costs: CostSettings) -> tuple[float, float]:
    """(kappa, p) = (``costs.cost_to_go``, ``costs.cost_to_go_power``), validated: kappa finite and
    >= 0 (a dimensionless multiple of TE^2), p in [0, 1]."""
    kappa, p = costs.cost_to_go, costs.cost_to_go_power
    if not (isinstance(kappa, int | float) and math.isfinite(kappa) and kappa >= 0):
        raise ValidationError("costs.cost_to_go", f"is {kappa!r}",
                              "give the cost-to-go weight kappa as a number >= 0, a multiple of "
                              "the tracking-error term (0: off), e.g. 1")
    if not (isinstance(p, int | float) and math.isfinite(p) and 0.0 <= p <= 1.0):
        raise ValidationError("costs.cost_to_go_power", f"is {p!r}",
                              "give the cost-to-go shape power p in [0, 1] (1: Sigma's shape, 0: "
                              "the identity's), e.g. 0.5")
    return float(kappa), float(p)


def cost_to_go_root(risk: RiskModel, costs: CostSettings) -> np.ndarray | None:
    """sqrt(kappa) Q_p^{1/2} over ``risk``'s assets (optimizer.cost_to_go.power_shape_root, Sigma =
    ``risk.covariance``, annual), None when kappa = 0 (the term is off); settings validated."""
    kappa, p = check_cost_to_go(costs)
    if kappa == 0:
        return None
    return power_shape_root(risk.covariance, p, kappa)


def _stress_returns(sc: StressScenario, assets: list[str]) -> np.ndarray:
    known = set(assets)
    for sym in sc.returns:
        if sym not in known:
            raise ValidationError(f"constraints.stress.{sc.name}.returns.{sym}", "is not a book asset",
                                  f"use one of {sorted(known)}")
    r = np.array([float(sc.returns.get(a, sc.common)) for a in assets])
    bad = np.flatnonzero(~np.isfinite(r) | (r <= -1))
    if bad.size:
        a = assets[int(bad[0])]
        raise ValidationError(f"constraints.stress.{sc.name}.returns.{a}", f"is {r[bad[0]]}",
                              "give a simple return above -100% (e.g. -0.3 for -30%)")
    return r


def carry_path(book: Book, market: MarketSnapshot, costs: CostSettings, first: np.ndarray,
               horizon: int) -> np.ndarray:
    """The carry of each of the planner's H steps (H x M, fractions of notional, step 1 = ``first``,
    today's :func:`_carry_per_horizon`).

    Perpetual j with the ``ewma`` rule and a market forecast: the forecast's premium over the
    long-run level mu decays by phi = 2^(-1/T) per settlement (T the reversion half-life,
    ``funding_reversion_half_life``), so with n_j settlements per step and rbar_1 = first_j / n_j
    the mean rate of step h is mu + (rbar_1 - mu) phi^(n_j (h - 1)) and its carry n_j times that
    (models.funding_forecast: the same shrinkage as the forecast itself). Otherwise (the ``last``
    rule, no forecast): today's rate persists. Dated j: the basis decays linearly to expiry, so
    each step before expiry pays the same b x step / days to expiry (= ``first_j``).
    """
    out = np.tile(np.asarray(first, dtype=float), (horizon, 1))
    if costs.funding_forecast != FundingForecastRule.EWMA:
        return out
    mu = costs.funding_long_run_rate
    phi = decay_from_half_life(costs.funding_reversion_half_life)
    for j, c in enumerate(book.contracts):
        if c.kind != ContractKind.PERPETUAL or c.symbol not in market.funding_forecast:
            continue
        n = costs.horizon_days * HOURS_PER_DAY / c.funding_interval_h
        rbar = first[j] / n
        out[:, j] = n * (mu + (rbar - mu) * phi ** (n * np.arange(horizon)))
    return out


def _carry_per_horizon(book: Book, market: MarketSnapshot, horizon_days: float) -> np.ndarray:
    """Carry paid by a long per unit notional over the cost horizon (fraction of notional).

    ``carry_j`` is dimensionless: USD paid over ``horizon_days`` per USD of long notional (a short
    receives it). In the objective it multiplies z_j = x_j / V, so ``gamma_fund carry' z`` is the
    expected carry in weight units (USD / V) and ``carry_j x_j`` is USD.

    Perpetual j: ``carry_j = H_j rbar_j`` with ``H_j = horizon_days x 24 / funding_interval_h_j``
    settlements in the horizon and ``rbar_j`` the mean rate per settlement assumed over them:
    ``market.funding_forecast[j]`` when the market gives one (e.g. the replay's causal EWMA
    forecast, ``[costs] funding_forecast = "ewma"``), else the current rate
    ``market.funding[j]`` (0 when missing; the default "last" rule). Only the carry Parameter's
    *values* change with the rule, so the compiled (DPP) problem is the same.

    Dated j: the basis b = mark / spot - 1 decays linearly to expiry, so a long pays
    ``b x horizon / max(days to expiry, horizon)``.

    Issue 11, item 5 (funding-aware instruments): with this carry the optimiser already holds each
    exposure through the instrument with the lowest fee + carry over the horizon (perpetual, dated
    future, or spot with the spot leg on: spot has no carry term, i.e. 0), as long as the carry
    spread between two contracts stays below a long/short pair's trading cost (beyond that only a
    bound such as the margin row or basis risk limits a carry trade); tests/optimizer/
    test_instruments.py. Dated carry is this linear decay of today's basis (the replay's marks may
    come from real quarterlies or a fitted term structure: scenarios.rolls.with_quarterly_marks).
    ``min_days_to_expiry`` is enforced by the order planner (executor.plan), and as a row of the
    optimiser with ``constraints.expiry_row`` (optimizer.constraints.ExpiryGuard).
    """
    out = np.zeros(len(book.contracts))
    for j, c in enumerate(book.contracts):
        if c.kind == ContractKind.PERPETUAL:
            out[j] = market.carry_rate(c.symbol) * horizon_days * HOURS_PER_DAY / c.funding_interval_h
        else:
            assert c.expiry is not None
            basis = market.mark_price(c.symbol) / market.spot_price(c.underlying) - 1.0
            expiry = c.expiry.timestamp()
            days = max((expiry - market.time.timestamp()) / 86400.0, horizon_days)
            out[j] = basis * horizon_days / days
    return out


def near_expiry_mask(book: Book, market: MarketSnapshot, min_days: float) -> np.ndarray:
    """1.0 for each dated contract with ``days to expiry < min_days`` at ``market.time`` (days of
    86,400 s; an expired contract counts too), else 0.0: the executor's rule
    (``executor.plan.near_expiry``: a contract is opened or increased only while days >= min_days)."""
    if not (math.isfinite(min_days) and min_days >= 0):
        raise ValidationError("constraints.min_days_to_expiry", f"is {min_days}",
                              "give the days before expiry (>= 0) within which a dated contract is "
                              "not opened or increased")
    out = np.zeros(len(book.contracts))
    for j, c in enumerate(book.contracts):
        days = c.days_to_expiry(market.time)
        if c.kind == ContractKind.DATED and days is not None and days < min_days:
            out[j] = 1.0
    return out


def _caps(book: Book, spot: np.ndarray, risk: RiskModel, settings: OptimizerSettings,
          V: float) -> tuple[np.ndarray, tuple[str, ...]]:
    """Per-contract |z_j| bound (weight units, inf = none) and the name of the rule that sets it."""
    cs = settings.constraints
    M = len(book.contracts)
    caps = np.full(M, math.inf)
    source = ["" for _ in range(M)]
    known = set(book.contract_symbols)
    for sym in cs.caps_usd:
        if sym not in known:
            raise ValidationError(f"constraints.caps_usd.{sym}", "is not a contract of the book",
                                  f"use one of {sorted(known)}")
    targets = book.target_vector()
    held = (targets > 0) | (spot > 0)
    corr = risk.correlation() if cs.rho_min is not None else None
    idx = {s: i for i, s in enumerate(book.asset_symbols)}
    for j, c in enumerate(book.contracts):
        cands: list[tuple[float, str]] = []
        if c.symbol in cs.caps_usd:
            cands.append((float(cs.caps_usd[c.symbol]) / V, "position_cap"))
        elif cs.default_cap_usd is not None:
            cands.append((float(cs.default_cap_usd) / V, "position_cap"))
        if settings.constraints.margin:
            tier_max = c.max_notional_usd
            if math.isfinite(tier_max) and tier_max < 1e11:
                cands.append((tier_max / V, "tier_limit"))
        if cs.rho_min is not None and corr is not None:
            i = idx[c.underlying]
            if not held[i]:
                others = [k for k in range(len(targets)) if held[k]]
                best = max((corr[i, k] for k in others), default=-1.0)
                if best < cs.rho_min:
                    cands.append((0.0, "proxy_correlation"))
        if cands:
            cap, name = min(cands)
            caps[j], source[j] = cap, name
    return caps, tuple(source)


def _reachable_tiers(mm: MarginModel, caps_usd: np.ndarray,
                     stress_g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tier arrays (M x K, USD) keeping only brackets a position can reach.

    A position is at most cap_j, and a stress scenario scales it by (1 + g_sj); brackets starting above
    cap_j (1 + max_s g_sj) never hold the max in MM(n) = max_k (mmr_k n - cum_k) for reachable n
    (MM is convex and continuous, each bracket is the max only inside its own range), so dropping
    them changes nothing but the problem size. Shorter rows repeat their last kept bracket.
    """
    up = 1.0 + np.clip(stress_g.max(axis=0), 0.0, None) if stress_g.size else 1.0
    reach = caps_usd * up
    count = np.maximum((mm.lo < reach[:, None]).sum(axis=1), 1)
    K = int(count.max())
    idx = np.minimum(np.arange(K)[None, :], count[:, None] - 1)
    rows = np.arange(len(count))[:, None]
    return mm.mmr[rows, idx], mm.cum[rows, idx]


def prepare(book: Book, market: MarketSnapshot, risk: RiskModel,
            settings: OptimizerSettings) -> ProblemData:
    """Turn user-unit inputs into the weight-unit arrays of one rebalance (validating as it goes)."""
    book.check_market(market)
    assets = book.asset_symbols
    if not book.contracts:
        raise ValidationError("contracts", "is empty", "list at least one futures contract to hedge with")
    risk, risk_note = solver_risk(risk, assets, settings)
    val = book.valuation(market)
    V = val.base
    if not (math.isfinite(V) and V > 0):
        raise ValidationError("book", f"has a target base of {V:.2f} USD",
                              "hold some spot (or set targets_base = 'nav' with cash)")
    cs, cc = settings.constraints, settings.costs
    spot = val.spot_values
    B = book.exposure_matrix()
    x0 = val.notional
    collateral = val.collateral
    prices = np.array([market.mark_price(c) for c in book.contract_symbols])
    daily_vol = B.T @ risk.daily_vol
    costs = CostModel.build(book.contracts, market, daily_vol, cc.impact_k)
    mm = _margin_model(book.contracts)

    Gb = _basis_factor(risk, len(book.contracts)) if settings.basis_risk else None
    if Gb is None:
        Gb = np.zeros((len(book.contracts), 0))

    scen = cs.stress
    stress_r = np.array([_stress_returns(sc, assets) for sc in scen]).reshape(len(scen), len(assets))
    stress_g = stress_r @ B
    # collateral(r_s) = W + sum_i C_i(u_i (1 + r_s,i)): pledged spot re-priced through its rule
    stress_coll = np.array([book.stressed_collateral(val, r) for r in stress_r]) / V

    caps, cap_source = _caps(book, spot, risk, settings, V)
    mmr, cum = _reachable_tiers(mm, caps * V, stress_g)
    adv = np.array([market.contract_adv(c) for c in book.contract_symbols])
    tl = np.full(len(book.contracts), math.inf)
    if cs.trade_limit_adv is not None:
        tl = np.minimum(tl, cs.trade_limit_adv * adv / V)
    if cs.trade_limit_usd is not None:
        tl = np.minimum(tl, cs.trade_limit_usd / V)

    members: list[tuple[int, ...]] = []
    idx = {s: i for i, s in enumerate(assets)}
    for cl in cs.clusters:
        for a in cl.assets:
            if a not in idx:
                raise ValidationError(f"constraints.clusters.{cl.name}.assets", f"names unknown asset {a!r}",
                                      f"use assets of the book: {assets}")
        members.append(tuple(sorted(idx[a] for a in cl.assets)))

    inv_lev = 1.0 / mm.leverage
    mb = margin_budget(collateral, float(inv_lev @ np.abs(x0)), V, settings)
    return ProblemData(
        assets=tuple(assets), contracts=tuple(book.contract_symbols), V=V, nav=val.nav,
        collateral=collateral, s=spot / V, w=book.target_vector(), B=B, z0=x0 / V, F=risk.loadings,
        FtB=risk.loadings.T[:, np.argmax(B, axis=0)],
        sqrt_idio=np.sqrt(np.clip(risk.idio, 0.0, None)), Gb=Gb,
        lin_cost=costs.linear, impact_cost=costs.impact * math.sqrt(V),
        carry=(carry := _carry_per_horizon(book, market, cc.horizon_days)),
        carry_steps=(carry_path(book, market, cc, carry, settings.horizon)
                     if check_horizon(settings.horizon, settings.spot.enabled) > 1 else None),
        inv_lev=inv_lev, im_budget=mb.budget,
        mmr=mmr, cum=cum / V, stress_g=stress_g, stress_coll=stress_coll,
        stress_names=tuple(sc.name for sc in scen),
        max_gross=cs.max_gross_leverage if cs.max_gross_leverage is not None else math.inf,
        caps=caps, cap_source=cap_source, cluster_members=tuple(members),
        cluster_names=tuple(cl.name for cl in cs.clusters),
        cluster_bands=np.array([cl.band for cl in cs.clusters], dtype=float),
        vol_cap=cs.vol_cap if cs.vol_cap is not None else math.inf,
        funding_budget=(cs.funding_budget_usd / V) if cs.funding_budget_usd is not None else math.inf,
        trade_limits=tl, prices=prices, costs=costs, margin_model=mm, settings=settings,
        gamma_trade=cc.gamma_trade, gamma_fund=cc.gamma_fund, margin_budget=mb, risk_note=risk_note,
        spot=(prepare_spot(book, market, risk.daily_vol, V, settings.spot, cc.impact_k)
              if settings.spot.enabled else None),
        dated=tuple(c.kind == ContractKind.DATED and c.expiry is not None for c in book.contracts),
        near_expiry=(near_expiry_mask(book, market, cs.min_days_to_expiry) if cs.expiry_row
                     else None),
        cost_to_go_root=cost_to_go_root(risk, cc),
    )
