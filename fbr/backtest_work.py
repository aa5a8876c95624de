"""Before the long work: the size of a run, and whether its output paths can be written.

:class:`WorkEstimate` sizes a backtest (``estimate_backtest``) or Monte Carlo run before it
starts, in policy steps, CPU seconds and bytes; a run above ``MAX_WORK_SECONDS`` or
``MAX_WORK_BYTES`` is refused (naming the option to lower) unless forced. ``check_output_file``
and ``check_output_dir`` fail at once, not after the run, when a report path cannot be written.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fbr.backtest_config import DEFAULT_DAYS, BacktestConfig
from fbr.backtest_risk import utc
from models.errors import ValidationError

#: CPU seconds per policy step (one decision and one replay step): the optimiser solves a convex
#: problem (a few ms), rule-based policies only do arithmetic. Rough, on the side of caution.
SECONDS_PER_STEP = {"optimized": 5e-3}
SECONDS_PER_STEP_DEFAULT = 3e-4
#: Bytes kept per policy step (the steps frame's float columns and the NAV series).
BYTES_PER_STEP = 400.0
#: Above either limit a run is refused unless --force: 30 CPU-minutes, 4 GB.
MAX_WORK_SECONDS = 1800.0
MAX_WORK_BYTES = 4e9


@dataclass(frozen=True)
class WorkEstimate:
    """The size of a run, estimated before it starts.

    ``policy_steps`` = sum over runs of steps (paths x steps x policy runs for Monte Carlo);
    ``seconds`` = sum of policy_steps x ``SECONDS_PER_STEP`` of the kind (CPU seconds, whatever
    the engine); ``bytes`` held in memory. ``factors`` are (option, value, usual value): the one
    furthest above its usual value is named when the run is refused.
    """

    policy_steps: float
    seconds: float
    bytes: float
    factors: tuple[tuple[str, float, float], ...]

    @property
    def too_big(self) -> bool:
        """Above ``MAX_WORK_SECONDS`` or ``MAX_WORK_BYTES``."""
        return self.seconds > MAX_WORK_SECONDS or self.bytes > MAX_WORK_BYTES

    def describe(self) -> str:
        """``3.6e+09 policy steps, about 5.0 CPU-hours and 58 GB``."""
        secs = self.seconds
        span = (f"{secs / 3600:.1f} CPU-hours" if secs >= 3600 else f"{secs / 60:.1f} CPU-minutes"
                if secs >= 60 else f"{secs:.0f} CPU-seconds")
        return f"{self.policy_steps:.3g} policy steps, about {span} and {self.bytes / 1e9:.2g} GB"

    def check(self, force: bool) -> None:
        """Refuse a run above the limits (naming the option to lower), unless ``force``."""
        if force or not self.too_big:
            return
        name, value, _usual = max(self.factors, key=lambda f: f[1] / f[2])
        sizes = ", ".join(f"{n} {v:.10g}" for n, v, _ in self.factors)
        raise ValidationError(name, f"is {value:.10g}: the run ({sizes}) is {self.describe()}, above "
                              f"the limit of {MAX_WORK_SECONDS / 60:.0f} CPU-minutes or "
                              f"{MAX_WORK_BYTES / 1e9:.0f} GB",
                              f"lower {name}, or pass --force to run it anyway")


def seconds_per_step(kinds: Sequence[str]) -> float:
    """Sum over policy runs of the CPU seconds one step costs."""
    return sum(SECONDS_PER_STEP.get(k, SECONDS_PER_STEP_DEFAULT) for k in kinds)


def estimate_steps(cfg: BacktestConfig) -> float:
    """Steps of the path before it is built: ``days`` (synthetic), else the span asked for (or
    the data folder's whole history, at most to the data's end, 2025-06-30) over the step."""
    spec = cfg.data
    if spec.source == "synthetic":
        return float(spec.days)
    lo = utc(spec.start) if spec.start else utc("2017-01-01")
    now = utc(pd.Timestamp.now(tz="UTC"))
    hi = min(utc(spec.end), now) if spec.end else now  # no data after today
    step = {"1d": pd.Timedelta(days=1), "8h": pd.Timedelta(hours=8),
            "4h": pd.Timedelta(hours=4)}.get(spec.step, pd.Timedelta(days=1))
    return max((hi - lo) / step, 1.0)


def estimate_backtest(cfg: BacktestConfig) -> WorkEstimate:
    """Every policy over the one path: steps x policies (the path's history counted too)."""
    steps = estimate_steps(cfg)
    kinds = [p.kind for p in cfg.policies]
    n_cols = len(cfg.loaded.book.asset_symbols) + 2 * len(cfg.loaded.book.contracts)
    factors = (("data.days" if cfg.data.source == "synthetic" else "data.end", steps, DEFAULT_DAYS),
               ("policies", float(len(kinds)), 6.0))
    return WorkEstimate(policy_steps=steps * len(kinds), seconds=steps * seconds_per_step(kinds),
                        bytes=steps * (len(kinds) * BYTES_PER_STEP + 8.0 * 4 * n_cols),
                        factors=factors)


def check_output_file(path: Path | None, field_name: str) -> None:
    """Fail now, not after the run, when ``path`` cannot be written as a file: it is a folder,
    a parent is a file, or the nearest existing folder is not writable."""
    if path is None:
        return
    fix = f"give a file path such as out/report.html to {field_name}"
    if path.is_dir():
        raise ValidationError(field_name, f"is {str(path)!r}, which is a folder",
                              f"{fix} (e.g. {path / 'report.html'})")
    _check_writable_parent(path, field_name, fix)
    if path.exists() and not _writable(path):
        raise ValidationError(field_name, f"is {str(path)!r}, which is not writable",
                              f"{fix}, or make the file writable")


def check_output_dir(path: Path | None, field_name: str) -> None:
    """Like :func:`check_output_file` for a folder to write into (``png_dir``)."""
    if path is None:
        return
    fix = f"give a folder path to {field_name}"
    if path.exists() and not path.is_dir():
        raise ValidationError(field_name, f"is {str(path)!r}, which is a file", fix)
    _check_writable_parent(path / "x", field_name, fix, shown=path)


def _writable(path: Path) -> bool:
    """The current user may write ``path``."""
    return os.access(path, os.W_OK)


def _check_writable_parent(path: Path, field_name: str, fix: str, *,
                           shown: Path | None = None) -> None:
    """The nearest existing ancestor of ``path`` must be a writable folder; messages quote
    ``shown`` (default ``path``: a folder's check passes a file inside it)."""
    quoted = str(path if shown is None else shown)
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise ValidationError(field_name, f"is {quoted!r}, but {parent} is a file, not a folder",
                              fix)
    if parent.exists() and not _writable(parent):
        raise ValidationError(field_name, f"is {quoted!r}, but the folder {parent} is not "
                              "writable", fix)
