"""A paper loop on Binance prices (``[run] prices = "binanceusdm"``, executor/paper_feed.py) pays
and counts funding at the *exchange's* interval, as every command that reads an exchange does: the
book file states none (8 h by default) while Binance (the emulator) lists SOLUSDT at 4 h in its
public ``GET /fapi/v1/fundingInfo``. Expected values by hand in each test."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from binance_emulator import BinanceEmulator
from exec_helpers import SEED_BOOK, cli_emulator, market, three_asset_book

from executor.ccxt_gateway import CcxtGateway
from executor.paper import PaperGateway
from executor.paper_feed import LivePaperGateway, LivePrices, exchange_intervals, live_paper
from executor.schedule import next_settlement
from models.book import FuturesPosition


def utc(h: int, d: int = 1) -> datetime:
    """A time after the emulator's settled-rate history (2024-01-01 + 400 days), so each
    settlement is paid at the rate now (the history's rates: :func:`test_settled_rates_are_paid`)."""
    return datetime(2026, 6, d, h, 0, tzinfo=UTC)


def _emulator_4h_sol(emu: BinanceEmulator) -> None:
    """SOLUSDT settles every 4 h at 5e-4, mark 150; BTC and ETH every 8 h at 0."""
    emu.funding_hours["SOLUSDT"] = 4
    emu.set_mark("SOLUSDT", 150.0)
    emu.set_funding("SOLUSDT", 0.0005)
    emu.set_funding("BTCUSDT", 0.0)
    emu.set_funding("ETHUSDT", 0.0)


def test_a_4h_contract_is_paid_twice_in_8h() -> None:
    """A 10 SOL short, mark 150, rate 5e-4, read at 01:00 and 09:00: the 4 h contract settles at
    04:00 and 08:00, so it receives 2 x 5e-4 x 10 x 150 = 1.50 USD (the book's 8 h: 0.75)."""
    with BinanceEmulator() as emu:
        _emulator_4h_sol(emu)
        src = CcxtGateway(emu.exchange(timeout=400), base_delay_s=0.0)
        book = three_asset_book(futures={"SOL-PERP": FuturesPosition(-10.0, 150.0)}, cash=3000.0)
        paper = PaperGateway(book, market())
        feed = LivePrices(paper, src, book, market())
        assert feed(utc(1)).mark_price("SOL-PERP") == 150.0
        feed(utc(9))
        assert feed.paid == pytest.approx(1.50, rel=1e-12)
        assert paper.account(book, market()).cash == pytest.approx(3000.0 + 1.50, rel=1e-12)
        assert feed.hours == {"BTC-PERP": 8.0, "ETH-PERP": 8.0, "SOL-PERP": 4.0}


def test_each_contract_at_its_own_interval() -> None:
    """Both contracts short, read at 01:00 and the next day 01:00: BTC-PERP (8 h, unlisted:
    Binance's default) settles at 08, 16, 00 (3 x 1e-4 x 0.1 x 60,000 = 1.80 USD); SOL-PERP
    (4 h) at 04, 08, 12, 16, 20, 00 (6 x 5e-4 x 10 x 150 = 4.50 USD); 6.30 USD in all."""
    with BinanceEmulator() as emu:
        _emulator_4h_sol(emu)
        emu.set_mark("BTCUSDT", 60_000.0)
        emu.set_funding("BTCUSDT", 0.0001)
        src = CcxtGateway(emu.exchange(timeout=400), base_delay_s=0.0)
        book = three_asset_book(futures={"BTC-PERP": FuturesPosition(-0.1, 60_000.0),
                                         "SOL-PERP": FuturesPosition(-10.0, 150.0)}, cash=3000.0)
        feed = LivePrices(PaperGateway(book, market()), src, book, market())
        feed(utc(1))
        feed(utc(1, d=2))
        assert feed.paid == pytest.approx(1.80 + 4.50, rel=1e-12)


def test_a_source_without_intervals_keeps_the_book_file_s() -> None:
    """A source that states no funding intervals (no ``funding_hours``) leaves the book's."""
    book = three_asset_book()

    class Plain:
        venue = "plain"

    assert exchange_intervals(Plain(), book) == {"BTC-PERP": 8.0, "ETH-PERP": 8.0,  # type: ignore[arg-type]
                                                 "SOL-PERP": 8.0}


def test_the_paper_venue_reports_the_exchange_interval() -> None:
    """The venue's instruments (read before the market, as the loop reads them) and its account
    carry 4 h for SOL-PERP: the loop's next settlement after 01:00 is 04:00 (8 h: 08:00), and
    the carry counts 6 settlements a day, not 3."""
    with BinanceEmulator() as emu:
        _emulator_4h_sol(emu)
        src = CcxtGateway(emu.exchange(timeout=400), base_delay_s=0.0)
        book = three_asset_book(futures={"SOL-PERP": FuturesPosition(-10.0, 150.0)})
        gw, feed = live_paper(book, book, market(), src, daily_vol={}, store=None)
        assert isinstance(gw, LivePaperGateway) and gw.feed is feed
        inst = gw.instruments(book)
        assert {s: i.contract.funding_interval_h for s, i in inst.items()} == {
            "BTC-PERP": 8.0, "ETH-PERP": 8.0, "SOL-PERP": 4.0}
        exchange = {s: i.contract for s, i in inst.items()}
        assert next_settlement(book, exchange, utc(1)) == utc(4)
        acc = gw.account(book, feed(utc(1)))
        assert [c.funding_interval_h for c in acc.contracts] == [8.0, 8.0, 4.0]
        assert acc.futures["SOL-PERP"].contracts == -10.0


def test_run_wiring_builds_the_paper_venue_on_the_exchange_intervals(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``fbr run``'s paper venue with ``prices = "binanceusdm"``: its instruments carry the
    exchange's 4 h (public endpoints only, no keys), and its feed pays at that interval."""
    from fbr.run_config import load_run_file
    from fbr.run_wiring import paper_venue

    monkeypatch.setenv("FBR_LOCK_DIR", str(tmp_path / "locks"))
    run = tmp_path / "run.toml"
    run.write_text(f'book = "{SEED_BOOK}"\n[[policies]]\nkind = "naive_futures"\nband = "1%"\n'
                   f'name = "naive"\n[run]\nexchange = "paper"\nprices = "binanceusdm"\n')
    with cli_emulator(monkeypatch, "k", "s") as emu:
        _emulator_4h_sol(emu)
        cfg = load_run_file(run)
        opened = paper_venue(cfg, tmp_path / "j.sqlite")
        try:
            book = cfg.backtest.loaded.book
            inst = opened.venue.gateway.instruments(book)
            assert inst["SOL-PERP"].contract.funding_interval_h == 4.0
            assert inst["BTC-PERP"].contract.funding_interval_h == 8.0
            feed = opened.venue.fallback
            assert isinstance(feed, LivePrices) and feed.hours is not None
            assert feed.hours["SOL-PERP"] == 4.0
        finally:
            opened.close()
        signed = {"/fapi/v3/account", "/fapi/v2/account", "/fapi/v2/balance", "/fapi/v1/order",
                  "/fapi/v3/positionRisk", "/fapi/v2/positionRisk", "/fapi/v1/leverageBracket",
                  "/fapi/v1/commissionRate"}
        assert not [r.path for r in emu.requests if r.path in signed]
        assert [r.path for r in emu.requests if r.path == "/fapi/v1/fundingInfo"]


def test_settled_rates_are_paid_where_the_exchange_serves_them() -> None:
    """A 0.1 BTC short read at 2024-06-01 01:00 and 17:00 holds the 08:00 and 16:00 settlements,
    inside the emulator's funding-rate history (``GET /fapi/v1/fundingRate``): each is paid at
    its settled rate r_k, not at the rate now (set to 0.003 here): received
    sum_k r_k x 0.1 x 60,000 USD, the r_k read from the emulator's own history (it had paid
    2 x 0.003 x 6,000 = 36 USD)."""
    with BinanceEmulator() as emu:
        emu.set_mark("BTCUSDT", 60_000.0)
        emu.set_funding("BTCUSDT", 0.003)
        src = CcxtGateway(emu.exchange(timeout=400), base_delay_s=0.0)
        book = three_asset_book(futures={"BTC-PERP": FuturesPosition(-0.1, 60_000.0)}, cash=3000.0)
        feed = LivePrices(PaperGateway(book, market()), src, book, market())
        t0, t1 = datetime(2024, 6, 1, 1, tzinfo=UTC), datetime(2024, 6, 1, 17, tzinfo=UTC)
        feed(t0)
        feed(t1)
        h = emu.history["BTCUSDT"]
        window = (h.funding_ms > t0.timestamp() * 1000) & (h.funding_ms <= t1.timestamp() * 1000)
        assert int(window.sum()) == 2
        settled = [round(float(r), 8) for r in h.funding[window]]  # served with 8 decimals
        assert feed.paid == pytest.approx(sum(settled) * 0.1 * 60_000.0, rel=1e-9)
