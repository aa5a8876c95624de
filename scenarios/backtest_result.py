"""What a backtest records: :class:`BacktestResult` (per-step frames and event lists, USD) and its
column lists, and :class:`RollTargets` (target holdings that declare rolls, recorded per pair).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from optimizer.policies import TargetHoldings

#: Columns of ``BacktestResult.unsolved``: a step where the policy had no answer to trade.
UNSOLVED_COLUMNS = ["time", "step", "reason"]
#: Columns of ``BacktestResult.rolls``.
ROLL_COLUMNS = ["time", "step", "from", "to", "from_price", "to_price", "notional", "opened",
                "fee", "slippage", "basis"]


@dataclass(frozen=True)
class BacktestResult:
    """What a backtest recorded (all USD unless said otherwise; one row per step, end of step).

    ``steps`` columns: nav, base (the target base V), cash, wallet (cash + unrealised PnL),
    collateral, spot_pnl, futures_pnl (mark-to-market of held positions), fee_spot, fee_futures
    (exchange fee), slippage_spot (half spread), slippage_futures (half spread + impact), funding
    (paid, > 0 is a cost), liquidation_penalty, insurance_fund (what the exchange's insurance fund
    absorbed when a liquidation left the wallet below 0: the wallet goes back to 0, a gain against
    the deficit; ``models.margin.insurance_fund_cover``), margin_ratio (maintenance / collateral at
    the margin check, before the policy), margin_ratio_end (after the trades and sweeps), liquidated
    (bool), traded_spot and traded_futures (gross |notional| traded by the policy), sweep_in (gross
    spot sold to top up the wallet), sweep_out (gross spot bought with the wallet's excess) and
    sweep_fees (their spot fees, half spread and impact; not in fee_spot), solve_time_ms and
    solver_fallbacks (from the policy's ``TargetHoldings`` when it gives them: solver time in ms and
    solvers that failed before the one that served; NaN and 0 otherwise). solve_time_ms is
    wall-clock, the one recorded value that differs between two runs of the same inputs.
    Identity per step: nav_t - nav_{t-1} = spot_pnl + futures_pnl - fee_spot - slippage_spot
    - fee_futures - slippage_futures - funding - liquidation_penalty + insurance_fund - sweep_fees
    (- tax when taxed).
    With taxes on (``scenarios.replay_tax``) five more columns follow: tax_spot (realised on
    spot sales, lot by lot), tax_futures (on realised futures PnL), tax (their sum; > 0 paid,
    < 0 a credit), tax_cumulative and tax_deferred (the tax selling every lot and closing every
    futures position at the step's close would realise after the step;
    ``scenarios.replay_tax.deferred_tax``). With pledged collateral on, trades may have kind
    collateral_sale (pledged spot sold after a liquidation; its fee column is the penalty,
    already in liquidation_penalty).
    ``spot_value`` (per asset), ``futures_notional`` (signed, per contract) and ``weights``
    (effective weights per asset) are frames on the same index. ``trades`` and ``liquidations``
    list events (one row each; trade kinds: spot, futures, settle (a dated future closed at spot
    at expiry; its fee is in fee_futures, its spot-vs-mark PnL in futures_pnl), sweep_in,
    sweep_out). ``targets``: w* per asset; ``policy``: the policy's name.
    ``rolls``: one row per roll a policy declared (``RollTargets``) with a leg traded: time, step
    (position in the index), from / to (contracts), from_price / to_price (marks, USD), notional
    (USD, signed: the position closed in ``from``, at its mark), opened (USD, signed: the ``to``
    leg's trade), fee and slippage (both legs; already in fee_futures / slippage_futures) and
    basis = opened x (to_price - from_price) / to_price (USD; > 0 a cost: a long rolled into
    contango, a short into backwardation): the price
    gap between the legs, paid later through futures_pnl as the new contract converges, not a
    separate cash flow (exact for linear contracts when the old leg was at spot).
    ``nav_open``: the NAV at the first step's prices before its trades (USD; NaN when unknown):
    the first row's nav is after them, so nav_0 = nav_open - the first step's costs, and the total
    return counts from nav_open.
    ``unsolved``: one row per step where the policy had no answer to trade (time, step: position
    in the index, reason: the solvers tried and how each failed, or why the answer may not be
    traded: infeasible, naming the conflicting constraints, or a hard margin row broken); the
    book was held as it stood there (no policy trade; sweeps and the engine steps ran), as a
    daily loop sends no order without a tradeable answer.
    """

    steps: pd.DataFrame
    spot_value: pd.DataFrame
    futures_notional: pd.DataFrame
    weights: pd.DataFrame
    trades: pd.DataFrame
    liquidations: pd.DataFrame
    targets: pd.Series
    spot_returns: pd.DataFrame
    policy: str
    rolls: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=ROLL_COLUMNS))
    nav_open: float = math.nan
    unsolved: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=UNSOLVED_COLUMNS))

    def frames(self) -> dict[str, pd.DataFrame]:
        """Every recorded frame by name (for comparisons and export)."""
        return {"steps": self.steps, "spot_value": self.spot_value,
                "futures_notional": self.futures_notional, "weights": self.weights,
                "trades": self.trades, "liquidations": self.liquidations,
                "spot_returns": self.spot_returns, "rolls": self.rolls, "unsolved": self.unsolved}


#: Columns of ``BacktestResult.trades`` and ``BacktestResult.liquidations``.
TRADE_COLUMNS = ["time", "kind", "symbol", "quantity", "price", "notional", "fee", "slippage"]
LIQUIDATION_COLUMNS = ["time", "contract", "contracts", "mark", "notional", "penalty"]


@dataclass(frozen=True)
class RollTargets(TargetHoldings):
    """Target holdings that say which of their trades are rolls: ``rolls`` lists (from, to)
    contract pairs whose position moves from the first into the second at this step (e.g.
    ``scenarios.rolls.RollingPolicy``). The backtest trades them like any target and records one
    row per pair in ``BacktestResult.rolls`` (see there)."""

    rolls: tuple[tuple[str, str], ...] = ()
