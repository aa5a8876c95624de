"""The backtester's public names, one import away (a facade over the modules that hold them).

- ``scenarios.market_path``: :class:`MarketPath` (the replayed series) and :func:`path_from_data`;
- ``scenarios.market_data``: the real-data loader (``DATA_STEPS``, ``ADV_WINDOW``, ``MARK_FOLDER``,
  ``MARK_BAR``);
- ``scenarios.collateral``: :class:`CollateralPolicy` and ``NO_SWEEPS`` (step 5, the wallet's band);
- ``scenarios.backtest_result``: :class:`BacktestResult`, :class:`RollTargets` and the column lists;
- ``scenarios.replay_inputs``: ``IMPACT_VOL_WINDOW`` and :func:`median_step_days`;
- ``scenarios.settlement``: :func:`expiry_ns` (dated futures settle at spot at expiry, step 2b);
- ``scenarios.replay``: :func:`run_backtest` (the replay loop; its module docstring states the
  per-step semantics) and ``QTY_RTOL``.
"""

from __future__ import annotations

from scenarios.backtest_result import (
    LIQUIDATION_COLUMNS,
    ROLL_COLUMNS,
    TRADE_COLUMNS,
    BacktestResult,
    RollTargets,
)
from scenarios.collateral import NO_SWEEPS, CollateralPolicy
from scenarios.market_data import ADV_WINDOW, DATA_STEPS, MARK_BAR, MARK_FOLDER
from scenarios.market_path import MarketPath, path_from_data
from scenarios.replay import QTY_RTOL, run_backtest
from scenarios.replay_inputs import IMPACT_VOL_WINDOW, median_step_days
from scenarios.settlement import expiry_ns

__all__ = [
    "ADV_WINDOW",
    "DATA_STEPS",
    "IMPACT_VOL_WINDOW",
    "LIQUIDATION_COLUMNS",
    "MARK_BAR",
    "MARK_FOLDER",
    "NO_SWEEPS",
    "QTY_RTOL",
    "ROLL_COLUMNS",
    "TRADE_COLUMNS",
    "BacktestResult",
    "CollateralPolicy",
    "MarketPath",
    "RollTargets",
    "expiry_ns",
    "median_step_days",
    "path_from_data",
    "run_backtest",
]
