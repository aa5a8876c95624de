"""Alerts of the daily loop: the two webhook bodies, redaction, bounded retries with exponential
backoff, counters, a URL that never reaches a log line, and a real loopback delivery."""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest
import requests

from executor import safety
from executor.alerts import Alert, AlertHub, AlertKind, MemorySink, Severity, WebhookSink, url_label

CANARY = "canary-secret-123"
TG_URL = "https://api.telegram.org/bot123:SECRET/sendMessage"
WHEN = datetime(2024, 6, 1, 8, 0, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _fresh_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test registers its own secrets (the module-level set is restored afterwards)."""
    monkeypatch.setattr(safety, "_SECRETS", set())


def _alert(**kw: Any) -> Alert:
    base: dict[str, Any] = {"kind": AlertKind.TRADE, "severity": Severity.INFO,
                            "title": "rebalanced", "text": "3 legs sent", "time": WHEN,
                            "book": "main", "fields": {"nav": 10_000.5, "legs": 3, "venue": "paper",
                                                       "plan": None}}
    base.update(kw)
    return Alert(**base)


def _response(status: int) -> requests.Response:
    r = requests.Response()
    r.status_code = status
    return r


class FakePost:
    """Answers each POST with the next scripted status (or raises the scripted exception)."""

    def __init__(self, script: list[int | Exception]) -> None:
        self.script = list(script)
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, url: str, **kw: Any) -> requests.Response:
        self.calls.append((url, kw))
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(step, Exception):
            raise step
        return _response(step)


class SleepLog:
    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, s: float) -> None:
        self.delays.append(s)


# --- bodies --------------------------------------------------------------------------------------

def test_json_body_keys_and_values() -> None:
    body = _alert().json_body()
    assert set(body) == {"source", "kind", "severity", "title", "text", "time", "book", "fields"}
    assert body["source"] == "fbr"
    assert body["kind"] == "trade"
    assert body["severity"] == "info"
    assert body["title"] == "rebalanced"
    assert body["text"] == "3 legs sent"
    assert body["time"] == "2024-06-01T08:00:00Z"
    assert body["book"] == "main"
    assert body["fields"] == {"nav": 10_000.5, "legs": 3, "venue": "paper", "plan": None}
    # the body is valid strict JSON and the time parses back to the same instant
    text = json.dumps(body, allow_nan=False)
    back = json.loads(text)
    assert datetime.fromisoformat(back["time"].replace("Z", "+00:00")) == WHEN


def test_json_body_time_keeps_microseconds_and_z() -> None:
    t = datetime(2024, 12, 31, 23, 59, 59, 123456, tzinfo=UTC)
    assert _alert(time=t).json_body()["time"] == "2024-12-31T23:59:59.123456Z"


def test_json_body_redacts_every_string() -> None:
    safety.register_secret(CANARY)
    a = _alert(title=f"key {CANARY} rejected", text=f"body: {CANARY}!", book=f"b-{CANARY}",
               fields={"detail": f"x{CANARY}y", "n": 1.5})
    body = a.json_body()
    assert body["title"] == "key *** rejected"
    assert body["text"] == "body: ***!"
    assert body["book"] == "b-***"
    assert body["fields"] == {"detail": "x***y", "n": 1.5}
    assert CANARY not in json.dumps(body)


def test_telegram_body_shape_and_redaction() -> None:
    safety.register_secret(CANARY)
    a = _alert(kind=AlertKind.FAILURE, severity=Severity.CRITICAL, title="order failed",
               text=f"exchange said {CANARY}")
    body = a.telegram_body("-100123")
    assert set(body) == {"chat_id", "text", "disable_web_page_preview"}
    assert body["chat_id"] == "-100123"
    assert body["disable_web_page_preview"] is True
    assert body["text"] == "fbr CRITICAL [main] order failed\nexchange said ***"
    assert isinstance(body["text"], str) and body["text"].count("\n") == 1


def test_sink_body_follows_its_format() -> None:
    a = _alert()
    assert WebhookSink("https://x.test/h").body(a) == a.json_body()
    assert WebhookSink(TG_URL, fmt="telegram", chat_id="42").body(a) == a.telegram_body("42")


# --- url_label -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("url", "label"), [
    (TG_URL, "https://api.telegram.org"),
    ("http://user:pw@127.0.0.1:8080/hook?token=abc#frag", "http://127.0.0.1:8080"),
    ("https://hooks.example.com/services/T000/B000/XXXX", "https://hooks.example.com"),
    # a ':' typed for the '/' after the host makes the bot token the "port": never printed (it
    # raised, and the error echoed the token)
    ("https://api.telegram.org:bot123456789:AAHsecret/sendMessage", "https://api.telegram.org:?"),
])
def test_url_label_shows_scheme_host_port_only(url: str, label: str) -> None:
    assert url_label(url) == label


# --- delivery and retries ------------------------------------------------------------------------

def test_delivered_on_first_2xx() -> None:
    post, sleep = FakePost([204]), SleepLog()
    sink = WebhookSink(TG_URL, fmt="telegram", chat_id="7", post=post, sleep=sleep, timeout_s=3.0)
    assert sink.send(_alert()) is True
    assert (sink.delivered, sink.failed) == (1, 0)
    assert sleep.delays == []
    assert len(post.calls) == 1
    url, kw = post.calls[0]
    assert url == TG_URL
    assert kw["timeout"] == 3.0
    assert kw["headers"] == {"Content-Type": "application/json"}
    assert json.loads(kw["data"]) == _alert().telegram_body("7")


@pytest.mark.parametrize("failure", [500, 502, 503, 429, requests.ConnectionError("refused"),
                                     requests.Timeout("slow")])
def test_retried_one_plus_retries_times_with_exponential_backoff(
        failure: int | Exception) -> None:
    post, sleep = FakePost([failure]), SleepLog()
    sink = WebhookSink("https://x.test/h", retries=3, backoff_s=0.5, post=post, sleep=sleep)
    ok, why = sink.try_send(_alert())
    assert ok is False
    assert len(post.calls) == 1 + 3
    assert sleep.delays == [0.5, 1.0, 2.0]  # backoff_s x 2^k, k = 0, 1, 2
    if isinstance(failure, int):
        assert why == f"HTTP {failure}"
    else:
        assert why == type(failure).__name__


def test_retry_then_success_counts_delivered() -> None:
    post, sleep = FakePost([503, requests.ConnectionError("reset"), 200]), SleepLog()
    sink = WebhookSink("https://x.test/h", retries=2, backoff_s=1.0, post=post, sleep=sleep)
    assert sink.send(_alert()) is True
    assert len(post.calls) == 3
    assert sleep.delays == [1.0, 2.0]
    assert (sink.delivered, sink.failed) == (1, 0)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413])
def test_no_retry_after_a_final_4xx(status: int) -> None:
    post, sleep = FakePost([status]), SleepLog()
    sink = WebhookSink("https://x.test/h", retries=5, post=post, sleep=sleep)
    assert sink.try_send(_alert()) == (False, f"HTTP {status}")
    assert len(post.calls) == 1
    assert sleep.delays == []


def test_zero_retries_posts_once() -> None:
    post, sleep = FakePost([500]), SleepLog()
    sink = WebhookSink("https://x.test/h", retries=0, post=post, sleep=sleep)
    assert sink.try_send(_alert()) == (False, "HTTP 500")
    assert len(post.calls) == 1 and sleep.delays == []


def test_counters_over_several_alerts() -> None:
    post = FakePost([200, 404, 500, 500, 500, 201])
    sink = WebhookSink("https://x.test/h", retries=2, post=post, sleep=SleepLog())
    results = [sink.send(_alert()) for _ in range(4)]
    # 200 -> ok; 404 -> final; 500 x 3 -> failed after retries; 201 -> ok
    assert results == [True, False, False, True]
    assert (sink.delivered, sink.failed) == (2, 2)
    assert len(post.calls) == 1 + 1 + 3 + 1


def test_failure_is_logged_once_without_the_url(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    post = FakePost([requests.ConnectionError(f"cannot reach {TG_URL}")])
    sink = WebhookSink(TG_URL, fmt="telegram", chat_id="1", retries=2, post=post,
                       sleep=SleepLog())
    assert sink.send(_alert(kind=AlertKind.KILL)) is False
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    msg = warnings[0].getMessage()
    assert "kill" in msg
    assert "https://api.telegram.org" in msg
    assert "ConnectionError" in msg
    assert "SECRET" not in caplog.text
    assert "bot123" not in caplog.text


def test_http_failure_log_has_no_url_path(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    sink = WebhookSink(TG_URL, fmt="telegram", chat_id="1", retries=1, post=FakePost([401]),
                       sleep=SleepLog())
    assert sink.send(_alert()) is False
    assert "HTTP 401" in caplog.text
    assert "SECRET" not in caplog.text


def test_non_finite_fields_are_sent_as_null() -> None:
    """A NaN or infinite figure becomes JSON null (strict JSON on the wire), and the alert is
    still delivered."""
    post = FakePost([200])
    sink = WebhookSink("https://x.test/h", post=post, sleep=SleepLog())
    a = _alert(fields={"nan": float("nan"), "inf": float("inf"), "ninf": float("-inf"), "ok": 1.25})
    assert a.json_body()["fields"] == {"nan": None, "inf": None, "ninf": None, "ok": 1.25}
    assert sink.send(a) is True
    sent = post.calls[0][1]["data"]
    assert "NaN" not in sent and "Infinity" not in sent
    assert json.loads(sent)["fields"] == {"nan": None, "inf": None, "ninf": None, "ok": 1.25}


# --- AlertHub ------------------------------------------------------------------------------------

def test_hub_sends_to_every_sink_and_keeps_sent(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="executor.alerts")
    a, b = MemorySink(), MemorySink()
    post = FakePost([200])
    web = WebhookSink("https://x.test/h", post=post, sleep=SleepLog())
    hub = AlertHub(sinks=[a, b, web], book="main")
    t2 = datetime(2024, 6, 2, tzinfo=UTC)
    first = hub.emit(AlertKind.MARGIN, Severity.WARNING, "margin", "ratio 61%", WHEN,
                     margin_ratio=0.61)
    second = hub.emit(AlertKind.KILL, Severity.CRITICAL, "kill switch", "stopped", t2)
    assert hub.sent == [first, second]
    assert a.alerts == [first, second] and b.alerts == [first, second]
    assert web.delivered == 2 and len(post.calls) == 2
    assert first.book == "main"
    assert dict(first.fields) == {"margin_ratio": 0.61}
    assert first.time == WHEN and second.time == t2
    levels = [r.levelno for r in caplog.records if r.name == "executor.alerts"]
    assert levels == [logging.WARNING, logging.ERROR]


def test_hub_keeps_going_when_a_sink_fails() -> None:
    mem = MemorySink()
    web = WebhookSink("https://x.test/h", retries=0, post=FakePost([500]), sleep=SleepLog())
    hub = AlertHub(sinks=[web, mem])
    hub.emit(AlertKind.TRADE, Severity.INFO, "t", "x", WHEN)
    assert web.failed == 1
    assert len(mem.alerts) == 1 and len(hub.sent) == 1


# --- real loopback -------------------------------------------------------------------------------

class _Recorder(BaseHTTPRequestHandler):
    bodies: ClassVar[list[Any]] = []
    headers_seen: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        n = int(self.headers.get("Content-Length", "0"))
        type(self).bodies.append(json.loads(self.rfile.read(n)))
        type(self).headers_seen.append(self.headers.get("Content-Type", ""))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def loopback() -> Iterator[tuple[str, type[_Recorder]]]:
    handler = type("Rec", (_Recorder,), {"bodies": [], "headers_seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook/tok", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_real_post_to_loopback_delivers(loopback: tuple[str, type[_Recorder]]) -> None:
    url, handler = loopback
    sink = WebhookSink(url, timeout_s=5.0)
    a = _alert()
    assert sink.send(a) is True
    assert sink.delivered == 1
    assert handler.bodies == [a.json_body()]
    assert handler.headers_seen == ["application/json"]
    tg = WebhookSink(url, fmt="telegram", chat_id="99", timeout_s=5.0)
    assert tg.send(a) is True
    assert handler.bodies[-1] == a.telegram_body("99")


def test_closed_port_fails_after_retries() -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    sleep = SleepLog()
    sink = WebhookSink(f"http://127.0.0.1:{port}/hook", retries=2, backoff_s=0.25, timeout_s=2.0,
                       sleep=sleep)
    ok, why = sink.try_send(_alert())
    assert ok is False
    assert "ConnectionError" in why
    assert sleep.delays == [0.25, 0.5]
