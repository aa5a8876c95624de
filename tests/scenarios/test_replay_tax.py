"""Taxes in the replay (issue 11, spot leg with tax lots; ``scenarios.replay_tax``).

Hand cases (rates 30% short-term, 15% long-term after 365 days, BTC lots L1 = 1.0 at 20,000 bought
2023-01-01 (long-term in 2025) and L2 = 1.0 at 60,000 bought 2024-10-01 (short-term)):

=====  =======  ==========  ====================================  ====================================
step   BTC      target      HIFO tax (USD)                        FIFO tax (USD)
=====  =======  ==========  ====================================  ====================================
0      50,000   hold 2.0    0                                     0
1      55,000   sell 0.5    L2: 0.30 x (55k - 60k) x 0.5 = -750   L1: 0.15 x 35k x 0.5 = 2,625
2      45,000   sell 1.0    L2: 0.30 x -15k x 0.5 = -2,250,       L1: 0.15 x 25k x 0.5 = 1,875,
                            L1: 0.15 x 25k x 0.5 = 1,875: -375    L2: 0.30 x -15k x 0.5 = -2,250: -375
3      50,000   buy 1.0     0 (a new lot L3 = 1.0 at 50,000)      0 (L3 likewise)
4      52,000   sell 1.0    L3 first: 0.30 x 2k x 1.0 = 600       L2 0.5: 0.30 x -8k x 0.5 = -1,200,
                                                                  L3 0.5: 0.30 x 2k x 0.5 = 300: -900
=====  =======  ==========  ====================================  ====================================

cumulative: HIFO -525, FIFO 1,350. Futures tax at 30%: a short BTC perp of 1 BTC opened at 50,000 and
closed at 45,000 realises +5,000 (tax 1,500); a long opened at 47,000 and closed at 46,000 realises
-1,000 (credit -300). The optimiser's hybrid policy in the replay: the sale it decides realises
exactly the tax its solution reports (``Solution.spot_costs.tax`` = ``tax_optimiser`` under the
tax-optimal "specific" method = models.tax.realised_tax), to the cent. NAV identity over a long
synthetic run with the spot leg and taxes on: NAV change = spot PnL + futures PnL - costs -
funding - tax, to 1e-9 of NAV per step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from models.book import Book
from models.instruments import FuturesContract, MarginTiers, SpotAsset
from models.market import MarketSnapshot
from models.risk import RiskModel
from models.synthetic import generate_history
from models.tax import LotMethod, TaxLot, TaxRates, realised_tax
from optimizer.policies import OptimizedFutures, Policy, TargetHoldings, current_holdings
from optimizer.rebalance import Rebalancer
from optimizer.settings import (
    ClusterBand,
    ConstraintSettings,
    OptimizerSettings,
    SpotLegSettings,
)
from optimizer.spot_data import check_lots
from scenarios.collateral import NO_SWEEPS
from scenarios.market_path import MarketPath
from scenarios.metrics import compute_metrics
from scenarios.replay import run_backtest
from scenarios.replay_state import ReplayState
from scenarios.replay_tax import TAX_COLUMNS, ReplayTax, book_lots

D0 = pd.Timestamp("2025-01-01", tz="UTC")
RATES = TaxRates(short_term=0.30, long_term=0.15)


def hand_rate(lot: TaxLot, when: datetime) -> float:
    """The rate of ``lot`` sold on ``when``, by hand: long-term after more than 365 days."""
    return 0.15 if (when - lot.acquired).total_seconds() > 365 * 86400 else 0.30
L1 = TaxLot(1.0, 20_000.0, datetime(2023, 1, 1, tzinfo=UTC))
L2 = TaxLot(1.0, 60_000.0, datetime(2024, 10, 1, tzinfo=UTC))
PRICES = [50_000.0, 55_000.0, 45_000.0, 50_000.0, 52_000.0]
PLAN = {1: 1.5, 2: 0.5, 3: 1.5, 4: 0.5}  # BTC held after each step's trade
FLAT = MarginTiers.flat(max_leverage=20.0, mmr=0.005)
IDENTITY_COSTS = ["fee_spot", "slippage_spot", "fee_futures", "slippage_futures", "funding",
                  "liquidation_penalty", "sweep_fees", "tax"]


class Script(Policy):
    """Targets given by step index: BTC spot quantities and futures notionals (USD)."""

    name = "script"

    def __init__(self, index: pd.Index, spot: Mapping[int, float],
                 futures: Mapping[int, float] | None = None, contract: str = "BTC-PERP") -> None:
        self.step = {t: k for k, t in enumerate(index)}
        self.spot, self.futures, self.contract = spot, futures or {}, contract

    def __call__(self, book: Book, market: MarketSnapshot, t: pd.Timestamp) -> TargetHoldings:
        k = self.step[t]
        held = current_holdings(book, market)
        spot = {**held.spot, "BTC": self.spot[k]} if k in self.spot else held.spot
        fut = {**held.futures, self.contract: self.futures[k]} if k in self.futures else held.futures
        return TargetHoldings(spot=spot, futures=fut)


def spot_book() -> tuple[Book, MarketPath]:
    book = Book(assets=(SpotAsset("BTC", fee=0.001),), contracts=(), spot={"BTC": 2.0},
                targets={"BTC": 1.0}, cash=0.0)
    idx = pd.date_range(D0, periods=len(PRICES), freq="D")
    return book, MarketPath(spot=pd.DataFrame({"BTC": PRICES}, index=idx))


def tax_of(method: LotMethod, futures_rate: float | None = None) -> SpotLegSettings:
    rates = TaxRates(0.30, 0.15, futures=futures_rate)
    return SpotLegSettings(rates=rates, lots={"BTC": (L1, L2)}, lot_method=method)


def assert_nav_identity(steps: pd.DataFrame, rel: float = 1e-9, usd: float = 1e-9) -> None:
    """nav_t - nav_{t-1} = spot_pnl + futures_pnl - costs - funding - tax, per step: within
    ``usd`` USD and ``rel`` of the NAV."""
    flows = (steps["spot_pnl"] + steps["futures_pnl"] - steps[IDENTITY_COSTS].sum(axis=1)
             + steps["insurance_fund"])
    gap = (steps["nav"].diff() - flows).iloc[1:].abs()
    assert float(gap.max()) <= usd
    assert float((gap / steps["nav"].abs().iloc[1:]).max()) <= rel


@pytest.mark.parametrize(("method", "hand"), [
    (LotMethod.HIFO, [0.0, -750.0, -375.0, 0.0, 600.0]),
    (LotMethod.FIFO, [0.0, 2_625.0, -375.0, 0.0, -900.0]),
])
def test_spot_sales_pay_the_hand_computed_tax(method: LotMethod, hand: list[float]) -> None:
    book, path = spot_book()
    res = run_backtest(book, path, Script(path.spot.index, PLAN), tax=tax_of(method))
    s = res.steps
    assert list(s.columns[-len(TAX_COLUMNS):]) == TAX_COLUMNS
    assert [round(float(x), 2) for x in s["tax_spot"]] == hand
    assert [round(float(x), 2) for x in s["tax"]] == hand
    assert round(float(s["tax_cumulative"].iloc[-1]), 2) == round(sum(hand), 2)
    assert float(s["tax_futures"].abs().sum()) == 0.0
    # the same figures from models.tax.realised_tax, lot by lot, the bought lot added at 50,000
    lots: list[TaxLot] = [L1, L2]
    held = 2.0
    for k, px in enumerate(PRICES):
        q = PLAN.get(k, held)
        when = path.spot.index[k].to_pydatetime()
        if q < held:
            t, lots = realised_tax(lots, held - q, method, px, when, RATES)
            assert s["tax_spot"].iloc[k] == pytest.approx(t, abs=5e-3)
        elif q > held:
            lots = [*lots, TaxLot(q - held, px, when)]
        held = q
        # the liability left: every remaining lot sold at this close, rate by holding period
        owed = sum(lot.quantity * hand_rate(lot, when) * (px - lot.cost_basis) for lot in lots)
        assert s["tax_deferred"].iloc[k] == pytest.approx(owed, abs=5e-3)
    # paid from cash: the untaxed replay differs by the cumulative tax alone
    untaxed = run_backtest(book, path, Script(path.spot.index, PLAN)).steps
    assert not set(TAX_COLUMNS) & set(untaxed.columns)
    np.testing.assert_allclose(untaxed["cash"] - s["cash"], s["tax_cumulative"], atol=1e-8)
    np.testing.assert_allclose(untaxed["nav"] - s["nav"], s["tax_cumulative"], atol=1e-8)
    assert_nav_identity(s)
    m = compute_metrics(res)
    scale = float(s["nav"].mean()) * m.years
    assert m.tax_bps == pytest.approx(1e4 * sum(hand) / scale, rel=1e-9)
    assert m.total_cost_bps == pytest.approx(
        m.fees_bps + m.funding_bps + m.penalty_bps + m.sweep_cost_bps + m.tax_bps, rel=1e-12)


def futures_book() -> tuple[Book, MarketPath]:
    perp = FuturesContract("BTC-PERP", "BTC", taker_fee=0.0, lot_step=0.0, min_notional=0.0,
                           tiers=FLAT)
    book = Book(assets=(SpotAsset("BTC"),), contracts=(perp,), spot={"BTC": 2.0},
                targets={"BTC": 1.0}, cash=100_000.0)
    idx = pd.date_range(D0, periods=4, freq="D")
    px = [50_000.0, 45_000.0, 47_000.0, 46_000.0]
    return book, MarketPath(spot=pd.DataFrame({"BTC": px}, index=idx),
                            half_spread=pd.Series({"BTC-PERP": 0.0}))


def test_realised_futures_pnl_is_taxed_with_losses_credited() -> None:
    book, path = futures_book()
    plan = {0: -50_000.0, 1: 0.0, 2: 47_000.0, 3: 0.0}  # short 1 BTC, close; long 1 BTC, close
    policy = Script(path.spot.index, {}, plan)
    res = run_backtest(book, path, policy, tax=tax_of(LotMethod.HIFO, 0.30), collateral=NO_SWEEPS)
    s = res.steps
    # +5,000 realised at step 1 (30%: 1,500), -1,000 at step 3 (credit -300)
    assert [round(float(x), 2) for x in s["tax_futures"]] == [0.0, 1_500.0, 0.0, -300.0]
    assert [round(float(x), 2) for x in s["futures_pnl"]] == [0.0, 5_000.0, 0.0, -1_000.0]
    assert round(float(s["tax_cumulative"].iloc[-1]), 2) == 1_200.0
    assert float(s["tax_spot"].abs().sum()) == 0.0
    assert_nav_identity(s)
    # no futures rate in [tax]: the short-term rate (30% here), as the book file documents and
    # the optimiser prices it (it went untaxed); a futures rate of 0: no futures tax
    policy = Script(path.spot.index, {}, plan)
    default = run_backtest(book, path, policy, tax=tax_of(LotMethod.HIFO),
                           collateral=NO_SWEEPS).steps
    assert [round(float(x), 2) for x in default["tax_futures"]] == [0.0, 1_500.0, 0.0, -300.0]
    policy = Script(path.spot.index, {}, plan)
    off = run_backtest(book, path, policy, tax=tax_of(LotMethod.HIFO, 0.0),
                       collateral=NO_SWEEPS).steps
    assert float(off["tax"].abs().sum()) == 0.0


def test_unrealised_futures_pnl_is_not_taxed() -> None:
    book, path = futures_book()
    policy = Script(path.spot.index, {}, {0: -50_000.0})  # opened, never closed
    s = run_backtest(book, path, policy, tax=tax_of(LotMethod.HIFO, 0.30),
                     collateral=NO_SWEEPS).steps
    assert float(s["tax"].abs().sum()) == 0.0 and float(s["futures_pnl"].abs().sum()) > 0


# ---------------------------------------------------------------- the optimiser's spot leg


def two_asset() -> tuple[Book, RiskModel]:
    """2 BTC at 50,000 and 20 ETH at 2,500 (V = 150,000), targets 50/50, as in the optimiser's
    hand case (tests/optimizer/test_spot_leg.py)."""
    assets = (SpotAsset("BTC", fee=0.001), SpotAsset("ETH", fee=0.001))
    contracts = (FuturesContract("BTC-PERP", "BTC", taker_fee=0.0004),
                 FuturesContract("ETH-PERP", "ETH", taker_fee=0.0004))
    book = Book(assets=assets, contracts=contracts, spot={"BTC": 2.0, "ETH": 20.0},
                targets={"BTC": 0.5, "ETH": 0.5}, cash=100_000.0)
    cov = np.array([[0.36, 0.25], [0.25, 0.49]])
    risk = RiskModel.from_covariance(["BTC", "ETH"], cov)
    return book, RiskModel(risk.symbols, risk.loadings, np.array([0.01, 0.01]))


BTC_LOTS = (TaxLot(1.0, 20_000.0, datetime(2022, 6, 1, tzinfo=UTC)),   # long-term: 4,500/BTC
            TaxLot(1.0, 48_000.0, datetime(2024, 9, 1, tzinfo=UTC)))   # short-term: 600/BTC
ETH_LOTS = (TaxLot(20.0, 2_000.0, datetime(2023, 1, 1, tzinfo=UTC)),)


def capped(method: LotMethod) -> OptimizerSettings:
    cons = ConstraintSettings(caps_usd={"BTC-PERP": 10_000.0},
                              clusters=(ClusterBand("btc_on_target", ("BTC",), 0.0),))
    spot = SpotLegSettings(enabled=True, rates=RATES, lots={"BTC": BTC_LOTS, "ETH": ETH_LOTS},
                           lot_method=method)
    return OptimizerSettings(constraints=cons, spot=spot, round_lots=False)


class Recording(OptimizedFutures):
    """The optimiser with its full solution kept per call."""

    def __init__(self, *args: object, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.targets: list[TargetHoldings] = []
        self.lots_seen: list[Mapping[str, object] | None] = []

    def __call__(self, book: Book, market: MarketSnapshot, t: pd.Timestamp, *,
                 lots: Mapping[str, Sequence[TaxLot]] | None = None,
                 futures_gains: Mapping[str, float] | None = None) -> TargetHoldings:
        out = super().__call__(book, market, t, lots=lots, futures_gains=futures_gains)
        self.targets.append(out)
        self.lots_seen.append(lots)
        return out


@pytest.mark.parametrize("report", [True, False])
def test_optimiser_sale_in_the_replay_pays_the_solutions_tax(report: bool) -> None:
    book, risk = two_asset()
    settings = capped(LotMethod.SPECIFIC)
    idx = pd.date_range(D0, periods=3, freq="D")
    path = MarketPath(spot=pd.DataFrame({"BTC": 50_000.0, "ETH": 2_500.0}, index=idx),
                      half_spread=pd.Series({"BTC-PERP": 1e-4, "ETH-PERP": 1e-4}))
    policy = Recording(risk, settings, report=True) if report else Recording(risk, settings)
    res = run_backtest(book, path, policy, collateral=NO_SWEEPS)  # tax from the policy's [tax]
    s = res.steps
    # step 0: 0.3 BTC sold from the 48,000 lot: 0.30 x 2,000 x 0.3 = 180.00 USD
    assert round(float(s["tax_spot"].iloc[0]), 2) == 180.00
    sold = res.trades[(res.trades["kind"] == "spot") & (res.trades["symbol"] == "BTC")]
    assert float(sold["quantity"].iloc[0]) == pytest.approx(-0.3, abs=1e-7)
    ref, left = realised_tax(BTC_LOTS, 0.3, LotMethod.SPECIFIC, 50_000.0, D0.to_pydatetime(), RATES)
    assert round(ref, 2) == 180.00
    if report:
        sol = policy.targets[0].solution
        assert sol is not None and sol.spot_costs is not None
        assert round(sol.spot_costs.tax, 2) == round(sol.spot_costs.tax_optimiser, 2) == 180.00
        for k, target in enumerate(policy.targets):  # every step: replay tax = solution tax
            assert target.solution is not None
            costs = target.solution.spot_costs
            assert costs is not None
            assert round(float(s["tax_spot"].iloc[k]), 2) == round(costs.tax, 2)
    # the policy saw the lots as they stood: after step 0, the 48k lot cut to 0.7 BTC
    assert policy.lots_seen[0] is not None and policy.lots_seen[1] is not None
    btc1 = policy.lots_seen[1]["BTC"]
    assert isinstance(btc1, tuple)
    assert [lot.cost_basis for lot in btc1] == [lot.cost_basis for lot in left] == [20_000.0, 48_000.0]
    assert [lot.quantity for lot in btc1] == pytest.approx([lot.quantity for lot in left])
    assert btc1[1].quantity == pytest.approx(0.7, abs=1e-7)
    # the policy's own settings are untouched and one compiled problem served every step
    assert policy.settings.spot.lots["BTC"] == BTC_LOTS
    assert len(policy.rebalancer._problems) == 1
    assert_nav_identity(s)


def test_growing_lots_reuse_the_compiled_problem() -> None:
    """A replay adds a lot per spot buy: the tax pieces grow, the compiled problem is re-used
    (padded pieces; a power of two when it must grow) and the positions equal a fresh solve."""
    book, risk = two_asset()
    market = MarketSnapshot(time=D0, spot={"BTC": 50_000.0, "ETH": 2_500.0},
                            mark={"BTC-PERP": 50_000.0, "ETH-PERP": 2_500.0},
                            half_spread={"BTC-PERP": 1e-4, "ETH-PERP": 1e-4},
                            spot_half_spread={"BTC": 1e-4, "ETH": 1e-4})
    base = capped(LotMethod.HIFO)
    rb = Rebalancer()
    counts = []
    for n in (2, 3, 2, 3, 4, 5):
        lots = tuple(TaxLot(2.0 / n, 20_000.0 + 7_000.0 * j, datetime(2024, 1 + j, 1, tzinfo=UTC))
                     for j in range(n))
        policy = OptimizedFutures(risk, base)
        policy.rebalancer = rb
        got = policy(book, market, D0, lots={"BTC": lots, "ETH": ETH_LOTS})
        fresh = OptimizedFutures(risk, base)(book, market, D0, lots={"BTC": lots, "ETH": ETH_LOTS})
        for a in ("BTC", "ETH"):
            assert got.spot[a] == pytest.approx(fresh.spot[a], abs=1e-6)
        for c in book.contract_symbols:
            assert got.futures[c] == pytest.approx(fresh.futures[c], abs=1e-3)
        counts.append(len(rb._problems))
    # 2 pieces, then 4 (3 rounded up), re-used for 3 and 4; 8 for 5
    assert counts == [1, 2, 2, 2, 2, 3]
    assert sorted(k.tax_pieces for k in rb._problems) == [2, 4, 8]


# ---------------------------------------------------------------- a long run, everything on


def test_nav_identity_over_a_long_run_with_the_spot_leg_and_taxes() -> None:
    hist = generate_history(("BTC", "ETH"), days=240, seed=11)
    cons = (FuturesContract("BTC-PERP", "BTC"), FuturesContract("ETH-PERP", "ETH"))
    path = MarketPath.from_synthetic(hist, cons)
    p0 = hist.spot.iloc[0]
    V = 200_000.0
    spot = {"BTC": 0.7 * V / float(p0["BTC"]), "ETH": 0.3 * V / float(p0["ETH"])}
    book = Book(assets=(SpotAsset("BTC"), SpotAsset("ETH")), contracts=cons, spot=spot,
                targets={"BTC": 0.5, "ETH": 0.5}, cash=40_000.0)
    t_lot = datetime(2022, 6, 1, tzinfo=UTC)
    lots = {"BTC": (TaxLot(spot["BTC"] / 2, 0.6 * float(p0["BTC"]), t_lot),
                    TaxLot(spot["BTC"] / 2, 1.1 * float(p0["BTC"]), datetime(2022, 12, 1, tzinfo=UTC))),
            "ETH": (TaxLot(spot["ETH"], 0.8 * float(p0["ETH"]), t_lot),)}
    rates = TaxRates(0.30, 0.15, futures=0.25)
    logp = np.log(hist.spot[["BTC", "ETH"]].to_numpy(dtype=float))
    risk = RiskModel.from_covariance(["BTC", "ETH"], np.cov(np.diff(logp, axis=0).T) * 365)
    settings = OptimizerSettings(
        constraints=ConstraintSettings(caps_usd={"BTC-PERP": 20_000.0, "ETH-PERP": 20_000.0}),
        spot=SpotLegSettings(enabled=True, rates=rates, lots=lots, lot_method=LotMethod.FIFO,
                             harvest_losses=True, cash_usd=5_000.0))
    policy = OptimizedFutures(risk, settings)
    res = run_backtest(book, path, policy)
    s = res.steps
    assert_nav_identity(s)
    spot_trades = res.trades[res.trades["kind"] == "spot"]
    assert len(spot_trades) > 0 and (spot_trades["quantity"] < 0).any()
    assert float(s["tax_spot"].abs().sum()) > 0 and float(s["tax_futures"].abs().sum()) > 0
    np.testing.assert_allclose(s["tax"], s["tax_spot"] + s["tax_futures"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(s["tax_cumulative"], s["tax"].cumsum(), rtol=0, atol=1e-9)
    # a lot per buy: the pieces grow, and the problem is compiled only when they double
    pieces = sorted(k.tax_pieces for k in policy.rebalancer._problems)
    assert pieces == [2 ** (j + 1) for j in range(len(pieces))]
    assert len(pieces) < len(s) / 20


def test_adding_to_a_position_realises_nothing_and_reductions_use_the_average_entry() -> None:
    """Short 0.5 BTC at 50,000; add 0.5 at 45,000 (average entry 47,500, nothing realised, where
    re-striking would realise +2,500); reduce to 0.5 at 47,000: (-1 + 0.5) x (47,000 - 47,500) =
    +250; close at 46,000: -0.5 x (46,000 - 47,500) = +750. Sum +1,000 = the PnL of the path
    (+2,500 - 2,000 + 500); at 30%: 0, 0, 75, 225."""
    book, path = futures_book()
    plan = {0: -25_000.0, 1: -45_000.0, 2: -23_500.0, 3: 0.0}
    res = run_backtest(book, path, Script(path.spot.index, {}, plan),
                       tax=tax_of(LotMethod.HIFO, 0.30), collateral=NO_SWEEPS)
    s = res.steps
    assert [round(float(x), 2) for x in s["tax_futures"]] == [0.0, 0.0, 75.0, 225.0]
    assert round(float(s["futures_pnl"].sum()), 2) == 1_000.0
    assert_nav_identity(s)
    # the deferred tax adds 30% of the PnL not yet realised against the average entry:
    # 0; -1 x (45,000 - 47,500) = 2,500 -> 750; -0.5 x (47,000 - 47,500) = 250 -> 75; closed: 0
    spot_only = run_backtest(book, path, Script(path.spot.index, {}, plan),
                             tax=tax_of(LotMethod.HIFO, 0.0), collateral=NO_SWEEPS).steps
    owed = (s["tax_deferred"] - spot_only["tax_deferred"]).round(2).tolist()
    assert owed == [0.0, 750.0, 75.0, 0.0]


def test_a_holding_sold_down_to_dust_follows_its_lots() -> None:
    """A sale that leaves 4.8e-9 XRP of an 18,181.8-unit lot: the books drop the lot as dust
    (models.tax) and the holding follows them to 0, where the residue made the next step's lot
    check refuse the replay ('lots add up to 0 units but the book holds 4.8e-09'). The tax is
    that of the whole lot: 15% of (0.6 - 0.5) x 18,181.8."""
    lot = TaxLot(18_181.81818181818, 0.5, datetime(2022, 1, 1, tzinfo=UTC))
    state = ReplayState(spot={"XRP": 4.8239598982e-09}, futures={}, cash=0.0,
                        lots={"XRP": (lot,)})
    market = MarketSnapshot(time=D0, spot={"XRP": 0.6}, mark={})
    paid = book_lots(ReplayTax(TaxRates(0.30, 0.15), LotMethod.FIFO), state, market)
    assert state.lots == {"XRP": ()} and state.spot["XRP"] == 0.0
    assert paid == pytest.approx(0.15 * 0.1 * 18_181.81818181818, rel=1e-9)
    check_lots(state.lots, state.spot, ["XRP"])  # the next step's check passes


# ---------------------------------------------------------------- a loss harvest: gross legs

#: Lots of the harvest case: HA 1 BTC at 20,000 two years old (long-term), HB 1 BTC at 70,000
#: three months old (short-term); rates 25% / 15%, BTC at 60,000.
HA = TaxLot(1.0, 20_000.0, datetime(2023, 1, 1, tzinfo=UTC))
HB = TaxLot(1.0, 70_000.0, datetime(2024, 10, 1, tzinfo=UTC))


class RoundTrip(Policy):
    """Step 0: sell 1 BTC and buy 1/3 back (a loss harvest, declared gross); then hold."""

    name = "round_trip"

    def __call__(self, book: Book, market: MarketSnapshot, t: pd.Timestamp) -> TargetHoldings:
        held = current_holdings(book, market)
        if t != D0:
            return held
        return TargetHoldings(spot={"BTC": held.spot["BTC"] - 1.0 + 1.0 / 3.0},
                              futures=held.futures, spot_gross={"BTC": (1.0, 1.0 / 3.0)})


@pytest.mark.parametrize(("method", "hand_tax", "hand_deferred"), [
    # HIFO sells HB: 0.25 x (60k - 70k) x 1 = -2,500; left HA (0.15 x 40k = 6,000) + the new lot (0)
    (LotMethod.HIFO, -2_500.0, 6_000.0),
    # FIFO sells HA: 0.15 x 40k x 1 = 6,000; left HB (0.25 x -10k = -2,500) + the new lot (0)
    (LotMethod.FIFO, 6_000.0, -2_500.0),
])
def test_a_declared_round_trip_sells_first_then_buys_a_new_lot(
        method: LotMethod, hand_tax: float, hand_deferred: float) -> None:
    """Old code: the net -2/3 BTC only (HIFO: -1,666.67 tax, 40 USD fees)."""
    book = Book(assets=(SpotAsset("BTC", fee=0.001),), contracts=(), spot={"BTC": 2.0},
                targets={"BTC": 1.0}, cash=0.0)
    idx = pd.date_range(D0, periods=2, freq="D")
    path = MarketPath(spot=pd.DataFrame({"BTC": [60_000.0, 60_000.0]}, index=idx))
    rates = TaxRates(0.25, 0.15)
    res = run_backtest(book, path, RoundTrip(), tax=SpotLegSettings(
        rates=rates, lots={"BTC": (HA, HB)}, lot_method=method), collateral=NO_SWEEPS)
    s = res.steps
    assert float(s["tax_spot"].iloc[0]) == pytest.approx(hand_tax, abs=1e-6)
    # fees on both legs: 0.001 x (60,000 + 20,000) = 80 USD; traded 80,000 USD
    assert float(s["fee_spot"].iloc[0]) == pytest.approx(80.0, abs=1e-9)
    assert float(s["traded_spot"].iloc[0]) == pytest.approx(80_000.0, abs=1e-6)
    legs = res.trades[res.trades["kind"] == "spot"]
    assert legs["quantity"].tolist() == pytest.approx([-1.0, 1.0 / 3.0])
    assert float(s["tax_deferred"].iloc[0]) == pytest.approx(hand_deferred, abs=1e-6)
    assert float(s["tax_spot"].iloc[1]) == 0.0
    # and the default 1 bp half spread on both: 8 USD
    assert float(s["slippage_spot"].iloc[0]) == pytest.approx(8.0, abs=1e-9)
    # cash: +60,000 - 20,000 - 80 fees - 8 half spread - tax
    assert float(s["cash"].iloc[0]) == pytest.approx(40_000.0 - 88.0 - hand_tax, abs=1e-6)
    assert_nav_identity(s)


HARVEST_BOOK = """
[book]
cash = 3000.0
targets_base = "invested"
[targets]
BTC = 0.10
ETH = 0.50
SOL = 0.40
[spot]
BTC = 2.0
ETH = 1.0
SOL = 10.0
[contract_defaults]
lot_step = 1e-8
min_notional = 0.0
leverage = 10.0
[market]
time = 2024-06-01T00:00:00Z
mark_from_spot = true
[market.spot]
BTC = 60000.0
ETH = 2500.0
SOL = 150.0
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
[solver]
spot_leg = true
[tax]
short_term = "25%"
long_term = "15%"
lot_method = "hifo"
harvest_losses = true
[[lots]]
asset = "BTC"
quantity = 1.0
cost_basis = 20000
acquired = 2022-06-01
[[lots]]
asset = "BTC"
quantity = 1.0
cost_basis = 70000
acquired = 2024-03-01
[[lots]]
asset = "ETH"
quantity = 1.0
cost_basis = 2000
acquired = 2023-01-01
[[lots]]
asset = "SOL"
quantity = 10.0
cost_basis = 100
acquired = 2023-01-01
"""


@pytest.mark.parametrize("report", [True, False])
def test_the_optimisers_loss_harvest_fills_gross_in_the_replay(report: bool, tmp_path: object) -> None:
    """V = 150,000 spot, BTC target 10%: the solution sells 1 BTC (60,000 USD, the 70,000 lot
    under HIFO: 0.25 x -10,000 = -2,500) and buys 1/3 BTC back (20,000 USD); ETH and SOL buy
    20,000 each. Fees 0.1% x (60k + 20k + 20k + 20k) = 120 USD. The old replay filled the net
    -2/3 BTC: tax -1,666.67, fees 80."""
    from pathlib import Path

    from fbr.config import load_book_file

    assert isinstance(tmp_path, Path)
    f = tmp_path / "harvest.toml"
    f.write_text(HARVEST_BOOK)
    cfg = load_book_file(f)
    idx = pd.date_range(cfg.market.time, periods=2, freq="D")
    path = MarketPath(spot=pd.DataFrame({a: cfg.market.spot_price(a)
                                         for a in cfg.book.asset_symbols}, index=idx))
    policy = Recording(cfg.risk, cfg.settings, report=report)
    res = run_backtest(cfg.book, path, policy, collateral=NO_SWEEPS)
    s = res.steps
    assert float(s["tax_spot"].iloc[0]) == pytest.approx(-2_500.0, abs=0.01)
    assert float(s["fee_spot"].iloc[0]) == pytest.approx(120.0, abs=0.01)
    btc = res.trades[(res.trades["kind"] == "spot") & (res.trades["symbol"] == "BTC")
                     & (res.trades["time"] == idx[0])]
    assert btc["quantity"].tolist() == pytest.approx([-1.0, 1.0 / 3.0], abs=1e-5)
    target = policy.targets[0]
    assert set(target.spot_gross) == {"BTC"}
    if report:
        sol = target.solution
        assert sol is not None and sol.spot_costs is not None
        assert float(s["tax_spot"].iloc[0]) == pytest.approx(sol.spot_costs.tax, abs=0.01)
        assert float(s["fee_spot"].iloc[0]) == pytest.approx(sol.spot_costs.fees, abs=0.01)
        # the replay charges the half spread the optimiser priced (1 bp of the 120,000 traded)
        assert float(s["slippage_spot"].iloc[0]) == pytest.approx(sol.spot_costs.spread, abs=0.01)
        assert float(s["slippage_spot"].iloc[0]) == pytest.approx(12.0, abs=0.01)
    assert_nav_identity(s)
