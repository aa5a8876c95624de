"""Limit prices inside the exchange's price band (Binance USD-M ``PERCENT_PRICE``).

Binance refuses a LIMIT order priced outside a band around the mark price M (USD): a BUY above
M x multiplierUp (-4016 "Price is higher than mark price multiplier cap") or a SELL below
M x multiplierDown (-4024 "Price is lower than mark price multiplier floor"); multiplierUp can be
as low as 1.02. A limit leg at the slippage guard g (fraction of mark) is therefore priced

- BUY:  min(M x (1 + g), M x multiplierUp), rounded DOWN to the tick (USD);
- SELL: max(M x (1 - g), M x multiplierDown), rounded UP to the tick;

the band's edge computed in decimal (M x multiplier exactly, as the exchange checks it), so the
rounding never puts it a float ulp outside. Without a band (None: the venue states none, or a
book's own instruments in dry and paper runs) the price is the guard's, as before. Clamping only
tightens the worst fill the guard allows, so it is always safe; a plan with a clamped leg says so
(:func:`band_warning`), naming the contracts and their bands.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import TYPE_CHECKING

from executor.plan_parts import _tick_round

if TYPE_CHECKING:
    from executor.plan import Instrument, OrderLeg

#: (multiplierDown, multiplierUp): the band of a limit price, as fractions of the mark price.
PriceBand = tuple[float, float]


def guard_price(mark: float, buy: bool, guard: float, tick: float) -> float:
    """The limit price (USD) at the slippage guard alone: mark x (1 + guard) rounded down to the
    tick for a buy, mark x (1 - guard) rounded up for a sell (never past the guard)."""
    return (_tick_round(mark * (1 + guard), tick, up=False) if buy
            else _tick_round(mark * (1 - guard), tick, up=True))


def band_edge(mark: float, buy: bool, band: PriceBand, tick: float) -> float:
    """The band's edge on the leg's side (USD): mark x multiplierUp rounded down to the tick for a
    buy, mark x multiplierDown rounded up for a sell; exact decimal arithmetic (no tick when
    ``tick`` <= 0)."""
    edge = Decimal(repr(float(mark))) * Decimal(repr(float(band[1] if buy else band[0])))
    if tick <= 0:
        return float(edge)
    step = Decimal(repr(float(tick)))
    lots = (edge / step).to_integral_value(rounding=ROUND_FLOOR if buy else ROUND_CEILING)
    return float(lots * step)


def limit_price(mark: float, buy: bool, guard: float, tick: float,
                band: PriceBand | None) -> float:
    """A limit leg's price (USD): the guard's (:func:`guard_price`), held inside the exchange's
    band when one is known: min(guard price, :func:`band_edge`) for a buy, max(...) for a sell."""
    price = guard_price(mark, buy, guard, tick)
    if band is None:
        return price
    edge = band_edge(mark, buy, band, tick)
    return min(price, edge) if buy else max(price, edge)


def band_warning(legs: Sequence[OrderLeg], instruments: Mapping[str, Instrument],
                 guard: float) -> str | None:
    """A warning naming the contracts whose limit legs were held inside the exchange's band
    (their limit price differs from :func:`guard_price` at the leg's mark), with the band, the
    price sent and the guard's; None when no leg was clamped. Prices in USD, guard a fraction."""
    seen: dict[str, str] = {}
    within = guard
    for leg in legs:
        inst = instruments[leg.symbol]
        if leg.limit_price is None or inst.price_band is None or leg.symbol in seen:
            continue
        buy = leg.side == "buy"
        asked = guard_price(leg.price, buy, guard, inst.contract.tick)
        if leg.limit_price == asked:
            continue
        down, up = inst.price_band
        within = min(within, up - 1 if buy else 1 - down)
        seen[leg.symbol] = (f"{leg.symbol} (band {down:g}-{up:g} x mark: {leg.side} limit "
                            f"{leg.limit_price:,.10g} USD at mark {leg.price:,.10g}, not "
                            f"{asked:,.10g})")
    if not seen:
        return None
    return (f"the slippage guard {100 * guard:.2f}% reaches past the exchange's price band "
            f"(PERCENT_PRICE) of {', '.join(seen.values())}: those limit prices are held at the "
            "band's edge, as the exchange refuses a price past it, so their worst fill is tighter "
            "than the guard and they may expire unfilled if the mark moves. Fix: none needed; a "
            f"guard of at most {100 * max(within, 0.0):.2f}% keeps every leg at the guard")
