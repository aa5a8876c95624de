"""Book files: one TOML file holds a whole rebalance problem (book, market, risk model, settings).

``load_book_file(path)`` reads a file, ``parse_book(data)`` builds the models from an already parsed
TOML document. Both return a :class:`LoadedBook`. The format is documented in README.md
("Book file format"); in short:

    [book]               name, cash (USD stablecoin collateral in the futures wallet), targets_base,
                         pledge_source ("multi_assets" | "portfolio_margin": how an account's
                         pledged spot is read)
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
file, TOML syntax) raise :class:`models.errors.ConfigError` (``models.toml_file.read_toml``, the one
reader of book, backtest, Monte Carlo and scenario files).

Units: money in USD; weights, fees, rates, vols and returns are fractions (strings such as "30%" or
"5bp" are accepted where a fraction is expected); vols are annualised (365-day year); funding rates
are per funding interval; ADV is USD per day.

This module is the book file's public import path (``LoadedBook``, ``load_book_file``,
``parse_book``); the loader is split into small modules next to it, which hold everything else
(each section's keys, defaults and parsers):

    fbr.config_loader     LoadedBook, load_book_file, parse_book (the document, section by section)
    fbr.config_values     the one-value parsers (number, timestamp, fraction, ...)
    fbr.config_sources    parse context, synthetic histories, daily closes of a data folder
    fbr.config_holdings   [targets] [spot] [spot_usd] [[assets]] [pledged] [[futures]]
    fbr.config_contracts  [contract_defaults] [tier_schedules] [[contracts]] and margin tiers
    fbr.config_market     [market]
    fbr.config_risk       [risk]
    fbr.config_settings   [costs] [constraints] [solver]
    fbr.config_tax        [tax] [lots]
"""

from __future__ import annotations

from fbr.config_loader import LoadedBook, load_book_file, parse_book

__all__ = ["LoadedBook", "load_book_file", "parse_book"]
