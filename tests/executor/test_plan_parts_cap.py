"""The exchange's position cap at the account's leverage in the order plan
(executor.plan_parts.capped_target, move_parts): by hand on a two-bracket contract whose 20x cap
is 1,000,000 USD, at 100 USD per contract and a lot of 0.5 contracts."""

from __future__ import annotations

import dataclasses

import pytest

from executor.plan import Instrument, OrderType, PlanOptions
from executor.plan_parts import capped_target, move_parts
from models.instruments import FuturesContract, MarginTiers, TierBracket

NPC = 100.0  # USD per contract: the cap is 10,000 contracts
TIERS = MarginTiers((TierBracket(0.0, 50_000.0, 75.0, 0.005, 0.0),
                     TierBracket(50_000.0, 1_000_000.0, 25.0, 0.01, 250.0),
                     TierBracket(1_000_000.0, 5_000_000.0, 10.0, 0.025, 15_250.0)))
SOL = FuturesContract("SOL-PERP", "SOL", lot_step=0.5, leverage=20.0, tiers=TIERS, min_notional=5.0)


def test_the_cap_is_the_largest_bracket_allowing_the_leverage() -> None:
    assert SOL.max_notional_usd == 1_000_000.0


@pytest.mark.parametrize(("q0", "q1", "reached"), [
    (0.0, 9_000.0, 9_000.0),          # within the cap: unchanged
    (0.0, 10_000.0, 10_000.0),        # at the cap exactly
    (0.0, 12_345.5, 10_000.0),        # an opening past it stops at it
    (0.0, -18_000.0, -10_000.0),      # either side
    (4_000.0, 15_000.0, 10_000.0),    # growing a held position
    (3_000.0, -15_000.0, -10_000.0),  # a flip: the new side is capped
    (12_000.0, 11_000.0, 11_000.0),   # a held position past the cap (leverage raised) may shrink
    (12_000.0, 14_000.0, 12_000.0),   # ... but not grow: held, not cut
    (12_000.0, -14_000.0, -10_000.0),  # a flip from past the cap: the new side capped
])
def test_capped_target_by_hand(q0: float, q1: float, reached: float) -> None:
    assert capped_target(SOL, NPC, q0, q1) == reached


def test_the_room_is_floored_to_the_lot() -> None:
    # 1,000,000 / 99.99 = 10,001.0001 contracts: 10,001.0 on a 0.5 lot
    assert capped_target(SOL, 99.99, 0.0, 20_000.0) == 10_001.0
    assert 10_001.0 * 99.99 <= 1_000_000.0 < 10_001.5 * 99.99


def test_no_cap_when_the_tiers_give_none() -> None:
    flat = FuturesContract("SOL-PERP", "SOL", lot_step=0.5, leverage=20.0)
    assert capped_target(flat, NPC, 0.0, 1e9) == 1e9


def test_the_excess_is_dropped_with_the_reason_and_the_rest_sent() -> None:
    kept, dropped = move_parts(Instrument(SOL, "SOL/USDT:USDT"), NPC, 3_000.0, -15_000.0,
                               PlanOptions(), None)
    assert [(p.contracts, p.reduce_only) for p, _ in kept] == [(-3_000.0, True), (-10_000.0, False)]
    ((part, npc, reason),) = dropped
    assert (part.contracts, part.reduce_only, npc) == (-5_000.0, False, NPC)
    assert reason == ("past the exchange's position cap at 20x leverage (1,000,000 USD of "
                      "notional): lower the leverage or the target")


def test_a_limit_buy_room_is_measured_at_its_limit_price() -> None:
    """A limit buy goes out at mark x (1 + 0.5%) = 100.5 USD a contract: the exchange checks the
    cap there, so the room is floor(1,000,000 / 100.5) = 9,950.2 -> 9,950 contracts (10,000 at
    the mark would be 1,005,000 USD at the limit price: refused). A limit sell is priced below
    the mark and keeps the room at the mark."""
    inst = Instrument(SOL, "SOL/USDT:USDT")
    opts = PlanOptions(order_type=OrderType.LIMIT)
    kept, dropped = move_parts(inst, NPC, 0.0, 12_000.0, opts, None)
    assert [p.contracts for p, _ in kept] == [9_950.0] and dropped[0][0].contracts == 2_050.0
    kept, _ = move_parts(inst, NPC, 0.0, -12_000.0, opts, None)
    assert [p.contracts for p, _ in kept] == [-10_000.0]


def test_a_contract_worth_more_than_the_cap_by_hand() -> None:
    """2,000,000 USD a contract against the 1,000,000 cap (lot 0.5): half a contract fits; a held
    contract past it is kept, not cut, when the target grows."""
    assert capped_target(SOL, 2_000_000.0, 0.0, 2.0) == 0.5
    assert capped_target(SOL, 2_000_000.0, 1.0, 2.0) == 1.0


def test_one_usd_contracts_are_capped_too() -> None:
    """Contracts of 1 USD (coin-M style): the room is 1,000,000 of them."""
    assert capped_target(SOL, 1.0, 0.0, 2_000_000.0) == 1_000_000.0


@pytest.mark.parametrize("top", [1e11, 1e12])
def test_a_bracket_at_or_above_the_no_cap_sentinel_caps_nothing(top: float) -> None:
    """A last bracket at or above NO_CAP_USD (1e11 USD) is the exchange's "no cap", as in the
    optimiser's rule: 2e11 and 2e12 USD of position go through."""
    tiers = MarginTiers((TierBracket(0.0, top, 25.0, 0.01, 0.0),))
    big = FuturesContract("X-PERP", "X", lot_step=0.5, leverage=20.0, tiers=tiers)
    assert capped_target(big, NPC, 0.0, 20 * top / NPC) == 20 * top / NPC


def test_a_one_contract_limit_buy_is_measured_at_its_limit_price() -> None:
    """995,100 USD a contract: within the 1,000,000 cap at the mark, 1,000,075.50 at the limit
    price (x 1.005): the room there is 0.999 contracts on a 0.001 lot."""
    fine = dataclasses.replace(SOL, lot_step=0.001)
    kept, _ = move_parts(Instrument(fine, "SOL/USDT:USDT"), 995_100.0, 0.0, 1.0,
                         PlanOptions(order_type=OrderType.LIMIT), None)
    assert [p.contracts for p, _ in kept] == [0.999]
