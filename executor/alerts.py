"""Alerts of the daily loop: trades, failures, unknown legs, margin and funding warnings, the daily
summary, kill switch and restarts, sent to a webhook.

A webhook is an HTTP(S) URL that takes a JSON POST. Two bodies:

- ``"json"`` (generic): ``{"source": "fbr", "kind", "severity", "title", "text", "time", "book",
  "fields"}``; ``time`` is ISO 8601 UTC, ``fields`` a flat object of numbers and strings (a
  number with no finite value is ``null``);
- ``"telegram"`` (the Bot API's ``sendMessage``): ``{"chat_id", "text", "disable_web_page_preview"}``,
  ``text`` the title and text on two lines.

Delivery: at most ``1 + retries`` POSTs per alert, ``backoff_s`` x 2^k seconds apart (each pause at
most :data:`MAX_BACKOFF_S`, 30 s); a 2xx answer is delivered, a 4xx other than 429 is final (the body
will not become acceptable), anything else is retried. Each POST has a total deadline of
``timeout_s`` seconds (connect, headers and body together: ``requests``' own timeout bounds each
socket read only, so a receiver that drips its answer would hold it for as long as it likes): the
POST runs in a daemon worker thread and an answer not complete by the deadline is a failed attempt.
At most one worker per sink is ever alive: a POST that is still hanging is left to finish on its
own, and the next attempt first waits for it (within its own deadline) and fails, without a new
POST, while it still hangs. So one alert holds the loop at most ``(1 + retries) x timeout_s`` plus
the pauses (with the run file's bounds, retries <= 5 and timeout_s <= 60 s, and ``backoff_s`` = 1:
6 x 60 + 1 + 2 + 4 + 8 + 16 = 391 s). An alert that cannot be delivered is logged once and counted;
it never stops the loop. Secrets never reach a payload: every string goes through
:func:`executor.safety.redact`, and the URL (a Telegram URL carries the bot token) is never part
of a payload, a log line or an error message (:func:`url_label` shows its scheme and host only).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Protocol
from urllib.parse import urlsplit

import requests

from executor.safety import redact

log = logging.getLogger("executor.alerts")

#: Longest pause between two POSTs of one alert (seconds): ``backoff_s`` x 2^k is capped here.
MAX_BACKOFF_S = 30.0


class AlertKind(StrEnum):
    """What an alert is about."""

    START = "start"
    TRADE = "trade"
    FAILURE = "failure"
    UNKNOWN_LEG = "unknown_leg"
    MARGIN = "margin"
    FUNDING = "funding"
    LIMIT = "limit"
    DAILY_SUMMARY = "daily_summary"
    KILL = "kill"
    RESTART = "restart"
    STOP = "stop"


class Severity(StrEnum):
    """How urgent: ``info`` (trades, summaries), ``warning`` (margin, funding, limits),
    ``critical`` (failures, an order in doubt, the kill switch)."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


@dataclass(frozen=True)
class Alert:
    """One alert. ``time`` is the loop's clock (UTC; simulated in a replay); ``fields`` holds
    figures (USD, fractions) and names, never secrets."""

    kind: AlertKind
    severity: Severity
    title: str
    text: str
    time: datetime
    book: str = ""
    fields: Mapping[str, float | int | str | None] = field(default_factory=dict)

    def json_body(self) -> dict[str, object]:
        """The generic JSON body (strings redacted)."""
        return {"source": "fbr", "kind": self.kind.value, "severity": self.severity.value,
                "title": redact(self.title), "text": redact(self.text),
                "time": self.time.astimezone(UTC).isoformat().replace("+00:00", "Z"),
                "book": redact(self.book),
                "fields": {k: _field(v) for k, v in self.fields.items()}}

    def telegram_body(self, chat_id: str) -> dict[str, object]:
        """A Telegram ``sendMessage`` body: the title and text on two lines."""
        head = f"fbr {self.severity.value.upper()} [{self.book}] {self.title}"
        return {"chat_id": chat_id, "text": redact(f"{head}\n{self.text}"),
                "disable_web_page_preview": True}


def _field(v: float | int | str | None) -> float | int | str | None:
    """A field value for JSON: strings redacted, non-finite numbers as null."""
    if isinstance(v, str):
        return redact(v)
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class AlertSink(Protocol):
    """Where alerts go: ``send`` returns True when the alert was delivered."""

    def send(self, alert: Alert) -> bool:
        """Deliver one alert (never raises for a delivery failure)."""
        ...


def url_label(url: str) -> str:
    """``scheme://host[:port]`` of a URL: safe to print (no path, query or credentials); a port
    that does not parse (``host:bot123:TOKEN/...``, a ``:`` typed for a ``/``) is not printed."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    try:
        port = parts.port
    except ValueError:  # its text may be a token: never echoed
        return f"{parts.scheme}://{host}:?"
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


Post = Callable[..., requests.Response]


@dataclass
class WebhookSink:
    """POST alerts to ``url`` as ``fmt`` (``"json"`` or ``"telegram"``; Telegram needs
    ``chat_id``), with bounded retries and a total deadline per POST (see the module docstring):
    ``retries`` extra POSTs, ``backoff_s`` seconds before the first retry (doubling, at most
    :data:`MAX_BACKOFF_S`), ``timeout_s`` seconds per POST. ``post`` and ``sleep`` are injected
    in tests."""

    url: str
    fmt: str = "json"
    chat_id: str = ""
    retries: int = 2
    backoff_s: float = 1.0
    timeout_s: float = 5.0
    post: Post = requests.post
    sleep: Callable[[float], None] = time.sleep
    failed: int = 0
    delivered: int = 0
    #: The worker of a POST that missed its deadline and may still be running, the list its
    #: answer lands in and the delivery (one ``try_send``) it belongs to (None: none).
    _hung: tuple[threading.Thread, list[int | BaseException], object] | None = field(
        default=None, init=False, repr=False, compare=False)

    def body(self, alert: Alert) -> dict[str, object]:
        """The payload of ``alert`` in this sink's format."""
        return alert.telegram_body(self.chat_id) if self.fmt == "telegram" else alert.json_body()

    def send(self, alert: Alert) -> bool:
        """POST the alert; True when a 2xx answer came within the retries (never raises)."""
        ok, why = self.try_send(alert)
        if ok:
            self.delivered += 1
            return True
        self.failed += 1
        log.warning("alert %s not delivered to %s: %s", alert.kind.value, url_label(self.url), why)
        return False

    def try_send(self, alert: Alert) -> tuple[bool, str]:
        """(delivered, the last failure's reason) after at most ``1 + retries`` POSTs; takes at
        most ``(1 + retries) x timeout_s`` seconds plus the backoff pauses."""
        data = json.dumps(self.body(alert), allow_nan=False, default=str)
        why, delivery = "", object()  # a late answer counts for its own delivery only
        for attempt in range(self.retries + 1):
            if attempt:
                self.sleep(self.backoff_delay(attempt))
            status, why = self._post_once(data, delivery)
            if status is None:
                continue
            if 200 <= status < 300:
                return True, ""
            why = f"HTTP {status}"
            if 400 <= status < 500 and status != 429:
                break
        return False, why

    def backoff_delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1, 2, ...): ``backoff_s`` x
        2^(attempt - 1), at most :data:`MAX_BACKOFF_S`."""
        return min(self.backoff_s * 2.0 ** min(attempt - 1, 64), MAX_BACKOFF_S)

    def _post_once(self, data: str, delivery: object) -> tuple[int | None, str]:
        """One POST with a total deadline of ``timeout_s`` seconds, run in a daemon worker thread:
        (the HTTP status, "") or (None, why it failed). A POST of the same ``delivery`` that
        missed its deadline and then answered 2xx delivered it: that answer is returned, and
        nothing is POSTed again. Never raises."""
        deadline = time.monotonic() + self.timeout_s
        if self._hung is not None:  # one worker per sink at most: wait for the hanging one
            worker, late, owner = self._hung
            worker.join(self.timeout_s)
            if worker.is_alive():
                return None, f"an earlier POST still hangs (no answer within {self.timeout_s:g} s)"
            self._hung = None
            if owner is delivery and late and isinstance(late[0], int) and 200 <= late[0] < 300:
                return late[0], ""  # this alert's late answer took it: it is not POSTed again
        outcome: list[int | BaseException] = []

        def work() -> None:
            try:
                outcome.append(self.post(self.url, data=data, timeout=self.timeout_s,
                                         headers={"Content-Type": "application/json"}).status_code)
            except Exception as exc:  # any failure of the POST is a failed attempt
                outcome.append(exc)

        worker = threading.Thread(target=work, name="fbr-webhook", daemon=True)
        try:
            worker.start()
        except RuntimeError as exc:  # no thread could be started
            return None, type(exc).__name__
        worker.join(max(deadline - time.monotonic(), 0.0))
        if worker.is_alive() or not outcome:
            self._hung = worker, outcome, delivery
            return None, f"no complete answer within {self.timeout_s:g} s"
        result = outcome[0]
        if isinstance(result, BaseException):
            return None, type(result).__name__
        return result, ""


@dataclass
class MemorySink:
    """Keeps alerts in a list (dry runs and tests)."""

    alerts: list[Alert] = field(default_factory=list)

    def send(self, alert: Alert) -> bool:
        """Append the alert."""
        self.alerts.append(alert)
        return True


@dataclass
class AlertHub:
    """Sends each alert to every sink and logs it as one structured line."""

    sinks: list[AlertSink] = field(default_factory=list)
    book: str = ""
    sent: list[Alert] = field(default_factory=list)

    def emit(self, kind: AlertKind, severity: Severity, title: str, text: str, when: datetime,
             **fields: float | int | str | None) -> Alert:
        """Build, log and send one alert."""
        alert = Alert(kind, severity, title, text, when, self.book, dict(fields))
        level = {Severity.INFO: logging.INFO, Severity.WARNING: logging.WARNING,
                 Severity.CRITICAL: logging.ERROR}[severity]
        log.log(level, "%s: %s. %s", kind.value, title, text)
        self.sent.append(alert)
        for sink in self.sinks:
            sink.send(alert)
        return alert

    @property
    def undelivered(self) -> int:
        """Alerts a webhook never took (after every retry), over this hub's webhook sinks."""
        return sum(s.failed for s in self.sinks if isinstance(s, WebhookSink))
