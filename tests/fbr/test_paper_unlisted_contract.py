"""A paper account holding a position on a contract the book no longer lists is refused, with one
message, by every reader of the paper account for a book (``executor.paper.paper_book`` and the
paper gateway over the journal's tables): ``fbr status``, ``solve``, ``whatif`` and ``execute``
with ``--exchange paper``. Before, status dropped the position from the NAV without a word and
execute stopped on "futures.SOL-PERP: is 3.33333333 contracts" as if the book file held it."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

EXEC_TESTS = str(Path(__file__).resolve().parents[1] / "executor")
if EXEC_TESTS not in sys.path:
    sys.path.insert(0, EXEC_TESTS)

from exec_helpers import market, three_asset_book  # noqa: E402

from executor.journal import Journal  # noqa: E402
from executor.journal_schema import JournalError  # noqa: E402
from executor.paper import PaperGateway, PaperStore, paper_book  # noqa: E402
from fbr.cli import app  # noqa: E402
from models.book import FuturesPosition  # noqa: E402

runner = CliRunner()

BOOK = """[book]
name = "paper unlisted"
cash = 3000.0
[targets]
BTC = 0.50
ETH = 0.30
SOL = 0.20
[spot]
BTC = 0.1
ETH = 1.0
SOL = 10.0
[contract_defaults]
lot_step = 1e-8
min_notional = 0.0
leverage = 10.0
taker_fee = 0.0005
[market]
time = 2024-06-01T00:00:00Z
mark_from_spot = true
[market.spot]
BTC = 60000
ETH = 2500
SOL = 150
[market.half_spread]
BTC-PERP = 0.001
ETH-PERP = 0.001
SOL-PERP = 0.001
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

#: The book's contracts once SOL-PERP is no longer listed (BTC and ETH perpetuals only).
TWO_CONTRACTS = """
[[contracts]]
symbol = "BTC-PERP"
underlying = "BTC"
[[contracts]]
symbol = "ETH-PERP"
underlying = "ETH"
"""


def _fbr(*args: str) -> tuple[int, dict[str, Any]]:
    res = runner.invoke(app, [*args, "--json"])
    doc: dict[str, Any] = json.loads(res.stdout)
    return res.exit_code, doc


def _refusal(journal: Path, held: str) -> str:
    return (f"the paper account (journal {journal}) holds {held}, which the book no longer lists. "
            f"Fix: add the contract back to the book and close it, or start a new journal "
            f"(--journal)")


def _paper_then_drop_sol(tmp_path: Path) -> tuple[Path, Path]:
    """One paper execute of the three-perp book, then SOL-PERP removed from the book file."""
    journal = tmp_path / "j.sqlite"
    book = tmp_path / "b.toml"
    book.write_text(BOOK)
    code, out = _fbr("execute", str(book), "--exchange", "paper", "--journal", str(journal))
    assert code == 0, out
    con = sqlite3.connect(journal)
    sol = con.execute("SELECT contracts FROM paper_positions WHERE symbol = 'SOL-PERP'").fetchone()
    con.close()
    # hand: base = invested spot 0.1 x 60,000 + 1 x 2,500 + 10 x 150 = 10,000 USD; SOL's target
    # 0.2 x 10,000 = 2,000 USD against 1,500 USD of spot: the perp goes long 500 USD, 500 / 150 =
    # 3.33333333 contracts on the 1e-8 lot (no costs, no margin rows: the target is met exactly)
    assert sol is not None and sol[0] == pytest.approx(3.33333333, abs=1e-12)
    book.write_text(BOOK.replace("SOL-PERP = 0.001\n", "") + TWO_CONTRACTS)
    return book, journal


def test_every_paper_reader_refuses_a_position_the_book_no_longer_lists(tmp_path: Path) -> None:
    """The paper account holds SOL-PERP 3.33333333 contracts (500 USD / 150 USD a contract) and
    the book lists BTC-PERP and ETH-PERP only: status, solve, whatif and execute all stop (exit 2)
    with the same message naming the journal, the contract and its position, before any solve."""
    book, journal = _paper_then_drop_sol(tmp_path)
    want = _refusal(journal, "SOL-PERP 3.33333333 contracts")
    for cmd in (["status"], ["solve"], ["whatif", "--shock", "BTC=-10%"], ["execute"]):
        code, out = _fbr(cmd[0], str(book), *cmd[1:], "--exchange", "paper", "--journal",
                         str(journal))
        assert (code, out.get("error")) == (2, want), cmd[0]


def test_paper_book_and_gateway_refuse_an_unlisted_contract(tmp_path: Path) -> None:
    """Unit level: the journal's paper account holds BTC-PERP -0.01 @ 60,000, SOL-PERP 2.5 @ 150 and
    XRP-PERP -10 @ 0.5 (cash 2,999); a book listing BTC-PERP and ETH-PERP is refused by
    ``paper_book`` and by a ``PaperGateway`` over the store, naming both stray contracts; the book
    with all three perps (BTC, ETH, SOL) is refused naming XRP-PERP alone; once the account holds
    BTC-PERP alone, that book reads it unchanged (BTC -0.01 @ 60,000, cash 2,999)."""
    full = three_asset_book()
    path = tmp_path / "j.sqlite"
    with Journal(path) as j:
        store = PaperStore(j.path, full.name)
        store.init_account({"BTC-PERP": FuturesPosition(-0.01, 60_000.0),
                            "SOL-PERP": FuturesPosition(2.5, 150.0),
                            "XRP-PERP": FuturesPosition(-10.0, 0.5)}, 2_999.0)
        two = type(full)(assets=full.assets, contracts=full.contracts[:2], spot=full.spot,
                         targets=full.targets, cash=full.cash, name=full.name)
        both = (f"the paper account (journal {path}) holds SOL-PERP 2.5 contracts and XRP-PERP -10 "
                f"contracts, which the book no longer lists. Fix: add the contracts back to the "
                f"book and close them, or start a new journal (--journal)")
        with pytest.raises(JournalError) as exc:
            paper_book(two, j)
        assert str(exc.value) == both
        with pytest.raises(JournalError) as exc:
            PaperGateway(two, market(), store=store)
        assert str(exc.value) == both
        with pytest.raises(JournalError) as exc:
            paper_book(full, j)
        assert str(exc.value) == _refusal(path, "XRP-PERP -10 contracts")
        store.save_account({"BTC-PERP": FuturesPosition(-0.01, 60_000.0)}, 2_999.0)
        acc, found = paper_book(full, j)
        assert found and acc.futures == {"BTC-PERP": FuturesPosition(-0.01, 60_000.0)}
        assert acc.cash == 2_999.0
        store.close()


def test_an_old_journal_snapshot_is_refused_the_same_way(tmp_path: Path) -> None:
    """A journal from before the paper tables: its last position snapshot (plan p1) holds
    SOL-PERP 4 @ 150 and BTC-PERP 0 (flat, ignored); a book without SOL-PERP is refused."""
    full = three_asset_book()
    two = type(full)(assets=full.assets, contracts=full.contracts[:2], spot=full.spot,
                     targets=full.targets, cash=full.cash, name=full.name)
    path = tmp_path / "old.sqlite"
    with Journal(path) as j:
        j.record_positions("p1", "paper", full.name, {"SOL-PERP": (4.0, 150.0),
                                                      "BTC-PERP": (0.0, 60_000.0)}, 2_000.0)
        with pytest.raises(JournalError) as exc:
            paper_book(two, j)
        assert str(exc.value) == _refusal(path, "SOL-PERP 4 contracts")
        acc, found = paper_book(full, j)
        assert found and acc.futures == {"SOL-PERP": FuturesPosition(4.0, 150.0)}
