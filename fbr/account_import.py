"""Merging an exchange account into a book file (``fbr account import``): a round-trip edit of the
TOML document with tomlkit, so the user's targets, settings, comments and key order are kept.

What an import writes (units as in the book file, README "Book file format"):

- ``[book] cash``: the futures wallet's stablecoin balance (USD, unrealised PnL excluded): USDT
  plus the other USD stablecoins (USDC, FDUSD, ...) at the value the gateway gives them (Multi-Assets
  mode: index x (1 - bidBuffer); otherwise 0, :mod:`executor.ccxt_collateral`); negative in
  Multi-Assets mode when the wallet owes USDT against pledged assets (a debt);
- ``[spot] ASSET``: base units held, spot wallet (free + locked) plus the futures wallet's holding of
  the asset (pledged spot is spot too); only when the spot wallet was read. An asset written there
  leaves ``[spot_usd]``. Assets with nothing held are written only when the book already lists them;
- ``[[futures]]``: ``symbol``, ``contracts`` (signed, contracts), ``entry_price`` (USD); entries of
  contracts now flat are removed, entries of other contracts keep their place and comments;
- ``[pledged] ASSET = { bid_buffer, quantity }``: Multi-Assets collateral (bidBuffer a fraction,
  quantity in base units); Multi-Assets entries of assets no longer pledged are removed, other
  rules (flat ratios, tiers) are kept;
- ``[[contracts]]``: ``contract_size`` (base units per contract), ``lot_step``, ``min_qty``,
  ``max_qty`` (contracts), ``min_notional``, ``tick`` (USD), ``tiers`` (an inline array of brackets,
  notionals and cum in USD), ``leverage`` when the exchange's tiers cap it lower, and a
  perpetual's ``funding_interval_h`` (hours) when the exchange's differs from the book's; a book that
  relied on the default contracts gets one entry per contract (``<ASSET>-PERP``).

A value is written only when it differs (numerically) from the file's, and new values are canonical
(floats of 15 significant digits, entries in the book's order), so importing an unchanged account
leaves the file's bytes unchanged. Nothing here does I/O: :func:`snapshot_from_account` builds the
snapshot from what the gateway read, :func:`merge_account` edits a document.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import cast

import tomlkit
from tomlkit.items import AoT, Array, InlineTable, Table, Whitespace

from executor.plan import Instrument
from models.book import Book
from models.collateral import CollateralRule
from models.instruments import FuturesContract, TierBracket

__all__ = ["AccountSnapshot", "ContractSpec", "canonical", "import_text", "merge_account",
           "snapshot_from_account", "text_diff"]

#: A table of the book file as tomlkit holds it (the document or one of its tables): values are
#: tomlkit items, read as ``object`` and narrowed where used.
TomlTable = MutableMapping[str, object]

#: Contract keys an import writes, in the order they are added to a [[contracts]] entry.
SPEC_KEYS = ("contract_size", "lot_step", "min_qty", "max_qty", "min_notional", "tick")


def canonical(x: float) -> float:
    """``x`` rounded to 15 significant digits (float noise such as 0.30000000000000004 removed,
    -0.0 made 0.0); inf stays inf. The written form is Python's shortest repr of the result."""
    v = float(x)
    if not math.isfinite(v):
        return v
    return float(f"{v:.15g}") + 0.0


@dataclass(frozen=True)
class ContractSpec:
    """One book contract's exchange metadata: ``contract_size`` (base units per contract, linear),
    ``lot_step``, ``min_qty``, ``max_qty`` (contracts; max may be inf), ``min_notional``, ``tick``
    (USD), the margin brackets, ``leverage`` (x) when the brackets cap the book's lower (else
    None: the book's leverage is kept), and a perpetual's ``funding_interval_h`` (hours between
    settlements) when the exchange's differs from the book's (else None)."""

    symbol: str
    underlying: str
    contract_size: float
    lot_step: float
    min_qty: float
    max_qty: float
    min_notional: float
    tick: float
    tiers: tuple[TierBracket, ...]
    leverage: float | None = None
    funding_interval_h: float | None = None

    def values(self) -> list[tuple[str, object]]:
        """(key, plain value) pairs to write, canonical, in :data:`SPEC_KEYS` order, then
        ``leverage`` and ``funding_interval_h`` (when set) and ``tiers`` (a list of bracket
        tables)."""
        out: list[tuple[str, object]] = [(k, canonical(getattr(self, k))) for k in SPEC_KEYS]
        if self.leverage is not None:
            out.append(("leverage", canonical(self.leverage)))
        if self.funding_interval_h is not None:
            out.append(("funding_interval_h", canonical(self.funding_interval_h)))
        out.append(("tiers", [bracket_table(b) for b in self.tiers]))
        return out


def bracket_table(b: TierBracket) -> dict[str, float]:
    """A bracket in the book's tiers format: min/max notional (USD), max leverage (x), mmr
    (fraction), cum (USD)."""
    return {"min_notional": canonical(b.min_notional), "max_notional": canonical(b.max_notional),
            "max_leverage": canonical(b.max_leverage), "mmr": canonical(b.mmr),
            "cum": canonical(b.cum)}


@dataclass(frozen=True)
class AccountSnapshot:
    """What the exchange says, in book units: ``cash`` (USD, all stablecoins; negative: a debt),
    ``contracts`` (specs in the book's contract order), ``futures`` (contract -> (signed contracts,
    entry price USD), non-zero only), ``pledged`` (asset -> (bidBuffer fraction, quantity base
    units)), ``spot`` (asset -> base units; None when the spot wallet was not read) and
    ``not_in_book`` (holdings the book does not list, as text for the note)."""

    cash: float
    contracts: tuple[ContractSpec, ...] = ()
    futures: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    pledged: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    spot: Mapping[str, float] | None = None
    not_in_book: tuple[str, ...] = ()


# --- comparing and setting values ---------------------------------------------------------------

def plain(value: object) -> object:
    """A tomlkit item as plain Python (dicts, lists, floats, ...); other values unchanged."""
    unwrap = getattr(value, "unwrap", None)
    return unwrap() if callable(unwrap) else value


def same(existing: object, new: object) -> bool:
    """True when the file's ``existing`` value equals ``new``: numbers numerically (an int equals
    the same float), tables by keys and values, arrays element by element."""
    old = plain(existing)
    if isinstance(new, dict):
        return (isinstance(old, dict) and old.keys() == new.keys()
                and all(same(old[k], v) for k, v in new.items()))
    if isinstance(new, list):
        return (isinstance(old, list) and len(old) == len(new)
                and all(same(a, b) for a, b in zip(old, new, strict=True)))
    if isinstance(new, float):
        return isinstance(old, int | float) and not isinstance(old, bool) and float(old) == new
    return old == new


def toml_value(value: object) -> object:
    """A plain value as the tomlkit item it is written as: a dict as an inline table, a list of
    dicts as a multi-line array of inline tables, anything else as itself."""
    if isinstance(value, dict):
        table = tomlkit.inline_table()
        table.update(value)
        return table
    if isinstance(value, list):
        arr = tomlkit.array()
        for v in value:
            arr.append(toml_value(v))
        if any(isinstance(v, dict) for v in value):
            arr.multiline(True)
        return arr
    return value


def set_value(table: TomlTable, key: str, value: object) -> bool:
    """Write ``table[key] = value`` unless the file already holds the same value (its formatting
    and comment then stay as they are). True when written."""
    if key in table and same(table[key], value):
        return False
    table[key] = toml_value(value)
    return True


def _table(doc: TomlTable, name: str) -> TomlTable:
    """The top-level table ``name``, appended at the end of the document when missing."""
    if name not in doc:
        doc[name] = tomlkit.table()
    return cast(TomlTable, doc[name])


def _sub_table(doc: TomlTable, name: str) -> TomlTable | None:
    """The table ``name`` of the document (None when absent or not a table)."""
    value = doc.get(name)
    return cast(TomlTable, value) if isinstance(value, MutableMapping) else None


def _entry(values: Mapping[str, object]) -> Table:
    """A new [[...]] entry holding ``values`` (tomlkit puts a blank line before it)."""
    table = tomlkit.table()
    for k, v in values.items():
        table[k] = toml_value(v)
    return table


def _filled(rows: AoT, tables: Sequence[Table]) -> AoT:
    """``rows`` with ``tables`` appended."""
    for table in tables:
        rows.append(table)
    return rows


def _blank_line_after(doc: TomlTable, rows: AoT) -> None:
    """End the last entry of ``rows`` with a blank line when another section follows it (a
    removed last entry takes its blank line with it; an appended one has none)."""
    body = [item for _, item in getattr(doc, "body", []) if not isinstance(item, Whitespace)]
    if not len(rows) or (body and body[-1] is rows):
        return
    last = rows[-1]
    if not last.as_string().endswith("\n\n"):
        last.add(tomlkit.nl())


def _entries(doc: TomlTable, name: str) -> AoT | None:
    """The array of tables ``name`` ([[name]]); an inline array of tables (``name = [{...}]``) is
    converted to one, moved to the end of the document (a table there cannot swallow later keys)."""
    rows = doc.get(name)
    if rows is None or isinstance(rows, AoT):
        return rows
    tables = [_entry(dict(row)) for row in (rows if isinstance(rows, Array | list) else [])
              if isinstance(row, InlineTable | dict)]
    del doc[name]
    doc[name] = _filled(tomlkit.aot(), tables)
    return cast(AoT, doc[name])


# --- the sections ------------------------------------------------------------------------------

def merge_cash(doc: TomlTable, cash: float) -> None:
    """``[book] cash`` = the futures wallet's stablecoin balance (USD; negative: a debt)."""
    set_value(_table(doc, "book"), "cash", canonical(cash))


def merge_spot(doc: TomlTable, spot: Mapping[str, float]) -> None:
    """``[spot]`` quantities (base units) in the snapshot's asset order; an asset written there is
    removed from ``[spot_usd]``; an asset with nothing held is written (0) only when listed."""
    usd = _sub_table(doc, "spot_usd")
    listed = set(_sub_table(doc, "spot") or ()) | set(usd or ())
    for asset, qty in spot.items():
        if qty <= 0 and asset not in listed:
            continue
        set_value(_table(doc, "spot"), asset, canonical(max(qty, 0.0)))
        if usd is not None and asset in usd:
            del usd[asset]


def merge_futures(doc: TomlTable, futures: Mapping[str, tuple[float, float]]) -> None:
    """``[[futures]]``: each held contract's signed contracts and entry price (USD), updated in
    place; entries of flat contracts (and repeats) removed; new ones appended in the snapshot's
    order."""
    rows = _entries(doc, "futures")
    seen: set[str] = set()
    removed = False
    for row in list(rows or ()):
        sym = str(row.get("symbol"))
        if sym not in futures or sym in seen:
            rows.remove(row)  # type: ignore[union-attr]  # row came from rows
            removed = True
            continue
        seen.add(sym)
        set_value(row, "contracts", canonical(futures[sym][0]))
        set_value(row, "entry_price", canonical(futures[sym][1]))
    new = [_entry({"symbol": s, "contracts": canonical(q), "entry_price": canonical(e)})
           for s, (q, e) in futures.items() if s not in seen]
    if rows is None:
        if new:  # filled before it joins the document, so tomlkit sets it off by a blank line
            doc["futures"] = _filled(tomlkit.aot(), new)
        return
    _filled(rows, new)
    if len(rows) == 0:
        del doc["futures"]
    elif new or removed:
        _blank_line_after(doc, rows)


def merge_pledged(doc: TomlTable, pledged: Mapping[str, tuple[float, float]]) -> None:
    """``[pledged] ASSET = { bid_buffer, quantity }`` (fraction, base units) per pledged asset;
    Multi-Assets entries (tables with ``bid_buffer``) of assets not pledged now are removed."""
    table = _sub_table(doc, "pledged")
    if table is not None:
        for asset in [a for a, v in table.items() if a not in pledged
                      and isinstance(value := plain(v), dict) and "bid_buffer" in value]:
            del table[asset]
    for asset, (bid_buffer, quantity) in pledged.items():
        set_value(_table(doc, "pledged"), asset, {"bid_buffer": canonical(bid_buffer),
                                                  "quantity": canonical(quantity)})


def merge_contracts(doc: TomlTable, specs: Sequence[ContractSpec]) -> None:
    """``[[contracts]]``: each spec's keys written into the entry of its symbol (a ``tiers_from``
    there is removed: the inline tiers replace it). A book without [[contracts]] relied on the
    defaults (one ``<ASSET>-PERP`` per asset): one entry per spec is created, in order."""
    rows = _entries(doc, "contracts")
    if rows is None:
        if not specs:
            return
        rows = tomlkit.aot()
        for spec in specs:
            rows.append(_entry({"symbol": spec.symbol, "underlying": spec.underlying}))
        doc["contracts"] = rows
    by_symbol = {str(row.get("symbol")): row for row in rows}
    for spec in specs:
        row = by_symbol.get(spec.symbol)
        if row is None:
            continue
        for key, value in spec.values():
            set_value(row, key, value)
        if "tiers_from" in row:
            del row["tiers_from"]


def merge_account(doc: TomlTable, snap: AccountSnapshot) -> None:
    """Write ``snap`` into the book document (see the module docstring); every other section,
    key and comment is left as it is."""
    merge_cash(doc, snap.cash)
    if snap.spot is not None:
        merge_spot(doc, snap.spot)
    merge_futures(doc, snap.futures)
    merge_pledged(doc, snap.pledged)
    merge_contracts(doc, snap.contracts)


def import_text(text: str, snap: AccountSnapshot) -> str:
    """The book file's ``text`` with ``snap`` merged in (unchanged text when nothing differs)."""
    doc = tomlkit.parse(text)
    merge_account(doc, snap)
    return doc.as_string()


def text_diff(old: str, new: str, name: str) -> str:
    """A unified diff of the file (empty when equal): ``name`` before and after the import."""
    lines = difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                 fromfile=f"{name} (now)", tofile=f"{name} (imported)")
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


# --- from the gateway's reading ------------------------------------------------------------------

def contract_spec(book_contract: FuturesContract, exchange: FuturesContract) -> ContractSpec:
    """The exchange's metadata of one book contract (``exchange`` from the gateway's instruments);
    leverage only when the exchange's brackets lower the book's."""
    lev = exchange.leverage if exchange.leverage < book_contract.leverage else None
    hours = exchange.funding_interval_h
    interval = hours if hours != book_contract.funding_interval_h else None
    return ContractSpec(book_contract.symbol, book_contract.underlying, exchange.contract_size,
                        exchange.lot_step, exchange.min_qty, exchange.max_qty, exchange.min_notional,
                        exchange.tick, exchange.tiers.brackets, lev, interval)


def snapshot_from_account(book: Book, account: Book, instruments: Mapping[str, Instrument], *,
                          wallet: Mapping[str, float], spot_wallet: Mapping[str, float] | None,
                          not_in_book: Sequence[str] = ()) -> AccountSnapshot:
    """The snapshot of the gateway's ``account`` book: ``wallet`` is the futures wallet's holding
    per book asset (base units), ``spot_wallet`` the spot wallet's (free + locked, base units;
    None when not read). Spot = spot wallet + futures wallet; without the spot wallet only an asset
    the futures wallet holds more of than the book lists is raised to the futures wallet's holding
    (the holding is at least that: pledged spot is spot too, and a pledge above the holding is
    refused); pledged = the Multi-Assets rules of the wallet's assets."""
    specs = tuple(contract_spec(c, instruments[c.symbol].contract) for c in book.contracts)
    futures = {c.symbol: (account.futures[c.symbol].contracts, account.futures[c.symbol].entry_price)
               for c in book.contracts if c.symbol in account.futures}
    pledged = {a: (r.bid_buffer, r.quantity) for a, r in account.pledged.items()
               if a in wallet and isinstance(r, CollateralRule) and r.bid_buffer is not None
               and r.quantity is not None}
    if spot_wallet is None:
        raised = {a: wallet[a] for a in book.asset_symbols
                  if wallet.get(a, 0.0) > book.spot.get(a, 0.0) * (1 + 1e-12)}
        spot = raised or None
    else:
        spot = {a: spot_wallet.get(a, 0.0) + wallet.get(a, 0.0) for a in book.asset_symbols}
    return AccountSnapshot(cash=account.cash, contracts=specs, futures=futures, pledged=pledged,
                           spot=spot, not_in_book=tuple(not_in_book))
