"""Monte Carlo on a book whose perpetuals settle every 4 h (as after `fbr account import`) fitted
to a history that settled every 8 h: the funding grid is the longer of the two spacings
(scenarios.path_history), so a generated path settles every 8 h and a replay of it carries what
it pays. Before, the 4 h grid held the 8 h settlement in one slot and 0 in the next, every slot a
settlement: the replay read the whole 8 h rate as a 4 h one, a carry twice what the path pays (a
review of funding intervals). The replay of the source itself is the control."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.book import Book
from models.instruments import FuturesContract, SpotAsset
from optimizer.carry import _carry_per_horizon
from scenarios.market_path import MarketPath
from scenarios.path_bootstrap import BlockBootstrap
from scenarios.path_history import JointHistory, PathFrame
from scenarios.replay_inputs import market_at, read_inputs

R = 1e-4  # every 8 h settlement of the source


def _book(hours: float) -> Book:
    c = FuturesContract("BTC-PERP", "BTC", funding_interval_h=hours)
    return Book(assets=(SpotAsset("BTC"),), contracts=(c,), spot={"BTC": 1.0},
                targets={"BTC": 1.0}, cash=0.0, name="b")


def _source() -> MarketPath:
    days = pd.date_range("2024-01-01", periods=60, freq="1D", tz="UTC")
    rng = np.random.default_rng(0)
    spot = pd.DataFrame({"BTC": 50_000 * np.cumprod(1 + rng.normal(0, 0.02, len(days)))},
                        index=days)
    settle = pd.date_range(pd.Timestamp("2024-01-01 08:00", tz="UTC"), days[-1], freq="8h")
    funding = pd.DataFrame({"BTC-PERP": np.full(len(settle), R)}, index=settle)
    return MarketPath(spot=spot, funding=funding)


def _one_day_carry(path: MarketPath, book: Book, k: int) -> tuple[float, float]:
    inp = read_inputs(book, path, spot_fee=None, impact_k=1.0, liquidation_penalty=0.01)
    snap = market_at(inp, k)
    carry = float(_carry_per_horizon(book, snap, 1.0)[0])
    t0, t1 = inp.step_ns[k], inp.step_ns[k + 1]
    paid_next_day = float(inp.settle_r[(inp.settle_t > t0) & (inp.settle_t <= t1), 0].sum())
    return carry, paid_next_day


def test_montecarlo_path_carry_matches_what_the_path_pays() -> None:
    book = _book(4.0)
    src = _source()
    hist = JointHistory.from_market_path(src, book.contracts, ["BTC"])
    frame = PathFrame(start=pd.Timestamp("2025-01-01", tz="UTC"), start_prices={"BTC": 60_000.0},
                      contracts=book.contracts)
    path = BlockBootstrap(history=hist, frame=frame).generate(1, 20)
    carry, paid = _one_day_carry(path, book, 5)
    assert paid == pytest.approx(3 * R)       # the path pays 3 x 1e-4 a day (money is right)
    assert carry == pytest.approx(paid)       # the carry the policy assumes: 3 x 1e-4 a day


def test_control_the_replay_of_the_source_carries_3_a_day() -> None:
    book = _book(4.0)
    with pytest.warns(UserWarning):
        carry, paid = _one_day_carry(_source(), book, 10)
    assert paid == pytest.approx(3 * R) and carry == pytest.approx(3 * R)
