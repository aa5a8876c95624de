"""The data files of ``fbr data fetch``: frames in the shared layout, written only once every
series of the run is fetched, each one atomically.

A fetch first reads everything into memory (:class:`Staged` frames); only when every read has
succeeded does :func:`write_staged` write them, each to a temporary name in its own folder
(``.<name>.<pid>.<random>.tmp``, which no reader of the layout takes for data) then ``os.replace``-d onto
its final name. A fetch that fails (a rate limit, the network) therefore writes nothing, and an
interrupted write leaves the older file whole: a folder never holds half of a fetch (prices
without their funding, which a backtest would read as zero funding). gzip headers carry no time
stamp, so the same data gives the same bytes.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd


@dataclass(frozen=True)
class WrittenFile:
    """One file written: kind (spot_1d, perp_mark_4h, funding, contracts, tiers), symbol, rows,
    first and last timestamp (ISO, None for market files)."""

    path: Path
    kind: str
    symbol: str
    rows: int
    first: str | None
    last: str | None


@dataclass(frozen=True)
class Staged:
    """A file to write: its final path, the frame, its kind and symbol, and whether the frame's
    index (the ``timestamp`` column) is written."""

    path: Path
    frame: pd.DataFrame
    kind: str
    symbol: str
    index: bool = True


def stamps(ms: Sequence[int]) -> pd.Index:
    """ISO 8601 UTC labels of epoch-ms timestamps (the data files' ``timestamp`` column)."""
    labels: pd.Index = pd.Index(pd.to_datetime(list(ms), unit="ms", utc=True)
                                .strftime("%Y-%m-%dT%H:%M:%SZ"), name="timestamp")
    return labels


def klines_frame(rows: list[list[float]]) -> pd.DataFrame:
    """Spot bars (open time ms, open, high, low, close, volume) as the ``spot_<interval>`` file:
    a missing volume is 0, ``quote_volume`` = volume x close."""
    frame = pd.DataFrame([r[1:6] for r in rows], index=stamps([int(r[0]) for r in rows]),
                         columns=["open", "high", "low", "close", "volume"])
    frame["volume"] = frame["volume"].fillna(0.0)
    frame["quote_volume"] = frame["volume"] * frame["close"]
    return frame


def marks_frame(rows: list[list[float]]) -> pd.DataFrame:
    """Mark bars as the ``perp_mark_4h`` file (the close only)."""
    return pd.DataFrame({"close": [r[4] for r in rows]}, index=stamps([int(r[0]) for r in rows]))


def funding_frame(rows: list[tuple[int, float]]) -> pd.DataFrame:
    """Funding settlements (time ms, rate) as the ``funding`` file."""
    return pd.DataFrame({"funding_rate": [r for _t, r in rows]},
                        index=stamps([t for t, _r in rows]))


def write_atomic(frame: pd.DataFrame, path: Path, *, index: bool) -> None:
    """Write ``frame`` as gzip CSV to a temporary file beside ``path``, then move it onto
    ``path`` (``os.replace``: a reader sees the old file or the new one, never a part)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    text = frame.to_csv(index=index)
    try:
        with tmp.open("wb") as fh, gzip.GzipFile(path.name, "wb", fileobj=fh, mtime=0) as gz:
            gz.write(text.encode("utf-8"))  # the header names the final file, not the temporary
            gz.flush()  # as pandas writes it: the same bytes as before files were staged
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_staged(staged: Sequence[Staged]) -> list[WrittenFile]:
    """Write every staged file (:func:`write_atomic`) and describe it."""
    written: list[WrittenFile] = []
    for s in staged:
        write_atomic(s.frame, s.path, index=s.index)
        first = str(s.frame.index[0]) if s.index and len(s.frame) else None
        last = str(s.frame.index[-1]) if s.index and len(s.frame) else None
        written.append(WrittenFile(s.path, s.kind, s.symbol, len(s.frame), first, last))
    return written
