"""The surviving mutants of ``scripts/mutation.py`` argued equivalent: no test can tell them from the
original. Data only, by mutmut name with the one-line argument; kept in step with
``benchmarks/results/mutation.md``.
"""

from __future__ import annotations

from mutation_equivalents_executor import EXECUTOR  # scripts/: the executor/ modules' part
from mutation_equivalents_scenarios import SCENARIOS  # scripts/: the scenarios/ modules' part


def _row(fn: str, n: int) -> str:
    """mutmut's id of mutant ``n`` of the constraint-row function ``fn``: the margin rows live in
    optimizer/margin_constraints.py, the base class in optimizer/constraint_base.py, the other
    rows in optimizer/constraints.py (one module until 2026-12-05; the ids kept their numbers)."""
    cls = fn.split("ǁ")[1] if "ǁ" in fn else ""
    module = ("optimizer.margin_constraints" if cls in ("InitialMargin", "StressMargin")
              else "optimizer.constraint_base" if cls == "Constraint" else "optimizer.constraints")
    return f"{module}.{fn}__mutmut_{n}"


#: Surviving mutants argued equivalent (no test can tell them from the original), by mutmut name,
#: with the argument. Kept in step with benchmarks/results/mutation.md.
EQUIVALENT: dict[str, str] = {
    # models/costs.py: CostModel.build
    **dict.fromkeys(
        [f"models.costs.xǁCostModelǁbuild__mutmut_{n}" for n in (4, 6, 9, 11, 15, 17)],
        "dtype=float dropped from np.array of Python floats (contract_half_spread / contract_adv "
        "return float(); taker_fee is a float field): numpy infers float64 anyway"),
    # models/costs.py: impact_coefficient
    **dict.fromkeys(
        [f"models.costs.x_impact_coefficient__mutmut_{n}" for n in (3, 5, 8, 10)],
        "dtype=float dropped from np.asarray(daily_vol / adv): the callers pass floats, and int "
        "inputs give the same float result after the 0.0 placeholder and the division by sqrt"),
    **dict.fromkeys(
        [f"models.costs.x_impact_coefficient__mutmut_{n}" for n in (29, 37)],
        "another placeholder (1.0 for sigma, 2.0 for ADV) where the market is unknown: the outer "
        "np.where replaces those entries by 0.0 whatever they hold"),
    # optimizer/rounding.py
    **dict.fromkeys(
        [f"optimizer.rounding.x_broken_rows__mutmut_{n}" for n in (11, 14, 16)],
        "zip strictness: every constraint's rows() and violation() have the same length, so "
        "strict=None/omitted/True pair the same labels"),
    **dict.fromkeys(
        [f"optimizer.rounding.x_round_positions__mutmut_{n}" for n in (14, 16)],
        "the min quantities' dtype: float, None or omitted build the same float array from floats"),
    "optimizer.rounding.x_round_positions__mutmut_45":
        "the divisor where a contract has no lot is never used: np.where keeps q_raw there",
    "optimizer.rounding.x_round_positions__mutmut_77":
        "viol < TOL: at viol == TOL the loop (viol > TOL) does not run and broken_rows (x > TOL) "
        "finds nothing, so the result is the same",
    "optimizer.rounding.x_round_positions__mutmut_90":
        "viol >= TOL in the loop: differs only when a repair lands exactly on 1e-9 of total "
        "violation (a float tie at the tolerance); any move must then lower it below 1e-9 - 1e-15",
    "optimizer.rounding.x__best_move__mutmut_49":
        "v <= viol - 1e-15: differs only on an exact float tie at the 1e-15 improvement threshold",
    "optimizer.rounding.x__allowance__mutmut_13":
        "moved < NOISE_EXPOSURE: differs only on an exact float tie at the threshold",
    **dict.fromkeys(
        ["optimizer.rounding.x__allowance__mutmut_5", "optimizer.rounding.x__allowance__mutmut_7"],
        "np.max without initial=0: B has a row per asset and a book has at least one, so the array "
        "is never empty and the maximum is the same"),
    "optimizer.rounding.x__best_move__mutmut_59":
        "m[0] < least + TOL: differs only on an exact float tie at the 1e-9 tie band",
    **dict.fromkeys(
        ["optimizer.rounding.x__best_move__mutmut_62", "optimizer.rounding.x__best_move__mutmut_65"],
        "the min over the tied moves taken also for one tied move or without terms: one move is its "
        "own min, and without terms every objective is 0, so min keeps the first tied move"),
    **dict.fromkeys(
        ["optimizer.rounding.x_round_positions__mutmut_55", "optimizer.rounding.x__best_move__mutmut_22"],
        "_Rules.fallback(None, ...): the index None gives a one-element min-quantity array, which "
        "placeable.fallback compares the same (a one-element truth value)"),
    "optimizer.rounding.x__exposure_at__mutmut_5":
        "o[j] == 1 sends a linear contract (o[j] = 0) through the fill rule, whose x0 = q0 npc makes "
        "every case q npc: the same exposure",
    "optimizer.rounding.x_contracts_of__mutmut_12":
        "off != 1 also sends linear contracts (off = 0) through the fill rule, whose x0 = z0 V = "
        "q0 npc gives z V / npc in every case",
    **dict.fromkeys(
        ["optimizer.rounding.x_contracts_of__mutmut_5", "optimizer.rounding.x_exposure_of__mutmut_1"],
        "'and' for 'or' in the all-zero shortcut: an all-zero offset then takes the per-contract "
        "path, which converts no contract (off != 0 nowhere): the plain conversion either way"),
    "optimizer.rounding.x_snap_small_trades__mutmut_45":
        "size > 51 in the early exit: with the objective not ok, viol is inf and the later "
        "'if small.size > 50: return z' returns z for 51 trades all the same",
    "optimizer.rounding.x_snap_small_trades__mutmut_55":
        "viol < TOL: at viol == TOL the next test (obj_ok and viol <= best_viol + TOL, best_viol >= 0) "
        "returns the same candidate",
    "optimizer.rounding.x_snap_small_trades__mutmut_64":
        "viol < best_viol + TOL: differs only on an exact float tie at the 1e-9 tolerance",
    "optimizer.rounding.x_snap_small_trades__mutmut_99":
        "viol < best_viol + TOL: differs only on an exact float tie at the 1e-9 tolerance",
    # optimizer/terms.py
    **dict.fromkeys(
        [f"optimizer.terms.{fn}__mutmut_{n}" for fn, nums in (
            ("xǁBasisRiskǁbuild", (3, 7, 8, 9)),
            ("xǁCarryCostǁbuild", (2, 6, 7)),
            ("xǁCostToGoǁbuild", (3, 7, 8, 10, 14, 15, 22, 26, 27)),
            ("xǁFuturesTaxǁbuild", (3, 7, 8, 19, 25, 26)),
            ("xǁImpactCostǁbuild", (2, 8, 9)),
            ("xǁLinearTradingCostǁbuild", (2, 8, 9)),
            ("xǁReserveCostǁbuild", (19, 23, 24, 26, 32, 33, 36, 37, 38, 45, 53, 58)),
            ("xǁSpotImpactCostǁbuild", (4, 10, 11)),
            ("xǁSpotTradingCostǁbuild", (4, 10, 11)),
            ("xǁTrackingVarianceǁbuild", (7, 11, 12, 13, 16, 20, 21, 22, 31, 37, 38, 41, 45, 46, 54,
                                          58, 59)),
        ) for n in nums],
        "a cvxpy Parameter's name changed or dropped: names only label parameters in error "
        "messages (optimizer.cvxpy_adapter); the problem and every value are the same"),
    **dict.fromkeys(
        [f"optimizer.terms.{fn}__mutmut_{n}" for fn, nums in (
            ("xǁFuturesTaxǁbuild", (21, 24, 27)),
            ("xǁLinearTradingCostǁbuild", (4, 7, 10)),
            ("xǁReserveCostǁbuild", (28, 31, 34, 47, 50, 51)),
            ("xǁSpotImpactCostǁbuild", (6, 9, 12)),
            ("xǁSpotTradingCostǁbuild", (6, 9, 12)),
            ("xǁTrackingVarianceǁbuild", (33, 36, 39)),
        ) for n in nums],
        "nonneg=True dropped from a Parameter whose sign does not change curvature here (it "
        "multiplies an affine expression, or sits inside pos/max of affine ones) and whose values "
        "are >= 0 by construction: the same DCP problem and values"),
    **dict.fromkeys(
        [f"optimizer.terms.{fn}__mutmut_{n}" for fn, nums in (
            ("xǁImpactCostǁbuild", (13,)),
        ) for n in nums],
        "cp.power(.., 1.5) with approx=True/None (SOC approximation) instead of exact power cones: "
        "the same function and values; the choice is solver robustness at N >= 200 (benchmarks/"
        "large_universe.py), not observable at unit-test size (accepted)"),
    **dict.fromkeys(
        ["optimizer.terms.xǁSpotTaxǁupdate__mutmut_1"],
        "an internal assert written with or: it only differs (AttributeError/TypeError instead of "
        "AssertionError) on data the structure never pairs with the term"),
    **dict.fromkeys(
        ["optimizer.terms.xǁReserveCostǁbuild__mutmut_6", "optimizer.terms.xǁReserveCostǁbuild__mutmut_9"],
        "reshape order of a vector (M,) to (M, 1): C and F order give the same column"),
    **dict.fromkeys(
        [f"optimizer.terms.xǁReserveCostǁupdate__mutmut_{n}" for n in (26, 30, 31)],
        "zip strictness over the per-scenario Parameter lists built together in build(): equal "
        "lengths"),
    # optimizer/constraints.py, margin_constraints.py, constraint_base.py (the rows, their numpy
    # re-checks and duals)
    **dict.fromkeys(
        [_row(fn, n) for fn, nums in (
            ("xǁClusterBandsǁbuild", (3, 9, 10)),
            ("xǁExpiryGuardǁbuild", (4, 10, 11, 14, 20, 21, 24, 30, 31, 42, 48, 49, 51, 57, 58)),
            ("xǁFundingBudgetǁbuild", (3, 7, 8, 10, 11, 12)),
            ("xǁGrossLeverageǁbuild", (3, 7, 8)),
            ("xǁInitialMarginǁbuild", (3, 9, 10, 13, 14, 15, 23, 27, 28)),
            ("xǁPositionLimitǁbuild", (3, 9, 10)),
            ("xǁStressMarginǁbuild", (5, 13, 18, 23, 48)),
            ("xǁTradeLimitǁbuild", (3, 9, 10)),
            ("xǁVolatilityCapǁbuild", (4, 8, 9, 10, 12, 16, 17, 25, 31, 32, 35, 39, 40)),
        ) for n in nums],
        "a cvxpy Parameter's name changed or dropped: names only label parameters in error "
        "messages (optimizer.cvxpy_adapter)"),
    **dict.fromkeys(
        [_row(fn, n) for fn, nums in (
            ("xǁClusterBandsǁbuild", (5, 8, 12)),
            ("xǁExpiryGuardǁbuild", (6, 9, 12, 16, 19, 22, 26, 29, 32, 44, 47, 50, 53, 56, 59)),
            ("xǁGrossLeverageǁbuild", (4, 6, 9)),
            ("xǁInitialMarginǁbuild", (5, 8, 11)),
            ("xǁPositionLimitǁbuild", (5, 8, 11)),
            ("xǁStressMarginǁbuild", (7, 10, 11)),
            ("xǁTradeLimitǁbuild", (5, 8, 11)),
            ("xǁVolatilityCapǁbuild", (13, 15, 18, 27, 30, 33)),
        ) for n in nums],
        "nonneg=True dropped from a Parameter on an affine side of a row (its sign does not "
        "change curvature) whose values are >= 0 by construction"),
    **dict.fromkeys(
        [_row("xǁExpiryGuardǁ_bounds", n) for n in (45, 48)],
        "the chained rows' sign flag at z0_j = 0 (>= for >, <= for <): with z0_j = 0 the first "
        "step a contract is near expiry holds it at 0 (bound |x0_j| = 0) and every chained step "
        "after reads z_{h-1} = 0, so either flag gives z_jh = 0"),
    **dict.fromkeys(
        [_row(fn, n) for fn, nums in (
            ("xǁClusterBandsǁdual_rows", (4, 6, 11, 13)),
            ("xǁConstraintǁdual_rows", (3, 5)),
            ("xǁExpiryGuardǁdual_rows", (4, 6, 11, 13, 17, 19)),
        ) for n in nums],
        "dtype=float dropped when reading cvxpy duals or Parameter values, which are float "
        "arrays already"),
    **dict.fromkeys(
        [f"optimizer.margin_constraints.xǁStressMarginǁbuild__mutmut_{n}" for n in (32, 35, 95, 98)]
        + [f"optimizer.margin_constraints.xǁPledgedValueǁ__init____mutmut_{n}"
           for n in (26, 29, 37, 40)],
        "reshape order of a vector (M,) to (M, 1): C and F order give the same column"),
    # the kinked pledges' rows (PledgedValue) and the spot fees in the margin rows
    **dict.fromkeys(
        ["optimizer.margin_constraints.x_pledged_value__mutmut_8",
         *(f"optimizer.margin_constraints.xǁInitialMarginǁbuild__mutmut_{n}"
           for n in (30, 36, 37, 47, 53, 54, 60, 63, 64, 68, 72, 73)),
         *(f"optimizer.margin_constraints.xǁPledgedValueǁ__init____mutmut_{n}"
           for n in (4, 9, 14, 17, 19)),
         *(f"optimizer.margin_constraints.xǁStressMarginǁbuild__mutmut_{n}" for n in (53, 68, 79))],
        "a cvxpy Parameter's or Variable's name (or the tag that makes it) changed or dropped: "
        "names only label them in error messages (optimizer.cvxpy_adapter)"),
    **dict.fromkeys(
        [*(f"optimizer.margin_constraints.xǁInitialMarginǁbuild__mutmut_{n}"
           for n in (32, 35, 38, 49, 52, 55, 69, 71, 74)),
         *(f"optimizer.margin_constraints.xǁStressMarginǁbuild__mutmut_{n}"
           for n in (55, 58, 59, 70, 73, 74))],
        "nonneg dropped from the fee rate, the spot impact's rate or the budget-per-collateral "
        "Parameter: each multiplies an affine expression (f'(b + q), c' iota, per sum(y)), affine "
        "whatever its sign, and its values are >= 0 by construction"),
    "optimizer.margin_constraints.xǁPledgedValueǁupdate__mutmut_2":
        "an internal assert written with or: it only differs (AttributeError instead of "
        "AssertionError) on data the structure never pairs with the rows",
    "optimizer.constraints.xǁVolatilityCapǁbuild__mutmut_56": "cp.norm(x) defaults to the 2-norm",
    **dict.fromkeys(
        ["optimizer.constraint_base.x_fmt_step__mutmut_4",
         "optimizer.constraint_base.x_fmt_step__mutmut_5"],
        "fmt_step(1.0): f'{1.0:,.0f}' and f'{1.0:g}' are both '1'; no other value is moved"),
    # optimizer/constraint_base.py (the explanations: predict, explain, notes, step phrases, ladder)
    "optimizer.constraint_base.x__next_down__mutmut_7":
        "nxt >= 1e-12: differs only when the next rung is exactly 1e-12 (below 2e-12), an exact "
        "float tie at the ladder's floor: a step of 1e-12 user units (accepted)",
    "optimizer.constraint_base.x__round_down_125__mutmut_17":
        "m 10^k < x (1 + 1e-12): differs only when x (1 + 1e-12) rounds to exactly a rung, an exact "
        "float tie at the 1e-12 tolerance (accepted)",
    **dict.fromkeys(
        [f"optimizer.constraint_base.x__round_down_125__mutmut_{n}" for n in range(25, 31)],
        "the fallback after the loop is unreachable (pragma: no cover): floor(log10(x)) = k puts "
        "x above 10^k (1 - 1e-13), so the 1 x 10^k rung passes the 1e-12 tolerance (checked at "
        "every power of ten from 1e-323 to 1e308, its neighbours and 10^6 random x)"),
    "optimizer.constraint_base.xǁConstraintǁexplain__mutmut_2":
        "note(None): every note() (the base's, InitialMargin's, StressMargin's, ExpiryGuard's) "
        "ignores its row",
    **dict.fromkeys(
        [f"optimizer.constraint_base.xǁConstraintǁexplain__mutmut_{n}" for n in (21, 26)],
        "step_phrase(None, step): every step_phrase() ignores its row"),
    **dict.fromkeys(
        [f"optimizer.constraint_base.xǁConstraintǁpredict__mutmut_{n}" for n in (13, 15, 25, 27)],
        "dtype=float dropped from np.asarray of ctx.z.value or of (b - q).value: cvxpy keeps a "
        "Variable's value as float64 (even an int assignment), so these are float arrays already"),
    "optimizer.constraint_base.xǁConstraintǁpredict__mutmut_68":
        "step >= 0 in the ladder loop: at step 0, rate x 0 > PREDICTION_SHARE x size (a sum of "
        "absolute values, >= 0) is false, so the loop ends there either way",
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
    # optimizer/clarabel_native.py (fbr's equilibration and the kept Clarabel solver)
    **dict.fromkeys(
        [f"optimizer.clarabel_native.xǁNativeAnswerǁ__init____mutmut_{n}" for n in (6, 8)],
        "dtype=float dropped from np.asarray of Clarabel's x: Clarabel returns a list of Python "
        "floats, which numpy makes float64 anyway"),
    **dict.fromkeys(
        [f"optimizer.clarabel_native.xǁEquilibratorǁ__init____mutmut_{n}" for n in (48, 50)],
        "the empty block_rows (no cone blocks) as a float array: it is only read by its size "
        "(the rectification is skipped), never used as an index"),
    **dict.fromkeys(
        [f"optimizer.clarabel_native.xǁEquilibratorǁ__init____mutmut_{n}" for n in (61, 63)],
        "block_sizes as integers: the bincount sums (floats) divided by them give the same means"),
    **dict.fromkeys(
        [f"optimizer.clarabel_native.xǁFreshClarabelǁload__mutmut_{n}" for n in (4, 5)],
        "the settings cache missed: the settings are rebuilt from the same options, identical "
        "(only slower)"),
    **dict.fromkeys(
        [f"optimizer.clarabel_native.xǁSegmentMaxǁ__init____mutmut_{n}" for n in (3, 5, 7)],
        "argsort without kind='stable': any sort keeps each group's entries contiguous, and a "
        "maximum does not depend on their order within the group"),
    "optimizer.clarabel_native.xǁSegmentMaxǁ__init____mutmut_12":
        "bincount without minlength: the counts end at the last non-empty group; the groups past "
        "it are empty and keep the output's 0",
    "optimizer.clarabel_native.xǁSegmentMaxǁ__init____mutmut_24":
        "groups of SHORT + 1 entries read by gathers as well as by the reduction: both compute "
        "the same maximum",
    "optimizer.clarabel_native.xǁSegmentMaxǁ__init____mutmut_36":
        "groups of SHORT entries reduced by both paths: each writes the same maximum",
    # the work arrays the equilibration writes into (performance only: the same values)
    **dict.fromkeys(
        ["optimizer.clarabel_native.x_gather__mutmut_4", "optimizer.clarabel_native.x_gather__mutmut_8"],
        "np.take's mode 'raise' in place of 'clip': every position is in range, so the values are "
        "the same (numpy then buffers the output: slower only)"),
    **dict.fromkeys(
        [*(f"optimizer.clarabel_native.xǁEquilibratorǁ_a_abs__mutmut_{n}" for n in (10, 22)),
         *(f"optimizer.clarabel_native.xǁSegmentMaxǁ__call____mutmut_{n}" for n in (26, 34)),
         "optimizer.clarabel_native.xǁSegmentMaxǁ__init____mutmut_55"],
        "a gather into a new array in place of a kept work array: the same values (a temporary "
        "per gather: slower only)"),
    **dict.fromkeys(
        [f"optimizer.clarabel_native.xǁSegmentMaxǁ__call____mutmut_{n}" for n in (5, 8, 9)],
        "zip without strict=True: the work arrays are built one per group size, as many as the "
        "groups, so the lengths always agree"),
    **dict.fromkeys(
        [f"optimizer.clarabel_native.xǁNativeClarabelǁ_settings__mutmut_{n}" for n in (1, 2, 5)],
        "new settings from the options in place of the kept solver's: the equilibration reads "
        "only its passes and bounds from them, the same in both (the kept settings differ only in "
        "the gap tolerances load_scaled sets)"),
    **EXECUTOR,
    **SCENARIOS,
}
