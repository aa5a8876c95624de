"""A cycle failing the same way at every wake-up is alerted once a UTC day, not at every wake-up
(a review of the loop over months: 9 CRITICAL "cycle failed" alerts in two days at 6-hourly
reads, 24 a day at ``check_every = 1h``). Each failure is still a cycle row and counted.

The rig is ``test_run_loop``'s (paper venue, simulated clock, real journaled executor), scheduled
daily and read every 6 h; setting the account up for trading fails with a 503 (as
``CcxtGateway.prepare`` does after its retries). Nothing here is random.
"""

from __future__ import annotations

import json

import pytest
import requests
import test_run_loop as rig  # tests/executor, on sys.path (its paper venue and clock)
from test_run_loop import BTC_UP, DAY, T0, H, Make
from test_run_loop_health_error import PrepareFails

from executor.alerts import WebhookSink
from executor.base import ReadFailedError
from executor.run_settings import Triggers
from executor.run_trade import failure_shape
from optimizer.policies import NaiveFutures

# the rig's fixtures: its loop factory, and the lock folder in tmp_path (autouse)
make = rig.make
_lock_dir = rig._lock_dir


def test_the_same_failure_is_alerted_once_a_day(make: Make) -> None:
    """Wake-ups at 00:00, 06:00, ... 48:00: nine failed cycles over three UTC days (4 + 4 + 1),
    three alerts, one at the first failure of each day."""
    error = ReadFailedError("binanceusdm: set_leverage failed: 503")
    loop = make(NaiveFutures(band=0.01), prices=BTC_UP, end=T0 + 2 * DAY,
                wrap=lambda p, c: PrepareFails(p, c, error, fails=10_000))
    summary = loop.run()
    assert summary.failures == 9 and [c.action for c in loop.cycles()] == ["failed"] * 9
    alerts = loop.alerts("failure", "cycle failed")
    assert [a.time for a in alerts] == [T0, T0 + DAY, T0 + 2 * DAY]


def test_a_failure_after_a_cycle_that_ran_through_is_alerted_again(make: Make) -> None:
    """The first two wake-ups fail (00:00 alerted, 06:00 not), 12:00's retry trades; the
    failure is over. BTC moves to 90,000 at 18:00 (a drift past the 2% band: a cycle at once)
    and the set-up fails again: a new episode, alerted at 18:00 although it is the same day and
    the same text."""
    error = ReadFailedError("binanceusdm: set_leverage failed: 503")
    gw: list[PrepareFails] = []

    def wrap(p: object, c: object) -> PrepareFails:
        gw.append(PrepareFails(p, c, error, fails=2))
        return gw[0]

    def fail_again(t_from: object, t_to: object) -> None:
        if t_to == T0 + 18 * H:
            gw[0].left = 3

    loop = make(NaiveFutures(band=0.01), prices=BTC_UP, end=T0 + 18 * H,
                moves={T0 + 18 * H: {"BTC": 90_000.0, "ETH": 3_000.0, "SOL": 200.0}},
                hooks=[fail_again], wrap=wrap,
                triggers=Triggers(drift_band=0.02, check_every=6 * H))
    loop.run()
    actions = [(c.time, c.action) for c in loop.cycles()]
    assert actions[:3] == [(T0, "failed"), (T0 + 6 * H, "failed"), (T0 + 12 * H, "traded")]
    assert actions[3:] == [(T0 + 18 * H, "failed")]
    assert [a.time for a in loop.alerts("failure", "cycle failed")] == [T0, T0 + 18 * H]


def test_the_shape_masks_ids_and_numbers() -> None:
    a = "plan 20240601000000e39b was not executed: set_leverage failed 4 times: HTTP 503"
    b = "plan 20240601060000a1f2 was not executed: set_leverage failed 4 times: HTTP 503"
    assert failure_shape(a) == failure_shape(b)
    assert failure_shape(a) != failure_shape("plan 2024 was not executed: margin -2019")


@pytest.mark.parametrize(("msg", "shape"), [
    ("2026-12-07T10:00", "#-#-#T#:#"), ("-2019", "-#"), ("1000SHIBUSDT", "#SHIBUSDT"),
    ("deadbeef cafe", "deadbeef cafe"), ("plan 20261207abc1 leg 2", "plan # leg #")])
def test_the_shape_masks_each_hex_run_that_holds_a_digit(msg: str, shape: str) -> None:
    """By hand, as the docstring states: a run of hex characters with a digit in it is one '#';
    letters past 'f' end the run; a hex word without a digit stays."""
    assert failure_shape(msg) == shape


def test_a_failure_alert_the_webhook_did_not_take_is_sent_again(make: Make) -> None:
    """The webhook refuses the three POSTs of 00:00's alert (a 503 for a few seconds) and takes
    everything after: 06:00's failure, the same one, is alerted again and reaches it (a review:
    the day's one alert was marked sent whatever its delivery, so the webhook heard nothing that
    day)."""
    delivered: list[str] = []
    posts = [0]

    def post(url: str, data: str = "", **kwargs: object) -> requests.Response:
        posts[0] += 1
        answer = requests.Response()
        answer.status_code = 503 if posts[0] <= 3 else 200
        if answer.status_code == 200:
            delivered.append(json.loads(data)["title"])
        return answer

    error = ReadFailedError("binanceusdm: set_leverage failed: 503")
    loop = make(NaiveFutures(band=0.01), prices=BTC_UP, end=T0 + 12 * H,
                wrap=lambda p, c: PrepareFails(p, c, error, fails=10_000))
    loop.runner.alerts.sinks.append(WebhookSink("https://hooks.example/x", retries=2,
                                                timeout_s=5.0, post=post, sleep=lambda s: None))
    loop.run()
    alerted = [a.time for a in loop.alerts("failure", "cycle failed")]
    assert alerted[:2] == [T0, T0 + 6 * H] and delivered.count("cycle failed") == 1
