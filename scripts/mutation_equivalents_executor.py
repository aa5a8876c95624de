"""The surviving mutants of the executor/ modules argued equivalent (``scripts/mutation.py``): the
order plan and its parts, and the journal. Merged into ``mutation_equivalents.EQUIVALENT``; data
only, kept in step with ``benchmarks/results/mutation.md``.
"""

from __future__ import annotations

EXECUTOR: dict[str, str] = {
    # executor/plan.py
    "executor.plan_parts.x_capped_target__mutmut_12":
        "|q1| npc < cap instead of <=: at |q1| npc == cap exactly the room floor(cap / npc) to the "
        "lot is |q1| (a lot multiple), and a held position past it on q1's side is caught by the "
        "reduction branch first, so the same q1 comes back",
    "executor.plan_parts.x_capped_target__mutmut_30":
        "|q1| < |q0| instead of <= in the reduction branch: at |q1| == |q0| the capped branch returns "
        "max(room, |q0|) with q1's sign, and |q0| > room there (the position is past the cap): q1",
    "executor.plan_parts.x_capped_target__mutmut_8":
        "npc < 0 instead of <= 0: at npc == 0 the next test |q1| x 0 <= cap returns q1 as well",
    "executor.plan_parts.x_drop_reason__mutmut_11":
        "part.contracts <= 0 instead of < 0: a trade part is never 0 contracts (trade_parts drops a "
        "zero delta)",
    "executor.plan_parts.x_move_parts__mutmut_11":
        "q1 >= 0 instead of > 0 for the limit-price factor: at q1 == 0 capped_target returns q1 "
        "whatever npc (|0| npc <= cap)",
    "executor.plan_parts.x_near_expiry__mutmut_4":
        "days is None and expiry is None: days_to_expiry is None exactly when expiry is None",
    "executor.plan.x_order_legs__mutmut_22":
        "q >= 0 instead of q > 0: no leg has q == 0 (trade_parts drops a zero delta, _split keeps "
        "the sign of a nonzero q)",
    "executor.plan_parts.x__rounding_warning__mutmut_8":
        "asked < 0 instead of <= 0: asked == 0 means every row asked 0, so removed == 0 < 1 USD "
        "returns None on the next test",
    "executor.plan_parts.x__iso__mutmut_4":
        "t.replace(tzinfo=None) on a naive t (the branch's condition) is t itself: same strftime",
    "executor.plan.x_plan_orders__mutmut_18": "zip(strict=None): book.contracts_vector() has one "
        "entry per contract symbol, so strictness never triggers",
    "executor.plan.x_plan_orders__mutmut_21": "zip without strict: as x_plan_orders__mutmut_18",
    "executor.plan.x_plan_orders__mutmut_26": "zip(strict=False): as x_plan_orders__mutmut_18",
    "executor.plan.x_plan_orders__mutmut_185":
        "te(unrounded) even without a risk model: te() returns None when risk is None",
    "executor.plan_parts.x_round_to_step__mutmut_14":
        "to_integral_value(rounding=None) uses the decimal context's rounding, ROUND_HALF_EVEN",
    "executor.plan_parts.x_round_to_step__mutmut_20": 'Decimal("1E-9") == Decimal("1e-9")',
    "executor.plan_parts.x_target_contracts__mutmut_1":
        "offset's default 1.0 instead of 0.0: the only caller (executor.plan.plan_orders) always "
        "passes it",
    **dict.fromkeys(
        [f"executor.plan_parts.x_target_contracts__mutmut_{n}" for n in (15, 49)],
        "isclose without rel_tol: its default 1e-9 is QTY_RTOL's value"),
    **dict.fromkeys(
        [f"executor.plan_parts.x_target_contracts__mutmut_{n}" for n in (16, 50)],
        "isclose without abs_tol: its default is 0.0"),
    **dict.fromkeys(
        [f"executor.plan_parts.x_target_contracts__mutmut_{n}" for n in (20, 31)],
        "the fill rule for a linear position too (offset 0): its x0 = q0 npc makes every case "
        "x / npc up to float noise, which the lot rounding removes"),
    "executor.plan_parts.x_target_contracts__mutmut_29":
        "notional_per_contract(None) in the fill rule's branch: it runs only for offset != 0, an "
        "inverse position, whose USD per contract is its size whatever the price",
    **dict.fromkeys(
        [f"executor.plan_parts.x_target_contracts__mutmut_{n}" for n in (7, 8)],
        "the early (q0, q0) for a target within 1e-9 of the held exposure taken for a linear "
        "position too (offset == 0, or != 1): the plain path rounds that target to q0 as well "
        "(only the unrounded figure differs, by under 1e-9 relative); for an inverse position the "
        "fill rule maps x0 to q0 + 0 = q0, and an inverse PnL of exactly 1 USD is the one other "
        "difference"),
    **dict.fromkeys(
        [f"executor.plan.x_plan_orders__mutmut_{n}" for n in (31, 34, 40)],
        "zip(strict=None/False/absent) for the exposure offsets: Book.exposure_offset has one "
        "entry per contract symbol, so strictness never triggers"),
    **dict.fromkeys(
        [f"executor.plan.x_plan_orders__mutmut_{n}" for n in (60, 64)],
        "the default target of a contract the solution leaves out, the offset added always "
        "('or True', != 1): for a linear position the offset is 0, the same q0 npc (for an inverse "
        "one the offset is added either way)"),
    "executor.plan_parts.x_trade_parts__mutmut_28":
        "|q1| >= |q0| with the same sign means q1 == q0, whose delta 0 returned [] above",
    # executor/journal.py
    **dict.fromkeys(
        [f"executor.journal.{fn}__mutmut_{n}" for fn, nums in (
            ("xǁJournalǁ__init__", (21, 22, 25, 26)),
            ("xǁJournalǁ_init_schema", (5, 13)),
            ("xǁJournalǁ_insert_legs", (6, 7, 9, 10)),
            ("xǁJournalǁbook_path", (7, 8)),
            ("xǁJournalǁsent_between", (7, 8, 10, 11)),
            ("xǁJournalǁset_silence", (6, 7)),
            ("xǁJournalǁsilence_until", (7, 8)),
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
            ("xǁJournalǁplan_account", (7, 8)),
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
    "executor.journal_schema.x__default_named_apart__mutmut_2":
        "`not path and not book_path` for `or`: with one path empty, the realpath of '' (the "
        "working folder) differs from the other, and the stem check then compares the book's "
        "name with '' (the empty path's stem), false for every book (a name is never empty): "
        "False either way",
    **dict.fromkeys(
        [f"executor.journal_schema.x_one_book__mutmut_{n}" for n in (7, 8, 10, 11)],
        "SQL keywords and identifiers upper- or lower-cased: SQLite is case-insensitive for both "
        "(no quoted literal changes case)"),
    "executor.journal.xǁJournalǁ__init____mutmut_37":
        "getattr default 1 for 0: an error without SQLite's code is then SQLITE_ERROR (1), which "
        "is neither busy nor storage, the same message as 0",
    "executor.journal.x_journal_busy__mutmut_11":
        "getattr default 1 for 0: an error without SQLite's code is then SQLITE_ERROR (1), not "
        "busy either",
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
    # executor/late_fills.py
    "executor.late_fills.x_find_late_fills__mutmut_62":
        "log.warning(msg) instead of log.warning('%s', msg): the same record unless msg holds a "
        "'%', and it holds only journal ids, a contract symbol, a side and numbers",
}
