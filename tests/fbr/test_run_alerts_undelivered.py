"""Alerts a webhook never took are surfaced: ``fbr run --json``'s ``alerts_undelivered`` and the
health file's (they were counted in the sink only, which no output showed; every alert is still
kept in the journal's ``run_alerts``). The webhook takes the start alert (the preflight) and
answers 503 to everything after; with ``retries = 0`` each undelivered alert is one refused
POST, so the count is the refused POSTs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fbr.cli import app

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed_example_1.toml"
RUN = f"""
book = "{SEED}"
[[policies]]
kind = "naive_futures"
band = "1%"
name = "naive"
[run]
exchange = "paper"
interval = "1d"
[alerts]
webhook = "http://127.0.0.1:9/hook"
retries = 0
"""


class Answer:
    def __init__(self, status_code: int) -> None:
        self.status_code = status_code


def test_undelivered_alerts_are_counted_in_the_outputs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fbr import run_wiring

    refused: list[str] = []

    def post(url: str, data: str, **kw: Any) -> Answer:
        title = json.loads(data)["title"]
        if not refused and "start" in title:  # the preflight's start alert
            return Answer(200)
        refused.append(title)
        return Answer(503)

    monkeypatch.setattr(run_wiring, "WEBHOOK_POST", [post])
    monkeypatch.setenv("FBR_LOCK_DIR", str(tmp_path / "locks"))
    (tmp_path / "run.toml").write_text(RUN, encoding="utf-8")
    res = CliRunner().invoke(app, ["run", str(tmp_path / "run.toml"), "--once", "--journal",
                                   str(tmp_path / "j.sqlite"), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert refused and doc["alerts_undelivered"] == len(refused)
    health = json.loads(Path(doc["health_file"]).read_text())
    assert health["alerts_undelivered"] == len(refused)
