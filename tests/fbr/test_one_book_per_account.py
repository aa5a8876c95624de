"""One account, one book: a second book's plan on an account another book trades in the same journal
is refused (a review: book B read book A's -0.012 BTC hedge as its own and sold 0.188; A's next run
read B's -0.2 as its hedge and bought it back, every pair of runs undoing the other and paying fees;
each also counted the whole wallet as its collateral). The loopback emulator through real ccxt,
the CLI as a user runs it."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

EXEC_TESTS = str(Path(__file__).resolve().parents[1] / "executor")
if EXEC_TESTS not in sys.path:
    sys.path.insert(0, EXEC_TESTS)

from binance_emulator import BinanceEmulator  # noqa: E402
from exec_helpers import cli_emulator  # noqa: E402

from fbr.cli import app  # noqa: E402

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed_example_1.toml"
runner = CliRunner()

BOOK_B = """
[book]
name = "book b"
cash = 20000.0
[targets]
BTC = 0.30
ETH = 0.60
SOL = 0.10
[spot]
BTC = 0.5
ETH = 10.0
SOL = 40.0
[contract_defaults]
lot_step = 0.001
min_notional = 0.0
leverage = 10
[market]
time = 2024-06-01T00:00:00Z
mark_from_spot = true
[market.spot]
BTC = 60000.0
ETH = 3000.0
SOL = 150.0
[risk]
basis_risk = false
correlation = 0.7
[risk.vols]
BTC = 0.55
ETH = 0.70
SOL = 0.95
[costs]
trading = false
carry = false
impact = false
[constraints]
margin = false
"""



@pytest.fixture
def emu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[BinanceEmulator]:
    """A loopback emulator that `fbr ... --exchange binanceusdm` talks to, keys in the environment."""
    monkeypatch.setenv("FBR_LOCK_DIR", str(tmp_path / "locks"))
    with cli_emulator(monkeypatch, "two-books-key", "two-books-secret") as e:
        yield e


def _run(*args: str) -> tuple[int, dict[str, Any], str]:
    res = runner.invoke(app, [*args, "--json"])
    return res.exit_code, json.loads(res.stdout) if res.stdout.strip().startswith("{") else {}, \
        res.output


def test_a_second_book_on_the_account_is_refused_before_any_order(
        emu: BinanceEmulator, tmp_path: Path) -> None:
    book_b = tmp_path / "book_b.toml"
    book_b.write_text(BOOK_B, encoding="utf-8")
    journal = str(tmp_path / "j.sqlite")
    code, _, out = _run("execute", str(SEED), "--exchange", "binanceusdm", "--live",
                         "--journal", journal)
    assert code == 0, out
    orders = len(emu.accepted_orders())
    code, _, out = _run("execute", str(book_b), "--exchange", "binanceusdm", "--live",
                         "--journal", journal)
    assert code == 6, out  # refused
    assert len(emu.accepted_orders()) == orders  # nothing sent
    assert "is traded by book" in out and "'book b'" in out and "Fix:" in out, out
    # book A goes on trading its account; a new journal for book B is the user's explicit choice
    code, _, out = _run("execute", str(SEED), "--exchange", "binanceusdm", "--live",
                         "--journal", journal)
    assert code == 0, out


def test_a_loop_of_a_second_book_is_refused_at_start(emu: BinanceEmulator, tmp_path: Path) -> None:
    """``fbr run --live`` of book B on the account book A trades in the journal stops before its
    first cycle, exit 6, one message (it failed a cycle at every wake-up, each plan refused when
    recorded); nothing is sent."""
    book_b = tmp_path / "book_b.toml"
    book_b.write_text(BOOK_B, encoding="utf-8")
    journal = str(tmp_path / "j.sqlite")
    code, _, out = _run("execute", str(SEED), "--exchange", "binanceusdm", "--live",
                        "--journal", journal)
    assert code == 0, out
    orders = len(emu.accepted_orders())
    run = tmp_path / "run.toml"
    with _Receiver() as hook:
        run.write_text(f'book = "{book_b}"\n[[policies]]\nkind = "naive_futures"\nband = "1%"\n'
                       f'name = "naive"\n[run]\nexchange = "binanceusdm"\ninterval = "1d"\n'
                       f'[alerts]\nwebhook = "{hook.url}"\n', encoding="utf-8")
        res = runner.invoke(app, ["run", str(run), "--live", "--once", "--journal", journal])
    assert res.exit_code == 6, res.output
    assert "is traded by book" in res.output and "'book b'" in res.output
    assert len(emu.accepted_orders()) == orders
    assert hook.bodies == []  # a refused loop never announced "fbr run started"


class _Receiver:
    """A webhook receiver on 127.0.0.1 that answers 200 and keeps every body it was sent."""

    def __init__(self) -> None:
        bodies: list[bytes] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                bodies.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                return

        self.bodies = bodies
        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def __enter__(self) -> _Receiver:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
