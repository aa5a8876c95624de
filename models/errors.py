"""Typed errors for bad input. Every message names the field and says how to fix it."""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum


class ExitCode(IntEnum):
    """The process exit code of every ``fbr`` command (the README's table).

    - OK: the command did what was asked (for ``execute``: every contract within one lot step of
      the plan's target);
    - INTERNAL: an unexpected error (a bug: set FBR_DEBUG=1 for the traceback);
    - BAD_INPUT: a file, option or value is wrong; nothing was done (the message names it);
    - INFEASIBLE: the constraints cannot all hold; no order was sent (the message names them);
    - INCOMPLETE: execution ended with some contract more than one lot step from its target;
    - UNKNOWN: an order's fate could not be established; the plan stopped (check the named leg);
    - REFUSED: another run holds the account, or the plan is superseded; nothing was sent;
    - REBALANCE_DUE: ``fbr status --exit-code`` only: a rebalance is due (the fall in tracking
      error beats the cost), for cron jobs and monitors.
    """

    OK = 0
    INTERNAL = 1
    BAD_INPUT = 2
    INFEASIBLE = 3
    INCOMPLETE = 4
    UNKNOWN = 5
    REFUSED = 6
    REBALANCE_DUE = 7


class FbrError(Exception):
    """Base class of every error fbr raises on purpose (the CLI prints these without a traceback).
    ``exit_code`` is the process exit code the CLI ends with (bad input unless a subclass says)."""

    exit_code: ExitCode = ExitCode.BAD_INPUT


class InfeasibleError(FbrError):
    """The problem has no point that meets every hard constraint: nothing may be traded."""

    exit_code = ExitCode.INFEASIBLE


class RefusedError(FbrError):
    """The run may not go ahead now (another run holds the account; a superseded plan)."""

    exit_code = ExitCode.REFUSED


class ConfigError(FbrError):
    """An input file (book, backtest, Monte Carlo or scenario TOML) cannot be read at all: it is
    missing, unreadable or not valid TOML. The message names the file (and for a syntax error the
    line and column) and the fix; see :func:`models.toml_file.read_toml`."""


class ValidationError(FbrError, ValueError):
    """An input value is wrong. ``field`` is the dotted path of the offending value."""

    def __init__(self, field: str, problem: str, fix: str) -> None:
        self.field = field
        self.problem = problem
        self.fix = fix
        super().__init__(f"{field}: {problem}. Fix: {fix}")

    def __reduce__(self) -> tuple[type[ValidationError], tuple[str, str, str]]:
        """Pickle by the three parts (errors raised in worker processes travel back pickled)."""
        return type(self), (self.field, self.problem, self.fix)


def check_finite_positive(field: str, value: float, *, allow_zero: bool = False) -> float:
    """Return ``value`` as float if it is finite and > 0 (>= 0 with ``allow_zero``), else raise."""
    v = float(value)
    if v != v:  # NaN
        raise ValidationError(field, "is NaN", "give a finite number")
    if v in (float("inf"), float("-inf")):
        raise ValidationError(field, f"is {v}", "give a finite number")
    if v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValidationError(field, f"is {v}", f"give a value {bound}")
    return v


def check_fraction(field: str, value: float, *, lo: float = 0.0, hi: float = 1.0) -> float:
    """Return ``value`` if it is finite and in [lo, hi], else raise."""
    v = float(value)
    if v != v or not (lo <= v <= hi):
        raise ValidationError(field, f"is {v}", f"give a number between {lo} and {hi}")
    return v


def spoken_list(items: Sequence[str]) -> str:
    """``items`` as a message names them: "A", "A and B", "A, B and C" ("" for none)."""
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]
