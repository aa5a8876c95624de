"""Errors and answers that are not a plain optimum: unbounded books, too little collateral,
infeasible constraint sets, solver fallback, and bad input (models.errors.ValidationError)."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from models.book import Book
from models.errors import FbrError, ValidationError
from models.instruments import FuturesContract, MarginTiers, SpotAsset, TierBracket
from models.market import MarketSnapshot
from models.risk import RiskModel
from optimizer import engines
from optimizer.elastic import ElasticProblem
from optimizer.engines import FAILED, OPTIMAL_INACCURATE, RawResult
from optimizer.prepare import prepare
from optimizer.problem import HedgeProblem, SolverFailedError, UnboundedBookError
from optimizer.rebalance import InsufficientCollateralError, Rebalancer
from optimizer.settings import (
    ClusterBand,
    ConstraintSettings,
    CostSettings,
    OptimizerSettings,
    SolverName,
    StressScenario,
)

T0 = pd.Timestamp("2025-01-01T00:00:00Z")
SYMS = ("BTC", "ETH", "SOL")
PRICES = {"BTC": 60000.0, "ETH": 2500.0, "SOL": 150.0}


def _risk(symbols: tuple[str, ...] = SYMS) -> RiskModel:
    vols = np.array([0.55, 0.70, 0.95])[: len(symbols)]
    corr = np.full((len(symbols),) * 2, 0.7) + 0.3 * np.eye(len(symbols))
    return RiskModel.from_covariance(list(symbols), corr * np.outer(vols, vols))


def _seed_book(contracts: tuple[FuturesContract, ...], cash: float = 3000.0) -> Book:
    return Book(assets=tuple(SpotAsset(s) for s in SYMS), contracts=contracts,
                spot={"BTC": 0.1, "ETH": 1.0, "SOL": 10.0},
                targets={"BTC": 0.5, "ETH": 0.3, "SOL": 0.2}, cash=cash)


def _perps(*syms: str, **kw: float) -> tuple[FuturesContract, ...]:
    return tuple(FuturesContract(f"{s}-PERP", s, **kw) for s in syms)  # type: ignore[arg-type]


def _market(contracts: tuple[FuturesContract, ...], funding: dict[str, float] | None = None,
            **kw: object) -> MarketSnapshot:
    return MarketSnapshot(time=T0, spot=dict(PRICES),
                          mark={c.symbol: PRICES[c.underlying] for c in contracts},
                          funding=funding or {}, **kw)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Unbounded books
# ---------------------------------------------------------------------------------------------

def _carry_pair() -> tuple[Book, MarketSnapshot]:
    contracts = (FuturesContract("BTC-A", "BTC"), FuturesContract("BTC-B", "BTC"),
                 *_perps("ETH", "SOL"))
    market = _market(contracts, funding={"BTC-A": 3e-4, "BTC-B": -3e-4})
    return _seed_book(contracts), market


CARRY_ON = CostSettings(trading=True, carry=True)


def test_unbounded_carry_pair_is_refused_naming_both_contracts() -> None:
    book, market = _carry_pair()
    settings = OptimizerSettings(costs=CARRY_ON, constraints=ConstraintSettings(margin=False),
                                 basis_risk=False)
    with pytest.raises(UnboundedBookError) as exc:
        Rebalancer().solve(book, market, _risk(), settings)
    msg = str(exc.value)
    assert "BTC-A" in msg and "BTC-B" in msg
    assert "Fix" in msg


def test_same_carry_pair_with_margin_on_solves() -> None:
    book, market = _carry_pair()
    settings = OptimizerSettings(costs=CARRY_ON, constraints=ConstraintSettings(margin=True),
                                 basis_risk=False)
    sol = Rebalancer().solve(book, market, _risk(), settings)
    assert sol.status == "optimal"
    # the margin constraint is what bounds the pair: it binds, and holds
    im = sum(abs(p.notional) / 10.0 for p in sol.target_positions)
    assert im <= book.cash * (1 + 1e-6)
    assert im == pytest.approx(book.cash, rel=1e-2)  # binds (up to lot rounding: 60 USD lots)
    pos = {p.symbol: p.notional for p in sol.target_positions}
    assert pos["BTC-A"] < 0 < pos["BTC-B"]  # short the one longs pay on, long the one shorts pay on


def test_cap_on_one_leg_bounds_the_pair() -> None:
    book, market = _carry_pair()
    settings = OptimizerSettings(
        costs=CARRY_ON, constraints=ConstraintSettings(margin=False, caps_usd={"BTC-A": 2000.0}),
        basis_risk=False)
    # capping one leg bounds it; the other leg alone carries exposure, so it is bounded by TE
    sol = Rebalancer().solve(book, market, _risk(), settings)
    assert sol.status == "optimal"
    assert abs(sol.target_positions[0].notional) <= 2000.0 * (1 + 1e-6)


def test_riskless_single_contract_is_refused() -> None:
    """A contract on a zero-variance asset with funding: riskless carry without limit."""
    contracts = _perps(*SYMS)
    market = _market(contracts, funding={"SOL-PERP": 1e-3})
    risk = RiskModel.from_covariance(list(SYMS), np.diag([0.3, 0.5, 0.0]))
    settings = OptimizerSettings(costs=CARRY_ON, constraints=ConstraintSettings(margin=False),
                                 basis_risk=False)
    with pytest.raises(UnboundedBookError):
        Rebalancer().solve(_seed_book(contracts), market, risk, settings)


def test_stress_scenarios_bound_the_carry_pair() -> None:
    book, market = _carry_pair()
    settings = OptimizerSettings(
        costs=CARRY_ON,
        constraints=ConstraintSettings(margin=False, stress=(StressScenario("crash", {}, -0.3),
                                                             StressScenario("pump", {}, 0.3))),
        basis_risk=False)
    sol = Rebalancer().solve(book, market, _risk(), settings)
    assert sol.status == "optimal"
    assert all(s.surplus >= -1e-6 * sol.base for s in sol.margin.stress)


# ---------------------------------------------------------------------------------------------
# Collateral
# ---------------------------------------------------------------------------------------------

def test_too_little_collateral_names_collateral_and_the_fix() -> None:
    contracts = _perps(*SYMS)  # default min notional 5 USD at 10x: 0.50 USD of IM at least
    book = _seed_book(contracts, cash=0.1)
    with pytest.raises(InsufficientCollateralError) as exc:
        Rebalancer().solve(book, _market(contracts), _risk(), OptimizerSettings())
    msg = str(exc.value)
    assert "collateral" in msg
    assert "0.10" in msg  # the collateral it has
    assert "Fix" in msg and "cash" in msg


def test_buffer_above_collateral_is_refused() -> None:
    contracts = _perps(*SYMS)
    settings = OptimizerSettings(constraints=ConstraintSettings(margin_buffer_usd=5000.0))
    with pytest.raises(InsufficientCollateralError, match="margin_buffer_usd"):
        Rebalancer().solve(_seed_book(contracts), _market(contracts), _risk(), settings)


def test_collateral_check_is_skipped_when_margin_is_off() -> None:
    contracts = _perps(*SYMS)
    book = _seed_book(contracts, cash=0.0)
    settings = OptimizerSettings(constraints=ConstraintSettings(margin=False), round_lots=False)
    sol = Rebalancer().solve(book, _market(contracts), _risk(), settings)
    assert sol.status == "optimal"


def test_tiers_with_maintenance_above_initial_are_refused() -> None:
    """mmr > 1 / max_leverage would let a book pass initial margin yet sit below maintenance;
    no exchange bracket is like that, so it is refused (then IM implies MM, see MarginTiers)."""
    with pytest.raises(ValidationError, match=r"tiers\[0\]\.mmr"):
        MarginTiers((TierBracket(0.0, 1e12, 10.0, 0.2, 0.0),))  # MM 20%, IM 10% at 10x


def test_margin_switch_keeps_maintenance_below_collateral() -> None:
    tiers = MarginTiers((TierBracket(0.0, 1e12, 10.0, 0.1, 0.0),))  # the extreme allowed: MM = IM
    contracts = tuple(FuturesContract(f"{s}-PERP", s, tiers=tiers, leverage=10.0, lot_step=1e-8,
                                      min_notional=0.0) for s in SYMS)
    book = _seed_book(contracts, cash=150.0)
    settings = OptimizerSettings(costs=CostSettings(trading=False, carry=False), basis_risk=False)
    sol = Rebalancer().solve(book, _market(contracts), _risk(), settings)
    assert sol.status == "optimal"
    assert sol.margin.initial <= sol.margin.collateral * (1 + 1e-6)
    assert sol.margin.maintenance <= sol.margin.collateral * (1 + 1e-6)


# ---------------------------------------------------------------------------------------------
# Infeasible constraint sets
# ---------------------------------------------------------------------------------------------

def test_trade_limit_against_cluster_band_is_infeasible_and_named() -> None:
    contracts = _perps(*SYMS, lot_step=1e-8, min_notional=0.0)
    settings = OptimizerSettings(constraints=ConstraintSettings(
        trade_limit_usd=10.0, clusters=(ClusterBand("btc", ("BTC",), 0.001),)))
    sol = Rebalancer().solve(_seed_book(contracts), _market(contracts), _risk(), settings)
    assert sol.status == "infeasible"
    names = {c.name for c in sol.conflicts}
    assert names == {"trade_limit", "cluster_band"}
    assert all(c.violation > 0 for c in sol.conflicts)
    assert any("conflict" in m and "trade_limit" in m for m in sol.messages)
    # the closest book is somewhere between: BTC moved by more than the limit but not all the way
    btc = sol.target_positions[0].notional
    assert -1000.0 - 1e-6 <= btc <= -10.0


def test_gross_leverage_below_the_unhedgeable_spot_is_infeasible_and_named() -> None:
    contracts = _perps("BTC", "ETH", lot_step=1e-8, min_notional=0.0)  # SOL (15%) has no contract
    settings = OptimizerSettings(constraints=ConstraintSettings(max_gross_leverage=0.1))
    sol = Rebalancer().solve(_seed_book(contracts), _market(contracts), _risk(), settings)
    assert sol.status == "infeasible"
    assert [c.name for c in sol.conflicts] == ["gross_leverage"]
    assert sol.conflicts[0].violation == pytest.approx(0.05, abs=1e-6)  # 0.15 - 0.1, in x
    assert sol.gross_leverage == pytest.approx(0.15, abs=1e-6)


class _BrokenEngine:
    """An engine whose solve raises (an engine crash), or returns ``status`` with no solution (a
    numerical failure) when given one; records the solver names asked for in ``calls``."""

    def __init__(self, name: str, calls: list[str], status: str | None = None) -> None:
        self.name, self.calls, self.status = name, calls, status

    def solve(self) -> RawResult:
        self.calls.append(self.name)
        if self.status is None:
            raise RuntimeError(f"{self.name} broke on purpose")
        return RawResult(None, self.status, self.name, 0.0, 0, math.nan)


def _elastic_engines(monkeypatch: pytest.MonkeyPatch, broken: dict[SolverName, str | None]
                     ) -> list[str]:
    """The elastic re-solve's engines for the solvers in ``broken`` replaced by
    :class:`_BrokenEngine` (a crash for None, else that status); the others stay real."""
    calls: list[str] = []
    real = ElasticProblem.engine

    def engine(self: ElasticProblem, solver: SolverName) -> object:
        if solver in broken:
            return _BrokenEngine(solver.value, calls, broken[solver])
        calls.append(solver.value)
        return real(self, solver)

    monkeypatch.setattr(ElasticProblem, "engine", engine)
    return calls


#: the seed book with a funding budget no book meets (no carry at all): infeasible, one conflict
def _infeasible_budget() -> tuple[Book, MarketSnapshot, OptimizerSettings]:
    contracts = _perps(*SYMS, lot_step=1e-8, min_notional=0.0)
    settings = OptimizerSettings(constraints=ConstraintSettings(funding_budget_usd=-5.0))
    return _seed_book(contracts), _market(contracts), settings


@pytest.mark.solver_fallback
def test_a_failed_elastic_resolve_is_said_not_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both solvers of the least-violation re-solve raise: the answer is still infeasible, names no
    conflict it did not find, keeps today's book, and says which solvers failed and why."""
    book, market, settings = _infeasible_budget()
    calls = _elastic_engines(monkeypatch, {SolverName.CLARABEL: None, SolverName.SCS: None})
    sol = Rebalancer().solve(book, market, _risk(), settings)
    assert calls == ["CLARABEL", "SCS"]
    assert sol.status == "infeasible" and sol.conflicts == () and not sol.orderable
    failed = [m for m in sol.messages if "least-violation re-solve failed" in m]
    assert len(failed) == 1
    assert "CLARABEL (error: RuntimeError: CLARABEL broke on purpose)" in failed[0]
    assert all(p.notional == pytest.approx(0.0, abs=1e-9) for p in sol.target_positions)


def test_a_failed_elastic_resolve_fails_a_strict_test_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """In strict mode (the test suite's default) the elastic re-solve's crash is re-raised."""
    book, market, settings = _infeasible_budget()
    _elastic_engines(monkeypatch, {SolverName.CLARABEL: None})
    with pytest.raises(RuntimeError, match="CLARABEL broke on purpose"):
        Rebalancer().solve(book, market, _risk(), settings)


def test_a_numerical_failure_of_the_elastic_resolve_passes_to_scs(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Clarabel stalls on the elastic problem (a status, not a crash: no exception even in strict
    mode): SCS answers, in both stages (the least violation, then the closest book), the conflict
    is named as when Clarabel serves, and the record says so."""
    book, market, settings = _infeasible_budget()
    calls = _elastic_engines(monkeypatch, {SolverName.CLARABEL: FAILED})
    sol = Rebalancer().solve(book, market, _risk(), settings)
    assert calls == ["CLARABEL", "SCS", "CLARABEL", "SCS"]
    assert sol.status == "infeasible"
    assert [c.name for c in sol.conflicts] == ["funding_budget"]
    assert sol.conflicts[0].violation == pytest.approx(5.0, rel=1e-3)


def test_negative_funding_budget_with_no_carry_is_infeasible() -> None:
    contracts = _perps(*SYMS, lot_step=1e-8, min_notional=0.0)
    settings = OptimizerSettings(constraints=ConstraintSettings(funding_budget_usd=-5.0))
    sol = Rebalancer().solve(_seed_book(contracts), _market(contracts), _risk(), settings)
    assert sol.status == "infeasible"
    assert [c.name for c in sol.conflicts] == ["funding_budget"]
    assert sol.conflicts[0].violation == pytest.approx(5.0, rel=1e-4)


# ---------------------------------------------------------------------------------------------
# Solver fallback
# ---------------------------------------------------------------------------------------------

def _failing_solve(self: object) -> RawResult:
    return RawResult(None, FAILED, "PIQP", 0.0, 0, math.nan)


def test_fallback_when_the_first_solver_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engines.PiqpEngine, "solve", _failing_solve)
    contracts = _perps(*SYMS, lot_step=1e-8, min_notional=0.0)
    sol = Rebalancer().solve(_seed_book(contracts), _market(contracts), _risk(), OptimizerSettings())
    assert sol.status == "optimal"
    assert sol.solver == "CLARABEL"
    assert sol.solvers_tried == (("PIQP", FAILED), ("CLARABEL", "optimal"))
    assert sol.fallbacks == 1
    assert any("fallback" in m and "PIQP" in m and "CLARABEL" in m for m in sol.messages)
    d = sol.to_dict()
    assert d["solver"] == "CLARABEL" and d["fallbacks"] == 1
    assert d["solvers_tried"][0] == {"solver": "PIQP", "status": FAILED}


def test_fallback_from_a_crippled_scs(monkeypatch: pytest.MonkeyPatch) -> None:
    """A chain starting with SCS allowed a single iteration: SCS does not solve it, Clarabel does."""
    real = HedgeProblem.engine

    def crippled(self: HedgeProblem, solver: SolverName) -> object:
        eng = real(self, solver)
        if solver == SolverName.SCS:
            eng.options = {"max_iters": 1, "eps_abs": 1e-12, "eps_rel": 1e-12}  # type: ignore[union-attr]
        return eng

    monkeypatch.setattr(HedgeProblem, "engine", crippled)
    contracts = _perps(*SYMS, lot_step=1e-8, min_notional=0.0)
    settings = OptimizerSettings(solvers=(SolverName.SCS, SolverName.CLARABEL))
    sol = Rebalancer().solve(_seed_book(contracts), _market(contracts), _risk(), settings)
    assert sol.solver == "CLARABEL"
    assert sol.solvers_tried[0][0] == "SCS" and sol.solvers_tried[0][1] != "optimal"
    assert sol.solvers_tried[-1] == ("CLARABEL", "optimal")


def _capped_seed() -> tuple[Book, MarketSnapshot, OptimizerSettings]:
    """The seed book with BTC-PERP capped at 100 USD: the optimum sells 100 USD of BTC, not the
    1,000 USD an uncapped hedge would."""
    contracts = _perps(*SYMS, lot_step=1e-8, min_notional=0.0)
    settings = OptimizerSettings(constraints=ConstraintSettings(caps_usd={"BTC-PERP": 100.0}))
    return _seed_book(contracts), _market(contracts), settings


def test_an_inaccurate_answer_that_breaks_a_row_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """PIQP says 'optimal_inaccurate' with the uncapped hedge (BTC -1,000 USD = -0.1 of the
    10,000 base, 0.09 past the 0.01 cap): the numpy re-check refuses it and Clarabel answers;
    an inaccurate answer that keeps every row (the optimum itself) is served as before."""
    book, market, settings = _capped_seed()
    d = prepare(book, market, _risk(), settings)
    best, _, _, _ = Rebalancer().solve_z(d)
    assert best[0] == pytest.approx(-0.01, abs=1e-7)
    wrong = np.array([-0.1, 0.05, 0.05])
    for z, served in ((wrong, "CLARABEL"), (best, "PIQP")):
        monkeypatch.setattr(engines.PiqpEngine, "solve", lambda self, z=z: RawResult(
            z.copy(), OPTIMAL_INACCURATE, "PIQP", 0.0, 1, 0.0))
        sol = Rebalancer().solve(book, market, _risk(), settings)
        assert sol.solver == served and sol.target_positions[0].notional == pytest.approx(-100.0, abs=1e-3)
    assert Rebalancer().solve(book, market, _risk(), settings).solvers_tried == (
        ("PIQP", OPTIMAL_INACCURATE),)
    monkeypatch.setattr(engines.PiqpEngine, "solve", lambda self: RawResult(
        wrong.copy(), OPTIMAL_INACCURATE, "PIQP", 0.0, 1, 0.0))
    tried = Rebalancer().solve(book, market, _risk(), settings).solvers_tried
    assert tried == (("PIQP", "optimal_inaccurate, rows broken by 0.09: refused"),
                     ("CLARABEL", "optimal"))


def test_an_infeasible_book_no_solver_settles_is_called_infeasible(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Every solver of the main problem fails (an interior-point solver can stall on an infeasible
    problem without proving it): the elastic re-solve relaxes the funding budget by 5 USD, so the
    answer is 'infeasible' with the conflict named, not an error; on a feasible book the failure
    stands (test_every_solver_failing_raises_naming_them)."""
    book, market, settings = _infeasible_budget()

    def fail(self: HedgeProblem, solvers: tuple[SolverName, ...] = ()) -> object:
        raise SolverFailedError("every solver failed (CLARABEL: solver_error)")

    monkeypatch.setattr(HedgeProblem, "solve", fail)
    import optimizer.rebalance as rebalance_module
    from optimizer.elastic import elastic_resolve

    runs: list[int] = []

    def counted(d: Any) -> Any:
        runs.append(1)
        return elastic_resolve(d)

    monkeypatch.setattr(rebalance_module, "elastic_resolve", counted)
    sol = Rebalancer().solve(book, market, _risk(), settings)
    assert len(runs) == 1  # the diagnosis's elastic answer names the conflicts, not a second run
    assert sol.status == "infeasible" and not sol.orderable
    assert [c.name for c in sol.conflicts] == ["funding_budget"]
    assert sol.conflicts[0].violation == pytest.approx(5.0, rel=1e-4)
    assert sol.solvers_tried[-1] == ("elastic", "infeasible")


def test_every_solver_failing_raises_naming_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engines.PiqpEngine, "solve", _failing_solve)
    for engine in (engines.CvxpyDataEngine, engines.ClarabelEngine):
        monkeypatch.setattr(engine, "solve",
                            lambda self: RawResult(None, FAILED, self.name, 0.0, 0, math.nan))
    contracts = _perps(*SYMS)
    with pytest.raises(FbrError) as exc:
        Rebalancer().solve(_seed_book(contracts), _market(contracts), _risk(), OptimizerSettings())
    for name in ("PIQP", "CLARABEL", "SCS"):
        assert name in str(exc.value)


def test_piqp_only_on_a_conic_problem_explains_itself() -> None:
    contracts = _perps(*SYMS)
    settings = OptimizerSettings(costs=CostSettings(impact=True), solvers=(SolverName.PIQP,))
    market = _market(contracts, adv={c.symbol: 1e8 for c in contracts})
    try:
        sol = Rebalancer().solve(_seed_book(contracts), market, _risk(), settings)
    except FbrError as exc:
        assert "PIQP" in str(exc) and "conic" in str(exc).lower()
    else:
        assert sol.solver == "CLARABEL"


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------

def test_weights_summing_above_one() -> None:
    with pytest.raises(ValidationError) as exc:
        Book(assets=tuple(SpotAsset(s) for s in SYMS), contracts=_perps(*SYMS),
             spot={"BTC": 0.1}, targets={"BTC": 0.6, "ETH": 0.4, "SOL": 0.3})
    assert exc.value.field == "targets"
    assert "1.3" in str(exc.value)


@pytest.mark.parametrize("bad", [math.nan, -60000.0, 0.0, math.inf])
def test_bad_spot_price(bad: float) -> None:
    contracts = _perps(*SYMS)
    with pytest.raises(ValidationError) as exc:
        MarketSnapshot(time=T0, spot={**PRICES, "BTC": bad},
                       mark={c.symbol: PRICES[c.underlying] for c in contracts})
    assert exc.value.field == "market.spot.BTC"
    assert "market.spot.BTC" in str(exc.value)


@pytest.mark.parametrize("bad", [math.nan, -1.0])
def test_bad_mark_price(bad: float) -> None:
    with pytest.raises(ValidationError) as exc:
        MarketSnapshot(time=T0, spot=dict(PRICES), mark={"BTC-PERP": bad})
    assert exc.value.field == "market.mark.BTC-PERP"


def test_unknown_target_symbol() -> None:
    with pytest.raises(ValidationError) as exc:
        Book(assets=tuple(SpotAsset(s) for s in SYMS), contracts=_perps(*SYMS),
             spot={"BTC": 0.1}, targets={"BTC": 0.5, "DOGE": 0.2})
    assert exc.value.field == "targets.DOGE"
    assert "DOGE" in str(exc.value)


def test_missing_price_is_named_at_solve_time() -> None:
    contracts = _perps(*SYMS)
    market = MarketSnapshot(time=T0, spot={"BTC": 60000.0, "ETH": 2500.0},
                            mark={c.symbol: 1.0 for c in contracts})
    with pytest.raises(ValidationError) as exc:
        Rebalancer().solve(_seed_book(contracts), market, _risk(), OptimizerSettings())
    assert exc.value.field == "market.spot.SOL"


@pytest.mark.parametrize(("constraints", "field"), [
    (ConstraintSettings(stress=(StressScenario("wipe", {"BTC": -1.0}),)),
     "constraints.stress.wipe.returns.BTC"),
    (ConstraintSettings(stress=(StressScenario("x", {"DOGE": 0.1}),)),
     "constraints.stress.x.returns.DOGE"),
    (ConstraintSettings(clusters=(ClusterBand("memes", ("BTC", "DOGE"), 0.01),)),
     "constraints.clusters.memes.assets"),
    (ConstraintSettings(caps_usd={"DOGE-PERP": 100.0}), "constraints.caps_usd.DOGE-PERP"),
    (ConstraintSettings(margin_buffer_usd=-1.0), "constraints.margin_buffer_usd"),
])
def test_bad_settings_are_named(constraints: ConstraintSettings, field: str) -> None:
    contracts = _perps(*SYMS)
    with pytest.raises(ValidationError) as exc:
        prepare(_seed_book(contracts), _market(contracts), _risk(),
                OptimizerSettings(constraints=constraints))
    assert exc.value.field == field


def test_risk_model_without_an_asset_is_named() -> None:
    contracts = _perps(*SYMS)
    with pytest.raises(ValidationError) as exc:
        Rebalancer().solve(_seed_book(contracts), _market(contracts), _risk(("BTC", "ETH")),
                           OptimizerSettings())
    assert exc.value.field == "risk.symbols"
    assert "SOL" in str(exc.value)


def test_book_without_contracts_is_named() -> None:
    book = replace(_seed_book(_perps(*SYMS)), contracts=())
    with pytest.raises(ValidationError) as exc:
        Rebalancer().solve(book, _market(()), _risk(), OptimizerSettings())
    assert exc.value.field == "contracts"
