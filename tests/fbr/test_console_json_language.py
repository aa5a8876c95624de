"""One JSON language across the commands (issue 13 item 6): every ``--json`` object has a top-level
``status``; weights, drift, margin ratio and times have one name, one unit and one shape in solve,
whatif, status, execute, backtest and montecarlo. Local files only: dry run and paper, synthetic
data, no network."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fbr.cli import app

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
SEED = str(EXAMPLES / "seed_example_1.toml")

#: Names of the old dialects: none may appear anywhere in a --json object.
RETIRED = {"effective_weights_before", "effective_weights_after", "maintenance_ratio", "drift",
           "since_ms", "weights"}
#: The shared concepts: {asset: fraction} dicts, {asset: percentage points}, a fraction.
WEIGHT_KEYS = ("weights_before", "weights_after", "targets")
#: Keys whose string value is a time (ISO 8601; with a UTC offset unless a plain date).
TIME_KEYS = {"since", "created", "start", "end", "first", "last", "time", "requested_start",
             "requested_end"}


def _json(*args: str) -> dict[str, Any]:
    res = CliRunner().invoke(app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    doc: dict[str, Any] = json.loads(res.stdout)
    return doc


def _walk(obj: object, path: str = "") -> Iterator[tuple[str, str, object]]:
    """(path, key, value) of every key of every nested object."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield path, str(k), v
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _walk(v, f"{path}[{i}]")


def check_language(doc: dict[str, Any]) -> None:
    """The shared names, units and shapes (see the README's JSON section)."""
    assert isinstance(doc.get("status"), str) and doc["status"], "top-level status missing"
    for where, key, value in _walk(doc):
        at = f"{where}.{key}"
        assert key not in RETIRED, f"{at}: retired name"
        if key.endswith("_ms"):  # durations only: a timestamp is an ISO string
            assert "time" in key, f"{at}: epoch milliseconds? use an ISO 8601 time"
            assert value is None or (isinstance(value, int | float) and value < 1e9), at
        if key in WEIGHT_KEYS:
            assert isinstance(value, dict) and value, f"{at}: {{asset: fraction}}"
            assert all(w is None or (isinstance(w, float | int) and abs(w) < 10)
                       for w in value.values()), at  # None: no finite value (e.g. NAV <= 0)
        if key == "drift_pp":
            assert isinstance(value, dict)
            assert all(x is None or isinstance(x, float | int) for x in value.values()), at
        if key == "margin_ratio":
            assert value is None or (isinstance(value, float | int) and 0 <= value < 10), at
        if key in TIME_KEYS and isinstance(value, str):
            t = datetime.fromisoformat(value)
            if len(value) > 10:
                assert t.utcoffset() is not None and t.utcoffset().total_seconds() == 0, at  # type: ignore[union-attr]


def check_drift(doc: dict[str, Any], weights: str) -> None:
    """``drift_pp`` = 100 (``weights`` - ``targets``), percentage points."""
    for asset, pp in doc["drift_pp"].items():
        assert pp == pytest.approx(100 * (doc[weights][asset] - doc["targets"][asset]), abs=1e-9)


def test_solve() -> None:
    doc = _json("solve", SEED)
    check_language(doc)
    assert doc["status"] == "optimal" and set(doc) >= {*WEIGHT_KEYS, "drift_pp"}
    check_drift(doc, "weights_after")
    m = doc["margin"]
    assert m["margin_ratio"] == pytest.approx(m["maintenance"] / m["collateral"])


def test_whatif() -> None:
    doc = _json("whatif", SEED, "--shock", "BTC=-30%", "--with-solution")
    check_language(doc)
    assert doc["status"] == "ok"
    r = doc["scenarios"][0]
    assert set(r) >= {*WEIGHT_KEYS, "drift_pp"}
    check_drift(r, "weights_after")
    assert r["next"]["margin_ratio"] >= 0
    check_language(_json("whatif", SEED, "--list"))


def test_execute_and_status(tmp_path: Path) -> None:
    journal = str(tmp_path / "j.sqlite")
    check_language(_json("execute", SEED))  # dry run
    paper = _json("execute", SEED, "--exchange", "paper", "--journal", journal)
    check_language(paper)
    assert paper["status"] == "ok"
    st = _json("status", SEED, "--exchange", "paper", "--journal", journal)
    check_language(st)
    assert st["status"] == "ok" and set(st) >= {"weights_before", "targets", "drift_pp"}
    check_drift(st, "weights_before")
    assert datetime.fromisoformat(st["funding"]["since"]).utcoffset() is not None
    assert st["venue"] == "paper"


def test_a_dry_run_status_is_labelled_dry_run() -> None:
    """``--exchange dry-run`` reads the paper account (here the book file's holdings) but is not
    the paper venue: the report says dry-run; its plan is rounded on Binance's rules."""
    st = _json("status", SEED, "--exchange", "dry-run")
    assert st["venue"] == "dry-run"
    assert st["plan"]["venue"] == "binanceusdm"


def _backtest_file(tmp_path: Path, extra: str = "") -> Path:
    f = tmp_path / "bt.toml"
    f.write_text(f"""book = "{(EXAMPLES / 'backtest_book.toml').as_posix()}"
[data]
source = "synthetic"
seed = 3
days = 40
start = "2023-01-01"
{extra}
[[policies]]
kind = "no_rebalance"
name = "hold"
[[policies]]
kind = "naive_futures"
band = "5%"
name = "naive"
""")
    return f


def test_backtest(tmp_path: Path) -> None:
    doc = _json("backtest", str(_backtest_file(tmp_path)), "--no-report")
    check_language(doc)
    assert doc["status"] == "ok"
    assert datetime.fromisoformat(doc["span"]["start"]).utcoffset() is not None


def test_montecarlo(tmp_path: Path) -> None:
    f = _backtest_file(tmp_path, "[montecarlo]\npaths = 2\nsteps = 8\nseed = 1")
    doc = _json("montecarlo", str(f), "--no-report", "--per-path")
    check_language(doc)
    assert doc["status"] == "ok" and doc["paths"] == 2


def test_errors_have_a_status_too(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["solve", str(tmp_path / "none.toml"), "--json"])
    assert res.exit_code == 2
    doc = json.loads(res.stdout.splitlines()[0])
    assert doc["status"] == "error" and doc["exit_code"] == 2
