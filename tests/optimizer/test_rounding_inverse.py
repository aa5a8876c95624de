"""The exposure <-> contracts conversions of optimizer.rounding with an inverse position held away
from its entry (delta0 != 0), by hand.

V = 100,000 USD. Contract 0 is linear (npc 60,000 USD, z0 = 0.5); contract 1 is inverse, 100 USD a
contract, short 500 struck at an entry away from the mark: its exposure is z0 = -0.55 (55,000 USD),
not its face -500 x 100 / V = -0.5, so delta0 = -0.05. A target equal to the held exposure keeps
q0; any other target is z V / npc (a traded position is re-struck at the mark).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import cast

import numpy as np

from optimizer.data import ProblemData
from optimizer.rounding import _exposure_at, contracts_of, exposure_of

NPC = np.array([60_000.0, 100.0])
Q0 = np.array([50_000.0 / 60_000.0, -500.0])


def _data(offset: list[float] | None) -> ProblemData:
    return cast(ProblemData, SimpleNamespace(
        V=100_000.0, z0=np.array([0.5, -0.55]),
        exposure_offset=None if offset is None else np.array(offset)))


def test_contracts_of_keeps_a_held_inverse_exposure() -> None:
    d = _data([0.0, -0.05])
    np.testing.assert_allclose(contracts_of(np.array([0.6, -0.55]), d, NPC, Q0), [1.0, -500.0])
    np.testing.assert_allclose(contracts_of(np.array([0.6, -0.6]), d, NPC, Q0), [1.0, -600.0])
    np.testing.assert_allclose(contracts_of(np.array([0.5, -0.55]), d, NPC, Q0),
                               [50_000.0 / 60_000.0, -500.0])


def test_contracts_of_without_an_offset_is_the_plain_conversion() -> None:
    for d in (_data(None), _data([0.0, 0.0])):
        np.testing.assert_allclose(contracts_of(np.array([0.6, -0.55]), d, NPC, Q0), [1.0, -550.0])


def test_exposure_of_reads_a_held_inverse_position_at_its_exposure() -> None:
    d = _data([0.0, -0.05])
    np.testing.assert_allclose(exposure_of(np.array([1.0, -500.0]), d, NPC, Q0), [0.6, -0.55])
    np.testing.assert_allclose(exposure_of(np.array([1.0, -600.0]), d, NPC, Q0), [0.6, -0.6])
    np.testing.assert_allclose(exposure_of(Q0, d, NPC, Q0), [0.5, -0.55])
    for plain in (_data(None), _data([0.0, 0.0])):
        np.testing.assert_allclose(exposure_of(np.array([1.0, -500.0]), plain, NPC, Q0), [0.6, -0.5])
    assert _exposure_at(-500.0, 1, d, NPC, Q0) == -0.55
    assert _exposure_at(-600.0, 1, d, NPC, Q0) == -0.6
    assert _exposure_at(1.0, 0, d, NPC, Q0) == 0.6
    assert _exposure_at(Q0[0], 0, d, NPC, Q0) == 0.5
    assert _exposure_at(-500.0, 1, _data(None), NPC, Q0) == -0.5
