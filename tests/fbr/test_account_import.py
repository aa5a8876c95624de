"""The merge of an exchange account into a book file (``fbr.account_import``), on small tomlkit
documents with hand-written expectations: values written where they differ, everything else (keys,
comments, order) kept, canonical numbers, and a second import that changes nothing."""

from __future__ import annotations

import dataclasses
import math
import tomllib

import pytest
import tomlkit

from executor.plan import Instrument
from fbr.account_import import (
    AccountSnapshot,
    ContractSpec,
    canonical,
    import_text,
    same,
    snapshot_from_account,
    text_diff,
)
from models.book import Book, FuturesPosition
from models.collateral import bid_buffer_rule
from models.instruments import FuturesContract, MarginTiers, SpotAsset, TierBracket

BOOK = """\
# my book
[book]
name = "t"
cash = 100   # reserve

[targets]
BTC = "50%"   # half
ETH = 0.3

[spot]
BTC = 0.5

[spot_usd]
ETH = 1000.0   # usd
SOL = 200.0

[[futures]]
symbol = "BTC-PERP"   # keep me
contracts = -0.1
entry_price = 60000.0

[[futures]]
symbol = "ETH-PERP"
contracts = 1.0
entry_price = 3000.0

[pledged]
BTC = { bid_buffer = 0.1 }
SOL = 0.9

[costs]
trading = false  # off
"""

TIERS = (TierBracket(0.0, 50_000.0, 50.0, 0.01, 0.0),
         TierBracket(50_000.0, math.inf, 20.0, 0.025, 750.0))
BTC_SPEC = ContractSpec("BTC-PERP", "BTC", 1.0, 0.001, 0.001, 120.0, 100.0, 0.1, TIERS)

SNAP = AccountSnapshot(
    cash=2500.5,
    contracts=(BTC_SPEC,),
    futures={"BTC-PERP": (-0.2, 61000.0), "SOL-PERP": (3.0, 150.0)},
    pledged={"ETH": (0.05, 0.5)},
    spot={"BTC": 0.1 + 0.2, "ETH": 2.0, "SOL": 0.0},
)

EXPECTED = """\
# my book
[book]
name = "t"
cash = 2500.5   # reserve

[targets]
BTC = "50%"   # half
ETH = 0.3

[spot]
BTC = 0.3
ETH = 2.0
SOL = 0.0

[spot_usd]

[[futures]]
symbol = "BTC-PERP"   # keep me
contracts = -0.2
entry_price = 61000.0

[[futures]]
symbol = "SOL-PERP"
contracts = 3.0
entry_price = 150.0

[pledged]
SOL = 0.9
ETH = {bid_buffer = 0.05, quantity = 0.5}

[costs]
trading = false  # off

[[contracts]]
symbol = "BTC-PERP"
underlying = "BTC"
contract_size = 1.0
lot_step = 0.001
min_qty = 0.001
max_qty = 120.0
min_notional = 100.0
tick = 0.1
tiers = [
    {min_notional = 0.0, max_notional = 50000.0, max_leverage = 50.0, mmr = 0.01, cum = 0.0},
    {min_notional = 50000.0, max_notional = inf, max_leverage = 20.0, mmr = 0.025, cum = 750.0},
]
"""


def test_canonical_numbers() -> None:
    assert canonical(0.1 + 0.2) == 0.3
    assert canonical(1800.0000000000002) == 1800.0
    assert math.copysign(1.0, canonical(-0.0)) == 1.0
    assert canonical(1e-8) == 1e-8 and canonical(123456.12345678) == 123456.12345678
    assert canonical(math.inf) == math.inf


def test_same_compares_numbers_tables_and_arrays() -> None:
    assert same(3000, 3000.0) and not same(True, 1.0) and not same("3000", 3000.0)
    assert same({"b": 1, "a": 2.0}, {"a": 2.0, "b": 1.0})
    assert not same({"a": 1.0}, {"a": 1.0, "b": 2.0})
    assert same([1, 2], [1.0, 2.0]) and not same([1], [1.0, 2.0])
    doc = tomlkit.parse("x = { bid_buffer = 0.05, quantity = 1 }\n")
    assert same(doc["x"], {"quantity": 1.0, "bid_buffer": 0.05})


def test_merge_writes_the_account_and_keeps_everything_else() -> None:
    assert import_text(BOOK, SNAP) == EXPECTED


def test_second_import_changes_nothing() -> None:
    once = import_text(BOOK, SNAP)
    assert import_text(once, SNAP) == once


def test_equal_values_keep_their_formatting() -> None:
    text = "[book]\ncash = 2_500.50   # as I like it\n\n[targets]\nBTC = 1\n"
    assert import_text(text, AccountSnapshot(cash=2500.5)) == text


def test_without_spot_the_spot_tables_are_left_alone() -> None:
    out = tomllib.loads(import_text(BOOK, AccountSnapshot(cash=1.0)))
    assert out["spot"] == {"BTC": 0.5} and out["spot_usd"] == {"ETH": 1000.0, "SOL": 200.0}
    assert "futures" not in out  # every position is flat on the exchange
    assert out["pledged"] == {"SOL": 0.9}  # the Multi-Assets entry went, the flat ratio stayed


def test_existing_contract_entries_are_updated_in_place() -> None:
    text = """\
[targets]
BTC = 1.0

[[contracts]]
symbol = "BTC-PERP"   # the perp
underlying = "BTC"
lot_step = 0.001
tiers_from = { file = "t.csv", symbol = "BTC/USDT:USDT" }

[[contracts]]
symbol = "BTC-Q"
underlying = "BTC"
kind = "dated"
"""
    spec = ContractSpec("BTC-PERP", "BTC", 1.0, 0.001, 0.0, math.inf, 5.0, 0.01, TIERS[:1],
                        leverage=20.0)
    out = import_text(text, AccountSnapshot(cash=0.0, contracts=(spec,)))
    assert out == """\
[targets]
BTC = 1.0

[[contracts]]
symbol = "BTC-PERP"   # the perp
underlying = "BTC"
lot_step = 0.001
contract_size = 1.0
min_qty = 0.0
max_qty = inf
min_notional = 5.0
tick = 0.01
leverage = 20.0
tiers = [
    {min_notional = 0.0, max_notional = 50000.0, max_leverage = 50.0, mmr = 0.01, cum = 0.0},
]

[[contracts]]
symbol = "BTC-Q"
underlying = "BTC"
kind = "dated"

[book]
cash = 0.0
"""


def test_inline_futures_array_becomes_tables() -> None:
    text = 'futures = [{ symbol = "BTC-PERP", contracts = 1.0, entry_price = 5.0 }]\n\n[targets]\nBTC = 1.0\n'
    out = import_text(text, AccountSnapshot(cash=0.0, futures={"BTC-PERP": (2.0, 6.0)}))
    doc = tomllib.loads(out)
    assert doc["futures"] == [{"symbol": "BTC-PERP", "contracts": 2.0, "entry_price": 6.0}]
    assert doc["targets"] == {"BTC": 1.0}
    assert import_text(out, AccountSnapshot(cash=0.0, futures={"BTC-PERP": (2.0, 6.0)})) == out


def test_text_diff() -> None:
    assert text_diff("a\n", "a\n", "b.toml") == ""
    diff = text_diff("cash = 1\n", "cash = 2\n", "b.toml")
    assert diff.splitlines() == ["--- b.toml (now)", "+++ b.toml (imported)", "@@ -1 +1 @@",
                                 "-cash = 1", "+cash = 2"]


def test_snapshot_from_the_gateway_reading() -> None:
    tiers = MarginTiers(TIERS)  # top 50x: BTC's 30x stays, so no leverage is written
    low = MarginTiers((TierBracket(0.0, math.inf, 5.0, 0.1, 0.0),))  # caps ETH's 10x at 5x
    con = (FuturesContract("BTC-PERP", "BTC", leverage=30.0, tiers=tiers),
           FuturesContract("ETH-PERP", "ETH"))
    book = Book(assets=(SpotAsset("BTC"), SpotAsset("ETH")), contracts=con,
                spot={"BTC": 1.0, "ETH": 1.0}, targets={"BTC": 0.5, "ETH": 0.5})
    ex = {"BTC-PERP": Instrument(FuturesContract("BTC-PERP", "BTC", lot_step=0.001, tiers=tiers,
                                                 leverage=30.0), "BTC/USDT:USDT"),
          "ETH-PERP": Instrument(FuturesContract("ETH-PERP", "ETH", min_notional=20.0, tiers=low,
                                                 leverage=5.0), "ETH/USDT:USDT")}
    account = dataclasses.replace(
        book, futures={"ETH-PERP": FuturesPosition(-2.0, 3000.0)}, cash=1234.0,
        pledged={"BTC": bid_buffer_rule(0.05, quantity=0.25), "ETH": 0.9})
    snap = snapshot_from_account(book, account, ex, wallet={"BTC": 0.25},
                                 spot_wallet={"BTC": 0.5, "BNB": 3.0}, not_in_book=("spot BNB 3",))
    assert snap.cash == 1234.0
    assert dict(snap.futures) == {"ETH-PERP": (-2.0, 3000.0)}
    assert dict(snap.pledged) == {"BTC": (0.05, 0.25)}  # ETH is not in the futures wallet
    assert snap.spot == {"BTC": 0.75, "ETH": 0.0}  # spot wallet + futures wallet
    btc, eth = snap.contracts
    assert (btc.lot_step, btc.leverage, btc.tiers) == (0.001, None, TIERS)
    assert (eth.min_notional, eth.leverage) == (20.0, 5.0)
    assert snap.not_in_book == ("spot BNB 3",)


@pytest.mark.parametrize("qty", [0.0, -0.0])
def test_flat_asset_not_listed_is_not_added(qty: float) -> None:
    out = tomllib.loads(import_text("[targets]\nBTC = 1.0\n",
                                    AccountSnapshot(cash=0.0, spot={"BTC": qty})))
    assert "spot" not in out


def test_appended_position_is_set_off_by_one_blank_line() -> None:
    snap = AccountSnapshot(cash=100.0, futures={"BTC-PERP": (-0.1, 60000.0),
                                                "ETH-PERP": (1.0, 3000.0), "SOL-PERP": (3.0, 150.0)})
    out = import_text(BOOK, snap)
    assert ('entry_price = 3000.0\n\n[[futures]]\nsymbol = "SOL-PERP"\ncontracts = 3.0\n'
            'entry_price = 150.0\n\n[pledged]\n') in out
    assert "\n\n\n" not in out
    assert import_text(out, snap) == out
