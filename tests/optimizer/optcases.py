"""Shared helpers of the optimiser tests: random instances, an independent reference formulation and
independent numpy constraint checks.

Nothing here imports ``optimizer.terms``, ``optimizer.constraints`` or ``optimizer.context``: the
reference problem and the checks are written from DESIGN.md ("The optimisation problem") directly in
terms of the Book / MarketSnapshot / RiskModel numbers, with the decision variable z = x / V (signed
futures notional as a fraction of the target base V).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace
from datetime import timedelta

import cvxpy as cp
import numpy as np
import pandas as pd

from models.book import Book, FuturesPosition, TargetsBase
from models.instruments import (
    ContractKind,
    FuturesContract,
    MarginTiers,
    Settlement,
    SpotAsset,
    TierBracket,
)
from models.market import MarketSnapshot
from models.risk import RiskModel
from optimizer.settings import (
    ClusterBand,
    ConstraintSettings,
    CostSettings,
    OptimizerSettings,
    StressScenario,
)

T0 = pd.Timestamp("2025-01-01T00:00:00Z")
DAYS = 365.0

#: Clarabel options for the reference solves (tight: positions must agree to 1e-5 of V). The conic
#: instances stop at 1e-10 (1e-12 is beyond what Clarabel reaches there and ends "almost solved").
CLARABEL_TIGHT: dict[str, float | int] = {
    "tol_gap_abs": 1e-12, "tol_gap_rel": 1e-12, "tol_feas": 1e-12, "tol_ktratio": 1e-10,
    "max_iter": 400,
}
CLARABEL_TIGHT_CONIC: dict[str, float | int] = {
    "tol_gap_abs": 1e-10, "tol_gap_rel": 1e-10, "tol_feas": 1e-10, "max_iter": 400,
}
#: the tight Clarabel's retries when it stops with a SolverError ("insufficient progress": seen on
#: another machine's CPU, whose kernels round differently): 1e-9 without equilibration, then with
#: shorter steps
CLARABEL_RETRIES: tuple[dict[str, float | int | bool], ...] = (
    {"tol_gap_abs": 1e-9, "tol_gap_rel": 1e-9, "tol_feas": 1e-9, "max_iter": 400,
     "equilibrate_enable": False},
    {"tol_gap_abs": 1e-9, "tol_gap_rel": 1e-9, "tol_feas": 1e-9, "max_iter": 400,
     "max_step_fraction": 0.9},
)
#: PIQP through cvxpy's ordinary path: the second opinion on QP instances.
PIQP_TIGHT: dict[str, float | int] = {
    "eps_abs": 1e-10, "eps_rel": 1e-10, "eps_duality_gap_abs": 1e-10, "eps_duality_gap_rel": 1e-10,
}


@dataclass(frozen=True)
class Instance:
    """One rebalance: the inputs of ``Rebalancer.solve``."""

    book: Book
    market: MarketSnapshot
    risk: RiskModel
    settings: OptimizerSettings


# ------------------------------------------------------------------------------------------------
# Random instances
# ------------------------------------------------------------------------------------------------


def random_tiers(rng: np.random.Generator) -> MarginTiers:
    """1-4 contiguous brackets, rates rising with size, cum making MM continuous.

    Each bracket's rate is at most half its inverse max leverage (as on real exchanges), so maintenance
    never exceeds initial margin at an allowed leverage.
    """
    k = int(rng.integers(1, 5))
    lev0 = float(rng.choice([20.0, 25.0, 50.0, 75.0, 100.0]))
    bounds = [0.0]
    for _ in range(k - 1):
        bounds.append(bounds[-1] + float(rng.uniform(2e4, 3e5)) * (1 + len(bounds)))
    bounds.append(1e12)
    brackets: list[TierBracket] = []
    mmr_prev, cum_prev, lev = 0.0, 0.0, lev0
    for b in range(k):
        mmr = 0.5 / lev * float(rng.uniform(0.6, 1.0))
        mmr = max(mmr, mmr_prev)
        cum = 0.0 if b == 0 else cum_prev + (mmr - mmr_prev) * bounds[b]
        brackets.append(TierBracket(bounds[b], bounds[b + 1], lev, mmr, cum))
        mmr_prev, cum_prev = mmr, cum
        lev = max(1.0, lev / float(rng.uniform(1.5, 2.5)))
    return MarginTiers(tuple(brackets))


def _random_cov(rng: np.random.Generator, n: int, lo: float, hi: float) -> np.ndarray:
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return np.asarray((q * rng.uniform(lo, hi, n)) @ q.T)


def random_instance(rng: np.random.Generator, *, conic: bool | None = None,
                    lot_step: float = 1e-6, min_notional: float = 0.0,
                    max_assets: int = 12, factor_form: bool = False) -> Instance:
    """A random, well-posed rebalance (strictly convex in z: each asset has positive variance, and
    when an asset has two contracts the basis risk term is on with a positive definite covariance).

    ``conic`` forces the impact term and/or the vol cap on (True) or both off (False).
    ``factor_form`` keeps the risk model as F F' + diag(d) with d > 0; otherwise it is handed over in
    the full-rank form of ``RiskModel.from_covariance`` (d = 0), the same Sigma either way.
    """
    N = int(rng.integers(2, max_assets + 1))
    syms = [f"A{i}" for i in range(N)]
    assets = tuple(SpotAsset(s) for s in syms)
    per_asset = rng.choice([0, 1, 2], size=N, p=[0.2, 0.5, 0.3])
    if per_asset.sum() == 0:
        per_asset[int(rng.integers(N))] = 1
    spot_px = np.exp(rng.uniform(np.log(0.5), np.log(8e4), N))
    contracts: list[FuturesContract] = []
    mark: dict[str, float] = {}
    funding: dict[str, float] = {}
    half_spread: dict[str, float] = {}
    adv: dict[str, float] = {}
    for i, s in enumerate(syms):
        for k in range(int(per_asset[i])):
            dated = k == 1 or rng.random() < 0.2
            inverse = rng.random() < 0.15
            tiers = random_tiers(rng)
            top = max(b.max_leverage for b in tiers.brackets)
            lev = float(rng.uniform(2.0, min(top, 25.0)))
            sym = f"{s}-Q{k}" if dated else f"{s}-P{k}"
            contracts.append(FuturesContract(
                symbol=sym, underlying=s,
                kind=ContractKind.DATED if dated else ContractKind.PERPETUAL,
                settlement=Settlement.INVERSE if inverse else Settlement.LINEAR,
                contract_size=100.0 if inverse else float(rng.choice([1.0, 0.01, 10.0])),
                lot_step=lot_step, min_notional=min_notional,
                taker_fee=float(rng.uniform(0.0, 8e-4)),
                funding_interval_h=float(rng.choice([8.0, 4.0, 1.0])),
                expiry=(T0 + timedelta(days=float(rng.uniform(40, 200)))).to_pydatetime()
                if dated else None,
                leverage=lev, tiers=tiers))
            basis = rng.uniform(-0.005, 0.03) if dated else rng.normal(0, 5e-4)
            mark[sym] = float(spot_px[i] * (1 + basis))
            if not dated:
                funding[sym] = float(np.clip(rng.normal(1e-4, 2e-4), -0.002, 0.002))
            if rng.random() < 0.8:
                half_spread[sym] = float(rng.uniform(0.0, 5e-4))
            if rng.random() < 0.85:
                adv[sym] = float(np.exp(rng.uniform(np.log(1e6), np.log(5e9))))
    two_per_asset = bool((per_asset >= 2).any())
    M = len(contracts)

    total = float(np.exp(rng.uniform(np.log(2e4), np.log(2e6))))
    wts = rng.dirichlet(np.ones(N))
    wts[rng.random(N) < 0.15] = 0.0
    if wts.sum() == 0:
        wts[0] = 1.0
    value = total * wts / wts.sum()
    spot = {s: float(value[i] / spot_px[i]) for i, s in enumerate(syms) if value[i] > 0}
    tw = rng.dirichlet(np.ones(N))
    tw[rng.random(N) < 0.2] = 0.0
    if tw.sum() == 0:
        tw[-1] = 1.0
    tw = tw / tw.sum() * (1.0 if rng.random() < 0.6 else float(rng.uniform(0.6, 1.0)))
    targets = {s: float(tw[i]) for i, s in enumerate(syms) if tw[i] > 0 or rng.random() < 0.5}
    cash = total * float(np.exp(rng.uniform(np.log(0.003), np.log(0.6))))
    futures: dict[str, FuturesPosition] = {}
    if rng.random() < 0.5:
        for c in contracts:
            if rng.random() < 0.6:
                m = mark[c.symbol]
                npc = c.contract_size if c.settlement == Settlement.INVERSE else c.contract_size * m
                q = float(rng.normal(0, 0.08)) * total / npc
                futures[c.symbol] = FuturesPosition(q, m * float(1 + rng.normal(0, 0.03)))
    pledged = {s: float(rng.uniform(0.8, 0.98)) for s in syms
               if s in spot and rng.random() < 0.25}
    base = TargetsBase.NAV if rng.random() < 0.35 else TargetsBase.INVESTED
    book = Book(assets=assets, contracts=tuple(contracts), spot=spot, targets=targets, cash=cash,
                futures=futures, pledged=pledged, targets_base=base, name="random")
    market = MarketSnapshot(time=T0, spot={s: float(p) for s, p in zip(syms, spot_px, strict=True)},
                            mark=mark, funding=funding, half_spread=half_spread, adv=adv)

    K = int(rng.integers(1, min(N, 4) + 1))
    F = rng.normal(0, 0.5 / math.sqrt(K), (N, K)) + (0.45 if rng.random() < 0.7 else 0.0)
    idio = rng.uniform(0.05, 0.4, N)
    basis_on = two_per_asset or rng.random() < 0.4
    bcov = _random_cov(rng, M, 0.01, 0.05) if basis_on else None
    if factor_form:
        risk = RiskModel(tuple(syms), F, idio, basis_cov=bcov)
    else:
        full = RiskModel.from_covariance(syms, F @ F.T + np.diag(idio))
        risk = replace(full, basis_cov=bcov)

    V = base_value(book, market)
    settings = random_settings(rng, book, market, risk, V, conic=conic, basis_on=basis_on)
    return Instance(book, market, risk, settings)


def random_settings(rng: np.random.Generator, book: Book, market: MarketSnapshot, risk: RiskModel,
                    V: float, *, conic: bool | None, basis_on: bool) -> OptimizerSettings:
    """Random costs and constraints (each switched on with some probability)."""
    syms = book.asset_symbols
    cons = book.contract_symbols
    if conic is None:
        conic = rng.random() < 0.35
    impact = bool(conic and rng.random() < 0.7)
    vol_cap_on = bool(conic and (not impact or rng.random() < 0.5))
    costs = CostSettings(trading=bool(rng.random() < 0.65), impact=impact,
                         impact_k=float(rng.uniform(0.3, 2.0)), carry=bool(rng.random() < 0.65),
                         gamma_trade=float(rng.uniform(0.5, 3.0)),
                         gamma_fund=float(rng.uniform(0.5, 3.0)),
                         horizon_days=float(rng.choice([1.0, 3.0, 7.0, 30.0])))
    stress: tuple[StressScenario, ...] = ()
    if rng.random() < 0.4:
        stress = tuple(
            StressScenario(f"s{k}", {s: float(rng.uniform(-0.6, 0.6)) for s in syms
                                     if rng.random() < 0.5},
                           common=float(rng.uniform(-0.4, 0.3)))
            for k in range(int(rng.integers(1, 4))))
    s = _spot_values(book, market) / V
    w = np.array([book.targets.get(a, 0.0) for a in syms])
    gross = None
    if rng.random() < 0.3:
        gross = float(rng.uniform(0.7, 1.3)) * max(float(np.abs(w).sum()), 0.2)
    caps: dict[str, float] = {}
    if rng.random() < 0.3:
        caps = {c: float(rng.uniform(0.005, 0.3)) * V for c in cons if rng.random() < 0.5}
    default_cap = float(rng.uniform(0.05, 0.5)) * V if rng.random() < 0.15 else None
    clusters: tuple[ClusterBand, ...] = ()
    if rng.random() < 0.3 and len(syms) >= 2:
        clusters = tuple(
            ClusterBand(f"c{k}", tuple(str(a) for a in rng.choice(
                syms, size=int(rng.integers(2, min(len(syms), 4) + 1)), replace=False)),
                float(rng.uniform(0.002, 0.05)))
            for k in range(int(rng.integers(1, 3))))
    vol_cap = None
    if vol_cap_on:
        cov = risk.covariance
        vol_cap = float(rng.uniform(0.4, 1.2)) * float(np.sqrt(max(w @ cov @ w, 0.04 * (s @ cov @ s))))
    budget = float(rng.uniform(-2e-4, 1e-3)) * V if rng.random() < 0.3 else None
    tl_usd = float(rng.uniform(0.01, 0.25)) * V if rng.random() < 0.3 else None
    tl_adv = float(rng.uniform(1e-5, 1e-3)) if rng.random() < 0.15 else None
    rho_min = float(rng.uniform(0.2, 0.95)) if rng.random() < 0.2 else None
    margin = bool(rng.random() < 0.6)
    buffer = float(rng.uniform(0, 0.05)) * V if margin and rng.random() < 0.5 else 0.0
    constraints = ConstraintSettings(
        margin=margin, margin_buffer_usd=buffer, stress=stress, max_gross_leverage=gross,
        caps_usd=caps, default_cap_usd=default_cap, clusters=clusters, vol_cap=vol_cap,
        rho_min=rho_min, funding_budget_usd=budget, trade_limit_adv=tl_adv, trade_limit_usd=tl_usd)
    return OptimizerSettings(costs=costs, constraints=constraints, basis_risk=basis_on)


# ------------------------------------------------------------------------------------------------
# Valuation written out from the book's raw numbers (independent of Book's own methods)
# ------------------------------------------------------------------------------------------------


def _spot_values(book: Book, market: MarketSnapshot) -> np.ndarray:
    return np.array([book.spot.get(a, 0.0) * market.spot[a] for a in book.asset_symbols], dtype=float)


def _npc(c: FuturesContract, mark: float) -> float:
    return c.contract_size if c.settlement == Settlement.INVERSE else c.contract_size * mark


def _upnl(book: Book, market: MarketSnapshot) -> float:
    total = 0.0
    for c in book.contracts:
        pos = book.futures.get(c.symbol)
        if pos is None or pos.contracts == 0:
            continue
        m = market.mark[c.symbol]
        if c.settlement == Settlement.INVERSE:
            total += pos.contracts * c.contract_size * (m / pos.entry_price - 1.0)
        else:
            total += pos.contracts * c.contract_size * (m - pos.entry_price)
    return total


def base_value(book: Book, market: MarketSnapshot) -> float:
    spot = float(_spot_values(book, market).sum())
    if book.targets_base == TargetsBase.NAV:
        return spot + book.cash + _upnl(book, market)
    return spot


@dataclass(frozen=True)
class RefData:
    """The numbers of DESIGN.md's problem, in USD where the design says USD."""

    V: float
    collateral: float
    pledged_value: np.ndarray
    s: np.ndarray
    w: np.ndarray
    B: np.ndarray
    x0: np.ndarray
    Sigma: np.ndarray
    Sigma_b: np.ndarray | None
    lin: np.ndarray
    impact: np.ndarray
    carry: np.ndarray
    leverage: np.ndarray
    tiers: tuple[tuple[np.ndarray, np.ndarray], ...]
    caps: np.ndarray
    trade_limits: np.ndarray
    stress_r: np.ndarray


def ref_data(inst: Instance) -> RefData:
    """DESIGN.md's inputs computed from the book, market, risk model and settings."""
    book, market, risk, st = inst.book, inst.market, inst.risk, inst.settings
    cs, cc = st.constraints, st.costs
    syms = book.asset_symbols
    idx = {a: i for i, a in enumerate(syms)}
    N, M = len(syms), len(book.contracts)
    rows = [risk.symbols.index(a) for a in syms]
    F = risk.loadings[rows]
    Sigma = F @ F.T + np.diag(risk.idio[rows])
    V = base_value(book, market)
    spot = _spot_values(book, market)
    pledged_value = np.array([book.pledged.get(a, 0.0) for a in syms]) * spot
    collateral = book.cash + _upnl(book, market) + float(pledged_value.sum())
    B = np.zeros((N, M))
    for j, c in enumerate(book.contracts):
        B[idx[c.underlying], j] = 1.0
    x0 = np.zeros(M)
    for j, c in enumerate(book.contracts):
        pos = book.futures.get(c.symbol)
        if pos is not None:
            # x0 is the USD exposure dValue/dlog(price): linear q size mark; inverse q size x
            # mark / entry (its USD PnL is q size (mark/entry - 1)), not the face q size
            m = market.mark[c.symbol]
            x0[j] = pos.contracts * _npc(c, m) * (m / pos.entry_price
                                                   if c.settlement == Settlement.INVERSE else 1.0)
    daily_sigma = np.sqrt(np.diag(Sigma) / DAYS)
    lin = np.zeros(M)
    impact = np.zeros(M)
    carry = np.zeros(M)
    for j, c in enumerate(book.contracts):
        i = idx[c.underlying]
        lin[j] = c.taker_fee + market.half_spread.get(c.symbol, 1e-4)
        adv = market.adv.get(c.symbol, math.inf)
        impact[j] = 0.0 if math.isinf(adv) else cc.impact_k * daily_sigma[i] / math.sqrt(adv)
        if c.kind == ContractKind.PERPETUAL:
            settlements = cc.horizon_days * 24.0 / c.funding_interval_h
            carry[j] = market.funding.get(c.symbol, 0.0) * settlements
        else:
            assert c.expiry is not None
            basis = market.mark[c.symbol] / market.spot[c.underlying] - 1.0
            days_left = (pd.Timestamp(c.expiry) - market.time).total_seconds() / 86400.0
            carry[j] = basis * cc.horizon_days / max(days_left, cc.horizon_days)
    tiers = tuple((c.tiers.mmr, c.tiers.cum) for c in book.contracts)
    caps = np.full(M, math.inf)
    spot_held = (np.array([book.targets.get(a, 0.0) for a in syms]) > 0) | (spot > 0)
    vol = np.sqrt(np.diag(Sigma))
    corr = Sigma / np.outer(vol, vol)
    for j, c in enumerate(book.contracts):
        cands = []
        if c.symbol in cs.caps_usd:
            cands.append(cs.caps_usd[c.symbol])
        elif cs.default_cap_usd is not None:
            cands.append(cs.default_cap_usd)
        if cs.margin:
            # the exchange's tier limit at the chosen leverage
            allowed = [b.max_notional for b in c.tiers.brackets if b.max_leverage >= c.leverage]
            lim = max(allowed) if allowed else 0.0
            if lim < 1e11:
                cands.append(lim)
        if cs.rho_min is not None:
            i = idx[c.underlying]
            if not spot_held[i]:
                best = max((corr[i, k] for k in range(N) if spot_held[k]), default=-1.0)
                if best < cs.rho_min:
                    cands.append(0.0)
        if cands:
            caps[j] = min(cands)
    tl = np.full(M, math.inf)
    for j, c in enumerate(book.contracts):
        if cs.trade_limit_adv is not None:
            tl[j] = min(tl[j], cs.trade_limit_adv * market.adv.get(c.symbol, math.inf))
        if cs.trade_limit_usd is not None:
            tl[j] = min(tl[j], cs.trade_limit_usd)
    stress_r = np.array([[sc.returns.get(a, sc.common) for a in syms] for sc in cs.stress],
                        dtype=float).reshape(len(cs.stress), N)
    Sigma_b = None
    if st.basis_risk and risk.basis_cov is not None:
        Sigma_b = np.asarray(risk.basis_cov, dtype=float)
    w = np.array([book.targets.get(a, 0.0) for a in syms], dtype=float)
    return RefData(V=V, collateral=collateral, pledged_value=pledged_value, s=spot / V, w=w, B=B,
                   x0=x0, Sigma=Sigma, Sigma_b=Sigma_b, lin=lin, impact=impact, carry=carry,
                   leverage=np.array([c.leverage for c in book.contracts]), tiers=tiers, caps=caps,
                   trade_limits=tl, stress_r=stress_r)


# ------------------------------------------------------------------------------------------------
# The reference formulation (plain cvxpy, no Parameters)
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RefResult:
    """Reference status, positions x (USD) (None unless solved) and the binding constraint kinds."""

    status: str
    x: np.ndarray | None
    objective: float
    binding: frozenset[str] = frozenset()


def reference_problem(inst: Instance, r: RefData | None = None
                      ) -> tuple[cp.Problem, cp.Variable, list[str]]:
    """DESIGN.md's problem in weight units z = x / V, written directly with constants.

    Returns the problem, the variable z and a kind label per constraint (for coverage statistics).
    """
    r = r or ref_data(inst)
    st = inst.settings
    cs, cc = st.constraints, st.costs
    V = r.V
    M = r.B.shape[1]
    z = cp.Variable(M, name="z_ref")
    z0 = r.x0 / V
    e = r.s + r.B @ z
    L = np.linalg.cholesky(r.Sigma)
    te2 = cp.sum_squares(L.T @ (e - r.w))
    if r.Sigma_b is not None:
        Lb = np.linalg.cholesky(r.Sigma_b)
        te2 = te2 + cp.sum_squares(Lb.T @ z)
    obj: cp.Expression = te2
    t = z - z0  # trade in weights (t_usd / V)
    if cc.trading:
        obj = obj + cc.gamma_trade * (r.lin @ cp.abs(t))
    if cc.impact:
        # k sigma |t|^{3/2} / (V sqrt(ADV)) with t = V * (z - z0)
        obj = obj + cc.gamma_trade * ((r.impact * math.sqrt(V)) @ cp.power(cp.abs(t), 1.5))
    if cc.carry:
        obj = obj + cc.gamma_fund * (r.carry @ z)
    cons: list[cp.Constraint] = []
    kinds: list[str] = []
    if cs.margin:
        kinds.append("margin")
        cons.append((1.0 / r.leverage) @ cp.abs(z) <= (r.collateral - cs.margin_buffer_usd) / V)
    for k in range(r.stress_r.shape[0]):
        rr = r.stress_r[k]
        g = r.B.T @ rr
        coll = r.collateral + float(r.pledged_value @ rr)
        mm_terms = []
        for j, (mmr, cum) in enumerate(r.tiers):
            n = (1.0 + g[j]) * cp.abs(z[j])  # notional after the shock / V
            mm_terms.append(cp.maximum(*[mmr[b] * n - cum[b] / V for b in range(len(mmr))])
                            if len(mmr) > 1 else mmr[0] * n - cum[0] / V)
        cons.append(coll / V + g @ z - cp.sum(cp.hstack(mm_terms)) >= 0)
        kinds.append("stress")
    if cs.max_gross_leverage is not None:
        cons.append(cp.sum(cp.abs(e)) <= cs.max_gross_leverage)
        kinds.append("gross_leverage")
    capped = np.flatnonzero(np.isfinite(r.caps))
    if capped.size:
        cons.append(cp.abs(z[capped]) <= r.caps[capped] / V)
        kinds.append("cap")
    idx = {a: i for i, a in enumerate(inst.book.asset_symbols)}
    for cl in cs.clusters:
        mem = [idx[a] for a in cl.assets]
        cons.append(cp.abs(cp.sum((e - r.w)[mem])) <= cl.band)
        kinds.append("cluster_band")
    if cs.vol_cap is not None:
        cons.append(cp.norm(L.T @ e, 2) <= cs.vol_cap)
        kinds.append("vol_cap")
    if cs.funding_budget_usd is not None:
        cons.append(r.carry @ z <= cs.funding_budget_usd / V)
        kinds.append("funding_budget")
    limited = np.flatnonzero(np.isfinite(r.trade_limits))
    if limited.size:
        cons.append(cp.abs(t[limited]) <= r.trade_limits[limited] / V)
        kinds.append("trade_limit")
    return cp.Problem(cp.Minimize(1e3 * obj), cons), z, kinds


def is_conic(inst: Instance) -> bool:
    """True when the 3/2-power impact or the vol cap is on."""
    return inst.settings.costs.impact or inst.settings.constraints.vol_cap is not None


def solve_clarabel(prob: cp.Problem, **first: float | int | bool) -> None:
    """``prob.solve`` by Clarabel at ``first``'s settings, then at each of :data:`CLARABEL_RETRIES`
    after a ``SolverError`` (the last one's is raised); the caller reads ``prob.status``."""
    for k, options in enumerate((first, *CLARABEL_RETRIES)):
        try:
            prob.solve(solver=cp.CLARABEL, **options)
            return
        except cp.SolverError:
            if k == len(CLARABEL_RETRIES):
                raise


def solve_reference(inst: Instance, solver: str = cp.CLARABEL,
                    **opts: float | int) -> RefResult:
    """Solve the reference problem; status is cvxpy's."""
    r = ref_data(inst)
    prob, z, kinds = reference_problem(inst, r)
    try:
        with warnings.catch_warnings():
            # cvxpy's bound propagation computes 0 * inf for B @ z with structural zeros (harmless)
            warnings.filterwarnings("ignore", message="invalid value encountered in matmul",
                                    category=RuntimeWarning)
            # "solution may be inaccurate": the status says so and the callers check it
            warnings.filterwarnings("ignore", message="Solution may be inaccurate",
                                    category=UserWarning)
            if solver == cp.CLARABEL and not opts:
                solve_clarabel(prob, **(CLARABEL_TIGHT_CONIC if is_conic(inst) else CLARABEL_TIGHT))
            else:
                prob.solve(solver=solver, **opts)
    except cp.SolverError:
        return RefResult("solver_error", None, math.nan)
    if prob.status in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) and z.value is not None:
        binding = frozenset(k for k, c in zip(kinds, prob.constraints, strict=True)
                            if c.dual_value is not None
                            and float(np.max(np.abs(np.atleast_1d(c.dual_value)))) > 1e-7)
        return RefResult(prob.status, np.asarray(z.value) * r.V, float(prob.value) / 1e3, binding)
    return RefResult(prob.status, None, math.nan)


# ------------------------------------------------------------------------------------------------
# Independent numpy re-checks of every enabled constraint (USD, or weights for weight limits)
# ------------------------------------------------------------------------------------------------


def maintenance(mmr: np.ndarray, cum: np.ndarray, n: float) -> float:
    """MM(n) = max_k (mmr_k n - cum_k), n >= 0 (USD)."""
    return float(np.max(mmr * n - cum))


def violations(inst: Instance, x: np.ndarray) -> dict[str, float]:
    """Amount by which positions ``x`` (USD) break each enabled constraint, in USD (0 = satisfied).

    Weight-unit limits (leverage, bands, vol) are converted to USD by multiplying by V.
    """
    r = ref_data(inst)
    cs = inst.settings.constraints
    V = r.V
    out: dict[str, float] = {}
    e = r.s + r.B @ x / V
    if cs.margin:
        im = float(np.sum(np.abs(x) / r.leverage))
        out["margin"] = max(im - (r.collateral - cs.margin_buffer_usd), 0.0)
    for k, sc in enumerate(cs.stress):
        rr = r.stress_r[k]
        g = r.B.T @ rr
        coll = r.collateral + float(r.pledged_value @ rr)
        mm = sum(maintenance(mmr, cum, abs(x[j]) * (1 + g[j])) for j, (mmr, cum) in enumerate(r.tiers))
        out[f"stress[{sc.name}]"] = max(-(coll + float(g @ x) - mm), 0.0)
    if cs.max_gross_leverage is not None:
        out["gross_leverage"] = max(float(np.abs(e).sum()) - cs.max_gross_leverage, 0.0) * V
    for j, c in enumerate(inst.book.contracts):
        if np.isfinite(r.caps[j]):
            out[f"cap[{c.symbol}]"] = max(abs(x[j]) - r.caps[j], 0.0)
        if np.isfinite(r.trade_limits[j]):
            out[f"trade_limit[{c.symbol}]"] = max(abs(x[j] - r.x0[j]) - r.trade_limits[j], 0.0)
    idx = {a: i for i, a in enumerate(inst.book.asset_symbols)}
    for cl in cs.clusters:
        dev = float(sum(e[idx[a]] - r.w[idx[a]] for a in cl.assets))
        out[f"cluster_band[{cl.name}]"] = max(abs(dev) - cl.band, 0.0) * V
    if cs.vol_cap is not None:
        vol = math.sqrt(max(float(e @ r.Sigma @ e), 0.0))
        out["vol_cap"] = max(vol - cs.vol_cap, 0.0) * V
    if cs.funding_budget_usd is not None:
        out["funding_budget"] = max(float(r.carry @ x) - cs.funding_budget_usd, 0.0)
    return out


def objective(inst: Instance, x: np.ndarray) -> float:
    """DESIGN.md's objective at positions ``x`` (USD), in weight units."""
    r = ref_data(inst)
    cc = inst.settings.costs
    z, t = x / r.V, (x - r.x0) / r.V
    dev = r.s + r.B @ z - r.w
    val = float(dev @ r.Sigma @ dev)
    if r.Sigma_b is not None:
        val += float(z @ r.Sigma_b @ z)
    if cc.trading:
        val += cc.gamma_trade * float(r.lin @ np.abs(t))
    if cc.impact:
        val += cc.gamma_trade * float((r.impact * math.sqrt(r.V)) @ np.abs(t) ** 1.5)
    if cc.carry:
        val += cc.gamma_fund * float(r.carry @ z)
    return val

