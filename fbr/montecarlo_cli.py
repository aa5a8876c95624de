"""``fbr montecarlo CONFIG.toml``: policies over K generated market paths, serial or distributed.

The file format is read by :mod:`fbr.montecarlo_config`; this module builds the run (source
history, fitted generator, policy runs), estimates its work (CPU seconds, bytes) before it starts,
runs it and prints or writes the results (tracking error and drawdown in %, costs in bps of mean
NAV per year, P(liquidation) in %).

Paths start at the book's market time and spot prices. Engines: serial (default), ``--processes
N`` (local process pool), ``--workers N`` (a local Dask cluster) or ``--scheduler ADDRESS`` (a
running Dask scheduler). Results are identical whatever the engine.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fbr.console import CliError, err, out, preparing, print_wide, user_errors
from fbr.montecarlo_config import MonteCarloConfig, load_montecarlo_file, policy_runs

if TYPE_CHECKING:  # the heavy modules (numpy, pandas, the optimiser) load when the command runs
    from rich.table import Table

    from fbr.backtest_work import WorkEstimate
    from scenarios.montecarlo import MonteCarloResult, MonteCarloSpec
    from scenarios.sweep import EngineSpec


def build_spec(cfg: MonteCarloConfig) -> tuple[MonteCarloSpec, list[str]]:
    """(MonteCarloSpec, labels): the source history, the fitted generator and the policy runs."""
    import warnings

    import pandas as pd

    from fbr.backtest_config import build_path
    from fbr.backtest_run import backtest_options
    from scenarios.montecarlo import MonteCarloSpec
    from scenarios.path_history import JointHistory, PathFrame
    from scenarios.paths import make_generator

    bt = cfg.backtest
    book = bt.loaded.book
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # data-gap notes of the source history
        source = build_path(bt)
    history = JointHistory.from_market_path(source, book.contracts, book.asset_symbols)
    market = bt.loaded.market
    frame = PathFrame(start=pd.Timestamp(market.time), start_prices={a: market.spot_price(a)
                                                       for a in book.asset_symbols},
                      contracts=tuple(book.contracts))
    generator = make_generator(cfg.generator, history, frame, cfg.mean_block)
    opts = backtest_options(bt)
    spec = MonteCarloSpec(book=book, generator=generator, policies=policy_runs(cfg),
                          paths=cfg.paths, steps=cfg.steps, seed=cfg.seed,
                          liquidation_penalty=float(opts["liquidation_penalty"]),
                          spot_fee=opts["spot_fee"], collateral=opts.get("collateral"),
                          pledged=bool(opts.get("pledged", False)), tax=opts.get("tax"),
                          reserve_yield=bt.loaded.settings.costs.reserve_yield)
    labels = [*bt.loaded.labels, f"source history: {bt.data.label()}",
              f"{cfg.paths} SYNTHETIC paths x {cfg.steps} steps of {cfg.step} ({generator.name}), "
              f"seed {cfg.seed}"]
    return spec, labels


#: Bytes per Monte Carlo task besides its NAV series: the metrics row (about 40 fields, pandas).
BYTES_PER_TASK = 2_000.0
#: Bytes per day and column of a synthetic source history (spot, mark, returns, funding x 3).
BYTES_PER_HISTORY_CELL = 6 * 8.0


def estimate_montecarlo(cfg: MonteCarloConfig, paths_option: str = "montecarlo.paths"
                        ) -> WorkEstimate:
    """The work of a Monte Carlo file before it starts.

    K paths x S steps x R policy runs (one run per policy and grid point) policy steps; CPU
    seconds = K S sum_r c_r (c_r: ``SECONDS_PER_STEP`` of run r's kind) plus the source history's
    days x policies x the default cost; memory = K R ((S + 1) 8 bytes of NAV + ``BYTES_PER_TASK``)
    + the source history (days x columns x ``BYTES_PER_HISTORY_CELL``). ``paths_option`` names
    where K came from (``--paths`` when it overrides the file).
    """
    from fbr.backtest_work import (
        BYTES_PER_STEP,
        SECONDS_PER_STEP_DEFAULT,
        WorkEstimate,
        estimate_steps,
        seconds_per_step,
    )

    runs = policy_runs(cfg)
    kind = {spec.name: spec.kind for spec in cfg.backtest.policies}
    kinds = [kind[r.name] for r in runs]
    K, S, R = float(cfg.paths), float(cfg.steps), float(len(runs))
    history = estimate_steps(cfg.backtest)
    book = cfg.backtest.loaded.book
    cols = len(book.asset_symbols) + len(book.contracts)
    seconds = K * S * seconds_per_step(kinds) + history * cols * SECONDS_PER_STEP_DEFAULT / 10
    memory = (K * R * ((S + 1) * 8.0 + BYTES_PER_TASK) + history * cols * BYTES_PER_HISTORY_CELL
              + S * cols * BYTES_PER_STEP)
    days_name = "data.days" if cfg.backtest.data.source == "synthetic" else "data.end"
    return WorkEstimate(policy_steps=K * S * R, seconds=seconds, bytes=memory,
                        factors=((paths_option, K, 100.0), ("montecarlo.steps", S, 365.0),
                                 ("policy runs", R, 4.0), (days_name, history, 730.0)))


def _engine(workers: int | None, scheduler: str | None, processes: int | None) -> EngineSpec:
    from scenarios.sweep import Engine, EngineSpec

    given = [name for name, v in (("--workers", workers), ("--scheduler", scheduler),
                                  ("--processes", processes)) if v is not None]
    if len(given) > 1:
        raise CliError(f"{' and '.join(given)} were both given. Fix: choose one engine: --workers N "
                       "(local Dask), --scheduler ADDRESS (Dask cluster) or --processes N")
    for name, v in (("--workers", workers), ("--processes", processes)):
        if v is not None and v < 1:
            raise CliError(f"{name} is {v}. Fix: give a whole number >= 1")
    if scheduler is not None:
        return EngineSpec(Engine.DASK, address=scheduler)
    if workers is not None:
        return EngineSpec(Engine.DASK, workers=workers)
    if processes is not None:
        return EngineSpec(Engine.PROCESSES, workers=processes)
    return EngineSpec()


def _summary_table(result: MonteCarloResult, title: str) -> Table:
    from rich.markup import escape
    from rich.table import Table

    from scenarios.mc_report import figure_text
    from scenarios.montecarlo import SUMMARY_METRICS

    pct = {"tracking_error": True, "total_cost_bps": False, "max_drawdown": True,
           "peak_margin_ratio": True}

    def cell(v: float, as_pct: bool) -> str:  # as the HTML report: "-" missing, "unbounded" +inf
        return figure_text(v, as_pct, sign=False)

    t = Table(title=title, title_justify="left")
    t.add_column("policy", overflow="fold")
    t.add_column("paths", justify="right", overflow="fold")
    for col, label in SUMMARY_METRICS:
        unit = " %" if pct[col] else ""
        t.add_column(f"{label}{unit}\nmedian [5, 95]", justify="right", overflow="fold")
    t.add_column("P(liq) %", justify="right", overflow="fold")
    for name, r in result.summary().iterrows():
        cells = [escape(f"{cell(r[f'{c}_p50'], pct[c])} [{cell(r[f'{c}_p5'], pct[c])}, "
                        f"{cell(r[f'{c}_p95'], pct[c])}]") for c, _ in SUMMARY_METRICS]  # [a, b]: no tag
        t.add_row(escape(str(name)), str(int(r["paths"])), *cells,
                  f"{100 * r['p_liquidation']:.1f} ± {100 * r['p_liquidation_se']:.1f}")
    return t


def montecarlo(
    config: Annotated[Path, typer.Argument(help="Monte Carlo file (TOML), see "
                                           "examples/montecarlo_demo.toml.")],
    paths: Annotated[int | None, typer.Option("--paths", help="Number of paths K (overrides the "
                                              "file).")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Sweep seed (overrides the file).")] = None,
    workers: Annotated[int | None, typer.Option("--workers", help="Run on a local Dask cluster of N "
                                                "worker processes.")] = None,
    scheduler: Annotated[str | None, typer.Option("--scheduler", help="Run on the Dask scheduler at "
                                                  "ADDRESS (tcp://host:8786).")] = None,
    processes: Annotated[int | None, typer.Option("--processes", help="Run on N local processes "
                                                  "(no Dask).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of "
                                          "tables.")] = False,
    per_path: Annotated[bool, typer.Option("--per-path", help="With --json: every path's metrics "
                                           "too.")] = False,
    report: Annotated[Path | None, typer.Option("--report", help="HTML report path (default: the "
                                                "file's montecarlo.report).")] = None,
    no_report: Annotated[bool, typer.Option("--no-report", help="Do not write the report.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Run even when the estimated work (paths x "
                                        "steps x policies, memory) is above the limit.")] = False,
) -> None:
    """Run every policy over K generated market paths (block bootstrap or GARCH-t) and report the
    distributions of tracking error, costs, drawdown, margin use and P(liquidation)."""
    from fbr.backtest_work import check_output_file
    from fbr.config_values import whole
    from scenarios.mc_report import write_mc_report

    with user_errors(as_json):
        if not config.exists():
            raise CliError(f"Monte Carlo file {config} does not exist. Fix: give the path to a TOML "
                           "file (see examples/montecarlo_demo.toml)")
        engine = _engine(workers, scheduler, processes)
        cfg = load_montecarlo_file(config)
        if paths is not None:
            cfg = dataclasses.replace(cfg, paths=whole(paths, "--paths", 1))
        if seed is not None:
            cfg = dataclasses.replace(cfg, seed=whole(seed, "--seed", 0))
        target = None if no_report else (report if report is not None else cfg.report)
        check_output_file(target, "--report (or montecarlo.report)")  # before the long work
        estimate_montecarlo(cfg, "--paths" if paths is not None else "montecarlo.paths").check(force)
        show = not as_json or err.is_terminal  # progress on stderr: not in the way of --json
        result, labels = _run(cfg, engine, show)
        written = write_mc_report(result, target, title=f"fbr montecarlo {config.name}") if target else None
        summary = result.to_dict(per_path=per_path)
        summary.update(paths=cfg.paths, steps=cfg.steps, step=cfg.step, seed=cfg.seed,
                       report=str(written) if written else None)
        if as_json:
            print(json.dumps({"status": "ok", **summary}, indent=2, allow_nan=False))
            return
        _print_mc(result, cfg, config, labels, engine, written)


def _run(cfg: MonteCarloConfig, engine: EngineSpec, show: bool) -> tuple[MonteCarloResult, list[str]]:
    """Fit the generator (a spinner) and run every task (a progress bar), both on stderr."""
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from scenarios.montecarlo import run_montecarlo

    with preparing("fitting the path generator to the source history", show):
        spec, labels = build_spec(cfg)
    n_tasks = cfg.paths * len(spec.policies)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err, disable=not show) as bar:
        task = bar.add_task(escape(f"{n_tasks} tasks on {engine.describe()}"), total=n_tasks)
        result = run_montecarlo(spec, engine, on_done=lambda: bar.advance(task), labels=labels)
    return result, labels


def _print_mc(result: MonteCarloResult, cfg: MonteCarloConfig, config: Path, labels: list[str],
              engine: EngineSpec, written: Path | None) -> None:
    """The human output: labels, engine, the summary table, the report written."""
    from rich.markup import escape

    out.rule(f"fbr montecarlo {config.name}")
    for label in labels:
        out.print(f"[yellow]{escape(label)}[/yellow]")
    out.print(f"engine: {escape(engine.describe())}")
    print_wide(_summary_table(result, f"{cfg.paths} paths x {cfg.steps} steps"), width=150)
    for note in result.held_notes():
        out.print(f"[yellow]note: {escape(note)}[/yellow]")
    if written:
        out.print(f"report written to [bold]{escape(str(written))}[/bold]")


def register(app: typer.Typer) -> None:
    """Add ``fbr montecarlo`` to the CLI."""
    app.command("montecarlo")(montecarlo)


__all__ = ["build_spec", "estimate_montecarlo", "register"]
