"""The exposure <-> contracts conversions of optimizer.rounding with an inverse position held away
from its entry (delta0 != 0), by hand.

V = 100,000 USD. Contract 0 is linear (npc 60,000 USD, z0 = 0.5); contract 1 is inverse, 100 USD a
contract, short 500 struck at an entry away from the mark: its exposure is z0 = -0.55 (55,000 USD),
not its face -500 x 100 / V = -0.5, so delta0 = -0.05. A target equal to the held exposure keeps
q0; any other moves it by the exchange's fill rule (models.fill_rule: a growth adds 100 USD of
exposure a contract, a cut keeps the entry, a flip re-opens at the mark).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import cast

import numpy as np
import pytest

from models.instruments import FuturesContract, Settlement
from optimizer.data import ProblemData
from optimizer.rounding import _exposure_at, contracts_of, exposure_of

NPC = np.array([60_000.0, 100.0])
Q0 = np.array([50_000.0 / 60_000.0, -500.0])


def _data(offset: list[float] | None) -> ProblemData:
    return cast(ProblemData, SimpleNamespace(
        V=100_000.0, z0=np.array([0.5, -0.55]),
        exposure_offset=None if offset is None else np.array(offset)))


def test_contracts_of_follows_the_exchanges_fill_rule_for_a_held_inverse_position() -> None:
    """By hand (x0 = -55,000 USD held in -500 contracts of 100 USD): the held exposure is q0; a
    growth to -60,000 adds 5,000 / 100 = 50 contracts (-550; re-striking the whole position would
    say -600); a cut to -30,000 keeps the entry, so the contracts scale with the exposure:
    -500 x 30,000 / 55,000 = -272.73; a flip to +20,000 re-opens at the mark: 200."""
    d = _data([0.0, -0.05])
    np.testing.assert_allclose(contracts_of(np.array([0.6, -0.55]), d, NPC, Q0), [1.0, -500.0])
    np.testing.assert_allclose(contracts_of(np.array([0.6, -0.6]), d, NPC, Q0), [1.0, -550.0])
    np.testing.assert_allclose(contracts_of(np.array([0.6, -0.3]), d, NPC, Q0),
                               [1.0, -500.0 * 30_000.0 / 55_000.0])
    np.testing.assert_allclose(contracts_of(np.array([0.6, 0.2]), d, NPC, Q0), [1.0, 200.0])
    np.testing.assert_allclose(contracts_of(np.array([0.5, -0.55]), d, NPC, Q0),
                               [50_000.0 / 60_000.0, -500.0])


def test_contracts_of_without_an_offset_is_the_plain_conversion() -> None:
    for d in (_data(None), _data([0.0, 0.0])):
        np.testing.assert_allclose(contracts_of(np.array([0.6, -0.55]), d, NPC, Q0), [1.0, -550.0])


def test_exposure_of_reads_an_inverse_position_by_the_fill_rule() -> None:
    """The inverse of the above, by hand: -550 contracts hold -55,000 - 50 x 100 = -60,000; -600
    hold -65,000 (not the -60,000 of a re-strike); -250 hold -55,000 x 250 / 500 = -27,500;
    +100 (past a flip) hold 10,000."""
    d = _data([0.0, -0.05])
    np.testing.assert_allclose(exposure_of(np.array([1.0, -500.0]), d, NPC, Q0), [0.6, -0.55])
    np.testing.assert_allclose(exposure_of(np.array([1.0, -550.0]), d, NPC, Q0), [0.6, -0.6])
    np.testing.assert_allclose(exposure_of(np.array([1.0, -600.0]), d, NPC, Q0), [0.6, -0.65])
    np.testing.assert_allclose(exposure_of(np.array([1.0, -250.0]), d, NPC, Q0), [0.6, -0.275])
    np.testing.assert_allclose(exposure_of(np.array([1.0, 100.0]), d, NPC, Q0), [0.6, 0.1])
    np.testing.assert_allclose(exposure_of(Q0, d, NPC, Q0), [0.5, -0.55])
    for plain in (_data(None), _data([0.0, 0.0])):
        np.testing.assert_allclose(exposure_of(np.array([1.0, -500.0]), plain, NPC, Q0), [0.6, -0.5])
    assert _exposure_at(-500.0, 1, d, NPC, Q0) == -0.55
    assert _exposure_at(-550.0, 1, d, NPC, Q0) == pytest.approx(-0.6, rel=1e-12)
    assert _exposure_at(1.0, 0, d, NPC, Q0) == 0.6
    assert _exposure_at(Q0[0], 0, d, NPC, Q0) == 0.5
    assert _exposure_at(-500.0, 1, _data(None), NPC, Q0) == -0.5


class _GrossCap:
    """sum_j |z_j| <= cap, one row "gross" (a stand-in constraint: rounding calls only
    ``violation`` and ``rows``)."""

    def __init__(self, cap: float) -> None:
        self.cap = cap

    def violation(self, z: np.ndarray, d: object) -> np.ndarray:
        return np.array([max(float(np.abs(z).sum()) - self.cap, 0.0)])

    def rows(self, d: object) -> list[str]:
        return ["gross"]


def test_the_repair_back_to_an_inverse_position_restores_its_held_exposure() -> None:
    """V = 1,000, 100 USD a contract, 3 contracts held away from their entry: face 0.3, held
    exposure z0 = 0.33 (delta0 = 0.03). A target of 0.45 is traded: a growth of 120 USD, 3 + 1.2 ->
    4 contracts, exposure 0.33 + 0.1 = 0.43; it breaks a 0.35 gross cap, and the repair steps one
    lot back to the held 3, whose exposure is the held 0.33 (not the face 0.3): one repair."""
    from optimizer.constraint_base import Constraint
    from optimizer.rounding import round_positions

    d = cast(ProblemData, SimpleNamespace(V=1_000.0, prices=np.array([100.0]), z0=np.array([0.33]),
                                          exposure_offset=np.array([0.03])))
    inv = FuturesContract("BTCUSD-PERP", "BTC", settlement=Settlement.INVERSE, contract_size=100.0,
                          lot_step=1.0, min_notional=0.0)
    cap = cast(Constraint, _GrossCap(0.35))
    r = round_positions(np.array([0.45]), d, (inv,), np.array([3.0]), [cap])
    assert r.contracts.tolist() == [3.0]
    assert r.z.tolist() == [0.33]
    assert r.repairs == 1 and r.broken == ()
