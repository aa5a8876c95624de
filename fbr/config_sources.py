"""Where a book file's market and risk data come from.

:class:`ParseContext` is the state of one parse (the folder relative paths start from, the labels
that describe the data's origin, a cache so [market] and [risk] share one synthetic history); the
helpers read the synthetic generator's parameters and daily spot closes from a data folder, cut at
the market time so nothing after it is used (no look-ahead). Times are UTC, prices USD.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from fbr.config_values import Table, join, string, timestamp, whole
from models.data_layout import SPOT_DAILY_FOLDER
from models.errors import ValidationError
from models.instruments import FuturesContract
from models.market import MarketSnapshot

if TYPE_CHECKING:  # pandas is imported where it runs: off a plain solve's start-up path
    import pandas as pd

MARKET_SOURCES = ("explicit", "synthetic", "data")
DEFAULT_SYNTHETIC_DAYS = 730
DEFAULT_SYNTHETIC_START = "2023-01-01"
DEFAULT_SYNTHETIC_SEED = 7


class History(Protocol):
    """What the synthetic generator returns (models.synthetic.SyntheticHistory)."""

    @property
    def spot(self) -> pd.DataFrame: ...

    @property
    def mark(self) -> pd.DataFrame: ...

    @property
    def returns(self) -> pd.DataFrame: ...

    def snapshot(self, contracts: Sequence[FuturesContract] = (),
                 at: pd.Timestamp | None = None) -> MarketSnapshot: ...


@dataclass
class ParseContext:
    """State shared while one document is parsed: where relative paths start, caches, labels."""

    base_dir: Path | None
    labels: list[str] = field(default_factory=list)
    histories: dict[tuple[tuple[str, ...], int, int, str], History] = field(default_factory=dict)

    def resolve(self, raw: str) -> Path:
        """A path from the file, relative to the book file's folder unless absolute."""
        p = Path(raw).expanduser()
        if p.is_absolute() or self.base_dir is None:
            return p
        return self.base_dir / p


def synthetic_params(table: Table, path: str,
                     fallback: Mapping[str, object] | None = None) -> tuple[int, int, str]:
    """(seed, days, start) of the synthetic generator; missing keys come from ``fallback``."""
    fb = fallback or {}
    seed = whole(table.get("seed", fb.get("seed", DEFAULT_SYNTHETIC_SEED)), join(path, "seed"), 0)
    days = whole(table.get("days", fb.get("days", DEFAULT_SYNTHETIC_DAYS)), join(path, "days"), 2)
    start = table.get("start", fb.get("start", DEFAULT_SYNTHETIC_START))
    start_ts = timestamp(start, join(path, "start"))
    return seed, days, start_ts.strftime("%Y-%m-%d")


def synthetic_history(symbols: Sequence[str], seed: int, days: int, start: str, ctx: ParseContext,
                      section: str) -> History:
    """models.synthetic.generate_history, cached so market and risk share one history."""
    key = (tuple(symbols), seed, days, start)
    if key not in ctx.histories:
        from models.synthetic import generate_history

        try:
            ctx.histories[key] = generate_history(tuple(symbols), days=days, start=start,
                                                  seed=seed)
        except ValidationError as exc:  # the generator names fields synthetic.<key>
            field_path = join(section, exc.field.removeprefix("synthetic."))
            raise ValidationError(field_path, exc.problem, exc.fix) from exc
    return ctx.histories[key]


def resolve_data_dir(table: Table, path: str, ctx: ParseContext) -> Path:
    """``data_dir`` of the table (relative to the book file), else models.io.default_data_dir()."""
    if "data_dir" in table:
        d = ctx.resolve(string(table["data_dir"], join(path, "data_dir")))
    else:
        from models.io import default_data_dir

        found = default_data_dir()
        if found is None:
            raise ValidationError(join(path, "data_dir"),
                                  "is not set and no data folder was found",
                                  'set data_dir = "path/to/shared/data" (relative to the book '
                                  "file)")
        d = found
    if not d.is_dir():
        raise ValidationError(join(path, "data_dir"), f"is {str(d)!r}, which is not a folder",
                              f"give the folder that holds {SPOT_DAILY_FOLDER}/ (relative to the book file)")
    return d


def spot_closes(data_dir: Path, symbols: Sequence[str], section: str) -> pd.DataFrame:
    """Daily spot closes from models.io.load_spot_closes, indexed by close time (bar open + 1 day,
    so a cut at time t never uses a close from after t); errors name the book file's section."""
    import pandas as pd

    from models.io import load_spot_closes

    try:
        closes = load_spot_closes(data_dir, list(symbols), interval="1d")
    except ValidationError as exc:
        raise ValidationError(join(section, "data_dir"), f"({data_dir}) {exc.field} {exc.problem}",
                              exc.fix) from exc
    closes.index = pd.DatetimeIndex(closes.index) + pd.Timedelta(days=1)
    return closes


def until(frame: pd.DataFrame, end: pd.Timestamp | None) -> pd.DataFrame:
    """Rows with index <= ``end`` (all rows when None); naive indexes are read as UTC."""
    import pandas as pd
    if end is None:
        return frame
    idx = pd.DatetimeIndex(frame.index)
    stop = end if idx.tz is not None else end.tz_convert("UTC").tz_localize(None)
    return frame.loc[idx <= stop]
