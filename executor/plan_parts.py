"""The arithmetic under an order plan (:mod:`executor.plan`): lot-step rounding in decimal, a trade
split into its reduce-only and opening parts, orders above the max quantity split in chunks, the
expiry checks of dated contracts, the exchange's position cap, why a part cannot be sent, and the
warning when lot rounding removes most of a plan. Quantities in contracts (signed where stated),
notionals in USD, times UTC.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from typing import TYPE_CHECKING

from models.errors import ValidationError
from models.fill_rule import contracts_after
from models.instruments import QTY_RTOL, FuturesContract

if TYPE_CHECKING:
    from executor.plan import Instrument, PlanOptions

#: Lot rounding that removes less than this much trade notional (USD) is never reported.
ROUNDING_WARN_MIN_USD = 1.0


# --- arithmetic on lot steps (decimal, so 0.1 + 0.2 never leaves 0.30000000000000004) -------------

def round_to_step(q: float, step: float, mode: str = ROUND_HALF_EVEN) -> float:
    """``q`` rounded to a multiple of ``step`` (no rounding when step <= 0)."""
    if step <= 0:
        return float(q)
    s = Decimal(repr(float(step)))
    ratio = Decimal(repr(float(q))) / s  # float(): numpy scalars repr as "np.float64(...)"
    nearest = ratio.to_integral_value(rounding=ROUND_HALF_EVEN)
    if abs(ratio - nearest) < Decimal("1e-9"):  # float noise (2500 x 1.001 = 2502.4999999999995)
        ratio = nearest
    return float(ratio.to_integral_value(rounding=mode) * s)


def _tick_round(price: float, tick: float, up: bool) -> float:
    return round_to_step(price, tick, ROUND_CEILING if up else ROUND_FLOOR)


# --- trade parts and their checks ----------------------------------------------------------------

@dataclass(frozen=True)
class TradePart:
    symbol: str
    contracts: float  # signed
    reduce_only: bool


def trade_parts(symbol: str, q0: float, q1: float, step: float) -> list[TradePart]:
    """The trade q0 -> q1 as reduce-only and opening parts (signed contracts)."""
    delta = round_to_step(q1 - q0, step)
    if delta == 0:
        return []
    if q0 == 0 or (q1 != 0 and math.copysign(1, q1) == math.copysign(1, q0) and abs(q1) > abs(q0)):
        return [TradePart(symbol, delta, False)]
    if q1 == 0 or math.copysign(1, q1) == math.copysign(1, q0):  # shrinks (|q1| < |q0|) or closes
        return [TradePart(symbol, delta, True)]
    return [TradePart(symbol, -q0, True), TradePart(symbol, q1, False)]  # flips sign


def _split(q: float, c: FuturesContract) -> list[float]:
    """|q| in the fewest chunks of at most max_qty, as equal as the lot allows (sizes differ by one
    lot at most, each at least half of max_qty: a remainder chunk under the min notional is never
    left), sign kept."""
    if not math.isfinite(c.max_qty) or abs(q) <= c.max_qty:
        return [q]
    if c.lot_step <= 0:
        n = math.ceil(abs(q) / c.max_qty)
        return [q / n] * n
    chunk_lots = int(round_to_step(c.max_qty, c.lot_step, ROUND_FLOOR) / c.lot_step + 0.5)
    if chunk_lots <= 0:
        raise ValidationError(f"contracts.{c.symbol}.max_qty", f"is {c.max_qty}, below one lot",
                              "check the exchange's market metadata")
    lots = int(round_to_step(abs(q), c.lot_step) / c.lot_step + 0.5)
    n = -(-lots // chunk_lots)
    base, extra = divmod(lots, n)
    sizes = [base + 1] * extra + [base] * (n - extra)
    return [math.copysign(round_to_step(k * c.lot_step, c.lot_step), q) for k in sizes]


def near_expiry(c: FuturesContract, clock: datetime, min_days: float) -> str | None:
    """Why an opening leg of ``c`` is dropped when ``c`` expires within ``min_days`` days
    (:meth:`FuturesContract.near_expiry`, the rule the backtest applies too), else None."""
    days = c.days_to_expiry(clock)
    if days is None or c.expiry is None or not c.near_expiry(clock, min_days):
        return None
    return (f"{c.symbol} expires {_iso(c.expiry)}, {days:.2f} days after the market time, within "
            f"min_days_to_expiry = {min_days:g} days: it is not opened or increased that close to "
            "expiry (closing and reducing orders are still sent)")


def _iso(t: datetime) -> str:
    """``t`` as 'YYYY-MM-DD HH:MM UTC' (naive times are UTC)."""
    utc = t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
    return utc.strftime("%Y-%m-%d %H:%M UTC")


#: a tier bracket's cap at or above this (USD) is the exchange's "no cap" (optimizer.prepare's rule)
NO_CAP_USD = 1e11


def capped_target(c: FuturesContract, npc: float, q0: float, q1: float) -> float:
    """The position (signed contracts) a plan may reach on the way to ``q1`` under the exchange's
    position cap at the account's leverage (``FuturesContract.max_notional_usd``, the largest
    notional the brackets allow at ``c.leverage``; Binance refuses an order past it, -2027):
    ``q1`` when |q1| x ``npc`` is within the cap or the move only reduces the position; else the
    largest lot multiple within the cap, on q1's side, and never less than a position already
    held on that side (the cap stops growth; it does not cut what is held)."""
    cap = c.max_notional_usd
    if not (math.isfinite(cap) and cap < NO_CAP_USD) or npc <= 0 or abs(q1) * npc <= cap:
        return q1
    same_side = q0 != 0 and math.copysign(1, q0) == math.copysign(1, q1)
    if same_side and abs(q1) <= abs(q0):
        return q1
    room = round_to_step(cap / npc, c.lot_step, ROUND_FLOOR)
    return math.copysign(max(room, abs(q0) if same_side else 0.0), q1)


def cap_reason(c: FuturesContract) -> str:
    """Why the part of a trade past :func:`capped_target` is not sent."""
    return (f"past the exchange's position cap at {c.leverage:g}x leverage "
            f"({c.max_notional_usd:,.0f} USD of notional): lower the leverage or the target")


def drop_reason(part: TradePart, c: FuturesContract, npc: float, opts: PlanOptions,
                 near_expiry: str | None, inst: Instrument | None = None) -> str | None:
    """Why ``part`` (``npc`` USD per contract) cannot be sent, or None when it can (``inst``:
    the exchange's instrument, which may not trade now)."""
    if inst is not None and inst.halted:
        return f"{inst.exchange_symbol} does not trade now (exchange status {inst.halted})"
    if near_expiry is not None and not part.reduce_only:
        return near_expiry
    # a limit sell is priced (and its notional checked by the exchange) at mark x (1 - guard)
    at_limit = opts.order_type == "limit" and part.contracts < 0
    notional = abs(part.contracts) * npc * (1 - opts.slippage_guard if at_limit else 1.0)
    if abs(part.contracts) < c.min_qty - 1e-12:
        return f"below min quantity {c.min_qty:g} contracts"
    if notional < c.min_notional - 1e-9 and not (part.reduce_only and opts.reduce_only_exempt):
        where = " at its limit price" if at_limit else ""
        return f"{notional:,.2f} USD{where} is below the min notional {c.min_notional:,.2f} USD"
    return None


def move_parts(inst: Instrument, npc: float, q0: float, q1: float, opts: PlanOptions,
           near: str | None) -> tuple[list[tuple[TradePart, float]], list[tuple[TradePart, float, str]]]:
    """The parts of the move q0 -> q1 (contracts of ``inst``, ``npc`` USD each) that are sent,
    and those dropped with the reason: what :func:`drop_reason` refuses, and the part past the
    exchange's position cap at the account's leverage (:func:`capped_target`)."""
    c = inst.contract
    # a limit buy is priced at mark x (1 + guard): the exchange's cap is checked at that price
    worst = 1 + opts.slippage_guard if opts.order_type == "limit" and q1 > 0 else 1.0
    q_sent = capped_target(c, npc * worst, q0, q1)
    kept: list[tuple[TradePart, float]] = []
    dropped: list[tuple[TradePart, float, str]] = []
    for part in trade_parts(c.symbol, q0, q_sent, c.lot_step):
        reason = drop_reason(part, c, npc, opts, near, inst)
        if reason is None:
            kept.append((part, npc))
        else:
            dropped.append((part, npc, reason))
    excess = round_to_step(q1 - q_sent, c.lot_step)
    if excess != 0:
        dropped.append((TradePart(c.symbol, excess, False), npc, cap_reason(c)))
    return kept, dropped


# --- the warning when lot rounding removes most of a plan -----------------------------------------

@dataclass(frozen=True)
class _Rounded:
    """One contract's trade as the solution asks for it and after lot rounding (USD notional),
    and the notional of one lot step (USD)."""

    symbol: str
    requested: float
    rounded: float
    lot_usd: float
    lot_step: float

    @property
    def removed(self) -> float:
        """|requested - rounded| (USD): the trade notional lot rounding took away."""
        return abs(self.requested - self.rounded)


def _pct_text(x: float | None) -> str:
    return "n/a (no risk model)" if x is None else f"{100 * x:.3f}%"


def _rounding_warning(rows: Sequence[_Rounded], share: float, te_now: float | None,
                      te_unrounded: float | None, te_rounded: float | None) -> str | None:
    """A warning when lot rounding removed at least ``share`` of the solution's trade notional
    (and at least ROUNDING_WARN_MIN_USD), naming the contracts; None otherwise. TEs annualised."""
    asked = sum(abs(r.requested) for r in rows)
    removed = sum(r.removed for r in rows)
    if asked <= 0 or removed < ROUNDING_WARN_MIN_USD or removed < share * asked:
        return None
    whole = all(r.rounded == 0 for r in rows)
    what = "the whole solution" if whole else f"most of the solution ({removed / asked:.0%})"
    named = sorted((r for r in rows if r.removed >= max(0.01, 0.01 * removed)),
                   key=lambda r: -r.removed)  # the contracts behind at least 1% of it
    detail = "; ".join(f"{r.symbol} trade {r.requested:,.2f} USD -> {r.rounded:,.2f} USD (lot step "
                       f"{r.lot_step:g} contracts = {r.lot_usd:,.2f} USD)" for r in named)
    return (f"lot rounding removed {what}: {asked:,.2f} USD of trades asked, "
            f"{sum(abs(r.rounded) for r in rows):,.2f} USD left ({detail}). Tracking error: now "
            f"{_pct_text(te_now)}, solution before rounding {_pct_text(te_unrounded)}, after "
            f"rounding {_pct_text(te_rounded)}. Fix: use contracts with a finer lot step, or "
            "rebalance a larger book")


def target_contracts(c: FuturesContract, mark: float, notional: float,
                      q0: float, offset: float = 0.0) -> tuple[float, float]:
    """(contracts wanted for ``notional`` USD of exposure at ``mark``, the same rounded to the lot
    step); a rounded target within ``QTY_RTOL`` of the position ``q0`` is ``q0`` (without a lot
    step, the float noise of a notional round trip is no trade), and so is a target within
    ``QTY_RTOL`` of the held exposure x0 = q0 npc + ``offset`` (``Book.exposure_offset``: 0 for
    linear, an inverse position's USD PnL: its exposure is q0 x size x mark / entry). An inverse
    position held away from its entry moves by the exchange's fill rule
    (:func:`models.fill_rule.contracts_after`: it grows by npc of exposure a contract, shrinks in
    proportion to its exposure, re-opens at the mark past a flip)."""
    x0 = q0 * c.notional_per_contract(mark) + offset
    if offset != 0 and math.isclose(notional, x0, rel_tol=QTY_RTOL, abs_tol=0.0):
        return q0, q0
    wanted = (contracts_after(notional, q0, x0, c.notional_per_contract(mark)) if offset != 0
              else c.contracts_for(notional, mark))
    q1 = round_to_step(wanted, c.lot_step)
    return wanted, (q0 if math.isclose(q1, q0, rel_tol=QTY_RTOL, abs_tol=0.0) else q1)
