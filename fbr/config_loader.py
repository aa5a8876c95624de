"""Book-file entry points: ``load_book_file(path)`` and ``parse_book(data)`` -> :class:`LoadedBook`.

The document is parsed section by section, each by its own module (fbr.config_holdings,
fbr.config_contracts, fbr.config_market, fbr.config_risk, fbr.config_settings); the format is
described in fbr.config and README.md ("Book file format").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fbr.config_contracts import parse_contracts
from fbr.config_holdings import (
    check_base,
    check_holding_values,
    check_pledged_quantities,
    check_references,
    parse_amounts,
    parse_assets,
    parse_pledged,
    parse_positions,
    parse_weights,
    spot_quantities,
)
from fbr.config_market import data_funding_forecast, parse_market
from fbr.config_risk import parse_risk
from fbr.config_settings import parse_settings
from fbr.config_sources import ParseContext
from fbr.config_tax import check_lot_dates
from fbr.config_values import MAX_HOLDING_USD, check_keys, choice, number, string, sub_table
from models.book import Book, TargetsBase
from models.collateral import DEFAULT_PLEDGE_SOURCE, PLEDGE_SOURCES
from models.errors import ValidationError
from models.market import MarketSnapshot
from models.risk import RiskModel
from models.toml_file import read_toml
from models.trailing_risk import RiskEstimator
from optimizer.settings import OptimizerSettings

#: Top-level sections of a book file (anything else is a typo).
TOP_LEVEL_KEYS = (
    "book", "targets", "spot", "spot_usd", "assets", "contract_defaults", "tier_schedules",
    "contracts", "futures", "pledged", "market", "risk", "costs", "constraints", "solver",
    "tax", "lots",
)
BOOK_KEYS = ("name", "cash", "targets_base", "pledge_source")


@dataclass(frozen=True)
class LoadedBook:
    """Everything one rebalance needs, built from a book file.

    ``labels`` describe where the data came from (e.g. "synthetic market data (seed 7)") so reports
    can show them next to the numbers; ``pledge_source`` (``[book] pledge_source``, one of
    :data:`models.collateral.PLEDGE_SOURCES`) says how an exchange account's pledged spot is read (the ccxt
    gateway's argument of that name).
    """

    book: Book
    market: MarketSnapshot
    risk: RiskModel
    settings: OptimizerSettings
    labels: tuple[str, ...]
    pledge_source: str = DEFAULT_PLEDGE_SOURCE
    #: the estimator's settings of an estimated [risk] model (None: given explicitly), which a
    #: backtest's look-ahead-free re-estimate repeats (fbr.backtest_risk)
    risk_estimator: RiskEstimator | None = None


def load_book_file(path: str | Path) -> LoadedBook:
    """Read a TOML book file and build the book, market, risk model and settings it describes."""
    p = Path(path)
    data = read_toml(p, "book", "examples/ for complete ones")
    return parse_book(data, source=str(p), base_dir=p.resolve().parent)


def parse_book(data: Mapping[str, object], *, source: str = "<dict>",
               base_dir: Path | None = None) -> LoadedBook:
    """Build a :class:`LoadedBook` from a parsed TOML document (``source`` names it in errors)."""
    try:
        default_name = "book" if source == "<dict>" else Path(source).stem
        return parse_document(data, ParseContext(base_dir), default_name)
    except ValidationError as exc:
        if source == "<dict>":
            raise
        raise ValidationError(exc.field, f"{exc.problem} (in {source})", exc.fix) from exc


def parse_document(data: Mapping[str, object], ctx: ParseContext, default_name: str) -> LoadedBook:
    """The whole document, section by section (``default_name`` when [book] has no name)."""
    if not isinstance(data, Mapping):
        raise ValidationError("<document>", f"is {type(data).__name__}", "give a TOML table")
    check_keys(data, TOP_LEVEL_KEYS, "")
    head = sub_table(data, "book", "")
    check_keys(head, BOOK_KEYS, "book")
    pledge_source = parse_pledge_source(head.get("pledge_source", DEFAULT_PLEDGE_SOURCE))
    targets = parse_weights(sub_table(data, "targets", ""), "targets")
    spot_qty = parse_amounts(sub_table(data, "spot", ""), "spot")
    spot_usd = parse_amounts(sub_table(data, "spot_usd", ""), "spot_usd", usd=True)
    assets = parse_assets(data, targets, spot_qty, spot_usd)
    symbols = [a.symbol for a in assets]
    check_references(targets, spot_qty, spot_usd, symbols)
    contracts = parse_contracts(data, symbols, ctx)
    futures = parse_positions(data, contracts)
    pledged = parse_pledged(sub_table(data, "pledged", ""), symbols)
    market = parse_market(sub_table(data, "market", ""), assets, contracts, ctx)
    check_holding_values(spot_qty, futures, contracts, market)
    spot = spot_quantities(spot_qty, spot_usd, market)
    check_pledged_quantities(pledged, spot)
    book = Book(
        assets=assets, contracts=contracts, spot=spot, targets=targets,
        cash=book_cash(head.get("cash", 0.0), pledged),
        futures=futures, pledged=pledged,
        targets_base=choice(head.get("targets_base", "invested"), "book.targets_base",
                            [t.value for t in TargetsBase], TargetsBase),
        name=string(head.get("name", default_name), "book.name"),
    )
    check_base(book, market)
    risk_table = sub_table(data, "risk", "")
    risk, estimator = parse_risk(risk_table, book, market, sub_table(data, "market", ""), ctx)
    settings = parse_settings(data, risk_table, book)
    check_lot_dates(data, market.time)
    market = data_funding_forecast(sub_table(data, "market", ""), market, contracts,
                                   settings.costs, ctx)
    return LoadedBook(book, market, risk, settings, tuple(ctx.labels), pledge_source, estimator)


def book_cash(value: object, pledged: Mapping[str, object]) -> float:
    """``[book] cash``: a finite USD amount of at most MAX_HOLDING_USD in size; negative only when
    the book pledges spot (``[pledged]`` non-empty: a Binance Multi-Assets debt backed by the
    pledged collateral, as the exchange lets the USDT balance go negative in that mode)."""
    v = number(value, "book.cash")
    if abs(v) > MAX_HOLDING_USD:
        raise ValidationError("book.cash", f"is {value!r} USD, more than the {MAX_HOLDING_USD:.0e} "
                              "USD a book may hold", "give a finite USD amount of realistic size "
                              f"(at most {MAX_HOLDING_USD:.0e})")
    if v < 0 and not pledged:
        raise ValidationError(
            "book.cash", f"is {value!r}: a negative balance (a debt) needs pledged collateral, and "
            "the book pledges none", "give a value >= 0, or list the spot the exchange holds as "
            "collateral for the debt in [pledged] (Binance Multi-Assets mode)")
    return v


def parse_pledge_source(value: object) -> str:
    """``[book] pledge_source``: one of :data:`PLEDGE_SOURCES` (case-insensitive)."""
    if not isinstance(value, str) or value.lower() not in PLEDGE_SOURCES:
        raise ValidationError(
            "book.pledge_source", f"is {value!r}",
            'use one of "multi_assets" (Binance USD-M Multi-Assets mode, the default) or '
            '"portfolio_margin" (Binance Portfolio Margin collateral tiers), or remove the key')
    return value.lower()
