"""``fbr montecarlo CONFIG.toml``: policies over K generated market paths, serial or distributed.

A Monte Carlo file is a backtest file (``fbr/backtest_config.py``: ``book``, ``[data]``,
``[[policies]]``, ``[backtest]``) plus a ``[montecarlo]`` section. ``[data]`` names the *source
history* the path generator is fitted to (default: the embedded synthetic generator's history,
seed 7, 365 days; ``source = "data"`` reads the shared data folder)::

    [montecarlo]
    generator = "bootstrap"     # "bootstrap" (stationary block bootstrap) | "garch_t"
    paths = 200                 # K
    steps = 365                 # steps per path
    step = "1d"                 # "1d" | "8h" (8h needs source = "data")
    seed = 1                    # path k is seeded by SeedSequence([seed, k])
    mean_block = 20             # mean block length (steps) of the bootstrap (funding too, for garch_t)
    source = "synthetic"        # shorthand for [data] source
    report = "out/montecarlo.html"

    [montecarlo.grid]           # optional: every policy taking the parameter runs once per value
    band = ["2%", "5%"]

Paths start at the book's market time and spot prices. Engines: serial (default), ``--processes
N`` (local process pool), ``--workers N`` (a local Dask cluster) or ``--scheduler ADDRESS`` (a
running Dask scheduler). Results are identical whatever the engine.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from fbr.backtest_config import POLICY_PARAMS, BacktestConfig, PolicySpec, WorkEstimate
from models.errors import ValidationError
from optimizer.policies import Policy
from scenarios.market_path import MarketPath
from scenarios.montecarlo import ParamValue, PolicyRun
from scenarios.paths import GeneratorKind

MC_KEYS = ("generator", "paths", "steps", "step", "seed", "mean_block", "source", "report", "grid")
MC_STEPS = ("1d", "8h")
DEFAULT_MC_REPORT = "out/montecarlo.html"


@dataclass(frozen=True)
class MonteCarloConfig:
    """A validated Monte Carlo file: the backtest part and the [montecarlo] section."""

    backtest: BacktestConfig
    generator: GeneratorKind = GeneratorKind.BOOTSTRAP
    paths: int = 100
    steps: int = 365
    step: str = "1d"
    seed: int = 0
    mean_block: float = 20.0
    report: Path | None = Path(DEFAULT_MC_REPORT)
    grid: Mapping[str, tuple[Any, ...]] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class ConfigPolicy:
    """A picklable policy factory: the file's policy entry with the task's parameters, built by
    ``fbr.backtest_config.build_policy`` (fresh per path)."""

    spec: PolicySpec
    cfg: BacktestConfig

    def __call__(self, path: MarketPath, params: Mapping[str, ParamValue]) -> Policy:
        from fbr.backtest_config import build_policy

        spec = dataclasses.replace(self.spec, params={**self.spec.params, **params})
        return build_policy(spec, self.cfg, path)


def _whole(value: Any, field: str, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValidationError(field, f"is {value!r}", f"give a whole number >= {lo}")
    return int(value)


def load_montecarlo_file(path: str | Path) -> MonteCarloConfig:
    """Read and validate a Monte Carlo file (its book file too)."""
    from fbr.config_values import read_toml

    p = Path(path)
    data = read_toml(p, "montecarlo", "examples/montecarlo_demo.toml")
    try:
        return parse_montecarlo(data, source=p)
    except ValidationError as exc:
        if "(in " in exc.problem:
            raise
        raise ValidationError(exc.field, f"{exc.problem} (in {p})", exc.fix) from exc


def parse_montecarlo(data: Mapping[str, Any], *, source: Path) -> MonteCarloConfig:
    """The [montecarlo] section, then the rest as a backtest file."""
    from fbr.backtest_config import parse_backtest
    from fbr.config_values import check_keys as _check_keys
    from fbr.config_values import number as _number
    from fbr.config_values import string as _string
    from fbr.config_values import sub_table as _table

    mc = _table(data, "montecarlo", "")
    _check_keys(mc, MC_KEYS, "montecarlo")
    rest = {k: v for k, v in data.items() if k != "montecarlo"}
    data_table = dict(_table(rest, "data", ""))
    src = mc.get("source", data_table.get("source", "synthetic"))
    if not isinstance(src, str) or src.lower() not in ("synthetic", "data"):
        raise ValidationError("montecarlo.source", f"is {src!r}", "use 'synthetic' or 'data'")
    src = src.lower()
    if str(data_table.get("source", src)).lower() != src:
        raise ValidationError("montecarlo.source", f"is {src!r} but data.source is "
                              f"{data_table['source']!r}", "give the source in one place")
    step = mc.get("step", data_table.get("step", "1d"))
    if not isinstance(step, str) or step.lower() not in MC_STEPS:
        raise ValidationError("montecarlo.step", f"is {step!r}", f"use one of {list(MC_STEPS)}")
    step = step.lower()
    if src == "synthetic" and step != "1d":
        raise ValidationError("montecarlo.step", f"is {step!r}, but the synthetic history is daily",
                              'use step = "1d", or source = "data" for 8h steps')
    if src == "data":
        if str(data_table.get("step", step)).lower() != step:
            raise ValidationError("montecarlo.step", f"is {step!r} but data.step is "
                                  f"{data_table['step']!r}", "give the step in one place")
        data_table["step"] = step
    data_table["source"] = src
    rest["data"] = data_table
    bt = parse_backtest(rest, source=source)
    gen = mc.get("generator", "bootstrap")
    options = [g.value for g in GeneratorKind]
    if not isinstance(gen, str) or gen.lower() not in options:
        raise ValidationError("montecarlo.generator", f"is {gen!r}", f"use one of {options}")
    mean_block = _number(mc.get("mean_block", 20.0), "montecarlo.mean_block")
    if mean_block < 1:
        raise ValidationError("montecarlo.mean_block", f"is {mc['mean_block']!r}",
                              "give a mean block length >= 1 step")
    report = Path(_string(mc["report"], "montecarlo.report")) if "report" in mc else Path(
        DEFAULT_MC_REPORT)
    grid_table = _table(mc, "grid", "montecarlo")
    grid: dict[str, tuple[Any, ...]] = {}
    accepted = {k for spec in bt.policies for k in POLICY_PARAMS[spec.kind]}
    for key, values in grid_table.items():
        where = f"montecarlo.grid.{key}"
        if key not in accepted:
            raise ValidationError(where, "is not a parameter of any listed policy",
                                  f"use one of {sorted(accepted)}")
        if not isinstance(values, list) or not values:
            raise ValidationError(where, f"is {values!r}", f'give a list of values, e.g. {key} = [...]')
        grid[key] = tuple(values)
    cfg = MonteCarloConfig(backtest=bt, generator=GeneratorKind(gen.lower()),
                           paths=_whole(mc.get("paths", 100), "montecarlo.paths", 1),
                           steps=_whole(mc.get("steps", 365), "montecarlo.steps", 1), step=step,
                           seed=_whole(mc.get("seed", 0), "montecarlo.seed", 0),
                           mean_block=mean_block, report=report, grid=grid)
    policy_runs(cfg)  # validates every grid value now, not in a worker
    return cfg


def policy_runs(cfg: MonteCarloConfig) -> tuple[PolicyRun, ...]:
    """One run per policy entry and point of the grid restricted to its parameters; grid values
    are parsed like the entry's own keys (``"5%"`` -> 0.05)."""
    import itertools

    from fbr.backtest_config import _policy

    runs: list[PolicyRun] = []
    for k, spec in enumerate(cfg.backtest.policies):
        keys = sorted(key for key in cfg.grid if key in POLICY_PARAMS[spec.kind])
        factory = ConfigPolicy(spec, cfg.backtest)
        if not keys:
            runs.append(PolicyRun(spec.name, factory))
            continue
        parsed: list[list[ParamValue]] = []
        for key in keys:
            vals: list[ParamValue] = []
            for j, raw in enumerate(cfg.grid[key]):
                row = {"kind": spec.kind, "name": spec.name, **spec.params, key: raw}
                try:
                    vals.append(_policy(row, f"policies[{k}]").params[key])
                except ValidationError as exc:
                    raise ValidationError(f"montecarlo.grid.{key}[{j}]",
                                          f"{exc.problem} (for policy {spec.name!r})", exc.fix) from exc
            parsed.append(vals)
        for point in itertools.product(*parsed):
            runs.append(PolicyRun(spec.name, factory, tuple(zip(keys, point, strict=True))))
    return tuple(runs)


def build_spec(cfg: MonteCarloConfig) -> tuple[Any, list[str]]:
    """(MonteCarloSpec, labels): the source history, the fitted generator and the policy runs."""
    import warnings

    from fbr.backtest_config import backtest_options, build_path
    from scenarios.montecarlo import MonteCarloSpec
    from scenarios.paths import JointHistory, PathFrame, make_generator

    bt = cfg.backtest
    book = bt.loaded.book
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # data-gap notes of the source history
        source = build_path(bt)
    history = JointHistory.from_market_path(source, book.contracts, book.asset_symbols)
    market = bt.loaded.market
    frame = PathFrame(start=market.time, start_prices={a: market.spot_price(a)
                                                       for a in book.asset_symbols},
                      contracts=tuple(book.contracts))
    generator = make_generator(cfg.generator, history, frame, cfg.mean_block)
    opts = backtest_options(bt)
    spec = MonteCarloSpec(book=book, generator=generator, policies=policy_runs(cfg),
                          paths=cfg.paths, steps=cfg.steps, seed=cfg.seed,
                          liquidation_penalty=float(opts["liquidation_penalty"]),
                          spot_fee=opts["spot_fee"], collateral=opts.get("collateral"),
                          pledged=bool(opts.get("pledged", False)))
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
    from fbr.backtest_config import (
        BYTES_PER_STEP,
        SECONDS_PER_STEP_DEFAULT,
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


def _engine(workers: int | None, scheduler: str | None, processes: int | None) -> Any:
    from fbr.cli import CliError
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


def _summary_table(result: Any, title: str) -> Any:
    from rich.markup import escape
    from rich.table import Table

    from scenarios.montecarlo import SUMMARY_METRICS

    pct = {"tracking_error": True, "total_cost_bps": False, "max_drawdown": True,
           "peak_margin_ratio": True}

    def cell(v: float, as_pct: bool) -> str:
        if v != v:
            return "-"
        return f"{100 * v:.2f}" if as_pct else f"{v:,.1f}"

    t = Table(title=title, title_justify="left")
    t.add_column("policy", no_wrap=True)
    t.add_column("paths", justify="right")
    for col, label in SUMMARY_METRICS:
        unit = " %" if pct[col] else ""
        t.add_column(f"{label}{unit}\nmedian [5, 95]", justify="right")
    t.add_column("P(liq) %", justify="right")
    for name, r in result.summary().iterrows():
        cells = [f"{cell(r[f'{c}_p50'], pct[c])} [{cell(r[f'{c}_p5'], pct[c])}, "
                 f"{cell(r[f'{c}_p95'], pct[c])}]" for c, _ in SUMMARY_METRICS]
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
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from fbr.backtest_config import check_output_file
    from fbr.cli import CliError, _preparing, err, out, user_errors
    from scenarios.mc_report import write_mc_report
    from scenarios.montecarlo import run_montecarlo

    with user_errors(as_json):
        if not config.exists():
            raise CliError(f"Monte Carlo file {config} does not exist. Fix: give the path to a TOML "
                           "file (see examples/montecarlo_demo.toml)")
        engine = _engine(workers, scheduler, processes)
        cfg = load_montecarlo_file(config)
        if paths is not None:
            cfg = dataclasses.replace(cfg, paths=_whole(paths, "--paths", 1))
        if seed is not None:
            cfg = dataclasses.replace(cfg, seed=_whole(seed, "--seed", 0))
        target = None if no_report else (report if report is not None else cfg.report)
        check_output_file(target, "--report (or montecarlo.report)")  # before the long work
        estimate_montecarlo(cfg, "--paths" if paths is not None else "montecarlo.paths").check(force)
        show = not as_json or err.is_terminal  # progress on stderr: not in the way of --json
        with _preparing("fitting the path generator to the source history", show):
            spec, labels = build_spec(cfg)
        n_tasks = cfg.paths * len(spec.policies)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=err, disable=not show) as bar:
            task = bar.add_task(escape(f"{n_tasks} tasks on {engine.describe()}"), total=n_tasks)
            result = run_montecarlo(spec, engine, on_done=lambda: bar.advance(task), labels=labels)
        written = write_mc_report(result, target, title=f"fbr montecarlo {config.name}") if target else None
        summary = result.to_dict(per_path=per_path)
        summary.update(paths=cfg.paths, steps=cfg.steps, step=cfg.step, seed=cfg.seed,
                       report=str(written) if written else None)
        if as_json:
            print(json.dumps(summary, indent=2, allow_nan=False))
            return
        out.rule(f"fbr montecarlo {config.name}")
        for label in labels:
            out.print(f"[yellow]{escape(label)}[/yellow]")
        out.print(f"engine: {escape(engine.describe())}")
        from rich.console import Console

        table = _summary_table(result, f"{cfg.paths} paths x {cfg.steps} steps")
        (out if out.is_terminal else Console(width=max(out.width, 150), highlight=False)).print(table)
        if written:
            out.print(f"report written to [bold]{escape(str(written))}[/bold]")


def register(app: typer.Typer) -> None:
    """Add ``fbr montecarlo`` to the CLI."""
    app.command("montecarlo")(montecarlo)


__all__ = ["ConfigPolicy", "MonteCarloConfig", "build_spec", "estimate_montecarlo",
           "load_montecarlo_file", "policy_runs", "register"]
