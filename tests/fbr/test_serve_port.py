"""``fbr serve --port``: a port outside 1..65535 is refused (exit 2, naming --port) before any
server starts, and a failed start of uvicorn (a port in use) is exit 2 naming the port, not
uvicorn's exit 3 (fbr's "infeasible"). uvicorn.run is replaced: no server runs here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import uvicorn
from typer.testing import CliRunner

from fbr.cli import app

ROOT = Path(__file__).resolve().parents[2]
BOOK = str(ROOT / "examples" / "seed_example_1.toml")
runner = CliRunner()


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The keyword arguments of every uvicorn.run call (none runs a server)."""
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda *_a, **k: calls.append(k))
    return calls


@pytest.mark.parametrize("port", ["70000", "65536", "0", "-1"])
def test_port_out_of_range_is_refused_before_the_server_starts(
        port: str, started: list[dict[str, Any]], tmp_path: Path) -> None:
    """--port 70000 used to bind 70000 mod 65536 = 4464 while printing :70000, and -1 ended with
    uvicorn's exit 3: a port outside 1..65535 is exit 2 naming --port, and uvicorn never runs."""
    res = runner.invoke(app, ["serve", BOOK, "--journal", str(tmp_path / "j.sqlite"),
                              "--port", port])
    assert started == []
    assert res.exit_code == 2, res.output
    assert "--port" in res.output and "1..65535" in res.output


def test_port_in_range_reaches_uvicorn(started: list[dict[str, Any]], tmp_path: Path) -> None:
    """The highest port, 65535, is passed to uvicorn unchanged."""
    res = runner.invoke(app, ["serve", BOOK, "--journal", str(tmp_path / "j.sqlite"),
                              "--port", "65535"])
    assert res.exit_code == 0, res.output
    assert [c["port"] for c in started] == [65535]


def test_a_failed_start_is_exit_2_naming_the_port(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    """uvicorn ends a start that fails (the port in use) with sys.exit(3), fbr's "infeasible"
    code: fbr serve maps it to exit 2 with a message naming the port and --port."""
    def failing_run(*_a: object, **_k: object) -> None:
        raise SystemExit(3)

    monkeypatch.setattr(uvicorn, "run", failing_run)
    res = runner.invoke(app, ["serve", BOOK, "--journal", str(tmp_path / "j.sqlite"),
                              "--port", "8765"])
    assert res.exit_code == 2, res.output
    assert "127.0.0.1:8765" in res.output and "--port" in res.output
