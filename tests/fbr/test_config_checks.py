"""Book-file checks: dated-contract expiry settings through the loader and the planner, symbols
(ASCII, no whitespace), tiers_from files (continuity at bracket edges, binary files), and
unrealistic holdings and prices (overflow). Hand computations in the comments; no network."""

from __future__ import annotations

import copy
import random
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from executor.plan import PlanOptions, book_instruments, plan_orders, with_book_settings
from fbr.config import LoadedBook, load_book_file
from models.errors import ValidationError
from models.instruments import FuturesContract, SpotAsset
from optimizer.solution import Costs, MarginReport, Position, Solution

ROOT = Path(__file__).resolve().parents[2]
SEED = tomllib.loads((ROOT / "examples" / "seed_example_1.toml").read_text(encoding="utf-8"))
PID = "20240601000000abcd"


def load_mutated(tmp_path: Path, change: Callable[[dict[str, Any]], object]) -> LoadedBook:
    doc = copy.deepcopy(SEED)
    change(doc)
    path = tmp_path / "book.toml"
    path.write_text(tomli_w.dumps(doc), encoding="utf-8")
    return load_book_file(path)


def error_of(tmp_path: Path, change: Callable[[dict[str, Any]], object]) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        load_mutated(tmp_path, change)
    msg = str(info.value)
    assert "Fix:" in msg and "book.toml" in msg, msg
    return info.value


def solution_with(targets: dict[str, float]) -> Solution:
    """A Solution carrying only target notionals (USD) per contract: what plan_orders reads."""
    pos = tuple(Position(s, s.split("-")[0], n, 0.0) for s, n in targets.items())
    return Solution(status="optimal", solver="test", solvers_tried=(), solve_time_ms=0.0,
                    total_time_ms=0.0, nav=0.0, base=1.0, tracking_error_before=0.0,
                    tracking_error_after=0.0, tracking_error_unrounded=0.0, trades=(),
                    target_positions=pos, costs=Costs(0.0, 0.0, 0.0, 0.0, 1.0),
                    margin=MarginReport(0.0, 0.0, 0.0, 0.0, 0.0), gross_leverage=0.0,
                    net_exposure=0.0, effective_weights_before={}, effective_weights_after={},
                    targets={})


# --- 1. expiry: the book file's min_days_to_expiry reaches the planner ---------------------------

def with_dated_btc(expiry: str, min_days: float | None = None) -> Callable[[dict[str, Any]], None]:
    """The seed book with BTC hedged by a dated future expiring at ``expiry`` (market time
    2024-06-01T00:00Z), optionally [constraints] min_days_to_expiry."""
    def change(doc: dict[str, Any]) -> None:
        doc["contracts"] = [{"symbol": "BTC-240614", "underlying": "BTC", "kind": "dated",
                             "expiry": expiry},
                            {"symbol": "ETH-PERP", "underlying": "ETH"},
                            {"symbol": "SOL-PERP", "underlying": "SOL"}]
        if min_days is not None:
            doc["constraints"]["min_days_to_expiry"] = min_days
    return change


NAIVE = {"BTC-240614": -1000.0, "ETH-PERP": 500.0, "SOL-PERP": 500.0}


def plan_of(lb: LoadedBook, options: PlanOptions) -> Any:
    return plan_orders(solution_with(NAIVE), lb.book, lb.market, book_instruments(lb.book),
                       options, plan_id=PID)


def test_book_file_min_days_to_expiry_reaches_the_planner(tmp_path: Path) -> None:
    lb = load_mutated(tmp_path, with_dated_btc("2024-06-06T00:00:00Z", min_days=10))
    assert lb.settings.constraints.min_days_to_expiry == 10.0
    options = with_book_settings(PlanOptions(), lb.settings)
    assert options.min_days_to_expiry == 10.0
    p = plan_of(lb, options)  # 5 days left < 10: the BTC short is not opened
    assert [leg.symbol for leg in p.legs] == ["ETH-PERP", "SOL-PERP"]
    (drop,) = p.dropped
    assert drop.symbol == "BTC-240614" and "expires 2024-06-06 00:00 UTC" in drop.reason
    assert "5.00 days" in drop.reason and "min_days_to_expiry = 10" in drop.reason
    # with the default (2 days) the same book opens the short: -1000 / 60000 -> -0.01666667
    lb2 = load_mutated(tmp_path, with_dated_btc("2024-06-06T00:00:00Z"))
    assert lb2.settings.constraints.min_days_to_expiry == 2.0
    p2 = plan_of(lb2, with_book_settings(PlanOptions(), lb2.settings))
    assert p2.dropped == () and p2.legs[0].symbol == "BTC-240614"


def test_book_file_contract_past_expiry_is_refused_by_the_planner(tmp_path: Path) -> None:
    lb = load_mutated(tmp_path, with_dated_btc("2024-05-31T00:00:00Z"))
    with pytest.raises(ValidationError) as info:
        plan_of(lb, with_book_settings(PlanOptions(), lb.settings))
    assert info.value.field == "contracts.BTC-240614.expiry"
    assert "2024-05-31 00:00 UTC" in str(info.value) and "1.00 days before" in str(info.value)


@pytest.mark.parametrize("bad", [-1, 400, "two"])
def test_book_file_min_days_to_expiry_must_be_days(tmp_path: Path, bad: object) -> None:
    err = error_of(tmp_path, lambda d: d["constraints"].update(min_days_to_expiry=bad))
    assert err.field == "constraints.min_days_to_expiry"


# --- 3. symbols: ASCII, no whitespace -----------------------------------------------------------

def rename_asset(old: str, new: str) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        for section in (doc["targets"], doc["spot"], doc["market"]["spot"], doc["risk"]["vols"]):
            section[new] = section.pop(old)
    return change


def contracts_named(btc: str) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        doc["contracts"] = [{"symbol": btc, "underlying": "BTC"},
                            {"symbol": "ETH-PERP", "underlying": "ETH"},
                            {"symbol": "SOL-PERP", "underlying": "SOL"}]
    return change


def assets_listed(btc: str) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        doc["assets"] = [{"symbol": btc}, {"symbol": "ETH"}, {"symbol": "SOL"}]
    return change


SYMBOL_CASES = [
    ("space in an asset", rename_asset("BTC", "BT C"), "targets.BT C", "whitespace"),
    ("trailing tab", rename_asset("SOL", "SOL\t"), "targets.SOL\t", "whitespace"),
    ("Cyrillic look-alike", rename_asset("ETH", "ЕTH"), "targets.ЕTH", "U+0415"),
    ("fullwidth letters", rename_asset("BTC", "ＢＴＣ"), "targets.ＢＴＣ", "non-ASCII"),
    ("slash in an asset", rename_asset("BTC", "BTC/USD"), "targets.BTC/USD", "'/'"),
    ("[[assets]] symbol", assets_listed("B TC"), "assets[0].symbol", "whitespace"),
    ("contract symbol", contracts_named("BTC PERP"), "contracts[0].symbol", "whitespace"),
    ("contract symbol non-ASCII", contracts_named("BTC-PERP\u200b"), "contracts[0].symbol",
     "U+200B"),
    ("exchange symbol of tiers_from",
     lambda d: d["contract_defaults"].update(tiers_from={"file": "tiers.csv",
                                                         "symbol": "BTC/USDT:USDT "}),
     "contract_defaults.tiers_from.symbol", "whitespace"),
    ("exchange symbol of spec_from",
     lambda d: d["contract_defaults"].update(spec_from={"file": "spec.csv",
                                                        "symbol": "BTC／USDT:USDT"}),
     "contract_defaults.spec_from.symbol", "non-ASCII"),
]


@pytest.mark.parametrize(("change", "field", "what"),
                         [pytest.param(c, f, w, id=n) for n, c, f, w in SYMBOL_CASES])
def test_symbols_must_be_ascii_without_whitespace(tmp_path: Path,
                                                  change: Callable[[dict[str, Any]], object],
                                                  field: str, what: str) -> None:
    err = error_of(tmp_path, change)
    assert err.field == field, str(err)
    assert what in err.problem, str(err)
    assert "ASCII letters and digits" in err.fix and "no spaces" in err.fix


def test_models_refuse_such_symbols_too() -> None:
    with pytest.raises(ValidationError, match=r"assets\.BT C\.symbol: is 'BT C'.*whitespace"):
        SpotAsset("BT C")
    with pytest.raises(ValidationError, match=r"contracts\.BTC PERP\.symbol"):
        FuturesContract("BTC PERP", "BTC")
    with pytest.raises(ValidationError, match=r"contracts\.BTC-PERP\.underlying.*non-ASCII"):
        FuturesContract("BTC-PERP", "BTĆ")
    assert SpotAsset("1000PEPE").symbol == "1000PEPE"
    assert FuturesContract("BTC/USDT:USDT-260626", "BTC").symbol == "BTC/USDT:USDT-260626"


# --- 4. tiers_from files: continuity at bracket edges, binary files ------------------------------

HEADER = "symbol,min_notional,max_notional,maintenance_margin_rate,max_leverage,maint_amount_cum\n"


def tiers_file(tmp_path: Path, cum2: float) -> Path:
    """Two BTC brackets: [0, 150k) 125x mmr 0.4% cum 0; [150k, 1M) 100x mmr 0.5% cum ``cum2``.
    Continuous: cum2 = 0 + (0.005 - 0.004) x 150000 = 150, MM(150k) = 0.004 x 150000 = 600 USD."""
    path = tmp_path / "tiers.csv"
    path.write_text(HEADER + "BTC/USDT:USDT,0,150000,0.004,125,0\n"
                    f"BTC/USDT:USDT,150000,1000000,0.005,100,{cum2}\n", encoding="utf-8")
    return path


def use_tiers(path: Path) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        doc["contract_defaults"]["tiers_from"] = {"file": str(path), "symbol": "BTC/USDT:USDT"}
    return change


def test_tiers_from_file_continuous_brackets_load(tmp_path: Path) -> None:
    lb = load_mutated(tmp_path, use_tiers(tiers_file(tmp_path, 150.0)))
    tiers = lb.book.contracts[0].tiers
    assert tiers.bracket_lookup(150_000) == pytest.approx(600.0)  # 0.005 x 150000 - 150
    assert tiers.bracket_lookup(149_999.99) == pytest.approx(600.0, abs=1e-4)


def test_tiers_from_file_with_a_jump_at_a_bracket_edge_is_refused(tmp_path: Path) -> None:
    # edited cum 0: MM(150k) = 0.005 x 150000 - 0 = 750 USD where the edge (and Binance) gives 600
    path = tiers_file(tmp_path, 0.0)
    err = error_of(tmp_path, use_tiers(path))
    msg = str(err)
    assert err.field == "contract_defaults.tiers_from"
    assert str(path) in msg and "BTC/USDT:USDT" in msg and "bracket 2 of 2" in msg
    assert "from 600.00 USD just below 150,000 USD to 750.00 USD at it (+150.00 USD)" in msg
    assert "set maint_amount_cum = 150 in that row" in err.fix
    assert msg.count("Fix:") == 1


def test_tiers_from_file_within_the_jump_tolerance_loads(tmp_path: Path) -> None:
    load_mutated(tmp_path, use_tiers(tiers_file(tmp_path, 150.005)))  # 0.5 cent: rounding


@pytest.mark.parametrize(("name", "content"), [
    ("tiers.csv", random.Random(2).randbytes(1500)),
    ("tiers.json", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 6),
    ("tiers.csv", HEADER.encode() + b"BTC/USDT:USDT,0,1\x00\x00\x00,0.004,125,0\n"),
    ("tiers.csv.gz", random.Random(3).randbytes(1500)),
])
def test_binary_tiers_file_gives_one_short_message_naming_it(tmp_path: Path, name: str,
                                                             content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    err = error_of(tmp_path, use_tiers(path))
    msg = str(err)
    assert err.field == "contract_defaults.tiers_from.file"
    assert str(path) in msg and ("binary" in msg or "gzip" in msg)
    assert len(msg) < 450 and "\\x" not in msg, msg  # no byte dump


# --- 5. overflow and unrealistic magnitudes in holdings and prices ------------------------------

MAGNITUDE_CASES = [
    ("spot 1e308", lambda d: d["spot"].update(BTC=1e308), "spot.BTC", "worth inf USD"),
    ("spot 1e10 BTC", lambda d: d["spot"].update(BTC=1e10), "spot.BTC", "worth 6e+14 USD"),
    ("spot_usd 1e308", lambda d: (d["spot"].pop("ETH"), d.update(spot_usd={"ETH": 1e308})),
     "spot_usd.ETH", "1e+308 USD"),
    ("cash 1e308", lambda d: d["book"].update(cash=1e308), "book.cash", "1e+308 USD"),
    ("spot price 1e308", lambda d: d["market"]["spot"].update(BTC=1e308), "market.spot.BTC",
     "not a realistic price"),
    ("mark price 1e300",
     lambda d: d["market"].update(mark={"BTC-PERP": 1e300}), "market.mark.BTC-PERP",
     "not a realistic price"),
    ("futures 1e300 contracts",
     lambda d: d.update(futures=[{"symbol": "BTC-PERP", "contracts": -1e300,
                                  "entry_price": 60000.0}]),
     "futures[0].contracts", "worth 6e+304 USD"),
    ("entry price 1e308",
     lambda d: d.update(futures=[{"symbol": "BTC-PERP", "contracts": -0.01,
                                  "entry_price": 1e308}]),
     "futures[0].entry_price", "not a realistic price"),
]


@pytest.mark.parametrize(("change", "field", "what"),
                         [pytest.param(c, f, w, id=n) for n, c, f, w in MAGNITUDE_CASES])
def test_unrealistic_holdings_and_prices_are_refused_at_load_time(
        tmp_path: Path, change: Callable[[dict[str, Any]], object], field: str, what: str) -> None:
    err = error_of(tmp_path, change)
    msg = str(err)
    assert err.field == field, msg
    assert what in msg, msg
    assert "hold some spot" not in msg
    assert "finite" in err.fix or "realistic" in err.fix or "between" in err.fix


def test_large_but_realistic_holdings_load(tmp_path: Path) -> None:
    # 10,000 BTC at 60,000 USD = 600 M USD; 1e12 PEPE-like units at 1e-5 USD would be 10 M USD
    lb = load_mutated(tmp_path, lambda d: d["spot"].update(BTC=10_000.0))
    assert lb.book.spot["BTC"] == 10_000.0


def test_expiry_row_reaches_the_optimiser_settings(tmp_path: Path) -> None:
    assert not load_mutated(tmp_path, lambda d: None).settings.constraints.expiry_row
    on = load_mutated(tmp_path, lambda d: d.setdefault("constraints", {}).update(expiry_row=True))
    assert on.settings.constraints.expiry_row
    err = error_of(tmp_path, lambda d: d.setdefault("constraints", {}).update(expiry_row="yes"))
    assert err.field == "constraints.expiry_row"
