"""The surviving mutants of the scenarios/ modules argued equivalent (``scripts/mutation.py``):
settlement, the replay and its steps and fills, the collateral sweeps. Merged into
``mutation_equivalents.EQUIVALENT``; data only, kept in step with ``benchmarks/results/mutation.md``.
"""

from __future__ import annotations

SCENARIOS: dict[str, str] = {
    # scenarios/settlement.py
    "scenarios.settlement.x_spot_at_expiry__mutmut_3":
        "expiry <= t1: at expiry == t1 the interpolation gives s0 + (s1 - s0) x 1 = s1, the close",
    **dict.fromkeys(
        [f"scenarios.settlement.x_expiry_ns__mutmut_{n}" for n in (11, 15)],
        'tz "utc" and "UTC" are the same zone'),
    "scenarios.settlement.x_expiry_ns__mutmut_13":
        "tz_convert(None) converts to UTC and drops the zone: .value (UTC ns) is unchanged",
    # scenarios/replay_steps.py
    "scenarios.replay_steps.x_funding_step__mutmut_6":
        "hi < lo instead of hi <= lo: at hi == lo the block of settlements is empty, pay_funding "
        "pays 0 (cash unchanged, with_cash(0) the same valuation) and funding is recorded as the "
        "row's 0",
    **dict.fromkeys(
        ["scenarios.replay_steps.x_margin_step__mutmut_1", "scenarios.replay_steps.x_sweep_step__mutmut_1"],
        "the default of pledged: the only caller (scenarios.replay) always passes it"),
    "scenarios.replay_steps.x_margin_step__mutmut_37":
        "trades passed as given (None not replaced by []): the only caller always passes its list",
    "scenarios.replay_steps.x_sweep_step__mutmut_3":
        "current left None: sweep_collateral values the state itself when given None, and the "
        "caller values it when the step returns None",
    **dict.fromkeys(
        [f"scenarios.replay_steps.x_new_row__mutmut_{n}" for n in (8, 9, 14, 15)],
        "the zero start of futures_pnl / fee_futures renamed: every step assigns both before any "
        "read (first_step both; mark_to_market futures_pnl, settlement_step fee_futures, before "
        "fill_futures adds to it), and the recorded frame keeps STEP_COLUMNS only"),
    **dict.fromkeys(
        [f"scenarios.replay_steps.xǁReplayLogǁrecord__mutmut_{n}" for n in (22, 24, 26)],
        "astype(None) on float64 arrays: the same float64 copies"),
    # scenarios/replay_fills.py
    **dict.fromkeys(
        [f"scenarios.replay_fills.x_futures_orders__mutmut_{n}" for n in (80, 96)],
        "isclose without rel_tol: its default 1e-9 is QTY_RTOL's value"),
    **dict.fromkeys(
        [f"scenarios.replay_fills.x_futures_orders__mutmut_{n}" for n in (81, 97)],
        "isclose without abs_tol: its default is 0.0"),
    # scenarios/replay.py
    "scenarios.replay.x_run_backtest__mutmut_33":
        "CollateralPolicy() also for a spot-only book: with no contract no position is ever open, "
        "and a sweep needs an open position (sweep_collateral returns Sweep())",
    **dict.fromkeys(
        [f"scenarios.replay.x_run_backtest__mutmut_{n}" for n in (85,)],
        "the tax columns' zero start values (their values, their slice, or their being set "
        "only when untaxed): _tax sets tax_spot, tax_futures, tax and "
        "tax_deferred on every taxed step before the row is recorded (and an untaxed frame keeps "
        "only STEP_COLUMNS; TAX_COLUMNS[3] is rebuilt as the cumulative sum)"),
    **dict.fromkeys(
        [f"scenarios.replay.x__tax__mutmut_{n}" for n in (65, 74, 76)],
        "re-valuing the state after no tax was paid: value_state of the unchanged state equals "
        "the end-of-step valuation it replaces"),
    "scenarios.replay.x__carry__mutmut_40":
        "the spot held before the margin step taken as None: the forced-sale booking then runs on "
        "every taxed step, and with no sale book_lots books nothing (0 USD) and value_state of "
        "the unchanged state equals the valuation it replaces",
    "scenarios.replay.x__result__mutmut_1":
        "the default of taxed is never used: run_backtest always passes it",
    **dict.fromkeys(
        [f"scenarios.replay.x__result__mutmut_{n}" for n in (5, 97, 100)],
        "dtype=float dropped / astype(None) on float data: the frames and series stay float64"),
    # scenarios/collateral.py
    "scenarios.collateral.x__sweep_in__mutmut_58":
        "state.spot[a] = q + dq when selling all: dq took the sell-all branch (dq = -q), and q - q "
        "is exactly 0.0",
    "scenarios.collateral.x__sweep_in__mutmut_93":
        "sweep_in = gross when selling all: sell_all means gross >= total with gross = "
        "min(.., total), so gross is total itself, and total = float(v.sum())",
    **dict.fromkeys(
        [f"scenarios.collateral.x__impact_bar__mutmut_{n}" for n in (5, 7)],
        "np.asarray(impact) without dtype=float: the impact coefficients are a float array"),
    "scenarios.collateral.x_purchase_for__mutmut_26":
        "gap(linear) < 0 instead of <= 0: at gap(linear) == 0 brentq on [0, linear] returns the "
        "endpoint linear, whose f is exactly 0, the same answer",
    "scenarios.collateral.x_sale_for__mutmut_40":
        "linear > top instead of >=: at linear == top, gap(top) = gap(linear) <= 0 returns top, "
        "and a rounding gap(linear) >= 0 returns linear, which is top",
    "scenarios.collateral.x_sale_for__mutmut_42":
        "gap(top) < 0 instead of <= 0: at gap(top) == 0, gap(linear) < gap(top) (gap increases up "
        "to the peak and linear < top), so brentq on [linear, top] returns the endpoint top",
    "scenarios.collateral.x_sale_for__mutmut_45":
        "gap(linear) > 0 instead of >= 0: at gap(linear) == 0 brentq on [linear, top] returns the "
        "endpoint linear",
    "scenarios.collateral.x_cover_with_pledged__mutmut_100":
        "gross = gross instead of total when selling all: sell_all means gross >= total with "
        "gross = min(.., total), so gross is total itself",
    "scenarios.collateral.x__sweep_in__mutmut_3":
        "total < 0: a top-up needs covered < lo <= NAV x tau, but with no spot (total 0) the wallet "
        "is the NAV, so covered >= lo: the branch with total == 0 is unreachable",
    **dict.fromkeys(
        [f"scenarios.collateral.x_cover_with_pledged__mutmut_{n}" for n in (14, 15, 18, 19)],
        "the view's futures / cash do not enter pledged_usd (it reads only the spot quantities)"),
    **dict.fromkeys(
        [f"scenarios.collateral.x_cover_with_pledged__mutmut_{n}" for n in (16, 20, 21)],
        "validate=None/True/default: the replay's state is a valid book (its negative cash is "
        "allowed by Book), so validation passes and returns the same view"),
    "scenarios.collateral.x_cover_with_pledged__mutmut_26":
        "total < 0: with total == 0 every u_i is 0, the loop skips them all and the sale is "
        "CollateralSale(0, 0), the same as the early return",
    "scenarios.settlement.x_expiry_ns__mutmut_9":
        "tz_localize(None) on a naive Timestamp is a no-op and a naive .value counts from the "
        "epoch as UTC",
}
