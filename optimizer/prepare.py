"""Preparation of one rebalance: :func:`prepare` turns the book, market, risk model and settings
(user units: USD, contracts, annualised covariance) into the weight-unit arrays of
``optimizer.data.ProblemData`` (USD / V, V the target base), validating as it goes.

Its steps: the stress scenarios' returns and collateral, the per-contract position caps and the
margin tiers they can reach, the trade limits, the clusters, the near-expiry mask and the
cost-to-go root. The carry is ``optimizer.carry``'s; the cached risk, basis and margin inputs are
``optimizer.model_cache``'s.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from models.book import Book, Valuation
from models.bounds import check_weight
from models.costs import CostModel
from models.errors import ValidationError
from models.instruments import ContractKind, check_not_expired
from models.margin import MarginModel
from models.market import MarketSnapshot
from models.risk import RiskModel
from optimizer.carry import _carry_per_horizon, carry_path
from optimizer.cost_checks import check_costs
from optimizer.cost_to_go import power_shape_root
from optimizer.data import ProblemData, margin_budget
from optimizer.model_cache import cached_basis_factor, cached_margin_model, solver_risk
from optimizer.plan_expiry import expiry_days_path
from optimizer.settings import (
    ConstraintSettings,
    CostSettings,
    OptimizerSettings,
    StressScenario,
    check_horizon,
)
from optimizer.spot_data import futures_tax_coefficients, prepare_spot

#: A bound in weight units (a multiple of the base V) past which it cannot bind any book: a
#: position, trade, gross exposure or carry of a million times the base. Such a bound is no bound
#: (inf: its rows are left out, as with the key unset); given to a solver it is a row 1e6-1e9
#: bases wide, and Clarabel fails on those (solver_error with a 1e13 USD trade limit or cap on a
#: 10,000 USD book, SCS then answering only 'inaccurate'). A book whose positions would need it
#: is unbounded: the solve says so.
LOOSE_BOUND = 1e6


def no_looser_than(bound: np.ndarray | float) -> np.ndarray:
    """``bound`` (weight units) with every entry past :data:`LOOSE_BOUND` made inf (no bound)."""
    b = np.asarray(bound, dtype=float)
    return np.where(b > LOOSE_BOUND, math.inf, b)


def scalar_bound(bound: float | None) -> float:
    """One bound in weight units: inf (no bound) when unset (None) or past :data:`LOOSE_BOUND`."""
    return math.inf if bound is None else float(no_looser_than(bound))


def check_cost_to_go(costs: CostSettings) -> tuple[float, float]:
    """(kappa, p) = (``costs.cost_to_go``, ``costs.cost_to_go_power``), validated: kappa a weight
    (a dimensionless multiple of TE^2, in [0, MAX_WEIGHT]), p in [0, 1]."""
    kappa, p = check_weight(costs.cost_to_go, "costs.cost_to_go"), costs.cost_to_go_power
    if not (isinstance(p, int | float) and math.isfinite(p) and 0.0 <= p <= 1.0):
        raise ValidationError("costs.cost_to_go_power", f"is {p!r}",
                              "give the cost-to-go shape power p in [0, 1] (1: Sigma's shape, 0: "
                              "the identity's), e.g. 0.5")
    return kappa, float(p)


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

def near_expiry_mask(book: Book, market: MarketSnapshot, min_days: float) -> np.ndarray:
    """1.0 for each dated contract with ``days to expiry < min_days`` at ``market.time`` (days of
    86,400 s; an expired contract counts too), else 0.0: the executor's and the backtest's rule
    (``FuturesContract.near_expiry``: a contract is opened or increased only while days >= min_days)."""
    if not (math.isfinite(min_days) and min_days >= 0):
        raise ValidationError("constraints.min_days_to_expiry", f"is {min_days}",
                              "give the days before expiry (>= 0) within which a dated contract is "
                              "not opened or increased")
    return np.array([1.0 if c.kind == ContractKind.DATED and c.near_expiry(market.time, min_days)
                     else 0.0 for c in book.contracts])


def _expiry_inputs(book: Book, market: MarketSnapshot, settings: OptimizerSettings
                   ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(near_expiry, expiry_days) of :class:`~optimizer.data.ProblemData`: today's near-expiry mask
    with ``constraints.expiry_row`` on, or whenever a dated contract of the book is within
    ``min_days_to_expiry`` at the market time (the order planner and the replay only reduce such a
    contract, so an answer that opened it would be sent without that leg and leave its other legs
    unhedged); a plan whose later steps outlive a dated contract carries
    the expiry rows too (the mask all zero today when the row is off) and the days left at each
    step's start (optimizer.plan_expiry); else (None, None)."""
    cs = settings.constraints
    for c, q in zip(book.contracts, book.contracts_vector(), strict=True):
        check_not_expired(c, market.time, float(q))  # the order planner's refusal
    mask = near_expiry_mask(book, market, cs.min_days_to_expiry)
    row = cs.expiry_row or bool(mask.any())
    near_days = cs.min_days_to_expiry if row else 0.0
    expiry_days = (expiry_days_path(book, market, settings.costs.horizon_days, settings.horizon,
                                    near_days) if check_horizon(settings.horizon) > 1 else None)
    if row:
        return mask, expiry_days
    return (np.zeros(len(book.contracts)) if expiry_days is not None else None), expiry_days


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
    loose = caps > LOOSE_BOUND
    return no_looser_than(caps), tuple("" if out else s for s, out in zip(source, loose, strict=True))


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


def _check_base(V: float) -> None:
    """Refuse a target base V (USD) that is not finite and > 0 (weights would divide by it)."""
    if not (math.isfinite(V) and V > 0):
        raise ValidationError("book", f"has a target base of {V:.2f} USD",
                              "hold some spot (or set targets_base = 'nav' with cash)")


def _basis(risk: RiskModel, n_contracts: int, settings: OptimizerSettings) -> np.ndarray:
    """Gb (M x K, Sigma_basis = Gb Gb', annualised) of ``optimizer.model_cache.cached_basis_factor``
    with ``settings.basis_risk``; M x 0 zeros without basis risk or a basis covariance."""
    Gb = cached_basis_factor(risk, n_contracts) if settings.basis_risk else None
    if Gb is None:
        Gb = np.zeros((n_contracts, 0))
    return Gb


def _stress(book: Book, val: Valuation, B: np.ndarray, assets: list[str],
            scen: tuple[StressScenario, ...], V: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per stress scenario s: the asset returns r_s (S x N), the contract returns g_s (S x M,
    fractions, through B) and the stressed collateral (S, weight units: USD / V)."""
    stress_r = np.array([_stress_returns(sc, assets) for sc in scen]).reshape(len(scen), len(assets))
    stress_g = stress_r @ B
    # collateral(r_s) = W + sum_i C_i(u_i (1 + r_s,i)): pledged spot re-priced through its rule
    stress_coll = np.array([book.stressed_collateral(val, r) for r in stress_r]) / V
    return stress_r, stress_g, stress_coll


def _trade_limits(book: Book, market: MarketSnapshot, cs: ConstraintSettings,
                  V: float) -> np.ndarray:
    """Per-contract |trade| bound (weight units, inf = none): the smaller of ``trade_limit_adv``
    x ADV and ``trade_limit_usd`` (USD / V)."""
    adv = np.array([market.contract_adv(c) for c in book.contract_symbols])
    tl = np.full(len(book.contracts), math.inf)
    if cs.trade_limit_adv is not None:
        tl = np.minimum(tl, cs.trade_limit_adv * adv / V)
    if cs.trade_limit_usd is not None:
        tl = np.minimum(tl, cs.trade_limit_usd / V)
    return no_looser_than(tl)


def unlimited_by_adv(book: Book, market: MarketSnapshot, cs: ConstraintSettings) -> list[str]:
    """A message naming the contracts ``trade_limit_adv`` leaves unlimited because the market
    gives no ADV for them (an unknown ADV bounds nothing); none when the limit is off."""
    if cs.trade_limit_adv is None:
        return []
    missing = [c for c in book.contract_symbols if not math.isfinite(market.contract_adv(c))]
    if not missing:
        return []
    return [f"trade_limit_adv does not limit {', '.join(missing)}: the market gives no ADV for "
            f"{'it' if len(missing) == 1 else 'them'} (give [market.adv], or trade_limit_usd)"]


class Clusters(NamedTuple):
    """The cluster bands the problem holds: per cluster its assets' indices (sorted), its name and
    its band (weights)."""

    members: tuple[tuple[int, ...], ...]
    names: tuple[str, ...]
    bands: np.ndarray


def _clusters(assets: list[str], cs: ConstraintSettings) -> Clusters:
    """The clusters of ``cs`` whose band is within :data:`LOOSE_BOUND` (a band past a million
    bases bounds nothing: no row, as for the other bounds); an unknown asset is an error in any."""
    idx = {s: i for i, s in enumerate(assets)}
    for cl in cs.clusters:
        for a in cl.assets:
            if a not in idx:
                raise ValidationError(f"constraints.clusters.{cl.name}.assets", f"names unknown asset {a!r}",
                                      f"use assets of the book: {assets}")
    kept = [cl for cl in cs.clusters if not cl.band > LOOSE_BOUND]
    return Clusters(tuple(tuple(sorted(idx[a] for a in cl.assets)) for cl in kept),
                    tuple(cl.name for cl in kept), np.array([cl.band for cl in kept], dtype=float))


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
    _check_base(V)
    cs, cc = settings.constraints, check_costs(settings.costs)
    spot = val.spot_values
    B = book.exposure_matrix()
    # x0: USD exposure (inverse q x size x mark / entry) for TE and trades; the margin already
    # held is on the exchange's notional (inverse: face value)
    x0, collateral = val.exposure, val.collateral
    prices = np.array([market.mark_price(c) for c in book.contract_symbols])
    daily_vol = B.T @ risk.daily_vol
    costs = CostModel.build(book.contracts, market, daily_vol, cc.impact_k)
    mm = cached_margin_model(book.contracts)
    Gb = _basis(risk, len(book.contracts), settings)
    scen = cs.stress
    stress_r, stress_g, stress_coll = _stress(book, val, B, assets, scen, V)
    caps, cap_source = _caps(book, spot, risk, settings, V)
    mmr, cum = _reachable_tiers(mm, caps * V, stress_g)
    tl = _trade_limits(book, market, cs, V)
    clusters = _clusters(assets, cs)
    inv_lev = 1.0 / mm.leverage
    mb = margin_budget(collateral, float(inv_lev @ np.abs(val.notional)), V, settings)
    near_expiry, expiry_days = _expiry_inputs(book, market, settings)
    return ProblemData(
        assets=tuple(assets), contracts=tuple(book.contract_symbols), V=V, nav=val.nav,
        collateral=collateral, s=spot / V, w=book.target_vector(), B=B, z0=x0 / V, F=risk.loadings,
        FtB=risk.loadings.T[:, np.argmax(B, axis=0)],
        sqrt_idio=np.sqrt(np.clip(risk.idio, 0.0, None)), Gb=Gb,
        lin_cost=costs.linear, impact_cost=costs.impact * math.sqrt(V),
        carry=(carry := _carry_per_horizon(book, market, cc.horizon_days)),
        carry_steps=(carry_path(book, market, cc, carry, settings.horizon)
                     if check_horizon(settings.horizon) > 1 else None),
        inv_lev=inv_lev, im_budget=mb.budget,
        mmr=mmr, cum=cum / V, stress_g=stress_g, stress_coll=stress_coll,
        stress_names=tuple(sc.name for sc in scen),
        max_gross=scalar_bound(cs.max_gross_leverage),
        caps=caps, cap_source=cap_source, cluster_members=clusters.members,
        cluster_names=clusters.names, cluster_bands=clusters.bands,
        vol_cap=cs.vol_cap if cs.vol_cap is not None else math.inf,
        funding_budget=scalar_bound(None if cs.funding_budget_usd is None else cs.funding_budget_usd / V),
        trade_limits=tl, prices=prices, costs=costs, margin_model=mm, settings=settings,
        gamma_trade=cc.gamma_trade, gamma_fund=cc.gamma_fund, margin_budget=mb, risk_note=risk_note,
        spot=(prepare_spot(book, market, risk.daily_vol, V, settings.spot, cc.impact_k,
                           stress_r=stress_r) if settings.spot.enabled else None),
        futures_tax_coef=futures_tax_coefficients(book, market, settings.spot),
        dated=tuple(c.kind == ContractKind.DATED and c.expiry is not None for c in book.contracts),
        near_expiry=near_expiry, expiry_days=expiry_days,
        cost_to_go_root=cost_to_go_root(risk, cc),
        exposure_offset=book.exposure_offset(market),
        halted=(tuple(market.halted.get(c) for c in book.contract_symbols) if market.halted else ()),
    )
