"""Was an order placed? Asked of the account itself after any ambiguous answer.

One "order not found" proves nothing: right after a timeout Binance's order lookup can answer
-2013 for an order it has accepted and filled, and its client ids are unique among *open* orders
only, so a resend with the same id can be a second order. The verdict therefore rests on the
account, over a bounded window: checks at t = 0, d_1, d_1 + d_2, ... (the backoff delays, seconds).
At each check:

1. the order by client id, then the account's order history on the contract since the send
   (ms, with ``skew_ms`` of slack for clock differences): found -> PLACED, with the exchange's
   fills (a non-final state is polled on until the window ends);
2. the contract's position against the position journalled before the send, less the fills of
   any other order the history shows on the contract since the send (a trade by hand, another
   bot: the account's lock keeps other fbr runs out, not them): any change left -> the order was
   placed. When such other fills are in the window, only a change of exactly the whole order is
   taken as this order's; any other change left is UNKNOWN (it cannot be told apart). A change
   of the whole order settles it at once when the trade history since the send accounts for the
   whole quantity; otherwise (the trades lag the position, as the order does) the window goes on
   so the lookup or the trades can confirm it. The fills are then taken from the position change
   and the trade history since the send (price = sum q p / sum q, fees summed, USD).

A position change the trade history never accounted for by the end of the window is still PLACED
(never resent): the quantity the trades do not show is priced at the leg's price (the mark the
plan was made at) with the contract's taker fee on that notional, and the journal's message says
the figures are estimated. So does it when a trade's fee was charged in a currency without a USD
price (:attr:`executor.base.Trade.fee_estimated`).

Only when the whole window passed with every read answered, no order found, the position exactly
as before and no trade on the contract since the send is the verdict NOT_PLACED (a resend is then
safe); and the window reaches at least ``settle_s`` after the send (:data:`SETTLE_S` on an
exchange): an "execution status unknown" answer bounds nothing, so the last check waits for an
order the backend may still execute. Anything else (reads failing, a trade nobody can attribute,
no position recorded before the send, an exchange that said the order exists) is UNKNOWN: the
plan stops and the leg is named. An order the exchange said exists that no lookup finds more than
:data:`ARCHIVED_AFTER_MS` after the send, with the position as before and no trade since, ended
canceled or expired with nothing filled (the venue no longer lists such orders): final, 0 filled.
A long silence the exchange asks for (an ExchangeBannedError)
ends the reconcile at once; the run records it and the leg stays in doubt.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from executor.base import (
    ExchangeBannedError,
    ExchangeGateway,
    OrderState,
    OrderStatus,
    ReadFailedError,
    Trade,
)
from executor.plan import Instrument, OrderLeg
from executor.safety import redact
from models.errors import FbrError

log = logging.getLogger("executor.reconcile")
_R = TypeVar("_R")

#: Backoff between checks (seconds): 15.75 s in all, three times the longest lookup lag seen.
DEFAULT_DELAYS_S: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
#: The least age of a send (seconds since it) at which nothing seen proves it was not placed.
#: An "execution status unknown" answer (-1006, -1007, a timeout) gives no bound on when the
#: exchange's backend may still execute the order; this is twelve times the 10 s recvWindow ccxt
#: signs orders with, so the verdict NOT_PLACED (and a resend) waits for a last check at this age.
SETTLE_S = 120.0
#: Per venue, the age of an order (ms after its creation) past which the exchange stops finding
#: it when it ended canceled or expired with no fill. Binance USD-M "Query Order" / "All Orders":
#: such orders "will not be found" once "created time + 3 days < current time".
ARCHIVED_AFTER_MS: dict[str, int] = {"binanceusdm": 3 * 86_400_000}


class Verdict(StrEnum):
    """PLACED (the order exists; ``state`` says what filled), NOT_PLACED (provably absent),
    UNKNOWN (cannot tell: stop)."""

    PLACED = "placed"
    NOT_PLACED = "not_placed"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Finding:
    """A reconcile's verdict, the order's state when placed, and why (for the journal)."""

    verdict: Verdict
    state: OrderState | None
    reason: str


@dataclass(frozen=True)
class SentLeg:
    """What the journal holds about a send: the leg, its instrument, the signed position before it
    (contracts; None when not recorded), the send time (ms, UTC) and the exchange ids of the other
    orders the journal knows (their trades are explained)."""

    leg: OrderLeg
    instrument: Instrument
    position_before: float | None
    sent_ms: int
    known_orders: frozenset[str] = frozenset()


class Reconciler:
    """Reconciles sent legs against the account (see the module doc). ``sleep`` is injected so
    tests run the window on a simulated clock."""

    def __init__(self, gateway: ExchangeGateway, *, delays_s: Sequence[float] = DEFAULT_DELAYS_S,
                 sleep: Callable[[float], None], skew_ms: int = 5_000, settle_s: float = 0.0,
                 clock_ms: Callable[[], int] | None = None) -> None:
        self.gw = gateway
        self.delays = tuple(delays_s)
        self._sleep = sleep
        self.skew_ms = skew_ms
        self.settle_s = settle_s
        self._clock_ms = clock_ms

    def settle_rest(self, sent: SentLeg, wait_s: float = 0.0) -> float:
        """Seconds from the end of the backoff window to ``settle_s`` after the send (<= 0: none
        left): the age of the send now, plus ``wait_s`` and the backoff delays, short of it."""
        if self.settle_s <= 0 or self._clock_ms is None:
            return 0.0
        age = max(self._clock_ms() - sent.sent_ms, 0) / 1000 + wait_s + sum(self.delays)
        return self.settle_s - age

    def reconcile(self, sent: SentLeg, *, exists: bool = False, wait_s: float = 0.0) -> Finding:
        """The verdict for ``sent``; ``exists`` (the exchange said the id is taken) rules out
        NOT_PLACED; ``wait_s`` (the exchange's Retry-After) is waited before the first check.
        Checks at 0 and after each backoff delay; unless they prove the order placed, one more
        ``settle_s`` after the send (:meth:`settle_rest`) gives the verdict."""
        rest = self.settle_rest(sent, wait_s)
        if wait_s > 0:
            self._sleep(wait_s)
        checks = (0.0, *self.delays)
        finding = self._window(sent, checks, exists, sum(checks))
        if finding.verdict == Verdict.PLACED or rest <= 0:
            return finding
        return self._window(sent, (rest,), exists, sum(checks) + rest)

    def _window(self, sent: SentLeg, checks: tuple[float, ...], exists: bool,
                span_s: float) -> Finding:
        """The checks after each of the ``checks`` delays (seconds), and their verdict."""
        moved: float | None = None
        found: OrderState | None = None
        blind = False
        looked = False
        whole = False  # the position showed the whole order at some check
        tangled = False  # another order's fills on the contract since the send (netted out)
        for k, delay in enumerate(checks):
            if delay > 0:
                self._sleep(delay)
            try:
                moved, unexplained, other = self._moved(sent)
                tangled = tangled or other
                blind = False
            except ExchangeBannedError:  # a silence: stop at once, the run records it
                raise
            except ReadFailedError as exc:
                blind = True
                log.warning("reconcile %s check %d: %s", sent.leg.client_id, k, redact(str(exc)))
            if not blind and moved is not None and abs(moved - sent.leg.signed_contracts) < 1e-12:
                whole = True  # placed and filled: no doubt; done once the trades show it all
                early = self._from_trades(sent, moved, unexplained)
                if early is not None:
                    return early
            try:
                found = self._lookup(sent) or found
                looked = True
            except ExchangeBannedError:  # a silence: stop at once, the run records it
                raise
            except ReadFailedError as exc:
                looked = False
                log.warning("reconcile %s lookup %d: %s", sent.leg.client_id, k, redact(str(exc)))
            if found is not None and found.status.final:
                return Finding(Verdict.PLACED, found, "found by client id")
        if whole:  # the position showed it all; neither the lookup nor the trades ever did
            return self._from_position(sent, sent.leg.signed_contracts)
        return self._verdict(sent, found, moved, blind or not looked, exists, span_s, tangled)

    def _verdict(self, sent: SentLeg, found: OrderState | None, moved: float | None, blind: bool,
                 exists: bool, span_s: float, tangled: bool = False) -> Finding:
        """The verdict at the end of the window (``span_s`` seconds of checks); ``blind``: the
        last position read or order lookup failed."""
        if found is not None:  # found but not final: it may still fill
            return Finding(Verdict.UNKNOWN, found, f"order {sent.leg.client_id} is still "
                           f"{found.status.value} on the exchange")
        if moved is not None and moved != 0.0 and not blind:
            if tangled:  # not the whole order (that settles earlier): another order's fills too
                return Finding(Verdict.UNKNOWN, None, f"{sent.leg.symbol} moved by {moved:+g} "
                               f"contracts since the send besides the fills of another order (not "
                               f"fbr's: a trade by hand?), which this order "
                               f"({sent.leg.signed_contracts:+g}) does not explain")
            return self._from_position(sent, moved)
        if blind or moved is None:
            why = ("no position was journalled before the send" if sent.position_before is None
                   else "the account or its orders could not be read")
            return Finding(Verdict.UNKNOWN, None, f"not found by client id, and {why}")
        try:
            trades = self._unexplained(sent)
        except ExchangeBannedError:  # a silence: stop at once, the run records it
            raise
        except ReadFailedError as exc:
            return Finding(Verdict.UNKNOWN, None, f"trade history unreadable: {redact(str(exc))}")
        if trades:
            return Finding(Verdict.UNKNOWN, None, f"position unchanged but {len(trades)} trade(s) "
                           f"on {sent.leg.symbol} since the send that cannot be attributed")
        if exists:
            return self._archived(sent) or Finding(
                Verdict.UNKNOWN, None, "the exchange says the client id exists, but no order, fill "
                "or position change shows it")
        return Finding(Verdict.NOT_PLACED, None, f"not found over {span_s:g} s; "
                       f"position unchanged; no trades since the send")

    def _archived(self, sent: SentLeg) -> Finding | None:
        """An order known to exist that no lookup finds, with the position unchanged and no trade
        since the send, once the send is older than the venue's archive age
        (:data:`ARCHIVED_AFTER_MS`): by the venue's rule it ended canceled or expired with
        nothing filled, so the leg is final with 0 filled (None: younger, or no such rule)."""
        after = ARCHIVED_AFTER_MS.get(self.gw.venue)
        if after is None or self._clock_ms is None or self._clock_ms() - sent.sent_ms <= after:
            return None
        days = after / 86_400_000
        return Finding(Verdict.PLACED, OrderState(sent.leg.client_id, None, OrderStatus.CANCELED,
                                                  0.0, None),
                       f"not found more than {days:g} days after the send, position unchanged, no "
                       f"trade since: {self.gw.venue} no longer lists an order that ended canceled "
                       f"or expired with nothing filled after {days:g} days, so it filled nothing")

    def _unexplained(self, sent: SentLeg) -> list[Trade]:
        """Trades on the contract since the send that no other known order explains: not one the
        journal holds, nor one the order history shows under another client id."""
        return self._trades(sent)[0]

    def _trades(self, sent: SentLeg) -> tuple[list[Trade], list[Trade]]:
        """(the trades on the contract since the send that no other known order explains, those
        of an order the history shows under another client id that the journal does not hold,
        filled at or after the send (so after the position journalled before it: not this plan's,
        nor an earlier run's fill the slack of ``skew_ms`` reaches back to; a trade by hand or
        another bot's))."""
        since = sent.sent_ms - self.skew_ms
        trades = _optional(lambda: self.gw.trades_since(sent.instrument, since), "trade history")
        if not trades:
            return [], []
        history = _optional(lambda: self.gw.orders_since(sent.instrument, since), "order history")
        others = {o.exchange_id for o in history
                  if o.client_id != sent.leg.client_id and o.exchange_id}
        foreign = others - sent.known_orders
        return ([t for t in trades if t.order_id not in sent.known_orders | others],
                [t for t in trades if t.order_id in foreign and t.time_ms >= sent.sent_ms])

    def _lookup(self, sent: SentLeg) -> OrderState | None:
        """By client id, then in the order history since the send."""
        state = self.gw.find_order(sent.leg)
        if state is not None:
            return state
        since = sent.sent_ms - self.skew_ms
        for o in _optional(lambda: self.gw.orders_since(sent.instrument, since), "order history"):
            if o.client_id == sent.leg.client_id:
                return o
        return None

    def _moved(self, sent: SentLeg) -> tuple[float | None, list[Trade], bool]:
        """(signed position change since the send less the fills of orders not fbr's in that time
        (contracts; None when no position was journalled), the trades since the send no known
        order explains (:meth:`_trades`, read once for both), whether there were such fills)."""
        if sent.position_before is None:
            return None, [], False
        now = self.gw.positions({sent.leg.symbol: sent.instrument}).get(sent.leg.symbol, 0.0)
        unexplained, foreign = self._trades(sent)
        delta = now - sent.position_before - sum(t.contracts for t in foreign)
        return (0.0 if abs(delta) < 1e-12 else delta), unexplained, bool(foreign)

    def _from_trades(self, sent: SentLeg, moved: float, trades: list[Trade]) -> Finding | None:
        """PLACED from the position change when ``trades`` (the check's trades since the send that
        no known order explains) account for all of it (contracts); None while they do not: the
        window goes on."""
        if abs(_quantity(trades) - abs(moved)) > 1e-9 * max(abs(moved), 1.0):
            return None
        return self._from_position(sent, moved, trades)

    def _from_position(self, sent: SentLeg, moved: float,
                       trades: Sequence[Trade] | None = None) -> Finding:
        """PLACED from the position change (the lookup never confirmed it), with the fills from
        ``trades`` (read here when None); what they do not show is estimated (module doc)."""
        leg = sent.leg
        if moved * leg.signed_contracts < 0 or abs(moved) > leg.contracts * (1 + 1e-9):
            return Finding(Verdict.UNKNOWN, None, f"{leg.symbol} moved by {moved:+g} contracts "
                           f"since the send, which this order ({leg.signed_contracts:+g}) "
                           f"does not explain")
        if trades is None:
            try:
                trades = self._unexplained(sent)
            except ExchangeBannedError:  # a silence: stop at once, the run records it
                raise
            except ReadFailedError:
                trades = []
        filled = abs(moved)
        status = OrderStatus.FILLED if filled >= leg.contracts * (1 - 1e-9) else OrderStatus.PARTIAL
        average, fee = _average(trades), sum(t.fee for t in trades)
        reason = ("the order lookup never found it; confirmed by the position change and the "
                  "trade history")
        missing = filled - _quantity(trades)
        if missing > 1e-9 * max(filled, 1.0):  # the trades never showed this part
            c = sent.instrument.contract
            est_fee = c.taker_fee * missing * c.notional_per_contract(leg.price)
            seen = filled - missing
            average = (seen * (average or 0.0) + missing * leg.price) / filled
            fee += est_fee
            reason = (f"the order lookup never found it; confirmed by the position change. "
                      f"Estimated: {missing:g} of {filled:g} contracts never showed in the trade "
                      f"history, priced at the plan's mark {leg.price:g} USD with the taker fee "
                      f"{c.taker_fee:g} ({est_fee:.6g} USD)")
        n_est = sum(1 for t in trades if t.fee_estimated)
        if n_est:
            reason += (f". Fee estimated: {n_est} trade(s) charged in a currency without a USD "
                       f"price here; counted at the taker fee on the fill notional")
        state = OrderState(leg.client_id, _order_id(trades), status, filled, average, fee)
        return Finding(Verdict.PLACED, state, reason)


def _optional(read: Callable[[], list[_R]], what: str) -> list[_R]:
    """A history read the exchange may not offer: its refusal (not a network failure, which is
    raised as ReadFailedError) leaves it out, and the verdict rests on the other evidence."""
    try:
        return read()
    except ReadFailedError:
        raise
    except FbrError as exc:
        log.warning("%s unavailable (%s); reconciling without it", what, redact(str(exc)))
        return []


def _quantity(trades: Sequence[Trade]) -> float:
    """Contracts filled over ``trades`` (>= 0)."""
    return sum(abs(t.contracts) for t in trades)


def _average(trades: Sequence[Trade]) -> float | None:
    """Fill price over ``trades`` (USD, quantity-weighted), None without any."""
    qty = _quantity(trades)
    return None if qty == 0 else sum(abs(t.contracts) * t.price for t in trades) / qty


def _order_id(trades: Sequence[Trade]) -> str | None:
    ids = {t.order_id for t in trades}
    return ids.pop() if len(ids) == 1 else None
