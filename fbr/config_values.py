"""TOML input values: parsing one value of a book, backtest or Monte Carlo file at a time.

Every parser takes the raw TOML value and its dotted field path (``contracts[2].lot_step``) and
returns the parsed value or raises :class:`models.errors.ValidationError` naming the field, quoting
the value and saying how to fix it. Files themselves are read by :func:`models.toml_file.read_toml`
(file-level problems: :class:`models.errors.ConfigError`). Where a fraction is expected, strings
"30%" (= 0.3) and "5bp" (= 0.0005) are accepted.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, TypeVar

from models.bounds import check_weight
from models.errors import ValidationError
from models.instruments import check_symbol

if TYPE_CHECKING:  # pandas is imported where it runs: off a plain solve's start-up path
    import pandas as pd

#: A TOML table as parsed by tomllib (keys are text, values any TOML value).
Table = dict[str, object]
_T = TypeVar("_T")

#: Largest USD value one holding, cash balance or futures position may have (10 trillion USD, more
#: than the whole crypto market): larger values are typos or overflow, not books.
MAX_HOLDING_USD = 1e13
#: Prices (USD per unit) outside [MIN_PRICE_USD, MAX_PRICE_USD] are refused as unrealistic.
MIN_PRICE_USD = 1e-12
MAX_PRICE_USD = 1e9


def join(path: str, key: str | int) -> str:
    """The dotted field path of ``key`` under ``path``: "a.b", "a[2]", or "b" at the top."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def check_keys(table: Mapping[str, object], allowed: Iterable[str], path: str) -> None:
    """Reject keys not in ``allowed`` (typos), suggesting the closest valid key."""
    valid = list(allowed)
    for key in table:
        if key in valid:
            continue
        close = difflib.get_close_matches(key, valid, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        where = f"section [{path}]" if path else "the top level"
        raise ValidationError(join(path, key), f"is not a known key of {where} "
                              f"(value {table[key]!r})",
                              f"{hint}valid keys are: {', '.join(valid)}")


def sub_table(data: Mapping[str, object], key: str, path: str) -> Table:
    """``data[key]`` as a table ({} when absent)."""
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ValidationError(join(path, key), f"is {value!r}, not a table",
                              f"write it as a table: [{join(path, key)}] or {key} = {{...}}")
    return value


def table_array(data: Mapping[str, object], key: str, path: str) -> list[Table]:
    """``data[key]`` as an array of tables ([] when absent)."""
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ValidationError(join(path, key), f"is {value!r}, not an array of tables",
                              f"write each entry as [[{join(path, key)}]]")
    return value

_FRACTION_TEXT = re.compile(r"^\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(%|bp|bps)\s*$")


def number(value: object, path: str, *, percent: bool = False, allow_inf: bool = False) -> float:
    """A finite number; with ``percent`` also "30%" (0.3) or "5bp" (0.0005)."""
    if isinstance(value, bool):
        raise ValidationError(path, f"is {value!r}, not a number", "give a number")
    if isinstance(value, str):
        m = _FRACTION_TEXT.match(value) if percent else None
        if m is None:
            fix = 'give a number, e.g. 0.3, or a percentage string "30%"' if percent \
                else "give a number without quotes"
            raise ValidationError(path, f"is the text {value!r}", fix)
        scale = 100.0 if m.group(2) == "%" else 10_000.0
        return float(m.group(1)) / scale
    if not isinstance(value, int | float):
        raise ValidationError(path, f"is {value!r}, not a number", "give a number")
    v = float(value)
    if math.isnan(v):
        raise ValidationError(path, "is nan", "give a finite number")
    if math.isinf(v) and not allow_inf:
        raise ValidationError(path, f"is {v}", "give a finite number")
    return v


def positive(value: object, path: str, *, percent: bool = False, allow_inf: bool = False) -> float:
    """A number > 0 (see :func:`number` for ``percent`` and ``allow_inf``)."""
    v = number(value, path, percent=percent, allow_inf=allow_inf)
    if v <= 0:
        raise ValidationError(path, f"is {value!r}", "give a value > 0")
    return v


def nonneg(value: object, path: str, *, percent: bool = False) -> float:
    """A finite number >= 0 (with ``percent`` also "30%" or "5bp")."""
    v = number(value, path, percent=percent)
    if v < 0:
        raise ValidationError(path, f"is {value!r}", "give a value >= 0")
    return v


def weight(value: object, path: str) -> float:
    """An objective term's weight: a finite number in [0, MAX_WEIGHT]."""
    return check_weight(nonneg(value, path), path)


def usd_amount(value: object, path: str) -> float:
    """A USD amount (cash, a holding's value): finite, >= 0 and at most MAX_HOLDING_USD."""
    v = nonneg(value, path)
    if v > MAX_HOLDING_USD:
        raise ValidationError(path, f"is {value!r} USD, more than the {MAX_HOLDING_USD:.0e} USD a "
                              "book may hold", "give a finite USD amount of realistic size "
                              f"(at most {MAX_HOLDING_USD:.0e})")
    return v


def usd_limit(value: object, path: str, *, signed: bool = False, strict: bool = False) -> float:
    """A USD limit of a constraint (a cap, a buffer, a budget): finite, at most MAX_HOLDING_USD
    in size, >= 0 (> 0 with ``strict``; any sign with ``signed``). A limit past what any book can
    hold is no limit: the key is to be left out instead (a 1e308 buffer made every solver fail)."""
    v = number(value, path)
    if not signed and (v < 0 or (strict and v == 0)):
        raise ValidationError(path, f"is {value!r}", f"give a value {'> 0' if strict else '>= 0'} (USD)")
    if abs(v) > MAX_HOLDING_USD:
        raise ValidationError(path, f"is {value!r} USD, past the {MAX_HOLDING_USD:.0e} USD a book "
                              "may hold", f"give at most {MAX_HOLDING_USD:.0e} USD in size, or "
                              "leave the key out where no limit is meant")
    return v


def price(value: object, path: str) -> float:
    """A price in USD per unit: finite and, when > 0, within [MIN_PRICE_USD, MAX_PRICE_USD]
    (zero and negative prices are left to MarketSnapshot, which names the field)."""
    v = number(value, path)
    if v > 0 and not MIN_PRICE_USD <= v <= MAX_PRICE_USD:
        raise ValidationError(path, f"is {value!r} USD, not a realistic price",
                              f"give the price in USD per unit, between {MIN_PRICE_USD:.0e} and "
                              f"{MAX_PRICE_USD:.0e}")
    return v


def symbol_name(value: object, path: str, *, contract: bool = False) -> str:
    """An asset symbol, or with ``contract`` a contract or exchange symbol: ASCII letters and
    digits plus a few separators, no whitespace (symbols are sent to exchanges as they are)."""
    return check_symbol(path, value, contract=contract)


def symbol_keys(table: Mapping[str, object], path: str) -> None:
    """Every key of ``table`` must be a valid asset symbol (see :func:`symbol_name`)."""
    for key in table:
        symbol_name(key, join(path, key))


def in_range(value: object, path: str, lo: float, hi: float) -> float:
    """A fraction in [lo, hi] (percent strings allowed)."""
    v = number(value, path, percent=True)
    if not lo <= v <= hi:
        raise ValidationError(path, f"is {value!r}", f"give a value between {lo} and {hi}")
    return v


def optional(table: Mapping[str, object], key: str, path: str,
             parse: Callable[[object, str], float]) -> float | None:
    """``parse(table[key])`` when ``key`` is given, else None (the setting is off)."""
    return None if key not in table else parse(table[key], join(path, key))


def boolean(value: object, path: str) -> bool:
    """A TOML boolean (true/false without quotes)."""
    if not isinstance(value, bool):
        raise ValidationError(path, f"is {value!r}", "write true or false (no quotes)")
    return value


def string(value: object, path: str) -> str:
    """A non-empty text."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(path, f"is {value!r}", "give a non-empty text in quotes")
    return value


def choice(value: object, path: str, options: Sequence[str], make: Callable[[str], _T]) -> _T:
    """One of ``options`` (case-insensitive), turned into a value by ``make`` (e.g. an enum)."""
    if not isinstance(value, str) or value.lower() not in options:
        raise ValidationError(path, f"is {value!r}", f"use one of {', '.join(map(repr, options))}")
    return make(value.lower())


def timestamp(value: object, path: str) -> pd.Timestamp:
    """A TOML date/datetime or ISO text as a tz-aware UTC timestamp (naive times are UTC)."""
    import pandas as pd
    if isinstance(value, time) or not isinstance(value, str | date | datetime):
        raise ValidationError(path, f"is {value!r}",
                              "give a date or time, e.g. 2024-06-01T00:00:00Z")
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise ValidationError(path, f"is {value!r}, not a date",
                              'give an ISO date or time, e.g. 2024-06-01T00:00:00Z') from None
    if pd.isna(ts):
        raise ValidationError(path, f"is {value!r}", "give a date")
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def instant(value: object, path: str) -> datetime:
    """:func:`timestamp` as a ``datetime``: a TOML date or datetime is converted without pandas
    (a plain solve's start-up time: a naive time is UTC, an offset converted, a date is 00:00
    UTC); text goes through :func:`timestamp` (a ``pd.Timestamp``, itself a ``datetime``)."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    return timestamp(value, path)


def symbol_map(table: Mapping[str, object], path: str,
               parse: Callable[[object, str], float]) -> dict[str, float]:
    """SYMBOL = value tables, parsed value by value (order kept)."""
    return {str(sym): parse(v, join(path, sym)) for sym, v in table.items()}


def known(sym: str, known: Sequence[str], path: str, what: str, value: object = None) -> None:
    """Raise unless ``sym`` is one of ``known`` (``what`` says which list it must be in)."""
    if sym in known:
        return
    close = difflib.get_close_matches(sym, list(known), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    quoted = "" if value is None else f" (value {value!r})"
    raise ValidationError(path, f"names {sym!r}, which is not {what}{quoted}",
                          f"{hint}use one of {', '.join(known) or '(none)'}")


def fraction(value: object, path: str, *, upper: float = 1.0, upper_open: bool = False,
             positive: bool = False) -> float:
    """A fraction (number, "5%" or "50bp") in [0, upper] ((0, ...] with ``positive``; the upper
    bound excluded with ``upper_open``)."""
    v = number(value, path, percent=True)
    low_bad = v <= 0 if positive else v < 0
    high_bad = v >= upper if upper_open else v > upper
    if low_bad or high_bad:
        lo = "0 <" if positive else "0 <="
        hi = "<" if upper_open else "<="
        raise ValidationError(path, f"is {value!r}",
                              f"give a fraction with {lo} value {hi} {upper:g}, e.g. 0.05 or \"5%\"")
    return v


#: The largest whole number a file may give: TOML's own limit (a 64-bit signed integer), which
#: Python's TOML reader does not enforce; above it numpy and pandas overflow.
MAX_WHOLE = 2**63 - 1


def whole(value: object, path: str, lo: int) -> int:
    """A whole number from ``lo`` to :data:`MAX_WHOLE` (not a boolean)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValidationError(path, f"is {value!r}", f"give a whole number >= {lo}")
    if value > MAX_WHOLE:
        raise ValidationError(path, f"is {value!r}, beyond a 64-bit integer (TOML's limit)",
                              f"give a whole number from {lo} to {MAX_WHOLE:,}")
    return int(value)


#: A period: a number and one unit (D days, h hours, min minutes, W weeks; d, H and w also read).
_PERIOD = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(D|d|h|H|min|W|w)\s*")
#: The unit spellings pandas keeps (it deprecates d, H and w).
_PERIOD_UNITS = {"d": "D", "H": "h", "w": "W"}
#: The shortest period a policy may take (a calendar that fires more often fires at every step).
MIN_PERIOD = timedelta(minutes=1)


def period(value: object, path: str) -> str:
    """A period such as "7D", "30D", "8h", "90min" or "2W": a number and an explicit unit (D, h,
    min, W), at least one minute, returned in pandas' spelling ("8H" -> "8h", "7d" -> "7D").
    A bare number ("30", which pandas reads as 30 nanoseconds) and "m"/"M" (a minute? a month?)
    are refused."""
    import pandas as pd
    if not isinstance(value, str):
        raise ValidationError(path, f"is {value!r}", 'give a period in quotes, e.g. "7D" or "8h"')
    match = _PERIOD.fullmatch(value)
    if match is None:
        month = re.fullmatch(r"\s*[\d.]+\s*[mM]\s*", value) is not None
        raise ValidationError(path, f"is {value!r}, not a number with a unit D, h, min or W"
                              + (' ("m"/"M" could be a minute or a month)' if month else ""),
                              'give a number and a unit: D (days), h (hours), min (minutes) or '
                              'W (weeks), e.g. "7D" or "8h"; use "30D" for a month, "30min" for '
                              "30 minutes")
    text = match.group(1) + _PERIOD_UNITS.get(match.group(2), match.group(2))
    try:
        td = pd.Timedelta(text)
    except (ValueError, OverflowError):
        raise ValidationError(path, f"is {value!r}, too long a period",
                              'give a period of at most a few years, e.g. "365D"') from None
    if td < MIN_PERIOD:
        raise ValidationError(path, f"is {value!r}, under one minute",
                              'give a period of at least "1min", e.g. "7D"')
    return text
