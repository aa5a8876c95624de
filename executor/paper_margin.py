"""The paper exchange's margin rules: liquidation below maintenance, and the initial-margin check of
an order that opens or increases a position (Binance's -2019 "Margin is insufficient").

Units: USD for notionals, margins, collateral, penalties; fractions for rates.

- Collateral C = cash + unrealised PnL at mark + the pledged spot's collateral value
  (``Book.collateral``); notionals n_j are the exchange's (``Book.futures_notional``: q x size x
  mark, the face value for an inverse contract); IM = sum_j |n_j| / L_j, MM = sum_j MM_j(|n_j|)
  (tiered; ``models.margin``).
- Liquidation (the exchange's rule and the backtest's, ``scenarios.replay_steps.margin_step``): a
  position open and C <= MM. Every position is closed at its mark (PnL realised into cash), the
  penalty ``rate x |n_j|`` is taken from cash per contract, and a deficit is the insurance fund's
  (``models.margin.insurance_fund_cover`` of cash + the pledged spot's market value, which still
  backs the debt as in the backtest without pledged sales): cash += max(-(cash + pledged), 0).
- An order that opens or increases a position (|q_after| > |q_before|, or a flip) is refused when
  IM after it exceeds C after it (its fee paid, the account's other positions as held).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pandas as pd

from executor.alerts import AlertHub, AlertKind, Severity
from executor.base import OrderState, OrderStatus, Trade
from executor.paper_store import PaperAccount, apply_fill
from models.book import Book, FuturesPosition
from models.margin import MarginModel, MarginState, insurance_fund_cover, margin_state
from models.market import MarketSnapshot

#: Client and order id prefix of a liquidation's closing fills: ``liquidate-<symbol>-<ms>``.
LIQUIDATION_PREFIX = "liquidate-"


@dataclass(frozen=True)
class Liquidation:
    """One liquidation of the paper account at ``time``: the positions closed (``contracts``:
    signed contracts held before the close, by book symbol) at ``marks`` (USD), their exchange
    notional (USD, signed), the collateral and maintenance that triggered it (USD, C <= MM), the
    penalty paid (USD) and what the insurance fund covered (USD, >= 0)."""

    time: datetime
    contracts: dict[str, float]
    marks: dict[str, float]
    notional: dict[str, float]
    collateral: float
    maintenance: float
    penalty: float
    insurance: float

    def doc(self) -> dict[str, object]:
        """JSON-ready: time (ISO UTC) and the figures above."""
        return {"time": pd.Timestamp(self.time).isoformat(), "contracts": dict(self.contracts),
                "marks": dict(self.marks), "notional": dict(self.notional),
                "collateral": self.collateral, "maintenance": self.maintenance,
                "penalty": self.penalty, "insurance_fund": self.insurance}


def liquidation_alert(alerts: AlertHub, event: Liquidation) -> None:
    """Send ``event``'s CRITICAL margin alert: the positions closed, the collateral and
    maintenance that triggered it, the penalty and the insurance fund's cover (USD)."""
    closed = ", ".join(f"{s} {q:+.8g}" for s, q in event.contracts.items())
    alerts.emit(AlertKind.MARGIN, Severity.CRITICAL, "paper account liquidated",
                f"collateral {event.collateral:,.2f} USD <= maintenance "
                f"{event.maintenance:,.2f} USD: closed {closed} at the marks, penalty "
                f"{event.penalty:,.2f} USD, insurance fund {event.insurance:,.2f} USD",
                event.time, penalty=event.penalty, insurance_fund=event.insurance,
                collateral=event.collateral, maintenance=event.maintenance)


def account_margin(book: Book, futures: dict[str, FuturesPosition], cash: float,
                   market: MarketSnapshot) -> MarginState:
    """C, IM and MM (USD) of ``book`` holding ``futures`` and ``cash`` at ``market``'s marks."""
    held = book.evolve(futures=futures, cash=cash)
    return margin_state(MarginModel.from_contracts(book.contracts), held.futures_notional(market),
                        held.collateral(market))


def pledged_spot_usd(book: Book, market: MarketSnapshot) -> float:
    """sum_i u_i (USD): the market value of the spot ``book`` pledges (0 without pledges)."""
    if not book.pledged:
        return 0.0
    return float(book.pledged_usd(book.spot_values(market)).sum())


def liquidate(acct: PaperAccount, book: Book, market: MarketSnapshot,
              penalty_rate: float) -> Liquidation | None:
    """Liquidate ``acct`` (changed in place: positions, cash, fills) when a position is open and
    C <= MM at ``market``; None (nothing changed) otherwise. See the module docstring."""
    state = account_margin(book, acct.futures, acct.cash, market)
    if not state.liquidated:
        return None
    held = book.evolve(futures=acct.futures, cash=acct.cash)
    notional = dict(zip(book.contract_symbols, held.futures_notional(market).tolist(), strict=True))
    ms = int(pd.Timestamp(market.time).timestamp() * 1000)
    contracts: dict[str, float] = {}
    marks: dict[str, float] = {}
    penalty = 0.0
    contract = {c.symbol: c for c in book.contracts}
    for sym, pos in sorted(acct.futures.items()):
        if pos.contracts == 0:
            continue
        mark = market.mark_price(sym)
        fee = penalty_rate * abs(notional[sym])
        acct.cash += apply_fill(pos, -pos.contracts, mark, contract[sym])[1] - fee
        acct.set_position(sym, None)
        oid = f"{LIQUIDATION_PREFIX}{sym}-{ms}"
        acct.fills.append((sym, OrderState(oid, oid, OrderStatus.FILLED, abs(pos.contracts), mark,
                                           fee), Trade(oid, -pos.contracts, mark, fee, ms)))
        contracts[sym], marks[sym] = pos.contracts, mark
        penalty += fee
    cover = insurance_fund_cover(acct.cash + pledged_spot_usd(book, market))
    acct.cash += cover
    return Liquidation(time=pd.Timestamp(market.time).to_pydatetime(), contracts=contracts,
                       marks=marks, notional={s: notional[s] for s in contracts},
                       collateral=state.collateral, maintenance=state.maintenance,
                       penalty=penalty, insurance=cover)


def opens(before: FuturesPosition | None, after: FuturesPosition | None) -> bool:
    """Whether a fill taking ``before`` to ``after`` opens or increases a position: |q_after| >
    |q_before|, or the sign flips."""
    q0 = before.contracts if before is not None else 0.0
    q1 = after.contracts if after is not None else 0.0
    return bool(abs(q1) > abs(q0) + 1e-12 or q0 * q1 < 0)


def insufficient_margin(book: Book, acct: PaperAccount, market: MarketSnapshot) -> str | None:
    """Why the account as changed (``acct``: the fill applied, its fee paid) breaks the initial
    margin (IM > C, USD), or None when it does not."""
    state = account_margin(book, acct.futures, acct.cash, market)
    if state.initial <= state.collateral + 1e-9 * max(abs(state.collateral), 1.0):
        return None
    return (f"Margin is insufficient (-2019): the positions would need {state.initial:,.2f} USD "
            f"of initial margin against {state.collateral:,.2f} USD of collateral")

