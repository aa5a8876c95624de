"""Monte Carlo: run policies over K generated market paths and summarise the distributions.

Path k (k = 0..K-1) is ``generator.generate(np.random.SeedSequence([seed, k]), steps)``: it depends
only on the sweep seed and its index, so any subset, order or engine gives the same paths. Each
task (path k, policy, parameters) builds a fresh policy from its factory (policies keep state),
replays the path with ``scenarios.replay.run_backtest`` (the one replay loop and margin /
liquidation engine) and measures it with ``scenarios.metrics.compute_metrics``. Tasks run through
``scenarios.sweep.run_sweep`` (serial, local processes or Dask); results are sorted by task key.

Outputs (:class:`MonteCarloResult`):

- ``metrics``: one row per (path, policy) with every deterministic ``BacktestMetrics`` field
  (wall-clock solver timings are left out so the table is identical on every engine) plus
  ``liquidated`` (at least one liquidation on the path);
- ``fan``: per policy the cross-path quantiles ``FAN_QUANTILES`` of NAV / initial NAV at each step
  (linear interpolation, ``numpy.quantile``);
- :meth:`MonteCarloResult.summary`: per policy the mean and the 5/50/95 % quantiles of tracking
  error, total cost (bps of NAV per year), max drawdown and worst margin use (peak maintenance /
  collateral), and P(liquidation) = liquidated paths / K with its binomial standard error
  sqrt(p (1 - p) / K).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from models.book import Book
from models.errors import ValidationError
from models.margin import LIQUIDATION_PENALTY
from optimizer.policies import Policy
from optimizer.settings import SpotLegSettings
from scenarios.collateral import CollateralPolicy
from scenarios.market_path import MarketPath
from scenarios.metrics import STABLECOIN_YIELD, compute_metrics, opening_nav, percentile
from scenarios.path_history import PathGenerator
from scenarios.replay import run_backtest
from scenarios.sweep import EngineSpec, run_sweep

ParamValue = float | int | str
Params = tuple[tuple[str, ParamValue], ...]
FAN_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
#: Metrics summarised per policy: (metrics column, label).
SUMMARY_METRICS = (("tracking_error", "tracking error"), ("total_cost_bps", "total cost bp/yr"),
                   ("max_drawdown", "max drawdown"), ("peak_margin_ratio", "worst margin use"))
SUMMARY_QUANTILES = (0.05, 0.5, 0.95)
#: Wall-clock fields of BacktestMetrics: not part of the (engine-independent) results.
TIMING_FIELDS = ("solve_time_median_ms", "solve_time_p99_ms")


class PolicyFactory(Protocol):
    """Builds a fresh policy for one path with the task's parameters. Must be picklable (a
    module-level class instance, not a lambda) to run on processes or Dask."""

    def __call__(self, path: MarketPath, params: Mapping[str, ParamValue]) -> Policy:
        """A new policy object."""
        ...


@dataclass(frozen=True)
class SimplePolicy:
    """A factory of the rule-based policies of ``optimizer.policies`` by kind:
    ``no_rebalance``, ``calendar_spot`` (period), ``band_spot`` (band), ``naive_futures``
    (period and/or band), ``edge_band_futures`` (band, inner, scaling, window: the band-to-edge
    overlay of ``optimizer.edge_bands``). ``kwargs`` are the fixed arguments; task parameters
    override them."""

    kind: str
    kwargs: Params = ()

    def __call__(self, path: MarketPath, params: Mapping[str, ParamValue]) -> Policy:
        from optimizer.edge_bands import edge_band_policy
        from optimizer.policies import (
            BandSpotRebalance,
            CalendarSpotRebalance,
            NaiveFutures,
            NoRebalance,
        )

        args: dict[str, Any] = {**dict(self.kwargs), **dict(params)}
        makers: dict[str, Callable[..., Policy]] = {
            "no_rebalance": NoRebalance, "calendar_spot": CalendarSpotRebalance,
            "band_spot": BandSpotRebalance, "naive_futures": NaiveFutures,
            "edge_band_futures": edge_band_policy}
        if self.kind not in makers:
            raise ValidationError("policy.kind", f"is {self.kind!r}", f"use one of {sorted(makers)}")
        try:
            return makers[self.kind](**args)
        except TypeError as exc:
            raise ValidationError(f"policy.{self.kind}", f"does not take {sorted(args)}",
                                  "give only the policy's own parameters") from exc


@dataclass(frozen=True)
class PolicyRun:
    """One policy of the sweep: a display ``name``, its factory and fixed task parameters."""

    name: str
    factory: PolicyFactory
    params: Params = ()

    @property
    def label(self) -> str:
        """The name, with the parameters when there are any: ``naive [band=0.05]``."""
        if not self.params:
            return self.name
        inner = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.params)
        return f"{self.name} [{inner}]"


def expand_grid(name: str, factory: PolicyFactory,
                grid: Mapping[str, Sequence[ParamValue]] | None = None) -> tuple[PolicyRun, ...]:
    """One :class:`PolicyRun` per point of the cartesian product of ``grid`` (keys sorted)."""
    if not grid:
        return (PolicyRun(name, factory),)
    keys = sorted(grid)
    for k in keys:
        if len(grid[k]) == 0:
            raise ValidationError(f"grid.{k}", "is empty", "give at least one value")
    return tuple(PolicyRun(name, factory, tuple(zip(keys, point, strict=True)))
                 for point in itertools.product(*(grid[k] for k in keys)))


@dataclass(frozen=True, order=True)
class TaskKey:
    """One task: the path index, the policy label and its parameters (sorts path-major)."""

    path: int
    policy: str
    params: Params = ()


@dataclass(frozen=True)
class PathOutcome:
    """What one task returns: the deterministic metrics and NAV / initial NAV per step."""

    metrics: Mapping[str, float]
    nav: np.ndarray


@dataclass(frozen=True)
class MonteCarloSpec:
    """A Monte Carlo experiment: K = ``paths`` paths of ``steps`` steps from ``generator`` seeded by
    ``seed``; every policy run on every path from ``book``; backtest options as in run_backtest."""

    book: Book
    generator: PathGenerator
    policies: tuple[PolicyRun, ...]
    paths: int = 100
    steps: int = 365
    seed: int = 0
    liquidation_penalty: float = LIQUIDATION_PENALTY
    spot_fee: float | None = None
    collateral: CollateralPolicy | None = None
    impact_k: float = 1.0
    #: pledged spot covers the reserve sweeps and is sold after a liquidation (run_backtest)
    pledged: bool = False
    #: the book's [tax]: every policy's replay pays tax on its realised gains (None: no tax
    #: but the one an optimiser's spot leg prices)
    tax: SpotLegSettings | None = None
    #: the yearly yield the wallet forgoes (the book's [costs] reserve_yield), pricing each path's
    #: reserve_opportunity_cost_bps
    reserve_yield: float = STABLECOIN_YIELD

    def __post_init__(self) -> None:
        for name, value in (("paths", self.paths), ("steps", self.steps)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValidationError(f"montecarlo.{name}", f"is {value!r}", "give a whole number >= 1")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValidationError("montecarlo.seed", f"is {self.seed!r}", "give a whole number >= 0")
        if not self.policies:
            raise ValidationError("policies", "is empty", "give at least one policy")
        labels = [p.label for p in self.policies]
        dup = sorted({x for k, x in enumerate(labels) if x in labels[:k]})
        if dup:
            raise ValidationError("policies", f"has the label(s) {dup} more than once",
                                  "give each policy a distinct name")

    def keys(self) -> list[TaskKey]:
        """Every task, path-major."""
        return [TaskKey(k, p.name, p.params) for k in range(self.paths) for p in self.policies]

    def path(self, k: int) -> MarketPath:
        """Path ``k``: seeded by ``SeedSequence([seed, k])``."""
        return self.generator.generate(np.random.SeedSequence([self.seed, k]), self.steps)

    def run(self, engine: EngineSpec | None = None, *, on_done: Callable[[], None] | None = None,
            labels: Sequence[str] = ()) -> MonteCarloResult:
        """:func:`run_montecarlo` of this spec."""
        return run_montecarlo(self, engine, on_done=on_done, labels=labels)


@dataclass(frozen=True)
class MonteCarloWork:
    """The picklable task function of a Monte Carlo sweep: ``work(key) -> PathOutcome``."""

    spec: MonteCarloSpec

    def __call__(self, key: TaskKey) -> PathOutcome:
        s = self.spec
        run = next(p for p in s.policies if p.name == key.policy and p.params == key.params)
        path = s.path(key.path)
        policy = run.factory(path, dict(run.params))
        policy.name = run.label
        res = run_backtest(s.book, path, policy, liquidation_penalty=s.liquidation_penalty,
                           spot_fee=s.spot_fee, collateral=s.collateral, impact_k=s.impact_k,
                           pledged=s.pledged, tax=s.tax)
        m = dataclasses.asdict(compute_metrics(res, stablecoin_yield=s.reserve_yield))
        metrics = {k: float(v) for k, v in m.items() if k not in TIMING_FIELDS}
        nav = res.steps["nav"].to_numpy(dtype=float)
        return PathOutcome(metrics=metrics, nav=nav / opening_nav(res))


@dataclass(frozen=True)
class MonteCarloResult:
    """Per-path metrics (tidy), the NAV fan per policy, and what produced them."""

    metrics: pd.DataFrame
    fan: pd.DataFrame
    labels: tuple[str, ...] = ()
    generator: str = ""
    engine: str = ""
    step: pd.Timedelta = field(default_factory=lambda: pd.Timedelta(days=1))

    @property
    def policies(self) -> list[str]:
        """Policy labels in spec order."""
        return list(dict.fromkeys(self.metrics["policy"]))

    def summary(self) -> pd.DataFrame:
        """One row per policy: mean and quantiles of the ``SUMMARY_METRICS``, P(liquidation)."""
        rows: dict[str, dict[str, float]] = {}
        for name in self.policies:
            sub = self.metrics[self.metrics["policy"] == name]
            row: dict[str, float] = {"paths": float(len(sub))}
            for col, _label in SUMMARY_METRICS:
                v = sub[col].to_numpy(dtype=float)
                v = v[~np.isnan(v)]  # an unbounded figure (a path whose collateral was gone) stays
                row[f"{col}_mean"] = float(v.mean()) if len(v) else math.nan
                for q in SUMMARY_QUANTILES:
                    row[f"{col}_p{round(100 * q)}"] = percentile(v, 100 * q) if len(v) else math.nan
            p = float(sub["liquidated"].mean())
            row["p_liquidation"] = p
            row["p_liquidation_se"] = math.sqrt(p * (1.0 - p) / len(sub))
            rows[name] = row
        return pd.DataFrame.from_dict(rows, orient="index")

    def held_notes(self) -> list[str]:
        """One note per policy that had no answer to trade at some step (``unsolved_steps``: no
        solver answered, or the answer was infeasible; scenarios.replay holds the book there):
        the steps in all and on how many paths."""
        notes: list[str] = []
        if "unsolved_steps" not in self.metrics:
            return notes
        for name in self.policies:
            held = self.metrics.loc[self.metrics["policy"] == name, "unsolved_steps"]
            steps = int(held.sum())
            if steps:
                notes.append(f"{name}: no answer to trade at {steps} steps on {int((held > 0).sum())} "
                             f"of {len(held)} paths; the book was held as it stood there")
        return notes

    def to_dict(self, *, per_path: bool = True) -> dict[str, Any]:
        """JSON-ready: summary per policy (and the per-path rows), the :meth:`held_notes`; nan/inf
        become None."""
        def clean(v: Any) -> Any:
            if isinstance(v, bool | np.bool_):
                return bool(v)
            if isinstance(v, int | np.integer):
                return int(v)
            if isinstance(v, float | np.floating):
                return float(v) if math.isfinite(v) else None
            return v

        out: dict[str, Any] = {
            "summary": {name: {k: clean(v) for k, v in row.items()}
                        for name, row in self.summary().to_dict(orient="index").items()},
            "generator": self.generator, "engine": self.engine, "labels": list(self.labels),
            "notes": self.held_notes()}
        if per_path:
            out["per_path"] = [{k: clean(v) for k, v in r.items()}
                               for r in self.metrics.to_dict(orient="records")]
        return out


def collect(spec: MonteCarloSpec, outcomes: Sequence[tuple[TaskKey, PathOutcome]], *,
            labels: Sequence[str] = (), engine: str = "") -> MonteCarloResult:
    """Assemble the tidy metrics table and the NAV fan from sorted task outcomes."""
    label = {(p.name, p.params): p.label for p in spec.policies}
    records: list[dict[str, Any]] = []
    navs: dict[str, list[np.ndarray]] = {p.label: [] for p in spec.policies}
    for key, out in outcomes:
        name = label[(key.policy, key.params)]
        rec: dict[str, Any] = {"path": key.path, "policy": name}
        rec.update(out.metrics)
        rec["liquidations"] = int(rec["liquidations"])
        rec["margin_calls"] = int(rec["margin_calls"])
        rec["liquidated"] = rec["liquidations"] > 0
        records.append(rec)
        navs[name].append(out.nav)
    order = {p.label: i for i, p in enumerate(spec.policies)}
    records.sort(key=lambda r: (order[r["policy"]], r["path"]))
    metrics = pd.DataFrame.from_records(records)
    cols: dict[tuple[str, float], np.ndarray] = {}
    for name, rows in navs.items():
        if not rows:
            continue
        stack = np.vstack(rows)
        for q in FAN_QUANTILES:
            cols[(name, q)] = np.quantile(stack, q, axis=0)
    fan = pd.DataFrame(cols)
    fan.columns = pd.MultiIndex.from_tuples(list(cols), names=["policy", "quantile"])
    fan.index.name = "step"
    return MonteCarloResult(metrics=metrics, fan=fan, labels=tuple(labels),
                            generator=spec.generator.name, engine=engine, step=spec.generator.step)


def run_montecarlo(spec: MonteCarloSpec, engine: EngineSpec | None = None, *,
                   on_done: Callable[[], None] | None = None,
                   labels: Sequence[str] = ()) -> MonteCarloResult:
    """Run every (path, policy) task of ``spec`` on ``engine`` (default serial)."""
    engine = engine or EngineSpec()
    outcomes = run_sweep(MonteCarloWork(spec), spec.keys(), engine, on_done)
    return collect(spec, outcomes, labels=labels, engine=engine.describe())


__all__ = ["FAN_QUANTILES", "MonteCarloResult", "MonteCarloSpec", "MonteCarloWork", "PathOutcome",
           "PolicyFactory", "PolicyRun", "SimplePolicy", "TaskKey", "collect", "expand_grid",
           "run_montecarlo"]
