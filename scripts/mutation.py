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
in ``scripts/mutation_equivalents.py``, each with its one-line argument) and the score

    score = killed (incl. timeouts) / (mutants - equivalent)

mutmut mutates function bodies only (module-level constants and class bodies are not mutated) and
runs, for each mutant, only the tests that called the mutated function during a first stats run.
A test file that does not collect, or a test that fails on the unmutated code (another change in
progress), is left out with a note instead of stopping the run.

Run time (2 cores shared with other jobs, one worker, measured 2026-12-05): settlement 15 s,
rounding 45 s, margin 80 s, costs 2 min, terms 3.5 min, journal 6.5 min, replay 7 min, collateral
8 min, plan 11 min, the constraint rows 20+ min (929 mutants, many in the explanation texts;
3.7 min with ``--jobs 2`` since they are three modules); all ten about 1.5 hours. ``--retest``
of a module's survivors takes under a minute or two. The exit status is 1 when a module's score is
below ``--fail-under`` (default 0, never). Results and the survivors ledger:
``benchmarks/results/mutation.md``.
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

from mutation_equivalents import EQUIVALENT  # scripts/: the mutants argued equivalent

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("models", "optimizer", "executor", "scenarios", "fbr")
#: Folders the tests read files from (copied next to the packages and into mutmut's mutants/).
DATA = ("examples",)

#: The core modules (issue 13's ten, the journal's schema now a module of its own) and the test
#: files (or folders) that exercise them, directly or through the layer above. mutmut narrows this
#: to the tests that call each mutated function.
#: the tests of the constraint rows (optimizer/constraints.py, margin_constraints.py and their base)
CONSTRAINT_TESTS = ("tests/optimizer/test_constraints_hand.py", "tests/optimizer/test_constraints.py",
                    "tests/optimizer/test_constraints_duals.py",
                    "tests/optimizer/test_constraints_explain.py",
                    "tests/optimizer/test_data_margin_hysteresis.py",
                    "tests/optimizer/test_spot_leg_margin.py",
                    "tests/optimizer/test_pledge_pieces.py", "tests/optimizer/test_planner.py",
                    "tests/optimizer/test_plan_expiry.py", "tests/optimizer/test_context.py")
#: the tests of the replay's steps and fills (scenarios/replay_steps.py, replay_fills.py)
REPLAY_TESTS = ("tests/scenarios/test_replay.py", "tests/scenarios/test_replay_steps.py",
                "tests/scenarios/test_replay_backtest.py", "tests/scenarios/test_replay_pledged.py",
                "tests/scenarios/test_replay_pledged_boundary.py", "tests/scenarios/test_replay_tax.py",
                "tests/scenarios/test_replay_hybrid.py", "tests/scenarios/test_replay_min_days.py",
                "tests/scenarios/test_replay_inverse_exposure.py", "tests/scenarios/test_rolls.py",
                "tests/scenarios/test_collateral.py", "tests/scenarios/test_settlement.py",
                "tests/scenarios/test_whatif.py", "tests/scenarios/test_replay_fills.py",
                "tests/scenarios/test_replay_steps_by_hand.py",
                "tests/scenarios/test_replay_unsolved.py", "tests/scenarios/test_rolls_shared_leg.py")
MODULES: dict[str, tuple[str, ...]] = {
    "executor/plan.py": ("tests/executor/test_plan.py", "tests/executor/test_plan_checks.py",
                         "tests/executor/test_journal.py", "tests/executor/test_paper.py",
                         "tests/executor/test_ccxt_symbol_map.py",
                         "tests/executor/test_live_exactly_once.py",
                         "tests/optimizer/test_checks_wrong_answers.py",
                         "tests/executor/test_plan_inverse_exposure.py",
                         "tests/executor/test_percent_price.py",
                         "tests/executor/test_percent_price_band.py"),
    "executor/plan_parts.py": ("tests/executor/test_plan.py", "tests/executor/test_plan_checks.py",
                               "tests/executor/test_live_exactly_once.py",
                               "tests/executor/test_plan_inverse_exposure.py",
                               "tests/executor/test_plan_parts_cap.py",
                               "tests/executor/test_plan_parts_limits.py",
                               "tests/executor/test_ccxt_gateway_halted.py",
                               "tests/executor/test_ccxt_gateway_leverage_caps.py"),
    "executor/plan_ids.py": ("tests/executor/test_plan.py",
                             "tests/executor/test_ccxt_gateway_bybit.py"),
    "executor/journal.py": ("tests/executor/test_journal.py", "tests/executor/test_paper.py",
                            "tests/executor/test_live_exactly_once.py", "tests/executor/test_status.py",
                            "tests/executor/test_status_funding_income.py",
                            "tests/executor/test_journal_storage.py",
                            "tests/executor/test_rate_limits.py",
                            "tests/executor/test_run_loop_turnover.py",
                            "tests/executor/test_run_store.py"),
    "executor/journal_schema.py": ("tests/executor/test_journal.py",
                                   "tests/fbr/test_execute_cli_errors.py"),
    "optimizer/placeable.py": ("tests/optimizer/test_placeable.py",
                               "tests/optimizer/test_rounding.py"),
    "optimizer/rounding.py": ("tests/optimizer/test_rounding.py",
                              "tests/optimizer/test_placeable.py",
                              "tests/optimizer/test_rounding_inverse.py",
                              "tests/optimizer/test_inverse_exposure.py",
                              "tests/optimizer/test_rebalance_instruments.py",
                              "tests/optimizer/test_checks_wrong_answers.py",
                              "tests/optimizer/test_edge_bands.py"),
    "models/margin.py": ("tests/models/test_margin.py", "tests/models/test_margin_state.py",
                         "tests/optimizer/test_reserve.py", "tests/optimizer/test_data_margin_hysteresis.py",
                         "tests/scenarios/test_replay_steps.py"),
    "models/costs.py": ("tests/models/test_costs.py", "tests/scenarios/test_replay_steps.py"),
    "optimizer/terms.py": ("tests/optimizer/test_terms_hand.py", "tests/optimizer/test_terms.py",
                           "tests/optimizer/test_reserve_term.py",
                           "tests/optimizer/test_tax_term_futures.py",
                           "tests/optimizer/test_cost_to_go_term.py", "tests/optimizer/test_spot_leg.py",
                           "tests/optimizer/test_context.py",
                           "tests/optimizer/test_futures_tax_overlay.py"),
    "optimizer/clarabel_native.py": ("tests/optimizer/test_clarabel_native.py",
                                     "tests/optimizer/test_engines.py"),
    "optimizer/constraints.py": CONSTRAINT_TESTS,
    "optimizer/margin_constraints.py": CONSTRAINT_TESTS,
    "optimizer/constraint_base.py": CONSTRAINT_TESTS,
    "scenarios/collateral.py": ("tests/scenarios/test_collateral.py",
                                "tests/scenarios/test_collateral_width.py",
                                "tests/scenarios/test_replay_steps.py",
                                "tests/scenarios/test_replay_pledged.py",
                                "tests/scenarios/test_replay_hybrid.py"),
    "scenarios/settlement.py": ("tests/scenarios/test_settlement.py", "tests/scenarios/test_rolls.py",
                                "tests/scenarios/test_rolls_quarterly_marks.py"),
    "scenarios/replay_steps.py": REPLAY_TESTS,
    "scenarios/replay_fills.py": REPLAY_TESTS,
    "scenarios/replay.py": ("tests/scenarios/test_replay.py", "tests/scenarios/test_replay_steps.py",
                            "tests/scenarios/test_replay_pledged.py", "tests/scenarios/test_replay_tax.py",
                            "tests/scenarios/test_replay_tax_futures.py",
                            "tests/scenarios/test_replay_funding_forecast.py",
                            "tests/fbr/test_backtest_progress.py",
                            "tests/scenarios/test_replay_hybrid.py", "tests/scenarios/test_rolls.py",
                            "tests/scenarios/test_replay_backtest.py",
                            "tests/scenarios/test_replay_inverse_exposure.py",
                            "tests/scenarios/test_replay_min_days.py",
                            "tests/scenarios/test_replay_unsolved.py",
                            "tests/scenarios/test_replay_forced_sale_lots.py"),
    "executor/band_refusal.py": ("tests/executor/test_band_refusal.py",),
    "executor/late_fills.py": ("tests/executor/test_late_fills.py",),
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
