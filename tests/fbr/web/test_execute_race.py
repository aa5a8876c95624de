"""The dashboard's Execute when another process trades the account between the page and the send:
the confirmed fingerprint is checked before the account lock, so the executor must send the
confirmed legs or nothing. It re-planned from the new positions and sent orders nobody confirmed,
here the opposite sides of the page's.

Book: examples/seed_example_1.toml (0.1 BTC at 60,000, 1 ETH at 2,500, 10 SOL at 150, 50/30/20,
costs and constraints off): the page's plan is, by hand, sell 0.0166667 BTC (-1,000 USD), buy
0.2 ETH (+500), buy 3.33333 SOL (+500). Another process (a real `fbr execute` on the same journal
and lock folder) runs a book of the same name at 40/40/20 (-2,000 / +1,500 / +500 USD) just
before the dashboard takes the lock. Expected (README, Dashboard: a plan that changed since the
page is refused, HTTP 409, nothing sent): PlanChangedError, and the paper account holds only the
other process's positions."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import run_fbr

import executor.live as live
from executor.journal import Journal
from executor.lock import account_lock
from executor.paper import PaperStore
from fbr.execute_wiring import ExchangeChoice
from fbr.web.state import DashboardState, PlanChangedError, ServeConfig, plan_fingerprint

ROOT = Path(__file__).resolve().parents[3]
SEED = (ROOT / "examples" / "seed_example_1.toml").read_text()


def test_execute_sends_the_confirmed_legs_or_nothing(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    locks = tmp_path / "locks"
    monkeypatch.setenv("FBR_LOCK_DIR", str(locks))
    (tmp_path / "book.toml").write_text(SEED)
    other = tmp_path / "other.toml"
    other.write_text(SEED.replace("BTC = 0.50", "BTC = 0.40").replace("ETH = 0.30", "ETH = 0.40"))
    journal = tmp_path / "journal.sqlite"
    state = DashboardState(ServeConfig(book=tmp_path / "book.toml", exchange=ExchangeChoice.PAPER,
                                       journal=journal, allow_execute=True))
    _, shown, blocked = state.plan()
    assert blocked is None
    legs = sorted((str(leg["symbol"]), str(leg["side"]), round(float(leg["contracts"]), 6))
                  for leg in shown["legs"])
    assert legs == [("BTC-PERP", "sell", 0.016667), ("ETH-PERP", "buy", 0.2),
                    ("SOL-PERP", "buy", 3.333333)]
    real_lock = account_lock  # the name the executor calls, patched in executor.live below
    ran: list[subprocess.CompletedProcess[str]] = []

    @contextlib.contextmanager
    def other_first(account: str, directory: Path | None = None) -> Iterator[Path]:
        if not ran:  # the other process takes the account first
            ran.append(run_fbr("execute", str(other), "--exchange", "paper", "--journal",
                               str(journal), "--json", env={"FBR_LOCK_DIR": str(locks)},
                               timeout=120))
            assert ran[0].returncode == 0, ran[0].stderr
        with real_lock(account, directory) as held:
            yield held

    monkeypatch.setattr(live, "account_lock", other_first)
    with pytest.raises(PlanChangedError, match="the account moved since it was made"):
        state.execute(plan_fingerprint(shown))
    with Journal(journal) as j:
        store = PaperStore(j.path, "seed example 1")
        try:
            saved = store.load()
        finally:
            store.close()
    assert saved is not None
    held = {s: p.contracts for s, p in saved[0].items()}
    assert held == pytest.approx({"BTC-PERP": -2_000 / 60_000, "ETH-PERP": 0.6,
                                  "SOL-PERP": 500 / 150}, abs=1e-8)
