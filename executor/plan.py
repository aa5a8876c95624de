"""Order planning: a solution's target positions -> exchange orders (legs).

For each contract j with current position q0_j (contracts) and target notional x_j (USD exposure,
the optimiser's unit; a contract left out is held at its exposure x0_j, ``Book.futures_exposure``):

- target contracts q1_j = round_lot(x_j / npc_j(mark_j)), npc = contract_size x mark (linear) or
  contract_size (inverse, USD per contract); trade = q1_j - q0_j contracts. An inverse position
  struck at entry E away from the mark holds the exposure x0 = q0 x size x mark / E (not its face
  q0 x size; ``Book.exposure_offset`` delta0 = x0 - q0 x size): a target within ``QTY_RTOL`` of x0
  is no trade; any other target moves it by the exchange's fill rule (``models.fill_rule``, as
  the engine books it: ``Book.with_futures``, the replay, the optimiser's solution contracts):
  q1 = q0 + (x_j - x0) / size when it grows, q0 x_j / x0 when it shrinks, x_j / size past a flip;
- a trade that shrinks a position is reduce-only; one that flips its sign is split into a
  reduce-only close of q0_j and an opening order of q1_j;
- a leg under the contract's min quantity, or under its min notional (USD, opening legs only when
  the venue exempts reduce-only orders), is dropped and reported with the tracking error it leaves;
- dated contracts: a contract at or past its expiry (at the market snapshot's time) with a position
  or a trade is refused (ValidationError naming it and its expiry); within
  ``PlanOptions.min_days_to_expiry`` days of its expiry a contract is not opened or increased (those
  legs are dropped and reported), while reduce-only legs that close or shrink it are still sent;
- a leg above the max quantity is split into chunks of at most max_qty (rounded down to the lot);
- each leg gets a deterministic client order id from the plan id and its index, within the venue's
  length and alphabet rule; reduce-only legs come first (they free margin for the opening ones);
- market orders, or limit orders at mark x (1 +/- slippage guard) rounded to the tick (away from
  the guard, so the limit never exceeds it), held inside the exchange's price band
  (``Instrument.price_band``, Binance PERCENT_PRICE; :mod:`executor.price_band`), with a warning.

The residual tracking error (annualised fraction) of the positions the plan can reach is reported.
When lot rounding removes most of the solution's trades (a share >= ``rounding_warn_share`` of their
USD notional, e.g. every target rounds to 0 on a coarse lot), ``OrderPlan.warnings`` says so, naming
the contracts and giving the tracking error left.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import numpy as np

from executor.plan_doc import OrderPlanDoc
from executor.plan_ids import ClientIdRule, client_id_rule, new_plan_id
from executor.plan_parts import (
    TradePart,
    _Rounded,
    _rounding_warning,
    _split,
    move_parts,
    near_expiry,
    round_to_step,
    target_contracts,
)
from executor.price_band import band_warning, limit_price
from executor.safety import Limits
from models.book import Book
from models.errors import ValidationError
from models.instruments import (
    MIN_DAYS_TO_EXPIRY,
    ContractKind,
    FuturesContract,
    check_not_expired,
)
from models.market import MarketSnapshot
from models.risk import RiskModel, tracking_error
from optimizer.settings import OptimizerSettings
from optimizer.solution import Solution


class Side(StrEnum):
    """Order side."""

    BUY = "buy"
    SELL = "sell"


class OrderType(StrEnum):
    """Market orders, or limit orders priced at the slippage guard."""

    MARKET = "market"
    LIMIT = "limit"


@dataclass(frozen=True)
class Instrument:
    """An exchange's contract, as the book names it: metadata (lot step, sizes, min notional,
    settlement) in a :class:`FuturesContract` plus the exchange's own symbol (ccxt unified)."""

    contract: FuturesContract
    exchange_symbol: str
    #: the exchange's status of the contract while it does not trade it (``SETTLING``,
    #: ``DELIVERING``, ``CLOSE`` ...): its parts are dropped, with the reason; None while it trades
    halted: str | None = None
    #: (multiplierDown, multiplierUp): a limit price must lie within mark x these (fractions of
    #: the mark; Binance PERCENT_PRICE); None where the venue states none (book instruments)
    price_band: tuple[float, float] | None = None


def default_exchange_symbol(contract: FuturesContract, quote: str = "USDT") -> str:
    """ccxt unified symbol of a book contract: ``BTC/USDT:USDT`` (linear), ``BTC/USD:BTC``
    (inverse), a dated future with its expiry's ``-YYMMDD`` (``BTC/USDT:USDT-250926``)."""
    u = contract.underlying
    base = f"{u}/USD:{u}" if contract.settlement.value == "inverse" else f"{u}/{quote}:{quote}"
    dated = contract.kind == ContractKind.DATED and contract.expiry is not None
    return f"{base}-{contract.expiry:%y%m%d}" if dated else base


def book_instruments(book: Book, symbols: Mapping[str, str] | None = None) -> dict[str, Instrument]:
    """Instruments from the book's own contracts (paper and dry runs), exchange symbols by default."""
    symbols = symbols or {}
    return {c.symbol: Instrument(c, symbols.get(c.symbol, default_exchange_symbol(c)))
            for c in book.contracts}


@dataclass(frozen=True)
class PlanOptions:
    """How legs are priced and checked. ``slippage_guard`` is a fraction of mark (limit orders);
    ``reduce_only_exempt`` says the venue waives min notional for reduce-only orders (Binance does);
    ``min_days_to_expiry`` (days) keeps dated contracts from being opened or increased that close to
    their expiry; ``rounding_warn_share`` (fraction) is the share of the solution's trade notional
    whose removal by lot rounding is reported in ``OrderPlan.warnings``."""

    venue: str = "binanceusdm"
    order_type: OrderType = OrderType.MARKET
    slippage_guard: float = 0.005
    reduce_only_exempt: bool = True
    limits: Limits = field(default_factory=Limits)
    min_days_to_expiry: float = MIN_DAYS_TO_EXPIRY
    rounding_warn_share: float = 0.5

    def __post_init__(self) -> None:
        if not (math.isfinite(self.slippage_guard) and 0 <= self.slippage_guard < 0.5):
            raise ValidationError("slippage_guard", f"is {self.slippage_guard}",
                                  "give a fraction of mark in [0, 0.5), e.g. 0.005")
        if not (math.isfinite(self.min_days_to_expiry) and 0 <= self.min_days_to_expiry <= 366):
            raise ValidationError("min_days_to_expiry", f"is {self.min_days_to_expiry}",
                                  "give the days before expiry in [0, 366], e.g. 2")
        if not (math.isfinite(self.rounding_warn_share) and 0 < self.rounding_warn_share <= 1):
            raise ValidationError("rounding_warn_share", f"is {self.rounding_warn_share}",
                                  "give a fraction in (0, 1], e.g. 0.5")


def with_book_settings(options: PlanOptions, settings: OptimizerSettings) -> PlanOptions:
    """``options`` with the book file's planner settings (constraints.min_days_to_expiry)."""
    return replace(options, min_days_to_expiry=settings.constraints.min_days_to_expiry)


@dataclass(frozen=True)
class OrderLeg:
    """One order: ``contracts`` > 0 (a lot multiple), ``notional`` signed USD at ``price`` (mark)."""

    index: int
    client_id: str
    symbol: str
    exchange_symbol: str
    side: Side
    contracts: float
    notional: float
    price: float
    reduce_only: bool
    order_type: OrderType
    limit_price: float | None = None

    @property
    def signed_contracts(self) -> float:
        """+contracts for a buy, -contracts for a sell."""
        return self.contracts if self.side == Side.BUY else -self.contracts


@dataclass(frozen=True)
class DroppedOrder:
    """An order the plan cannot send, why, and the tracking error (annualised) the plan leaves
    without it (None without a risk model)."""

    symbol: str
    contracts: float
    notional: float
    reason: str
    tracking_error_left: float | None


@dataclass(frozen=True)
class OrderPlan:
    """The orders of one rebalance and what they reach.

    ``start`` / ``target`` / ``reachable``: contracts per book contract now, at the lot-rounded
    target, and after dropped orders. Tracking errors are annualised fractions (None without risk).
    ``warnings``: what the user should know before sending (lot rounding that removed most of the
    solution, limit prices held inside the exchange's price band), one sentence each.
    """

    plan_id: str
    venue: str
    created: str
    book_name: str
    legs: tuple[OrderLeg, ...]
    dropped: tuple[DroppedOrder, ...]
    start: dict[str, float]
    target: dict[str, float]
    reachable: dict[str, float]
    tracking_error_before: float | None
    tracking_error_solution: float | None
    tracking_error_residual: float | None
    warnings: tuple[str, ...] = ()
    #: how the legs were priced and checked (the slippage guard, the limits ...): legs re-planned
    #: while the plan is sent use the same (None: a plan journalled before they were kept)
    options: PlanOptions | None = None

    @property
    def gross_notional(self) -> float:
        """Sum of |leg notional| (USD)."""
        return float(sum(abs(leg.notional) for leg in self.legs))

    def to_dict(self) -> OrderPlanDoc:
        """JSON-ready dict (round-trips through :meth:`from_dict`)."""
        d = asdict(self)
        d["gross_notional"] = self.gross_notional
        return d  # type: ignore[return-value]  # asdict: dict[str, Any]; plan_doc mirrors the fields

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> OrderPlan:
        """Inverse of :meth:`to_dict`."""
        legs = tuple(OrderLeg(**{**leg, "side": Side(leg["side"]),
                                 "order_type": OrderType(leg["order_type"])}) for leg in d["legs"])
        dropped = tuple(DroppedOrder(**x) for x in d["dropped"])
        return OrderPlan(plan_id=d["plan_id"], venue=d["venue"], created=d["created"],
                         book_name=d["book_name"], legs=legs, dropped=dropped, start=dict(d["start"]),
                         target=dict(d["target"]), reachable=dict(d["reachable"]),
                         tracking_error_before=d["tracking_error_before"],
                         tracking_error_solution=d["tracking_error_solution"],
                         tracking_error_residual=d["tracking_error_residual"],
                         warnings=tuple(d.get("warnings", ())),
                         options=_options_from(d.get("options")))


def _options_from(d: Mapping[str, Any] | None) -> PlanOptions | None:
    """A plan's :class:`PlanOptions` from its JSON form (None when the plan has none)."""
    if d is None:
        return None
    return PlanOptions(**{**d, "order_type": OrderType(d["order_type"]),
                          "limits": Limits(**d["limits"])})


# --- tracking error of a set of positions ---------------------------------------------------------

def tracking_error_of(book: Book, market: MarketSnapshot, risk: RiskModel,
                      contracts: Mapping[str, float]) -> float:
    """Annualised TE of ``book`` holding ``contracts``: sqrt(d' Sigma d + z' Sigma_b z), d = e - w*,
    e = (spot + B x) / V, z = x / V (the basis term when the risk model has one), x the futures
    USD exposure (``Book.futures_exposure``)."""
    held = book.with_futures(contracts, market)
    V = held.base(market)
    e = held.effective_weights(market)
    d = e - held.target_vector()
    idx = [risk.symbols.index(s) for s in held.asset_symbols]
    cov = risk.covariance[np.ix_(idx, idx)]
    if risk.basis_cov is not None and risk.basis_cov.shape == (len(held.contracts),) * 2:
        return tracking_error(d, cov, held.futures_exposure(market) / V, risk.basis_cov)
    return tracking_error(d, cov)


# --- planning -----------------------------------------------------------------------------------

def order_legs(kept: Sequence[tuple[TradePart, float]], instruments: Mapping[str, Instrument],
               market: MarketSnapshot, opts: PlanOptions, rule: ClientIdRule,
               pid: str, first_index: int = 0) -> list[OrderLeg]:
    """The orders of the kept parts (``npc``: USD per contract), reduce-only ones first, each split
    at the max quantity and numbered (from ``first_index``) with its client order id; limit prices
    (USD) by :func:`executor.price_band.limit_price`."""
    ordered = sorted(kept, key=lambda pn: not pn[0].reduce_only)  # reduce-only first (stable)
    legs: list[OrderLeg] = []
    for part, npc in ordered:
        inst = instruments[part.symbol]
        c = inst.contract
        mark = market.mark_price(part.symbol)
        for q in _split(part.contracts, c):
            side = Side.BUY if q > 0 else Side.SELL
            limit = (limit_price(mark, side == Side.BUY, opts.slippage_guard, c.tick, inst.price_band)
                     if opts.order_type == OrderType.LIMIT else None)
            idx = first_index + len(legs)
            legs.append(OrderLeg(index=idx, client_id=rule.make(pid, idx), symbol=part.symbol,
                                 exchange_symbol=inst.exchange_symbol, side=side, contracts=abs(q),
                                 notional=q * npc, price=mark, reduce_only=part.reduce_only,
                                 order_type=opts.order_type, limit_price=limit))
    return legs


def _target_notionals(solution: Solution | Mapping[str, float]) -> dict[str, float]:
    """Target USD notional by contract: the mapping itself, or a solution's target positions."""
    if isinstance(solution, Mapping):
        return dict(solution)
    return {p.symbol: p.notional for p in solution.target_positions}


def _reachable(start: Mapping[str, float], legs: Sequence[OrderLeg],
               instruments: Mapping[str, Instrument]) -> dict[str, float]:
    """The positions (contracts) the legs reach from ``start``, on each contract's lot grid."""
    reachable = dict(start)
    for leg in legs:
        step = instruments[leg.symbol].contract.lot_step
        reachable[leg.symbol] = round_to_step(reachable[leg.symbol] + leg.signed_contracts, step)
    return reachable


def _instrument(instruments: Mapping[str, Instrument], sym: str) -> Instrument:
    """The exchange's instrument of book contract ``sym`` (a clear error when it is not listed)."""
    if sym not in instruments:
        raise ValidationError(f"instruments.{sym}", "is missing",
                              f"list {sym} on the exchange or map it to an exchange symbol")
    return instruments[sym]


def _dropped_orders(parts: Sequence[tuple[TradePart, float, str]], target: Mapping[str, float],
                    instruments: Mapping[str, Instrument],
                    te: Callable[[Mapping[str, float]], float | None]) -> list[DroppedOrder]:
    """The legs the plan could not send (``parts``: part, USD per contract, why), each with the
    tracking error the plan leaves without it (``te`` of the target less that part)."""
    out = []
    for part, npc, reason in parts:
        without = dict(target)
        without[part.symbol] = round_to_step(target[part.symbol] - part.contracts,
                                             instruments[part.symbol].contract.lot_step)
        out.append(DroppedOrder(part.symbol, part.contracts, part.contracts * npc, reason,
                                te(without)))
    return out


def plan_orders(solution: Solution | Mapping[str, float], book: Book, market: MarketSnapshot,
                instruments: Mapping[str, Instrument], options: PlanOptions | None = None, *,
                risk: RiskModel | None = None, plan_id: str | None = None,
                now: datetime | None = None) -> OrderPlan:
    """The orders that move ``book`` (positions in the instruments' contract units) to the
    solution's target notionals at ``market`` marks; see the module docstring. ``solution`` may
    also be the target notionals themselves (USD by contract; a contract left out is held), as any
    policy gives them. Expiries are judged at the market snapshot's time."""
    opts = options or PlanOptions()
    now = now or datetime.now(UTC)  # one clock for the plan id and its creation time
    pid = plan_id or new_plan_id(now)
    rule = client_id_rule(opts.venue)
    clock: datetime = market.time
    targets = _target_notionals(solution)
    q0_all = dict(zip(book.contract_symbols, map(float, book.contracts_vector()), strict=True))
    off_all = dict(zip(book.contract_symbols, map(float, book.exposure_offset(market)), strict=True))
    start: dict[str, float] = {}
    target: dict[str, float] = {}
    unrounded: dict[str, float] = {}
    rounding: list[_Rounded] = []
    kept: list[tuple[TradePart, float]] = []
    dropped_parts: list[tuple[TradePart, float, str]] = []
    for sym in book.contract_symbols:
        inst = _instrument(instruments, sym)
        c = inst.contract
        mark = market.mark_price(sym)
        npc = c.notional_per_contract(mark)
        q0, off = q0_all[sym], off_all[sym]
        held_x = q0 * npc + off if off != 0 else q0 * npc  # the held exposure (USD)
        wanted, q1 = target_contracts(c, mark, targets.get(sym, held_x), q0, off)
        start[sym], target[sym], unrounded[sym] = q0, q1, wanted
        rounding.append(_Rounded(sym, (wanted - q0) * npc, (q1 - q0) * npc, c.lot_step * npc,
                                 c.lot_step))
        check_not_expired(c, clock, q0, q1)
        sent, dropped_here = move_parts(inst, npc, q0, q1, opts,
                                    near_expiry(c, clock, opts.min_days_to_expiry))
        kept += sent
        dropped_parts += dropped_here
    legs = order_legs(kept, instruments, market, opts, rule, pid)
    opts.limits.check(leg.notional for leg in legs)
    reachable = _reachable(start, legs, instruments)

    def te(q: Mapping[str, float]) -> float | None:
        return None if risk is None else tracking_error_of(book, market, risk, q)

    dropped = _dropped_orders(dropped_parts, target, instruments, te)
    te_before, te_target = te(start), te(target)
    warning = _rounding_warning(rounding, opts.rounding_warn_share, te_before,
                                te(unrounded) if risk is not None else None, te_target)
    warnings = (warning, band_warning(legs, instruments, opts.slippage_guard))
    created = now.isoformat()
    return OrderPlan(plan_id=pid, venue=opts.venue, created=created, book_name=book.name,
                     legs=tuple(legs), dropped=tuple(dropped), start=start, target=target,
                     reachable=reachable, tracking_error_before=te_before,
                     tracking_error_solution=te_target, tracking_error_residual=te(reachable),
                     warnings=tuple(w for w in warnings if w is not None), options=opts)


def plan_options(plan: OrderPlan) -> PlanOptions:
    """How the plan priced and checked its legs (its slippage guard, limits, expiry rule ...),
    for re-planned legs; a plan journalled without them keeps its venue and order type and the
    defaults."""
    if plan.options is not None:
        return plan.options
    kind = plan.legs[0].order_type if plan.legs else OrderType.MARKET
    return PlanOptions(venue=plan.venue, order_type=kind)
