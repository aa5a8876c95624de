"""When the daily loop rebalances: a fixed interval or a cron expression, and the clock it runs on.

- ``interval``: a duration (``"30m"`` or ``"30min"``, ``"8h"``, ``"1d"`` or ``"1D"``, ``"2W"``; > 0)
  counted from the Unix epoch, so an 8 h interval fires at 00:00, 08:00 and 16:00 UTC, whenever
  the loop started, and a restart keeps the same grid;
- ``cron``: a five-field crontab expression in UTC (APScheduler's ``CronTrigger``, numeric
  weekdays read crontab's way: 0 and 7 = Sunday, 1 = Monday), e.g. ``"5 0 * * *"`` (00:05 every
  day). An expression that never fires (``"0 0 30 2 *"``, 30 February)
  is refused when the schedule is built.

Clocks: :class:`WallClock` (the real time; ``sleep_until`` sleeps in short slices so a signal is
seen within a second) and :class:`SimClock` (a simulated time that jumps at once and calls its
``on_advance`` hooks, which move an emulated exchange or a market path along).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from models.book import Book
from models.durations import UNITS_HINT, duration_seconds
from models.errors import ValidationError
from models.instruments import ContractKind, FuturesContract

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_duration(text: str, where: str) -> timedelta:
    """``"30m"`` / ``"30min"`` / ``"8h"`` / ``"1d"`` / ``"1D"`` / ``"2W"`` / ``"90s"`` as a positive
    timedelta (models.durations: the units of a policy's period in the same file read too)."""
    seconds = duration_seconds(text)
    if seconds is None or seconds <= 0:
        raise ValidationError(where, f"is {text!r}", f"give a positive duration with a unit: "
                              f'{UNITS_HINT}, e.g. "30min", "8h" or "1D"')
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise ValidationError(where, f"is {text!r}, too long a duration",
                              'give a duration of at most a few years, e.g. "365D"') from None


@dataclass(frozen=True)
class Schedule:
    """The rebalancing times: every ``interval`` on the epoch grid, or the ``cron`` expression's
    fire times (UTC). Exactly one is set."""

    interval: timedelta | None = None
    cron: str | None = None

    def __post_init__(self) -> None:
        if (self.interval is None) == (self.cron is None):
            raise ValidationError("run.interval", "and run.cron are both set or both missing",
                                  'give one: interval = "1d" or cron = "5 0 * * *"')
        if self.cron is not None:
            self._trigger()
            if self.next_after(datetime(2000, 1, 1, tzinfo=UTC)) is None:
                raise ValidationError("run.cron", f"is {self.cron!r}, which never fires",
                                      "give an expression with a real date, e.g. \"5 0 * * *\" "
                                      "(00:05 UTC every day)")

    def _trigger(self) -> list[object]:
        """APScheduler triggers whose earliest next fire time is the expression's. Crontab's rule:
        when both the day of month and the weekday are restricted (neither starts with ``*``) a
        day matching either fires (``"0 0 1 * 1"``: every Monday and every 1st); APScheduler
        requires both, so the expression is split into one trigger per day field."""
        from apscheduler.triggers.cron import CronTrigger

        exprs = [str(self.cron)]
        fields = str(self.cron).split()
        if len(fields) == 5 and not fields[2].startswith("*") and not fields[4].startswith("*"):
            exprs = [" ".join([*fields[:4], "*"]), " ".join([*fields[:2], "*", *fields[3:]])]
        try:
            return [CronTrigger.from_crontab(crontab_weekdays(e), timezone=UTC) for e in exprs]
        except ValueError as exc:
            raise ValidationError("run.cron", f"is {self.cron!r}: {exc}",
                                  'give five fields "minute hour day month weekday", e.g. '
                                  '"5 0 * * *"') from None

    def next_after(self, t: datetime) -> datetime | None:
        """The first fire time strictly after ``t`` (UTC), None when there is none."""
        if self.interval is not None:
            step = self.interval.total_seconds()
            k = (t - EPOCH).total_seconds() // step + 1
            return EPOCH + timedelta(seconds=k * step)
        after = t + timedelta(microseconds=1)
        times = [trigger.get_next_fire_time(None, after)  # type: ignore[attr-defined]
                 for trigger in self._trigger()]
        found = [x.astimezone(UTC) for x in times if x is not None]
        return min(found) if found else None


_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")
_NUMERIC_ITEM = re.compile(r"^(\*|\d+)(?:-(\d+))?(?:/(\d+))?$")


def crontab_weekdays(expr: str) -> str:
    """``expr`` with numeric weekdays in its fifth field written as names, crontab's way
    (0 and 7 = Sunday, 1 = Monday, ...): APScheduler 3 reads a number there as 0 = Monday. A
    numeric range or step becomes the list of its days (``1-5`` -> ``mon,tue,wed,thu,fri``)."""
    fields = expr.split()
    if len(fields) != 5:
        return expr
    items = []
    for item in fields[4].split(","):
        m = _NUMERIC_ITEM.match(item)
        if m is None or (m.group(1) == "*" and m.group(3) is None):
            items.append(item)  # names, "*" or something the trigger will judge
            continue
        lo = 0 if m.group(1) == "*" else int(m.group(1))
        hi = 6 if m.group(1) == "*" else int(m.group(2) or m.group(1))
        step = int(m.group(3) or 1)
        if not (0 <= lo <= hi <= 7) or step < 1:
            items.append(item)
            continue
        items.extend(_DAY_NAMES[d] for d in range(lo, hi + 1, step))
    days = list(dict.fromkeys(items))
    return " ".join([*fields[:4], ",".join(days)])


class Clock(Protocol):
    """The loop's time (UTC)."""

    def now(self) -> datetime:
        """The time now."""
        ...

    def sleep_until(self, t: datetime, stop: Callable[[], bool]) -> None:
        """Wait until ``t`` or until ``stop()`` turns True."""
        ...


class WallClock:
    """The real clock; sleeps in slices of at most ``slice_s`` seconds so a stop request (a
    signal, the kill file) is seen promptly."""

    def __init__(self, slice_s: float = 1.0) -> None:
        self.slice_s = slice_s

    def now(self) -> datetime:
        """``datetime.now(UTC)``."""
        return datetime.now(UTC)

    def sleep_until(self, t: datetime, stop: Callable[[], bool]) -> None:
        """Sleep until ``t``, checking ``stop`` at least every ``slice_s`` seconds."""
        while not stop():
            left = (t - self.now()).total_seconds()
            if left <= 0:
                return
            time.sleep(min(left, self.slice_s))


@dataclass
class SimClock:
    """A simulated clock: ``sleep_until`` jumps to ``t`` at once, after calling each hook
    ``on_advance(t_from, t_to)`` (in order). ``end`` stops the loop: once reached, ``done`` is True."""

    t: datetime
    end: datetime | None = None
    on_advance: list[Callable[[datetime, datetime], None]] = field(default_factory=list)

    def now(self) -> datetime:
        """The simulated time."""
        return self.t

    @property
    def done(self) -> bool:
        """True once the simulated time reached ``end``."""
        return self.end is not None and self.t >= self.end

    def sleep_until(self, t: datetime, stop: Callable[[], bool]) -> None:
        """Jump to ``t`` (capped at ``end``), moving the hooks along."""
        if self.end is not None:
            t = min(t, self.end)
        if t <= self.t or stop():
            return
        before, self.t = self.t, t
        for hook in self.on_advance:
            hook(before, t)


def next_settlement(book: Book, exchange: Mapping[str, FuturesContract],
                    now: datetime) -> datetime | None:
    """The first funding settlement of any of ``book``'s perpetuals strictly after ``now``: each
    every ``funding_interval_h`` hours from 00:00 UTC, the exchange's interval where ``exchange``
    (book symbol -> the exchange's contract) has the contract, else the book's; None without
    perpetuals."""
    hours = [exchange[c.symbol].funding_interval_h if c.symbol in exchange
             else c.funding_interval_h for c in book.contracts if c.kind == ContractKind.PERPETUAL]
    if not hours:
        return None
    return min(Schedule(interval=timedelta(hours=h)).next_after(now) or now for h in hours)
