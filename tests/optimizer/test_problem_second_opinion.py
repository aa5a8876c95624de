"""A verdict of no solution is put to the next solver of the chain (``HedgeProblem.run_chain``).

PIQP called a feasible book infeasible: the backtest demo's book with ``max_gross_leverage =
1e29`` (a loose cap written as "no limit"; below PIQP's 1e30 infinity, so the row stayed in with
a huge bound; such a bound is now left out when the data are prepared,
optimizer.prepare.LOOSE_BOUND, so the test sets it on the prepared data) came back
"infeasible", and ``fbr solve`` printed "infeasible: these constraints conflict: (none found)",
exit 3. Clarabel, asked next, answers it; its answer is the book's optimum with that row loose
(the same positions as with a cap of 3x, re-solved by PIQP alone). A truly infeasible book gets
the same verdict from both (``CONFIRMS``: a second opinion, not a fallback). The chain's rules
are also checked on scripted engines.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from fbr.config import load_book_file
from optimizer.engines import FAILED, INFEASIBLE, OPTIMAL, UNBOUNDED, RawResult
from optimizer.prepare import prepare
from optimizer.problem import HedgeProblem
from optimizer.rebalance import Rebalancer
from optimizer.settings import ConstraintSettings, OptimizerSettings, SolverName
from optimizer.solution import fallbacks_in

ROOT = Path(__file__).resolve().parents[2]


def _demo_book(tmp_path: Path, cap: str) -> Path:
    text = (ROOT / "examples" / "backtest_book.toml").read_text(encoding="utf-8")
    assert re.search(r"(?m)^max_gross_leverage = ", text)
    path = tmp_path / f"book_{cap}.toml"
    path.write_text(re.sub(r"(?m)^max_gross_leverage = .*$", f"max_gross_leverage = {cap}", text),
                    encoding="utf-8")
    return path


def test_a_false_infeasible_verdict_is_refuted_by_the_next_solver(tmp_path: Path) -> None:
    """The demo book's data with its gross-leverage bound set to 1e29 after preparation (a book
    file's bound that large is no bound since: optimizer.prepare.LOOSE_BOUND leaves the row out;
    here the row stays, as it did, to put PIQP's false verdict to the chain)."""
    ref = load_book_file(_demo_book(tmp_path, "3"))
    rb = Rebalancer()
    d = prepare(ref.book, ref.market, ref.risk, ref.settings)
    assert d.structure.leverage
    loose = dataclasses.replace(d, max_gross=1e29)
    hp = rb.problem_for(loose)
    hp.update(loose)
    out = hp.solve((SolverName.PIQP, SolverName.CLARABEL))
    assert out.result.solver == "CLARABEL" and out.result.status == OPTIMAL, out.tried
    assert out.tried == (("PIQP", "infeasible: refuted by CLARABEL"), ("CLARABEL", "optimal"))
    assert out.fallbacks == 1
    want = Rebalancer().solve(ref.book, ref.market, ref.risk, ref.settings)
    assert want.status == "optimal" and want.solver == "PIQP"
    z = out.result.z
    assert z is not None
    got = dict(zip(ref.book.contract_symbols, z * d.V, strict=True))
    for p in want.target_positions:
        assert got[p.symbol] == pytest.approx(p.notional, abs=1e-5 * want.base), p.symbol


def test_a_true_infeasible_verdict_is_confirmed_not_a_fallback() -> None:
    book = load_book_file(ROOT / "examples" / "seed_example_1.toml")
    settings = OptimizerSettings(constraints=ConstraintSettings(funding_budget_usd=-5.0))
    sol = Rebalancer().solve(book.book, book.market, book.risk, settings)
    assert sol.status == "infeasible" and sol.solver == "PIQP"
    assert sol.solvers_tried[:2] == (("PIQP", "infeasible"), ("CLARABEL", "infeasible: confirms PIQP"))
    assert [c.name for c in sol.conflicts] == ["funding_budget"]
    # the elastic re-solve's row after them counts as before this rule: one
    assert sol.fallbacks == len(sol.solvers_tried) - 2


class _Scripted:
    """An engine answering ``status`` (a solution z = [1] when optimal)."""

    def __init__(self, name: str, status: str) -> None:
        self.name, self.status = name, status

    def solve(self) -> RawResult:
        z = np.ones(1) if self.status == OPTIMAL else None
        return RawResult(z, self.status, self.name, 0.0, 1, 0.0 if z is not None else math.nan)


def _chain(monkeypatch: pytest.MonkeyPatch, statuses: Sequence[str]
           ) -> tuple[RawResult | None, tuple[tuple[str, str], ...]]:
    names = (SolverName.PIQP, SolverName.CLARABEL, SolverName.SCS)[:len(statuses)]
    engines = {n: _Scripted(n.value, st) for n, st in zip(names, statuses, strict=True)}
    monkeypatch.setattr(HedgeProblem, "engine", lambda self, s: engines[s])
    hp = object.__new__(HedgeProblem)
    return hp.run_chain(names)


@pytest.mark.parametrize(("statuses", "served", "tried", "fallbacks"), [
    ((INFEASIBLE, OPTIMAL), "CLARABEL",
     (("PIQP", "infeasible: refuted by CLARABEL"), ("CLARABEL", OPTIMAL)), 1),
    ((INFEASIBLE, INFEASIBLE), "PIQP",
     (("PIQP", INFEASIBLE), ("CLARABEL", "infeasible: confirms PIQP")), 0),
    ((UNBOUNDED, UNBOUNDED), "PIQP",
     (("PIQP", UNBOUNDED), ("CLARABEL", "unbounded: confirms PIQP")), 0),
    ((INFEASIBLE, UNBOUNDED), "PIQP",
     (("PIQP", INFEASIBLE), ("CLARABEL", "unbounded: disagrees with PIQP")), 1),
    ((INFEASIBLE, FAILED, OPTIMAL), "SCS",
     (("PIQP", "infeasible: refuted by SCS"), ("CLARABEL", FAILED), ("SCS", OPTIMAL)), 2),
    ((INFEASIBLE, FAILED, FAILED), "PIQP",  # no second opinion to be had: the verdict stands
     (("PIQP", INFEASIBLE), ("CLARABEL", FAILED), ("SCS", FAILED)), 2),
    ((INFEASIBLE,), "PIQP", (("PIQP", INFEASIBLE),), 0),  # a chain of one: nobody to ask
    ((FAILED, INFEASIBLE), "CLARABEL", (("PIQP", FAILED), ("CLARABEL", INFEASIBLE)), 1),
])
def test_the_chains_rules(monkeypatch: pytest.MonkeyPatch, statuses: tuple[str, ...], served: str,
                          tried: tuple[tuple[str, str], ...], fallbacks: int) -> None:
    res, got = _chain(monkeypatch, statuses)
    assert res is not None and res.solver == served
    assert got == tried and fallbacks_in(got) == fallbacks
