"""optimizer.engines: Clarabel's second try with a rescaled objective before the SCS fallback."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from models.book import Book
from models.instruments import FuturesContract, SpotAsset
from models.market import MarketSnapshot
from models.risk import RiskModel
from optimizer import engines
from optimizer.data import prepare
from optimizer.problem import HedgeProblem
from optimizer.settings import ConstraintSettings, CostSettings, OptimizerSettings

T0 = pd.Timestamp("2025-01-01", tz="UTC")


def _conic_problem() -> HedgeProblem:
    """Two assets off target, 3/2-power impact on (conic: Clarabel serves it), margin on."""
    syms = ("BTC", "ETH")
    prices = {"BTC": 50_000.0, "ETH": 2_500.0}
    cons = tuple(FuturesContract(f"{s}-PERP", s, lot_step=1e-9, min_notional=0.0) for s in syms)
    book = Book(tuple(SpotAsset(s) for s in syms), cons, spot={"BTC": 12.0, "ETH": 160.0},
                targets={"BTC": 0.5, "ETH": 0.5}, cash=2e5)
    market = MarketSnapshot(T0, spot=prices, mark={f"{s}-PERP": p for s, p in prices.items()},
                            adv={"BTC-PERP": 5e7, "ETH-PERP": 2e7})
    risk = RiskModel.from_covariance(syms, np.array([[0.30, 0.25], [0.25, 0.49]]))
    settings = OptimizerSettings(costs=CostSettings(impact=True, carry=False),
                                 constraints=ConstraintSettings(margin=True), basis_risk=False)
    d = prepare(book, market, risk, settings)
    hp = HedgeProblem(d.structure)
    hp.update(d)
    assert hp.is_conic
    return hp


def test_a_failed_clarabel_solve_is_retried_rescaled_before_scs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Clarabel crashing at the objective's own scale: the engine's second try (objective x
    RESCALE) serves the same minimiser and the unscaled objective, and the duals come back
    unscaled; SCS is never asked."""
    hp = _conic_problem()
    ref = hp.solve()
    assert ref.tried == (("CLARABEL", "optimal"),)
    hp.unpack("CLARABEL")
    ref_duals = [np.asarray(c.dual_value, dtype=float).copy() for c in hp.problem.constraints]

    original = engines.ClarabelEngine._call

    def fails_unscaled(self: engines.ClarabelEngine, data: dict[str, Any],
                       options: dict[str, Any]) -> Any:
        if self.scale == 1.0:
            raise RuntimeError("InsufficientProgress")
        return original(self, data, options)

    monkeypatch.setattr(engines.ClarabelEngine, "_call", fails_unscaled)
    got = hp.solve()
    assert got.tried == (("CLARABEL", "optimal"),)
    assert ref.result.z is not None and got.result.z is not None
    np.testing.assert_allclose(got.result.z, ref.result.z, atol=1e-7)
    assert got.result.objective == pytest.approx(ref.result.objective, rel=1e-6, abs=1e-12)
    hp.unpack("CLARABEL")
    for c, dual in zip(hp.problem.constraints, ref_duals, strict=True):
        np.testing.assert_allclose(np.asarray(c.dual_value, dtype=float), dual, rtol=1e-4,
                                   atol=1e-8)


def test_when_the_retry_fails_too_the_chain_moves_on(monkeypatch: pytest.MonkeyPatch) -> None:
    hp = _conic_problem()

    def always_fails(self: engines.ClarabelEngine, data: dict[str, Any],
                     options: dict[str, Any]) -> Any:
        raise RuntimeError("InsufficientProgress")

    monkeypatch.setattr(engines.ClarabelEngine, "_call", always_fails)
    got = hp.solve()
    assert got.tried[0] == ("CLARABEL", "solver_error")
    assert got.tried[-1][0] == "SCS"
