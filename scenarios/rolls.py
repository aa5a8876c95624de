"""Rolling a position along a chain of dated futures (quarterlies) in the replay.

Units: notionals and prices USD; ``roll_days_before`` in days; times UTC.

- :class:`RollingPolicy` wraps a policy that targets one "front" contract symbol and moves the
  position along a chain of dated contracts (quarterlies), rolling ``roll_days_before`` days before
  each expiry; the backtest records the rolls in ``BacktestResult.rolls``.
- Dated marks come from :mod:`scenarios.dated_basis` (a basis model) or
  :mod:`scenarios.quarterly_basis` (real quarterly closes and a fitted term structure).
- Settlement at expiry is done by :func:`scenarios.replay.run_backtest` (step 2b: closed at
  spot, ``taker_fee`` charged, trade kind "settle").
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace

import pandas as pd

from models.book import Book, FuturesPosition
from models.errors import ValidationError
from models.instruments import FuturesContract
from models.market import MarketSnapshot
from optimizer.policies import OptimizedFutures, Policy, TargetHoldings
from scenarios.backtest_result import RollTargets
from scenarios.dated_basis import NS_PER_DAY
from scenarios.replay_inputs import policy_min_days
from scenarios.settlement import expiry_ns


class RollingPolicy(Policy):
    """Roll a position along a chain of dated contracts (quarterlies) on one underlying.

    ``inner`` targets the chain through one symbol, the *front* ``schedule[0].symbol``. At t the
    *active* contract is the first of ``schedule`` (sorted by expiry T_k) with
    ``t < T_k - roll_days_before`` days; when none is left the chain is flat. ``roll_days_before``
    must be >= ``min_days_to_expiry`` (the inner optimiser's setting, else 2 days): inside that
    window the replay, as the order planner, only reduces a contract. The inner policy sees
    the book with the whole chain as one position in the front symbol, priced as the active
    contract: contract spec and mark of the active one, notional
    ``N = sum_k q_k x size_k x mark_k`` (the chain's positions at their marks) and entry = mark, its
    unrealised PnL moved into cash (so NAV, wallet and collateral are those of the real book).
    The inner's front target x (USD; default N) goes to the active contract, every other chain
    contract to 0; other contracts and spot pass through. A position still in a non-active chain
    contract is rolled: closed at its mark, x opened in the active one, both legs charged as normal
    futures trades (fee + slippage) and declared in ``RollTargets.rolls`` so the backtest records it
    (``BacktestResult.rolls``, with the basis ``x (P_to - P_from) / P_to`` that the new leg pays as
    it converges). Every contract of the schedule must be in the book.
    """

    def __init__(self, inner: Policy, schedule: Sequence[FuturesContract],
                 roll_days_before: float = 3.0) -> None:
        if not schedule:
            raise ValidationError("schedule", "is empty", "give the chain of dated contracts")
        if not (math.isfinite(roll_days_before) and roll_days_before >= 0):
            raise ValidationError("roll_days_before", f"is {roll_days_before}",
                                  "give the days before expiry to roll (>= 0)")
        min_days = policy_min_days(inner)
        if roll_days_before < min_days:
            raise ValidationError("roll_days_before", f"is {roll_days_before:g} days, inside "
                                  f"min_days_to_expiry = {min_days:g} days, where a dated contract "
                                  "is not opened or increased (the chain would still be opened in "
                                  "a contract it cannot trade)",
                                  f"set roll_days_before >= {min_days:g}, or lower "
                                  "constraints.min_days_to_expiry")
        expiries: list[int] = []
        for c in schedule:
            e = expiry_ns(c)
            if e is None:
                raise ValidationError(f"schedule.{c.symbol}", "is not a dated future",
                                      "list contracts of kind DATED with an expiry")
            if c.underlying != schedule[0].underlying:
                raise ValidationError(f"schedule.{c.symbol}.underlying",
                                      f"is {c.underlying!r}, not {schedule[0].underlying!r}",
                                      "roll contracts on one underlying")
            if expiries and e <= expiries[-1]:
                raise ValidationError(f"schedule.{c.symbol}.expiry", "is not after the previous one",
                                      "sort the chain by expiry, each contract once")
            expiries.append(e)
        self.inner = inner
        self.schedule = tuple(schedule)
        self.roll_days_before = float(roll_days_before)
        self.front = schedule[0].symbol
        self.name = f"rolling_{inner.name}"
        self._roll_at = [e - round(self.roll_days_before * NS_PER_DAY) for e in expiries]

    def active(self, t: pd.Timestamp) -> FuturesContract | None:
        """The contract the chain is held in at t: the first with t < expiry - roll_days_before."""
        ts = pd.Timestamp(t)
        ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
        t_ns = int(ts.as_unit("ns").value)
        for c, at in zip(self.schedule, self._roll_at, strict=True):
            if t_ns < at:
                return c
        return None

    def _view(self, book: Book, market: MarketSnapshot,
              shown: FuturesContract) -> tuple[Book, MarketSnapshot, float]:
        """The book and market the inner policy sees, and the chain's notional N (USD)."""
        chain = {c.symbol for c in self.schedule}
        missing = sorted(chain - set(book.contract_symbols))
        if missing:
            raise ValidationError("book.contracts", f"lacks the schedule's {missing}",
                                  "list every contract of the roll schedule in the book")
        held = replace(book, futures={s: p for s, p in book.futures.items() if s in chain})
        upnl = held.unrealized_pnl(market)
        notional = float(held.futures_notional(market).sum())
        front = replace(shown, symbol=self.front)
        mark = market.mark_price(shown.symbol)
        contracts: list[FuturesContract] = []
        for c in book.contracts:  # book order, the chain shown once where its first member is
            if c.symbol not in chain:
                contracts.append(c)
            elif not any(k.symbol == self.front for k in contracts):
                contracts.append(front)
        futures = {s: p for s, p in book.futures.items() if s not in chain}
        if notional != 0:
            futures[self.front] = FuturesPosition(front.contracts_for(notional, mark), mark)
        view = replace(book, contracts=tuple(contracts), futures=futures, cash=book.cash + upnl)

        def relabel(values: Mapping[str, float]) -> dict[str, float]:
            out = {s: v for s, v in values.items() if s not in chain}
            if shown.symbol in values:
                out[self.front] = values[shown.symbol]
            return out

        mk = replace(market, mark={**relabel(market.mark), self.front: mark},
                     funding=relabel(market.funding), half_spread=relabel(market.half_spread),
                     adv=relabel(market.adv), funding_interval_h=relabel(market.funding_interval_h))
        return view, mk, notional

    def optimiser(self) -> OptimizedFutures | None:
        """The inner policy's optimiser: the replay prices the funding and the wallet as it would
        for the inner policy alone."""
        return self.inner.optimiser()

    def __call__(self, book: Book, market: MarketSnapshot, t: pd.Timestamp) -> TargetHoldings:
        act = self.active(t)
        shown = act if act is not None else self.schedule[-1]
        view, mk, notional = self._view(book, market, shown)
        inner = self.inner(view, mk, t)
        x = float(inner.futures.get(self.front, notional))
        futures = {s: float(v) for s, v in inner.futures.items() if s != self.front}
        rolls: list[tuple[str, str]] = []
        for c in self.schedule:
            futures[c.symbol] = x if act is not None and c.symbol == act.symbol else 0.0
            pos = book.futures.get(c.symbol)
            if act is not None and c.symbol != act.symbol and pos is not None and pos.contracts != 0:
                rolls.append((c.symbol, act.symbol))
        return RollTargets(spot=dict(inner.spot), futures=futures, solution=inner.solution,
                           solve_time_ms=inner.solve_time_ms,
                           solver_fallbacks=inner.solver_fallbacks, rolls=tuple(rolls))
