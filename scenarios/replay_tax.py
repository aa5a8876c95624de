"""Taxes in the replay: spot tax lots that follow the trades, realised spot tax and realised
futures PnL tax, paid from the wallet cash (USD; rates are fractions; time is UTC).

On only when the replay is given tax settings (``run_backtest(tax=...)``, a
``SpotLegSettings`` with ``rates``: the book file's [tax] and [[lots]]), or when the policy is an
optimiser whose spot leg prices tax (``settings.spot.enabled`` with ``rates``): the replay then
charges the tax that optimiser prices. Off (the default), nothing below runs and the recorded
frames are those of a replay without taxes, bit for bit.

**Lots follow the spot.** The state holds each asset's lots (``ReplayState.lots``). At the end of
every step (after the policy's fills, the collateral sweeps and any sale of pledged collateral,
all at the step's close S_i and time t), each asset's net change of quantity dq_i against its lots
is booked: dq_i < 0 sells -dq_i units through :func:`models.tax.realised_tax` with the book's
lot method (HIFO, FIFO or specific: tax-optimal), the tax (negative: a credit) leaves the cash;
dq_i > 0 adds one lot (dq_i units, basis S_i, acquired t). Trades of one asset within one step
net out (they fill at the same close and time), except a policy's declared round trip
(``TargetHoldings.spot_gross``: a loss harvest, sell loss lots and buy back): its sale of s_i
units is booked first, lots by the lot method and its tax realised, and the rest of the step's
change, dq_i + s_i, is booked as above (a buy-back then adds a lot at S_i and t). The
optimising policy is handed the lots as they stand (``OptimizedFutures(..., lots=...)``), so its
tax curves are those of the book it trades.

**Futures tax.** With ``rates.futures`` set (the [tax] section's ``futures``; None: no futures
tax), step k pays ``models.tax.futures_tax`` on the futures PnL realised in the step,

    realised_k = futures_pnl_k + U_start,k - U_end,k,

U the unrealised PnL of the open positions against their **average-cost tax entries**
(:class:`FuturesTaxBasis`; start: the previous step's end; step 0: the book as given at the first
marks; end: after the fills). The tax entries follow each contract's net change of the step at
the step's mark p: an add to a position (same sign, larger) averages the entry,
e' = (q e + (q' - q) p) / q'; a reduction keeps it (the part closed realises (q - q') (p - e)
x size); a flip or a new position starts at p. So a position closed, reduced, settled at expiry
or liquidated realises its PnL, and adding to one realises nothing (the replay's own book
re-strikes changed positions at mark; the tax does not follow that). A loss gives a credit at
the same rate (no carry-forward, no wash-sale rules). Funding is not taxed.

Recorded (only when taxes are on): step columns ``tax_spot``, ``tax_futures``, ``tax`` (their
sum, USD, > 0 paid), ``tax_cumulative`` and ``tax_deferred``; the NAV identity per step gains
``- tax``. ``tax_deferred`` (USD) is the tax that selling every lot at the step's close would
realise after the step (:func:`deferred_tax`: sum over lots of rate(holding period) x quantity x
(close - basis), losses credited), plus with a futures rate the tax of closing every futures
position (rate x its unrealised PnL against the tax entries): the liability a present-value view
of tax adds at a horizon.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from models.book import Book, FuturesPosition
from models.errors import ValidationError
from models.fill_rule import average_entry
from models.instruments import Settlement
from models.market import MarketSnapshot, as_datetime
from models.tax import (
    LotMethod,
    TaxLot,
    TaxRates,
    futures_tax,
    realised_tax,
    tax_per_unit,
    total_quantity,
)
from optimizer.policies import Policy
from optimizer.settings import SpotLegSettings
from optimizer.spot_data import LOT_SUM_RTOL, check_lots
from scenarios.replay_state import FuturesTaxBasis, ReplayState

#: Step columns added when taxes are on, in order (USD).
TAX_COLUMNS = ["tax_spot", "tax_futures", "tax", "tax_cumulative", "tax_deferred"]


@dataclass(frozen=True)
class ReplayTax:
    """What the replay needs to tax: the rates and the books' lot method."""

    rates: TaxRates
    method: LotMethod

    @property
    def futures_on(self) -> bool:
        """True when realised futures PnL is taxed: at ``rates.futures_rate``, the short-term rate
        unless ``rates.futures`` is given (as the book file's [tax] documents); a futures rate of
        0 taxes nothing."""
        return self.rates.futures_rate != 0.0


def tax_settings(tax: SpotLegSettings | None, policy: Policy) -> SpotLegSettings | None:
    """The tax settings of a replay: ``tax`` when given, else those of an optimising policy whose
    spot leg prices tax, else None (taxes off). An optimiser that prices tax behind a wrapper is
    refused either way: the replay hands its tax lots only to the optimiser itself."""
    opt = policy.optimiser()
    priced = opt is not None and opt.trades_spot and opt.settings.spot.rates is not None
    if priced and opt is not policy:
        raise ValidationError("policy", f"{policy.name!r} wraps an optimiser whose spot leg prices "
                              "tax, and the replay hands tax lots only to the optimiser itself",
                              "replay the optimiser without the wrapper, or switch its tax off")
    if tax is not None:
        if tax.rates is None:
            raise ValidationError("tax.rates", "are missing",
                                  "give the [tax] section's short_term and long_term rates")
        return tax
    return opt.settings.spot if priced and opt is not None else None


def start_taxes(book: Book, settings: SpotLegSettings) -> tuple[ReplayTax, dict[str, tuple[TaxLot, ...]]]:
    """The replay's tax rules and its initial lots (checked against the book's spot)."""
    assert settings.rates is not None
    check_lots(settings.lots, book.spot, book.asset_symbols, "lots")
    lots = {a: tuple(settings.lots.get(a, ())) for a in book.asset_symbols}
    return ReplayTax(rates=settings.rates, method=settings.lot_method), lots


def book_lots(tax: ReplayTax, state: ReplayState, market: MarketSnapshot) -> float:
    """Book every asset's net quantity change against its lots at ``market`` (see the module
    docstring); the tax (USD, negative: a credit) is paid from cash. Returns it."""
    assert state.lots is not None
    now: datetime = as_datetime(market.time)
    paid = 0.0
    for a, held in state.spot.items():
        lots = state.lots.get(a, ())
        first = state.sold_first.pop(a, 0.0)
        if first > 0:  # a loss harvest: its sale is booked first, by the lot method
            t, left = realised_tax(lots, min(first, total_quantity(lots)), tax.method,
                                   market.spot_price(a), now, tax.rates)
            lots = tuple(left)
            state.lots[a] = lots
            paid += t
        dq = held - total_quantity(lots)
        if dq == 0:
            continue
        px = market.spot_price(a)
        if dq > 0:
            state.lots[a] = (*lots, TaxLot(dq, px, now))
            continue
        before = total_quantity(lots)
        t, left = realised_tax(lots, min(-dq, before), tax.method, px, now, tax.rates)
        state.lots[a] = tuple(left)
        paid += t
        # a lot sold down to dust is dropped from the books (models.tax); the holding follows, so
        # the two never disagree by a rounding residue (the next step's lot check refused it)
        rest = total_quantity(left)
        if abs(state.spot[a] - rest) <= LOT_SUM_RTOL * before:
            state.spot[a] = rest
    state.cash -= paid
    return paid


def pay_futures_tax(tax: ReplayTax, state: ReplayState, realised: float) -> float:
    """Pay ``futures_tax`` on ``realised`` futures PnL (USD) from cash; returns it (0 when off)."""
    if not tax.futures_on or realised == 0:
        return 0.0
    paid = futures_tax(realised, tax.rates)
    state.cash -= paid
    return paid



def deferred_tax(tax: ReplayTax, state: ReplayState, market: MarketSnapshot,
                 basis: FuturesTaxBasis | None = None) -> float:
    """The tax (USD, negative: a credit) that selling all the lots at ``market``'s closes would
    realise, sum_i sum_l q_l tau_l (S_i - basis_l) with tau_l the lot's rate by holding period,
    plus, with a futures rate and ``basis``, that rate times the futures PnL not yet realised
    (``basis.u``, against the average-cost entries: what closing every position would tax)."""
    assert state.lots is not None
    now: datetime = as_datetime(market.time)
    spot = math.fsum(lot.quantity * tax_per_unit(lot, market.spot_price(a), now, tax.rates)
                     for a, lots in state.lots.items() for lot in lots)
    if basis is None or not tax.futures_on:
        return spot
    return spot + futures_tax(basis.u, tax.rates)


def _tax_upnl(book: Book, entries: dict[str, tuple[float, float]], market: MarketSnapshot) -> float:
    """Unrealised PnL (USD) of ``entries`` at ``market``'s marks (the book's PnL formulas)."""
    if not entries:
        return 0.0
    view = book.evolve(futures={s: FuturesPosition(q, e) for s, (q, e) in entries.items()},
                       validate=False)
    return view.unrealized_pnl(market)


def start_futures_basis(book: Book, market: MarketSnapshot) -> FuturesTaxBasis:
    """The book's positions as given, their entries as the tax entries, valued at ``market``."""
    entries = {s: (p.contracts, p.entry_price) for s, p in book.futures.items() if p.contracts != 0}
    return FuturesTaxBasis(entries=entries, u=_tax_upnl(book, entries, market))


def futures_realised(book: Book, basis: FuturesTaxBasis, state: ReplayState, market: MarketSnapshot,
                     futures_pnl: float) -> float:
    """The futures PnL realised in the step (USD): ``futures_pnl + u_start - u_end`` with the tax
    entries moved to the positions now held (:func:`models.fill_rule.average_entry` at the step's marks).
    Updates ``basis``."""
    entries: dict[str, tuple[float, float]] = {}
    inverse = {c.symbol for c in book.contracts if c.settlement == Settlement.INVERSE}
    for sym, pos in state.futures.items():
        if pos.contracts == 0:
            continue
        q0, e0 = basis.entries.get(sym, (0.0, 0.0))
        entries[sym] = (pos.contracts, average_entry(q0, e0, pos.contracts, market.mark_price(sym),
                                                     sym in inverse))
    u_end = _tax_upnl(book, entries, market)
    realised = futures_pnl + basis.u - u_end
    basis.entries, basis.u = entries, u_end
    return realised


def futures_gains(book: Book, basis: FuturesTaxBasis, market: MarketSnapshot) -> dict[str, float]:
    """Unrealised PnL (USD) of each open position against its tax entry at ``market``'s marks:
    the gains an optimiser that prices the futures tax is handed (``futures_gains``)."""
    return {s: _tax_upnl(book, {s: qe}, market) for s, qe in basis.entries.items()}
