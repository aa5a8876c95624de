"""The ``fbr run`` file: a backtest file (``book``, ``[data]``, ``[[policies]]``, ``[backtest]``) plus
the loop's own sections, so one file replays the policy (``fbr backtest``, ``fbr run --simulate``)
and runs it on an account (``fbr run``).

- ``[run]``: ``exchange`` (``"dry-run"``, ``"paper"``, ``"binanceusdm"``), ``interval`` or ``cron``,
  ``policy`` (the name of the ``[[policies]]`` entry; default: the only one), ``gate`` (default
  true), ``journal``, ``state_dir`` (health and kill files; default ``<journal folder>/run``),
  ``log_file`` (JSON lines; default stderr), ``order_type``, ``max_order_usd``, ``max_plan_usd``,
  ``prices`` (the paper venue's market: ``"book"``, the book file's, or ``"binanceusdm"``, the
  exchange's public prices and funding, :mod:`executor.paper_feed`);
- ``[triggers]``: ``drift_band``, ``margin_ratio``, ``margin_warn``, ``funding_alert`` (fractions, or
  ``false`` for off), ``funding_ahead``, ``check_every``, ``retry_every`` (durations);
- ``[limits]``: ``daily_turnover_usd``, ``daily_loss_usd``;
- ``[alerts]``: ``webhook`` (a URL) or ``webhook_env`` (the name of an environment variable that
  holds it: a Telegram URL carries the bot token), ``format`` (``"json"`` or ``"telegram"``),
  ``chat_id`` (Telegram), ``retries`` (a whole number, 0 to :data:`MAX_ALERT_RETRIES` = 5),
  ``timeout_s`` (seconds per POST, > 0 and at most :data:`MAX_ALERT_TIMEOUT_S` = 60).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from executor.run_settings import DailyLimits, Triggers
from executor.schedule import Schedule, parse_duration
from fbr.backtest_config import RUN_SECTIONS, BacktestConfig, parse_backtest
from fbr.backtest_policies import PolicySpec
from fbr.config_values import (
    boolean,
    check_keys,
    choice,
    fraction,
    positive,
    string,
    sub_table,
    whole,
)
from models.errors import ValidationError
from models.toml_file import load_toml_file

RUN_KEYS = ("exchange", "interval", "cron", "policy", "gate", "journal", "state_dir", "log_file",
            "order_type", "max_order_usd", "max_plan_usd", "prices")
TRIGGER_KEYS = ("drift_band", "margin_ratio", "margin_warn", "funding_alert", "funding_ahead",
                "check_every", "retry_every")
LIMIT_KEYS = ("daily_turnover_usd", "daily_loss_usd")
ALERT_KEYS = ("webhook", "webhook_env", "format", "chat_id", "retries", "timeout_s")
EXCHANGES = ("dry-run", "paper", "binanceusdm")
#: Policies that trade spot: the loop sends futures orders only.
SPOT_POLICIES = ("calendar_spot", "band_spot")
#: Most retries of one alert (``1 + retries`` POSTs): each undelivered alert holds the loop.
MAX_ALERT_RETRIES = 5
#: Longest total deadline of one alert POST (seconds).
MAX_ALERT_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class AlertSpec:
    """Where alerts go (``url`` None: nowhere but the log); ``retries`` extra POSTs per alert
    (0..5), ``timeout_s`` the total deadline of one POST (seconds, (0, 60])."""

    url: str | None = None
    fmt: str = "json"
    chat_id: str = ""
    retries: int = 2
    timeout_s: float = 5.0


@dataclass(frozen=True)
class RunConfig:
    """A parsed ``fbr run`` file."""

    backtest: BacktestConfig
    policy: PolicySpec
    exchange: str
    schedule: Schedule
    triggers: Triggers
    limits: DailyLimits
    alerts: AlertSpec
    gate: bool = True
    journal: Path | None = None
    state_dir: Path | None = None
    log_file: Path | None = None
    order_type: str = "market"
    max_order_usd: float = 50_000.0
    max_plan_usd: float = 250_000.0
    prices: str = "book"


def load_run_file(path: str | Path) -> RunConfig:
    """Read and check an ``fbr run`` file (every section before any work)."""
    return load_toml_file(path, "run", "examples/run_paper.toml",
                          lambda data, p: parse_run(data, source=p))


def parse_run(data: Mapping[str, object], *, source: Path) -> RunConfig:
    """Build a :class:`RunConfig`; the backtest part goes to :func:`parse_backtest`."""
    rest = {k: v for k, v in data.items() if k not in RUN_SECTIONS}
    base_dir = source.resolve().parent
    run = sub_table(data, "run", "")
    check_keys(run, RUN_KEYS, "run")
    cfg = parse_backtest(rest, source=source)
    return RunConfig(
        backtest=cfg, policy=_policy(cfg, run), exchange=_exchange(run),
        schedule=_schedule(run), triggers=_triggers(sub_table(data, "triggers", "")),
        limits=_limits(sub_table(data, "limits", "")), alerts=_alerts(sub_table(data, "alerts", "")),
        gate=boolean(run.get("gate", True), "run.gate"),
        journal=_path(run, "journal", base_dir), state_dir=_path(run, "state_dir", base_dir),
        log_file=_path(run, "log_file", base_dir),
        order_type=choice(run.get("order_type", "market"), "run.order_type",
                          ("market", "limit"), str),
        max_order_usd=positive(run.get("max_order_usd", 50_000.0), "run.max_order_usd"),
        max_plan_usd=positive(run.get("max_plan_usd", 250_000.0), "run.max_plan_usd"),
        prices=choice(run.get("prices", "book"), "run.prices", ("book", "binanceusdm"), str))


def _exchange(run: Mapping[str, object]) -> str:
    return choice(run.get("exchange", "paper"), "run.exchange", EXCHANGES, str)


def _path(run: Mapping[str, object], key: str, base_dir: Path) -> Path | None:
    if key not in run:
        return None
    p = Path(string(run[key], f"run.{key}")).expanduser()
    return p if p.is_absolute() else base_dir / p


def _policy(cfg: BacktestConfig, run: Mapping[str, object]) -> PolicySpec:
    """The ``[[policies]]`` entry the loop runs."""
    names = [p.name for p in cfg.policies]
    if "policy" in run:
        name = string(run["policy"], "run.policy")
        if name not in names:
            raise ValidationError("run.policy", f"is {name!r}, not a [[policies]] name",
                                  f"give one of {names}")
        spec = cfg.policies[names.index(name)]
    elif len(cfg.policies) == 1:
        spec = cfg.policies[0]
    else:
        raise ValidationError("run.policy", f"is missing and the file has {len(names)} policies",
                              f"name the one to run: policy = {names[-1]!r}")
    if spec.kind in SPOT_POLICIES:
        raise ValidationError(spec.where, f"is a {spec.kind} policy, which trades spot",
                              "fbr run sends futures orders only: run a futures policy "
                              "(naive_futures, edge_band_futures, optimized, ...)")
    if spec.kind == "optimized" and cfg.loaded.settings.spot.enabled:
        raise ValidationError("solver.spot_leg", f"is true in {cfg.book_path}: the optimiser "
                              f"({spec.where}) also trades spot, and fbr run sends futures orders "
                              "only", "set spot_leg = false in the book's [solver] for the loop")
    return spec


def _schedule(run: Mapping[str, object]) -> Schedule:
    if "interval" in run and "cron" in run:
        raise ValidationError("run.cron", "and run.interval are both set",
                              'give one: interval = "1d" or cron = "5 0 * * *"')
    if "cron" in run:
        return Schedule(cron=string(run["cron"], "run.cron"))
    return Schedule(interval=parse_duration(string(run.get("interval", "1d"), "run.interval"),
                                            "run.interval"))


def _off_or_fraction(t: Mapping[str, object], key: str, default: float | None) -> float | None:
    if key not in t:
        return default
    if t[key] is False:
        return None
    return fraction(t[key], f"triggers.{key}", upper=1.0, upper_open=True)


def _triggers(t: Mapping[str, object]) -> Triggers:
    check_keys(t, TRIGGER_KEYS, "triggers")
    d = Triggers()
    ahead = _duration(t, "funding_ahead", timedelta(0)) if "funding_ahead" in t else None
    every = _duration(t, "check_every", d.check_every)
    retry = _duration(t, "retry_every", d.retry_every)
    return Triggers(drift_band=_off_or_fraction(t, "drift_band", d.drift_band),
                    margin_ratio=_off_or_fraction(t, "margin_ratio", d.margin_ratio),
                    margin_warn=_off_or_fraction(t, "margin_warn", d.margin_warn),
                    funding_alert=_off_or_fraction(t, "funding_alert", d.funding_alert),
                    funding_ahead=ahead, check_every=every, retry_every=retry)


def _duration(t: Mapping[str, object], key: str, default: timedelta) -> timedelta:
    if key not in t:
        return default
    return parse_duration(string(t[key], f"triggers.{key}"), f"triggers.{key}")


def _limits(t: Mapping[str, object]) -> DailyLimits:
    check_keys(t, LIMIT_KEYS, "limits")
    return DailyLimits(
        turnover_usd=positive(t.get("daily_turnover_usd", math.inf), "limits.daily_turnover_usd",
                              allow_inf=True),
        loss_usd=positive(t.get("daily_loss_usd", math.inf), "limits.daily_loss_usd",
                          allow_inf=True))


def _http_url(url: str) -> bool:
    """An http(s) URL with a host whose port, if given, is a number (a ``:`` typed for the ``/``
    after the host makes a bot token the "port"); the URL itself is never echoed (it may hold
    one)."""
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - raises ValueError when the port is not a number
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _alerts(t: Mapping[str, object]) -> AlertSpec:
    check_keys(t, ALERT_KEYS, "alerts")
    if "webhook" in t and "webhook_env" in t:
        raise ValidationError("alerts.webhook_env", "and alerts.webhook are both set",
                              "give the URL in one of them")
    url = string(t["webhook"], "alerts.webhook") if "webhook" in t else None
    field = "alerts.webhook"
    if "webhook_env" in t:
        name = string(t["webhook_env"], "alerts.webhook_env")
        url = os.environ.get(name)
        if not url:
            raise ValidationError("alerts.webhook_env", f"names {name}, which is not set",
                                  f"export {name}=https://... (the webhook URL), or remove it")
        field = f"alerts.webhook_env ({name})"
    if url is not None and not _http_url(url):
        raise ValidationError(field, "is not an http(s) URL with a host and a numeric port (if any)",
                              "give the webhook URL, e.g. https://hooks.example.com/fbr")
    fmt = choice(t.get("format", "json"), "alerts.format", ("json", "telegram"), str)
    chat = string(t["chat_id"], "alerts.chat_id") if "chat_id" in t else ""
    if fmt == "telegram" and not chat:
        raise ValidationError("alerts.chat_id", "is missing for format = \"telegram\"",
                              "give the chat id the bot posts to: chat_id = \"123456\"")
    return AlertSpec(url=url, fmt=fmt, chat_id=chat, retries=_alert_retries(t),
                     timeout_s=_alert_timeout(t))


def _alert_retries(t: Mapping[str, object]) -> int:
    """``alerts.retries``: a whole number from 0 to MAX_ALERT_RETRIES (default 2)."""
    retries = whole(t.get("retries", 2), "alerts.retries", 0)
    if retries > MAX_ALERT_RETRIES:
        raise ValidationError("alerts.retries", f"is {retries}, more than {MAX_ALERT_RETRIES}: an "
                              "undelivered alert holds the loop through every retry",
                              f"give a whole number from 0 to {MAX_ALERT_RETRIES}, e.g. retries = 2")
    return retries


def _alert_timeout(t: Mapping[str, object]) -> float:
    """``alerts.timeout_s``: seconds per POST, > 0 and at most MAX_ALERT_TIMEOUT_S (default 5)."""
    timeout = positive(t.get("timeout_s", 5.0), "alerts.timeout_s")
    if timeout > MAX_ALERT_TIMEOUT_S:
        raise ValidationError("alerts.timeout_s", f"is {timeout:g} s, more than "
                              f"{MAX_ALERT_TIMEOUT_S:g} s: a silent webhook holds the loop that long "
                              "per POST", f"give seconds > 0 and at most {MAX_ALERT_TIMEOUT_S:g}, "
                              "e.g. timeout_s = 5")
    return timeout

