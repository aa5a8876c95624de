"""Bounded alert delivery: ``timeout_s`` is a total deadline per POST (a loopback receiver that
drips its answer header by header for 10 s does not hold the loop past it), at most one delivery
worker per sink hangs at a time, and the backoff pauses between retries are capped (30 s), so a
refused alert cannot put the loop to sleep for years."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests

from executor.alerts import Alert, AlertHub, AlertKind, Severity, WebhookSink

WHEN = datetime(2024, 6, 1, 8, 0, 0, tzinfo=UTC)
#: How long the dripping receiver drags one answer (seconds): far past every deadline below.
DRIP_S = 10.0
#: Seconds between two dripped header lines: each socket read gets data well within timeout_s.
DRIP_EVERY_S = 0.3


def _alert() -> Alert:
    return Alert(AlertKind.FAILURE, Severity.CRITICAL, "order failed", "leg in doubt", WHEN, "main")


@pytest.fixture
def drip_url() -> Iterator[str]:
    """A loopback receiver that answers "200 OK" one header line every 0.3 s for 10 s (each read
    of the client gets data, so requests' per-read timeout never fires); stopped at teardown."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    srv.settimeout(0.2)
    stop = threading.Event()

    def drip(conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\n")
                t0, i = time.monotonic(), 0
                while time.monotonic() - t0 < DRIP_S and not stop.is_set():
                    conn.sendall(f"X-Drip-{i}: a\r\n".encode())
                    i += 1
                    time.sleep(DRIP_EVERY_S)
                conn.sendall(b"Content-Length: 0\r\n\r\n")
            except OSError:
                pass

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            threading.Thread(target=drip, args=(conn,), daemon=True).start()
        srv.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.getsockname()[1]}/hook"
    finally:
        stop.set()
        thread.join(timeout=5)


def test_a_dripping_receiver_is_cut_off_at_timeout_s(drip_url: str) -> None:
    """One POST, timeout_s = 1: the send ends after about 1 s (3 s allowed on a loaded machine),
    not when the receiver finishes (10 s), and counts as failed."""
    sink = WebhookSink(drip_url, timeout_s=1.0, retries=0)
    t0 = time.monotonic()
    assert sink.send(_alert()) is False
    took = time.monotonic() - t0
    assert took < 3.0, f"one alert blocked the loop for {took:.1f} s with timeout_s = 1"
    assert (sink.delivered, sink.failed) == (0, 1)


def test_hub_emit_returns_within_the_deadlines(drip_url: str) -> None:
    """Through AlertHub.emit (the loop's call), with one retry: 2 x 1 s + a 0.1 s pause, well
    short of the 10 s drip; emit does not raise."""
    sink = WebhookSink(drip_url, timeout_s=1.0, retries=1, backoff_s=0.1)
    hub = AlertHub(sinks=[sink], book="main")
    t0 = time.monotonic()
    hub.emit(AlertKind.KILL, Severity.CRITICAL, "kill switch", "stopped", WHEN)
    took = time.monotonic() - t0
    assert took < 5.0, f"emit took {took:.1f} s"
    assert sink.failed == 1 and len(hub.sent) == 1


class BlockingPost:
    """A POST that hangs until ``release`` is set, then answers 200; counts its calls."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def __call__(self, url: str, **kw: Any) -> requests.Response:
        self.calls += 1
        self.release.wait(30.0)
        answer = requests.Response()
        answer.status_code = 200
        return answer


def test_one_hanging_worker_per_sink_at_most() -> None:
    """While a POST hangs, later attempts wait for it (within their deadline) and fail without a
    new POST (no pile-up of threads); once it ends, the next alert is POSTed and delivered."""
    post = BlockingPost()
    sink = WebhookSink("https://hooks.example.com/fbr", retries=2, timeout_s=0.2, post=post,
                       sleep=lambda s: None)
    try:
        t0 = time.monotonic()
        assert sink.send(_alert()) is False
        assert sink.send(_alert()) is False
        took = time.monotonic() - t0
        assert post.calls == 1  # 6 attempts, one worker
        assert took < 2 * 3 * 0.2 + 2.0
        ok, why = sink.try_send(_alert())
        assert not ok and "still hangs" in why
    finally:
        post.release.set()
    assert sink.send(_alert()) is True
    assert post.calls == 2
    assert (sink.delivered, sink.failed) == (1, 2)


def test_a_post_that_raises_anything_is_a_failed_attempt() -> None:
    """Not only requests' errors: whatever the POST raises is a failed, retried attempt and
    never reaches the loop."""
    def post(url: str, **kw: Any) -> requests.Response:
        raise ValueError("bad header")

    sink = WebhookSink("https://hooks.example.com/fbr", retries=1, post=post, sleep=lambda s: None)
    assert sink.try_send(_alert()) == (False, "ValueError")
    assert sink.send(_alert()) is False and sink.failed == 1


def refused(url: str, **kw: Any) -> requests.Response:
    """Every POST answered 503 (retried)."""
    answer = requests.Response()
    answer.status_code = 503
    return answer


def test_backoff_pauses_are_capped() -> None:
    """retries = 30 (more than a run file allows) and a webhook that always answers 503: the
    pauses are 1, 2, 4, 8, 16 s then 30 s each, not 2^29 s. By hand: 31 + 25 x 30 = 781 s in all
    (uncapped: 2^30 - 1 s, 34 years)."""
    slept: list[float] = []
    sink = WebhookSink("https://hooks.example.com/fbr", retries=30,
                       post=refused, sleep=slept.append)
    assert sink.send(_alert()) is False
    assert slept[:6] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0]
    assert max(slept) == 30.0
    assert len(slept) == 30
    assert sum(slept) == pytest.approx(781.0)
    assert sum(slept) <= 3600.0


def test_backoff_delay_of_a_huge_attempt_does_not_overflow() -> None:
    sink = WebhookSink("https://hooks.example.com/fbr", backoff_s=0.5)
    assert [sink.backoff_delay(k) for k in (1, 2, 3)] == [0.5, 1.0, 2.0]
    assert sink.backoff_delay(10_000) == 30.0


def _answer200() -> requests.Response:
    answer = requests.Response()
    answer.status_code = 200
    return answer


def _alert_text(text: str) -> Alert:
    return Alert(AlertKind.FAILURE, Severity.CRITICAL, "cycle failed", text,
                 datetime(2024, 6, 1, tzinfo=UTC))


def test_a_late_2xx_of_the_same_alert_is_not_posted_again() -> None:
    """The first POST answers 200 after 0.6 s; ``timeout_s`` 0.4, one retry: the retry waits for
    that worker, which ends with 200, so the alert is delivered with one POST (a review: it was
    POSTed again, received twice, and counted as failed)."""
    posts: list[str] = []
    lock = threading.Lock()

    def post(url: str, data: str = "", **kwargs: Any) -> requests.Response:
        with lock:
            posts.append(data)
            first = len(posts) == 1
        if first:
            time.sleep(0.6)
        return _answer200()

    sink = WebhookSink("https://hooks.example/x", retries=1, timeout_s=0.4, backoff_s=0.0,
                       post=post, sleep=lambda s: None)
    assert sink.send(_alert_text("x"))
    assert len(posts) == 1 and (sink.delivered, sink.failed) == (1, 0)


def test_a_late_2xx_of_another_alert_does_not_deliver_this_one() -> None:
    """Alert A's only POST (no retry) answers 200 after its deadline; alert B's attempt waits for
    that worker and then POSTs B itself: A's late answer is not taken as B's."""
    posts: list[str] = []

    def post(url: str, data: str = "", **kwargs: Any) -> requests.Response:
        posts.append(json.loads(data)["text"])
        if len(posts) == 1:
            time.sleep(0.6)
        return _answer200()

    sink = WebhookSink("https://hooks.example/x", retries=0, timeout_s=0.4, backoff_s=0.0,
                       post=post, sleep=lambda s: None)
    assert not sink.send(_alert_text("A"))
    assert sink.send(_alert_text("B"))
    assert posts == ["A", "B"]
