"""Instruments: spot assets and futures contracts (perpetual or dated, linear or inverse).

Units: prices and notionals in the quote currency (USD/USDT); fees and spreads are fractions of
notional (0.0005 = 5 bp); funding intervals in hours; contract sizes in base units per contract for
linear contracts and in USD per contract for inverse ones.
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

import numpy as np

from models.errors import ValidationError, check_finite_positive, check_fraction

#: Asset symbols: an ASCII letter or digit, then letters, digits, '.', '_' or '-' (<= 32 characters).
ASSET_SYMBOL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")
ASSET_SYMBOL_RULE = ("ASCII letters and digits, then also '.', '_' or '-' (no spaces, at most "
                     "32 characters), e.g. 'BTC' or '1000PEPE'")
#: Contract and exchange symbols: as assets, plus ':' and '/' (ccxt 'BTC/USDT:USDT'; <= 64 chars).
CONTRACT_SYMBOL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}")
CONTRACT_SYMBOL_RULE = ("ASCII letters and digits, then also '.', '_', '-', ':' or '/' (no spaces, "
                        "at most 64 characters), e.g. 'BTC-PERP' or 'BTC/USDT:USDT'")
#: Default days before expiry within which a dated contract is no longer opened or increased.
MIN_DAYS_TO_EXPIRY = 2.0
#: Two contract quantities closer than this (relative) are the same position: no trade (the float
#: noise of a notional -> contracts round trip). The backtest and the order planner share it.
QTY_RTOL = 1e-9
SECONDS_PER_DAY = 86_400.0


def _offending_character(value: str, separators: str) -> str:
    """Names the first character of ``value`` a symbol may not hold, given the ``separators``
    allowed after the first character (for messages)."""
    for k, ch in enumerate(value):
        if ch.isspace():
            return f"whitespace ({unicodedata.name(ch, hex(ord(ch)))})"
        if not ch.isascii():
            return f"the non-ASCII character {ch!r} (U+{ord(ch):04X})"
        if ch.isalnum():
            continue
        if ch not in separators:
            return f"the character {ch!r}"
        if k == 0:
            return f"{ch!r} as its first character"
    return "a form that is not allowed"


def check_symbol(field: str, value: object, *, contract: bool = False) -> str:
    """``value`` if it is a valid asset symbol (``contract``: a contract or exchange symbol), else a
    ValidationError naming ``field``, the offending character and what is allowed. Symbols are sent
    to exchanges as they are, so whitespace and non-ASCII look-alikes are refused."""
    pattern, rule = ((CONTRACT_SYMBOL, CONTRACT_SYMBOL_RULE) if contract
                     else (ASSET_SYMBOL, ASSET_SYMBOL_RULE))
    if not isinstance(value, str):
        raise ValidationError(field, f"is {value!r}, not a text", f"give a symbol of {rule}")
    if pattern.fullmatch(value):
        return value
    if not value:
        problem = "is empty"
    elif len(value) > (64 if contract else 32):
        problem = f"is {value!r}, {len(value)} characters long"
    else:
        separators = "._-:/" if contract else "._-"
        problem = f"is {value!r}, which holds {_offending_character(value, separators)}"
    raise ValidationError(field, problem, f"use only {rule}")


def _as_utc(t: datetime) -> datetime:
    """``t`` as an aware UTC time (naive times are read as UTC)."""
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


class ContractKind(StrEnum):
    """A perpetual swap (funding every interval) or a dated future (basis converges at expiry)."""

    PERPETUAL = "perpetual"
    DATED = "dated"


class Settlement(StrEnum):
    """Linear: margined and sized in the quote (contract_size base units). Inverse: sized in USD."""

    LINEAR = "linear"
    INVERSE = "inverse"


@dataclass(frozen=True)
class TierBracket:
    """One exchange margin bracket: applies to position notional in [min_notional, max_notional).

    ``mmr`` is the maintenance margin rate (fraction), ``cum`` the cumulative maintenance amount (USD)
    that makes MM(n) = mmr * n - cum continuous across brackets.
    """

    min_notional: float
    max_notional: float
    max_leverage: float
    mmr: float
    cum: float


#: Tolerance (USD): maintenance margin may jump by this much at a bracket edge (and be this far from
#: 0 at notional 0) before a bracket table counts as discontinuous.
MM_JUMP_TOL_USD = 0.01


def continuous_cum(prev: TierBracket, mmr: float, lo: float) -> float:
    """The cum (USD) of a bracket starting at ``lo`` (USD) with rate ``mmr`` that keeps maintenance
    margin continuous after ``prev``: mmr_{k-1} lo - cum_{k-1} = mmr_k lo - cum_k, so
    cum_k = cum_{k-1} + (mmr_k - mmr_{k-1}) x lo."""
    return prev.cum + (mmr - prev.mmr) * lo


@dataclass(frozen=True)
class MarginJump:
    """Bracket ``k`` (0-based) makes maintenance margin jump: it would need cum ``continuous`` (USD)
    for continuity; MM is ``below`` USD just below its lower edge and ``at`` USD at it (for k = 0:
    MM at notional 0, which must be 0, so ``below`` = 0 and ``at`` = -cum_0)."""

    k: int
    continuous: float
    below: float
    at: float


def first_margin_jump(brackets: tuple[TierBracket, ...]) -> MarginJump | None:
    """The first bracket whose ``cum`` breaks continuity, None when there is none. With
    MM_k(n) = mmr_k n - cum_k, bracket 0 must give MM_0(0) = -cum_0 = 0 and bracket k >= 1 must
    meet the previous one at its lower edge lo_k: MM_k(lo_k) = MM_{k-1}(lo_k), i.e. cum_k =
    :func:`continuous_cum`. A miss up to MM_JUMP_TOL_USD (plus 1e-9 x lo_k of float noise) is
    allowed. Only then does max_k (mmr_k n - cum_k) equal the exchange's bracket lookup."""
    for k, b in enumerate(brackets):
        lo = b.min_notional
        continuous = 0.0 if k == 0 else continuous_cum(brackets[k - 1], b.mmr, lo)
        if abs(b.cum - continuous) <= MM_JUMP_TOL_USD + 1e-9 * lo:
            continue
        if k == 0:
            return MarginJump(0, 0.0, 0.0, -b.cum)
        prev = brackets[k - 1]
        return MarginJump(k, continuous, prev.mmr * lo - prev.cum, b.mmr * lo - b.cum)
    return None


@dataclass(frozen=True)
class MarginTiers:
    """Tier brackets of one contract, sorted by notional.

    Maintenance margin MM(n) = max_k (mmr_k n - cum_k) (USD, n = |notional| in USD): convex and piecewise
    linear, equal to the exchange's bracket lookup because ``cum`` makes it continuous and the rates
    do not fall from one bracket to the next (mmr_k >= mmr_{k-1}, as on every exchange; a falling
    rate is refused: the max would then not be the bracket rule).
    Every bracket must have mmr_k <= 1 / max_leverage_k (exchanges guarantee it): then at a leverage L
    the bracket allows, MM(n) <= n / L = IM(n), so the initial-margin constraint implies maintenance.
    """

    brackets: tuple[TierBracket, ...]

    def __post_init__(self) -> None:
        if not self.brackets:
            raise ValidationError("tiers", "has no brackets", "give at least one bracket")
        prev_hi = None
        for k, b in enumerate(self.brackets):
            f = f"tiers[{k}]"
            check_finite_positive(f"{f}.max_leverage", b.max_leverage)
            check_fraction(f"{f}.mmr", b.mmr)
            if b.mmr * b.max_leverage > 1 + 1e-12:
                raise ValidationError(f"{f}.mmr", f"is {b.mmr} at {b.max_leverage}x max leverage "
                                      f"(maintenance above initial margin)",
                                      "give mmr <= 1 / max_leverage, as every exchange bracket has")
            if k and b.mmr < self.brackets[k - 1].mmr:
                raise ValidationError(f"{f}.mmr", f"is {b.mmr}, below the previous bracket's "
                                      f"{self.brackets[k - 1].mmr} (the maintenance rate falls as the "
                                      "notional grows)",
                                      "give each bracket an mmr at least the previous bracket's, as the "
                                      "exchange's brackets have")
            if not math.isfinite(b.cum):
                raise ValidationError(f"{f}.cum", "is not finite", "give the exchange's cum amount")
            if b.max_notional <= b.min_notional:
                raise ValidationError(f"{f}.max_notional", "is not above min_notional",
                                      "give brackets with max_notional > min_notional")
            if prev_hi is not None and abs(b.min_notional - prev_hi) > 1e-6 * max(1.0, prev_hi):
                raise ValidationError(f"{f}.min_notional", f"is {b.min_notional}, expected {prev_hi}",
                                      "brackets must be contiguous and sorted by notional")
            prev_hi = b.max_notional

    @staticmethod
    def flat(max_leverage: float = 20.0, mmr: float = 0.005, cap: float = 1e12) -> MarginTiers:
        """A single bracket (no tiering)."""
        return MarginTiers((TierBracket(0.0, cap, max_leverage, mmr, 0.0),))

    @property
    def mmr(self) -> np.ndarray:
        """Maintenance rates of the brackets (fractions)."""
        return np.array([b.mmr for b in self.brackets])

    @property
    def cum(self) -> np.ndarray:
        """Cumulative maintenance amounts of the brackets (USD)."""
        return np.array([b.cum for b in self.brackets])

    def maintenance(self, notional: float | np.ndarray) -> np.ndarray:
        """MM(n) = max_k (mmr_k |n| - cum_k), USD; never below zero."""
        n = np.abs(np.asarray(notional, dtype=float))
        mm = np.max(np.multiply.outer(n, self.mmr) - self.cum, axis=-1)
        result: np.ndarray = np.maximum(mm, 0.0)
        return result

    def bracket_lookup(self, notional: float) -> float:
        """The exchange's own rule: find the bracket of |n|, then mmr * |n| - cum (USD)."""
        n = abs(notional)
        for b in self.brackets:
            if b.min_notional <= n < b.max_notional:
                return max(b.mmr * n - b.cum, 0.0)
        last = self.brackets[-1]
        return max(last.mmr * n - last.cum, 0.0)

    def max_notional_at_leverage(self, leverage: float) -> float:
        """Largest |notional| (USD) at which ``leverage`` is still allowed by the brackets."""
        allowed = [b.max_notional for b in self.brackets if b.max_leverage >= leverage - 1e-12]
        return max(allowed) if allowed else 0.0


@dataclass(frozen=True)
class SpotAsset:
    """A spot asset held in the book. ``fee`` is the spot taker fee (fraction of notional)."""

    symbol: str
    fee: float = 0.001
    lot_step: float = 0.0

    def __post_init__(self) -> None:
        check_symbol(f"assets.{self.symbol}.symbol", self.symbol)


@dataclass(frozen=True)
class FuturesContract:
    """A futures contract on ``underlying``.

    ``leverage`` is the leverage the user sets on the exchange: initial margin IM(n) = |n| / leverage.
    ``lot_step`` and ``min_qty`` are in contracts, ``min_notional`` in USD. ``funding_interval_h`` is the
    hours between funding settlements (perpetuals only).
    """

    symbol: str
    underlying: str
    kind: ContractKind = ContractKind.PERPETUAL
    settlement: Settlement = Settlement.LINEAR
    contract_size: float = 1.0
    lot_step: float = 0.001
    min_qty: float = 0.0
    max_qty: float = math.inf
    min_notional: float = 5.0
    tick: float = 0.01
    maker_fee: float = 0.0002
    taker_fee: float = 0.0005
    funding_interval_h: float = 8.0
    expiry: datetime | None = None
    leverage: float = 10.0
    tiers: MarginTiers = field(default_factory=MarginTiers.flat)

    def __post_init__(self) -> None:
        f = f"contracts.{self.symbol}"
        if not self.symbol:
            raise ValidationError("contracts[].symbol", "is empty", "give the contract a symbol")
        check_symbol(f"{f}.symbol", self.symbol, contract=True)
        if not self.underlying:
            raise ValidationError(f"{f}.underlying", "is empty", "name the spot asset it tracks")
        check_symbol(f"{f}.underlying", self.underlying)
        check_finite_positive(f"{f}.contract_size", self.contract_size)
        check_finite_positive(f"{f}.lot_step", self.lot_step, allow_zero=True)
        check_finite_positive(f"{f}.min_notional", self.min_notional, allow_zero=True)
        check_fraction(f"{f}.taker_fee", self.taker_fee, lo=-0.01, hi=0.05)
        check_fraction(f"{f}.maker_fee", self.maker_fee, lo=-0.01, hi=0.05)
        check_finite_positive(f"{f}.funding_interval_h", self.funding_interval_h)
        check_finite_positive(f"{f}.leverage", self.leverage)
        top = max(b.max_leverage for b in self.tiers.brackets)
        if self.leverage > top + 1e-12:
            raise ValidationError(f"{f}.leverage", f"is {self.leverage}x, above the tiers' {top}x",
                                  f"set leverage <= {top}")
        if self.kind == ContractKind.DATED and self.expiry is None:
            raise ValidationError(f"{f}.expiry", "is missing for a dated future",
                                  "give the expiry as an ISO date")

    def days_to_expiry(self, at: datetime) -> float | None:
        """Days (of 86,400 s; negative once expired) from ``at`` to the expiry, None without an
        expiry (perpetuals). Naive times are read as UTC."""
        if self.expiry is None:
            return None
        return (_as_utc(self.expiry) - _as_utc(at)).total_seconds() / SECONDS_PER_DAY

    def near_expiry(self, at: datetime, min_days: float) -> bool:
        """Whether the contract expires within ``min_days`` days of ``at``: ``days_to_expiry(at) <
        min_days`` (days of 86,400 s; an expired contract counts too; never for a contract without
        an expiry). Inside that window a position is not opened or increased, only reduced or
        closed (:func:`reduce_only_quantity`): the one rule of the order planner
        (``executor.plan_parts.near_expiry``), the optimiser's expiry row
        (``optimizer.prepare.near_expiry_mask``) and the backtest (``scenarios.replay_steps``)."""
        days = self.days_to_expiry(at)
        return days is not None and days < min_days

    def notional_per_contract(self, price: float) -> float:
        """USD notional of one contract at ``price``: size x price (linear) or size (inverse, USD)."""
        if self.settlement == Settlement.INVERSE:
            return self.contract_size
        return self.contract_size * price

    def contracts_for(self, notional: float, price: float) -> float:
        """Contracts (unrounded, signed) that carry ``notional`` USD at ``price``."""
        return notional / self.notional_per_contract(price)

    @functools.cached_property
    def max_notional_usd(self) -> float:
        """The largest |notional| the tiers allow at the chosen leverage (USD)."""
        return self.tiers.max_notional_at_leverage(self.leverage)


def reduce_only_quantity(q_old: float, q_new: float) -> float:
    """The position (signed contracts) the move ``q_old -> q_new`` reaches when only its reducing
    part may trade (a contract :meth:`FuturesContract.near_expiry`): ``q_new`` when it has the sign
    of ``q_old`` (or is 0) and ``|q_new| <= |q_old|``; ``q_old`` when it would grow the position
    (an opening from 0 stays 0); 0 when it would flip the sign (the closing part is sent, the
    opening part is not). The order planner's split (``executor.plan_parts.trade_parts``) keeps
    exactly these reduce-only parts."""
    if q_new == 0 or (q_old != 0 and math.copysign(1, q_new) == math.copysign(1, q_old)):
        return q_new if abs(q_new) <= abs(q_old) else q_old
    return 0.0  # a flip (or an opening from 0): only the close of q_old may trade


def check_not_expired(c: FuturesContract, at: datetime, position: float,
                      target: float | None = None) -> None:
    """Refuse a dated contract at or past its expiry (``at``, UTC) that holds a ``position`` or
    would be traded to ``target`` (contracts; None: the solve, before any target): the exchange
    settled it, so the position is stale. One ValidationError on ``contracts.<SYM>.expiry``, the
    order planner's and the solve's alike."""
    days = c.days_to_expiry(at)
    if days is None or c.expiry is None or days > 0 or (position == 0 and not target):
        return
    stamp = "%Y-%m-%d %H:%M UTC"
    held = (f"position {position:g}, target {target:g} contracts" if target is not None
            else f"position {position:g} contracts")
    raise ValidationError(f"contracts.{c.symbol}.expiry",
                          f"is {_as_utc(c.expiry).strftime(stamp)}, {-days:.2f} days before the "
                          f"market time {_as_utc(at).strftime(stamp)}: {c.symbol} has expired and "
                          f"cannot be traded ({held})",
                          f"remove {c.symbol} from the book (the exchange settled it at expiry) and "
                          "hedge with a live contract (the next dated future or the perpetual)")


@dataclass(frozen=True)
class ContractArrays:
    """Per-contract instrument numbers as arrays (M), for vectorised sizing: contract size (base
    units, or USD for inverse), inverse mask, lot step (contracts), minimum order notional (USD),
    leverage."""

    size: np.ndarray
    inverse: np.ndarray
    lot: np.ndarray
    min_notional: np.ndarray
    leverage: np.ndarray

    def notional_per_contract(self, prices: np.ndarray) -> np.ndarray:
        """USD notional of one contract at ``prices``: size x price (linear), size (inverse)."""
        return self.size * np.where(self.inverse, 1.0, prices)


_ARRAYS_CACHE: dict[int, tuple[tuple[FuturesContract, ...], ContractArrays]] = {}


def contract_arrays(contracts: tuple[FuturesContract, ...]) -> ContractArrays:
    """:class:`ContractArrays` of ``contracts``, cached by the tuple's identity (contracts are
    immutable, and a replay passes the same tuple every step)."""
    hit = _ARRAYS_CACHE.get(id(contracts))
    if hit is not None and hit[0] is contracts:
        return hit[1]
    arrays = ContractArrays(
        size=np.array([c.contract_size for c in contracts], dtype=float),
        inverse=np.array([c.settlement == Settlement.INVERSE for c in contracts], dtype=bool),
        lot=np.array([c.lot_step for c in contracts], dtype=float),
        min_notional=np.array([c.min_notional for c in contracts], dtype=float),
        leverage=np.array([c.leverage for c in contracts], dtype=float))
    for a in (arrays.size, arrays.inverse, arrays.lot, arrays.min_notional, arrays.leverage):
        a.flags.writeable = False
    if len(_ARRAYS_CACHE) > 256:
        _ARRAYS_CACHE.clear()
    _ARRAYS_CACHE[id(contracts)] = (contracts, arrays)
    return arrays
