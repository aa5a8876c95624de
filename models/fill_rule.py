"""How a futures position's exposure moves when it trades at the mark: the exchanges' fill rule
(Binance, and fbr's paper exchange): a position that grows averages its entry, one that shrinks
keeps it and realises the part closed, a flip closes and opens at the mark.

Exposure x (USD per unit log move of the underlying; ``Book.futures_exposure``): linear q x npc,
whatever the entry; inverse q x size x mark / entry. Trading dq contracts at the mark:

- grows (same sign, |q| > |q0|): the new contracts are struck at the mark, so the exposure adds
  dq x npc: x = x0 + (q - q0) npc (an inverse entry becomes the harmonic average);
- shrinks or closes (same sign, |q| <= |q0|): the entry is kept, so the exposure scales with the
  contracts: x = x0 q / q0;
- opens from flat or flips: x = q npc (struck at the mark).

For a linear position x0 = q0 npc and every case is x = q npc; an inverse position held away from
its entry (x0 != q0 npc) is where the cases differ. :func:`contracts_after` maps a target exposure
to contracts, :func:`exposure_after` back; each inverts the other."""

from __future__ import annotations

import math


def _same_side(a: float, b: float) -> bool:
    return a != 0 and b != 0 and math.copysign(1.0, a) == math.copysign(1.0, b)


def contracts_after(x: float, q0: float, x0: float, npc: float) -> float:
    """Contracts that hold exposure ``x`` (USD) after trading from ``q0`` contracts holding ``x0``
    at the mark (``npc`` USD of exposure per contract traded there)."""
    if not _same_side(x, x0) or q0 == 0:
        return x / npc
    if abs(x) >= abs(x0):
        return q0 + (x - x0) / npc
    return q0 * x / x0


def exposure_after(q: float, q0: float, x0: float, npc: float) -> float:
    """Exposure (USD) of ``q`` contracts after trading from ``q0`` contracts holding ``x0`` at the
    mark (the inverse of :func:`contracts_after`)."""
    if not _same_side(q, q0) or x0 == 0:
        return q * npc
    if abs(q) >= abs(q0):
        return x0 + (q - q0) * npc
    return x0 * q / q0


def average_entry(q0: float, e0: float, q1: float, price: float, inverse: bool = False) -> float:
    """The entry after a position of ``q0`` contracts at ``e0`` becomes ``q1`` at ``price``:
    averaged on an add, kept on a reduction, ``price`` on a new position or a flip. The average
    keeps the position's unrealised PnL through an add (nothing is realised): weighted by
    contracts for a linear contract, (q0 e0 + dq p) / q1, and harmonic for an inverse one, whose
    PnL is q size (1/e - 1/p) coins: q1 / (q0 / e0 + dq / p)."""
    if q0 == 0 or q0 * q1 < 0:
        return price
    if abs(q1) > abs(q0):
        if inverse:
            return q1 / (q0 / e0 + (q1 - q0) / price)
        return (q0 * e0 + (q1 - q0) * price) / q1
    return e0


def inverse_fill(q0: float, e0: float, q: float, size: float, mark: float) -> tuple[float, float]:
    """An inverse position of ``q0`` contracts (``size`` USD each) entered at ``e0`` traded to ``q``
    at ``mark``: (its entry afterwards, the USD PnL realised). Grows: the harmonic average
    q / (q0 / e0 + (q - q0) / mark), nothing realised (its PnL q0 size (1/e0 - 1/mark) stays
    unrealised); shrinks: ``e0`` kept, the part closed realises (q0 - q) size (1/e0 - 1/mark)
    mark; flips or closes: all of q0 realised, the new position entered at the mark (the entry
    :func:`average_entry`; a closed position's is not read)."""
    same = q != 0 and (q > 0) == (q0 > 0)
    grows = same and abs(q) > abs(q0)
    closed = 0.0 if grows else (q0 - q if same else q0)
    realised = closed * size * (1 / e0 - 1 / mark) * mark
    return average_entry(q0, e0, q, mark, inverse=True), realised
