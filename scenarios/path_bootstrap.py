"""The stationary block bootstrap (Politis and Romano, 1994) of a :class:`JointHistory`.

Rows of the history are copied whole (returns, funding and basis of one source step stay
together, so the cross-section and the funding/return dependence are kept) in blocks: after each
row the next one continues the block (source row j + 1, circularly) with probability 1 - p, else a
new block starts at a uniformly drawn row. Block lengths are geometric with mean ``mean_block`` =
1 / p (in steps). Same seed -> the same path. The history must hold at least ``mean_block`` rows
(:func:`check_block_rows`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from models.errors import ValidationError
from scenarios.market_path import MarketPath
from scenarios.path_history import (
    JointHistory,
    PathFrame,
    SeedLike,
    as_generator,
    build_market_path,
    check_steps,
)


def stationary_indices(rng: np.random.Generator, rows: int, n: int, mean_block: float) -> np.ndarray:
    """``n`` source row indices of a stationary bootstrap over ``rows`` rows: the first uniform;
    each next one j + 1 (mod rows) with probability 1 - 1/mean_block, else a fresh uniform draw."""
    p = 1.0 / mean_block
    new_block = rng.random(n) < p
    new_block[0] = True
    fresh = rng.integers(0, rows, size=n)
    out = np.empty(n, dtype=np.int64)
    for k in range(n):
        out[k] = fresh[k] if new_block[k] else (out[k - 1] + 1) % rows
    return out


#: Where a Monte Carlo file sets the length of its source history (for the fix of an error).
SOURCE_HISTORY_FIX = 'give a longer source history ([data] days, or start and end with source = "data")'


def check_block_rows(rows: int, mean_block: float) -> None:
    """A block bootstrap needs a source history of at least one mean block: ``rows`` (returns)
    >= ``mean_block`` (steps); with fewer every block wraps around the whole history."""
    if rows < mean_block:
        raise ValidationError("montecarlo.mean_block", f"is {mean_block:g} steps, longer than the "
                              f"source history of {rows} returns",
                              f"{SOURCE_HISTORY_FIX}, or a mean_block of at most {rows}")


@dataclass(frozen=True)
class BlockBootstrap:
    """Stationary block bootstrap of the joint rows of ``history`` (mean block length in steps)."""

    history: JointHistory
    frame: PathFrame
    mean_block: float = 20.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.mean_block) and self.mean_block >= 1.0):
            raise ValidationError("montecarlo.mean_block", f"is {self.mean_block!r}",
                                  "give a mean block length >= 1 step")
        check_block_rows(self.history.rows, self.mean_block)

    @property
    def name(self) -> str:
        return f"stationary block bootstrap (mean block {self.mean_block:g} steps)"

    @property
    def step(self) -> pd.Timedelta:
        return self.history.step

    def indices(self, seed: SeedLike, steps: int) -> np.ndarray:
        """The source rows of a path (``steps + 1`` of them; row 0's return is not used)."""
        check_steps(steps)
        return stationary_indices(as_generator(seed), self.history.rows, steps + 1, self.mean_block)

    def generate(self, seed: SeedLike, steps: int) -> MarketPath:
        idx = self.indices(seed, steps)
        h = self.history
        return build_market_path(h, self.frame, h.returns[idx], h.funding[idx], h.basis[idx])
