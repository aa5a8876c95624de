"""Every page prices the book as the CLI does now (a review): a book whose market comes from a data
folder (``[market] source = "data"``: ``fbr data fetch`` appends closes there, the book file does not
change) or from the clock (an explicit ``[market]`` without ``time``) is loaded again per request,
so ``/api/status``, ``/api/plan``, ``/api/whatif`` and ``POST /execute`` agree; a book fixed by its
own files is kept loaded until one of them changes. Expected figures by hand, and ``fbr status`` /
``fbr execute`` (dry run) on the same files."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from starlette.testclient import TestClient
from web_world import ROOT, TOKEN, cli_json

from fbr.config_loader import LoadedBook, load_book_file
from fbr.execute_wiring import ExchangeChoice
from fbr.web.app import create_app
from fbr.web.state import DashboardState, ServeConfig

#: 1 BTC, 10 ETH and 5,000 USD in the futures wallet; targets 60/40 of the invested value; costs
#: and margin off, so the plan is the exact hedge of the drift.
DATA_BOOK = """[book]
name = "data book"
cash = 5000.0
[targets]
BTC = 0.6
ETH = 0.4
[spot]
BTC = 1.0
ETH = 10.0
[contract_defaults]
lot_step = 1e-8
min_notional = 0.0
[market]
source = "data"
data_dir = "data"
[risk]
basis_risk = false
correlation = 0.7
[risk.vols]
BTC = 0.5
ETH = 0.7
[costs]
trading = false
carry = false
impact = false
[constraints]
margin = false
"""
#: A book with a market time whose BTC-PERP margin tiers come from tiers.csv beside it.
TIERS_BOOK = """[book]
cash = 3000.0
[targets]
BTC = 0.5
ETH = 0.5
[spot]
BTC = 0.1
ETH = 1.0
[contract_defaults]
leverage = 10
[[contracts]]
symbol = "BTC-PERP"
underlying = "BTC"
tiers_from = { file = "tiers.csv", symbol = "BTC/USDT:USDT" }
[[contracts]]
symbol = "ETH-PERP"
underlying = "ETH"
[market]
time = 2024-06-01T00:00:00Z
mark_from_spot = true
[market.spot]
BTC = 60000.0
ETH = 2500.0
[risk]
correlation = 0.7
basis_risk = false
[risk.vols]
BTC = 0.55
ETH = 0.70
"""
TIERS = "symbol,min_notional,max_notional,maintenance_margin_rate,max_leverage,maint_amount_cum\n"
DAYS = ("2024-05-28", "2024-05-29", "2024-05-30", "2024-05-31")
SHOCK0 = "BTC%3D0%25"


def write_closes(folder: Path, btc: float, eth: float, new_day: tuple[float, float] | None) -> None:
    """Daily closes of BTC and ETH in ``folder``/spot_1d (``new_day``: a fifth day's closes, as
    ``fbr data fetch`` appends them)."""
    spot = folder / "spot_1d"
    spot.mkdir(parents=True, exist_ok=True)
    for i, (sym, price) in enumerate((("BTC", btc), ("ETH", eth))):
        rows = [(d, price) for d in DAYS] + ([("2024-06-01", new_day[i])] if new_day else [])
        lines = ["timestamp,open,high,low,close,volume"]
        lines += [f"{d}T00:00:00Z,{p},{p},{p},{p},1" for d, p in rows]
        (spot / f"{sym}.csv").write_text("\n".join(lines) + "\n")


@pytest.fixture
def data_book(tmp_path: Path) -> Path:
    """The data-sourced book over four days of closes: BTC 60,000 and ETH 2,500 USD."""
    write_closes(tmp_path / "data", 60_000.0, 2_500.0, None)
    book = tmp_path / "book.toml"
    book.write_text(DATA_BOOK)
    return book


def new_close(book: Path) -> None:
    """``fbr data fetch`` appends 2024-06-01: BTC 70,000 and ETH 3,000 USD."""
    write_closes(book.parent / "data", 60_000.0, 2_500.0, (70_000.0, 3_000.0))


def client(config: ServeConfig, token: str | None = None) -> TestClient:
    """A dashboard client (a server exception is an HTTP 500, as under uvicorn)."""
    return TestClient(create_app(DashboardState(config), token), base_url="http://127.0.0.1:8765",
                      raise_server_exceptions=False)


def legs(plan: dict[str, object]) -> list[tuple[object, ...]]:
    """(contract, side, contracts) of a plan document's legs."""
    return [(leg["symbol"], leg["side"], leg["contracts"]) for leg in plan["legs"]]  # type: ignore


def test_status_follows_new_closes_as_fbr_status_does(data_book: Path, tmp_path: Path) -> None:
    """NAV = 1 x 60,000 + 10 x 2,500 + 5,000 = 90,000 USD; after a new close (book file untouched)
    1 x 70,000 + 10 x 3,000 + 5,000 = 105,000 USD, as ``fbr status`` says on the same files (the
    dashboard kept 90,000 until the book file changed)."""
    journal = tmp_path / "none.sqlite"
    c = client(ServeConfig(book=data_book, exchange=ExchangeChoice.DRY_RUN, journal=journal))
    assert c.get("/api/status").json()["nav"] == pytest.approx(90_000.0)
    new_close(data_book)
    env = {"FBR_LOCK_DIR": str(tmp_path / "locks"), "FBR_DATA_HOME": str(tmp_path / "home")}
    cli = cli_json("status", str(data_book), "--exchange", "dry-run", "--journal", str(journal),
                   env=env)
    assert cli["nav"] == pytest.approx(105_000.0)
    doc = c.get("/api/status").json()
    assert doc["nav"] == pytest.approx(cli["nav"], rel=1e-12)
    assert doc["weights_before"] == pytest.approx(cli["weights_before"], rel=1e-12)
    assert f"{105_000:,.2f} USD" in c.get("/").text
    assert not journal.exists()


def test_status_plan_and_whatif_agree_after_new_closes(data_book: Path, tmp_path: Path) -> None:
    """After the new close every page prices the book at 105,000 USD; invested 100,000, BTC 70% vs
    60%: sell 10,000 / 70,000 = 0.14285714 BTC-PERP (lot 1e-8); ETH 30% vs 40%: buy 10,000 / 3,000
    = 3.33333333 ETH-PERP, the legs of ``fbr execute BOOK --json`` (dry run) on the same files.
    Before it: 9,000 USD each way, 0.15 BTC and 3.6 ETH."""
    c = client(ServeConfig(book=data_book, exchange=ExchangeChoice.DRY_RUN,
                           journal=tmp_path / "none.sqlite"))
    assert legs(c.get("/api/plan").json()["plan"]) == [("BTC-PERP", "sell", pytest.approx(0.15)),
                                                       ("ETH-PERP", "buy", pytest.approx(3.6))]
    new_close(data_book)
    whatif = c.get(f"/api/whatif?shock={SHOCK0}").json()
    status = c.get("/api/status").json()
    plan = c.get("/api/plan").json()
    assert whatif["nav_before"] == pytest.approx(105_000.0)
    assert status["nav"] == pytest.approx(105_000.0)
    want = [("BTC-PERP", "sell", 0.14285714), ("ETH-PERP", "buy", 3.33333333)]
    assert legs(plan["plan"]) == [(s, d, pytest.approx(q, abs=1e-12)) for s, d, q in want]
    env = {"FBR_LOCK_DIR": str(tmp_path / "locks"), "FBR_DATA_HOME": str(tmp_path / "home")}
    dry = cli_json("execute", str(data_book), env=env)
    assert legs(plan["plan"]) == legs(dry["plan"])
    assert legs(status["plan"]) == legs(dry["plan"])


def test_execute_after_new_closes_sends_the_plan_shown(data_book: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """--allow-execute on paper: a new close after the server loaded the book; the Execute page
    shows the plan at the new close (0.14285714 BTC-PERP sold, 3.33333333 ETH-PERP bought) and
    sending it is accepted at the first confirmation (it answered 409 "plan changed" at every
    attempt: the page planned on the old close, the send on the new one)."""
    monkeypatch.setenv("FBR_LOCK_DIR", str(tmp_path / "locks"))
    journal = tmp_path / "j.sqlite"
    c = client(ServeConfig(book=data_book, exchange=ExchangeChoice.PAPER, journal=journal,
                           allow_execute=True), TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert c.get("/execute", headers=auth).status_code == 200
    new_close(data_book)
    page = c.get("/execute", headers=auth).text
    form = {name: re.findall(rf'name="{name}" value="([^"]+)"', page)[0] for name in ("csrf", "plan")}
    r = c.post("/execute", headers=auth, data={**form, "confirm": "yes"})
    assert r.status_code == 200, r.text[:500]
    orders = c.get("/api/orders", headers=auth).json()
    assert sorted((o["symbol"], o["side"], o["filled"]) for o in orders) == [
        ("BTC-PERP", "sell", pytest.approx(0.14285714)), ("ETH-PERP", "buy", pytest.approx(3.33333333))]


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The paths the dashboard's book cache loads, one entry per load."""
    loads: list[Path] = []

    def counted(path: str | Path) -> LoadedBook:
        loads.append(Path(path))
        return load_book_file(path)

    monkeypatch.setattr("fbr.web.book_cache.load_book_file", counted)
    return loads


def test_a_data_book_is_loaded_once_per_request(data_book: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A data-sourced book is loaded at every request, once (the page header reuses the page's
    load), and the compiled problem is kept (one Rebalancer, no new structure)."""
    loads = _counting(monkeypatch)
    state = DashboardState(ServeConfig(book=data_book, exchange=ExchangeChoice.DRY_RUN,
                                       journal=tmp_path / "none.sqlite"))
    c = TestClient(create_app(state), base_url="http://127.0.0.1:8765")
    for path in ("/", "/api/status", "/plan"):
        before = len(loads)
        assert c.get(path).status_code == 200
        assert len(loads) - before == 1, path
    compiled = len(state.rebalancer._problems)
    c.get("/api/status")
    assert compiled >= 1 and len(state.rebalancer._problems) == compiled


def test_a_clock_priced_book_is_loaded_per_request(tmp_path: Path) -> None:
    """An explicit [market] without ``time`` is priced at the current second: two loads 1.1 s
    apart give two market times at least 1 s apart (the dashboard kept the first one)."""
    text = (ROOT / "examples" / "seed_example_1.toml").read_text()
    book = tmp_path / "book.toml"
    book.write_text(re.sub(r"(?m)^time = 2024-06-01T00:00:00Z\n", "", text, count=1))
    state = DashboardState(ServeConfig(book=book, journal=tmp_path / "none.sqlite"))
    first = state.loaded().market.time
    time.sleep(1.1)
    assert (state.loaded().market.time - first).total_seconds() >= 1.0


def test_a_fixed_book_is_kept_until_a_file_it_reads_changes(tmp_path: Path) -> None:
    """A book with a market time and its margin tiers in a ``tiers_from`` file: loaded once while
    nothing changes; rewriting the tiers file (maintenance rate 0.4% -> 1%: 0.40 -> 1.00 USD at
    100 USD of notional) or the book file loads it again."""
    tiers = tmp_path / "tiers.csv"
    tiers.write_text(TIERS + "BTC/USDT:USDT,0,50000,0.004,125,0\n")
    book = tmp_path / "book.toml"
    book.write_text(TIERS_BOOK)
    state = DashboardState(ServeConfig(book=book, journal=tmp_path / "none.sqlite"))
    first = state.loaded()
    assert state.loaded() is first and first.book.name == "book"
    assert float(first.book.contracts[0].tiers.maintenance(100.0)) == pytest.approx(0.40)
    tiers.write_text(TIERS + "BTC/USDT:USDT,0,50000,0.01,50,0\n")
    second = state.loaded()
    assert float(second.book.contracts[0].tiers.maintenance(100.0)) == pytest.approx(1.00)
    assert state.loaded() is second
    book.write_text(book.read_text().replace("[book]\n", '[book]\nname = "renamed"\n'))
    assert state.loaded().book.name == "renamed"


@pytest.mark.parametrize(("market", "risk", "fixed"), [
    ('time = 2024-06-01T00:00:00Z', "", True),
    ('source = "synthetic"', "", True),
    ('source = "synthetic"\ntime = 2024-06-01T00:00:00Z', "", True),
    ("mark_from_spot = true", "", False),  # explicit, no time: the clock
    ('source = "data"', "", False),
    ('source = "data"\ntime = 2024-06-01T00:00:00Z', "", False),  # the folder may still change
    ('source = "synthetic"', 'source = "data"', False),
])
def test_which_books_depend_on_more_than_their_files(tmp_path: Path, market: str, risk: str,
                                                     fixed: bool) -> None:
    """Kept loaded: a market time or the seeded generator; reloaded per request: a data folder
    (market or risk) or the clock. ``file = ...`` references resolve from the book's folder."""
    from fbr.web.book_cache import book_inputs

    book = tmp_path / "b.toml"
    book.write_text(f"[market]\n{market}\n[risk]\n{risk}\n[[contracts]]\nsymbol = \"X\"\n"
                    'tiers_from = { file = "t/tiers.csv", symbol = "X/USDT:USDT" }\n'
                    'spec_from = { file = "/abs/s.csv", symbol = "X/USDT:USDT" }\n')
    assert book_inputs(book) == (fixed, (tmp_path / "t" / "tiers.csv", Path("/abs/s.csv")))
    book.write_text("[market\n")
    assert book_inputs(book) == (False, ())
