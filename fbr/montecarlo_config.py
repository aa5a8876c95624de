"""Monte Carlo files: reading and validating the ``[montecarlo]`` section (``fbr montecarlo``).

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

Units: ``steps`` and ``mean_block`` in steps of ``step``; grid values as the policies' own keys
(``"5%"`` -> 0.05). :func:`policy_runs` expands the grid into one run per policy and grid point.
Heavy modules load inside the functions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.errors import ValidationError

if TYPE_CHECKING:  # the heavy modules (numpy, pandas, the optimiser) load when the command runs
    from fbr.backtest_config import BacktestConfig
    from fbr.backtest_policies import PolicySpec
    from fbr.config_values import Table
    from optimizer.policies import Policy
    from scenarios.market_path import MarketPath
    from scenarios.montecarlo import ParamValue, PolicyRun
    from scenarios.paths import GeneratorKind

MC_KEYS = ("generator", "paths", "steps", "step", "seed", "mean_block", "source", "report", "grid")
MC_STEPS = ("1d", "8h")
DEFAULT_MC_REPORT = "out/montecarlo.html"


def _default_generator() -> GeneratorKind:
    from scenarios.paths import GeneratorKind

    return GeneratorKind.BOOTSTRAP


@dataclass(frozen=True)
class MonteCarloConfig:
    """A validated Monte Carlo file: the backtest part and the [montecarlo] section."""

    backtest: BacktestConfig
    generator: GeneratorKind = dataclasses.field(default_factory=_default_generator)
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
        from fbr.backtest_run import build_policy

        spec = dataclasses.replace(self.spec, params={**self.spec.params, **params})
        return build_policy(spec, self.cfg, path)


def load_montecarlo_file(path: str | Path) -> MonteCarloConfig:
    """Read and validate a Monte Carlo file (its book file too)."""
    from models.toml_file import load_toml_file

    return load_toml_file(path, "montecarlo", "examples/montecarlo_demo.toml",
                          lambda data, p: parse_montecarlo(data, source=p))


def _source_and_step(mc: Table, data_table: Table) -> str:
    """Check the source history ("synthetic" or "data") and its step ("1d" or "8h") of
    [montecarlo] against [data], write both into ``data_table``; return the step."""
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
    return step


def _grid(mc: Table, bt: BacktestConfig) -> dict[str, tuple[object, ...]]:
    """The [montecarlo.grid] table: parameter -> its values (each a parameter of a listed policy)."""
    from fbr.backtest_policies import POLICY_PARAMS
    from fbr.config_values import sub_table as _table

    grid_table = _table(mc, "grid", "montecarlo")
    grid: dict[str, tuple[object, ...]] = {}
    accepted = {k for spec in bt.policies for k in POLICY_PARAMS[spec.kind]}
    for key, values in grid_table.items():
        where = f"montecarlo.grid.{key}"
        if key not in accepted:
            raise ValidationError(where, "is not a parameter of any listed policy",
                                  f"use one of {sorted(accepted)}")
        if not isinstance(values, list) or not values:
            raise ValidationError(where, f"is {values!r}", f'give a list of values, e.g. {key} = [...]')
        grid[key] = tuple(values)
    return grid


def parse_montecarlo(data: Mapping[str, object], *, source: Path) -> MonteCarloConfig:
    """The [montecarlo] section, then the rest as a backtest file."""
    from fbr.backtest_config import parse_backtest
    from fbr.config_values import check_keys as _check_keys
    from fbr.config_values import number as _number
    from fbr.config_values import string as _string
    from fbr.config_values import sub_table as _table
    from fbr.config_values import whole
    from scenarios.paths import GeneratorKind

    mc = _table(data, "montecarlo", "")
    _check_keys(mc, MC_KEYS, "montecarlo")
    rest = {k: v for k, v in data.items() if k != "montecarlo"}
    data_table = dict(_table(rest, "data", ""))
    step = _source_and_step(mc, data_table)
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
    grid = _grid(mc, bt)
    cfg = MonteCarloConfig(backtest=bt, generator=GeneratorKind(gen.lower()),
                           paths=whole(mc.get("paths", 100), "montecarlo.paths", 1),
                           steps=whole(mc.get("steps", 365), "montecarlo.steps", 1), step=step,
                           seed=whole(mc.get("seed", 0), "montecarlo.seed", 0),
                           mean_block=mean_block, report=report, grid=grid)
    policy_runs(cfg)  # validates every grid value now, not in a worker
    return cfg


def _check_repeat(where: str, run: PolicyRun, earlier: list[PolicyRun]) -> None:
    """Refuse a grid value given before (``run`` against the runs of the earlier values of its
    parameter), as parsed ("2%" and 0.02 are one value) or as the run label shows it: two runs of
    one policy with one label are refused later, after the source history is loaded."""
    (_key, value), = run.params
    for prev in earlier:
        (_key, before), = prev.params
        if before == value:
            raise ValidationError(where, f"repeats {value!r}", "give each value once")
        if prev.label == run.label:
            raise ValidationError(where, f"repeats {before!r} as the run label shows it "
                                  f"({run.label!r})", "give each value once")


def policy_runs(cfg: MonteCarloConfig) -> tuple[PolicyRun, ...]:
    """One run per policy entry and point of the grid restricted to its parameters; grid values
    are parsed like the entry's own keys (``"5%"`` -> 0.05)."""
    import itertools

    from fbr.backtest_policies import POLICY_PARAMS
    from fbr.backtest_policies import parse_policy as _policy
    from scenarios.montecarlo import PolicyRun

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
            seen: list[PolicyRun] = []
            for j, raw in enumerate(cfg.grid[key]):
                row = {"kind": spec.kind, "name": spec.name, **spec.params, key: raw}
                try:
                    value = _policy(row, f"policies[{k}]").params[key]
                except ValidationError as exc:
                    raise ValidationError(f"montecarlo.grid.{key}[{j}]",
                                          f"{exc.problem} (for policy {spec.name!r})", exc.fix) from exc
                seen.append(PolicyRun(spec.name, factory, ((key, value),)))
                _check_repeat(f"montecarlo.grid.{key}[{j}]", seen[-1], seen[:-1])
                vals.append(value)
            parsed.append(vals)
        for point in itertools.product(*parsed):
            runs.append(PolicyRun(spec.name, factory, tuple(zip(keys, point, strict=True))))
    return tuple(runs)
