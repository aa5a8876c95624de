"""Distance to liquidation of a cross-margined book: the maths lives in
``models.liquidation_distance`` (shared with ``executor.status``, which may not import scenarios);
this module keeps the what-if's names."""

from __future__ import annotations

from models.liquidation_distance import (
    DOWN_LIMIT,
    MOVE_XTOL,
    LiquidationMove,
    is_liquidated,
    liquidation_move,
    liquidation_moves,
)

__all__ = ["DOWN_LIMIT", "MOVE_XTOL", "LiquidationMove", "is_liquidated", "liquidation_move",
           "liquidation_moves"]
