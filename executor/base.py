"""The executor interface and the small injected I/O interface it drives.

An executor turns an :class:`~executor.plan.OrderPlan` into an :class:`ExecutionReport`: the
dry run (:mod:`executor.dryrun`) only reports; the journaled runner (:mod:`executor.live`) does
so over any :class:`ExchangeGateway`: the paper exchange (:mod:`executor.paper`) or a ccxt
exchange (:mod:`executor.ccxt_gateway`).

Units: quantities in contracts (signed where stated), prices in USD, fees and funding in USD.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from executor.plan import Instrument, OrderLeg
from models.book import Book
from models.errors import ExitCode, FbrError, RefusedError
from models.market import MarketSnapshot


class OrderStatus(StrEnum):
    """Life of one leg in the journal. FILLED, PARTIAL (an IOC/limit/expired remainder cancelled),
    REJECTED, CANCELED, NOT_PLACED (proven absent by a reconcile against the account) and SKIPPED
    are final; SENDING and UNKNOWN are reconciled against the account before anything is resent."""

    PLANNED = "planned"
    SENDING = "sending"
    OPEN = "open"
    PARTIAL = "partial"
    FILLED = "filled"
    CANCELED = "canceled"
    REJECTED = "rejected"
    UNKNOWN = "unknown"
    SKIPPED = "skipped"
    NOT_PLACED = "not_placed"

    @property
    def final(self) -> bool:
        """True when nothing more will happen to the order."""
        return self in (OrderStatus.FILLED, OrderStatus.PARTIAL, OrderStatus.REJECTED,
                        OrderStatus.CANCELED, OrderStatus.SKIPPED, OrderStatus.NOT_PLACED)


#: the journal statuses of a leg whose fate is not known yet (reconciled before anything is sent)
IN_DOUBT = frozenset({OrderStatus.SENDING, OrderStatus.UNKNOWN, OrderStatus.OPEN})


@dataclass(frozen=True)
class OrderState:
    """What the exchange says about an order: ``filled`` contracts (>= 0), ``average`` fill price
    (USD), ``fee`` (USD). ``fee_estimated``: the answer carried no fee (Binance's order answer
    has none), so ``fee`` is the contract's taker fee on the filled notional until the account's
    trades replace it (:func:`executor.order_fees.with_traded_fee`)."""

    client_id: str
    exchange_id: str | None
    status: OrderStatus
    filled: float
    average: float | None
    fee: float = 0.0
    fee_estimated: bool = False


@dataclass(frozen=True)
class FundingPayment:
    """One funding settlement on the account: ``amount`` USD (stablecoin) signed, > 0 received,
    < 0 paid (a long pays a positive rate: amount = -rate x position notional at mark), at ``time_ms``
    (ms since the epoch, UTC). ``contract`` is the book's contract symbol (None when the exchange
    symbol is not one of the book's contracts); ``tran_id`` is the exchange's transaction id."""

    contract: str | None
    exchange_symbol: str
    time_ms: int
    amount: float
    tran_id: str


@dataclass(frozen=True)
class Trade:
    """One fill on the account: the exchange's order id, signed contracts (> 0 bought), price
    (USD), fee (USD) and time (ms, UTC). ``fee_estimated``: the exchange charged the fee in a
    currency with no USD price at hand (a BNB discount), so ``fee`` is the contract's taker fee on
    the fill notional instead."""

    order_id: str
    contracts: float
    price: float
    fee: float
    time_ms: int
    fee_estimated: bool = False


class AmbiguousOrderError(FbrError):
    """Order creation failed in a way that leaves its fate unknown (timeout, 5xx, 429, Binance
    -1000/-1001/-1006/-1007). ``exists`` is True when the answer itself proves the order exists
    (Binance -4116, a duplicate client id among open orders): it must be found, never resent.
    ``wait_s``: seconds the exchange asked to be left alone before the next request (its
    ``Retry-After`` on a rate-limited answer; 0 when it asked for none)."""

    def __init__(self, message: str, *, exists: bool = False, wait_s: float = 0.0) -> None:
        super().__init__(message)
        self.exists = exists
        self.wait_s = wait_s


class OrderRejectedError(FbrError):
    """The exchange refused the order for good (min notional, margin, bad parameters)."""


class PriceBandRefusedError(OrderRejectedError):
    """The exchange refused a limit price outside its band at its current mark (Binance -4016,
    -4024): not placed; the mark moved since the leg was priced (:mod:`executor.band_refusal`)."""


class ReadFailedError(FbrError):
    """A read (balance, positions, order lookup) kept failing after its retries."""


class ExchangeBannedError(ReadFailedError):
    """The exchange asked for a longer silence than fbr waits (a long rate-limit wait or an IP
    ban): this gateway sends nothing more; the run stops and is resumed after the wait.
    ``wait_s``: the silence asked for, seconds from when it was asked."""

    def __init__(self, message: str, *, wait_s: float = 0.0) -> None:
        super().__init__(message)
        self.wait_s = wait_s


class ExchangeGateway(Protocol):
    """The I/O an executor needs from an exchange, and nothing more."""

    venue: str

    def account_key(self) -> str:
        """A stable name of the account (no secret in it): one executor per key at a time."""
        ...

    def instruments(self, book: Book) -> dict[str, Instrument]:
        """The exchange's metadata for each book contract."""
        ...

    def market(self, book: Book, fallback: MarketSnapshot) -> MarketSnapshot:
        """Marks (and funding) now; ``fallback`` supplies what the exchange does not."""
        ...

    def account(self, book: Book, market: MarketSnapshot) -> Book:
        """``book`` with the exchange's futures positions and wallet cash."""
        ...

    def prepare(self, instruments: Mapping[str, Instrument]) -> None:
        """Set leverage and margin mode before trading."""
        ...

    def create_order(self, leg: OrderLeg) -> OrderState:
        """Send one order (raises AmbiguousOrderError / OrderRejectedError)."""
        ...

    def find_order(self, leg: OrderLeg) -> OrderState | None:
        """The order with the leg's client id, or None when the exchange has none."""
        ...

    def open_orders(self, instruments: Mapping[str, Instrument]) -> list[dict[str, Any]]:
        """Open orders on the book's contracts: {symbol, side, contracts, price, client_id}."""
        ...

    def positions(self, instruments: Mapping[str, Instrument]) -> dict[str, float]:
        """Signed net contracts per book contract, read from the account now (0 when flat)."""
        ...

    def orders_since(self, instrument: Instrument, since_ms: int) -> list[OrderState]:
        """Orders on one contract created at or after ``since_ms`` (ms, UTC), with client ids."""
        ...

    def trades_since(self, instrument: Instrument, since_ms: int) -> list[Trade]:
        """Fills on one contract at or after ``since_ms`` (ms, UTC)."""
        ...

    def funding_since(self, since_ms: int,
                      instruments: Mapping[str, Instrument]) -> list[FundingPayment] | None:
        """Funding paid/received since ``since_ms`` on the book's contracts (``contract`` never
        None); None when the exchange cannot say."""
        ...


@dataclass(frozen=True)
class LegReport:
    """Planned vs filled for one leg (contracts > 0; ``filled`` in the leg's direction)."""

    index: int
    client_id: str
    symbol: str
    side: str
    planned: float
    filled: float
    average: float | None
    fee: float
    status: str
    attempts: int
    message: str


class Outcome(StrEnum):
    """How a plan ended: COMPLETE (every contract within one lot step of its target), INCOMPLETE
    (some contract is not; nothing is in doubt), UNKNOWN (some order's fate could not be
    established: the plan stopped), DRY_RUN (nothing was sent)."""

    COMPLETE = "complete"
    INCOMPLETE = "incomplete"
    UNKNOWN = "unknown"
    DRY_RUN = "dry-run"


@dataclass(frozen=True)
class ExecutionReport:
    """The outcome of a plan: legs, positions reached (contracts per book contract, read from the
    account), the target they are compared with, the gap per contract that is more than one lot
    step off (position - target, contracts), and the residual tracking error (annualised
    fraction, None without a risk model). ``late_fills``: legs of earlier plans journalled not
    placed that the exchange executed after all, one sentence each (:mod:`executor.late_fills`;
    also in ``messages``)."""

    plan_id: str
    venue: str
    mode: str
    legs: tuple[LegReport, ...]
    positions: dict[str, float]
    target: dict[str, float]
    tracking_error_residual: float | None
    messages: tuple[str, ...] = ()
    gaps: dict[str, float] = field(default_factory=dict)
    outcome: Outcome = Outcome.COMPLETE
    late_fills: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        """Every contract within one lot step of its target and no order in doubt (a dry run,
        which sends nothing, is never complete)."""
        return self.outcome == Outcome.COMPLETE

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        d = asdict(self)
        d["outcome"] = self.outcome.value
        d["complete"] = self.complete
        return d


def planned_vs_filled(plan_legs: Sequence[OrderLeg],
                      legs: Sequence[LegReport]) -> dict[str, dict[str, float]]:
    """Per contract: the signed contracts the plan's own legs planned (``plan_legs``, before any
    re-plan), and the signed contracts filled over every leg sent (``legs``: re-planned ones
    included; a leg cancelled and planned again counts once, for what it filled)."""
    out: dict[str, dict[str, float]] = {}
    for p in plan_legs:
        row = out.setdefault(p.symbol, {"planned": 0.0, "filled": 0.0})
        row["planned"] += p.signed_contracts
    for leg in legs:
        sign = 1.0 if leg.side == "buy" else -1.0
        row = out.setdefault(leg.symbol, {"planned": 0.0, "filled": 0.0})
        row["filled"] += sign * leg.filled
    return out


class ExecutionUnknownError(FbrError):
    """An order's fate could not be established; nothing more was sent (exit code 5)."""

    exit_code = ExitCode.UNKNOWN


class PlanFinishedError(RefusedError):
    """A run that resumes only an open plan (the daily loop's restart) found it finished by
    another run once it held the account's lock: nothing was sent, and its fills are that run's,
    not this one's (exit code 6)."""


class AccountMovedError(RefusedError):
    """The account's positions moved between the plan and its send (another process traded it
    while this one waited for the account's lock): a run that must send the plan as made (the
    legs a user confirmed, a loop's plan checked against its daily limits) sent nothing, and the
    plan's legs are journalled skipped (exit code 6)."""
