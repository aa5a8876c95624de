"""The backtester: replay a market path under a policy and record what the book does.

Per step t (UTC timestamps of ``MarketPath.spot``), see DESIGN.md "Backtest semantics":

1. **mark to market**: spot value at the new closes; futures unrealised PnL at the new marks (it
   lands in the futures wallet: wallet = cash + unrealised PnL);
2. **funding**: every settlement with timestamp in (t_prev, t] pays ``rate x notional`` at this
   step's mark: ``cash -= rate * notional`` for signed notional (longs pay when rate > 0). All the
   settlements in the interval are summed; nothing assumes three a day;
3. **margin check** (``models.margin.MarginModel.maintenance`` on |notional| against the collateral
   cash + unrealised PnL + haircut x pledged spot): below maintenance every futures position is
   closed at mark (PnL realised into cash) and ``liquidation_penalty x |notional|`` is taken from cash;
4. **policy** -> target holdings; trades fill at the close (spot) and at mark (futures). Spot fee:
   ``spot_fee`` (or each asset's ``SpotAsset.fee``) x |notional|; futures cost: the linear part of
   ``models.costs.CostModel`` (taker fee + half spread) plus its 3/2-power impact when an ADV is
   given. Futures trades go through ``Book.with_futures``; every cost is paid from cash.

The first timestamp only runs step 4 (no t_prev: settlements at or before it are ignored).

Cash: spot sales credit cash, purchases debit it, and fees, funding and penalties are paid from it,
so cash may go negative: a negative balance is a stablecoin debt (no interest), counted as such in
NAV, the wallet and the collateral (``Book`` allows it; a book file's cash must be >= 0).

No lot rounding, no spot spread or impact, no collateral sweeps between spot and wallet: groundwork.
Same inputs -> identical results: everything iterates in book order, nothing is random.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from models.book import Book, FuturesPosition
from models.costs import CostModel
from models.errors import ValidationError
from models.instruments import ContractKind, FuturesContract
from models.margin import MarginModel, margin_state
from models.market import MarketSnapshot
from models.synthetic import SyntheticHistory
from optimizer.policies import Policy

#: Trailing window (steps) of the underlying's volatility used by the impact term.
IMPACT_VOL_WINDOW = 30
#: Two contract quantities closer than this (relative) are the same position: no trade.
QTY_RTOL = 1e-9

# ---------------------------------------------------------------------------------------------
# Market path


def _check_index(name: str, index: pd.Index) -> None:
    if not isinstance(index, pd.DatetimeIndex) or index.tz is None:
        raise ValidationError(f"market_path.{name}", "is not indexed by tz-aware timestamps",
                              "index it by a UTC pandas DatetimeIndex")
    if not index.is_monotonic_increasing or not index.is_unique:
        raise ValidationError(f"market_path.{name}", "has an unsorted or repeated index",
                              "sort the index and drop duplicate timestamps")


def _check_finite(name: str, frame: pd.DataFrame) -> None:
    if not np.all(np.isfinite(frame.to_numpy(dtype=float))):
        raise ValidationError(f"market_path.{name}", "has missing or non-finite values",
                              "align the series on their common span and drop or fill the gaps")


@dataclass(frozen=True)
class MarketPath:
    """Aligned market history for a backtest.

    ``spot``: closes (USD), index = the steps (tz-aware UTC), one column per asset symbol.
    ``mark``: mark closes per contract symbol on the same index; a contract without a column is
    marked at its underlying's spot. ``funding``: rate per settlement (fraction, positive: longs pay)
    per contract symbol, indexed by settlement timestamps (irregular allowed; a contract without a
    column pays none). ``half_spread`` (fraction) and ``adv`` (USD/day) per contract symbol; a missing
    half spread defaults to 1 bp, no ADV means no impact. ``synthetic`` labels generated data.
    """

    spot: pd.DataFrame
    mark: pd.DataFrame | None = None
    funding: pd.DataFrame | None = None
    half_spread: pd.Series | None = None
    adv: pd.Series | None = None
    synthetic: bool = False

    def __post_init__(self) -> None:
        _check_index("spot", self.spot.index)
        if len(self.spot.index) < 1:
            raise ValidationError("market_path.spot", "is empty", "give at least one close")
        _check_finite("spot", self.spot)
        if self.mark is not None:
            if not self.mark.index.equals(self.spot.index):
                raise ValidationError("market_path.mark", "is not on the spot index",
                                      "align marks to the spot closes (reindex them)")
            _check_finite("mark", self.mark)
        if self.funding is not None:
            _check_index("funding", self.funding.index)
            _check_finite("funding", self.funding)

    @staticmethod
    def from_synthetic(hist: SyntheticHistory, contracts: Sequence[FuturesContract],
                       *, with_adv: bool = True) -> MarketPath:
        """A path from the embedded generator: daily spot; per contract the synthetic perp mark
        (the dated-future carry of ``SyntheticHistory.snapshot`` is not modelled: dated futures are
        marked at the perp mark and pay no funding); perps pay the 8 h funding of their underlying
        at its 8 h settlement times; half spread and (``with_adv``) ADV of the underlying."""
        for c in contracts:
            if c.underlying not in hist.spot.columns:
                raise ValidationError(f"contracts.{c.symbol}.underlying",
                                      f"is {c.underlying!r}, not in the synthetic history",
                                      f"use one of {list(hist.symbols)[:10]}")
        syms = [c.symbol for c in contracts]
        mark = pd.DataFrame({c.symbol: hist.mark[c.underlying] for c in contracts},
                            index=hist.spot.index, columns=syms, dtype=float)
        perps = [c for c in contracts if c.kind == ContractKind.PERPETUAL]
        funding = pd.DataFrame({c.symbol: hist.funding[c.underlying] for c in perps},
                               index=hist.funding.index, columns=[c.symbol for c in perps], dtype=float)
        half = pd.Series({c.symbol: hist.half_spread[c.underlying] for c in contracts}, dtype=float)
        adv = (pd.Series({c.symbol: hist.adv_usd[c.underlying] for c in contracts}, dtype=float)
               if with_adv else None)
        return MarketPath(spot=hist.spot.astype(float), mark=mark, funding=funding, half_spread=half,
                          adv=adv, synthetic=True)


# ---------------------------------------------------------------------------------------------
# Result


@dataclass(frozen=True)
class BacktestResult:
    """What a backtest recorded (all USD unless said otherwise; one row per step, end of step).

    ``steps`` columns: nav, base (the target base V), cash, wallet (cash + unrealised PnL),
    collateral, spot_pnl, futures_pnl (mark-to-market of held positions), fee_spot, fee_futures
    (exchange fee), slippage_futures (half spread + impact), funding (paid, > 0 is a cost),
    liquidation_penalty, margin_ratio (maintenance / collateral at the margin check, before the
    policy), margin_ratio_end (after the trades), liquidated (bool), traded_spot and
    traded_futures (gross |notional| traded).
    Identity per step: nav_t - nav_{t-1} = spot_pnl + futures_pnl - fee_spot - fee_futures
    - slippage_futures - funding - liquidation_penalty.
    ``spot_value`` (per asset), ``futures_notional`` (signed, per contract) and ``weights``
    (effective weights per asset) are frames on the same index. ``trades`` and ``liquidations``
    list events (one row each). ``targets``: w* per asset; ``policy``: the policy's name.
    """

    steps: pd.DataFrame
    spot_value: pd.DataFrame
    futures_notional: pd.DataFrame
    weights: pd.DataFrame
    trades: pd.DataFrame
    liquidations: pd.DataFrame
    targets: pd.Series
    spot_returns: pd.DataFrame
    policy: str

    def frames(self) -> dict[str, pd.DataFrame]:
        """Every recorded frame by name (for comparisons and export)."""
        return {"steps": self.steps, "spot_value": self.spot_value,
                "futures_notional": self.futures_notional, "weights": self.weights,
                "trades": self.trades, "liquidations": self.liquidations,
                "spot_returns": self.spot_returns}


TRADE_COLUMNS = ["time", "kind", "symbol", "quantity", "price", "notional", "fee", "slippage"]
LIQUIDATION_COLUMNS = ["time", "contract", "contracts", "mark", "notional", "penalty"]

# ---------------------------------------------------------------------------------------------
# Engine


def _row(frame: pd.DataFrame, pos: int) -> dict[str, float]:
    values = frame.to_numpy(dtype=float)[pos]
    return {str(c): float(v) for c, v in zip(frame.columns, values, strict=True)}


def _resolved_marks(book: Book, path: MarketPath) -> pd.DataFrame:
    """Mark closes per contract in book order (the underlying's spot where the path has none)."""
    cols: dict[str, pd.Series] = {}
    for c in book.contracts:
        if path.mark is not None and c.symbol in path.mark.columns:
            cols[c.symbol] = path.mark[c.symbol].astype(float)
        elif c.underlying in path.spot.columns:
            cols[c.symbol] = path.spot[c.underlying].astype(float)
        else:
            raise ValidationError(f"market_path.mark.{c.symbol}", "is missing and so is the "
                                  f"spot of {c.underlying}", "give a mark or a spot series")
    return pd.DataFrame(cols, index=path.spot.index, columns=book.contract_symbols, dtype=float)


def _funding_matrix(book: Book, path: MarketPath) -> tuple[np.ndarray, np.ndarray]:
    """Settlement times (int64 ns) and rates (S x M, book contract order; 0 where none)."""
    if path.funding is None or len(path.funding.index) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros((0, len(book.contracts)))
    f = path.funding
    rates = np.zeros((len(f.index), len(book.contracts)))
    for j, c in enumerate(book.contracts):
        if c.symbol in f.columns:
            rates[:, j] = f[c.symbol].to_numpy(dtype=float)
    times = pd.DatetimeIndex(f.index).tz_convert("UTC").as_unit("ns").asi8
    return times, rates


def _impact_vol(book: Book, path: MarketPath) -> pd.DataFrame:
    """Daily vol per contract's underlying: trailing std of log returns over the last
    ``IMPACT_VOL_WINDOW`` steps (data up to and including t), scaled to one day by the median step."""
    logret = pd.DataFrame(np.log(path.spot.to_numpy(dtype=float)), index=path.spot.index,
                          columns=path.spot.columns).diff()
    vol = logret.rolling(IMPACT_VOL_WINDOW, min_periods=2).std()
    if len(path.spot.index) > 1:
        step_days = median_step_days(pd.DatetimeIndex(path.spot.index))
        vol = vol / math.sqrt(step_days)
    return pd.DataFrame({c.symbol: vol[c.underlying] for c in book.contracts},
                        index=path.spot.index, columns=book.contract_symbols, dtype=float)


def median_step_days(index: pd.DatetimeIndex) -> float:
    """Median spacing of ``index`` in days (whatever the index's time unit); needs two stamps."""
    ns = index.as_unit("ns").asi8
    return float(np.median(np.diff(ns))) / 86400e9


@dataclass
class _State:
    """Mutable accounting state: spot quantities, open positions and the signed wallet cash."""

    spot: dict[str, float]
    futures: dict[str, FuturesPosition]
    cash: float


def _view(book: Book, state: _State) -> Book:
    """The book as it stands: its spot, positions and signed wallet cash."""
    return replace(book, spot=dict(state.spot), futures=dict(state.futures), cash=state.cash)


@dataclass(frozen=True)
class _Valuation:
    """The book valued at one market (USD)."""

    spot_values: np.ndarray
    notional: np.ndarray
    weights: np.ndarray
    upnl: float
    wallet: float
    nav: float
    collateral: float
    base: float


def _value(book: Book, state: _State, market: MarketSnapshot) -> _Valuation:
    """Valuation through ``Book``'s own methods."""
    view = _view(book, state)
    spot_values = view.spot_values(market)
    upnl = view.unrealized_pnl(market)
    notional = view.futures_notional(market)
    wallet = view.wallet_balance(market)
    nav = view.nav(market)
    base = view.base(market)
    exposure = spot_values + view.exposure_matrix() @ notional
    weights = exposure / base if base != 0 else np.full(len(spot_values), np.nan)
    return _Valuation(spot_values=spot_values, notional=notional, weights=weights, upnl=upnl,
                      wallet=wallet, nav=nav, collateral=view.collateral(market), base=base)


def _rebalance_futures(book: Book, state: _State, market: MarketSnapshot,
                       contracts: Mapping[str, float]) -> None:
    """Move positions to ``contracts`` through ``Book.with_futures``: changed positions are re-struck
    at mark and their PnL realised into cash."""
    moved = _view(book, state).with_futures(contracts, market)
    state.cash = moved.cash
    state.futures = dict(moved.futures)


def run_backtest(book: Book, history: MarketPath, policy: Policy, *,
                 liquidation_penalty: float = 0.01, spot_fee: float | None = None) -> BacktestResult:
    """Replay ``history`` from ``book`` under ``policy`` (see the module docstring for the steps).

    ``liquidation_penalty``: fraction of |notional| charged when positions are liquidated;
    ``spot_fee``: spot fee as a fraction of notional for every asset (default: each asset's
    ``SpotAsset.fee``, 0.001 unless set). Policies with state (calendar triggers) should be fresh.
    """
    if not (math.isfinite(liquidation_penalty) and 0 <= liquidation_penalty < 1):
        raise ValidationError("liquidation_penalty", f"is {liquidation_penalty}",
                              "give a fraction of notional in [0, 1)")
    if spot_fee is not None and not (math.isfinite(spot_fee) and 0 <= spot_fee < 1):
        raise ValidationError("spot_fee", f"is {spot_fee}", "give a fraction of notional in [0, 1)")
    missing = [a for a in book.asset_symbols if a not in history.spot.columns]
    if missing:
        raise ValidationError("market_path.spot", f"has no prices for {missing}",
                              "give a spot column for every asset of the book")

    assets = book.asset_symbols
    cons = book.contract_symbols
    index = history.spot.index
    spot_px = history.spot[assets].astype(float)
    marks = _resolved_marks(book, history)
    settle_t, settle_r = _funding_matrix(book, history)
    step_ns = pd.DatetimeIndex(index).tz_convert("UTC").as_unit("ns").asi8
    with_impact = history.adv is not None
    vol = _impact_vol(book, history) if with_impact else None
    half = {c: float(history.half_spread[c]) for c in cons
            if history.half_spread is not None and c in history.half_spread.index}
    adv = {c: float(history.adv[c]) for c in cons
           if history.adv is not None and c in history.adv.index}
    margin = MarginModel.from_contracts(book.contracts)
    fee_spot_rate = np.array([spot_fee if spot_fee is not None else a.fee for a in book.assets])
    con_by_sym = {c.symbol: c for c in book.contracts}

    state = _State(spot={a: float(book.spot.get(a, 0.0)) for a in assets},
                   futures={s: p for s, p in book.futures.items() if p.contracts != 0},
                   cash=float(book.cash))

    rows: list[dict[str, float | bool]] = []
    spot_rows: list[np.ndarray] = []
    fut_rows: list[np.ndarray] = []
    w_rows: list[np.ndarray] = []
    trades: list[dict[str, object]] = []
    liqs: list[dict[str, object]] = []
    prev_market: MarketSnapshot | None = None

    for k, t in enumerate(index):
        ts = pd.Timestamp(t)
        # the latest funding rate at or before t: the policy's view of carry
        n_settled = int(np.searchsorted(settle_t, step_ns[k], side="right"))
        last_rate = settle_r[n_settled - 1] if n_settled > 0 else np.zeros(len(cons))
        market = MarketSnapshot(time=ts, spot=_row(spot_px, k), mark=_row(marks, k),
                                funding={c: float(last_rate[j]) for j, c in enumerate(cons)},
                                half_spread=half, adv=adv, synthetic=history.synthetic)
        row: dict[str, float | bool] = dict.fromkeys(
            ("spot_pnl", "futures_pnl", "fee_spot", "fee_futures", "slippage_futures", "funding",
             "liquidation_penalty", "traded_spot", "traded_futures"), 0.0)
        row["liquidated"] = False
        if prev_market is None:
            first = _value(book, state, market)
            row["margin_ratio"] = margin_state(margin, first.notional, first.collateral).margin_ratio
        else:
            # (1) mark to market (positions and quantities as held since t_prev)
            before = _value(book, state, prev_market)
            now = _value(book, state, market)
            row["spot_pnl"] = float(now.spot_values.sum() - before.spot_values.sum())
            row["futures_pnl"] = now.upnl - before.upnl
            # (2) funding: every settlement in (t_prev, t], at this step's mark
            lo = int(np.searchsorted(settle_t, step_ns[k - 1], side="right"))
            if n_settled > lo:
                paid = float(settle_r[lo:n_settled].sum(axis=0) @ now.notional)
                state.cash -= paid
                row["funding"] = paid
            # (3) margin check against maintenance (the one margin engine)
            now = _value(book, state, market)
            ms = margin_state(margin, now.notional, now.collateral)
            row["margin_ratio"] = ms.margin_ratio
            if np.any(now.notional != 0) and now.collateral < ms.maintenance:
                per = liquidation_penalty * np.abs(now.notional)
                for j, c in enumerate(cons):
                    pos = state.futures.get(c)
                    if pos is not None and pos.contracts != 0:
                        liqs.append({"time": ts, "contract": c, "contracts": pos.contracts,
                                     "mark": market.mark_price(c),
                                     "notional": float(now.notional[j]), "penalty": float(per[j])})
                _rebalance_futures(book, state, market, dict.fromkeys(cons, 0.0))
                penalty = float(per.sum())
                state.cash -= penalty
                row["liquidation_penalty"] = penalty
                row["liquidated"] = True

        # (4) policy, then trades at the close (spot) and at mark (futures)
        target = policy(_view(book, state), market, ts)
        for i, a in enumerate(assets):
            q_new = float(target.spot.get(a, state.spot[a]))
            if not (math.isfinite(q_new) and q_new >= 0):
                raise ValidationError(f"policy.spot.{a}", f"is {q_new} at {ts}",
                                      "a policy must target finite spot quantities >= 0")
            dq = q_new - state.spot[a]
            if dq == 0:
                continue
            px = market.spot_price(a)
            fee = float(fee_spot_rate[i]) * abs(dq) * px
            state.cash -= dq * px + fee
            state.spot[a] = q_new
            row["fee_spot"] = float(row["fee_spot"]) + fee
            row["traded_spot"] = float(row["traded_spot"]) + abs(dq) * px
            trades.append({"time": ts, "kind": "spot", "symbol": a, "quantity": dq, "price": px,
                           "notional": dq * px, "fee": fee, "slippage": 0.0})

        new_q: dict[str, float] = {}
        dq_f = np.zeros(len(cons))
        trade_usd = np.zeros(len(cons))
        for j, c in enumerate(cons):
            con = con_by_sym[c]
            mark = market.mark_price(c)
            pos = state.futures.get(c)
            q_old = pos.contracts if pos is not None else 0.0
            x_new = float(target.futures.get(c, q_old * con.notional_per_contract(mark)))
            if not math.isfinite(x_new):
                raise ValidationError(f"policy.futures.{c}", f"is {x_new} at {ts}",
                                      "a policy must target finite futures notional (USD)")
            q_new = con.contracts_for(x_new, mark)
            if math.isclose(q_new, q_old, rel_tol=QTY_RTOL, abs_tol=0.0):
                continue  # the same position (notional round trip): no trade, no re-strike
            new_q[c] = q_new
            dq_f[j] = q_new - q_old
            trade_usd[j] = dq_f[j] * con.notional_per_contract(mark)
        if new_q:
            daily_vol = vol.to_numpy(dtype=float)[k] if vol is not None else np.zeros(len(cons))
            cost = CostModel.build(book.contracts, market, daily_vol)
            fee_j = cost.fee * np.abs(trade_usd)
            slip_j = cost.half_spread * np.abs(trade_usd)
            if with_impact:
                slip_j = slip_j + cost.impact * np.abs(trade_usd) ** 1.5
            _rebalance_futures(book, state, market, new_q)
            state.cash -= float(fee_j.sum()) + float(slip_j.sum())
            row["fee_futures"] = float(fee_j.sum())
            row["slippage_futures"] = float(slip_j.sum())
            row["traded_futures"] = float(np.abs(trade_usd).sum())
            for j, c in enumerate(cons):
                if c in new_q:
                    trades.append({"time": ts, "kind": "futures", "symbol": c,
                                   "quantity": float(dq_f[j]), "price": market.mark_price(c),
                                   "notional": float(trade_usd[j]), "fee": float(fee_j[j]),
                                   "slippage": float(slip_j[j])})

        end = _value(book, state, market)
        row["margin_ratio_end"] = margin_state(margin, end.notional, end.collateral).margin_ratio
        row.update(nav=end.nav, base=end.base, cash=state.cash, wallet=end.wallet,
                   collateral=end.collateral)
        rows.append(row)
        spot_rows.append(end.spot_values.astype(float))
        fut_rows.append(end.notional.astype(float))
        w_rows.append(end.weights.astype(float))
        prev_market = market

    order = ["nav", "base", "cash", "wallet", "collateral", "spot_pnl", "futures_pnl", "fee_spot",
             "fee_futures", "slippage_futures", "funding", "liquidation_penalty", "margin_ratio",
             "margin_ratio_end", "liquidated", "traded_spot", "traded_futures"]
    steps = pd.DataFrame(rows, index=index, columns=order)
    steps["liquidated"] = steps["liquidated"].astype(bool)
    return BacktestResult(
        steps=steps,
        spot_value=pd.DataFrame(np.array(spot_rows), index=index, columns=assets),
        futures_notional=pd.DataFrame(np.array(fut_rows).reshape(len(index), len(cons)),
                                      index=index, columns=cons),
        weights=pd.DataFrame(np.array(w_rows), index=index, columns=assets),
        trades=pd.DataFrame(trades, columns=TRADE_COLUMNS),
        liquidations=pd.DataFrame(liqs, columns=LIQUIDATION_COLUMNS),
        targets=pd.Series(book.target_vector(), index=assets, dtype=float),
        spot_returns=spot_px / spot_px.shift(1) - 1.0,
        policy=str(getattr(policy, "name", type(policy).__name__)),
    )
