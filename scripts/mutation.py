"""Mutation testing of fbr's core modules with mutmut 3 (run by hand, outside CI).

    .venv/bin/pip install -e '.[mutation]'         # once: mutmut >= 3.8
    .venv/bin/python scripts/mutation.py            # the core modules, one after the other
    .venv/bin/python scripts/mutation.py executor/plan.py models/costs.py   # a subset
    .venv/bin/python scripts/mutation.py --list     # the modules and the tests run against each
    .venv/bin/python scripts/mutation.py --show models/costs.py   # also print each survivor's diff
    .venv/bin/python scripts/mutation.py --report-only             # re-read the last results
    .venv/bin/python scripts/mutation.py --retest models/margin.py # re-run its open survivors only

For each module the script copies the packages, the tests and pyproject.toml into a scratch folder
(``--workdir``, default ``/tmp/fbr-mutation/<module>``; the working tree is never touched), writes a
``setup.cfg`` ``[mutmut]`` section there (only that module is mutated, only its test files are
run), runs ``mutmut run --max-children N`` (``--jobs``, default 1) and prints, per module, the
mutants, killed, survived, timeouts, no-test ones, the mutants argued equivalent (``EQUIVALENT``
below, each with its one-line argument) and the score

    score = killed (incl. timeouts) / (mutants - equivalent)

mutmut mutates function bodies only (module-level constants and class bodies are not mutated) and
runs, for each mutant, only the tests that called the mutated function during a first stats run.
A test file that does not collect, or a test that fails on the unmutated code (another change in
progress), is left out with a note instead of stopping the run.

Run time (2 cores shared with other jobs, one worker, measured 2026-12-05): settlement 15 s,
rounding 45 s, margin 80 s, costs 2 min, terms 3.5 min, journal 6.5 min, replay 7 min, collateral
8 min, plan 11 min, constraints 20+ min (929 mutants, many in the explanation texts); all ten
about 1.5 hours. ``--retest`` of a module's survivors takes under a minute or two. The exit status
is 1 when a module's score is below ``--fail-under`` (default 0, never). Results and the
survivors ledger: ``benchmarks/results/mutation.md``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("models", "optimizer", "executor", "scenarios", "fbr")
#: Folders the tests read files from (copied next to the packages and into mutmut's mutants/).
DATA = ("examples",)

#: The core modules (issue 13's ten, the journal's schema now a module of its own) and the test
#: files (or folders) that exercise them, directly or through the layer above. mutmut narrows this
#: to the tests that call each mutated function.
MODULES: dict[str, tuple[str, ...]] = {
    "executor/plan.py": ("tests/executor/test_plan.py", "tests/executor/test_plan_checks.py",
                         "tests/executor/test_journal.py", "tests/executor/test_paper.py",
                         "tests/executor/test_live_exactly_once.py",
                         "tests/optimizer/test_checks_wrong_answers.py"),
    "executor/plan_parts.py": ("tests/executor/test_plan.py", "tests/executor/test_plan_checks.py",
                               "tests/executor/test_live_exactly_once.py"),
    "executor/journal.py": ("tests/executor/test_journal.py", "tests/executor/test_paper.py",
                            "tests/executor/test_live_exactly_once.py", "tests/executor/test_status.py",
                            "tests/executor/test_status_funding_income.py"),
    "executor/journal_schema.py": ("tests/executor/test_journal.py",
                                   "tests/fbr/test_execute_cli_errors.py"),
    "optimizer/rounding.py": ("tests/optimizer/test_rounding.py",
                              "tests/optimizer/test_rebalance_instruments.py",
                              "tests/optimizer/test_checks_wrong_answers.py",
                              "tests/optimizer/test_edge_bands.py"),
    "models/margin.py": ("tests/models/test_margin.py", "tests/models/test_margin_state.py",
                         "tests/optimizer/test_reserve.py", "tests/optimizer/test_data_margin_hysteresis.py",
                         "tests/scenarios/test_replay_steps.py"),
    "models/costs.py": ("tests/models/test_costs.py", "tests/scenarios/test_replay_steps.py"),
    "optimizer/terms.py": ("tests/optimizer/test_terms_hand.py", "tests/optimizer/test_terms.py",
                           "tests/optimizer/test_reserve_term.py",
                           "tests/optimizer/test_tax_term_futures.py"),
    "optimizer/constraints.py": ("tests/optimizer/test_constraints_hand.py",
                                 "tests/optimizer/test_constraints.py",
                                 "tests/optimizer/test_constraints_duals.py",
                                 "tests/optimizer/test_constraints_explain.py",
                                 "tests/optimizer/test_data_margin_hysteresis.py"),
    "scenarios/collateral.py": ("tests/scenarios/test_collateral.py",
                                "tests/scenarios/test_collateral_width.py",
                                "tests/scenarios/test_replay_steps.py",
                                "tests/scenarios/test_replay_pledged.py"),
    "scenarios/settlement.py": ("tests/scenarios/test_settlement.py", "tests/scenarios/test_rolls.py",
                                "tests/scenarios/test_rolls_quarterly_marks.py"),
    "scenarios/replay.py": ("tests/scenarios/test_replay.py", "tests/scenarios/test_replay_steps.py",
                            "tests/scenarios/test_replay_pledged.py", "tests/scenarios/test_replay_tax.py",
                            "tests/scenarios/test_replay_funding_forecast.py"),
}

#: Surviving mutants argued equivalent (no test can tell them from the original), by mutmut name,
#: with the argument. Kept in step with benchmarks/results/mutation.md.
EQUIVALENT: dict[str, str] = {
    # models/costs.py: CostModel.build
    **dict.fromkeys(
        [f"models.costs.xǁCostModelǁbuild__mutmut_{n}" for n in (4, 6, 9, 11, 15, 17)],
        "dtype=float dropped from np.array of Python floats (contract_half_spread / contract_adv "
        "return float(); taker_fee is a float field): numpy infers float64 anyway"),
    **dict.fromkeys(
        [f"models.costs.xǁCostModelǁbuild__mutmut_{n}" for n in (23, 25)],
        "dtype=float dropped from np.asarray(daily_vol): the callers pass float arrays, and int vols "
        "give the same float products after the division by sqrt(adv)"),
    "models.costs.xǁCostModelǁbuild__mutmut_39":
        "np.nan_to_num(impact) without nan=0.0: 0.0 is nan_to_num's default for nan",
    # executor/plan.py
    "executor.plan_parts.x__split__mutmut_8":
        "chunk = round_to_step(max_qty, lot, FLOOR) also when lot <= 0: round_to_step returns "
        "float(max_qty) for a step <= 0, the else branch's value",
    "executor.plan_parts.x__split__mutmut_15":
        "lot_step >= 0 instead of > 0: the same (see _split__mutmut_8)",
    "executor.plan_parts.x__split__mutmut_29":
        "int(|q| / chunk) instead of |q| // chunk: they differ only when the quotient rounds to an "
        "integer, and then the remainder (a full chunk, or ~0 dropped by rest > 0) restores the "
        "same leg sizes",
    "executor.plan_parts.x__check_not_expired__mutmut_5":
        "days is None and expiry is None: days_to_expiry is None exactly when expiry is None",
    "executor.plan.x_order_legs__mutmut_22":
        "q >= 0 instead of q > 0: no leg has q == 0 (trade_parts drops a zero delta, _split keeps "
        "the sign of a nonzero q)",
    "executor.plan.x_order_legs__mutmut_32": "up=None instead of up=False: both falsy (ROUND_FLOOR)",
    "executor.plan_parts.x__rounding_warning__mutmut_8":
        "asked < 0 instead of <= 0: asked == 0 means every row asked 0, so removed == 0 < 1 USD "
        "returns None on the next test",
    "executor.plan_parts.x__iso__mutmut_4":
        "t.replace(tzinfo=None) on a naive t (the branch's condition) is t itself: same strftime",
    "executor.plan.x_plan_orders__mutmut_15": "zip(strict=None): book.contracts_vector() has one "
        "entry per contract symbol, so strictness never triggers",
    "executor.plan.x_plan_orders__mutmut_18": "zip without strict: as x_plan_orders__mutmut_15",
    "executor.plan.x_plan_orders__mutmut_23": "zip(strict=False): as x_plan_orders__mutmut_15",
    "executor.plan.x_plan_orders__mutmut_166":
        "te(unrounded) even without a risk model: te() returns None when risk is None",
    "executor.plan_parts.x_round_to_step__mutmut_14":
        "to_integral_value(rounding=None) uses the decimal context's rounding, ROUND_HALF_EVEN",
    "executor.plan_parts.x_round_to_step__mutmut_20": 'Decimal("1E-9") == Decimal("1e-9")',
    "executor.plan.x__target_contracts__mutmut_19":
        "isclose without rel_tol: its default 1e-9 is QTY_RTOL's value",
    "executor.plan.x__target_contracts__mutmut_20": "isclose without abs_tol: its default is 0.0",
    "executor.plan_parts.x_trade_parts__mutmut_28":
        "|q1| >= |q0| with the same sign means q1 == q0, whose delta 0 returned [] above",
    # optimizer/rounding.py
    **dict.fromkeys(
        [f"optimizer.rounding.x_broken_rows__mutmut_{n}" for n in (11, 14, 16)],
        "zip strictness: every constraint's rows() and violation() have the same length, so "
        "strict=None/omitted/True pair the same labels"),
    "optimizer.rounding.x_round_positions__mutmut_28":
        "the 1.0 divisor where a contract has no lot is never used: np.where keeps q_raw there",
    "optimizer.rounding.x_round_positions__mutmut_36":
        "trade >= 0: a zero trade means q == q0, and 'dropping' it sets q to q0 again",
    "optimizer.rounding.x_round_positions__mutmut_60":
        "viol < TOL: at viol == TOL the loop (viol > TOL) does not run and broken_rows (x > TOL) "
        "finds nothing, so the result is the same",
    "optimizer.rounding.x_round_positions__mutmut_71":
        "viol >= TOL in the loop: differs only when a repair lands exactly on 1e-9 of total "
        "violation (a float tie at the tolerance); any move must then lower it below 1e-9 - 1e-15",
    "optimizer.rounding.x_round_positions__mutmut_105":
        "v <= viol - 1e-15: differs only on an exact float tie at the 1e-15 improvement threshold",
    "optimizer.rounding.x_snap_small_trades__mutmut_34":
        "size > 51 in the early exit: with the objective not ok, viol is inf and the later "
        "'if small.size > 50: return z' returns z for 51 trades all the same",
    "optimizer.rounding.x_snap_small_trades__mutmut_44":
        "viol < TOL: at viol == TOL the next test (obj_ok and viol <= best_viol + TOL, best_viol >= 0) "
        "returns the same candidate",
    "optimizer.rounding.x_snap_small_trades__mutmut_53":
        "viol < best_viol + TOL: differs only on an exact float tie at the 1e-9 tolerance",
    "optimizer.rounding.x_snap_small_trades__mutmut_78":
        "viol < best_viol + TOL: differs only on an exact float tie at the 1e-9 tolerance",
    # scenarios/settlement.py
    **dict.fromkeys(
        [f"scenarios.settlement.x_expiry_ns__mutmut_{n}" for n in (11, 15)],
        'tz "utc" and "UTC" are the same zone'),
    "scenarios.settlement.x_expiry_ns__mutmut_13":
        "tz_convert(None) converts to UTC and drops the zone: .value (UTC ns) is unchanged",
    # executor/journal.py
    **dict.fromkeys(
        [f"executor.journal.{fn}__mutmut_{n}" for fn, nums in (
            ("xǁJournalǁ__init__", (21, 22, 25, 26)),
            ("xǁJournalǁ_init_schema", (5, 13)),
            ("xǁJournalǁ_insert_legs", (6, 7, 9, 10)),
            ("xǁJournalǁbook_path", (7, 8)),
            ("xǁJournalǁclose_plan", (8, 9)),
            ("xǁJournalǁfills", (7, 8, 10, 11)),
            ("xǁJournalǁfills_with_legs", (7, 8, 10, 11)),
            ("xǁJournalǁfunding_since", (7, 8, 10, 11)),
            ("xǁJournalǁlast_rebalance", (7, 8, 10, 11, 13, 14)),
            ("xǁJournalǁlatest_positions", (7, 8, 10, 11, 19, 20, 22, 23)),
            ("xǁJournalǁmark_sending", (7, 8, 10, 11, 21, 22)),
            ("xǁJournalǁopen_plans", (7, 10, 11)),
            ("xǁJournalǁorders", (7, 8, 10, 11, 13, 14)),
            ("xǁJournalǁplan", (7, 8)),
            ("xǁJournalǁplan_ids", (5, 6)),
            ("xǁJournalǁplan_status", (7, 8)),
            ("xǁJournalǁrecord_funding", (6, 7, 9)),
            ("xǁJournalǁrecord_funding_once", (6, 7, 9, 10, 17, 18, 20)),
            ("xǁJournalǁrecord_plan", (9, 10, 17, 20, 27, 28, 30, 31)),
            ("xǁJournalǁrecord_positions", (13, 14, 16, 17)),
            ("xǁJournalǁrecord_state", (9, 10, 21, 22, 24, 25, 35, 36, 38)),
            ("xǁJournalǁset_status", (7, 8, 10, 11)),
            ("xǁJournalǁsuccessor", (7, 8, 10, 24, 25, 27, 28)),
        ) for n in nums],
        "SQL keywords and identifiers upper- or lower-cased: SQLite is case-insensitive for both "
        "(no quoted literal changes case)"),
    "executor.journal_schema.x__migrate__mutmut_11":
        "SQL keywords and identifiers upper- or lower-cased: SQLite is case-insensitive for both "
        "(no quoted literal changes case)",
    "executor.journal.xǁJournalǁ__init____mutmut_14":
        "sqlite3.connect without isolation_level=None: every write runs inside _tx's explicit BEGIN "
        "IMMEDIATE ... COMMIT/ROLLBACK, so Python's implicit transactions never open one",
    **dict.fromkeys(
        ["executor.journal.xǁJournalǁ__init____mutmut_15", "executor.journal.xǁJournalǁ__init____mutmut_17"],
        "the busy timeout (30 s -> 5 s default / 31 s) only matters when another process holds the "
        "write lock that long: timing-only, not testable without a 5-30 s wait (accepted)"),
    "executor.journal.xǁJournalǁ_init_schema__mutmut_23":
        "<= SCHEMA_VERSION also migrates a current journal: every column exists, so _migrate only "
        "rewrites the same schema_version",
    "executor.journal.xǁJournalǁrecord_state__mutmut_27":
        "filled >= prev + 1e-15: differs only on an exact float tie at the 1e-15 tolerance",
    # optimizer/terms.py
    **dict.fromkeys(
        [f"optimizer.terms.{fn}__mutmut_{n}" for fn, nums in (
            ("xǁBasisRiskǁbuild", (3, 7, 8, 9)),
            ("xǁCarryCostǁbuild", (2, 6, 7)),
            ("xǁCostToGoǁbuild", (3, 7, 8, 10, 14, 15)),
            ("xǁFuturesTaxǁbuild", (3, 7, 8, 10, 16, 17)),
            ("xǁImpactCostǁbuild", (2, 8, 9)),
            ("xǁLinearTradingCostǁbuild", (2, 8, 9)),
            ("xǁReserveCostǁbuild", (19, 23, 24, 30, 38, 43)),
            ("xǁSpotImpactCostǁbuild", (4, 10, 11)),
            ("xǁSpotTradingCostǁbuild", (4, 10, 11)),
            ("xǁTrackingVarianceǁbuild", (3, 7, 8, 9, 11, 15, 16, 17, 25, 29, 30, 31, 37, 43, 44, 47,
                                          51, 52)),
        ) for n in nums],
        "a cvxpy Parameter's name changed or dropped: names only label parameters in error "
        "messages (optimizer.cvxpy_adapter); the problem and every value are the same"),
    **dict.fromkeys(
        [f"optimizer.terms.{fn}__mutmut_{n}" for fn, nums in (
            ("xǁFuturesTaxǁbuild", (12, 15, 18)),
            ("xǁLinearTradingCostǁbuild", (4, 7, 10)),
            ("xǁReserveCostǁbuild", (32, 35, 36)),
            ("xǁSpotTradingCostǁbuild", (6, 9, 12)),
            ("xǁTrackingVarianceǁbuild", (39, 42, 45)),
        ) for n in nums],
        "nonneg=True dropped from a Parameter whose sign does not change curvature here (it "
        "multiplies an affine expression, or sits inside pos/max of affine ones) and whose values "
        "are >= 0 by construction: the same DCP problem and values"),
    **dict.fromkeys(
        [f"optimizer.terms.{fn}__mutmut_{n}" for fn, nums in (
            ("xǁImpactCostǁbuild", (13, 16, 18)),
            ("xǁSpotImpactCostǁbuild", (16, 19, 21, 24, 27, 29)),
        ) for n in nums],
        "cp.power(.., 1.5) with approx=True/None (SOC approximation) instead of exact power cones: "
        "the same function and values; the choice is solver robustness at N >= 200 (benchmarks/"
        "large_universe.py), not observable at unit-test size (accepted)"),
    **dict.fromkeys(
        ["optimizer.terms.xǁSpotTaxǁupdate__mutmut_1",
         "optimizer.terms.xǁFuturesTaxǁ_coefficients__mutmut_1"],
        "an internal assert written with or: it only differs (AttributeError/TypeError instead of "
        "AssertionError) on data the structure never pairs with the term"),
    **dict.fromkeys(
        ["optimizer.terms.xǁReserveCostǁbuild__mutmut_6", "optimizer.terms.xǁReserveCostǁbuild__mutmut_9"],
        "reshape order of a vector (M,) to (M, 1): C and F order give the same column"),
    **dict.fromkeys(
        [f"optimizer.terms.xǁReserveCostǁupdate__mutmut_{n}" for n in (14, 18, 19)],
        "zip strictness over the per-scenario Parameter lists built together in build(): equal "
        "lengths"),
    # optimizer/constraints.py (the rows, their numpy re-checks and duals; see --only)
    **dict.fromkeys(
        [f"optimizer.constraints.{fn}__mutmut_{n}" for fn, nums in (
            ("xǁClusterBandsǁbuild", (3, 9, 10)),
            ("xǁExpiryGuardǁbuild", (4, 10, 11, 14, 20, 21, 24, 30, 31)),
            ("xǁFundingBudgetǁbuild", (3, 7, 8, 10, 11, 12)),
            ("xǁGrossLeverageǁbuild", (3, 7, 8)),
            ("xǁInitialMarginǁbuild", (3, 9, 10, 13, 14, 15)),
            ("xǁPositionLimitǁbuild", (3, 9, 10)),
            ("xǁStressMarginǁbuild", (5, 13, 18, 23)),
            ("xǁTradeLimitǁbuild", (3, 9, 10)),
            ("xǁVolatilityCapǁbuild", (4, 8, 9, 10, 12, 16, 17, 18, 20, 24,
                                      25, 33, 37, 38, 39, 44, 50, 51, 54, 58, 59)),
        ) for n in nums],
        "a cvxpy Parameter's name changed or dropped: names only label parameters in error "
        "messages (optimizer.cvxpy_adapter)"),
    **dict.fromkeys(
        [f"optimizer.constraints.{fn}__mutmut_{n}" for fn, nums in (
            ("xǁClusterBandsǁbuild", (5, 8, 12)),
            ("xǁExpiryGuardǁbuild", (6, 9, 12, 16, 19, 22, 26, 29, 32)),
            ("xǁGrossLeverageǁbuild", (4, 6, 9)),
            ("xǁInitialMarginǁbuild", (5, 8, 11)),
            ("xǁPositionLimitǁbuild", (5, 8, 11)),
            ("xǁStressMarginǁbuild", (7, 10, 11)),
            ("xǁTradeLimitǁbuild", (5, 8, 11)),
            ("xǁVolatilityCapǁbuild", (21, 23, 26, 46, 49, 52)),
        ) for n in nums],
        "nonneg=True dropped from a Parameter on an affine side of a row (its sign does not "
        "change curvature) whose values are >= 0 by construction"),
    **dict.fromkeys(
        [f"optimizer.constraints.{fn}__mutmut_{n}" for fn, nums in (
            ("xǁClusterBandsǁdual_rows", (4, 6, 11, 13)),
            ("xǁConstraintǁdual_rows", (3, 5)),
            ("xǁExpiryGuardǁdual_rows", (4, 6, 11, 13, 17, 19)),
        ) for n in nums],
        "dtype=float dropped when reading cvxpy duals or Parameter values, which are float "
        "arrays already"),
    **dict.fromkeys(
        [f"optimizer.constraints.xǁStressMarginǁbuild__mutmut_{n}" for n in (32, 35, 51, 54)],
        "reshape order of a vector (M,) to (M, 1): C and F order give the same column"),
    "optimizer.constraints.xǁVolatilityCapǁbuild__mutmut_75": "cp.norm(x) defaults to the 2-norm",
    **dict.fromkeys(
        ["optimizer.constraints.x__fmt__mutmut_4", "optimizer.constraints.x__fmt__mutmut_5"],
        "_fmt(1.0): f'{1.0:,.0f}' and f'{1.0:g}' are both '1'; no other value is moved"),
    # optimizer/constraints.py (the explanations: predict, explain, notes, step phrases, ladder)
    "optimizer.constraints.x__next_down__mutmut_7":
        "nxt >= 1e-12: differs only when the next rung is exactly 1e-12 (below 2e-12), an exact "
        "float tie at the ladder's floor: a step of 1e-12 user units (accepted)",
    "optimizer.constraints.x__round_down_125__mutmut_17":
        "m 10^k < x (1 + 1e-12): differs only when x (1 + 1e-12) rounds to exactly a rung, an exact "
        "float tie at the 1e-12 tolerance (accepted)",
    **dict.fromkeys(
        [f"optimizer.constraints.x__round_down_125__mutmut_{n}" for n in range(25, 31)],
        "the fallback after the loop is unreachable (pragma: no cover): floor(log10(x)) = k puts "
        "x above 10^k (1 - 1e-13), so the 1 x 10^k rung passes the 1e-12 tolerance (checked at "
        "every power of ten from 1e-323 to 1e308, its neighbours and 10^6 random x)"),
    "optimizer.constraints.xǁConstraintǁexplain__mutmut_2":
        "note(None): every note() (the base's, InitialMargin's, StressMargin's, ExpiryGuard's) "
        "ignores its row",
    **dict.fromkeys(
        [f"optimizer.constraints.xǁConstraintǁexplain__mutmut_{n}" for n in (21, 26)],
        "step_phrase(None, step): every step_phrase() ignores its row"),
    **dict.fromkeys(
        [f"optimizer.constraints.xǁConstraintǁpredict__mutmut_{n}" for n in (13, 15, 28, 30)],
        "dtype=float dropped from np.asarray of ctx.z.value or of (b - q).value: cvxpy keeps a "
        "Variable's value as float64 (even an int assignment), so these are float arrays already"),
    "optimizer.constraints.xǁConstraintǁpredict__mutmut_62":
        "step >= 0 in the ladder loop: at step 0, rate x 0 > PREDICTION_SHARE x size (a sum of "
        "absolute values, >= 0) is false, so the loop ends there either way",
    # scenarios/replay.py
    "scenarios.replay.x_run_backtest__mutmut_30":
        "CollateralPolicy() also for a spot-only book: with no contract no position is ever open, "
        "and a sweep needs an open position (sweep_collateral returns Sweep())",
    **dict.fromkeys(
        [f"scenarios.replay.x_run_backtest__mutmut_{n}" for n in (69, 72, 74, 75, 76)],
        "the tax columns' zero start values: _tax sets tax_spot, tax_futures, tax and "
        "tax_deferred on every taxed step before the row is recorded (and an untaxed frame keeps "
        "only STEP_COLUMNS; TAX_COLUMNS[3] is rebuilt as the cumulative sum)"),
    **dict.fromkeys(
        [f"scenarios.replay.x__tax__mutmut_{n}" for n in (47, 56, 58)],
        "re-valuing the state after no tax was paid: value_state of the unchanged state equals "
        "the end-of-step valuation it replaces"),
    "scenarios.replay.x__result__mutmut_1":
        "the default of taxed is never used: run_backtest always passes it",
    **dict.fromkeys(
        [f"scenarios.replay.x__result__mutmut_{n}" for n in (5, 93, 96)],
        "dtype=float dropped / astype(None) on float data: the frames and series stay float64"),
    # models/margin.py
    **dict.fromkeys(
        [f"models.margin.x_tier_maintenance__mutmut_{n}" for n in (4, 6)]
        + [f"models.margin.x_liquidation_gap__mutmut_{n}" for n in (4, 6)]
        + [f"models.margin.x_max_notional_within__mutmut_{n}" for n in (6, 8, 18, 20)]
        + [f"models.margin.xǁMarginModelǁfrom_contracts__mutmut_{n}" for n in (29, 31)],
        "dtype=float dropped from np.asarray/np.array: the inputs are float arrays or lists of "
        "numbers, and every use (abs, products with float rates, division) yields the same floats"),
    "models.margin.x_liquidation_gap__mutmut_32":
        "np.errstate(invalid=None) leaves the error state unchanged: no invalid operation occurs "
        "(n - cap with cap = -inf is +inf) and warnings are not errors in the test setup",
    "models.margin.x_liquidation_gap__mutmut_50":
        "cap >= 0: cap was just mapped to > 0 or -inf, so cap == 0 never occurs",
    # scenarios/collateral.py
    **dict.fromkeys(
        [f"scenarios.collateral.x_sweep_collateral__mutmut_{n}" for n in (55, 56, 64, 73, 82, 116)],
        "the sell-everything branch (sell_all) replaced by the pro-rata formulas: sell_all means "
        "gross == total (gross = min(.., total)), so g = total x v_i / total = v_i, dq = -q_i and "
        "the sweep is total, the same floats"),
    **dict.fromkeys(
        [f"scenarios.collateral.x_cover_with_pledged__mutmut_{n}" for n in (37, 38, 46, 100)],
        "as x_sweep_collateral__mutmut_55: with sell_all, gross == total and the pro-rata share "
        "of each pledged value is that value (units capped at the holding by min())"),
    "scenarios.collateral.x_sweep_collateral__mutmut_38":
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

STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped",
          36: "timeout", -24: "timeout", 24: "timeout", 152: "timeout", 255: "timeout",
          37: "type check", -11: "segfault", -9: "segfault", None: "not checked"}


def _copy_tree(workdir: Path, tests: tuple[str, ...]) -> None:
    """A fresh copy of the packages, the tests and pyproject.toml (no caches) in ``workdir``."""
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    for name in (*PACKAGES, *DATA, "tests"):
        shutil.copytree(ROOT / name, workdir / name, ignore=ignore)
    if any(t.startswith("tests/benchmarks") for t in tests):
        shutil.copytree(ROOT / "benchmarks", workdir / "benchmarks", ignore=ignore)
    shutil.copy2(ROOT / "pyproject.toml", workdir / "pyproject.toml")


def _collectable(workdir: Path, tests: tuple[str, ...]) -> list[str]:
    """The test files of ``tests`` that exist and that pytest can collect in ``workdir`` (a file
    broken by an edit in progress elsewhere is left out, with a note, instead of failing the run)."""
    existing = [t for t in tests if (workdir / t).exists()]
    for t in sorted(set(tests) - set(existing)):
        print(f"    note: {t} does not exist (renamed?); update MODULES in scripts/mutation.py")
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                          *existing], cwd=workdir, capture_output=True, text=True, check=False).stdout
    broken = {line.split()[1] for line in out.splitlines() if line.startswith("ERROR ")}
    for t in sorted(broken):
        print(f"    note: {t} does not collect; left out (see pytest --collect-only {t})")
    return [t for t in existing if t not in broken]


def _setup_cfg(module: str, tests: list[str], deselect: Sequence[str] = ()) -> str:
    extra = "".join(f" --deselect {t}" for t in deselect)
    lines = ["[mutmut]", "source_paths =", *(f"    {p}" for p in PACKAGES),
             f"only_mutate = {module}", "pytest_add_cli_args_test_selection =",
             *(f"    {t}" for t in tests), f"pytest_add_cli_args = -p no:cacheprovider{extra}",
             "use_git_change_detection = false", "also_copy =", *(f"    {d}" for d in DATA), ""]
    return "\n".join(lines)


def _failed_clean_tests(log: Path) -> list[str]:
    """Tests that failed on the unmutated code (mutmut's stats or clean run), from its log."""
    text = log.read_text(errors="replace") if log.exists() else ""
    if "failed to collect stats" not in text and "Failed to run clean test" not in text:
        return []
    return sorted({line.split()[1] for line in text.splitlines()
                   if line.startswith("FAILED ") and "::" in line})


def _mutmut(workdir: Path, module: str, selected: list[str], jobs: int, names: list[str],
            log: Path) -> int:
    """``mutmut run`` (of ``names``, or every mutant); a test that fails on the unmutated code
    (an edit in progress elsewhere) is deselected and the run repeated (up to 3 times)."""
    mutmut = Path(sys.executable).with_name("mutmut")
    deselect: list[str] = []
    rc = 0
    log.write_text("")
    for _ in range(4):
        (workdir / "setup.cfg").write_text(_setup_cfg(module, selected, deselect))
        with log.open("a") as out:
            rc = subprocess.run([str(mutmut), "run", "--max-children", str(jobs), *names], cwd=workdir,
                                stdout=out, stderr=subprocess.STDOUT, check=False).returncode
        failed = [t for t in _failed_clean_tests(log) if t not in deselect]
        if not failed:
            break
        for t in failed:
            print(f"    note: {t} fails on the unmutated code; deselected")
        deselect += failed
        log.write_text("")  # the next attempt's log only
    return rc


def _refresh_copy(workdir: Path, module: str) -> None:
    """The current tests and packages into ``workdir`` and its mutants/, except ``module``
    (mutmut's mutated copy of it stays)."""
    skip = {(ROOT / module).resolve()}

    def ignore(folder: str, names: list[str]) -> list[str]:
        return [n for n in names if n in ("__pycache__", ".pytest_cache") or n.endswith(".pyc")
                or (Path(folder) / n).resolve() in skip]

    for base in (workdir, workdir / "mutants"):
        shutil.rmtree(base / "tests", ignore_errors=True)
        for name in (*PACKAGES, *DATA, "tests"):
            shutil.copytree(ROOT / name, base / name, ignore=ignore, dirs_exist_ok=True)
    (workdir / "mutants" / "mutmut-stats.json").unlink(missing_ok=True)  # tests changed: recollect


def _results(workdir: Path, module: str) -> dict[str, str]:
    meta = json.loads((workdir / "mutants" / f"{module}.meta").read_text())
    return {name: STATUS.get(code, "suspicious") for name, code in meta["exit_code_by_key"].items()}


def run_module(module: str, workdir: Path, jobs: int, show: bool, rerun: bool = True,
               retest: bool = False, only: Sequence[str] = ()) -> dict[str, object]:
    """Run (or with ``retest`` re-run the open survivors of, or with neither only re-read) one
    module's mutants and print its counts, score and open survivors."""
    log = workdir / "mutmut.log"
    rc, seconds = 0, 0.0
    if retest and (workdir / "mutants" / f"{module}.meta").exists():
        rc, seconds = _retest(module, workdir, jobs, log)
        rerun = False
    if rerun:
        rc, seconds = _full_run(module, workdir, jobs, log, only)
    if not (workdir / "mutants" / f"{module}.meta").exists():
        if not log.exists():
            print(f"{module}: not run yet (no results in {workdir})")
            return {"module": module, "error": "not run"}
        tail = log.read_text(errors="replace")[-1500:]
        print(f"{module}: mutmut failed (exit {rc}); see {log}:\n{tail}")
        return {"module": module, "error": rc}
    return _report(module, workdir, seconds, show)


def _retest(module: str, workdir: Path, jobs: int, log: Path) -> tuple[int, float]:
    """The last run's open survivors only, against the current tests and the current code of every
    other module (the mutated file, and so the mutant names, stay those of that run): (rc, s)."""
    meta_path = workdir / "mutants" / f"{module}.meta"
    old_codes = json.loads(meta_path.read_text())["exit_code_by_key"]
    names = [n for n, st in _results(workdir, module).items()
             if st in ("survived", "no tests", "suspicious") and n not in EQUIVALENT]
    _refresh_copy(workdir, module)
    t0 = time.monotonic()
    rc = 0
    if names:
        # mutmut resets every verdict on a new test selection and re-runs only ``names``:
        # the others keep their earlier verdict below
        rc = _mutmut(workdir, module, _collectable(workdir, MODULES[module]), jobs, names, log)
        meta = json.loads(meta_path.read_text())
        codes = meta["exit_code_by_key"]
        for n, code in old_codes.items():
            if n not in names or codes.get(n) is None:
                codes[n] = code
        meta_path.write_text(json.dumps(meta))
    return rc, time.monotonic() - t0


def _full_run(module: str, workdir: Path, jobs: int, log: Path,
              only: Sequence[str]) -> tuple[int, float]:
    """A fresh copy and every mutant of ``module`` (or those matching ``only``): (rc, s)."""
    tests = MODULES[module]
    _copy_tree(workdir, tests)
    t0 = time.monotonic()
    shutil.rmtree(workdir / "mutants", ignore_errors=True)
    prefix = module[:-3].replace("/", ".")
    patterns = [f"{prefix}.{p}" for p in only]
    rc = _mutmut(workdir, module, _collectable(workdir, tests), jobs, patterns, log)
    return rc, time.monotonic() - t0


def _report(module: str, workdir: Path, seconds: float, show: bool) -> dict[str, object]:
    """Counts, score = killed / (mutants - equivalent), the open survivors (with ``show`` their
    diffs) and the EQUIVALENT entries that no longer survive."""
    res = _results(workdir, module)
    unchecked = [n for n, st in res.items() if st == "not checked"]
    if unchecked:  # a run restricted by --only: the score counts the mutants it ran
        print(f"    note: {len(unchecked)} of {len(res)} mutants not run (--only)")
        res = {n: st for n, st in res.items() if st != "not checked"}
    counts = Counter(res.values())
    survivors = sorted(n for n, s in res.items() if s in ("survived", "no tests", "suspicious"))
    equivalent = [n for n in survivors if n in EQUIVALENT]
    open_ = [n for n in survivors if n not in EQUIVALENT]
    killed = counts["killed"] + counts["timeout"] + counts["segfault"]
    denom = len(res) - len(equivalent)
    score = killed / denom if denom else 1.0
    print(f"{module}: {len(res)} mutants, {counts['killed']} killed, {counts['timeout']} timeout, "
          f"{counts['survived']} survived, {counts['no tests']} no tests, {len(equivalent)} "
          f"equivalent -> score {score:.1%} of non-equivalent ({killed}/{denom}) in {seconds:.0f} s")
    mutmut = Path(sys.executable).with_name("mutmut")
    for n in open_:
        print(f"    survivor ({res[n]}): {n}")
        if show:
            diff = subprocess.run([str(mutmut), "show", n], cwd=workdir, capture_output=True,
                                  text=True, check=False).stdout
            print("        " + diff.strip().replace("\n", "\n        "))
    prefix = module[:-3].replace("/", ".") + "."
    stale = [n for n in EQUIVALENT if n.startswith(prefix) and n not in survivors]
    for n in stale:
        print(f"    note: {n} is listed as equivalent but {res.get(n, 'absent')}")
    return {"module": module, "mutants": len(res), "killed": killed, "equivalent": len(equivalent),
            "survivors": open_, "score": score, "seconds": round(seconds)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("modules", nargs="*", help="modules (paths as in MODULES); default: all ten")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/fbr-mutation"))
    ap.add_argument("--jobs", type=int, default=1, help="mutmut workers (default 1)")
    ap.add_argument("--show", action="store_true", help="print each open survivor's diff")
    ap.add_argument("--list", action="store_true", help="list the modules and their tests, then stop")
    ap.add_argument("--json", type=Path, help="also write the per-module results here")
    ap.add_argument("--fail-under", type=float, default=0.0, help="exit 1 below this score (0-1)")
    ap.add_argument("--report-only", action="store_true",
                    help="no run: report the results already in --workdir (after an edit of EQUIVALENT)")
    ap.add_argument("--only", nargs="+", default=(), metavar="GLOB",
                    help="run only the mutants matching these mutmut name globs (after the module "
                         "prefix), e.g. 'xǁ*ǁviolation__mutmut_*' (a slow module in parts)")
    ap.add_argument("--retest", action="store_true",
                    help="re-run only the last run's open survivors against the current tests "
                         "(the source copy of that run is kept; a full run re-copies it)")
    args = ap.parse_args(argv)
    if args.list:
        for m, tests in MODULES.items():
            print(m + "\n    " + "\n    ".join(tests))
        return 0
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        ap.error(f"unknown module(s) {unknown}; choose from {list(MODULES)}")
    if shutil.which("mutmut", path=str(Path(sys.executable).parent)) is None:
        ap.error("mutmut is not installed in this environment: pip install -e '.[mutation]'")
    out = []
    for m in args.modules or list(MODULES):
        out.append(run_module(m, args.workdir / m.replace("/", "_")[:-3], args.jobs, args.show,
                              rerun=not args.report_only, retest=args.retest, only=args.only))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    worst = min((float(r.get("score", 0.0) or 0.0) for r in out), default=1.0)  # type: ignore[arg-type]
    return 1 if worst < args.fail_under else 0


if __name__ == "__main__":
    sys.exit(main())
