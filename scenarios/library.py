"""The scenario library: hypothetical stresses shipped as TOML files, historical ones derived from data.

**Scenario files** (TOML; ``scenarios/library/*.toml`` and users' own, e.g.
``examples/scenarios/``). One scenario per file::

    name = "alt crash"                      # optional: the file name without .toml
    description = "alts -50%, BTC -20%"     # optional
    shocks = ["common=-50%", "BTC=-20%"]    # KEY=VALUE strings, see scenarios.shocks
    strict = true                           # optional: unknown symbols are an error (default)

or several, each a ``[[scenario]]`` table with the same keys. Library files are not strict: a shock on
an asset the book does not hold is skipped.

**Historical scenarios** (``historical_scenarios``) are measured at run time from the daily spot
closes in ``<data_dir>/spot_1d`` (``models.io.default_data_dir()``: ``$FBR_DATA_DIR`` or
``../shared/data``); nothing is stored. For each episode (a span of days) the *reference* return is
the mean of the simple returns of BTC, ETH and SOL (those with data then); the worst day is the
day close-to-close with the lowest reference return, the worst week the 7-day close-to-close window
(ending in the span) with the lowest one. The scenario moves every asset of the data folder by its
own return over that day or week, and assets without data by the reference (``common``).
Without the data folder there are no historical scenarios, and ``Library.notes`` says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from models.data_layout import SPOT_DAILY_FOLDER
from models.errors import ValidationError
from models.io import default_data_dir, load_spot_closes
from models.toml_file import parse_toml, read_toml
from optimizer.settings import StressScenario
from scenarios.shocks import Scenario, parse_scenario, scenario_from_returns

FILE_KEYS = ("name", "description", "shocks", "strict")
#: Assets whose mean return ranks the days and weeks of an episode.
REFERENCE_ASSETS = ("BTC", "ETH", "SOL")
#: Days in the "week" scenarios (close-to-close).
WEEK_DAYS = 7
HISTORICAL_PREFIX = "hist-"
BOOK_PREFIX = "book:"


@dataclass(frozen=True)
class Episode:
    """A named span of days (UTC, inclusive) whose worst day and week become scenarios."""

    key: str
    label: str
    start: str | None
    end: str | None


EPISODES: tuple[Episode, ...] = (
    Episode("mar-2020", "March 2020 (COVID crash)", "2020-03-01", "2020-03-31"),
    Episode("may-2021", "May 2021 (China mining ban, leverage flush)", "2021-05-01", "2021-05-31"),
    Episode("jun-2022", "June 2022 (Celsius, 3AC)", "2022-06-01", "2022-06-30"),
    Episode("nov-2022", "November 2022 (FTX collapse)", "2022-11-01", "2022-11-30"),
    Episode("worst", "the whole history", None, None),
)


# ---------------------------------------------------------------------------------------------
# files


def _scenario_table(table: object, where: str, default_name: str, strict: bool) -> Scenario:
    if not isinstance(table, dict):
        raise ValidationError(where, f"is {table!r}", "write the scenario as a TOML table")
    unknown = sorted(set(table) - set(FILE_KEYS))
    if unknown:
        raise ValidationError(f"{where}.{unknown[0]}", "is not a scenario key",
                              f"use only {list(FILE_KEYS)}")
    name = table.get("name", default_name)
    desc = table.get("description", "")
    shocks = table.get("shocks")
    strict_v = table.get("strict", strict)
    if not isinstance(name, str) or not name.strip():
        raise ValidationError(f"{where}.name", f"is {name!r}", "give the scenario a name (text)")
    if not isinstance(desc, str):
        raise ValidationError(f"{where}.description", f"is {desc!r}", "give a text")
    if not isinstance(strict_v, bool):
        raise ValidationError(f"{where}.strict", f"is {strict_v!r}", "give true or false")
    if not isinstance(shocks, list) or not shocks or not all(isinstance(s, str) for s in shocks):
        raise ValidationError(f"{where}.shocks", f"is {shocks!r}",
                              'give a list of KEY=VALUE strings, e.g. shocks = ["BTC=-30%"]')
    return parse_scenario(name, shocks, description=desc, source=where, strict=strict_v)


def parse_scenario_document(data: Mapping[str, object], where: str, default_name: str,
                            strict: bool = True) -> list[Scenario]:
    """Scenarios of a parsed TOML document (one top-level scenario or ``[[scenario]]`` tables)."""
    if "scenario" in data:
        extra = sorted(set(data) - {"scenario"})
        if extra:
            raise ValidationError(f"{where}: {extra[0]}", "is outside the [[scenario]] tables",
                                  "put every key inside a [[scenario]] table, or use no tables")
        rows = data["scenario"]
        if not isinstance(rows, list) or not rows:
            raise ValidationError(f"{where}: scenario", "is not a list of tables",
                                  "write each scenario as [[scenario]]")
        out = [_scenario_table(r, f"{where}: scenario[{k}]", f"{default_name}-{k + 1}", strict)
               for k, r in enumerate(rows)]
    else:
        out = [_scenario_table(data, where, default_name, strict)]
    names = [s.name for s in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValidationError(f"{where}: {dup[0]}", "names two scenarios", "give each a unique name")
    return out


def load_scenario_file(path: str | Path, *, strict: bool = True) -> list[Scenario]:
    """The scenarios of one TOML file (see the module docstring); a file that cannot be read is
    one :class:`models.errors.ConfigError` (``models.toml_file.read_toml``)."""
    p = Path(path)
    data = read_toml(p, "scenario", "examples/scenarios/, or give a library name: fbr whatif --list")
    return parse_scenario_document(data, f"scenario file {p.name}", p.stem, strict)


def hypothetical_scenarios() -> list[Scenario]:
    """The hypothetical library: every ``scenarios/library/*.toml`` (package data), by file name."""
    base = resources.files("scenarios") / "library"
    out: list[Scenario] = []
    for res in sorted(base.iterdir(), key=lambda r: r.name):
        if not res.name.endswith(".toml"):
            continue
        data = parse_toml(res.read_text(encoding="utf-8"), f"library {res.name}")
        for s in parse_scenario_document(data, f"library {res.name}", res.name[:-5], strict=False):
            out.append(Scenario(s.name, s.shocks, s.description, "library", strict=False))
    return out


# ---------------------------------------------------------------------------------------------
# historical


def _closes(data_dir: Path) -> pd.DataFrame:
    """Daily closes of every symbol in ``<data_dir>/spot_1d``, outer-joined (NaN before a start),
    indexed by the close time (bar open + 1 day)."""
    folder = data_dir / SPOT_DAILY_FOLDER
    symbols = sorted({p.name.split(".")[0] for p in folder.iterdir() if p.is_file()})
    cols = [load_spot_closes(data_dir, [s], interval="1d")[s] for s in symbols]
    frame = pd.concat(cols, axis=1, join="outer", sort=True).astype(float)
    frame.index = pd.DatetimeIndex(frame.index) + pd.Timedelta(days=1)
    return frame


def _worst(closes: pd.DataFrame, days: int, ep: Episode) -> tuple[pd.Timestamp, pd.Timestamp,
                                                                   pd.Series, float] | None:
    """(start close time, end close time, per-asset returns, reference return) of the worst window."""
    ret = closes / closes.shift(days) - 1.0
    ref_cols = [a for a in REFERENCE_ASSETS if a in ret.columns]
    ref = ret[ref_cols].mean(axis=1, skipna=True)
    ends = ret.index
    mask = np.ones(len(ends), dtype=bool)
    if ep.start is not None:
        mask &= ends > pd.Timestamp(ep.start, tz="UTC")  # the first window ends after its first day
    if ep.end is not None:
        mask &= ends <= pd.Timestamp(ep.end, tz="UTC") + pd.Timedelta(days=1)
    ref = ref[mask].dropna()
    if ref.empty:
        return None
    k_ref = int(np.argmin(ref.to_numpy(dtype=float)))
    end = pd.Timestamp(ref.index[k_ref])
    k = int(closes.index.searchsorted(end))
    start = pd.Timestamp(closes.index[k - days])
    row = ret.iloc[k].dropna()
    return start, end, row, float(ref.iloc[k_ref])


def historical_scenarios(data_dir: Path | str | None = None) -> tuple[list[Scenario], list[str]]:
    """Historical scenarios measured from ``data_dir`` (default ``default_data_dir()``), and notes.

    Returns no scenarios and a note saying why when the data folder is missing.
    """
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    if root is None or not (root / SPOT_DAILY_FOLDER).is_dir():
        where = "no data folder" if root is None else f"no {root / SPOT_DAILY_FOLDER}"
        return [], [f"historical scenarios unavailable: {where}. Fix: set FBR_DATA_DIR to a folder "
                     f"with {SPOT_DAILY_FOLDER}/<SYM>.csv.gz (the layout of ../shared/data)"]
    closes = _closes(root)
    out: list[Scenario] = []
    notes: list[str] = []
    for ep in EPISODES:
        for days, what in ((1, "day"), (WEEK_DAYS, "week")):
            found = _worst(closes, days, ep)
            if found is None:
                notes.append(f"{HISTORICAL_PREFIX}{ep.key}-{what}: no data in {ep.start} .. {ep.end}")
                continue
            start, end, rets, ref = found
            last_day = end - pd.Timedelta(days=1)  # the last bar's open date
            span = (f"{last_day:%Y-%m-%d}" if days == 1 else
                    f"{start:%Y-%m-%d} .. {last_day:%Y-%m-%d}")
            moves = ", ".join(f"{a} {100 * r:+.1f}%" for a, r in rets.items() if a in REFERENCE_ASSETS)
            desc = (f"worst {what} of {ep.label}: {span} (UTC, close to close); {moves}; assets without data "
                    f"then move {100 * ref:+.1f}% (BTC/ETH/SOL mean); measured from {root}")
            out.append(scenario_from_returns(
                f"{HISTORICAL_PREFIX}{ep.key}-{what}", {str(a): float(r) for a, r in rets.items()},
                common=ref, description=desc, source="data", strict=False))
    return out, notes


def book_scenarios(stress: tuple[StressScenario, ...]) -> list[Scenario]:
    """A book's ``[[constraints.stress]]`` scenarios as what-if scenarios (``book:NAME``)."""
    return [scenario_from_returns(f"{BOOK_PREFIX}{s.name}", dict(s.returns), common=s.common,
                                  description="a stress scenario of the book's constraints",
                                  source="book") for s in stress]


@dataclass(frozen=True)
class Library:
    """Every named scenario available: hypothetical, historical (when the data is there) and the
    book's own stress scenarios; ``notes`` say what is missing."""

    scenarios: tuple[Scenario, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def names(self) -> list[str]:
        """Scenario names, in library order."""
        return [s.name for s in self.scenarios]

    def find(self, name: str) -> Scenario:
        """The scenario called ``name``; a clear error listing the names otherwise."""
        for s in self.scenarios:
            if s.name == name:
                return s
        hint = ""
        if name.startswith(HISTORICAL_PREFIX) and self.notes:
            hint = f" ({self.notes[0]})"
        raise ValidationError(f"scenario {name!r}", f"is neither a file nor a library scenario{hint}",
                              f"give a .toml file or one of {self.names}")


def load_library(*, data_dir: Path | str | None = None,
                 stress: tuple[StressScenario, ...] = (), historical: bool = True) -> Library:
    """The library: hypothetical files, historical scenarios from ``data_dir`` (when ``historical``)
    and the book's ``stress`` scenarios."""
    scen = hypothetical_scenarios()
    notes: list[str] = []
    if historical:
        hist, notes = historical_scenarios(data_dir)
        scen += hist
    scen += book_scenarios(stress)
    return Library(tuple(scen), tuple(notes))
