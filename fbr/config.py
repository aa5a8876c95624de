"""Book files: one TOML file holds a whole rebalance problem (book, market, risk model, settings).

``load_book_file(path)`` reads a file, ``parse_book(data)`` builds the models from an already parsed
TOML document. Both return a :class:`LoadedBook`. The format is documented in README.md
("Book file format"); in short:

    [book]               name, cash (USD stablecoin collateral in the futures wallet), targets_base
    [targets]            SYMBOL = weight (fraction of the base, or "30%")
    [spot] / [spot_usd]  SYMBOL = quantity (base units) / SYMBOL = USD value (at the spot price)
    [[assets]]           symbol, fee, lot_step (optional; default one asset per symbol used)
    [contract_defaults]  defaults for every [[contracts]] entry
    [tier_schedules]     NAME = [margin brackets] that contracts can refer to by name
    [[contracts]]        futures contracts (default: one linear perpetual "<SYM>-PERP" per asset)
    [[futures]]          current positions: symbol, contracts (signed), entry_price (USD)
    [pledged]            SYMBOL = collateral ratio after haircut (fraction)
    [market]             explicit prices, or source = "synthetic" | "data"
    [risk]               explicit vols + correlation, or an estimate (source, method, lookback_days)
    [costs] [constraints] [solver]   optimiser settings

Every mistake raises :class:`models.errors.ValidationError` naming the TOML field (dotted path,
``contracts[2].lot_step``), quoting the value and saying how to fix it; file-level problems (missing
file, TOML syntax) raise :class:`ConfigError`.

Units: money in USD; weights, fees, rates, vols and returns are fractions (strings such as "30%" or
"5bp" are accepted where a fraction is expected); vols are annualised (365-day year); funding rates
are per funding interval; ADV is USD per day.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import pandas as pd

from models.book import Book, FuturesPosition, TargetsBase
from models.errors import FbrError, ValidationError
from models.instruments import (
    ContractKind,
    FuturesContract,
    MarginTiers,
    Settlement,
    SpotAsset,
    TierBracket,
)
from models.market import MarketSnapshot
from models.risk import RiskModel
from optimizer.settings import (
    ClusterBand,
    ConstraintSettings,
    CostSettings,
    OptimizerSettings,
    SolverName,
    StressScenario,
)

Table = dict[str, Any]
_T = TypeVar("_T")

#: Top-level sections of a book file (anything else is a typo).
TOP_LEVEL_KEYS = (
    "book", "targets", "spot", "spot_usd", "assets", "contract_defaults", "tier_schedules",
    "contracts", "futures", "pledged", "market", "risk", "costs", "constraints", "solver",
)
BOOK_KEYS = ("name", "cash", "targets_base")
ASSET_KEYS = ("symbol", "fee", "lot_step")
CONTRACT_SETTING_KEYS = (
    "kind", "settlement", "contract_size", "lot_step", "min_qty", "max_qty", "min_notional", "tick",
    "maker_fee", "taker_fee", "funding_interval_h", "expiry", "leverage", "tiers", "tiers_from",
    "spec_from",
)
CONTRACT_KEYS = ("symbol", "underlying", *CONTRACT_SETTING_KEYS)
BRACKET_KEYS = ("min_notional", "max_notional", "max_leverage", "mmr", "cum")
FILE_REF_KEYS = ("file", "symbol")
POSITION_KEYS = ("symbol", "contracts", "entry_price")
MARKET_SOURCES = ("explicit", "synthetic", "data")
MARKET_KEYS = (
    "source", "time", "seed", "days", "start", "data_dir", "mark_from_spot",
    "spot", "mark", "funding", "half_spread", "adv", "spot_half_spread",
)
RISK_EXPLICIT_KEYS = ("vols", "correlation")
RISK_ESTIMATE_KEYS = (
    "method", "lookback_days", "halflife", "n_factors", "seed", "days", "start", "data_dir",
)
RISK_KEYS = ("source", *RISK_EXPLICIT_KEYS, *RISK_ESTIMATE_KEYS, "basis_risk", "basis_vols")
COST_KEYS = tuple(f.name for f in dataclasses.fields(CostSettings))
CONSTRAINT_KEYS = tuple(f.name for f in dataclasses.fields(ConstraintSettings))
STRESS_KEYS = ("name", "returns", "common")
CLUSTER_KEYS = ("name", "assets", "band")
SOLVER_KEYS = ("solvers", "objective_scale", "round_lots", "noise_trade_weight", "noise_objective")

#: Tolerances: target weights may exceed 1 by this much; MM may jump by this many USD at an edge.
WEIGHT_TOL = 1e-6
MM_JUMP_TOL_USD = 0.01
DEFAULT_LOOKBACK_DAYS = 365
DEFAULT_SYNTHETIC_DAYS = 730
DEFAULT_SYNTHETIC_START = "2023-01-01"
DEFAULT_SYNTHETIC_SEED = 7


class ConfigError(FbrError):
    """A book file cannot be read at all: it is missing or is not valid TOML."""


@dataclass(frozen=True)
class LoadedBook:
    """Everything one rebalance needs, built from a book file.

    ``labels`` describe where the data came from (e.g. "synthetic market data (seed 7)") so reports
    can show them next to the numbers.
    """

    book: Book
    market: MarketSnapshot
    risk: RiskModel
    settings: OptimizerSettings
    labels: tuple[str, ...]


class _History(Protocol):
    """What the synthetic generator returns (models.synthetic.SyntheticHistory)."""

    @property
    def spot(self) -> pd.DataFrame: ...

    @property
    def mark(self) -> pd.DataFrame: ...

    @property
    def returns(self) -> pd.DataFrame: ...

    def snapshot(self, contracts: Sequence[FuturesContract] = (),
                 at: Any = None) -> MarketSnapshot: ...


@dataclass
class _Context:
    """State shared while one document is parsed: where relative paths start, caches, labels."""

    base_dir: Path | None
    labels: list[str] = field(default_factory=list)
    histories: dict[tuple[Any, ...], _History] = field(default_factory=dict)

    def resolve(self, raw: str) -> Path:
        """A path from the file, relative to the book file's folder unless absolute."""
        p = Path(raw).expanduser()
        if p.is_absolute() or self.base_dir is None:
            return p
        return self.base_dir / p


# ==============================================================================================
# entry points
# ==============================================================================================
def read_toml(p: Path, kind: str, example: str) -> dict[str, Any]:
    """Parse the TOML file ``p`` (a ``kind`` file, e.g. "book"); every failure is one ConfigError
    naming the file, and for a syntax error the line, column and the offending line."""
    if not p.is_file():
        where = "is a folder" if p.is_dir() else "does not exist"
        raise ConfigError(f"{kind} file {str(p)!r} {where}. Fix: give the path of a .toml {kind} "
                          f"file (see {example})")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{kind} file {str(p)!r} cannot be read: {exc}. Fix: give a readable "
                          "UTF-8 text file") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(_describe_toml_error(p, text, exc)) from None


def load_book_file(path: str | Path) -> LoadedBook:
    """Read a TOML book file and build the book, market, risk model and settings it describes."""
    p = Path(path)
    data = read_toml(p, "book", "examples/ for complete ones")
    return parse_book(data, source=str(p), base_dir=p.resolve().parent)


def parse_book(data: Mapping[str, Any], *, source: str = "<dict>",
               base_dir: Path | None = None) -> LoadedBook:
    """Build a :class:`LoadedBook` from a parsed TOML document (``source`` names it in errors)."""
    try:
        default_name = "book" if source == "<dict>" else Path(source).stem
        return _parse(data, _Context(base_dir), default_name)
    except ValidationError as exc:
        if source == "<dict>":
            raise
        raise ValidationError(exc.field, f"{exc.problem} (in {source})", exc.fix) from exc


def _describe_toml_error(path: Path, text: str, exc: tomllib.TOMLDecodeError) -> str:
    """'file.toml, line 3, column 7: Invalid value' plus the offending line, quoted."""
    line = getattr(exc, "lineno", None)
    col = getattr(exc, "colno", None)
    reason = str(getattr(exc, "msg", "") or exc)
    m = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
    if m:
        line, col = int(m.group(1)), int(m.group(2))
        reason = str(exc)[: m.start()].strip()
    if line is None:
        return f"{path}: not valid TOML: {reason}. Fix: correct the TOML syntax"
    lines = text.splitlines()
    quoted = lines[line - 1] if 0 < line <= len(lines) else ""
    return (f"{path}, line {line}, column {col}: not valid TOML: {reason}\n"
            f"    {quoted}\n    {' ' * max(int(col or 1) - 1, 0)}^\n"
            "Fix: correct the TOML syntax at that place (strings need quotes, one key per line, "
            "tables as [name])")


def _parse(data: Mapping[str, Any], ctx: _Context, default_name: str) -> LoadedBook:
    """The whole document, section by section (``default_name`` when [book] has no name)."""
    if not isinstance(data, Mapping):
        raise ValidationError("<document>", f"is {type(data).__name__}", "give a TOML table")
    _check_keys(data, TOP_LEVEL_KEYS, "")
    head = _table(data, "book", "")
    _check_keys(head, BOOK_KEYS, "book")
    targets = _weights(_table(data, "targets", ""), "targets")
    spot_qty = _amounts(_table(data, "spot", ""), "spot")
    spot_usd = _amounts(_table(data, "spot_usd", ""), "spot_usd")
    assets = _assets(data, targets, spot_qty, spot_usd)
    symbols = [a.symbol for a in assets]
    _check_references(targets, spot_qty, spot_usd, symbols)
    contracts = _contracts(data, symbols, ctx)
    futures = _positions(data, contracts)
    pledged = _pledged(_table(data, "pledged", ""), symbols)
    market = _market(_table(data, "market", ""), assets, contracts, ctx)
    spot = _spot_quantities(spot_qty, spot_usd, market)
    book = Book(
        assets=assets, contracts=contracts, spot=spot, targets=targets,
        cash=_nonneg(head.get("cash", 0.0), "book.cash"),
        futures=futures, pledged=pledged,
        targets_base=_choice(head.get("targets_base", "invested"), "book.targets_base",
                             [t.value for t in TargetsBase], TargetsBase),
        name=_string(head.get("name", default_name), "book.name"),
    )
    _check_base(book, market)
    risk_table = _table(data, "risk", "")
    risk = _risk(risk_table, book, market, _table(data, "market", ""), ctx)
    settings = _settings(data, risk_table, book)
    return LoadedBook(book, market, risk, settings, tuple(ctx.labels))


# ==============================================================================================
# small value parsers (each names the field and quotes the value when it rejects it)
# ==============================================================================================
def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _check_keys(table: Mapping[str, Any], allowed: Iterable[str], path: str) -> None:
    """Reject keys not in ``allowed`` (typos), suggesting the closest valid key."""
    valid = list(allowed)
    for key in table:
        if key in valid:
            continue
        close = difflib.get_close_matches(key, valid, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        where = f"section [{path}]" if path else "the top level"
        raise ValidationError(_join(path, key), f"is not a known key of {where} "
                              f"(value {table[key]!r})",
                              f"{hint}valid keys are: {', '.join(valid)}")


def _table(data: Mapping[str, Any], key: str, path: str) -> Table:
    """``data[key]`` as a table ({} when absent)."""
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ValidationError(_join(path, key), f"is {value!r}, not a table",
                              f"write it as a table: [{_join(path, key)}] or {key} = {{...}}")
    return value


def _tables(data: Mapping[str, Any], key: str, path: str) -> list[Table]:
    """``data[key]`` as an array of tables ([] when absent)."""
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ValidationError(_join(path, key), f"is {value!r}, not an array of tables",
                              f"write each entry as [[{_join(path, key)}]]")
    return value


_FRACTION_TEXT = re.compile(r"^\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(%|bp|bps)\s*$")


def _number(value: Any, path: str, *, percent: bool = False, allow_inf: bool = False) -> float:
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


def _positive(value: Any, path: str, *, percent: bool = False, allow_inf: bool = False) -> float:
    v = _number(value, path, percent=percent, allow_inf=allow_inf)
    if v <= 0:
        raise ValidationError(path, f"is {value!r}", "give a value > 0")
    return v


def _nonneg(value: Any, path: str, *, percent: bool = False) -> float:
    v = _number(value, path, percent=percent)
    if v < 0:
        raise ValidationError(path, f"is {value!r}", "give a value >= 0")
    return v


def _in_range(value: Any, path: str, lo: float, hi: float) -> float:
    """A fraction in [lo, hi] (percent strings allowed)."""
    v = _number(value, path, percent=True)
    if not lo <= v <= hi:
        raise ValidationError(path, f"is {value!r}", f"give a value between {lo} and {hi}")
    return v


def _optional(table: Mapping[str, Any], key: str, path: str,
              parse: Callable[[Any, str], float]) -> float | None:
    return None if key not in table else parse(table[key], _join(path, key))


def _bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise ValidationError(path, f"is {value!r}", "write true or false (no quotes)")
    return value


def _string(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(path, f"is {value!r}", "give a non-empty text in quotes")
    return value


def _choice(value: Any, path: str, options: Sequence[str], make: Callable[[str], _T]) -> _T:
    if not isinstance(value, str) or value.lower() not in options:
        raise ValidationError(path, f"is {value!r}", f"use one of {', '.join(map(repr, options))}")
    return make(value.lower())


def _timestamp(value: Any, path: str) -> pd.Timestamp:
    """A TOML date/datetime or ISO text as a tz-aware UTC timestamp (naive times are UTC)."""
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


def _symbol_map(table: Mapping[str, Any], path: str,
                parse: Callable[[Any, str], float]) -> dict[str, float]:
    """SYMBOL = value tables, parsed value by value (order kept)."""
    return {str(sym): parse(v, _join(path, sym)) for sym, v in table.items()}


def _known(sym: str, known: Sequence[str], path: str, what: str, value: Any = None) -> None:
    """Raise unless ``sym`` is one of ``known`` (``what`` says which list it must be in)."""
    if sym in known:
        return
    close = difflib.get_close_matches(sym, list(known), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    quoted = "" if value is None else f" (value {value!r})"
    raise ValidationError(path, f"names {sym!r}, which is not {what}{quoted}",
                          f"{hint}use one of {', '.join(known) or '(none)'}")


# ==============================================================================================
# book sections
# ==============================================================================================
def _weights(table: Table, path: str) -> dict[str, float]:
    """[targets]: weights >= 0 summing to at most 1 (the rest is cash)."""
    if not table:
        raise ValidationError(path, "is missing or empty",
                              "add a [targets] table, e.g. BTC = 0.5, ETH = 0.3, SOL = 0.2")
    weights = _symbol_map(table, path, lambda v, p: _nonneg(v, p, percent=True))
    total = sum(weights.values())
    if total > 1 + WEIGHT_TOL:
        listed = ", ".join(f"{s} = {table[s]!r}" for s in table)
        raise ValidationError(path, f"weights sum to {total:.6g}, above 1 ({listed})",
                              "make the target weights sum to 1 or less (the rest stays in cash)")
    return weights


def _amounts(table: Table, path: str) -> dict[str, float]:
    """[spot] quantities or [spot_usd] values: finite and >= 0."""
    return _symbol_map(table, path, _nonneg)


def _assets(data: Mapping[str, Any], targets: Mapping[str, float], spot_qty: Mapping[str, float],
            spot_usd: Mapping[str, float]) -> tuple[SpotAsset, ...]:
    """[[assets]] if given, else one default SpotAsset per symbol in targets/spot/spot_usd."""
    rows = _tables(data, "assets", "")
    if not rows:
        symbols = dict.fromkeys([*targets, *spot_qty, *spot_usd])
        return tuple(SpotAsset(s) for s in symbols)
    out: list[SpotAsset] = []
    for k, row in enumerate(rows):
        p = _join("assets", k)
        _check_keys(row, ASSET_KEYS, p)
        sym = _string(row.get("symbol"), _join(p, "symbol"))
        kwargs: dict[str, float] = {}
        if "fee" in row:
            kwargs["fee"] = _in_range(row["fee"], _join(p, "fee"), 0.0, 0.05)
        if "lot_step" in row:
            kwargs["lot_step"] = _nonneg(row["lot_step"], _join(p, "lot_step"))
        out.append(SpotAsset(sym, **kwargs))
    syms = [a.symbol for a in out]
    dup = sorted({s for s in syms if syms.count(s) > 1})
    if dup:
        raise ValidationError("assets", f"lists {dup} more than once", "list each asset once")
    return tuple(out)


def _check_references(targets: Mapping[str, float], spot_qty: Mapping[str, float],
                      spot_usd: Mapping[str, float], symbols: Sequence[str]) -> None:
    """Every symbol in [targets], [spot], [spot_usd] must be an asset; spot given once."""
    for name, table in (("targets", targets), ("spot", spot_qty), ("spot_usd", spot_usd)):
        for sym, v in table.items():
            _known(sym, symbols, _join(name, sym), "in [[assets]]", v)
    both = [s for s in spot_qty if s in spot_usd]
    if both:
        raise ValidationError(f"spot_usd.{both[0]}", f"is also given in [spot] "
                              f"({spot_qty[both[0]]!r} units and {spot_usd[both[0]]!r} USD)",
                              "give each holding once, as a quantity or as a USD value")


def _pledged(table: Table, symbols: Sequence[str]) -> dict[str, float]:
    """[pledged]: collateral ratio after haircut, a fraction in [0, 1]."""
    out: dict[str, float] = {}
    for sym, v in table.items():
        _known(sym, symbols, _join("pledged", sym), "an asset of the book", v)
        out[sym] = _in_range(v, _join("pledged", sym), 0.0, 1.0)
    return out


def _positions(data: Mapping[str, Any],
               contracts: Sequence[FuturesContract]) -> dict[str, FuturesPosition]:
    """[[futures]]: current positions in contracts (signed) with their entry price (USD)."""
    syms = [c.symbol for c in contracts]
    out: dict[str, FuturesPosition] = {}
    for k, row in enumerate(_tables(data, "futures", "")):
        p = _join("futures", k)
        _check_keys(row, POSITION_KEYS, p)
        sym = _string(row.get("symbol"), _join(p, "symbol"))
        _known(sym, syms, _join(p, "symbol"), "a listed contract")
        if sym in out:
            raise ValidationError(_join(p, "symbol"), f"repeats {sym!r}",
                                  "give one [[futures]] entry per contract (net position)")
        qty = _number(row.get("contracts", 0.0), _join(p, "contracts"))
        if qty != 0 and "entry_price" not in row:
            raise ValidationError(_join(p, "entry_price"), "is missing",
                                  "give the position's average entry price (USD)")
        entry = _positive(row.get("entry_price", 1.0), _join(p, "entry_price"))
        out[sym] = FuturesPosition(qty, entry)
    return out


def _spot_quantities(spot_qty: Mapping[str, float], spot_usd: Mapping[str, float],
                     market: MarketSnapshot) -> dict[str, float]:
    """Spot in base units; [spot_usd] values are converted at the market's spot price."""
    out = dict(spot_qty)
    for sym, usd in spot_usd.items():
        out[sym] = usd / market.spot_price(sym)
    return out


def _check_base(book: Book, market: MarketSnapshot) -> None:
    """The target base V must be positive (else weights are undefined)."""
    if book.base(market) <= 0:
        raise ValidationError("spot", f"holds no value, so the target base "
                              f"({book.targets_base.value}) is {book.base(market):.6g} USD",
                              "give spot holdings ([spot] or [spot_usd]) or set "
                              'book.targets_base = "nav" with book.cash > 0')


# ==============================================================================================
# contracts and margin tiers
# ==============================================================================================
def _contracts(data: Mapping[str, Any], symbols: Sequence[str],
               ctx: _Context) -> tuple[FuturesContract, ...]:
    """[[contracts]] merged over [contract_defaults]; none listed: one perpetual per asset."""
    defaults = _table(data, "contract_defaults", "")
    _check_keys(defaults, CONTRACT_SETTING_KEYS, "contract_defaults")
    schedules = _tier_schedules(_table(data, "tier_schedules", ""))
    rows = _tables(data, "contracts", "")
    if not rows:
        rows = [{"symbol": f"{s}-PERP", "underlying": s} for s in symbols]
        ctx.labels.append("contracts: one linear perpetual per asset (none listed)")
    out = [_contract(row, k, defaults, schedules, symbols, ctx) for k, row in enumerate(rows)]
    syms = [c.symbol for c in out]
    dup = sorted({s for s in syms if syms.count(s) > 1})
    if dup:
        raise ValidationError("contracts", f"lists {dup} more than once", "list each contract once")
    return tuple(out)


def _merge_contract(row: Table, defaults: Table) -> tuple[Table, dict[str, str]]:
    """Contract keys over defaults; a tier source in the row replaces the default's. Also returns
    the TOML path each merged key came from (for error messages)."""
    base = dict(defaults)
    if "tiers" in row or "tiers_from" in row:
        base.pop("tiers", None)
        base.pop("tiers_from", None)
    merged = {**base, **row}
    origin = {k: ("row" if k in row else "contract_defaults") for k in merged}
    return merged, origin


def _contract(row: Table, k: int, defaults: Table, schedules: Mapping[str, MarginTiers],
              symbols: Sequence[str], ctx: _Context) -> FuturesContract:
    """One [[contracts]] entry (with defaults applied) as a FuturesContract."""
    p = _join("contracts", k)
    _check_keys(row, CONTRACT_KEYS, p)
    merged, origin = _merge_contract(row, defaults)

    def at(key: str) -> str:
        return _join(p if origin.get(key) == "row" else "contract_defaults", key)

    sym = _string(merged.get("symbol"), _join(p, "symbol"))
    under = _string(merged.get("underlying"), _join(p, "underlying"))
    _known(under, symbols, _join(p, "underlying"), "an asset of the book (unknown underlying)")
    if "spec_from" in merged:
        spec = _spec_from(merged["spec_from"], at("spec_from"), ctx)
        merged = {**spec, **{key: v for key, v in merged.items() if key != "spec_from"}}
    if "tiers" in merged and "tiers_from" in merged:
        raise ValidationError(_join(p, "tiers_from"), "is given together with tiers",
                              "give the brackets inline (tiers) or from a file (tiers_from), "
                              "not both")
    kwargs: dict[str, Any] = {"symbol": sym, "underlying": under}
    kwargs.update(_contract_numbers(merged, at))
    if "kind" in merged:
        kwargs["kind"] = _choice(merged["kind"], at("kind"), [c.value for c in ContractKind],
                                 ContractKind)
    if "settlement" in merged:
        kwargs["settlement"] = _choice(merged["settlement"], at("settlement"),
                                       [s.value for s in Settlement], Settlement)
    if "expiry" in merged:
        kwargs["expiry"] = _timestamp(merged["expiry"], at("expiry")).to_pydatetime()
    if "tiers" in merged:
        kwargs["tiers"] = _tiers_value(merged["tiers"], at("tiers"), schedules)
    elif "tiers_from" in merged:
        kwargs["tiers"] = _tiers_from(merged["tiers_from"], at("tiers_from"), ctx)
    try:
        return FuturesContract(**kwargs)
    except ValidationError as exc:  # re-label the model's path with the TOML one
        prefix = f"contracts.{sym}."
        if not exc.field.startswith(prefix):
            raise
        key = exc.field[len(prefix):]
        field_path = at(key) if key in merged else _join(p, key)
        raise ValidationError(field_path, exc.problem, exc.fix) from exc


_CONTRACT_NUMBERS: dict[str, Callable[[Any, str], float]] = {
    "contract_size": _positive,
    "lot_step": _nonneg,
    "min_qty": _nonneg,
    "max_qty": lambda v, p: _positive(v, p, allow_inf=True),
    "min_notional": _nonneg,
    "tick": _nonneg,
    "maker_fee": lambda v, p: _in_range(v, p, -0.01, 0.05),
    "taker_fee": lambda v, p: _in_range(v, p, -0.01, 0.05),
    "funding_interval_h": _positive,
    "leverage": _positive,
}


def _contract_numbers(merged: Table, at: Callable[[str], str]) -> dict[str, float]:
    """The numeric contract fields present in ``merged``, parsed and range-checked."""
    return {key: parse(merged[key], at(key)) for key, parse in _CONTRACT_NUMBERS.items()
            if key in merged}


def _file_ref(value: Any, path: str, ctx: _Context) -> tuple[Path, str]:
    """{file = "...", symbol = "BTC/USDT:USDT"}: an existing file and a ccxt symbol."""
    if not isinstance(value, dict):
        raise ValidationError(path, f"is {value!r}",
                              'write {file = "path/to/file.csv.gz", symbol = "BTC/USDT:USDT"}')
    _check_keys(value, FILE_REF_KEYS, path)
    raw = _string(value.get("file"), _join(path, "file"))
    symbol = _string(value.get("symbol"), _join(path, "symbol"))
    resolved = ctx.resolve(raw)
    if not resolved.is_file():
        raise ValidationError(_join(path, "file"), f"is {raw!r}, which does not exist "
                              f"(looked for {resolved})",
                              "give a path relative to the book file, or an absolute one")
    return resolved, symbol


def _spec_from(value: Any, path: str, ctx: _Context) -> Table:
    """Contract spec fields (lot_step, tick, ...) read with models.io.load_contract_spec."""
    from models.io import load_contract_spec

    resolved, symbol = _file_ref(value, path, ctx)
    try:
        spec = load_contract_spec(resolved, symbol)
    except ValidationError as exc:
        raise ValidationError(path, f"{exc.field} {exc.problem}", exc.fix) from exc
    except (OSError, KeyError, ValueError) as exc:
        raise ValidationError(path, f"could not be read from {resolved}: {exc!r}",
                              f"check that the file lists {symbol!r}") from exc
    return {k: v for k, v in spec.items() if k in _CONTRACT_NUMBERS}


def _tiers_from(value: Any, path: str, ctx: _Context) -> MarginTiers:
    """Tier brackets read with models.io.load_leverage_tiers."""
    from models.io import load_leverage_tiers

    resolved, symbol = _file_ref(value, path, ctx)
    try:
        return load_leverage_tiers(resolved, symbol)
    except ValidationError as exc:
        raise ValidationError(path, f"{exc.field} {exc.problem}", exc.fix) from exc
    except (OSError, KeyError, ValueError) as exc:
        raise ValidationError(path, f"could not be read from {resolved}: {exc!r}",
                              f"check that the file lists {symbol!r}") from exc


def _tier_schedules(table: Table) -> dict[str, MarginTiers]:
    """[tier_schedules]: NAME = array of brackets, shared by contracts (tiers = "NAME")."""
    return {name: _brackets(rows, _join("tier_schedules", name)) for name, rows in table.items()}


def _tiers_value(value: Any, path: str, schedules: Mapping[str, MarginTiers]) -> MarginTiers:
    """tiers = [brackets...] inline, or tiers = "NAME" of a [tier_schedules] entry."""
    if isinstance(value, str):
        _known(value, list(schedules), path, "a name in [tier_schedules]")
        return schedules[value]
    return _brackets(value, path)


def _brackets(rows: Any, path: str) -> MarginTiers:
    """Brackets sorted by notional. ``min_notional`` defaults to the previous ``max_notional``
    (0 for the first), ``cum`` to the value that makes maintenance margin continuous; a given
    ``cum`` that makes MM jump at a bracket edge is rejected."""
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise ValidationError(path, f"is {rows!r}",
                              "give a non-empty array of brackets, e.g. [{max_notional = 50000, "
                              "max_leverage = 125, mmr = 0.004}, ...]")
    out: list[TierBracket] = []
    for k, row in enumerate(rows):
        out.append(_bracket(row, _join(path, k), out[-1] if out else None))
    try:
        return MarginTiers(tuple(out))
    except ValidationError as exc:  # the model names fields tiers[k].key
        raise ValidationError(path + exc.field.removeprefix("tiers"), exc.problem,
                              exc.fix) from exc


def _bracket(row: Table, path: str, prev: TierBracket | None) -> TierBracket:
    """One bracket, checked for contiguity and MM continuity against ``prev``."""
    _check_keys(row, BRACKET_KEYS, path)
    lo_default = prev.max_notional if prev else 0.0
    lo = _nonneg(row.get("min_notional", lo_default), _join(path, "min_notional"))
    if "max_notional" not in row:
        raise ValidationError(_join(path, "max_notional"), "is missing",
                              "give the bracket's upper notional (USD; inf for the last one)")
    hi = _positive(row["max_notional"], _join(path, "max_notional"), allow_inf=True)
    if "mmr" not in row or "max_leverage" not in row:
        missing = "mmr" if "mmr" not in row else "max_leverage"
        raise ValidationError(_join(path, missing), "is missing",
                              "give max_leverage (x) and mmr (maintenance rate, fraction)")
    lev = _positive(row["max_leverage"], _join(path, "max_leverage"))
    mmr = _in_range(row["mmr"], _join(path, "mmr"), 0.0, 1.0)
    if prev is not None and abs(lo - prev.max_notional) > 1e-6 * max(1.0, lo):
        raise ValidationError(_join(path, "min_notional"), f"is {row.get('min_notional')!r}, "
                              f"but the previous bracket ends at {prev.max_notional:g}",
                              "make brackets contiguous and sorted by notional")
    continuous = 0.0 if prev is None else prev.cum + (mmr - prev.mmr) * lo
    cum = continuous if "cum" not in row else _number(row["cum"], _join(path, "cum"))
    if prev is not None and abs(cum - continuous) > MM_JUMP_TOL_USD + 1e-9 * lo:
        raise ValidationError(_join(path, "cum"), f"is {row['cum']!r}, which makes maintenance "
                              f"margin jump by {continuous - cum:+.6g} USD at notional {lo:g}",
                              f"set cum = {continuous:.10g} (or leave cum out: fbr computes it)")
    return TierBracket(lo, hi, lev, mmr, cum)


# ==============================================================================================
# market
# ==============================================================================================
def _market(table: Table, assets: Sequence[SpotAsset], contracts: Sequence[FuturesContract],
            ctx: _Context) -> MarketSnapshot:
    """[market]: explicit prices, a synthetic snapshot or the last data close; explicit sub-tables
    override the source's values."""
    _check_keys(table, MARKET_KEYS, "market")
    source = _choice(table.get("source", "explicit"), "market.source", MARKET_SOURCES, str)
    symbols = [a.symbol for a in assets]
    csyms = [c.symbol for c in contracts]
    overrides = _market_overrides(table, symbols, csyms)
    at = _timestamp(table["time"], "market.time") if "time" in table else None
    if source != "synthetic":
        for key in ("seed", "days", "start"):
            if key in table:
                raise ValidationError(_join("market", key), f"is {table[key]!r} but the market "
                                      f"source is {source!r}",
                                      'remove it, or set market.source = "synthetic"')
    if source == "synthetic":
        snap = _synthetic_market(table, symbols, contracts, at, ctx)
    elif source == "data":
        snap = _data_market(table, symbols, at, ctx)
    else:
        snap = _explicit_market(at, ctx)
    snap = _apply_overrides(snap, overrides)
    mark_from_spot = _bool(table.get("mark_from_spot", False), "market.mark_from_spot")
    if source == "data" or mark_from_spot:
        snap = _marks_from_spot(snap, contracts, ctx)
    _check_market_covers(snap, symbols, contracts)
    return snap


_MARKET_SUBTABLES = ("spot", "mark", "funding", "half_spread", "adv", "spot_half_spread")


def _market_overrides(table: Table, symbols: Sequence[str],
                      csyms: Sequence[str]) -> dict[str, dict[str, float]]:
    """The explicit [market.*] sub-tables, keyed by asset (spot, spot_half_spread) or contract."""
    parsers: dict[str, Callable[[Any, str], float]] = {
        "spot": _number, "mark": _number,  # MarketSnapshot rejects <= 0 with the field name
        "funding": lambda v, p: _number(v, p, percent=True),
        "half_spread": lambda v, p: _number(v, p, percent=True),
        "spot_half_spread": lambda v, p: _number(v, p, percent=True),
        "adv": _positive,
    }
    out: dict[str, dict[str, float]] = {}
    for key in _MARKET_SUBTABLES:
        sub = _table(table, key, "market")
        by_asset = key in ("spot", "spot_half_spread")
        names, what = (symbols, "an asset of the book") if by_asset else (csyms, "a contract")
        for sym, v in sub.items():
            _known(sym, names, f"market.{key}.{sym}", what, v)
        out[key] = _symbol_map(sub, f"market.{key}", parsers[key])
    return out


def _explicit_market(at: pd.Timestamp | None, ctx: _Context) -> MarketSnapshot:
    """An empty snapshot at market.time (else now); the file's [market.*] values fill it."""
    if at is None:
        at = pd.Timestamp.now(tz="UTC").floor("s")
        ctx.labels.append("market time not given: using the current time")
    ctx.labels.append("market prices given in the book file")
    return MarketSnapshot(time=at, spot={}, mark={})


def _apply_overrides(snap: MarketSnapshot,
                     overrides: Mapping[str, Mapping[str, float]]) -> MarketSnapshot:
    """The snapshot with the file's values written over the source's."""
    if not any(overrides.get(key) for key in _MARKET_SUBTABLES):
        return snap
    m = {key: {**getattr(snap, key), **overrides.get(key, {})} for key in _MARKET_SUBTABLES}
    return MarketSnapshot(time=snap.time, spot=m["spot"], mark=m["mark"], funding=m["funding"],
                          half_spread=m["half_spread"], adv=m["adv"],
                          spot_half_spread=m["spot_half_spread"], synthetic=snap.synthetic)


def _marks_from_spot(snap: MarketSnapshot, contracts: Sequence[FuturesContract],
                     ctx: _Context) -> MarketSnapshot:
    """Fill missing mark prices with the underlying's spot price (no basis)."""
    filled = {c.symbol: snap.spot[c.underlying] for c in contracts
              if c.symbol not in snap.mark and c.underlying in snap.spot}
    if not filled:
        return snap
    ctx.labels.append(f"mark = spot price (no basis) for {', '.join(filled)}")
    return dataclasses.replace(snap, mark={**snap.mark, **filled})


def _check_market_covers(snap: MarketSnapshot, symbols: Sequence[str],
                         contracts: Sequence[FuturesContract]) -> None:
    """Every asset needs a spot price and every contract a mark price."""
    for sym in symbols:
        if sym not in snap.spot:
            raise ValidationError(f"market.spot.{sym}", f"is missing: asset {sym!r} has no "
                                  "spot price", f"add {sym} = <USD price> under [market.spot]")
    for c in contracts:
        if c.symbol not in snap.mark:
            raise ValidationError(f"market.mark.{c.symbol}", f"is missing: contract {c.symbol!r} "
                                  "has no mark price",
                                  f'add "{c.symbol}" = <USD price> under [market.mark], or set '
                                  "market.mark_from_spot = true to use the underlying's spot price")


def _synthetic_params(table: Table, path: str,
                      fallback: Mapping[str, Any] | None = None) -> tuple[int, int, str]:
    """(seed, days, start) of the synthetic generator; missing keys come from ``fallback``."""
    fb = fallback or {}
    seed = table.get("seed", fb.get("seed", DEFAULT_SYNTHETIC_SEED))
    days = table.get("days", fb.get("days", DEFAULT_SYNTHETIC_DAYS))
    start = table.get("start", fb.get("start", DEFAULT_SYNTHETIC_START))
    for key, v in (("seed", seed), ("days", days)):
        if isinstance(v, bool) or not isinstance(v, int) or v < (0 if key == "seed" else 2):
            raise ValidationError(_join(path, key), f"is {v!r}", "give a whole number "
                                  + (">= 0" if key == "seed" else ">= 2"))
    start_ts = _timestamp(start, _join(path, "start"))
    return int(seed), int(days), start_ts.strftime("%Y-%m-%d")


def _history(symbols: Sequence[str], seed: int, days: int, start: str, ctx: _Context,
             section: str) -> _History:
    """models.synthetic.generate_history, cached so market and risk share one history."""
    key = (tuple(symbols), seed, days, start)
    if key not in ctx.histories:
        from models.synthetic import generate_history

        try:
            ctx.histories[key] = generate_history(tuple(symbols), days=days, start=start,
                                                  seed=seed)
        except ValidationError as exc:  # the generator names fields synthetic.<key>
            field_path = _join(section, exc.field.removeprefix("synthetic."))
            raise ValidationError(field_path, exc.problem, exc.fix) from exc
    return ctx.histories[key]


def _synthetic_market(table: Table, symbols: Sequence[str],
                      contracts: Sequence[FuturesContract], at: pd.Timestamp | None,
                      ctx: _Context) -> MarketSnapshot:
    """The generator's snapshot at ``at`` (its last day when not given)."""
    seed, days, start = _synthetic_params(table, "market")
    hist = _history(symbols, seed, days, start, ctx, "market")
    try:
        snap = hist.snapshot(tuple(contracts), at=at)
    except ValidationError as exc:
        if not exc.field.startswith("snapshot"):
            raise
        raise ValidationError("market.time", exc.problem, exc.fix) from exc
    ctx.labels.append(f"synthetic market data (seed {seed}, {days} days from {start}, "
                      f"snapshot {snap.time:%Y-%m-%d})")
    return snap


def _data_dir(table: Table, path: str, ctx: _Context) -> Path:
    """``data_dir`` of the table (relative to the book file), else models.io.default_data_dir()."""
    if "data_dir" in table:
        d = ctx.resolve(_string(table["data_dir"], _join(path, "data_dir")))
    else:
        from models.io import default_data_dir

        found = default_data_dir()
        if found is None:
            raise ValidationError(_join(path, "data_dir"),
                                  "is not set and no data folder was found",
                                  'set data_dir = "path/to/shared/data" (relative to the book '
                                  "file)")
        d = found
    if not d.is_dir():
        raise ValidationError(_join(path, "data_dir"), f"is {str(d)!r}, which is not a folder",
                              "give the folder that holds spot_1d/ (relative to the book file)")
    return d


def _data_market(table: Table, symbols: Sequence[str], at: pd.Timestamp | None,
                 ctx: _Context) -> MarketSnapshot:
    """Spot = the last daily close at or before ``at`` (the last one when not given); marks are set
    to spot by the caller (the data folder's perp marks are 4-hourly and cover fewer symbols)."""
    d = _data_dir(table, "market", ctx)
    closes = _until(_spot_closes(d, symbols, "market"), at)
    if closes.empty:
        raise ValidationError("market.time", f"is {at}, before the first close in {d}",
                              "give a later market.time")
    row = closes.iloc[-1]
    missing = [s for s in symbols if s not in row.index or not math.isfinite(float(row[s]))]
    if missing:
        raise ValidationError("market.time", f"has no close for {missing} on {closes.index[-1]}",
                              "give a later market.time (the series start on different dates)")
    when = pd.Timestamp(closes.index[-1])
    when = when.tz_localize("UTC") if when.tzinfo is None else when
    ctx.labels.append(f"market data: daily spot closes from {d} at {when:%Y-%m-%d}")
    return MarketSnapshot(time=when, spot={s: float(row[s]) for s in symbols}, mark={})


def _until(frame: pd.DataFrame, end: pd.Timestamp | None) -> pd.DataFrame:
    """Rows with index <= ``end`` (all rows when None); naive indexes are read as UTC."""
    if end is None:
        return frame
    idx = pd.DatetimeIndex(frame.index)
    stop = end if idx.tz is not None else end.tz_convert("UTC").tz_localize(None)
    return frame.loc[idx <= stop]


# ==============================================================================================
# risk model
# ==============================================================================================
def _risk(table: Table, book: Book, market: MarketSnapshot, market_table: Table,
          ctx: _Context) -> RiskModel:
    """[risk]: explicit vols + correlation, or estimated from synthetic or real returns."""
    _check_keys(table, RISK_KEYS, "risk")
    symbols = book.asset_symbols
    source = _risk_source(table, market_table)
    if source == "explicit":
        model = _explicit_risk(table, symbols)
        ctx.labels.append("risk model: vols and correlation given in the book file")
    else:
        model = _estimated_risk(table, source, symbols, market, market_table, ctx)
    if "basis_vols" in table:
        model = _with_basis(model, _table(table, "basis_vols", "risk"), book)
    elif source == "synthetic":
        model = _synthetic_basis(model, table, book, market, market_table, ctx)
    return model


def _risk_source(table: Table, market_table: Table) -> str:
    """explicit when vols are given; else [risk].source; else the market's source if it has one."""
    if "source" in table:
        src = _choice(table["source"], "risk.source", MARKET_SOURCES, str)
    elif "vols" in table or "correlation" in table:
        src = "explicit"
    else:
        src = str(market_table.get("source", "explicit")).lower()
        if src not in ("synthetic", "data"):
            raise ValidationError("risk", "gives no risk model",
                                  "add risk.vols and risk.correlation, or set risk.source = "
                                  '"synthetic" or "data" to estimate one')
    wrong = RISK_ESTIMATE_KEYS if src == "explicit" else RISK_EXPLICIT_KEYS
    for key in wrong:
        if key in table:
            raise ValidationError(_join("risk", key), f"is {table[key]!r} but the risk model is "
                                  f"{'explicit' if src == 'explicit' else 'estimated'} "
                                  f"(source {src!r})",
                                  "remove it, or change risk.source")
    return src


def _explicit_risk(table: Table, symbols: Sequence[str]) -> RiskModel:
    """Sigma = D C D from annual vols (D) and a correlation matrix C (or one common value)."""
    vols_table = _table(table, "vols", "risk")
    for sym, v in vols_table.items():
        _known(sym, symbols, f"risk.vols.{sym}", "an asset of the book", v)
    missing = [s for s in symbols if s not in vols_table]
    if missing:
        raise ValidationError("risk.vols", f"has no vol for {missing}",
                              "give an annualised vol for every asset, e.g. BTC = 0.6 or \"60%\"")
    vols = {s: _vol(vols_table[s], f"risk.vols.{s}") for s in vols_table}
    order = list(vols_table)
    if "correlation" not in table and len(order) > 1:
        raise ValidationError("risk.correlation", "is missing",
                              "give one correlation for all pairs (e.g. 0.7) or a matrix")
    corr = _correlation(table.get("correlation", 1.0), order)
    d = np.array([vols[s] for s in order])
    model = RiskModel.from_covariance(order, corr * np.outer(d, d), method="given")
    return model.subset(list(symbols))


def _vol(value: Any, path: str) -> float:
    """An annualised volatility: a fraction > 0 ("60%" allowed)."""
    v = _number(value, path, percent=True)
    if v <= 0:
        raise ValidationError(path, f"is {value!r}",
                              'give an annualised vol > 0, e.g. 0.6 or "60%"')
    return v


def _correlation(value: Any, order: Sequence[str]) -> np.ndarray:
    """A symmetric, positive semi-definite correlation matrix over ``order`` (the vols' order)."""
    n = len(order)
    path = "risk.correlation"
    if not isinstance(value, list):
        rho = _in_range(value, path, -1.0, 1.0)
        corr = np.full((n, n), rho)
        np.fill_diagonal(corr, 1.0)
    else:
        corr = _matrix(value, n, path, order)
    lam_min = float(np.linalg.eigvalsh(corr).min()) if n else 0.0
    if lam_min < -1e-8:
        raise ValidationError(path, f"is {value!r}, which is not positive semi-definite "
                              f"(smallest eigenvalue {lam_min:.3g})",
                              "give a valid correlation matrix (e.g. estimate it from returns); "
                              "pairwise values cannot be set independently")
    return corr


def _matrix(value: list[Any], n: int, path: str, order: Sequence[str]) -> np.ndarray:
    """An n x n matrix with unit diagonal, entries in [-1, 1], symmetric."""
    if len(value) != n or not all(isinstance(r, list) and len(r) == n for r in value):
        shape = f"{len(value)} rows" + (f" of lengths {[len(r) for r in value]}"
                                        if all(isinstance(r, list) for r in value) else "")
        raise ValidationError(path, f"has {shape}, expected {n} x {n}",
                              f"give one row and one column per asset in the order of risk.vols: "
                              f"{', '.join(order)}")
    corr = np.array([[_in_range(x, f"{path}[{i}][{j}]", -1.0, 1.0) for j, x in enumerate(row)]
                     for i, row in enumerate(value)])
    for i in range(n):
        if abs(corr[i, i] - 1.0) > 1e-9:
            raise ValidationError(f"{path}[{i}][{i}]", f"is {value[i][i]!r}",
                                  "the diagonal of a correlation matrix is 1")
    bad = np.argwhere(np.abs(corr - corr.T) > 1e-9)
    if len(bad):
        i, j = (int(x) for x in bad[0])
        raise ValidationError(f"{path}[{i}][{j}]", f"is {value[i][j]!r} but {path}[{j}][{i}] is "
                              f"{value[j][i]!r}: the matrix is not symmetric",
                              f"give the same correlation for {order[i]}/{order[j]} both ways")
    return corr


def _estimated_risk(table: Table, source: str, symbols: Sequence[str], market: MarketSnapshot,
                    market_table: Table, ctx: _Context) -> RiskModel:
    """models.risk.estimate_risk on daily returns up to the market time (no look-ahead)."""
    from models.risk import estimate_risk

    method = _string(table.get("method", "ledoit_wolf"), "risk.method")
    lookback = table.get("lookback_days", DEFAULT_LOOKBACK_DAYS)
    if isinstance(lookback, bool) or not isinstance(lookback, int) or lookback < 2:
        raise ValidationError("risk.lookback_days", f"is {lookback!r}", "give whole days >= 2")
    halflife = _positive(table.get("halflife", 30.0), "risk.halflife")
    n_factors = table.get("n_factors")
    if n_factors is not None and (isinstance(n_factors, bool) or not isinstance(n_factors, int)
                                  or n_factors < 1):
        raise ValidationError("risk.n_factors", f"is {n_factors!r}", "give a whole number >= 1")
    returns, what = _risk_returns(table, source, symbols, market, market_table, ctx)
    returns = returns.tail(lookback)
    if len(returns) < 2:
        raise ValidationError("risk.lookback_days", f"leaves {len(returns)} return rows",
                              "use a longer lookback or a later market time")
    try:
        model = estimate_risk(returns, method, periods_per_year=365.0, halflife=halflife,
                              n_factors=n_factors)
    except FbrError:
        raise
    except ValueError as exc:
        raise ValidationError("risk.method", f"is {method!r}: {exc}",
                              "use a method models.risk.estimate_risk knows") from exc
    ctx.labels.append(f"risk model: {method} estimated on {len(returns)} days of {what}")
    return model.subset(list(symbols))


def _risk_returns(table: Table, source: str, symbols: Sequence[str], market: MarketSnapshot,
                  market_table: Table, ctx: _Context) -> tuple[pd.DataFrame, str]:
    """Daily simple returns for the estimate, cut at the market time."""
    if source == "synthetic":
        hist, end, seed = _risk_history(table, symbols, market, market_table, ctx)
        return _until(hist.returns, end), f"synthetic returns (seed {seed})"
    for key in ("seed", "days", "start"):
        if key in table:
            raise ValidationError(_join("risk", key), f"is {table[key]!r} but risk.source is "
                                  "'data'", 'remove it, or set risk.source = "synthetic"')
    if "data_dir" not in table and "data_dir" in market_table:
        d = _data_dir(market_table, "market", ctx)
    else:
        d = _data_dir(table, "risk", ctx)
    return _data_returns(d, symbols, market.time), f"daily spot returns from {d}"


def _risk_history(table: Table, symbols: Sequence[str], market: MarketSnapshot,
                  market_table: Table, ctx: _Context) -> tuple[_History, pd.Timestamp | None, int]:
    """The synthetic history the risk estimate uses, the time to cut it at, and its seed.

    When the market is synthetic too, missing seed/days/start come from [market] (one shared
    history) and the history is cut at the market time (no look-ahead).
    """
    same = str(market_table.get("source", "")).lower() == "synthetic"
    seed, days, start = _synthetic_params(table, "risk", market_table if same else None)
    hist = _history(symbols, seed, days, start, ctx, "risk")
    return hist, (market.time if same else None), seed


def _data_returns(data_dir: Path, symbols: Sequence[str], end: pd.Timestamp) -> pd.DataFrame:
    """Daily simple returns of the data folder's spot closes up to ``end``, common span only."""
    from models.risk import returns_from_prices

    closes = _until(_spot_closes(data_dir, symbols, "risk"), end)
    return returns_from_prices(closes)


def _spot_closes(data_dir: Path, symbols: Sequence[str], section: str) -> pd.DataFrame:
    """Daily spot closes from models.io.load_spot_closes, indexed by close time (bar open + 1 day,
    so a cut at time t never uses a close from after t); errors name the book file's section."""
    from models.io import load_spot_closes

    try:
        closes = load_spot_closes(data_dir, list(symbols), interval="1d")
    except ValidationError as exc:
        raise ValidationError(_join(section, "data_dir"), f"({data_dir}) {exc.field} {exc.problem}",
                              exc.fix) from exc
    closes.index = pd.DatetimeIndex(closes.index) + pd.Timedelta(days=1)
    return closes


def _synthetic_basis(model: RiskModel, table: Table, book: Book, market: MarketSnapshot,
                     market_table: Table, ctx: _Context) -> RiskModel:
    """basis_cov from the synthetic history's mark vs spot (each contract takes its underlying's
    basis), over the same lookback as the return estimate."""
    from models.risk import basis_covariance

    hist, end, _ = _risk_history(table, book.asset_symbols, market, market_table, ctx)
    lookback = int(table.get("lookback_days", DEFAULT_LOOKBACK_DAYS)) + 1
    mark = _until(hist.mark, end).tail(lookback)
    spot = _until(hist.spot, end).tail(lookback)
    cov = basis_covariance(mark, spot)
    idx = {str(s): i for i, s in enumerate(mark.columns)}
    rows = [idx[c.underlying] for c in book.contracts]
    ctx.labels.append("basis risk: estimated from synthetic mark vs spot")
    return dataclasses.replace(model, basis_cov=cov[np.ix_(rows, rows)])


def _with_basis(model: RiskModel, table: Table, book: Book) -> RiskModel:
    """basis_cov = diag(basis_vol_j^2) in contract order (0 for contracts not listed)."""
    csyms = book.contract_symbols
    for sym, v in table.items():
        _known(sym, csyms, f"risk.basis_vols.{sym}", "a contract", v)
    vols = [_nonneg(table[s], f"risk.basis_vols.{s}", percent=True) if s in table else 0.0
            for s in csyms]
    return dataclasses.replace(model, basis_cov=np.diag(np.square(vols)))


# ==============================================================================================
# optimiser settings
# ==============================================================================================
def _settings(data: Mapping[str, Any], risk_table: Table, book: Book) -> OptimizerSettings:
    """[costs], [constraints], [solver] and risk.basis_risk as OptimizerSettings."""
    solver = _table(data, "solver", "")
    _check_keys(solver, SOLVER_KEYS, "solver")
    kwargs: dict[str, Any] = {
        "costs": _costs(_table(data, "costs", "")),
        "constraints": _constraints(_table(data, "constraints", ""), book),
    }
    if "basis_risk" in risk_table:
        kwargs["basis_risk"] = _bool(risk_table["basis_risk"], "risk.basis_risk")
    if "solvers" in solver:
        kwargs["solvers"] = _solvers(solver["solvers"])
    if "objective_scale" in solver:
        kwargs["objective_scale"] = _positive(solver["objective_scale"], "solver.objective_scale")
    if "round_lots" in solver:
        kwargs["round_lots"] = _bool(solver["round_lots"], "solver.round_lots")
    for key in ("noise_trade_weight", "noise_objective"):
        if key in solver:
            kwargs[key] = _positive(solver[key], f"solver.{key}")
    return OptimizerSettings(**kwargs)


def _solvers(value: Any) -> tuple[SolverName, ...]:
    """solver.solvers: names tried in order."""
    options = [s.value for s in SolverName]
    if not isinstance(value, list):
        raise ValidationError("solver.solvers", f"is {value!r}",
                              f"give a list, e.g. [{', '.join(map(repr, options))}]")
    out: list[SolverName] = []
    for k, v in enumerate(value):
        if not isinstance(v, str) or v.upper() not in options:
            raise ValidationError(f"solver.solvers[{k}]", f"is {v!r}",
                                  f"use one of {', '.join(map(repr, options))}")
        out.append(SolverName(v.upper()))
    return tuple(out)


def _costs(table: Table) -> CostSettings:
    """[costs]: switches (bool) and coefficients (numbers >= 0; horizon_days > 0)."""
    _check_keys(table, COST_KEYS, "costs")
    kwargs: dict[str, Any] = {}
    for key in ("trading", "impact", "carry"):
        if key in table:
            kwargs[key] = _bool(table[key], f"costs.{key}")
    for key in ("impact_k", "gamma_trade", "gamma_fund"):
        if key in table:
            kwargs[key] = _nonneg(table[key], f"costs.{key}")
    if "horizon_days" in table:
        kwargs["horizon_days"] = _positive(table["horizon_days"], "costs.horizon_days")
    return CostSettings(**kwargs)


def _constraints(table: Table, book: Book) -> ConstraintSettings:
    """[constraints]: each limit is off unless given."""
    _check_keys(table, CONSTRAINT_KEYS, "constraints")
    p = "constraints"
    kwargs: dict[str, Any] = {
        "margin_buffer_usd": _nonneg(table.get("margin_buffer_usd", 0.0), f"{p}.margin_buffer_usd"),
        "margin_buffer_fraction": _fraction_below_one(table.get("margin_buffer_fraction", 0.0),
                                                      f"{p}.margin_buffer_fraction"),
        "max_gross_leverage": _optional(table, "max_gross_leverage", p, _positive),
        "default_cap_usd": _optional(table, "default_cap_usd", p, _positive),
        "vol_cap": _optional(table, "vol_cap", p, lambda v, q: _positive(v, q, percent=True)),
        "rho_min": _optional(table, "rho_min", p, lambda v, q: _in_range(v, q, -1.0, 1.0)),
        "funding_budget_usd": _optional(table, "funding_budget_usd", p, _number),
        "trade_limit_adv": _optional(table, "trade_limit_adv", p,
                                     lambda v, q: _positive(v, q, percent=True)),
        "trade_limit_usd": _optional(table, "trade_limit_usd", p, _positive),
        "caps_usd": _caps(_table(table, "caps_usd", p), book),
        "stress": tuple(_stress(row, k, book) for k, row in enumerate(_tables(table, "stress", p))),
        "clusters": tuple(_cluster(row, k, book)
                          for k, row in enumerate(_tables(table, "clusters", p))),
    }
    if "margin" in table:
        kwargs["margin"] = _bool(table["margin"], f"{p}.margin")
    if "margin_hysteresis" in table:
        kwargs["margin_hysteresis"] = _bool(table["margin_hysteresis"], f"{p}.margin_hysteresis")
    return ConstraintSettings(**kwargs)


def _fraction_below_one(value: Any, path: str) -> float:
    """A fraction in [0, 1) ("20%" allowed)."""
    v = _number(value, path, percent=True)
    if not 0.0 <= v < 1.0:
        raise ValidationError(path, f"is {value!r}", 'give a fraction in [0, 1), e.g. 0.2 or "20%"')
    return v


def _caps(table: Table, book: Book) -> dict[str, float]:
    """constraints.caps_usd: |x_j| <= cap (USD) by contract symbol."""
    for sym, v in table.items():
        _known(sym, book.contract_symbols, f"constraints.caps_usd.{sym}", "a contract", v)
    return _symbol_map(table, "constraints.caps_usd", _positive)


def _stress(row: Table, k: int, book: Book) -> StressScenario:
    """One [[constraints.stress]]: asset returns (each > -1); others move by ``common``."""
    p = f"constraints.stress[{k}]"
    _check_keys(row, STRESS_KEYS, p)
    name = _string(row.get("name", f"stress {k + 1}"), f"{p}.name")
    rets = _table(row, "returns", p)
    for sym, v in rets.items():
        _known(sym, book.asset_symbols, f"{p}.returns.{sym}", "an asset of the book", v)
    returns = _symbol_map(rets, f"{p}.returns", _shock)
    common = _shock(row.get("common", 0.0), f"{p}.common")
    if not returns and common == 0.0:
        raise ValidationError(p, "moves no asset",
                              'give returns = {BTC = "-30%"} or common = "-30%"')
    return StressScenario(name, returns, common)


def _shock(value: Any, path: str) -> float:
    """A simple return > -1 ("-30%" allowed)."""
    v = _number(value, path, percent=True)
    if v <= -1:
        raise ValidationError(path, f"is {value!r}", 'give a return above -100%, e.g. "-30%"')
    return v


def _cluster(row: Table, k: int, book: Book) -> ClusterBand:
    """One [[constraints.clusters]]: |sum over assets of (e_i - w*_i)| <= band (weights)."""
    p = f"constraints.clusters[{k}]"
    _check_keys(row, CLUSTER_KEYS, p)
    name = _string(row.get("name", f"cluster {k + 1}"), f"{p}.name")
    assets = row.get("assets")
    if not isinstance(assets, list) or not assets or not all(isinstance(a, str) for a in assets):
        raise ValidationError(f"{p}.assets", f"is {assets!r}", 'give a list, e.g. ["SOL", "AVAX"]')
    for a in assets:
        _known(a, book.asset_symbols, f"{p}.assets", "an asset of the book")
    if "band" not in row:
        raise ValidationError(f"{p}.band", "is missing", 'give the band as a weight, e.g. "1%"')
    band = _nonneg(row["band"], f"{p}.band", percent=True)
    return ClusterBand(name, tuple(assets), band)
