"""``fbr account import``: write the exchange account into an existing book file.

    fbr account import BOOK.toml --exchange binanceusdm [--spot binance] [--yes] [--dry-run] [--json]

reads, through the ccxt gateway of ``fbr execute``, the futures positions (contracts, entry price
USD), the futures wallet (stablecoin cash USD: USDT plus the other USD stablecoins' collateral
value, :mod:`executor.ccxt_collateral`; in Multi-Assets mode its other assets as pledged
collateral; with ``[book] pledge_source = "portfolio_margin"`` they are valued by Portfolio Margin
tiers and not written), the contracts' specs and leverage tiers, and with ``--spot binance`` the spot wallet's
balances (base units, free + locked). :mod:`fbr.account_import` merges them into the book's TOML
(targets, settings and comments kept); the unified diff is shown, then the file is written after a
confirmation (``--yes`` in scripts; ``--dry-run`` only shows the diff). Assets held on the exchange
that the book does not list are named in a note, never added; a note says how each stablecoin
other than USDT was counted (futures wallet: in cash; spot wallet: not at all).

Keys come from ``FBR_BINANCEUSDM_API_KEY`` / ``FBR_BINANCEUSDM_SECRET`` (read-only keys are enough;
the spot wallet is read with the same Binance keys) and never reach the output, errors or the file.
Heavy modules (ccxt, tomlkit, the gateway, the book loader) load when the command runs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from executor.safety import Credentials, install_log_redaction, redact
from fbr.console import CliError, err, user_errors
from fbr.execute_wiring import ExchangeChoice, _emit, redacting

if TYPE_CHECKING:
    from executor.ccxt_gateway import CcxtGateway
    from executor.plan import Instrument
    from fbr.account_import import AccountSnapshot
    from fbr.config_loader import LoadedBook

__all__ = ["SPOT_FACTORIES", "account_app", "import_book", "register"]

#: The futures wallet's stablecoin (the gateway's default quote): its balance is [book] cash.
QUOTE = "USDT"

account_app = typer.Typer(no_args_is_help=True,
                          help="The exchange account: import positions, balances and specs into a "
                               "book file.")


class ImportExchange(StrEnum):
    """Futures venues an account can be imported from."""

    BINANCEUSDM = "binanceusdm"


class SpotVenue(StrEnum):
    """Spot venues whose wallet balances can be imported."""

    BINANCE = "binance"


def _binance_spot(creds: Credentials) -> Any:
    import ccxt

    return ccxt.binance({"apiKey": creds.api_key, "secret": creds.secret, "enableRateLimit": True,
                         "options": {"fetchCurrencies": False, "maxRetriesOnFailure": 0,
                                     "defaultType": "spot", "fetchMarkets": {"types": ["spot"]},
                                     "fetchMargins": False}})


#: ccxt spot exchange factories by venue (tests swap in one wired to the loopback emulator).
SPOT_FACTORIES: dict[str, Callable[[Credentials], Any]] = {"binance": _binance_spot}


def register(app: typer.Typer) -> None:
    """Add the ``account`` command group (``fbr account import``) to the fbr CLI."""
    app.add_typer(account_app, name="account")


@dataclass(frozen=True)
class Outcome:
    """One import: the file's text before and after, the diff, the snapshot and the notes."""

    old: str
    new: str
    diff: str
    snapshot: AccountSnapshot
    notes: tuple[str, ...]


# --- reading --------------------------------------------------------------------------------------

def _require_book(path: Path) -> None:
    if not path.exists():
        raise CliError(f"book file {path} does not exist: `fbr account import` updates an existing "
                       f"book, whose [targets] and settings it keeps. Fix: write {path} with at least "
                       f"a [targets] table (e.g. BTC = 0.5, ETH = 0.3; see examples/seed_example_1.toml), "
                       f"then import again")


def _require_keys(exchange: str) -> None:
    from executor.safety import env_names

    names = env_names(exchange)
    if not all(os.environ.get(n) for n in names):
        raise CliError(f"importing the {exchange} account reads it (positions, balances), which "
                       f"needs API keys (read-only keys are enough): set {names[0]} and {names[1]}. "
                       f"Fix: export {names[0]} and {names[1]}")


def _wallet_assets(balance: Mapping[str, object]) -> dict[str, float]:
    """The futures wallet's assets other than the stablecoins (cash, counted by the gateway):
    asset -> walletBalance (base units, > 0), from the account's ``info.assets`` rows."""
    from executor.ccxt_collateral import STABLECOINS, wallet_balances

    return {asset: qty for asset, qty in wallet_balances(balance).items()
            if qty > 0 and asset and asset != QUOTE and asset not in STABLECOINS}


def _foreign_positions(gw: CcxtGateway, instruments: Mapping[str, Instrument]) -> list[str]:
    """Open positions on contracts the book does not list, as note text (contracts, signed)."""
    mine = {i.exchange_symbol for i in instruments.values()}
    rows = gw.all_positions()
    out: list[str] = []
    for row in rows:
        q = float(row.get("contracts") or 0.0)
        sym = str(row.get("symbol"))
        if q and sym not in mine:
            out.append(f"position {sym} {-q if row.get('side') == 'short' else q:g} contracts")
    return sorted(out)


def _spot_wallet(venue: SpotVenue | None, exchange: str) -> dict[str, float] | None:
    """The spot wallet (asset -> free + locked, base units) with the futures venue's keys, or None."""
    if venue is None:
        return None
    from executor.ccxt_spot import SpotBalances
    from executor.safety import load_credentials
    from fbr import execute_wiring

    reader = SpotBalances(SPOT_FACTORIES[venue.value](load_credentials(exchange)),
                          base_delay_s=execute_wiring.BACKOFF_S)
    return reader.totals()


def read_snapshot(loaded: LoadedBook, exchange: ImportExchange,
                  spot: SpotVenue | None) -> tuple[AccountSnapshot, tuple[str, ...]]:
    """The account as an :class:`AccountSnapshot` of the book (see :mod:`fbr.account_import`),
    and the notes for the user."""
    from executor.workflow import account_view
    from fbr.account_import import snapshot_from_account
    from fbr.execute_wiring import _gateway

    book = loaded.book
    gw = _gateway(ExchangeChoice(exchange.value), pledge_source=loaded.pledge_source)
    gw.refuse_foreign = False  # an import lists a position outside the book as a note
    account, _market, instruments = account_view(gw, book, loaded.market)
    held = _wallet_assets(gw.balance())
    spot_wallet = _spot_wallet(spot, exchange.value)
    spot_coins, spot_rest = _split_stablecoins(spot_wallet or {})
    assets = set(book.asset_symbols)
    foreign = [f"futures wallet {a} {q:g}" for a, q in sorted(held.items()) if a not in assets]
    foreign += [f"spot {a} {q:g}" for a, q in sorted(spot_rest.items()) if a not in assets]
    foreign += _foreign_positions(gw, instruments)
    wallet = {a: q for a, q in held.items() if a in assets}
    snap = snapshot_from_account(book, account, instruments, wallet=wallet,
                                 spot_wallet=spot_wallet, not_in_book=foreign)
    coins = [*gw.stablecoin_notes, *(
        f"spot wallet {a} {q:g}: not counted (a stablecoin in the spot wallet is not futures "
        f"margin; [book] cash is the futures wallet's: transfer it there to count it)"
        for a, q in sorted(spot_coins.items()) if a not in assets)]
    return snap, _notes(snap, bool(wallet), loaded.pledge_source) + tuple(coins)


def _split_stablecoins(wallet: Mapping[str, float]) -> tuple[dict[str, float], dict[str, float]]:
    """(USD stablecoins incl. USDT, everything else) of a wallet (asset -> base units, > 0)."""
    from executor.ccxt_collateral import STABLECOINS

    coins = {a: q for a, q in wallet.items() if a in STABLECOINS}
    return coins, {a: q for a, q in wallet.items() if a not in coins}


# --- merging, checking, writing --------------------------------------------------------------------

def _notes(snap: AccountSnapshot, wallet_assets: bool,
           pledge_source: str = "multi_assets") -> tuple[str, ...]:
    """What the user should know: holdings not in the book, wallet assets not pledged, spot not
    read (``wallet_assets``: the futures wallet holds book assets other than the stablecoin;
    ``pledge_source``: the book's ``[book] pledge_source``)."""
    notes: list[str] = []
    if snap.not_in_book:
        notes.append("held on the exchange but not in the book (not added; list an asset in "
                     "[targets] to manage it): " + ", ".join(snap.not_in_book))
    if wallet_assets and pledge_source == "portfolio_margin":
        notes.append("the futures wallet holds book assets; with [book] pledge_source = "
                     "\"portfolio_margin\" they are valued by the exchange's Portfolio Margin tiers "
                     "each time the account is read: no [pledged] entry written")
    elif wallet_assets and not snap.pledged:
        notes.append("the futures wallet holds book assets but the exchange counts none as "
                     "margin (Multi-Assets mode off, or no collateral rate): no [pledged] entry "
                     "written")
    if snap.spot is None:
        notes.append("[spot] not read (add --spot binance to import the spot wallet)")
    return tuple(notes)


def _check_loads(text: str, path: Path) -> None:
    """Refuse (nothing written) when the merged book does not load as a book file."""
    import tomllib

    from fbr.config_loader import parse_book
    from models.errors import ValidationError

    try:
        parse_book(tomllib.loads(text), source=str(path), base_dir=path.resolve().parent)
    except ValidationError as exc:
        raise CliError(f"the book with the account imported would not load, so nothing was "
                       f"written: {exc}") from None


def plan_import(path: Path, exchange: ImportExchange, spot: SpotVenue | None) -> Outcome:
    """Read the account and merge it into the book's text (nothing written)."""
    from fbr.account_import import import_text, text_diff
    from fbr.execute_wiring import _load

    _require_book(path)
    loaded = _load(path)
    _require_keys(exchange.value)
    snap, notes = read_snapshot(loaded, exchange, spot)
    with open(path, encoding="utf-8", newline="") as f:
        old = f.read()
    new = import_text(old, snap)
    if new != old:
        _check_loads(new, path)
    return Outcome(old, new, text_diff(old, new, path.name), snap, notes)


def _write(path: Path, text: str) -> None:
    """Replace the file atomically (a temporary file beside it, then a rename; mode kept)."""
    import shutil
    import tempfile

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.resolve().parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        shutil.copymode(path, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _interactive() -> bool:
    """True when a confirmation can be asked (stdin is a terminal)."""
    return sys.stdin.isatty()


def _confirmed(path: Path, yes: bool, as_json: bool) -> bool:
    """--yes, else the user's answer on a terminal; refused (exit 2) when no one can answer."""
    if yes:
        return True
    if as_json or not _interactive():
        why = "--json is on" if as_json else "stdin is not a terminal"
        raise CliError(f"{path} would change (see the diff) but no confirmation can be asked "
                       f"({why}); nothing was written. Fix: add --yes to write it (or --dry-run to "
                       f"only show the diff)")
    return typer.confirm(f"Write {path}?", default=False)


def _account_json(snap: AccountSnapshot) -> dict[str, object]:
    return {"cash": snap.cash,
            "futures": {s: {"contracts": q, "entry_price": e} for s, (q, e) in snap.futures.items()},
            "spot": None if snap.spot is None else dict(snap.spot),
            "pledged": {a: {"bid_buffer": b, "quantity": q} for a, (b, q) in snap.pledged.items()}}


def _report(path: Path, outcome: Outcome, written: bool, dry_run: bool, as_json: bool) -> None:
    changed = outcome.new != outcome.old
    if as_json:
        _emit({"status": "ok", "book": str(path), "changed": changed, "written": written,
               "dry_run": dry_run, "diff": outcome.diff, "notes": list(outcome.notes),
               "account": _account_json(outcome.snapshot)})
        return
    if not changed:
        print(f"no change: {path} already matches the account")
    elif written:
        print(f"wrote {path}")
    else:
        print(f"{'dry run: ' if dry_run else ''}nothing written to {path}")
    for note in outcome.notes:
        err.print(f"note: {redact(note)}", highlight=False, markup=False, soft_wrap=True)


@account_app.command("import")
def import_book(
    book: Annotated[Path, typer.Argument(help="Book file (TOML) to update; it must exist with its "
                                         "targets table.")],
    exchange: Annotated[ImportExchange, typer.Option(
        "--exchange", help="Futures venue whose account is read.")],
    spot: Annotated[SpotVenue | None, typer.Option(
        "--spot", help="Also read this spot wallet (balances into the spot table; same keys).")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Write without asking.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show the diff.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Write the exchange account (positions, cash, pledged, spot, contract specs, tiers) into BOOK."""
    install_log_redaction()
    with user_errors(as_json), redacting():
        outcome = plan_import(book, exchange, spot)
        if outcome.diff and not as_json:
            print(redact(outcome.diff), end="")
        written = False
        if outcome.new != outcome.old and not dry_run and _confirmed(book, yes, as_json):
            _write(book, outcome.new)
            written = True
        _report(book, outcome, written, dry_run, as_json)
