"""Book-file futures contracts and margin tiers.

[contract_defaults] merged under each [[contracts]] entry (one linear perpetual "<SYM>-PERP" per
asset when none is listed), [tier_schedules] shared by name, and spec_from / tiers_from file
references. In tier bracket k, maintenance margin is MM(N) = mmr_k * N - cum_k (N = notional, USD);
``cum`` defaults to the continuous value cum_k = cum_{k-1} + (mmr_k - mmr_{k-1}) * min_notional_k.
Brackets read with tiers_from are held to the same continuity as inline ones (a given cum may make
maintenance margin jump by at most models.instruments.MM_JUMP_TOL_USD at a bracket edge, and the
first bracket's cum is 0 within it: MM is 0 at notional 0); a bracket table is checked whole (rates
that fall, or mmr_k x max_leverage_k > 1) before its cum continuity. ``leverage`` is a whole number
>= 1 (exchanges set leverage in whole steps; initial margin IM(N) = N / leverage must use the
number sent). Values read with spec_from are named "contracts[k].spec_from (<file>: <column>)" in
errors; referenced files must be CSV text (plain or .gz); contract and exchange symbols are ASCII
without whitespace.
"""

from __future__ import annotations

import gzip
import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from fbr.config_sources import ParseContext
from fbr.config_values import (
    Table,
    check_keys,
    choice,
    in_range,
    join,
    known,
    nonneg,
    number,
    positive,
    string,
    sub_table,
    symbol_name,
    table_array,
    timestamp,
)
from models.errors import ValidationError
from models.instruments import (
    ContractKind,
    FuturesContract,
    MarginTiers,
    Settlement,
    TierBracket,
    continuous_cum,
    first_margin_jump,
)

CONTRACT_SETTING_KEYS = (
    "kind", "settlement", "contract_size", "lot_step", "min_qty", "max_qty", "min_notional", "tick",
    "maker_fee", "taker_fee", "funding_interval_h", "expiry", "leverage", "tiers", "tiers_from",
    "spec_from",
)
CONTRACT_KEYS = ("symbol", "underlying", *CONTRACT_SETTING_KEYS)
BRACKET_KEYS = ("min_notional", "max_notional", "max_leverage", "mmr", "cum")
FILE_REF_KEYS = ("file", "symbol")
#: Bytes of a referenced file looked at to tell text from binary.
SNIFF_BYTES = 65_536
#: Longest quote of a reader's error message in a ValidationError (characters).
MAX_QUOTED_ERROR = 200


def parse_contracts(data: Mapping[str, object], symbols: Sequence[str],
                    ctx: ParseContext) -> tuple[FuturesContract, ...]:
    """[[contracts]] merged over [contract_defaults]; none listed: one perpetual per asset."""
    defaults = sub_table(data, "contract_defaults", "")
    check_keys(defaults, CONTRACT_SETTING_KEYS, "contract_defaults")
    schedules = _tier_schedules(sub_table(data, "tier_schedules", ""))
    rows = table_array(data, "contracts", "")
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


def _with_spec(merged: Table, origin: dict[str, str], path: str, ctx: ParseContext) -> Table:
    """``merged`` with the exchange facts of its ``spec_from`` file (lot step, tick, limits,
    contract size): a key the contract's own row names wins, the file's values win over
    ``[contract_defaults]``' (generic defaults for contracts without a file: the seed examples'
    1e-8 lot step would pass orders the exchange refuses), and the defaults fill what the file
    lacks. ``origin`` (key -> where it came from) is updated in place."""
    spec, sources = _spec_from(merged["spec_from"], path, ctx)
    own = {k: v for k, v in merged.items() if origin.get(k) == "row" and k != "spec_from"}
    fill = {k: v for k, v in merged.items() if k not in own and k != "spec_from"}
    origin.update({key: sources[key] for key in spec if key not in own})
    return {**fill, **spec, **own}


def _contract(row: Table, k: int, defaults: Table, schedules: Mapping[str, MarginTiers],
              symbols: Sequence[str], ctx: ParseContext) -> FuturesContract:
    """One [[contracts]] entry (with defaults applied) as a FuturesContract."""
    p = join("contracts", k)
    check_keys(row, CONTRACT_KEYS, p)
    merged, origin = _merge_contract(row, defaults)

    def at(key: str) -> str:
        where = origin.get(key, "contract_defaults")
        if where in ("row", "contract_defaults"):
            return join(p if where == "row" else "contract_defaults", key)
        return where  # a value read with spec_from: "<its path> (<file>: <column>)"

    sym = symbol_name(string(merged.get("symbol"), join(p, "symbol")), join(p, "symbol"),
                      contract=True)
    under = string(merged.get("underlying"), join(p, "underlying"))
    known(under, symbols, join(p, "underlying"), "an asset of the book (unknown underlying)")
    if "spec_from" in merged:
        merged = _with_spec(merged, origin, at("spec_from"), ctx)
    if "tiers" in merged and "tiers_from" in merged:
        raise ValidationError(join(p, "tiers_from"), "is given together with tiers",
                              "give the brackets inline (tiers) or from a file (tiers_from), "
                              "not both")
    kwargs: dict[str, Any] = {"symbol": sym, "underlying": under}
    kwargs.update(_contract_numbers(merged, at))
    if "kind" in merged:
        kwargs["kind"] = choice(merged["kind"], at("kind"), [c.value for c in ContractKind],
                                ContractKind)
    if "settlement" in merged:
        kwargs["settlement"] = choice(merged["settlement"], at("settlement"),
                                      [s.value for s in Settlement], Settlement)
    if "expiry" in merged:
        kwargs["expiry"] = timestamp(merged["expiry"], at("expiry")).to_pydatetime()
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
        field_path = at(key) if key in merged else join(p, key)
        raise ValidationError(field_path, exc.problem, exc.fix) from exc


def _leverage(value: object, path: str) -> float:
    """The leverage L set on the exchange (x): a whole number >= 1. Exchanges set leverage in whole
    steps (Binance 1..125) and fbr sends int(L), so a fractional L would plan initial margin
    IM(N) = N / L (USD) at one leverage and trade at another (2.5 -> 2: 25% more margin)."""
    v = number(value, path)
    if v < 1 or not v.is_integer():
        what = "below 1x" if v < 1 else (f"not a whole number (the exchange would be set to "
                                         f"{int(v)}x while fbr plans initial margin at {v:g}x)")
        raise ValidationError(path, f"is {value!r}, {what}",
                              "give a whole number >= 1: exchanges set leverage in whole steps")
    return v


_CONTRACT_NUMBERS: dict[str, Callable[[object, str], float]] = {
    "contract_size": positive,
    "lot_step": nonneg,
    "min_qty": nonneg,
    "max_qty": lambda v, p: positive(v, p, allow_inf=True),
    "min_notional": nonneg,
    "tick": nonneg,
    "maker_fee": lambda v, p: in_range(v, p, -0.01, 0.05),
    "taker_fee": lambda v, p: in_range(v, p, -0.01, 0.05),
    "funding_interval_h": positive,
    "leverage": _leverage,
}


def _contract_numbers(merged: Table, at: Callable[[str], str]) -> dict[str, float]:
    """The numeric contract fields present in ``merged``, parsed and range-checked."""
    return {key: parse(merged[key], at(key)) for key, parse in _CONTRACT_NUMBERS.items()
            if key in merged}


def _file_ref(value: object, path: str, ctx: ParseContext) -> tuple[Path, str]:
    """{file = "...", symbol = "BTC/USDT:USDT"}: an existing file and a ccxt symbol."""
    if not isinstance(value, dict):
        raise ValidationError(path, f"is {value!r}",
                              'write {file = "path/to/file.csv.gz", symbol = "BTC/USDT:USDT"}')
    check_keys(value, FILE_REF_KEYS, path)
    raw = string(value.get("file"), join(path, "file"))
    symbol = symbol_name(string(value.get("symbol"), join(path, "symbol")), join(path, "symbol"),
                         contract=True)
    resolved = ctx.resolve(raw)
    if not resolved.is_file():
        raise ValidationError(join(path, "file"), f"is {raw!r}, which does not exist "
                              f"(looked for {resolved})",
                              "give a path relative to the book file, or an absolute one")
    _check_text_file(resolved, raw, join(path, "file"))
    return resolved, symbol


def _file_head(resolved: Path) -> bytes:
    """The first SNIFF_BYTES of the file's content (decompressed when named .gz, as pandas does)."""
    if resolved.suffix.lower() == ".gz":
        with gzip.open(resolved, "rb") as fh:
            return fh.read(SNIFF_BYTES)
    with resolved.open("rb") as fh:
        return fh.read(SNIFF_BYTES)


def _check_text_file(resolved: Path, raw: str, path: str) -> None:
    """One short ValidationError naming the file unless it is UTF-8 text (plain or .gz): a binary
    file would otherwise surface as the reader's error with a dump of its bytes."""
    fix = ("give a CSV file (plain or .gz) of the shared markets snapshot, e.g. "
           "<data_dir>/markets/binance_usdm_leverage_tiers_2026-05-07.csv.gz")
    shown = repr(raw) if Path(raw) == resolved else f"{raw!r} ({resolved})"
    try:
        head = _file_head(resolved)
    except (OSError, EOFError, zlib.error) as exc:
        what = ("named .gz but not a readable gzip file" if resolved.suffix.lower() == ".gz"
                else f"which cannot be read ({type(exc).__name__})")
        raise ValidationError(path, f"is {shown}, {what}", fix) from None
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # not just a character cut at the end of the sample
            raise ValidationError(path, f"is {shown}, a binary file (byte "
                                  f"{exc.start} is not UTF-8 text), not CSV", fix) from None
    if b"\x00" in head:
        raise ValidationError(path, f"is {shown}, a binary file (it holds NUL "
                              "bytes), not CSV", fix)


def _quoted(exc: BaseException) -> str:
    """A reader's error as 'Type: message', cut at MAX_QUOTED_ERROR characters (never the repr,
    which for a decoding error holds the whole undecodable input)."""
    text = " ".join(str(exc).split())
    if len(text) > MAX_QUOTED_ERROR:
        text = text[:MAX_QUOTED_ERROR] + "..."
    return f"{type(exc).__name__}: {text}"


def _spec_from(value: object, path: str, ctx: ParseContext) -> tuple[Table, dict[str, str]]:
    """Contract spec fields (lot_step, tick, ...) read with models.io.load_contract_spec, and for
    each the field path naming where it came from: "<path> (<file>: <column>)"."""
    from models.io import SPEC_COLUMNS, load_contract_spec

    resolved, symbol = _file_ref(value, path, ctx)
    raw = value["file"] if isinstance(value, dict) else resolved
    columns = {key: col for col, key in SPEC_COLUMNS.items()}
    try:
        spec = load_contract_spec(resolved, symbol)
    except ValidationError as exc:
        raise ValidationError(path, f"{exc.field} {exc.problem}", exc.fix) from exc
    except (OSError, KeyError, ValueError) as exc:
        raise ValidationError(path, f"could not be read from {resolved}: {_quoted(exc)}",
                              f"check that the file lists {symbol!r}") from exc
    kept: Table = {k: v for k, v in spec.items() if k in _CONTRACT_NUMBERS}
    where = {k: f"{path} ({raw}" + (f": {columns[k]})" if k in columns else ")") for k in kept}
    market_max = spec.get("market_max_qty", math.inf)
    if 0 < market_max < spec.get("max_qty", math.inf):
        # one cap serves both order types (as executor.ccxt_metadata._max_qty): market orders, fbr's
        # default, have their own lower maximum (Binance MARKET_LOT_SIZE), so larger ones are split
        kept["max_qty"] = float(market_max)
        where["max_qty"] = f"{path} ({raw}: {columns['market_max_qty']})"
    return kept, where


def _tiers_from(value: object, path: str, ctx: ParseContext) -> MarginTiers:
    """Tier brackets read with models.io.load_leverage_tiers."""
    from models.io import load_leverage_tiers

    resolved, symbol = _file_ref(value, path, ctx)
    try:
        tiers = load_leverage_tiers(resolved, symbol)
    except ValidationError as exc:
        raise ValidationError(path, f"{exc.field} {exc.problem}", exc.fix) from exc
    except (OSError, KeyError, ValueError) as exc:
        raise ValidationError(path, f"could not be read from {resolved}: {_quoted(exc)}",
                              f"check that the file lists {symbol!r}") from exc
    _check_file_continuity(tiers, path, resolved, symbol)
    return tiers


def _check_file_continuity(tiers: MarginTiers, path: str, resolved: Path, symbol: str) -> None:
    """Brackets from a file must make maintenance margin continuous at every edge, as inline ones
    must: else the optimiser's MM = max_k (mmr_k n - cum_k) differs from the exchange's lookup
    (:func:`models.instruments.first_margin_jump`)."""
    brackets = tiers.brackets
    jump = first_margin_jump(brackets)
    if jump is None:
        return
    if jump.k == 0:
        first = brackets[0]
        raise ValidationError(path, f"reads {symbol} from {resolved}, whose first bracket "
                              f"({first.min_notional:,.10g} to {first.max_notional:,.10g} USD, "
                              f"maintenance rate {first.mmr:g}) has maint_amount_cum "
                              f"{first.cum:,.10g}: maintenance margin would be "
                              f"{-first.cum:+,.2f} USD at notional 0, not 0",
                              "set maint_amount_cum = 0 in that row (the first bracket's cum is "
                              "0), or use the exchange's unedited file")
    b, lo = brackets[jump.k], brackets[jump.k].min_notional
    raise ValidationError(path, f"reads {symbol} from {resolved}, whose bracket {jump.k + 1} of "
                          f"{len(brackets)} ({lo:,.10g} to {b.max_notional:,.10g} USD, "
                          f"maintenance rate {b.mmr:g}) has maint_amount_cum {b.cum:,.10g}: "
                          f"maintenance margin jumps from {jump.below:,.2f} USD just below "
                          f"{lo:,.10g} USD to {jump.at:,.2f} USD at it "
                          f"({jump.at - jump.below:+,.2f} USD)",
                          f"set maint_amount_cum = {jump.continuous:.10g} in that row (cum_k = "
                          "cum_k-1 + (mmr_k - mmr_k-1) x min_notional_k), or use the "
                          "exchange's unedited file")


def _tier_schedules(table: Table) -> dict[str, MarginTiers]:
    """[tier_schedules]: NAME = array of brackets, shared by contracts (tiers = "NAME")."""
    return {name: _brackets(rows, join("tier_schedules", name)) for name, rows in table.items()}


def _tiers_value(value: object, path: str, schedules: Mapping[str, MarginTiers]) -> MarginTiers:
    """tiers = [brackets...] inline, or tiers = "NAME" of a [tier_schedules] entry."""
    if isinstance(value, str):
        known(value, list(schedules), path, "a name in [tier_schedules]")
        return schedules[value]
    return _brackets(value, path)


def _brackets(rows: object, path: str) -> MarginTiers:
    """Brackets sorted by notional. ``min_notional`` defaults to the previous ``max_notional``
    (0 for the first), ``cum`` to the value that makes maintenance margin continuous. Checked in
    this order, so the first message names the real fault: each row's values and contiguity, then
    the table (:class:`MarginTiers`: rates that fall from one bracket to the next, mmr_k x
    max_leverage_k > 1), then a given ``cum`` that makes MM jump at a bracket edge (a falling rate
    would otherwise surface as a cum error whose fix leads to the next one)."""
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise ValidationError(path, f"is {rows!r}",
                              "give a non-empty array of brackets, e.g. [{max_notional = 50000, "
                              "max_leverage = 125, mmr = 0.004}, ...]")
    out: list[TierBracket] = []
    for k, row in enumerate(rows):
        out.append(_bracket(row, join(path, k), out[-1] if out else None))
    try:
        tiers = MarginTiers(tuple(out))
    except ValidationError as exc:  # the model names fields tiers[k].key
        raise ValidationError(path + exc.field.removeprefix("tiers"), exc.problem,
                              exc.fix) from exc
    jump = first_margin_jump(tiers.brackets)
    if jump is None:
        return tiers
    b = tiers.brackets[jump.k]  # a cum fbr computed never jumps: this one was given
    given = rows[jump.k].get("cum", b.cum)
    if jump.k == 0:
        raise ValidationError(join(join(path, 0), "cum"), f"is {given!r} on the first bracket, which "
                              f"makes maintenance margin {jump.at:+.6g} USD at notional 0, not 0 "
                              f"(MM = mmr x n - cum; the first bracket's cum is 0)",
                              "set cum = 0 (or leave cum out: fbr computes it)")
    raise ValidationError(join(join(path, jump.k), "cum"), f"is {given!r}, which makes maintenance "
                          f"margin jump by {jump.at - jump.below:+.6g} USD at notional "
                          f"{b.min_notional:g}",
                          f"set cum = {jump.continuous:.10g} (or leave cum out: fbr computes it)")


def _bracket(row: Table, path: str, prev: TierBracket | None) -> TierBracket:
    """One bracket, checked for contiguity against ``prev``; ``cum`` defaults to the continuous
    value cum_k = cum_{k-1} + (mmr_k - mmr_{k-1}) x min_notional_k (0 for the first bracket)."""
    check_keys(row, BRACKET_KEYS, path)
    lo_default = prev.max_notional if prev else 0.0
    lo = nonneg(row.get("min_notional", lo_default), join(path, "min_notional"))
    if "max_notional" not in row:
        raise ValidationError(join(path, "max_notional"), "is missing",
                              "give the bracket's upper notional (USD; inf for the last one)")
    hi = positive(row["max_notional"], join(path, "max_notional"), allow_inf=True)
    if "mmr" not in row or "max_leverage" not in row:
        missing = "mmr" if "mmr" not in row else "max_leverage"
        raise ValidationError(join(path, missing), "is missing",
                              "give max_leverage (x) and mmr (maintenance rate, fraction)")
    lev = positive(row["max_leverage"], join(path, "max_leverage"))
    mmr = in_range(row["mmr"], join(path, "mmr"), 0.0, 1.0)
    if prev is not None and abs(lo - prev.max_notional) > 1e-6 * max(1.0, lo):
        raise ValidationError(join(path, "min_notional"), f"is {row.get('min_notional')!r}, "
                              f"but the previous bracket ends at {prev.max_notional:g}",
                              "make brackets contiguous and sorted by notional")
    continuous = 0.0 if prev is None else continuous_cum(prev, mmr, lo)
    cum = continuous if "cum" not in row else number(row["cum"], join(path, "cum"))
    return TierBracket(lo, hi, lev, mmr, cum)
