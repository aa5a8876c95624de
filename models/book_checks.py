"""The checks of a :class:`models.book.Book` at construction: one clear error per mistake, naming the
field (``spot.BTC``, ``targets``, ``futures.BTC-PERP.entry_price``, ...) and the fix.

Symbols are unique and known (every contract's underlying, spot holding, target, position and
pledge names a listed asset or contract); spot quantities are finite and >= 0 (spot is never
short); target weights are finite, >= 0 and sum to at most 1 + ``WEIGHT_TOL`` (the rest is cash);
cash is finite (negative: a stablecoin debt, which a replay can reach; a book file's cash is
checked >= 0 by fbr.config); a position's contracts are finite and an open one has an entry price
> 0; a pledge is a ratio in [0, 1] or a valid ``CollateralRule``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from models.collateral import CollateralRule, check_rule
from models.errors import ValidationError

if TYPE_CHECKING:
    from models.book import Book

#: Slack on the targets' sum (weights may sum to 1 + WEIGHT_TOL).
WEIGHT_TOL = 1e-6


def check_book(book: Book) -> None:
    """Raise :class:`ValidationError` on the first mistake of ``book`` (module docstring)."""
    known = _check_symbols(book)
    _check_spot_and_targets(book, known)
    _check_positions_and_pledges(book, known)


def _check_symbols(book: Book) -> set[str]:
    """Unique asset and contract symbols, every contract on a listed asset; the asset symbols."""
    asset_syms = [a.symbol for a in book.assets]
    if len(set(asset_syms)) != len(asset_syms):
        raise ValidationError("assets", "has duplicate symbols", "list each asset once")
    con_syms = [c.symbol for c in book.contracts]
    if len(set(con_syms)) != len(con_syms):
        raise ValidationError("contracts", "has duplicate symbols", "list each contract once")
    known = set(asset_syms)
    for c in book.contracts:
        if c.underlying not in known:
            raise ValidationError(f"contracts.{c.symbol}.underlying",
                                  f"names unknown asset {c.underlying!r}",
                                  f"add {c.underlying} to assets or use one of {sorted(known)}")
    return known


def _check_spot_and_targets(book: Book, known: set[str]) -> None:
    """Spot quantities finite and >= 0, targets >= 0 summing to at most 1, cash finite."""
    for sym, q in book.spot.items():
        if sym not in known:
            raise ValidationError(f"spot.{sym}", "is not a known asset",
                                  f"add {sym} to assets or use one of {sorted(known)}")
        if not math.isfinite(float(q)) or float(q) < 0:
            raise ValidationError(f"spot.{sym}", f"is {q}",
                                  "give a finite quantity >= 0 (spot is never short)")
    total = 0.0
    for sym, w in book.targets.items():
        if sym not in known:
            raise ValidationError(f"targets.{sym}", "is a target for an unknown symbol",
                                  f"add {sym} to assets or use one of {sorted(known)}")
        if not math.isfinite(float(w)) or float(w) < 0:
            raise ValidationError(f"targets.{sym}", f"is {w}", "give a weight >= 0")
        total += float(w)
    if total > 1 + WEIGHT_TOL:
        raise ValidationError("targets", f"weights sum to {total:.6g} (> 1)",
                              "make the target weights sum to 1 or less (the rest is cash)")
    # Negative cash is a stablecoin debt of the wallet (fees, funding or a liquidation penalty can
    # take it there in a replay); a book file's cash is checked >= 0 by fbr.config.
    if not math.isfinite(book.cash):
        raise ValidationError("cash", f"is {book.cash}", "give the wallet's stablecoin USD")


def _check_positions_and_pledges(book: Book, known: set[str]) -> None:
    """Positions in listed contracts with finite contracts and, when open, an entry price > 0;
    pledges of listed assets, a ratio in [0, 1] or a valid rule."""
    con_syms = [c.symbol for c in book.contracts]
    for sym, pos in book.futures.items():
        if sym not in set(con_syms):
            raise ValidationError(f"futures.{sym}", "is a position in an unknown contract",
                                  f"add {sym} to contracts or use one of {sorted(con_syms)}")
        if not math.isfinite(pos.contracts):
            raise ValidationError(f"futures.{sym}.contracts", "is not finite",
                                  "give a signed contract count")
        if pos.contracts != 0 and not (math.isfinite(pos.entry_price) and pos.entry_price > 0):
            raise ValidationError(f"futures.{sym}.entry_price", f"is {pos.entry_price}",
                                  "give the position's entry price (USD > 0)")
    for sym, h in book.pledged.items():
        if sym not in known:
            raise ValidationError(f"pledged.{sym}", "is not a known asset",
                                  f"pledge one of {sorted(known)}")
        if isinstance(h, CollateralRule):
            check_rule(h, f"pledged.{sym}")
        elif not 0 <= float(h) <= 1:
            raise ValidationError(f"pledged.{sym}", f"is {h}",
                                  "give the collateral ratio after haircut in [0, 1]")
