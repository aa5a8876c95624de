"""A rebalance due for safety (``executor.repair``): positions that break a hard margin row make a
plan that mends it due in ``fbr status`` and let it through the daily loop's cost gate, even when
it raises tracking error; a breach no larger than the repair's trading cost does not.

The book (``exec_helpers.three_asset_book``): 0.1 BTC, 1 ETH, 10 SOL against 50/30/20, one linear
perp each (taker fee 5 bp, flat maintenance 0.5 %, leverage 50: initial margin 39.60 USD), no
half spread. At BTC 70,000 / ETH 3,000 / SOL 200 the naive hedge is -0.014 / +0.2 / +2 contracts
(-980 / +600 / +400 USD), which the book already holds (entries at the marks: no uPnL), on 50 USD
of cash. The scenario "sol alone -60%" moves SOL only: the long 400 USD of SOL-PERP loses 240 USD
and its maintenance falls to 0.005 x 160, so the surplus is, by hand,

    50 - 240 - 0.005 x (980 + 600 + 160) = -198.70 USD,

a breach of 198.70 USD that a repair costing cents mends.
"""

from __future__ import annotations

import dataclasses

import pytest
from exec_helpers import market, risk_model, three_asset_book

from executor.paper import PaperGateway
from executor.plan import PlanOptions, book_instruments
from executor.repair import Repair
from executor.status import account_status, due
from models.book import Book, FuturesPosition
from models.instruments import FuturesContract, MarginTiers
from models.market import MarketSnapshot
from optimizer.checks import hard_row_gaps
from optimizer.prepare import prepare
from optimizer.settings import OptimizerSettings, StressScenario

PRICES = {"BTC": 70_000.0, "ETH": 3_000.0, "SOL": 200.0}
HEDGE = {"BTC-PERP": -0.014, "ETH-PERP": 0.2, "SOL-PERP": 2.0}
SOL_ALONE = StressScenario("sol alone -60%", {"SOL": -0.6})


def _contracts() -> dict[str, FuturesContract]:
    return {f"{a}-PERP": FuturesContract(f"{a}-PERP", a, tiers=MarginTiers.flat(50.0, 0.005),
                                         leverage=50.0)
            for a in ("BTC", "ETH", "SOL")}


def _book(cash: float = 50.0) -> Book:
    futures = {s: FuturesPosition(q, PRICES[s.split("-")[0]]) for s, q in HEDGE.items()}
    book: Book = three_asset_book(_contracts(), futures=futures, cash=cash)
    return book


def _market() -> MarketSnapshot:
    m: MarketSnapshot = market(PRICES)  # at 2024-06-01 00:00 UTC
    return m


def _settings(*stress: StressScenario) -> OptimizerSettings:
    base = OptimizerSettings()
    return dataclasses.replace(base, constraints=dataclasses.replace(base.constraints, stress=stress))


def test_hard_row_gaps_by_hand() -> None:
    book, m = _book(), _market()
    d = prepare(book, m, risk_model(), _settings(SOL_ALONE))
    gaps = hard_row_gaps(d, d.z0 * d.V)
    assert gaps["stress[sol alone -60%]"] == pytest.approx(198.70, abs=1e-6)
    # maintenance now: 0.005 x (980 + 600 + 400) = 9.90 USD against 50 USD of collateral; initial
    # margin 1,980 / 50 = 39.60 USD against the same 50 (no buffer)
    assert gaps["maintenance"] == pytest.approx(9.90 - 50.0, abs=1e-6)
    assert gaps["margin"] == pytest.approx(39.60 - 50.0, abs=1e-6)


def test_status_calls_a_plan_that_mends_a_broken_stress_row_due() -> None:
    book, m = _book(), _market()
    settings = _settings(SOL_ALONE)
    rep = account_status(PaperGateway(book, m), book, m, risk_model(), settings,
                         PlanOptions(venue="paper"), book_instruments(book), None)
    # the book sits on the naive hedge: mending the row raises TE, so the TE rule alone says no
    assert rep.plan.legs and rep.benefit <= rep.cost
    assert rep.rebalance_due
    assert rep.repairs == ("stress[sol alone -60%] broken by 198.70 USD",)
    from rich.console import Console

    from fbr.execute_render import due_text  # fbr status's line says why, as printed

    console = Console(record=True, width=400)
    console.print(due_text(rep))
    assert console.export_text().strip().endswith(
        "; due to repair: stress[sol alone -60%] broken by 198.70 USD, which the plan mends")
    # the plan's positions keep the row (the optimiser's own, before the fills' fees)
    held = book.with_futures(rep.plan.reachable, m)
    d = prepare(held, m, risk_model(), settings)
    assert hard_row_gaps(d, d.z0 * d.V)["stress[sol alone -60%]"] <= 1e-6 * d.V
    assert rep.trading_cost_usd < 1.0  # cents of fees mend 198.70 USD of shortfall


def test_status_without_the_scenario_is_not_due() -> None:
    book, m = _book(), _market()
    rep = account_status(PaperGateway(book, m), book, m, risk_model(), _settings(),
                         PlanOptions(venue="paper"), book_instruments(book), None)
    assert not rep.rebalance_due and rep.repairs == ()


@pytest.mark.parametrize(("now", "after", "cost", "is_due"),
                         [(10.0, 0.0, 12.0, False), (10.0, 0.0, 8.0, True),
                          (10.0, 3.0, 8.0, False), (10.0, 10.0, 0.0, False)])
def test_a_repair_is_due_when_it_mends_more_than_it_costs(now: float, after: float, cost: float,
                                                           is_due: bool) -> None:
    """S(now) - S(after) > C (USD): 10 - 0 > 8 is due, 10 - 0 > 12 is not, nor a plan that mends
    7 of 10 for 8, nor one that mends nothing."""
    from exec_helpers import solution_with

    from executor.plan import plan_orders

    book = three_asset_book()
    sol = dataclasses.replace(solution_with({"BTC-PERP": -1000.0}), tracking_error_before=0.02,
                              tracking_error_after=0.03, base=10_000.0)
    plan = plan_orders(sol, book, market(), book_instruments(book), PlanOptions(venue="paper"))
    repair = Repair(("stress[x] broken by 10.00 USD",), now, after, cost)
    test = due(sol, plan, 1.0, repair)
    assert test.benefit < 0 and test.due == is_due
    assert test.repairs == (("stress[x] broken by 10.00 USD",) if is_due else ())



def test_a_broken_row_stays_due_when_the_plan_is_above_a_safety_limit() -> None:
    """A plan above a per-order limit is not sent but still judged: the book breaks its row by
    198.70 USD and the solution mends it, so status stays due and names the row."""
    from executor.safety import Limits

    book, m = _book(), _market()
    capped = account_status(PaperGateway(book, m), book, m, risk_model(), _settings(SOL_ALONE),
                            PlanOptions(venue="paper", limits=Limits(max_order_usd=1.0)),
                            book_instruments(book), None)
    assert capped.alerts and not capped.plan.legs
    assert capped.rebalance_due
    assert capped.repairs == ("stress[sol alone -60%] broken by 198.70 USD",)


def test_the_rows_of_an_inverse_position_are_on_its_face() -> None:
    """BTC-PERP inverse (100 USD a contract, flat mmr 0.5%), long 10 contracts entered at 50,000,
    mark 70,000, cash -394: face 1,000 USD, uPnL 1,000 x (70,000 / 50,000 - 1) = 400, margin
    balance 6.00; maintenance on the face 5.00 < 6.00 (the exchange keeps it, as fbr status's
    margin view says); its initial margin 1,000 / 50 = 20.00 breaks the margin row by 14.00. The
    repair named "maintenance broken by 1.00 USD" and the margin row by 22.00 from the exposure
    (1,400 USD: MM 7.00, IM 28.00)."""
    from exec_helpers import market, three_asset_book

    from executor.repair import repair_of
    from executor.status import margin_view
    from models.instruments import Settlement

    btc = FuturesContract("BTC-PERP", "BTC", settlement=Settlement.INVERSE, contract_size=100.0,
                          tiers=MarginTiers.flat(50.0, 0.005), leverage=50.0)
    book: Book = three_asset_book({"BTC-PERP": btc},
                                  futures={"BTC-PERP": FuturesPosition(10.0, 50_000.0)}, cash=-394.0)
    m: MarketSnapshot = market(PRICES)
    assert book.collateral(m) == pytest.approx(6.0)
    assert margin_view(book, m).maintenance == pytest.approx(5.0)
    d = prepare(book, m, risk_model(), OptimizerSettings())
    q = dict(zip(book.contract_symbols, map(float, book.contracts_vector()), strict=True))
    gaps = hard_row_gaps(d, d.held_notional())
    assert gaps["maintenance"] == pytest.approx(5.0 - 6.0)
    assert repair_of(d, book, m, q, q, 0.0).broken == ("margin broken by 14.00 USD",)
