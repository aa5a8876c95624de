"""The loop's memory: cycles and state per account in the journal file, and the health file."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from executor import safety
from executor.run_store import CycleRecord, RunStore, write_health

CANARY = "canary-secret-123"
T0 = datetime(2024, 6, 1, 0, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _fresh_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(safety, "_SECRETS", set())


@pytest.fixture
def journal(tmp_path: Path) -> Path:
    return tmp_path / "journal.sqlite"


@pytest.fixture
def store(journal: Path) -> Iterator[RunStore]:
    s = RunStore(journal, "paper:main")
    try:
        yield s
    finally:
        s.close()


def _rec(hours: float, action: str = "traded", turnover: float = 0.0,
         message: str = "") -> CycleRecord:
    return CycleRecord(T0 + timedelta(hours=hours), "schedule", action, turnover_usd=turnover,
                       message=message)


def test_record_and_cycles_round_trip(store: RunStore) -> None:
    a = CycleRecord(T0 + timedelta(hours=8, microseconds=123_456), "schedule", "traded",
                    plan_id="20240601080000abcd", nav=12_860.25, te_before=0.0849, te_after=0.0123,
                    turnover_usd=6_100.05, message="3 legs filled")
    b = CycleRecord(T0 + timedelta(hours=16), "drift", "held", message="TE^2 fall 1e-5 <= cost 2e-5")
    c = CycleRecord(T0 + timedelta(hours=24), "schedule", "failed")
    for r in (a, b, c):
        store.record(r)
    got = store.cycles()
    assert got == [a, b, c]
    assert got[0].time.tzinfo is not None and got[0].time == a.time
    assert got[2].plan_id is None and got[2].nav is None and got[2].te_before is None
    assert got[2].turnover_usd == 0.0 and got[2].message == ""


def test_cycles_empty(store: RunStore) -> None:
    assert store.cycles() == []
    assert store.turnover_since(T0) == 0.0


def test_two_accounts_in_one_file_are_separate(journal: Path) -> None:
    one, two = RunStore(journal, "paper:a"), RunStore(journal, "binanceusdm:b")
    try:
        one.record(_rec(1, turnover=100.0, message="a1"))
        two.record(_rec(2, turnover=7.0, message="b1"))
        one.record(_rec(3, turnover=50.0, message="a2"))
        assert [c.message for c in one.cycles()] == ["a1", "a2"]
        assert [c.message for c in two.cycles()] == ["b1"]
        assert one.turnover_since(T0) == pytest.approx(150.0)
        assert two.turnover_since(T0) == pytest.approx(7.0)
        one.put("day_nav", "10000")
        two.put("day_nav", "555")
        assert one.get("day_nav") == "10000"
        assert two.get("day_nav") == "555"
        two.put("day_nav", None)
        assert two.get("day_nav") is None
        assert one.get("day_nav") == "10000"
    finally:
        one.close()
        two.close()


def test_rows_survive_a_reopen(journal: Path) -> None:
    s = RunStore(journal, "paper:main")
    s.record(_rec(8, turnover=10.0, message="first"))
    s.put("last_cycle", (T0 + timedelta(hours=8)).isoformat())
    s.close()
    again = RunStore(journal, "paper:main")
    try:
        assert [c.message for c in again.cycles()] == ["first"]
        assert again.get("last_cycle") == "2024-06-01T08:00:00+00:00"
    finally:
        again.close()


def test_get_put_clear(store: RunStore) -> None:
    assert store.get("halted") is None
    store.put("halted", "loss limit")
    assert store.get("halted") == "loss limit"
    store.put("halted", "kill switch")  # overwrites
    assert store.get("halted") == "kill switch"
    store.put("plan", "{}")
    store.put("halted", None)
    assert store.get("halted") is None
    assert store.get("plan") == "{}"
    store.put("never_set", None)  # clearing an unset key is harmless
    assert store.get("never_set") is None


def test_turnover_since(store: RunStore) -> None:
    for h, t in [(1, 100.0), (8, 250.5), (16, 0.0), (24, 1_000.0), (32, 40.25)]:
        store.record(_rec(h, turnover=t))
    assert store.turnover_since(T0) == pytest.approx(1_390.75)
    # at or after: the 08:00 row counts
    assert store.turnover_since(T0 + timedelta(hours=8)) == pytest.approx(1_290.75)
    assert store.turnover_since(T0 + timedelta(hours=8, seconds=1)) == pytest.approx(1_040.25)
    assert store.turnover_since(T0 + timedelta(hours=24)) == pytest.approx(1_040.25)
    assert store.turnover_since(T0 + timedelta(hours=33)) == 0.0


def test_turnover_since_with_sub_second_times(store: RunStore) -> None:
    """isoformat drops zero microseconds; the comparison must still order the instants."""
    store.record(_rec(8, turnover=1.0))                            # 08:00:00
    store.record(_rec(8 + 0.5 / 3600, turnover=2.0))               # 08:00:00.5
    store.record(_rec(8 + 1 / 3600, turnover=4.0))                 # 08:00:01
    at = T0 + timedelta(hours=8)
    assert store.turnover_since(at) == pytest.approx(7.0)
    assert store.turnover_since(at + timedelta(milliseconds=500)) == pytest.approx(6.0)
    assert store.turnover_since(at + timedelta(milliseconds=501)) == pytest.approx(4.0)


def test_secret_in_message_is_redacted(store: RunStore, journal: Path) -> None:
    safety.register_secret(CANARY)
    store.record(_rec(1, action="failed", message=f"exchange refused key {CANARY}: -2015"))
    assert store.cycles()[0].message == "exchange refused key ***: -2015"
    raw = sqlite3.connect(str(journal))
    try:
        rows = raw.execute("SELECT message FROM run_cycles").fetchall()
    finally:
        raw.close()
    assert rows == [("exchange refused key ***: -2015",)]
    assert CANARY.encode() not in journal.read_bytes()


def test_cycle_record_to_dict_is_json_ready() -> None:
    r = CycleRecord(T0, "schedule", "dry_run", "p1", 1.5, 0.1, 0.05, 12.0, "ok")
    d = r.to_dict()
    assert d == {"time": "2024-06-01T00:00:00+00:00", "reason": "schedule", "action": "dry_run",
                 "plan_id": "p1", "nav": 1.5, "te_before": 0.1, "te_after": 0.05,
                 "turnover_usd": 12.0, "message": "ok", "margin_ratio": None, "max_drift": None}
    assert json.loads(json.dumps(d, allow_nan=False)) == d


def test_cycle_margin_and_drift_round_trip_infinite_as_null(tmp_path: Path) -> None:
    """The margin ratio and drift of a cycle are kept; an infinite ratio (liquidatable) as null."""
    store = RunStore(tmp_path / "j.sqlite", "paper:main")
    store.record(CycleRecord(T0, "schedule", "traded", margin_ratio=0.25, max_drift=0.031))
    store.record(CycleRecord(T0, "margin", "traded", margin_ratio=float("inf"), max_drift=0.2))
    got = [(c.margin_ratio, c.max_drift) for c in store.cycles()]
    store.close()
    assert got == [(0.25, 0.031), (None, 0.2)]


# --- health file ---------------------------------------------------------------------------------

def _health(**kw: object) -> dict[str, object]:
    doc: dict[str, object] = {"status": "running", "pid": 4242, "account": "paper:main",
                              "updated": T0, "last_cycle": T0 - timedelta(hours=8),
                              "next_cycle": T0 + timedelta(hours=8), "cycles": 3, "failures": 0,
                              "last_error": None}
    doc.update(kw)
    return doc


def test_write_health_valid_json_atomic(tmp_path: Path) -> None:
    path = tmp_path / "run" / "health.json"  # parent created
    write_health(path, _health())
    doc = json.loads(path.read_text())
    assert doc["status"] == "running"
    assert doc["pid"] == 4242
    assert doc["cycles"] == 3 and doc["failures"] == 0 and doc["last_error"] is None
    assert datetime.fromisoformat(doc["updated"]) == T0
    assert datetime.fromisoformat(doc["next_cycle"]) == T0 + timedelta(hours=8)
    assert sorted(p.name for p in path.parent.iterdir()) == ["health.json"]  # no .tmp left


def test_write_health_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "health.json"
    write_health(path, _health(status="running", cycles=1))
    write_health(path, _health(status="stopped", cycles=2, last_error="HTTP 500"))
    doc = json.loads(path.read_text())
    assert doc["status"] == "stopped" and doc["cycles"] == 2 and doc["last_error"] == "HTTP 500"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["health.json"]


def test_write_health_redacts(tmp_path: Path) -> None:
    safety.register_secret(CANARY)
    path = tmp_path / "health.json"
    write_health(path, _health(last_error=f"auth failed for {CANARY}"))
    assert CANARY not in path.read_text()
    assert json.loads(path.read_text())["last_error"] == "auth failed for ***"


def test_write_health_refuses_nan_and_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "health.json"
    write_health(path, _health(cycles=5))
    with pytest.raises(ValueError):
        write_health(path, _health(nav=float("nan")))
    assert json.loads(path.read_text())["cycles"] == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["health.json"]
