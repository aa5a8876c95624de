"""Backtest files: one TOML file names a book, a market path, the policies to compare and options.

``load_backtest_file(path)`` reads and validates a file and returns a :class:`BacktestConfig`;
``build_path`` makes the market path it names (``fbr.backtest_run.build_policy`` a fresh policy per
entry, ``fbr.backtest_run.run_all`` every policy over the same path). The format (see
examples/backtest_demo.toml)::

    book = "backtest_book.toml"    # a book file (README "Book file format"), relative to this file

    [data]                         # the market path
    source = "synthetic"           # "synthetic" (seed, days, start) | "data" (data_dir, start, end, step)
    seed = 7
    days = 365
    start = "2024-01-01"

    [[policies]]                   # one entry per policy; `name` (optional) labels it
    kind = "naive_futures"         # no_rebalance | calendar_spot | band_spot | naive_futures |
    period = "7D"                  # vol_band_futures | dca_futures | edge_band_futures |
                                   # te_band_futures | optimized
    name = "naive weekly"

    [backtest]
    liquidation_penalty = 0.01     # fraction of |notional| charged at a liquidation
    spot_fee = "10bp"              # spot fee for every asset (default: each asset's fee)
    report = "out/backtest.html"   # HTML report (relative to the working directory)
    png_dir = "out/png"            # optional PNG charts folder
    risk_model = "trailing"        # "trailing" (default, no look-ahead) | "book" (fbr.backtest_risk)
    pledged = true                 # count the book's [pledged] spot as margin in the replay

    [backtest.collateral]          # the wallet reserve band (scenarios.collateral.CollateralPolicy)
    target_fraction = 0.2          # wallet / NAV to keep (default: the book's initial ratio)
    band = 0.5                     # relative band before a top-up / sweep-out
    # width = 0.01                 # or an absolute half-width (fraction of NAV) around the target
    # or: collateral = false       # no sweeps between spot and the futures wallet

Pledged collateral in the replay (``pledged``, default false: off, the replay as before). With
``pledged = true`` the book file must have a ``[pledged]`` section (README "[pledged]"); the
replay then runs with ``run_backtest(pledged=True)`` (``scenarios.collateral``): the top-up sweep
is tested on the margin balance M = W + sum_i C_i(u_i) (W the wallet, USD; C_i asset i's collateral
rule applied to its pledged USD value u_i) instead of W alone, so no spot is sold into the wallet
while M >= tau (1 - b) V (tau = ``target_fraction``, b = ``band``, V the NAV); and after a
liquidation that leaves the wallet negative, pledged spot is sold at the close (gross
G = min(-cash / (1 - p), sum_i u_i), p = ``liquidation_penalty``). The switch is explicit, not
implied by the book's [pledged] section: a book's pledges always count in the margin check
(collateral = W + sum_i C_i(u_i)), while the sweep and sale rules change only when asked, so an
existing backtest file gives the same numbers. The reserve band itself is
``[backtest.collateral]`` (``target_fraction`` tau, ``band`` b) as without pledges.

The [[policies]] entries (kinds and parameters) are parsed by ``fbr.backtest_policies``; the
optimised policies' risk model without look-ahead (``backtest.risk_model``) is ``fbr.backtest_risk``;
the runs themselves are ``fbr.backtest_run`` (``build_policy``, ``backtest_options``, ``run_all``),
their labels and JSON ``fbr.backtest_summary``, the size check before a run ``fbr.backtest_work``.

Dated contracts on real data (``source = "data"``, a book listing ``kind = "dated"`` contracts):
``build_path`` marks them with ``scenarios.quarterly_basis.with_quarterly_marks``, at the real Binance
quarterly closes of ``<data_dir>/quarterly_1d/<UNDERLYING>USDT_<YYMMDD>`` (the file whose delivery
is the contract's expiry) where they exist, else at ``S_t (1 + b(tau) tau / 365)`` with the basis
term structure b(tau) fitted to the quarterly files of the contracts' underlyings (an underlying
with no file: the pooled BTC/ETH fit, else whatever files exist, and a note says so; no quarterly
file at all: a ValidationError naming the folder and the fix). The run's labels get one line
(``fbr.backtest_summary.dated_mark_labels``) counting the marks up to each expiry that are real
vs modelled. Books without dated contracts and synthetic paths are built exactly as before (perp
marks or spot).

A backtest ``end`` (or start) beyond the data runs over the span the data cover: the actual
first and last steps are reported (``fbr.backtest_summary.actual_span``, ``span_notes``) in the
CLI output, the JSON and the HTML report's labels.

Every mistake raises :class:`models.errors.ValidationError` naming the TOML field (``policies[2].band``)
and the fix; file-level problems raise :class:`models.errors.ConfigError`, like book files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

import pandas as pd

from fbr.backtest_policies import POLICY_KINDS, PolicySpec, parse_policy
from fbr.config_loader import LoadedBook, load_book_file
from fbr.config_values import check_keys, fraction, join, string, sub_table, table_array, timestamp, whole
from models.book import Book
from models.data_layout import QUARTERLY_FOLDER, SPOT_DAILY_FOLDER
from models.errors import ValidationError
from models.instruments import ContractKind, FuturesContract
from models.toml_file import load_toml_file

if TYPE_CHECKING:
    from scenarios.market_path import MarketPath

#: The sections of an ``fbr run`` file (``fbr.run_config``): a backtest of such a file ignores them,
#: so one file both replays a policy and runs it on an account.
RUN_SECTIONS = ("run", "triggers", "limits", "alerts")
TOP_LEVEL_KEYS = ("book", "data", "policies", "backtest", *RUN_SECTIONS)
DATA_SOURCES = ("synthetic", "data")
SYNTHETIC_KEYS = ("source", "seed", "days", "start")
DATA_KEYS = ("source", "data_dir", "start", "end", "step")
DATA_STEPS = ("1d", "8h", "4h")
BACKTEST_KEYS = ("liquidation_penalty", "spot_fee", "report", "png_dir", "collateral", "risk_model",
                 "pledged")
#: backtest.risk_model: re-estimate without look-ahead (default), or the book's full-sample model.
RISK_MODES = ("trailing", "book")
COLLATERAL_KEYS = ("target_fraction", "band", "width", "enabled")
DEFAULT_REPORT = "out/backtest.html"
DEFAULT_SEED = 7
DEFAULT_DAYS = 365
DEFAULT_START = "2024-01-01"


class CollateralArgs(TypedDict, total=False):
    """[backtest.collateral] as keyword arguments of scenarios.collateral.CollateralPolicy."""

    target_fraction: float
    band: float
    width: float
    enabled: bool


@dataclass(frozen=True)
class DataSpec:
    """Where the market path comes from: the synthetic generator or the data folder."""

    source: str
    seed: int = DEFAULT_SEED
    days: int = DEFAULT_DAYS
    start: str | None = DEFAULT_START
    end: str | None = None
    step: str = "1d"
    data_dir: Path | None = None

    def label(self) -> str:
        """One line saying where the path's data came from."""
        if self.source == "synthetic":
            return f"SYNTHETIC market path (seed {self.seed}, {self.days} days from {self.start})"
        span = f"{self.start or 'first'} .. {self.end or 'last'}"
        return f"market data from {self.data_dir} ({span}, step {self.step})"


@dataclass(frozen=True)
class BacktestConfig:
    """A validated backtest file."""

    source: Path
    book_path: Path
    loaded: LoadedBook
    data: DataSpec
    policies: tuple[PolicySpec, ...]
    liquidation_penalty: float = 0.01
    spot_fee: float | None = None
    report: Path | None = Path(DEFAULT_REPORT)
    png_dir: Path | None = None
    collateral: CollateralArgs | None = None
    risk_model: str = "trailing"
    pledged: bool = False

    @property
    def labels(self) -> tuple[str, ...]:
        """Data labels: the book's, the path's and, with ``pledged = true``, the pledged assets."""
        extra = (pledged_label(self.loaded.book),) if self.pledged else ()
        return (*self.loaded.labels, self.data.label(), *extra)


def pledged_label(book: Book) -> str:
    """One line naming the pledged assets and their rules (``backtest.pledged = true``)."""
    rules = []
    for sym, rule in zip(book.asset_symbols, book.pledge_rules(), strict=True):
        if rule is None:
            continue
        if rule.bid_buffer is not None:
            how = f"bidBuffer {rule.bid_buffer:g}"
        elif rule.flat_ratio is not None:
            how = f"ratio {rule.flat_ratio:g}"
        else:
            how = f"{len(rule.tiers)} tiers"
        rules.append(f"{sym} ({how}{'' if rule.quantity is None else f', {rule.quantity:g} units'})")
    return ("pledged collateral ON: " + ", ".join(rules) + " count as margin; top-up sweeps test "
            "wallet + pledged value, pledged spot is sold after a liquidation")


# ==============================================================================================
# loading
# ==============================================================================================
def load_backtest_file(path: str | Path) -> BacktestConfig:
    """Read and validate a TOML backtest file (its book file is loaded too)."""
    return load_toml_file(path, "backtest", "examples/backtest_demo.toml",
                          lambda data, p: parse_backtest(data, source=p))


def parse_backtest(data: Mapping[str, object], *, source: Path) -> BacktestConfig:
    """Build a :class:`BacktestConfig` from a parsed document; relative paths start at ``source``'s
    folder (except report and png_dir, which are relative to the working directory)."""
    base_dir = source.resolve().parent
    check_keys(data, TOP_LEVEL_KEYS, "")
    if "book" not in data:
        raise ValidationError("book", "is missing", 'give the book file: book = "my_book.toml" '
                              "(relative to this file)")
    book_path = _resolve(string(data["book"], "book"), base_dir)
    if not book_path.is_file():
        raise ValidationError("book", f"is {data['book']!r}: {book_path} does not exist",
                              "give the path of a book file, relative to the backtest file")
    loaded = load_book_file(book_path)
    spec = _data(sub_table(data, "data", ""), base_dir)
    policies = _policies(data)
    opts = sub_table(data, "backtest", "")
    check_keys(opts, BACKTEST_KEYS, "backtest")
    penalty = fraction(opts.get("liquidation_penalty", 0.01), "backtest.liquidation_penalty",
                       upper=1.0, upper_open=True)
    spot_fee = (fraction(opts["spot_fee"], "backtest.spot_fee", upper=1.0, upper_open=True)
                if "spot_fee" in opts else None)
    report = Path(string(opts.get("report", DEFAULT_REPORT), "backtest.report"))
    png_dir = Path(string(opts["png_dir"], "backtest.png_dir")) if "png_dir" in opts else None
    pledged = _pledged(opts.get("pledged", False), loaded.book, book_path)
    mode = opts.get("risk_model", "trailing")
    if not isinstance(mode, str) or mode.lower() not in RISK_MODES:
        raise ValidationError("backtest.risk_model", f"is {mode!r}",
                              'use "trailing" (no look-ahead) or "book" (the book\'s full-sample '
                              "model, look-ahead stated in the output)")
    return BacktestConfig(source=source, book_path=book_path, loaded=loaded, data=spec,
                          policies=policies, liquidation_penalty=penalty, spot_fee=spot_fee,
                          report=report, png_dir=png_dir, risk_model=mode.lower(), pledged=pledged,
                          collateral=_collateral(opts["collateral"]) if "collateral" in opts else None)


def _policies(data: Mapping[str, object]) -> tuple[PolicySpec, ...]:
    """The [[policies]] entries: at least one, names distinct."""
    rows = table_array(data, "policies", "")
    if not rows:
        raise ValidationError("policies", "is empty", 'add at least one [[policies]] entry with '
                              f"kind = one of {', '.join(POLICY_KINDS)}")
    policies = tuple(parse_policy(row, join("policies", k)) for k, row in enumerate(rows))
    names = [p.name for p in policies]
    dup = sorted({n for k, n in enumerate(names) if n in names[:k]})
    if dup:
        raise ValidationError("policies", f"has the name(s) {dup} more than once",
                              "give each entry a distinct name = \"...\"")
    return policies


def _pledged(value: object, book: Book, book_path: Path) -> bool:
    """``backtest.pledged``: true / false (no quotes); true needs a [pledged] section in the book."""
    path = "backtest.pledged"
    if not isinstance(value, bool):
        raise ValidationError(path, f"is {value!r}", "write pledged = true (count the book's "
                              "[pledged] spot as margin in the replay) or false, without quotes")
    if value and not book.pledged:
        raise ValidationError(path, f"is true, but the book file {book_path} has no [pledged] "
                              "section (nothing is pledged)",
                              "add a [pledged] section to the book file (e.g. BTC = 0.95, see the "
                              "README \"[pledged]\"), or remove backtest.pledged")
    return value


def _collateral(value: object) -> CollateralArgs:
    """[backtest.collateral] (or collateral = true/false) as CollateralPolicy keyword arguments."""
    path = "backtest.collateral"
    if isinstance(value, bool):
        return CollateralArgs() if value else CollateralArgs(enabled=False)
    if not isinstance(value, dict):
        raise ValidationError(path, f"is {value!r}", "give a table [backtest.collateral] with "
                              f"{', '.join(COLLATERAL_KEYS)}, or true / false")
    check_keys(value, COLLATERAL_KEYS, path)
    if "band" in value and "width" in value:  # band_edges() would use width and drop band
        raise ValidationError(join(path, "width"), f"is given together with band "
                              f"({value['band']!r}): band is relative to the target, width an "
                              f"absolute half-width", "give one of them: band (relative) or "
                              "width (a fraction of NAV)")
    out = CollateralArgs()
    if "target_fraction" in value:
        out["target_fraction"] = fraction(value["target_fraction"], join(path, "target_fraction"),
                                          upper_open=True)
    if "band" in value:
        out["band"] = fraction(value["band"], join(path, "band"), upper=1e6)
    if "width" in value:
        out["width"] = fraction(value["width"], join(path, "width"), upper_open=True)
    if "enabled" in value:
        if not isinstance(value["enabled"], bool):
            raise ValidationError(join(path, "enabled"), f"is {value['enabled']!r}",
                                  "write true or false (no quotes)")
        out["enabled"] = value["enabled"]
    return out


def _resolve(raw: str, base_dir: Path) -> Path:
    """A path from the file, relative to its folder unless absolute (``~`` expanded)."""
    p = Path(raw).expanduser()
    return p if p.is_absolute() else base_dir / p


def _data(table: Mapping[str, object], base_dir: Path) -> DataSpec:
    """The [data] section."""
    source = table.get("source", "synthetic")
    if not isinstance(source, str) or source.lower() not in DATA_SOURCES:
        raise ValidationError("data.source", f"is {source!r}",
                              f"use one of {', '.join(map(repr, DATA_SOURCES))}")
    source = source.lower()
    if source == "synthetic":
        check_keys(table, SYNTHETIC_KEYS, "data")
        seed = whole(table.get("seed", DEFAULT_SEED), "data.seed", 0)
        days = whole(table.get("days", DEFAULT_DAYS), "data.days", 2)
        start = timestamp(table.get("start", DEFAULT_START), "data.start").strftime("%Y-%m-%d")
        return DataSpec("synthetic", seed=seed, days=days, start=start)
    check_keys(table, DATA_KEYS, "data")
    first = timestamp(table["start"], "data.start").isoformat() if "start" in table else None
    end = timestamp(table["end"], "data.end").isoformat() if "end" in table else None
    if first is not None and end is not None and pd.Timestamp(end) <= pd.Timestamp(first):
        raise ValidationError("data.end", f"is {table['end']!r}, not after data.start",
                              "give an end later than the start")
    step = table.get("step", "1d")
    if not isinstance(step, str) or step.lower() not in DATA_STEPS:
        raise ValidationError("data.step", f"is {step!r}",
                              f"use one of {', '.join(map(repr, DATA_STEPS))}")
    return DataSpec("data", start=first, end=end, step=step.lower(), data_dir=_data_dir(table, base_dir))


def _data_dir(table: Mapping[str, object], base_dir: Path) -> Path:
    """``data.data_dir`` (relative to the backtest file), else models.io.default_data_dir()."""
    if "data_dir" in table:
        d: Path | None = _resolve(string(table["data_dir"], "data.data_dir"), base_dir)
    else:
        from models.io import default_data_dir

        d = default_data_dir()
        if d is None:
            raise ValidationError("data.data_dir", "is not set and no data folder was found",
                                  'set data_dir = "path/to/shared/data" (relative to this file) '
                                  "or FBR_DATA_DIR")
    if d is None or not d.is_dir():
        raise ValidationError("data.data_dir", f"is {str(d)!r}, which is not a folder",
                              f"give the folder that holds {SPOT_DAILY_FOLDER}/ (relative to this file)")
    return d


# ==============================================================================================
# the market path
# ==============================================================================================
def build_path(cfg: BacktestConfig) -> MarketPath:
    """The market path for the book's assets and contracts."""
    from scenarios.market_path import MarketPath

    book = cfg.loaded.book
    spec = cfg.data
    if spec.source == "synthetic":
        from models.synthetic import generate_history

        try:
            hist = generate_history(tuple(book.asset_symbols), days=spec.days,
                                    start=spec.start or DEFAULT_START, seed=spec.seed)
        except ValidationError as exc:
            raise ValidationError(join("data", exc.field.removeprefix("synthetic.")), exc.problem,
                                  exc.fix) from exc
        return MarketPath.from_synthetic(hist, book.contracts)
    if spec.data_dir is None:  # _data always sets it for source = "data"
        raise ValidationError("data.data_dir", "is not set",
                              f"give the folder that holds {SPOT_DAILY_FOLDER}/")
    try:
        path = MarketPath.from_data(spec.data_dir, book.contracts, start=spec.start, end=spec.end,
                                    step=spec.step, assets=tuple(book.asset_symbols))
    except ValidationError as exc:
        raise ValidationError(f"data ({exc.field})", exc.problem, exc.fix) from exc
    return _with_quarterly_marks(path, book.contracts, spec.data_dir)


def _with_quarterly_marks(path: MarketPath, contracts: Sequence[FuturesContract],
                          data_dir: Path) -> MarketPath:
    """``path`` with its dated contracts marked by ``scenarios.quarterly_basis.with_quarterly_marks`` (real
    quarterly closes where the files have them, the fitted basis term structure elsewhere); the
    path as it is when ``contracts`` has no dated contract. Warns (a note of the run) when an
    underlying has no quarterly file and its marks are modelled on other underlyings' fit."""
    dated = [c for c in contracts if c.kind == ContractKind.DATED]
    if not dated:
        return path
    import warnings

    from scenarios.quarterly_basis import with_quarterly_marks

    try:
        marked, term = with_quarterly_marks(path, contracts, data_dir)
    except ValidationError as exc:
        raise ValidationError(f"data ({exc.field})", exc.problem, exc.fix) from exc
    missing = sorted({c.underlying for c in dated} - set(term.underlyings))
    if missing:
        warnings.warn(f"no quarterly file for {', '.join(missing)} in {data_dir / QUARTERLY_FOLDER}: "
                      f"its dated contracts are marked on the basis term structure fitted to the "
                      f"{', '.join(term.underlyings)} quarterlies", stacklevel=3)
    return marked
