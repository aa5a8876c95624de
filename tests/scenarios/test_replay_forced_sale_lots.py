"""Replay: a pledged-collateral sale after a liquidation is booked against the tax lots before the
policy runs (review finding 2), so an optimiser with a taxed spot leg gets lots that add up."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pytest

from models.book import Book, FuturesPosition
from models.instruments import FuturesContract, MarginTiers, SpotAsset
from models.risk import RiskModel
from models.tax import LotMethod, TaxLot, TaxRates
from optimizer.policies import NoRebalance, OptimizedFutures
from optimizer.settings import OptimizerSettings, SpotLegSettings
from scenarios.collateral import NO_SWEEPS
from scenarios.market_path import MarketPath
from scenarios.replay import run_backtest

T0 = pd.Timestamp("2025-01-01", tz="UTC")
OLD, NEW = datetime(2023, 1, 1, tzinfo=UTC), datetime(2024, 6, 1, tzinfo=UTC)


def _hand_tax(trades: pd.DataFrame) -> dict[Any, float]:
    """Each step's spot tax by hand: HIFO, the step's sales before its buys, 15% on lots held
    more than a year (calendar), else 30%, on (price - basis) per unit; buys open a lot."""
    def rate(acquired: pd.Timestamp, now: Any) -> float:
        return 0.15 if now.date() > (acquired + pd.DateOffset(years=1)).date() else 0.30

    lots: dict[Any, list[list[Any]]] = {"BTC": [[1.0, 10_000.0, pd.Timestamp(OLD)],
                                           [1.0, 50_000.0, pd.Timestamp(NEW)]], "ETH": []}
    out: dict[Any, float] = {}
    for t, g in trades[trades["kind"] != "futures"].groupby("time"):
        tax = 0.0
        for a, gg in g.groupby("symbol"):
            px = float(gg["price"].iloc[0])
            sold = float(-gg["quantity"][gg["quantity"] < 0].sum())
            for lot in sorted(lots[a], key=lambda lot: -lot[1]):
                take = min(sold, lot[0])
                tax += take * rate(lot[2], t) * (px - lot[1])
                lot[0] -= take
                sold -= take
            lots[a] = [lot for lot in lots[a] if lot[0] > 1e-12]
            bought = float(gg["quantity"][gg["quantity"] > 0].sum())
            if bought > 0:
                lots[a].append([bought, px, t])
        out[t] = tax
    return out


def test_a_pledged_collateral_sale_is_taxed_lot_by_lot_and_the_replay_goes_on() -> None:
    """2 BTC (1 @ 10,000 bought 2023-01-01, 1 @ 50,000 bought 2024-06-01), pledged at 0.9, no
    cash, one ETH perp; an optimiser with the spot leg, [tax] 30% / 15%, HIFO. Day 1 both coins
    fall 90%: the ETH hedge is liquidated and the pledged BTC sold to cover the wallet. The run
    used to stop with "lots.BTC: tax lots of BTC add up to ... but the book holds 0 units"."""
    flat = MarginTiers.flat(max_leverage=20.0, mmr=0.005)
    perp = FuturesContract("ETH-PERP", "ETH", lot_step=0.0, min_notional=0.0, tiers=flat)
    book = Book(assets=(SpotAsset("BTC", fee=0.05), SpotAsset("ETH", fee=0.05)), contracts=(perp,),
                spot={"BTC": 2.0, "ETH": 0.0}, targets={"BTC": 0.6, "ETH": 0.4}, cash=0.0,
                pledged={"BTC": 0.9})
    idx = pd.DatetimeIndex([T0, T0 + pd.Timedelta(days=1), T0 + pd.Timedelta(days=2)])
    spot = pd.DataFrame({"BTC": [60_000.0, 6_000.0, 6_000.0], "ETH": [2_500.0, 250.0, 250.0]},
                        index=idx)
    path = MarketPath(spot=spot, mark=pd.DataFrame({"ETH-PERP": spot["ETH"]}))
    risk = RiskModel.from_covariance(("BTC", "ETH"), np.diag(np.array([0.55, 0.7]) ** 2))
    lots = {"BTC": (TaxLot(1.0, 10_000.0, OLD), TaxLot(1.0, 50_000.0, NEW))}
    base = OptimizerSettings()
    settings = replace(base, constraints=replace(base.constraints, margin=False),
                       spot=SpotLegSettings(enabled=True, rates=TaxRates(0.3, 0.15), lots=lots,
                                            lot_method=LotMethod.HIFO))
    res = run_backtest(book, path, OptimizedFutures(risk, settings), collateral=NO_SWEEPS,
                       liquidation_penalty=0.01, pledged=True)
    assert bool(res.steps["liquidated"].iloc[1])
    assert (res.trades["kind"] == "collateral_sale").any()
    hand = _hand_tax(res.trades)
    for t in idx:
        got: Any = res.steps.loc[t, "tax_spot"]
        assert float(got) == pytest.approx(hand.get(t, 0.0), abs=0.01)
    assert float(res.steps["tax"].sum()) == pytest.approx(
        float((res.steps["tax_spot"] + res.steps["tax_futures"]).sum()), abs=1e-9)


def test_the_nav_after_a_forced_sale_counts_its_tax() -> None:
    """The same crash with a policy that does not trade afterwards (``NoRebalance``; the tax of
    the replay's lots from ``tax=``): the step's NAV is the valuation after the forced sale's tax
    left (or, a loss, came back to) the cash. By hand from the step's own columns: NAV = cash +
    spot value + the futures' unrealised PnL (none left after the liquidation), and the sale's
    tax is in that cash."""
    flat = MarginTiers.flat(max_leverage=20.0, mmr=0.005)
    perp = FuturesContract("ETH-PERP", "ETH", lot_step=0.0, min_notional=0.0, tiers=flat)
    book = Book(assets=(SpotAsset("BTC", fee=0.05), SpotAsset("ETH", fee=0.05)), contracts=(perp,),
                spot={"BTC": 2.0, "ETH": 0.0}, targets={"BTC": 0.6, "ETH": 0.4}, cash=0.0,
                pledged={"BTC": 0.9}, futures={"ETH-PERP": FuturesPosition(40.0, 2_500.0)})
    idx = pd.DatetimeIndex([T0, T0 + pd.Timedelta(days=1), T0 + pd.Timedelta(days=2)])
    spot = pd.DataFrame({"BTC": [60_000.0, 6_000.0, 6_000.0], "ETH": [2_500.0, 250.0, 250.0]},
                        index=idx)
    path = MarketPath(spot=spot, mark=pd.DataFrame({"ETH-PERP": spot["ETH"]}))
    lots = {"BTC": (TaxLot(1.0, 10_000.0, OLD), TaxLot(1.0, 50_000.0, NEW))}
    tax = SpotLegSettings(enabled=True, rates=TaxRates(0.3, 0.15), lots=lots,
                          lot_method=LotMethod.HIFO)
    res = run_backtest(book, path, NoRebalance(), collateral=NO_SWEEPS, liquidation_penalty=0.01,
                       pledged=True, tax=tax)
    day = res.steps.iloc[1]
    assert bool(day["liquidated"]) and float(day["tax_spot"]) != 0.0
    sales = res.trades[res.trades["kind"] == "collateral_sale"]
    held_btc = 2.0 + float(sales["quantity"].sum())  # a sale is a negative quantity
    assert held_btc < 2.0  # pledged BTC was sold
    assert float(day["nav"]) == pytest.approx(float(day["cash"]) + held_btc * 6_000.0, abs=1e-6)
