"""The shared data layout: the folder and file names under a data directory, in one place.

Layout under a data directory (``../shared/data``, or ``$FBR_DATA_DIR``; one file per symbol,
gzip CSV, plain CSV or Parquet, the first suffix of ``SUFFIXES`` that exists)::

    spot_<interval>/<SYM>.csv.gz   timestamp, open, high, low, close, ...  (close in USD)
    perp_mark_4h/<SYM>.csv.gz      timestamp, close                        (perp mark, USD)
    funding/<SYM>.csv.gz           timestamp, funding_rate                 (fraction per settlement)
    quarterly_1d/<PAIR>_<YYMMDD>.csv.gz  timestamp, open, high, low, close (a dated future's daily
                                   klines; delivery 08:00 UTC on YYMMDD)
    markets/...                    contract specs and leverage tiers (ccxt symbols)

``timestamp`` is the first column, ISO 8601 in UTC (bar open time for klines). The loaders are
``models.io`` (prices, funding, quarterlies, markets) and ``models.data_files`` (one file);
``executor.fetch_history`` writes this layout.
"""

from __future__ import annotations

#: Environment variable naming the data directory (``models.io.default_data_dir``).
DATA_DIR_ENV = "FBR_DATA_DIR"
#: File suffixes tried in this order for ``<folder>/<SYM>``.
SUFFIXES = (".csv.gz", ".csv", ".parquet")
#: Spot klines folders are ``spot_<interval>`` (``spot_folder``).
SPOT_FOLDER_PREFIX = "spot_"
#: Daily spot klines (the closes of risk estimates and historical scenarios).
SPOT_DAILY_FOLDER = "spot_1d"
#: Perpetual mark klines (4 h bars).
MARK_FOLDER = "perp_mark_4h"
#: Bar length of the perpetual mark klines, hours (a bar opened at t closes at t + 4 h).
MARK_BAR_HOURS = 4
#: Funding settlements.
FUNDING_FOLDER = "funding"
#: Dated (quarterly) futures' daily klines, ``<PAIR>_<YYMMDD>``.
QUARTERLY_FOLDER = "quarterly_1d"
#: Contract specs and leverage tiers.
MARKETS_FOLDER = "markets"


def spot_folder(interval: str) -> str:
    """The spot klines folder of bar length ``interval`` (e.g. "1d" -> "spot_1d")."""
    return f"{SPOT_FOLDER_PREFIX}{interval}"
