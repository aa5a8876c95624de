"""The paper venue settles a dated future when its market reaches the expiry, as an exchange
delivers it and the backtest settles it (``scenarios.settlement``): at the settlement price S
(the spot at the expiry when given, else the underlying's spot), the PnL at S realised into cash,
a taker fee on |q| x npc(S), kept as a filled order and trade of the paper account (hand-computed)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from executor.base import OrderStatus
from executor.paper import PaperGateway, PaperStore
from models.book import Book, FuturesPosition
from models.instruments import ContractKind, FuturesContract, Settlement, SpotAsset
from models.market import MarketSnapshot

EXPIRY = datetime(2024, 6, 1, 8, tzinfo=UTC)
BTC_Q = FuturesContract("BTC-Q", "BTC", kind=ContractKind.DATED, expiry=EXPIRY, taker_fee=0.0005)
BTC_QI = FuturesContract("BTC-QI", "BTC", kind=ContractKind.DATED, expiry=EXPIRY,
                         settlement=Settlement.INVERSE, contract_size=100.0, taker_fee=0.0005)
ETH_PERP = FuturesContract("ETH-PERP", "ETH", taker_fee=0.0005)


def _book(futures: dict[str, FuturesPosition]) -> Book:
    return Book(assets=(SpotAsset("BTC"), SpotAsset("ETH")), contracts=(BTC_Q, BTC_QI, ETH_PERP),
                spot={"BTC": 0.1, "ETH": 1.0}, targets={"BTC": 0.5, "ETH": 0.5}, cash=3000.0,
                futures=futures, name="settle book")


def _market(time: str, btc: float, btc_mark: float) -> MarketSnapshot:
    return MarketSnapshot(time=pd.Timestamp(time, tz="UTC"), spot={"BTC": btc, "ETH": 2500.0},
                          mark={"BTC-Q": btc_mark, "BTC-QI": btc_mark, "ETH-PERP": 2500.0})


def test_a_dated_position_settles_at_the_given_spot_at_expiry(tmp_path: Path) -> None:
    book = _book({"BTC-Q": FuturesPosition(-0.5, 60_000.0), "ETH-PERP": FuturesPosition(2.0, 2500.0)})
    store = PaperStore(tmp_path / "j.sqlite", book.name)
    gw = PaperGateway(book, _market("2024-06-01", 60_000.0, 60_300.0), store=store)
    # 8 h before the expiry: nothing settles
    assert gw.set_market(_market("2024-06-01", 60_000.0, 60_300.0)) == 0.0
    assert gw.account(book, _market("2024-06-01", 60_000.0, 60_300.0)).futures["BTC-Q"].contracts == -0.5
    # the next day, S = 60,500 (the spot at 08:00): short 0.5 from 60,000 loses 0.5 x 500 = 250,
    # fee 5 bp x 0.5 x 60,500 = 15.125; cash 3,000 - 250 - 15.125
    fees = gw.set_market(_market("2024-06-02", 62_000.0, 62_100.0), None, {"BTC-Q": 60_500.0})
    assert fees == pytest.approx(15.125, rel=1e-12)
    after = gw.account(book, _market("2024-06-02", 62_000.0, 62_100.0))
    assert set(after.futures) == {"ETH-PERP"} and after.futures["ETH-PERP"].contracts == 2.0
    assert after.cash == pytest.approx(3000.0 - 250.0 - 15.125, rel=1e-12)
    ms = int(pd.Timestamp("2024-06-02", tz="UTC").timestamp() * 1000)
    oid = f"settle-BTC-Q-{ms}"
    order = gw.orders[oid]
    assert order.status == OrderStatus.FILLED and order.filled == 0.5
    assert order.average == 60_500.0 and order.fee == pytest.approx(15.125, rel=1e-12)
    # persisted with the account: a new gateway on the journal reads the settled account and fill
    store.close()
    again = PaperStore(tmp_path / "j.sqlite", book.name)
    try:
        saved = again.load()
        assert saved is not None
        assert set(saved[0]) == {"ETH-PERP"} and saved[1] == pytest.approx(2734.875, rel=1e-12)
        sym, trade = again.trades()[-1]
        assert (sym, trade.order_id, trade.contracts, trade.price, trade.time_ms) == (
            "BTC-Q", oid, 0.5, 60_500.0, ms)
        assert trade.fee == pytest.approx(15.125, rel=1e-12)
    finally:
        again.close()
    # settled once: moving on settles nothing more
    assert gw.set_market(_market("2024-06-03", 63_000.0, 63_000.0)) == 0.0


def test_without_a_price_it_settles_at_the_spot_and_inverse_pays_on_size() -> None:
    book = _book({"BTC-Q": FuturesPosition(0.2, 50_000.0), "BTC-QI": FuturesPosition(-10.0, 60_000.0)})
    gw = PaperGateway(book, _market("2024-06-01", 60_000.0, 60_000.0))
    # at the expiry itself (08:00), no price given: S = spot 50,000 (not the mark 50,400)
    fees = gw.set_market(_market("2024-06-01T08:00", 50_000.0, 50_400.0))
    # linear long 0.2 from 50,000: PnL 0, fee 5 bp x 0.2 x 50,000 = 5.00
    # inverse short 10 x 100 USD from 60,000: PnL -10 x 100 x (1/60,000 - 1/50,000) x 50,000
    # = +166.67 USD, fee 5 bp x 10 x 100 = 0.50
    assert fees == pytest.approx(5.5, rel=1e-12)
    after = gw.account(book, _market("2024-06-01T08:00", 50_000.0, 50_400.0))
    assert after.futures == {}
    assert after.cash == pytest.approx(3000.0 + 1000.0 / 6.0 - 5.5, rel=1e-12)
