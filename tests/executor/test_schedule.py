"""The loop's schedule (durations, the epoch grid, cron fire times) and its clocks."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from exec_helpers import three_asset_book

from executor.schedule import Schedule, SimClock, WallClock, next_settlement, parse_duration
from models.errors import ValidationError


def utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, tzinfo=UTC)


# --- parse_duration ------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "seconds"), [
    ("30m", 1800.0), ("8h", 28_800.0), ("1d", 86_400.0), ("90s", 90.0), (" 1.5h ", 5400.0),
    ("2 d", 172_800.0),
    # the spellings of a policy's period in the same run file (fbr.config_values.period)
    ("30min", 1800.0), ("1D", 86_400.0), ("2W", 1_209_600.0), ("8H", 28_800.0), ("1w", 604_800.0),
])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text, "run.interval") == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["0h", "-1h", "8", "abc", "", "1M", "1y", "h", "0.0m", "1h30m",
                                  "30mins"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_duration(text, "run.interval")
    assert err.value.field == "run.interval"


def test_parse_duration_names_the_given_path() -> None:
    with pytest.raises(ValidationError) as err:
        parse_duration("soon", "alerts.summary_every")
    assert err.value.field == "alerts.summary_every"
    assert "soon" in err.value.problem


# --- interval: the epoch grid --------------------------------------------------------------------

@pytest.mark.parametrize(("now", "expected"), [
    (utc(2024, 6, 1, 0, 0), utc(2024, 6, 1, 8, 0)),
    (utc(2024, 6, 1, 3, 17, 42), utc(2024, 6, 1, 8, 0)),
    (utc(2024, 6, 1, 7, 59, 59), utc(2024, 6, 1, 8, 0)),
    (utc(2024, 6, 1, 8, 0), utc(2024, 6, 1, 16, 0)),  # strictly after
    (utc(2024, 6, 1, 8, 0, 0) + timedelta(microseconds=1), utc(2024, 6, 1, 16, 0)),
    (utc(2024, 6, 1, 16, 0), utc(2024, 6, 2, 0, 0)),
    (utc(2024, 12, 31, 23, 30), utc(2025, 1, 1, 0, 0)),
])
def test_interval_8h_fires_on_the_epoch_grid(now: datetime, expected: datetime) -> None:
    assert Schedule(interval=timedelta(hours=8)).next_after(now) == expected


def test_interval_grid_is_independent_of_the_start() -> None:
    """Any start lands on multiples of the interval since 1970-01-01 UTC."""
    sched = Schedule(interval=timedelta(minutes=30))
    t = utc(2024, 3, 10, 11, 7, 3)
    fires = []
    for _ in range(5):
        nxt = sched.next_after(t)
        assert nxt is not None
        fires.append(nxt)
        t = nxt
    assert fires == [utc(2024, 3, 10, 11, 30) + timedelta(minutes=30 * k) for k in range(5)]
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    assert all((f - epoch).total_seconds() % 1800 == 0 for f in fires)


def test_interval_accepts_a_non_utc_aware_time() -> None:
    plus2 = datetime(2024, 6, 1, 11, 0, tzinfo=timezone(timedelta(hours=2)))  # = 09:00 UTC
    nxt = Schedule(interval=timedelta(hours=8)).next_after(plus2)
    assert nxt == utc(2024, 6, 1, 16, 0)


# --- cron ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("now", "expected"), [
    (utc(2024, 6, 1, 0, 0), utc(2024, 6, 1, 0, 5)),
    (utc(2024, 6, 1, 0, 4, 59), utc(2024, 6, 1, 0, 5)),
    (utc(2024, 6, 1, 0, 5), utc(2024, 6, 2, 0, 5)),  # strictly after
    (utc(2024, 6, 1, 0, 5, 0) + timedelta(microseconds=1), utc(2024, 6, 2, 0, 5)),
    (utc(2024, 6, 1, 13, 0), utc(2024, 6, 2, 0, 5)),
    (utc(2024, 2, 28, 12, 0), utc(2024, 2, 29, 0, 5)),  # leap day
    (utc(2024, 12, 31, 23, 59), utc(2025, 1, 1, 0, 5)),
])
def test_cron_daily_at_0005(now: datetime, expected: datetime) -> None:
    nxt = Schedule(cron="5 0 * * *").next_after(now)
    assert nxt == expected
    assert nxt is not None and nxt.utcoffset() == timedelta(0)


def test_cron_numeric_weekday_follows_crontab() -> None:
    # 2024-06-01 is a Saturday: the next Monday is 2024-06-03 (crontab: 1 = Monday)
    sched = Schedule(cron="0 8 * * 1")
    assert sched.next_after(utc(2024, 6, 1, 12, 0)) == utc(2024, 6, 3, 8, 0)
    assert sched.next_after(utc(2024, 6, 3, 8, 0)) == utc(2024, 6, 10, 8, 0)


def test_cron_every_15_minutes_sequence() -> None:
    sched = Schedule(cron="*/15 * * * *")
    t = utc(2024, 6, 1, 23, 31)
    got = []
    for _ in range(3):
        nxt = sched.next_after(t)
        assert nxt is not None
        got.append(nxt)
        t = nxt
    assert got == [utc(2024, 6, 1, 23, 45), utc(2024, 6, 2, 0, 0), utc(2024, 6, 2, 0, 15)]


def test_cron_weekday_names_follow_crontab() -> None:
    # 2024-06-01 is a Saturday
    assert Schedule(cron="0 8 * * mon").next_after(utc(2024, 6, 1, 12, 0)) == utc(2024, 6, 3, 8, 0)
    assert Schedule(cron="0 8 * * sun").next_after(utc(2024, 6, 1, 12, 0)) == utc(2024, 6, 2, 8, 0)
    weekdays = Schedule(cron="30 9 * * mon-fri")
    assert weekdays.next_after(utc(2024, 6, 7, 10, 0)) == utc(2024, 6, 10, 9, 30)  # Fri -> Mon


def test_cron_weekday_seven_is_sunday() -> None:
    assert Schedule(cron="0 8 * * 7").next_after(utc(2024, 6, 1, 12, 0)) == utc(2024, 6, 2, 8, 0)


@pytest.mark.parametrize("expr", ["0 0 30 2 *", "0 0 31 4 *"])
def test_cron_that_never_fires_is_refused(expr: str) -> None:
    with pytest.raises(ValidationError) as err:
        Schedule(cron=expr)
    assert err.value.field == "run.cron"
    assert "never fires" in err.value.problem


@pytest.mark.parametrize("expr", ["not a cron", "61 0 * * *", "5 0 * *", "0 25 * * *"])
def test_malformed_cron_is_refused(expr: str) -> None:
    with pytest.raises(ValidationError) as err:
        Schedule(cron=expr)
    assert err.value.field == "run.cron"


def test_both_or_neither_is_refused() -> None:
    with pytest.raises(ValidationError) as err:
        Schedule()
    assert err.value.field == "run.interval"
    with pytest.raises(ValidationError) as err:
        Schedule(interval=timedelta(hours=8), cron="5 0 * * *")
    assert err.value.field == "run.interval"


# --- SimClock ------------------------------------------------------------------------------------

def _never() -> bool:
    return False


def test_simclock_jumps_and_calls_hooks_in_order() -> None:
    calls: list[tuple[str, datetime, datetime]] = []
    t0, t1, t2 = utc(2024, 1, 1), utc(2024, 1, 1, 8), utc(2024, 1, 1, 16)
    clock = SimClock(t0, on_advance=[lambda a, b: calls.append(("first", a, b)),
                                     lambda a, b: calls.append(("second", a, b))])
    assert clock.now() == t0
    clock.sleep_until(t1, _never)
    assert clock.now() == t1
    clock.sleep_until(t2, _never)
    assert calls == [("first", t0, t1), ("second", t0, t1), ("first", t1, t2), ("second", t1, t2)]


def test_simclock_hooks_see_the_time_before_the_jump_is_visible_afterwards() -> None:
    seen: list[datetime] = []
    clock = SimClock(utc(2024, 1, 1))
    clock.on_advance.append(lambda a, b: seen.append(clock.now()))
    clock.sleep_until(utc(2024, 1, 2), _never)
    # the hook runs with the clock already at the new time (to), as the loop then reads it
    assert seen == [utc(2024, 1, 2)]


def test_simclock_caps_at_end_and_is_done() -> None:
    calls: list[tuple[datetime, datetime]] = []
    t0, end = utc(2024, 1, 1), utc(2024, 1, 1, 12)
    clock = SimClock(t0, end=end, on_advance=[lambda a, b: calls.append((a, b))])
    assert not clock.done
    clock.sleep_until(utc(2024, 1, 1, 8), _never)
    assert not clock.done
    clock.sleep_until(utc(2024, 1, 2), _never)
    assert clock.now() == end
    assert clock.done
    assert calls == [(t0, utc(2024, 1, 1, 8)), (utc(2024, 1, 1, 8), end)]
    clock.sleep_until(utc(2024, 1, 3), _never)  # already at end: nothing moves
    assert clock.now() == end and len(calls) == 2


def test_simclock_without_end_is_never_done() -> None:
    clock = SimClock(utc(2024, 1, 1))
    clock.sleep_until(utc(2100, 1, 1), _never)
    assert not clock.done


def test_simclock_does_nothing_when_stopped_or_not_in_the_future() -> None:
    calls: list[tuple[datetime, datetime]] = []
    t0 = utc(2024, 1, 1, 8)
    clock = SimClock(t0, on_advance=[lambda a, b: calls.append((a, b))])
    clock.sleep_until(utc(2024, 1, 2), lambda: True)
    assert clock.now() == t0
    clock.sleep_until(t0, _never)
    clock.sleep_until(utc(2024, 1, 1), _never)
    assert clock.now() == t0
    assert calls == []


def test_simclock_with_schedule_walks_the_grid() -> None:
    sched = Schedule(interval=timedelta(hours=8))
    clock = SimClock(utc(2024, 1, 1, 5), end=utc(2024, 1, 2, 1))
    visited = []
    while not clock.done:
        nxt = sched.next_after(clock.now())
        assert nxt is not None
        clock.sleep_until(nxt, _never)
        visited.append(clock.now())
    assert visited == [utc(2024, 1, 1, 8), utc(2024, 1, 1, 16), utc(2024, 1, 2, 0),
                       utc(2024, 1, 2, 1)]


# --- WallClock -----------------------------------------------------------------------------------

def test_wallclock_now_is_utc_and_current() -> None:
    now = WallClock().now()
    assert now.utcoffset() == timedelta(0)
    assert abs((now - datetime.now(UTC)).total_seconds()) < 5


def test_wallclock_returns_at_once_for_a_past_time() -> None:
    clock = WallClock(slice_s=10.0)
    start = time.monotonic()
    clock.sleep_until(datetime.now(UTC) - timedelta(seconds=1), _never)
    assert time.monotonic() - start < 0.1


def test_wallclock_stops_when_stop_turns_true() -> None:
    clock = WallClock(slice_s=0.02)
    calls = [0]

    def stop() -> bool:
        calls[0] += 1
        return calls[0] > 2

    start = time.monotonic()
    clock.sleep_until(datetime.now(UTC) + timedelta(hours=1), stop)
    elapsed = time.monotonic() - start
    assert calls[0] == 3
    assert elapsed < 0.5


def test_wallclock_wakes_at_a_near_time() -> None:
    clock = WallClock(slice_s=0.05)
    target = datetime.now(UTC) + timedelta(milliseconds=80)
    clock.sleep_until(target, _never)
    assert datetime.now(UTC) >= target
    assert (datetime.now(UTC) - target).total_seconds() < 0.4


def test_a_day_of_month_and_a_weekday_fire_on_either_as_crontab_does() -> None:
    """crontab's rule: with both day fields restricted a day matching either fires. "0 0 1 * 1"
    is every Monday and every 1st (it fired only on Mondays that are the 1st: 2024-07-01, then
    2025-09-01); one restricted field alone keeps its meaning."""
    s = Schedule(cron="0 0 1 * 1")
    t, seen = datetime(2024, 6, 25, tzinfo=UTC), []
    for _ in range(6):
        nxt = s.next_after(t)
        assert nxt is not None
        seen.append(nxt.date().isoformat())
        t = nxt
    assert seen == ["2024-07-01", "2024-07-08", "2024-07-15", "2024-07-22", "2024-07-29",
                    "2024-08-01"]
    assert Schedule(cron="0 0 1 * *").next_after(datetime(2024, 7, 2, tzinfo=UTC)) == datetime(
        2024, 8, 1, tzinfo=UTC)
    assert Schedule(cron="0 0 * * 1").next_after(datetime(2024, 7, 2, tzinfo=UTC)) == datetime(
        2024, 7, 8, tzinfo=UTC)


def test_next_settlement_takes_the_exchange_s_interval_where_it_has_one() -> None:
    """Three perpetuals on 8 h in the book; the exchange settles SOL-PERP every 4 h. By hand:
    after 01:00 the next is SOL's 04:00; after 04:00, 08:00 (both); with the book's intervals
    only, 08:00; a book without perpetuals has none."""
    book = three_asset_book()
    sol = next(c for c in book.contracts if c.symbol == "SOL-PERP")
    exchange = {"SOL-PERP": replace(sol, funding_interval_h=4.0)}
    day = datetime(2025, 3, 1, tzinfo=UTC)
    assert next_settlement(book, exchange, day + timedelta(hours=1)) == day + timedelta(hours=4)
    assert next_settlement(book, exchange, day + timedelta(hours=4)) == day + timedelta(hours=8)
    assert next_settlement(book, {}, day + timedelta(hours=1)) == day + timedelta(hours=8)
    assert next_settlement(replace(book, contracts=()), exchange, day) is None
