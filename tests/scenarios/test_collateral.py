"""Collateral sweeps by hand: the band edges, the top-up (spot sold into the wallet, logged as
``sweep_in`` with negative quantities), the sweep-out (spot bought, ``sweep_out``), selling
everything, and the sale of pledged spot after a liquidation (USD)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import pytest

from models.book import Book, FuturesPosition
from models.collateral import Pledge
from models.errors import ValidationError
from models.instruments import FuturesContract, SpotAsset
from models.market import MarketSnapshot
from scenarios.collateral import (
    NO_SWEEPS,
    CollateralPolicy,
    CollateralSale,
    Sweep,
    band_edges,
    cover_with_pledged,
    purchase_for,
    sale_for,
    sweep_collateral,
)
from scenarios.replay_state import ReplayState, value_state

FEES = np.array([0.001, 0.002])
MARKET = MarketSnapshot(time=pd.Timestamp("2024-06-01", tz="UTC"), spot={"BTC": 50_000.0, "ETH": 2_000.0},
                        mark={"BTC-PERP": 50_000.0})


def _book(pledged: Mapping[str, Pledge] | None = None) -> Book:
    return Book(assets=(SpotAsset("BTC"), SpotAsset("ETH")), contracts=(FuturesContract("BTC-PERP", "BTC"),),
                spot={"BTC": 1.0, "ETH": 10.0}, targets={"BTC": 0.6, "ETH": 0.4}, cash=0.0,
                pledged=pledged or {})


def _state(cash: float, q: float = -0.5, btc: float = 1.0, eth: float = 10.0) -> ReplayState:
    fut = {"BTC-PERP": FuturesPosition(q, 50_000.0)} if q else {}
    return ReplayState(spot={"BTC": btc, "ETH": eth}, futures=fut, cash=cash)


def test_band_edges_and_policy_checks() -> None:
    assert band_edges(0.1, 0.5, None) == pytest.approx((0.05, 0.15))
    assert band_edges(0.1, 0.5, 0.02) == pytest.approx((0.08, 0.12))
    assert band_edges(0.0, 0.5, 0.03) == pytest.approx((-0.03, 0.03))
    assert CollateralPolicy(0.1, band=0.2).edges(0.1) == pytest.approx((0.08, 0.12))
    assert CollateralPolicy(0.1, width=0.01).edges(0.2) == pytest.approx((0.19, 0.21))
    assert not NO_SWEEPS.enabled and CollateralPolicy().enabled
    CollateralPolicy(0.0, band=0.0, width=0.0)  # the edges are allowed
    for kw in ({"target_fraction": 1.0}, {"target_fraction": -0.01}, {"band": -0.1},
               {"band": float("inf")}, {"width": 1.0}, {"width": -0.01}, {"width": float("nan")}):
        with pytest.raises(ValidationError) as err:
            CollateralPolicy(**kw)  # type: ignore[arg-type]
        assert err.value.field == "collateral." + next(iter(kw))


def test_top_up_sells_spot_pro_rata_by_hand() -> None:
    book, state = _book(), _state(1000.0)
    trades: list[dict[str, object]] = []
    # spot 50,000 + 20,000, wallet 1,000, NAV 71,000: below 0.05 x 71,000 = 3,550
    # f = (50 + 40) / 70,000; G = (7,100 - 1,000) / (1 - 0.9 f)
    f = 90.0 / 70_000.0
    gross = 6100.0 / (1.0 - 0.9 * f)
    sw = sweep_collateral(book, state, MARKET, 0.1, 0.5, FEES, trades)
    assert sw.sweep_in == pytest.approx(gross) and sw.sweep_out == 0.0
    assert sw.fees == pytest.approx(f * gross)
    g_btc, g_eth = gross * 5 / 7, gross * 2 / 7
    assert state.spot["BTC"] == pytest.approx(1.0 - g_btc / 50_000)
    assert state.spot["ETH"] == pytest.approx(10.0 - g_eth / 2_000)
    assert state.cash == pytest.approx(1000.0 + gross * (1 - f))
    assert [(t["kind"], t["symbol"]) for t in trades] == [("sweep_in", "BTC"), ("sweep_in", "ETH")]
    assert trades[0]["quantity"] == pytest.approx(-g_btc / 50_000)  # a sale: negative quantity
    assert trades[1]["notional"] == pytest.approx(-g_eth)
    assert trades[0]["fee"] == pytest.approx(0.001 * g_btc) and trades[1]["price"] == 2_000.0
    # the wallet lands on exactly tau x NAV after fees
    val = value_state(book, state, MARKET)
    assert val.wallet == pytest.approx(0.1 * val.nav)


#: impact coefficients (USD^-1/2): large enough to move the sweeps' sizes visibly
IMPACT = np.array([2e-4, 5e-4])


def test_top_up_with_impact_lands_on_the_target_and_pays_it_by_hand() -> None:
    """With impact c_i the sale G of each asset's share s_i pays fee f_i G s_i plus
    c_i (G s_i)^{3/2}; G solves G - 0.9 (f G + cbar G^{3/2}) = 6,100 (tau 0.1), cbar =
    sum_i c_i s_i^{3/2}: checked by the balance itself, by each trade row and by the wallet
    landing on exactly tau x NAV; a larger sale than without impact."""
    book, state = _book(), _state(1000.0)
    trades: list[dict[str, object]] = []
    share = np.array([5 / 7, 2 / 7])
    f = 90.0 / 70_000.0
    cbar = float(IMPACT @ share ** 1.5)
    sw = sweep_collateral(book, state, MARKET, 0.1, 0.5, FEES, trades, impact=IMPACT)
    g = sw.sweep_in
    assert g - 0.9 * (f * g + cbar * g ** 1.5) == pytest.approx(6100.0, rel=1e-12)
    assert g > 6100.0 / (1.0 - 0.9 * f) * 1.01  # the impact is not negligible here
    for t, si, ci, fi in zip(trades, share, IMPACT, FEES, strict=True):
        assert t["fee"] == pytest.approx(fi * g * si, rel=1e-12)
        assert t["slippage"] == pytest.approx(ci * (g * si) ** 1.5, rel=1e-12)
    assert sw.fees == pytest.approx(f * g + cbar * g ** 1.5, rel=1e-12)
    val = value_state(book, state, MARKET)
    assert val.wallet == pytest.approx(0.1 * val.nav, rel=1e-9)


def test_sweep_out_with_impact_lands_on_the_target_by_hand() -> None:
    """B + 0.9 (f B + cbar B^{3/2}) = 11,000 with f = 0.0014 and cbar = sum_i c_i w_i^{3/2}:
    a smaller purchase than without impact; the wallet lands on exactly tau x NAV."""
    book, state = _book(), _state(20_000.0)
    trades: list[dict[str, object]] = []
    cbar = float(IMPACT @ np.array([0.6, 0.4]) ** 1.5)
    sw = sweep_collateral(book, state, MARKET, 0.1, 0.5, FEES, trades, impact=IMPACT)
    b = sw.sweep_out
    assert b + 0.9 * (0.0014 * b + cbar * b ** 1.5) == pytest.approx(11_000.0, rel=1e-12)
    assert b < 11_000.0 / (1 + 0.9 * 0.0014) * 0.99
    assert trades[1]["slippage"] == pytest.approx(5e-4 * (0.4 * b) ** 1.5, rel=1e-12)
    assert sw.fees == pytest.approx(0.0014 * b + cbar * b ** 1.5, rel=1e-12)
    rows = pd.DataFrame(trades)
    assert sw.fees == pytest.approx(float((rows["fee"] + rows["slippage"]).sum()), rel=1e-12)
    val = value_state(book, state, MARKET)
    assert val.wallet == pytest.approx(0.1 * val.nav, rel=1e-9)


def test_sweep_out_with_impact_splits_by_the_targets_share() -> None:
    """Targets summing to 0.8 (the rest held as stablecoin): the purchase splits 5/8 : 3/8 and
    cbar uses those shares; the wallet still lands on tau x NAV."""
    book = Book(assets=(SpotAsset("BTC"), SpotAsset("ETH")),
                contracts=(FuturesContract("BTC-PERP", "BTC"),), spot={"BTC": 1.0, "ETH": 10.0},
                targets={"BTC": 0.5, "ETH": 0.3}, cash=0.0)
    state, trades = _state(20_000.0), []  # type: ignore[var-annotated]
    share = np.array([5 / 8, 3 / 8])
    cbar = float(IMPACT @ share ** 1.5)
    sw = sweep_collateral(book, state, MARKET, 0.1, 0.5, FEES, trades, impact=IMPACT)
    b, f = sw.sweep_out, float(FEES @ share)
    assert b + 0.9 * (f * b + cbar * b ** 1.5) == pytest.approx(11_000.0, rel=1e-12)
    assert [t["notional"] for t in trades] == pytest.approx([b * 5 / 8, b * 3 / 8], rel=1e-12)
    val = value_state(book, state, MARKET)
    assert val.wallet == pytest.approx(0.1 * val.nav, rel=1e-9)


def test_zero_impact_is_the_linear_sweep_bit_for_bit() -> None:
    """impact zeros (a path without ADV) or None: the same state, trades and sweep."""
    for cash in (1000.0, 20_000.0):
        runs = []
        for impact in (None, np.zeros(2)):
            state, trades = _state(cash), []  # type: ignore[var-annotated]
            sw = sweep_collateral(_book(), state, MARKET, 0.1, 0.5, FEES, trades, impact=impact)
            runs.append((sw, state.cash, dict(state.spot), trades))
        assert runs[0] == runs[1]


def _sold(g: float, c: float) -> float:
    """What a sale of g raises towards the target at tau 0.1, fee rate 0.001, impact c."""
    return g - 0.9 * (0.001 * g + c * float(g ** 1.5))


def _bought(b: float, c: float) -> float:
    """What a purchase of b spends of the excess at tau 0.1, fee rate 0.001, impact c."""
    return b + 0.9 * (0.001 * b + c * float(b ** 1.5))


@pytest.mark.parametrize("c", [1e-9, 1e-4, 1.0])
def test_sale_and_purchase_solve_their_balance(c: float) -> None:
    """From an impact that moves the answer by a thousandth of a USD to one that dominates it,
    and for amounts below 1 USD: the sale raises exactly short, the purchase spends exactly
    the excess (1e-12 relative)."""
    for amount in (0.5, 11_000.0):
        g = sale_for(amount, 0.1, 0.001, c, 1e12)
        if g < ((1 - 0.9 * 0.001) / (1.35 * c)) ** 2:  # within reach
            assert _sold(g, c) == pytest.approx(amount, rel=1e-12)
        b = purchase_for(amount, 0.1, 0.001, c)
        assert _bought(b, c) == pytest.approx(amount, rel=1e-12)
        assert b < amount


def test_a_sale_just_within_reach_is_below_the_peak() -> None:
    """short half a USD below the most a sale can raise: the root, short of the peak."""
    c = 0.01
    peak = ((1 - 0.9 * 0.001) / (1.35 * c)) ** 2
    short = _sold(peak, c) - 0.5
    g = sale_for(short, 0.1, 0.001, c, 1e12)
    assert g < peak
    assert _sold(g, c) == pytest.approx(short, rel=1e-12)


def test_rounding_of_the_linear_answer_does_not_break_the_bracket() -> None:
    """Amounts whose linear answer rounds to a hair above (sale) or below (purchase) the balance:
    with an impact too small to matter the linear answer itself, with no error."""
    a_in, a_out = 1.0 - 0.9 * 0.001, 1.0 + 0.9 * 0.001
    short, excess = 4093.11, 1154.77
    lin_in, lin_out = short / (1.0 - 0.001 + 0.1 * 0.001), excess / (1.0 + 0.001 - 0.1 * 0.001)
    assert a_in * lin_in > short and a_out * lin_out < excess  # the rounding this test needs
    assert sale_for(short, 0.1, 0.001, 1e-30, 1e6) == lin_in
    assert purchase_for(excess, 0.1, 0.001, 1e-30) == lin_out


def test_sale_for_out_of_reach_stops_at_the_peak() -> None:
    """When even the best sale cannot raise ``short`` (impact so large that selling more raises
    less), the sale is the peak of g - 0.9 (f g + c g^{3/2}), where 1 - 0.9 f = 1.35 c sqrt(g);
    with the peak beyond all the spot, all of it."""
    c = 0.01  # USD^-1/2
    peak = ((1 - 0.9 * 0.001) / (1.5 * 0.9 * c)) ** 2
    assert sale_for(1e9, 0.1, 0.001, c, 1e12) == pytest.approx(peak, rel=1e-12)
    assert sale_for(1e9, 0.1, 0.001, c, 100.0) == 100.0
    assert sale_for(50.0, 0.1, 0.001, 0.0, 1e6) == pytest.approx(50.0 / (1 - 0.9 * 0.001))
    assert purchase_for(50.0, 0.1, 0.001, 0.0) == pytest.approx(50.0 / (1 + 0.9 * 0.001))


def test_sweep_out_buys_spot_at_target_weights_by_hand() -> None:
    book, state = _book(), _state(20_000.0)
    trades: list[dict[str, object]] = []
    # NAV 90,000: wallet 20,000 > 0.15 x 90,000; f = 0.6 x 0.001 + 0.4 x 0.002 = 0.0014
    gross = (20_000.0 - 9_000.0) / (1 + 0.0014 - 0.1 * 0.0014)
    sw = sweep_collateral(book, state, MARKET, 0.1, 0.5, FEES, trades)
    assert sw.sweep_out == pytest.approx(gross) and sw.sweep_in == 0.0
    assert sw.fees == pytest.approx(0.0014 * gross)
    assert state.spot["BTC"] == pytest.approx(1.0 + 0.6 * gross / 50_000)
    assert state.spot["ETH"] == pytest.approx(10.0 + 0.4 * gross / 2_000)
    assert state.cash == pytest.approx(20_000.0 - gross * 1.0014)
    assert [t["kind"] for t in trades] == ["sweep_out", "sweep_out"]
    assert trades[0]["quantity"] == pytest.approx(0.6 * gross / 50_000)  # a buy: positive
    assert trades[1]["notional"] == pytest.approx(0.4 * gross)
    assert trades[1]["fee"] == pytest.approx(0.002 * 0.4 * gross)
    val = value_state(book, state, MARKET)
    assert val.wallet == pytest.approx(0.1 * val.nav)


def test_inside_the_band_or_nothing_open_moves_nothing() -> None:
    trades: list[dict[str, object]] = []
    for cash in (3_700.0, 10_000.0):  # 3,700 >= 0.05 x 73,700; 10,000 <= 0.15 x 80,000
        state = _state(cash)
        assert sweep_collateral(_book(), state, MARKET, 0.1, 0.5, FEES, trades) == Sweep()
        assert state.cash == cash
    state = _state(100.0, q=0.0)  # no futures position: no band to keep
    assert sweep_collateral(_book(), state, MARKET, 0.1, 0.5, FEES, trades) == Sweep()
    assert trades == []
    # an absolute width: 0.1 +- 0.01 -> [7,110, 8,690] of NAV 79,000 with 9,000 in the wallet
    state = _state(9_000.0)
    sw = sweep_collateral(_book(), state, MARKET, 0.1, 0.5, FEES, trades, width=0.01)
    assert sw.sweep_out > 0
    state = _state(9_000.0)
    assert sweep_collateral(_book(), state, MARKET, 0.1, 0.5, FEES, trades) == Sweep()


def test_top_up_beyond_the_spot_sells_everything() -> None:
    book = _book()
    state = _state(-70_000.0, btc=0.1, eth=1.0)  # spot 7,000, wallet -70,000: NAV -63,000 <= 0
    assert sweep_collateral(book, state, MARKET, 0.1, 0.5, FEES, []) == Sweep()
    # spot 7,000, NAV 1,000; tau 0.5 with 20% fees: G = (500 + 6,000) / (1 - 0.2 + 0.1) = 7,222
    # > 7,000 -> everything is sold
    state = _state(-6_000.0, btc=0.1, eth=1.0)
    trades: list[dict[str, object]] = []
    sw = sweep_collateral(book, state, MARKET, 0.5, 0.5, np.array([0.2, 0.2]), trades)
    assert sw.sweep_in == pytest.approx(7_000.0)
    assert state.spot == {"BTC": 0.0, "ETH": 0.0}
    assert [t["quantity"] for t in trades] == [-0.1, -1.0]
    assert [t["notional"] for t in trades] == [-5_000.0, -2_000.0]
    assert sw.fees == pytest.approx(1_400.0)
    assert state.cash == pytest.approx(-6_000.0 + 7_000.0 - 1_400.0)
    # without fees G = 6,500 < 7,000: a partial sale leaving 500 / 7,000 of each holding
    state = _state(-6_000.0, btc=0.1, eth=1.0)
    sw = sweep_collateral(book, state, MARKET, 0.5, 0.5, np.array([0.0, 0.0]), [])
    assert sw.sweep_in == pytest.approx(6_500.0)
    assert state.spot["BTC"] == pytest.approx(0.1 / 14) and state.spot["ETH"] == pytest.approx(1 / 14)


def test_pledged_top_up_counts_the_collateral() -> None:
    book = _book({"BTC": 0.9})
    state = _state(1000.0)  # wallet 1,000; pledged BTC 50,000 x 0.9 = 45,000 of collateral
    assert sweep_collateral(book, state, MARKET, 0.1, 0.5, FEES, [], pledged=True) == Sweep()
    sw = sweep_collateral(book, _state(1000.0), MARKET, 0.1, 0.5, FEES, [])  # the wallet alone
    assert sw.sweep_in > 0


def test_cover_with_pledged_by_hand() -> None:
    book = _book({"BTC": 0.9, "ETH": 0.5})
    trades: list[dict[str, object]] = []
    assert cover_with_pledged(book, _state(10.0), MARKET, 0.01, trades) == CollateralSale()
    assert cover_with_pledged(_book(), _state(-10.0), MARKET, 0.01, trades) == CollateralSale()
    state = _state(-990.0, q=0.0)
    # G = 990 / 0.99 = 1,000 pro rata to u = (50,000, 20,000): 5/7 and 2/7; penalty 1% of G
    sale = cover_with_pledged(book, state, MARKET, 0.01, trades)
    assert sale.gross == pytest.approx(1000.0) and sale.penalty == pytest.approx(10.0)
    assert state.cash == pytest.approx(0.0, abs=1e-9)
    assert state.spot["BTC"] == pytest.approx(1.0 - 1000 * 5 / 7 / 50_000)
    assert state.spot["ETH"] == pytest.approx(10.0 - 1000 * 2 / 7 / 2_000)
    assert [(t["kind"], t["symbol"]) for t in trades] == [("collateral_sale", "BTC"),
                                                          ("collateral_sale", "ETH")]
    assert trades[0]["quantity"] == pytest.approx(-1000 * 5 / 7 / 50_000)
    assert trades[1]["notional"] == pytest.approx(-1000 * 2 / 7) and trades[1]["fee"] == pytest.approx(
        0.01 * 1000 * 2 / 7)
    # a debt beyond the pledged spot: everything pledged goes, the rest stays a debt
    state = _state(-100_000.0, q=0.0)
    sale = cover_with_pledged(book, state, MARKET, 0.01, [])
    assert sale.gross == pytest.approx(70_000.0) and sale.penalty == pytest.approx(700.0)
    assert state.spot == {"BTC": 0.0, "ETH": 0.0}
    assert state.cash == pytest.approx(-100_000.0 + 70_000.0 * 0.99)


def test_policy_errors_in_full() -> None:
    cases = [({"target_fraction": 1.5}, "collateral.target_fraction: is 1.5. Fix: give the wallet reserve "
              "as a fraction of NAV in [0, 1)"),
             ({"band": -1.0}, "collateral.band: is -1.0. Fix: give the relative band around the target "
              "as a number >= 0"),
             ({"width": 2.0}, "collateral.width: is 2.0. Fix: give the band's half-width as a fraction "
              "of NAV in [0, 1)")]
    for kw, text in cases:
        with pytest.raises(ValidationError) as err:
            CollateralPolicy(**kw)  # type: ignore[arg-type]
        assert str(err.value) == text


def test_sweep_edges_of_nav_and_band() -> None:
    # NAV exactly 0 (spot 7,000, cash -7,000): nothing to keep a reserve of
    zero = _state(-7_000.0, btc=0.1, eth=1.0)
    assert sweep_collateral(_book(), zero, MARKET, 0.5, 0.5, FEES, []) == Sweep()
    # NAV 0.5 USD: the top-up runs
    sw = sweep_collateral(_book(), _state(-6_999.5, btc=0.1, eth=1.0), MARKET, 0.5, 0.5, FEES, [])
    assert sw.sweep_in > 0
    # a wallet exactly on the lower edge: 0.25 x (1 - 0.5) x 80,000 = 10,000 -> inside the band
    assert sweep_collateral(_book(), _state(10_000.0), MARKET, 0.25, 0.5, FEES, []) == Sweep()


def test_sweep_trade_rows_in_full() -> None:
    trades: list[dict[str, object]] = []
    sweep_collateral(_book(), _state(-6_000.0, btc=0.1, eth=1.0), MARKET, 0.5, 0.5, np.array([0.2, 0.2]),
                     trades)
    assert trades[0] == {"time": MARKET.time, "kind": "sweep_in", "symbol": "BTC", "quantity": -0.1,
                         "price": 50_000.0, "notional": -5_000.0, "fee": pytest.approx(1_000.0),
                         "slippage": 0.0}


def test_cover_with_pledged_edges() -> None:
    book = _book({"BTC": 0.9, "ETH": 0.5})
    for cash in (0.0, 0.5):  # no debt: nothing sold
        trades: list[dict[str, object]] = []
        assert cover_with_pledged(book, _state(cash, q=0.0), MARKET, 0.01, trades) == CollateralSale()
        assert trades == []
    # only ETH pledged (BTC, first in the book, is skipped, not the end of the loop)
    trades = []
    eth_only = _book({"ETH": 0.5})
    sale = cover_with_pledged(eth_only, _state(-99.0, q=0.0), MARKET, 0.01, trades)
    assert sale.gross == pytest.approx(100.0) and [t["symbol"] for t in trades] == ["ETH"]
    assert trades[0] == {"time": MARKET.time, "kind": "collateral_sale", "symbol": "ETH",
                         "quantity": pytest.approx(-0.05), "price": 2_000.0,
                         "notional": pytest.approx(-100.0), "fee": pytest.approx(1.0), "slippage": 0.0}
    # a pledged holding worth less than 1 USD still counts
    tiny = _state(-0.99, q=0.0, btc=0.0, eth=0.0005)  # 1 USD of ETH
    sale = cover_with_pledged(eth_only, tiny, MARKET, 0.01, [])
    assert sale.gross == pytest.approx(1.0) and tiny.spot["ETH"] == 0.0
    small = _state(-0.297, q=0.0, btc=0.0, eth=0.0003)  # 0.6 USD of ETH, a 0.3 USD debt
    sale = cover_with_pledged(eth_only, small, MARKET, 0.01, [])
    assert sale.gross == pytest.approx(0.3) and small.spot["ETH"] == pytest.approx(0.00015)


def test_cover_counts_only_the_pledged_quantity() -> None:
    from models.collateral import flat_rule

    # 10 ETH held, 4 of them pledged: u = 4 x 2,000 = 8,000; a 9,900 debt sells all 8,000 of it
    book = _book({"ETH": flat_rule(0.5, quantity=4.0)})
    state = _state(-9_900.0, q=0.0, btc=0.0, eth=10.0)
    sale = cover_with_pledged(book, state, MARKET, 0.01, [])
    assert sale.gross == pytest.approx(8_000.0)
    assert state.spot["ETH"] == pytest.approx(6.0)
    # the state's holdings count, not the book's: with 2 ETH left only those 2 are pledged
    state = _state(-9_900.0, q=0.0, btc=0.0, eth=2.0)
    assert cover_with_pledged(book, state, MARKET, 0.01, []).gross == pytest.approx(4_000.0)


def test_sweeps_skip_assets_with_nothing_to_sell_or_no_target() -> None:
    # top-up with no BTC held: only ETH is sold (BTC, first in the book, gives no row)
    trades: list[dict[str, object]] = []
    sw = sweep_collateral(_book(), _state(0.0, btc=0.0, eth=10.0), MARKET, 0.1, 0.5, FEES, trades)
    assert [t["symbol"] for t in trades] == ["ETH"] and sw.sweep_in > 0
    # a holding worth 0.5 USD is sold too
    trades = []
    sw = sweep_collateral(_book(), _state(-0.5, btc=0.0, eth=0.0005), MARKET, 0.9, 0.5, FEES, trades)
    # NAV 0.5, tau 0.9: G = (0.45 + 0.5) / (1 - 0.1 x 0.002)
    assert [t["symbol"] for t in trades] == ["ETH"]
    assert sw.sweep_in == pytest.approx(0.95 / (1 - 0.1 * 0.002))


def _book_targets(targets: dict[str, float]) -> Book:
    return Book(assets=(SpotAsset("BTC"), SpotAsset("ETH")), contracts=(FuturesContract("BTC-PERP", "BTC"),),
                spot={"BTC": 1.0, "ETH": 10.0}, targets=targets, cash=0.0)


def test_sweep_out_with_targets_below_one_by_hand() -> None:
    # targets 0.3 + 0.2 = 0.5 (the rest cash): f = (0.3 x 0.001 + 0.2 x 0.002) / 0.5 = 0.0014;
    # buys pro rata 0.6 / 0.4 of B = (20,000 - 9,000) / (1 + 0.0014 - 0.1 x 0.0014)
    book = _book_targets({"BTC": 0.3, "ETH": 0.2})
    state = _state(20_000.0)
    trades: list[dict[str, object]] = []
    sw = sweep_collateral(book, state, MARKET, 0.1, 0.5, FEES, trades)
    gross = 11_000.0 / (1 + 0.0014 - 0.1 * 0.0014)
    assert sw.sweep_out == pytest.approx(gross) and sw.fees == pytest.approx(0.0014 * gross)
    assert trades[0] == {"time": MARKET.time, "kind": "sweep_out", "symbol": "BTC",
                         "quantity": pytest.approx(0.6 * gross / 50_000), "price": 50_000.0,
                         "notional": pytest.approx(0.6 * gross), "fee": pytest.approx(0.001 * 0.6 * gross),
                         "slippage": 0.0}
    # a zero target gets no purchase, and the loop goes on to the next asset
    trades = []
    eth_target = _book_targets({"BTC": 0.0, "ETH": 0.5})
    sweep_collateral(eth_target, _state(20_000.0), MARKET, 0.1, 0.5, FEES, trades)
    assert [t["symbol"] for t in trades] == ["ETH"]
    # no target at all: nothing to buy
    trades = []
    empty = _book_targets({"BTC": 0.0, "ETH": 0.0})
    assert sweep_collateral(empty, _state(20_000.0), MARKET, 0.1, 0.5, FEES, trades) == Sweep()
    assert trades == []


def test_a_wallet_exactly_on_the_upper_edge_stays() -> None:
    # 0.25 x 1.5 = 0.375 of NAV 112,000 = 42,000
    assert sweep_collateral(_book(), _state(42_000.0), MARKET, 0.25, 0.5, FEES, []) == Sweep()


def test_a_sweep_that_sells_everything_empties_the_holdings_exactly() -> None:
    """A wallet debt of 1,684.4 against 1,685.4 USD of spot (NAV 1 USD, below the fee on selling
    it all) sells all the spot: each row sells the whole holding (not a pro-rata share that float
    rounding leaves a hair off) and the holdings end at exactly 0. With 0.0477 ETH at 2,000
    (95.4 USD of 1,685.4), the pro-rata route is off by an ulp: 1,685.4 x 95.4 / 1,685.4 != 95.4
    and 95.4 / 2,000 != 0.0477 after it."""
    state = _state(-1_684.4, btc=0.0318, eth=0.0477)
    v_btc, v_eth = 0.0318 * 50_000.0, 0.0477 * 2_000.0
    total = v_btc + v_eth
    assert total * v_eth / total != v_eth  # the premise: the pro-rata share is not exact here
    trades: list[dict[str, object]] = []
    sweep = sweep_collateral(_book(), state, MARKET, 0.25, 0.5, FEES, trades)
    assert state.spot == {"BTC": 0.0, "ETH": 0.0}
    assert [(t["symbol"], t["quantity"], t["notional"]) for t in trades] == [
        ("BTC", -0.0318, -v_btc), ("ETH", -0.0477, -v_eth)]
    assert sweep.sweep_in == total
    assert state.cash == -1_684.4 + (v_btc - 0.001 * v_btc) + (v_eth - 0.002 * v_eth)


def test_a_pledged_sale_of_everything_sells_each_whole_value() -> None:
    """A debt above all the pledged value sells each pledged holding whole: the rows' notionals
    are the holdings' values exactly and the holdings end at exactly 0 (the pro-rata share
    total x u_i / total is an ulp off u_i here, 95.4 USD of ETH in 1,685.4)."""
    book = _book({"BTC": 0.9, "ETH": 0.5})
    state = _state(-1e6, q=0.0, btc=0.0318, eth=0.0477)
    v_btc, v_eth = 0.0318 * 50_000.0, 0.0477 * 2_000.0
    total = v_btc + v_eth
    assert total * v_eth / total != v_eth
    trades: list[dict[str, object]] = []
    sale = cover_with_pledged(book, state, MARKET, 0.01, trades)
    assert [(t["symbol"], t["notional"]) for t in trades] == [("BTC", -v_btc), ("ETH", -v_eth)]
    assert state.spot == {"BTC": 0.0, "ETH": 0.0}
    assert sale.gross == total
    assert state.cash == -1e6 + (v_btc - 0.01 * v_btc) + (v_eth - 0.01 * v_eth)


def test_the_pledged_spot_value_uses_the_quantity_held_now() -> None:
    """1 BTC of a holding pledged (quantity cap), the book opened with 2 BTC, 1.5 BTC held now at
    40,000: u = min(1, 1.5) x 40,000 = 40,000 USD (the book's 2 BTC would give 1/2 x 60,000 =
    30,000); ETH unpledged; a book without pledges holds none."""
    from models.collateral import flat_rule
    from scenarios.collateral import pledged_spot_usd

    book = Book((SpotAsset("BTC"), SpotAsset("ETH")), (), spot={"BTC": 2.0, "ETH": 10.0},
                targets={"BTC": 0.5, "ETH": 0.5}, pledged={"BTC": flat_rule(0.9, quantity=1.0)})
    market = MarketSnapshot(time=pd.Timestamp("2025-01-01", tz="UTC"),
                            spot={"BTC": 40_000.0, "ETH": 2_000.0}, mark={})
    state = ReplayState(spot={"BTC": 1.5, "ETH": 10.0}, futures={}, cash=-5_000.0)
    assert pledged_spot_usd(book, state, market) == pytest.approx(40_000.0, rel=1e-12)
    plain = Book(book.assets, (), spot=book.spot, targets={"BTC": 0.5, "ETH": 0.5})
    assert pledged_spot_usd(plain, state, market) == 0.0
