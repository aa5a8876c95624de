"""Reading one file of the shared data layout (``models.data_layout``), with one clear error.

``find_file`` locates ``<data_dir>/<folder>/<SYM>`` (first suffix of ``SUFFIXES`` that exists;
``optional_file`` the same, None when there is none);
``read_frame`` reads a CSV (gzip or plain) or Parquet file, turning a truncated or corrupt file
into one :class:`models.errors.ValidationError` naming it; ``read_table`` indexes a per-symbol file
by its UTC ``timestamp`` column; ``column`` and ``check_prices`` pick and check a price column;
``cell_number`` reads one numeric cell of a markets file (an empty or NaN cell is refused).
"""

from __future__ import annotations

import zlib
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from models.data_layout import DATA_DIR_ENV, SUFFIXES
from models.errors import ValidationError

if TYPE_CHECKING:  # pandas is imported where it runs: off a plain solve's start-up path
    import pandas as pd


def optional_file(data_dir: Path, folder: str, symbol: str) -> Path | None:
    """``<data_dir>/<folder>/<symbol>`` with the suffix of SUFFIXES that exists, else None; two
    files for one symbol (``BTC.csv.gz`` beside a corrected ``BTC.csv``) are refused, naming
    both: reading one would silently ignore the other."""
    found = [data_dir / folder / f"{symbol}{suffix}" for suffix in SUFFIXES
             if (data_dir / folder / f"{symbol}{suffix}").is_file()]
    if len(found) > 1:
        raise ValidationError(f"data.{folder}.{symbol}", "has " + " and ".join(map(str, found)),
                              "keep one file per symbol in the folder")
    return found[0] if found else None


def find_file(data_dir: Path, folder: str, symbol: str) -> Path:
    """``<data_dir>/<folder>/<symbol>`` with the first suffix of SUFFIXES that exists."""
    found = optional_file(data_dir, folder, symbol)
    if found is not None:
        return found
    expected = data_dir / folder / f"{symbol}.csv.gz"
    where = "" if data_dir.is_dir() else f" (the directory {data_dir} does not exist)"
    raise ValidationError(f"data.{folder}.{symbol}",
                          f"has no file {expected} (nor .csv or .parquet){where}",
                          f"put one file per symbol at <data_dir>/{folder}/<SYM>.csv.gz (or .csv, "
                          ".parquet) with a 'timestamp' first column (ISO 8601, UTC), or point "
                          f"{DATA_DIR_ENV} at a directory in that layout")


#: What pandas (and gzip, zlib, pyarrow) raise on a truncated, corrupt or undecodable file
#: (pandas' ParserError and EmptyDataError are ValueErrors).
UNREADABLE_ERRORS: tuple[type[BaseException], ...] = (
    EOFError, OSError, zlib.error, UnicodeDecodeError, ValueError)


def unreadable_file(path: Path | str, exc: BaseException) -> ValidationError:
    """The one message for a data file that cannot be read: it names the file and the cause
    (e.g. ``EOFError``: a gzip stream cut short by an interrupted download or copy)."""
    p = Path(path)
    cause = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return ValidationError(f"data file {p}", f"cannot be read: truncated, corrupt or unreadable ({cause})",
                           f"download or copy {p.name} again (check it with `gzip -t` for .gz), or "
                           "remove it")


def read_frame(path: Path | str) -> pd.DataFrame:
    """``pd.read_csv`` / ``pd.read_parquet`` of ``path`` (by suffix); a truncated or corrupt file
    raises :func:`unreadable_file` (naming the file) instead of a bare EOFError / zlib error."""
    import pandas as pd
    p = Path(path)
    try:
        if p.name.endswith(".parquet"):
            return pd.read_parquet(p)
        return pd.read_csv(p)
    except ImportError:
        raise ValidationError(f"data.{p.name}", "is Parquet but no Parquet engine is "
                              "installed", "install pyarrow, or convert the file to "
                              ".csv.gz") from None
    except UNREADABLE_ERRORS as exc:
        raise unreadable_file(p, exc) from exc


def cell_number(value: object, column: str, row: str, path: Path | str) -> float:
    """One cell of a markets file (column ``column`` of the row of ``row``) as a finite float. An
    empty, NaN, infinite or non-numeric cell is refused naming the file, row and column: read as
    "absent" it would silently become fbr's default instead of the exchange's value."""
    try:
        v = float(value)  # type: ignore[arg-type]  # anything float() rejects is refused below
    except (TypeError, ValueError):
        v = float("nan")
    if np.isfinite(v):
        return v
    missing = value is None or (isinstance(value, float) and np.isnan(value)) \
        or (isinstance(value, str) and not value.strip())
    what = (f"an empty (or NaN) {column!r} cell in the row of {row}" if missing else
            f"{value!r} in the {column!r} cell of the row of {row}, not a finite number")
    raise ValidationError(f"data.{path}", f"has {what}",
                          "write the exchange's value there (or fetch the file again with fbr "
                          "data fetch); a column the file lacks is left out, not an empty cell")


def read_table(path: Path) -> pd.DataFrame:
    """A per-symbol file as a frame indexed by UTC ``timestamp`` (sorted, unique)."""
    import pandas as pd
    raw = read_frame(path)
    if path.name.endswith(".parquet") and "timestamp" not in raw.columns \
            and raw.index.name == "timestamp":
        raw = raw.reset_index()
    if "timestamp" not in raw.columns:
        raise ValidationError(f"data.{path}", f"has no 'timestamp' column (columns: "
                              f"{list(raw.columns)[:8]})",
                              "make 'timestamp' (ISO 8601, UTC) the first column")
    try:
        index = pd.DatetimeIndex(pd.to_datetime(raw["timestamp"], utc=True), name="timestamp")
    except (ValueError, TypeError):
        raise ValidationError(f"data.{path}", "has timestamps that do not parse",
                              "write timestamps as ISO 8601, e.g. 2024-01-01T00:00:00Z") from None
    frame = raw.drop(columns="timestamp").set_axis(index, axis=0).sort_index()
    if frame.index.has_duplicates:
        first = frame.index[frame.index.duplicated()][0]
        raise ValidationError(f"data.{path}", f"repeats the timestamp {first}",
                              "keep one row per timestamp")
    return frame


def numeric_column(frame: pd.DataFrame, column: str, path: Path) -> pd.Series:
    """``frame[column]`` as floats (non-numbers become NaN); a clear error when it is missing."""
    import pandas as pd
    if column not in frame.columns:
        raise ValidationError(f"data.{path}", f"has no '{column}' column (columns: "
                              f"{list(frame.columns)[:8]})",
                              f"give a '{column}' column next to 'timestamp'")
    return pd.to_numeric(frame[column], errors="coerce").astype(float)


def check_prices(series: pd.Series, symbol: str, path: Path) -> None:
    """Prices must be finite and > 0; name the first bad timestamp."""
    values = series.to_numpy(dtype=float)
    bad = ~(np.isfinite(values) & (values > 0))
    if bad.any():
        k = int(np.argmax(bad))
        raise ValidationError(f"data.{symbol}", f"has price {values[k]} at {series.index[k]} "
                              f"in {path}", "fix or drop that row (prices must be finite and > 0)")


#: A median |funding rate| per settlement above this is not a rate in fractions: 0.5% a settlement
#: is over 500%/yr at 8 h (real medians are near 0.01%); the file is in percent
FUNDING_MEDIAN_MAX = 0.005
#: Settlements further apart than this inside a funding file are missing data (exchanges settle
#: every 1-8 h); the gap would be read as zero funding
FUNDING_GAP_MAX = timedelta(hours=24)


def _check_funding_units(sym: str, values: np.ndarray, path: Path) -> None:
    """Refuse a funding file whose median |rate| is above :data:`FUNDING_MEDIAN_MAX`."""
    med = float(np.median(np.abs(values))) if values.size else 0.0
    if med > FUNDING_MEDIAN_MAX:
        raise ValidationError(f"data.funding.{sym}", f"has a median |rate| of {med:.4g} per "
                              f"settlement in {path}: that is percent, not a fraction",
                              "divide the funding_rate column by 100 (0.01% is 0.0001)")


def _check_funding_gaps(sym: str, index: pd.Index, path: Path) -> None:
    """Refuse a funding file with two consecutive settlements more than :data:`FUNDING_GAP_MAX`
    apart (a partial fetch or a hand-merged file): the missing ones would count as zero."""
    import pandas as pd
    times = pd.DatetimeIndex(index)
    if len(times) < 2:
        return
    gaps = times[1:] - times[:-1]
    k = int(np.argmax(gaps))
    if gaps[k] > FUNDING_GAP_MAX:
        raise ValidationError(f"data.funding.{sym}", f"has no settlement between {times[k]} and "
                              f"{times[k + 1]} in {path}",
                              "fetch the funding history again (fbr data fetch), or narrow "
                              "[data] start/end to a span the file covers")


def check_funding(sym: str, series: pd.Series, path: Path) -> None:
    """The unit and gap checks of a funding file's rates (fractions per settlement)."""
    _check_funding_units(sym, series.to_numpy(dtype=float), path)
    _check_funding_gaps(sym, series.index, path)


def check_bar_spacing(series: pd.Series, field: str, path: Path, interval: str) -> None:
    """Refuse bars coarser than their folder's ``interval`` (``spot_4h`` holding daily bars, as a
    fetch with the wrong interval leaves them): each bar would be stamped as closing one
    ``interval`` after it opened, its close used before it was known. The median spacing of the
    timestamps must be at most 1.5 x ``interval`` (missing bars move the median little)."""
    import pandas as pd
    try:  # '1d' as '1D' (pandas deprecates the lower-case day unit)
        bar = pd.Timedelta(interval[:-1] + "D" if interval.endswith("d") else interval)
    except ValueError:
        return  # a folder name without a bar length: nothing to compare with
    times = pd.DatetimeIndex(series.index)
    if len(times) < 3:
        return
    spacing = pd.Series(times[1:] - times[:-1]).median()
    if spacing > 1.5 * bar:
        raise ValidationError(field, f"has bars {spacing} apart in {path}, which holds {interval} "
                              f"bars", f"fetch it again with --interval {interval}, or put "
                              f"these bars in the folder of their length")
