"""TEST-ONLY frozen copy of scenarios/replay.py (issue 11, build item 1) before it was split into
small steps: the reference that tests/scenarios/test_replay_steps.py compares the refactored
``scenarios.replay.run_backtest`` against, frame by frame and bit for bit. Not used by fbr; do not
edit it except to keep it importable.

The original module docstring follows.

The backtest replay loop: replay a market path under a policy and record what the book does.

Per step t (UTC timestamps of ``MarketPath.spot``), see DESIGN.md "Backtest semantics":

1. **mark to market**: spot value at the new closes; futures unrealised PnL at the new marks (it
   lands in the futures wallet: wallet = cash + unrealised PnL);
2. **funding**: every settlement with timestamp in (t_prev, t] pays ``rate x notional`` at this
   step's mark: ``cash -= rate * notional`` for signed notional (longs pay when rate > 0). All the
   settlements in the interval are summed; nothing assumes three a day;
2b. **settlement** of dated futures (``ContractKind.DATED``): on the first step at or after a
   contract's expiry its position is closed at the underlying's spot S (not the mark): the PnL
   realised into cash, ``q x size x (S - mark)`` (linear) added to ``futures_pnl`` on top of the
   mark-to-market, and a settlement fee ``taker_fee x |notional at S|`` in ``fee_futures``; trade
   kind "settle". From its expiry on, a contract's policy target is taken as 0 (it cannot be held);
3. **margin check** (``models.margin.MarginModel.maintenance`` on |notional| against the collateral
   cash + unrealised PnL + haircut x pledged spot): below maintenance every futures position is
   closed at mark (PnL realised into cash) and ``liquidation_penalty x |notional|`` is taken from cash;
   what the account (cash + the pledged spot's value) then lacks is added back to the cash and
   recorded in ``insurance_fund`` (the exchange's insurance fund takes it; the second change since
   the copy was frozen, made in both);
4. **policy** -> target holdings; trades fill at the close (spot) and at mark (futures). Spot fee:
   ``spot_fee`` (or each asset's ``SpotAsset.fee``) x |notional|, plus the spot half spread
   (``MarketPath.spot_half_spread``, 1 bp when missing) x |notional| in ``slippage_spot`` (the
   one change since the copy was frozen, made in both; sweeps pay fee + half spread) and, when
   the path gives the asset's spot ADV, the 3/2-power impact k sigma |notional|^{3/2} / sqrt(ADV)
   in ``slippage_spot`` too (the third change, made in both; sigma the asset's trailing daily
   vol, ``scenarios.replay_inputs.asset_vol``; sweeps pay it too since the fourth change, made
   in both: ``sweep_collateral``'s ``impact``); futures
   cost: the linear part of ``models.costs.CostModel`` (taker fee + half spread) plus its
   3/2-power impact when an ADV is given. Futures trades go through ``Book.with_futures``;
   every cost is paid from cash;
5. **collateral sweeps** (``CollateralPolicy``, on by default for a book that lists futures
   contracts): while positions are open, a wallet balance outside its band around the reserve
   target ``tau x NAV`` is brought back to the target by selling spot pro rata to spot values
   (top-up) or buying spot pro rata to the target weights (excess), at the close, spot fee paid.
   The default target is the book's initial wallet / NAV, so a book that starts with no reserve
   keeps none: give it a ``CollateralPolicy(target_fraction=...)``.

The first timestamp only runs steps 4 and 5 (no t_prev: settlements at or before it are ignored).

Cash: spot sales credit cash, purchases debit it, and fees, funding and penalties are paid from it,
so cash may go negative: a negative balance is a stablecoin debt (no interest), counted as such in
NAV, the wallet and the collateral (``Book`` allows it; a book file's cash must be >= 0).

Market paths come from the embedded generator (``MarketPath.from_synthetic``) or from real data in
the shared layout (``MarketPath.from_data``: 4 h / 8 h / 1 d steps, irregular funding kept, ADV
lagged one step), see ``scenarios.market_path``. No lot rounding.
Same inputs -> identical results: everything iterates in book order, nothing is random (only the
recorded wall-clock solve times of an optimising policy differ between runs).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from models.book import Book
from models.costs import CostModel
from models.errors import ValidationError
from models.instruments import contract_arrays
from models.margin import LIQUIDATION_PENALTY, MarginModel, margin_state
from models.market import MarketSnapshot
from optimizer.policies import Policy
from scenarios.backtest_result import (
    LIQUIDATION_COLUMNS,
    ROLL_COLUMNS,
    TRADE_COLUMNS,
    BacktestResult,
    RollTargets,
)
from scenarios.collateral import NO_SWEEPS, CollateralPolicy, sweep_collateral
from scenarios.market_path import MarketPath
from scenarios.replay_inputs import (
    asset_vol,
    funding_matrix,
    impact_vol,
    latest_rates,
    resolved_marks,
    settled_matrix,
)
from scenarios.replay_state import ReplayState, StepValuation, rebalance_futures, state_view, value_state
from scenarios.settlement import expiry_ns, settle_expired, spot_at_expiry

#: Two contract quantities closer than this (relative) are the same position: no trade.
QTY_RTOL = 1e-9


def _roll_rows(target: RollTargets, cons: Sequence[str], market: MarketSnapshot, k: int,
               trade_usd: np.ndarray, fee_j: np.ndarray, slip_j: np.ndarray
               ) -> list[dict[str, object]]:
    """``BacktestResult.rolls`` rows for the declared (from, to) pairs with a leg traded; pairs
    into one contract share its leg in proportion to their closed legs' |notional| (equally
    when none closed)."""
    out: list[dict[str, object]] = []
    for a, b in target.rolls:
        for sym in (a, b):
            if sym not in cons:
                raise ValidationError(f"policy.rolls.{sym}", f"is not a contract of the book at "
                                      f"{market.time}", f"roll between {list(cons)}")
    traded = [(a, b) for a, b in target.rolls
              if trade_usd[cons.index(a)] != 0 or trade_usd[cons.index(b)] != 0]
    for a, b in traded:
        ja, jb = cons.index(a), cons.index(b)
        closed = [abs(float(trade_usd[cons.index(x)])) for x, y in traded if y == b]
        share = abs(float(trade_usd[ja])) / sum(closed) if sum(closed) > 0 else 1.0 / len(closed)
        pa, pb = market.mark_price(a), market.mark_price(b)
        opened = share * float(trade_usd[jb])
        out.append({"time": market.time, "step": k, "from": a, "to": b, "from_price": pa,
                    "to_price": pb, "notional": -float(trade_usd[ja]), "opened": opened,
                    "fee": float(fee_j[ja] + share * fee_j[jb]),
                    "slippage": float(slip_j[ja] + share * slip_j[jb]),
                    "basis": opened * (pb - pa) / pb})
    return out


def run_backtest(book: Book, history: MarketPath, policy: Policy, *,
                 liquidation_penalty: float = LIQUIDATION_PENALTY, spot_fee: float | None = None,
                 collateral: CollateralPolicy | None = None,
                 impact_k: float = 1.0) -> BacktestResult:
    """Replay ``history`` from ``book`` under ``policy`` (see the module docstring for the steps).

    ``liquidation_penalty``: fraction of |notional| charged when positions are liquidated;
    ``impact_k``: coefficient k of the square-root impact charged on futures fills (when ADV is
    known), as in models.costs.CostModel;
    ``spot_fee``: spot fee as a fraction of notional for every asset (default: each asset's
    ``SpotAsset.fee``, 0.001 unless set). Policies with state (calendar triggers) should be fresh.
    ``collateral``: the wallet's reserve band (step 5); None means ``CollateralPolicy()`` (target =
    the initial wallet / NAV, band 0.5) for a book that lists futures contracts, and no sweeps for
    a spot-only book; ``NO_SWEEPS`` switches them off.
    """
    if not (math.isfinite(liquidation_penalty) and 0 <= liquidation_penalty < 1):
        raise ValidationError("liquidation_penalty", f"is {liquidation_penalty}",
                              "give a fraction of notional in [0, 1)")
    if spot_fee is not None and not (math.isfinite(spot_fee) and 0 <= spot_fee < 1):
        raise ValidationError("spot_fee", f"is {spot_fee}", "give a fraction of notional in [0, 1)")
    if not (math.isfinite(impact_k) and impact_k >= 0):
        raise ValidationError("impact_k", f"is {impact_k}", "give the impact coefficient k >= 0")
    missing = [a for a in book.asset_symbols if a not in history.spot.columns]
    if missing:
        raise ValidationError("market_path.spot", f"has no prices for {missing}",
                              "give a spot column for every asset of the book")

    assets = book.asset_symbols
    cons = book.contract_symbols
    index = history.spot.index
    spot_px = history.spot[assets].astype(float)
    marks = resolved_marks(book, history)
    settle_t, settle_r = funding_matrix(book, history)
    latest = latest_rates(settle_r, settled_matrix(book, history))
    step_ns = pd.DatetimeIndex(index).tz_convert("UTC").as_unit("ns").asi8
    with_impact = history.adv is not None
    vol = impact_vol(book, history) if with_impact else None
    spot_vol = asset_vol(history)[assets].to_numpy(dtype=float) if with_impact else None
    half = {c: float(history.half_spread[c]) for c in cons
            if history.half_spread is not None and c in history.half_spread.index}
    adv_static: dict[str, float] = {}
    adv_frame: pd.DataFrame | None = None
    if isinstance(history.adv, pd.DataFrame):
        adv_frame = history.adv[[c for c in [*cons, *assets]
                                 if c in history.adv.columns]].astype(float)
    elif history.adv is not None:
        adv_static = {c: float(history.adv[c]) for c in [*cons, *assets] if c in history.adv.index}
    margin = MarginModel.from_contracts(book.contracts)
    fee_spot_rate = np.array([spot_fee if spot_fee is not None else a.fee for a in book.assets])
    spot_half = np.array([float(history.spot_half_spread.get(a, 1e-4))
                          if history.spot_half_spread is not None else 1e-4 for a in assets])
    expiries = {c.symbol: e for c in book.contracts if (e := expiry_ns(c)) is not None}

    if collateral is None:
        collateral = CollateralPolicy() if book.contracts else NO_SWEEPS
    tau: float | None = collateral.target_fraction

    state = ReplayState(spot={a: float(book.spot.get(a, 0.0)) for a in assets},
                   futures={s: p for s, p in book.futures.items() if p.contracts != 0},
                   cash=float(book.cash))

    # plain arrays and symbol lists, read once: a step reads row k of each
    spot_arr = spot_px.to_numpy(dtype=float)
    mark_arr = marks.to_numpy(dtype=float)
    vol_arr = vol.to_numpy(dtype=float) if vol is not None else None
    adv_cols = [str(c) for c in adv_frame.columns] if adv_frame is not None else []
    adv_arr = adv_frame.to_numpy(dtype=float) if adv_frame is not None else None
    zero_rate = np.zeros(len(cons))
    arrays = contract_arrays(book.contracts)

    rows: list[dict[str, float | bool]] = []
    spot_rows: list[np.ndarray] = []
    fut_rows: list[np.ndarray] = []
    w_rows: list[np.ndarray] = []
    trades: list[dict[str, object]] = []
    liqs: list[dict[str, object]] = []
    roll_rows: list[dict[str, object]] = []
    prev_market: MarketSnapshot | None = None
    prev_end: StepValuation | None = None

    for k, t in enumerate(index):
        ts = pd.Timestamp(t)
        # each contract's latest funding rate at or before t: the policy's view of carry (the
        # settlement table holds 0 where a contract did not settle; the frozen replay read the
        # table's last row, 0 for a contract another one settled without: fixed in both)
        n_settled = int(np.searchsorted(settle_t, step_ns[k], side="right"))
        last_rate = latest[n_settled - 1] if n_settled > 0 else zero_rate
        adv = adv_static if adv_arr is None else {
            c: v for c, v in zip(adv_cols, adv_arr[k].tolist(), strict=True) if math.isfinite(v)}
        market = MarketSnapshot(time=ts, spot=dict(zip(assets, spot_arr[k].tolist(), strict=True)),
                                mark=dict(zip(cons, mark_arr[k].tolist(), strict=True)),
                                funding=dict(zip(cons, last_rate.tolist(), strict=True)),
                                half_spread=half, adv=adv, synthetic=history.synthetic,
                                spot_half_spread=dict(zip(assets, spot_half.tolist(), strict=True)))
        row: dict[str, float | bool] = dict.fromkeys(
            ("spot_pnl", "futures_pnl", "fee_spot", "slippage_spot", "fee_futures",
             "slippage_futures", "funding",
             "liquidation_penalty", "insurance_fund", "traded_spot", "traded_futures", "sweep_in",
             "sweep_out",
             "sweep_fees"), 0.0)
        row["liquidated"] = False
        row["solve_time_ms"] = math.nan
        row["solver_fallbacks"] = 0.0
        if prev_market is None:
            # (2b) positions already expired at the start settle at spot
            pnl_s, fee_s = settle_expired(book, state, market, int(step_ns[k]), expiries, trades)
            row["futures_pnl"], row["fee_futures"] = pnl_s, fee_s
            first = value_state(book, state, market)
            now = first
            row["margin_ratio"] = margin_state(margin, first.notional, first.collateral).margin_ratio
            if tau is None:
                tau = first.wallet / first.nav if first.nav > 0 else 0.0
                tau = min(max(tau, 0.0), 1.0)
        else:
            # (1) mark to market (positions and quantities as held since t_prev; nothing changed
            # the state since the previous step's end valuation)
            before = prev_end if prev_end is not None else value_state(book, state, prev_market)
            now = value_state(book, state, market)
            row["spot_pnl"] = float(now.spot_values.sum() - before.spot_values.sum())
            row["futures_pnl"] = now.upnl - before.upnl
            # (2) funding: every settlement in (t_prev, t], at this step's mark
            lo = int(np.searchsorted(settle_t, step_ns[k - 1], side="right"))
            if n_settled > lo:
                paid = float(settle_r[lo:n_settled].sum(axis=0) @ now.notional)
                state.cash -= paid
                row["funding"] = paid
                now = now.with_cash(-paid)
            # (2b) dated futures at or past expiry settle at spot at their expiry (the frozen
            # replay took step k's spot even when the expiry fell hours before it; fixed in both:
            # the spot interpolated linearly in time between steps k - 1 and k)
            n_trades = len(trades)
            at_expiry = {c.symbol: spot_at_expiry(
                expiries[c.symbol], int(step_ns[k - 1]), int(step_ns[k]),
                float(spot_arr[k - 1, assets.index(c.underlying)]),
                float(spot_arr[k, assets.index(c.underlying)]))
                for c in book.contracts if c.symbol in expiries}
            pnl_s, fee_s = settle_expired(book, state, market, int(step_ns[k]), expiries, trades,
                                          at_expiry)
            row["futures_pnl"] = float(row["futures_pnl"]) + pnl_s
            row["fee_futures"] = fee_s
            if len(trades) != n_trades:
                now = value_state(book, state, market)
            # (3) margin check against maintenance (the one margin engine)
            ms = margin_state(margin, now.notional, now.collateral)
            row["margin_ratio"] = ms.margin_ratio
            if ms.liquidated:
                per = liquidation_penalty * np.abs(now.notional)
                for j, c in enumerate(cons):
                    pos = state.futures.get(c)
                    if pos is not None and pos.contracts != 0:
                        liqs.append({"time": ts, "contract": c, "contracts": pos.contracts,
                                     "mark": market.mark_price(c),
                                     "notional": float(now.notional[j]), "penalty": float(per[j])})
                rebalance_futures(book, state, market, dict.fromkeys(cons, 0.0))
                penalty = float(per.sum())
                state.cash -= penalty
                row["liquidation_penalty"] = penalty
                # the account owes nothing past what it holds (its cash and any pledged spot,
                # which the margin check counted): the insurance fund takes the rest
                held = state.cash
                if book.pledged:
                    view = book.evolve(spot=state.spot, futures=state.futures, cash=state.cash,
                                       validate=False)
                    held += float(view.pledged_usd(value_state(book, state, market)
                                                   .spot_values).sum())
                row["insurance_fund"] = max(0.0, -held)
                state.cash += float(row["insurance_fund"])
                row["liquidated"] = True
                now = value_state(book, state, market)

        # (4) policy, then trades at the close (spot) and at mark (futures); ``current`` stays the
        # state's valuation at ``market`` until a trade changes the state
        current: StepValuation | None = now
        target = policy(state_view(book, state), market, ts)
        if target.solve_time_ms is not None:
            row["solve_time_ms"] = float(target.solve_time_ms)
            row["solver_fallbacks"] = float(target.solver_fallbacks)
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
            slip = float(spot_half[i]) * abs(dq) * px
            spot_adv = float(market.adv.get(a, math.inf))
            if spot_vol is not None and math.isfinite(spot_adv) and math.isfinite(spot_vol[k, i]):
                slip += impact_k * float(spot_vol[k, i]) / math.sqrt(spot_adv) * abs(dq * px) ** 1.5
            state.cash -= dq * px + fee + slip
            state.spot[a] = q_new
            current = None
            row["fee_spot"] = float(row["fee_spot"]) + fee
            row["slippage_spot"] = float(row["slippage_spot"]) + slip
            row["traded_spot"] = float(row["traded_spot"]) + abs(dq) * px
            trades.append({"time": ts, "kind": "spot", "symbol": a, "quantity": dq, "price": px,
                           "notional": dq * px, "fee": fee, "slippage": slip})

        new_q: dict[str, float] = {}
        dq_f = np.zeros(len(cons))
        trade_usd = np.zeros(len(cons))
        npc = arrays.notional_per_contract(mark_arr[k])
        for j, c in enumerate(cons):
            pos = state.futures.get(c)
            q_old = pos.contracts if pos is not None else 0.0
            x_new = float(target.futures.get(c, q_old * npc[j]))
            if c in expiries and step_ns[k] >= expiries[c]:
                x_new = 0.0  # an expired dated contract cannot be held
            if not math.isfinite(x_new):
                raise ValidationError(f"policy.futures.{c}", f"is {x_new} at {ts}",
                                      "a policy must target finite futures notional (USD)")
            q_new = x_new / float(npc[j])
            if math.isclose(q_new, q_old, rel_tol=QTY_RTOL, abs_tol=0.0):
                continue  # the same position (notional round trip): no trade, no re-strike
            new_q[c] = q_new
            dq_f[j] = q_new - q_old
            trade_usd[j] = dq_f[j] * npc[j]
        fee_j = np.zeros(len(cons))
        slip_j = np.zeros(len(cons))
        if new_q:
            daily_vol = vol_arr[k] if vol_arr is not None else np.zeros(len(cons))
            cost = CostModel.build(book.contracts, market, daily_vol, impact_k)
            fee_j = cost.fee * np.abs(trade_usd)
            slip_j = cost.half_spread * np.abs(trade_usd)
            if with_impact:
                slip_j = slip_j + cost.impact * np.abs(trade_usd) ** 1.5
            rebalance_futures(book, state, market, new_q)
            state.cash -= float(fee_j.sum()) + float(slip_j.sum())
            current = None
            row["fee_futures"] = float(row["fee_futures"]) + float(fee_j.sum())
            row["slippage_futures"] = float(slip_j.sum())
            row["traded_futures"] = float(np.abs(trade_usd).sum())
            for j, c in enumerate(cons):
                if c in new_q:
                    trades.append({"time": ts, "kind": "futures", "symbol": c,
                                   "quantity": float(dq_f[j]), "price": market.mark_price(c),
                                   "notional": float(trade_usd[j]), "fee": float(fee_j[j]),
                                   "slippage": float(slip_j[j])})
        if isinstance(target, RollTargets):
            roll_rows.extend(_roll_rows(target, cons, market, k, trade_usd, fee_j, slip_j))

        # (5) collateral sweeps between spot and the wallet
        if collateral.enabled and tau is not None:
            if current is None:
                current = value_state(book, state, market)
            n_trades = len(trades)
            sweep_impact = np.zeros(len(assets))
            for i, a in enumerate(assets):
                spot_adv = float(market.adv.get(a, math.inf))
                if (spot_vol is not None and math.isfinite(spot_adv)
                        and math.isfinite(spot_vol[k, i])):
                    sweep_impact[i] = impact_k * float(spot_vol[k, i]) / math.sqrt(spot_adv)
            sw = sweep_collateral(book, state, market, tau, collateral.band, fee_spot_rate + spot_half,
                                  trades, current, impact=sweep_impact)
            row.update(sweep_in=sw.sweep_in, sweep_out=sw.sweep_out, sweep_fees=sw.fees)
            if len(trades) != n_trades:
                current = None

        end = current if current is not None else value_state(book, state, market)
        row["margin_ratio_end"] = margin_state(margin, end.notional, end.collateral).margin_ratio
        row.update(nav=end.nav, base=end.base, cash=state.cash, wallet=end.wallet,
                   collateral=end.collateral)
        rows.append(row)
        spot_rows.append(end.spot_values.astype(float))
        fut_rows.append(end.notional.astype(float))
        w_rows.append(end.weights.astype(float))
        prev_market = market
        prev_end = end

    order = ["nav", "base", "cash", "wallet", "collateral", "spot_pnl", "futures_pnl", "fee_spot",
             "slippage_spot", "fee_futures", "slippage_futures", "funding", "liquidation_penalty",
             "insurance_fund", "margin_ratio", "margin_ratio_end", "liquidated", "traded_spot",
             "traded_futures", "sweep_in", "sweep_out", "sweep_fees", "solve_time_ms",
             "solver_fallbacks"]
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
        rolls=pd.DataFrame(roll_rows, columns=ROLL_COLUMNS),
    )
