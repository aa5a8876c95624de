"""Backtest files: one TOML file names a book, a market path, the policies to compare and options.

``load_backtest_file(path)`` reads and validates a file and returns a :class:`BacktestConfig`;
``build_path`` makes the market path, ``build_policy`` a fresh policy per entry, and ``run_all``
runs every policy over the same path. The format (see examples/backtest_demo.toml)::

    book = "backtest_book.toml"    # a book file (README "Book file format"), relative to this file

    [data]                         # the market path
    source = "synthetic"           # "synthetic" (seed, days, start) | "data" (data_dir, start, end, step)
    seed = 7
    days = 365
    start = "2024-01-01"

    [[policies]]                   # one entry per policy; `name` (optional) labels it
    kind = "naive_futures"         # no_rebalance | calendar_spot | band_spot | naive_futures |
    period = "7D"                  # vol_band_futures | dca_futures | edge_band_futures | optimized
    name = "naive weekly"

    [backtest]
    liquidation_penalty = 0.01     # fraction of |notional| charged at a liquidation
    spot_fee = "10bp"              # spot fee for every asset (default: each asset's fee)
    report = "out/backtest.html"   # HTML report (relative to the working directory)
    png_dir = "out/png"            # optional PNG charts folder
    risk_model = "trailing"        # "trailing" (default, no look-ahead) | "book" (see below)
    pledged = true                 # count the book's [pledged] spot as margin in the replay

    [backtest.collateral]          # the wallet reserve band (scenarios.backtest.CollateralPolicy)
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

Policy parameters (fractions accept "5%" / "50bp"; periods are pandas offsets such as "7D", "8h"):

- ``no_rebalance``: none
- ``calendar_spot``: period (default "30D")
- ``band_spot``: band (default 0.05)
- ``naive_futures``: period and/or band (at least one)
- ``vol_band_futures``: base_band (required), ref_vol, window, min_band, max_band
- ``dca_futures``: steps (required), period and/or band (at least one)
- ``edge_band_futures``: band (required; a weight), inner (in [0, 1], default 1), scaling
  ("uniform", default, or "vol"), window (trailing returns of the vol scaling, >= 2, default 30;
  only with scaling = "vol"). Per asset, when |e_i - w*_i| > b_i, futures trade the asset's
  deviation to sign(e_i - w*_i) inner b_i (1: the band's edge, 0: the target); b_i = band
  (uniform) or band sigma_i / mean_k sigma_k (vol: trailing realised vols of the path's spot
  prices). See ``optimizer.edge_bands``.
- ``optimized``: gamma_trade, gamma_fund (override the book's [costs]), risk_lookback_days,
  risk_method. Without ``risk_lookback_days`` the optimiser uses the book file's risk model
  throughout (simple, but the book's model may have been estimated on data after the path's start).
  With it, the model is re-estimated with models.risk.estimate_risk every
  ``RISK_REESTIMATE_DAYS`` days from the path's spot returns up to the current step only (no
  look-ahead), over the trailing ``risk_lookback_days``; until ``MIN_RISK_ROWS`` returns exist the
  book's model is used. The book's basis covariance (if any) is kept.

Look-ahead of the book's risk model: a book whose [risk] is *estimated* (source "data" or
"synthetic") is estimated on returns up to its market time T_book. When the path starts at
t0 < T_book, using that model from t0 on would use returns from (t0, T_book]. So by default
(``risk_model = "trailing"``) the optimised policies then estimate the model themselves at each
refresh t (every ``RISK_REESTIMATE_DAYS``) from daily returns with close time <= t only, over the
trailing ``risk_lookback_days`` (default ``DEFAULT_TRAILING_DAYS``): for a data path these are the
data folder's daily closes, the history before t0 included (at least ``MIN_RISK_ROWS`` returns must
precede t0, else the file is refused); for a synthetic path, the path's own returns (so the path
must not start before the book's estimate ends: refused otherwise). ``risk_model = "book"`` uses
the book's full-sample model as it is; the CLI output, the JSON and the HTML report then say
"LOOK-AHEAD". An explicit risk model (vols + correlation in the book) is used as given.

Dated contracts on real data (``source = "data"``, a book listing ``kind = "dated"`` contracts):
``build_path`` marks them with ``scenarios.rolls.with_quarterly_marks``, at the real Binance
quarterly closes of ``<data_dir>/quarterly_1d/<UNDERLYING>USDT_<YYMMDD>`` (the file whose delivery
is the contract's expiry) where they exist, else at ``S_t (1 + b(tau) tau / 365)`` with the basis
term structure b(tau) fitted to the quarterly files of the contracts' underlyings (an underlying
with no file: the pooled BTC/ETH fit, else whatever files exist, and a note says so; no quarterly
file at all: a ValidationError naming the folder and the fix). The run's labels get one line
(``dated_mark_labels``) counting the marks up to each expiry that are real vs modelled. Books
without dated contracts and synthetic paths are built exactly as before (perp marks or spot).

A backtest ``end`` (or start) beyond the data runs over the span the data cover: the actual
first and last steps are reported (``actual_span``, ``span_notes``) in the CLI output, the JSON
and the HTML report's labels.

Every mistake raises :class:`models.errors.ValidationError` naming the TOML field (``policies[2].band``)
and the fix; file-level problems raise :class:`fbr.config.ConfigError`, like book files.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from fbr.config_loader import LoadedBook, load_book_file
from fbr.config_values import check_keys as _check_keys
from fbr.config_values import join as _join
from fbr.config_values import number as _number
from fbr.config_values import read_toml
from fbr.config_values import string as _string
from fbr.config_values import sub_table as _table
from fbr.config_values import table_array as _tables
from fbr.config_values import timestamp as _timestamp
from models.book import Book
from models.errors import ValidationError
from models.instruments import ContractKind, FuturesContract
from models.market import MarketSnapshot
from models.risk import RiskModel
from optimizer.policies import Policy, TargetHoldings
from optimizer.settings import OptimizerSettings

TOP_LEVEL_KEYS = ("book", "data", "policies", "backtest")
DATA_SOURCES = ("synthetic", "data")
SYNTHETIC_KEYS = ("source", "seed", "days", "start")
DATA_KEYS = ("source", "data_dir", "start", "end", "step")
DATA_STEPS = ("1d", "8h", "4h")
BACKTEST_KEYS = ("liquidation_penalty", "spot_fee", "report", "png_dir", "collateral", "risk_model",
                 "pledged")
#: backtest.risk_model: re-estimate without look-ahead (default), or the book's full-sample model.
RISK_MODES = ("trailing", "book")
#: Trailing window (days) of the default look-ahead-free risk estimate.
DEFAULT_TRAILING_DAYS = 365
COLLATERAL_KEYS = ("target_fraction", "band", "width", "enabled")
POLICY_KINDS = ("no_rebalance", "calendar_spot", "band_spot", "naive_futures", "vol_band_futures",
                "dca_futures", "edge_band_futures", "optimized")
#: Parameters of each policy kind (besides ``kind`` and ``name``).
POLICY_PARAMS: dict[str, tuple[str, ...]] = {
    "no_rebalance": (),
    "calendar_spot": ("period",),
    "band_spot": ("band",),
    "naive_futures": ("period", "band"),
    "vol_band_futures": ("base_band", "ref_vol", "window", "min_band", "max_band"),
    "dca_futures": ("steps", "period", "band"),
    "edge_band_futures": ("band", "inner", "scaling", "window"),
    "optimized": ("gamma_trade", "gamma_fund", "risk_lookback_days", "risk_method"),
}
DEFAULT_REPORT = "out/backtest.html"
DEFAULT_SEED = 7
DEFAULT_DAYS = 365
DEFAULT_START = "2024-01-01"
#: The optimised policy's re-estimated risk model is refreshed this often (days of path time).
RISK_REESTIMATE_DAYS = 30
#: Fewest trailing returns a re-estimate needs; before that the book's risk model is used.
MIN_RISK_ROWS = 30


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
class PolicySpec:
    """One [[policies]] entry: its kind, display name and parsed parameters."""

    kind: str
    name: str
    params: Mapping[str, Any] = field(default_factory=dict)
    where: str = "policies"


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
    collateral: Mapping[str, Any] | None = None
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
    p = Path(path)
    data = read_toml(p, "backtest", "examples/backtest_demo.toml")
    try:
        return parse_backtest(data, source=p)
    except ValidationError as exc:
        if "(in " in exc.problem:  # already located (an error inside the book file)
            raise
        raise ValidationError(exc.field, f"{exc.problem} (in {p})", exc.fix) from exc


def parse_backtest(data: Mapping[str, Any], *, source: Path) -> BacktestConfig:
    """Build a :class:`BacktestConfig` from a parsed document; relative paths start at ``source``'s
    folder (except report and png_dir, which are relative to the working directory)."""
    base_dir = source.resolve().parent
    _check_keys(data, TOP_LEVEL_KEYS, "")
    if "book" not in data:
        raise ValidationError("book", "is missing", 'give the book file: book = "my_book.toml" '
                              "(relative to this file)")
    book_path = _resolve(_string(data["book"], "book"), base_dir)
    if not book_path.is_file():
        raise ValidationError("book", f"is {data['book']!r}: {book_path} does not exist",
                              "give the path of a book file, relative to the backtest file")
    loaded = load_book_file(book_path)
    spec = _data(_table(data, "data", ""), base_dir)
    rows = _tables(data, "policies", "")
    if not rows:
        raise ValidationError("policies", "is empty", 'add at least one [[policies]] entry with '
                              f"kind = one of {', '.join(POLICY_KINDS)}")
    policies = tuple(_policy(row, _join("policies", k)) for k, row in enumerate(rows))
    names = [p.name for p in policies]
    dup = sorted({n for k, n in enumerate(names) if n in names[:k]})
    if dup:
        raise ValidationError("policies", f"has the name(s) {dup} more than once",
                              "give each entry a distinct name = \"...\"")
    opts = _table(data, "backtest", "")
    _check_keys(opts, BACKTEST_KEYS, "backtest")
    penalty = _fraction(opts.get("liquidation_penalty", 0.01), "backtest.liquidation_penalty",
                        upper=1.0, upper_open=True)
    spot_fee = (_fraction(opts["spot_fee"], "backtest.spot_fee", upper=1.0, upper_open=True)
                if "spot_fee" in opts else None)
    report = Path(_string(opts.get("report", DEFAULT_REPORT), "backtest.report"))
    png_dir = Path(_string(opts["png_dir"], "backtest.png_dir")) if "png_dir" in opts else None
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


def _pledged(value: Any, book: Book, book_path: Path) -> bool:
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


def _collateral(value: Any) -> dict[str, Any]:
    """[backtest.collateral] (or collateral = true/false) as CollateralPolicy keyword arguments."""
    path = "backtest.collateral"
    if isinstance(value, bool):
        return {} if value else {"enabled": False}
    if not isinstance(value, dict):
        raise ValidationError(path, f"is {value!r}", "give a table [backtest.collateral] with "
                              f"{', '.join(COLLATERAL_KEYS)}, or true / false")
    _check_keys(value, COLLATERAL_KEYS, path)
    out: dict[str, Any] = {}
    if "target_fraction" in value:
        out["target_fraction"] = _fraction(value["target_fraction"], _join(path, "target_fraction"),
                                           upper_open=True)
    if "band" in value:
        out["band"] = _fraction(value["band"], _join(path, "band"), upper=1e6)
    if "width" in value:
        out["width"] = _fraction(value["width"], _join(path, "width"), upper_open=True)
    if "enabled" in value:
        if not isinstance(value["enabled"], bool):
            raise ValidationError(_join(path, "enabled"), f"is {value['enabled']!r}",
                                  "write true or false (no quotes)")
        out["enabled"] = value["enabled"]
    return out


def _resolve(raw: str, base_dir: Path) -> Path:
    p = Path(raw).expanduser()
    return p if p.is_absolute() else base_dir / p


def _int(value: Any, path: str, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValidationError(path, f"is {value!r}", f"give a whole number >= {lo}")
    return int(value)


def _fraction(value: Any, path: str, *, upper: float = 1.0, upper_open: bool = False,
              positive: bool = False) -> float:
    """A fraction (number, "5%" or "50bp") in [0, upper] ((0, ...] with ``positive``)."""
    v = _number(value, path, percent=True)
    low_bad = v <= 0 if positive else v < 0
    high_bad = v >= upper if upper_open else v > upper
    if low_bad or high_bad:
        lo = "0 <" if positive else "0 <="
        hi = "<" if upper_open else "<="
        raise ValidationError(path, f"is {value!r}",
                              f"give a fraction with {lo} value {hi} {upper:g}, e.g. 0.05 or \"5%\"")
    return v


def _period(value: Any, path: str) -> str:
    """A pandas offset such as "7D", "30D" or "8h" (> 0)."""
    if not isinstance(value, str):
        raise ValidationError(path, f"is {value!r}", 'give a period in quotes, e.g. "7D" or "8h"')
    try:
        td = pd.Timedelta(value)
    except (ValueError, TypeError):
        raise ValidationError(path, f"is {value!r}, not a period",
                              'give a period such as "7D", "30D" or "8h"') from None
    if pd.isna(td) or td <= pd.Timedelta(0):
        raise ValidationError(path, f"is {value!r}", 'give a period > 0, e.g. "7D"')
    return value


def _data(table: Mapping[str, Any], base_dir: Path) -> DataSpec:
    """The [data] section."""
    source = table.get("source", "synthetic")
    if not isinstance(source, str) or source.lower() not in DATA_SOURCES:
        raise ValidationError("data.source", f"is {source!r}",
                              f"use one of {', '.join(map(repr, DATA_SOURCES))}")
    source = source.lower()
    if source == "synthetic":
        _check_keys(table, SYNTHETIC_KEYS, "data")
        seed = _int(table.get("seed", DEFAULT_SEED), "data.seed", 0)
        days = _int(table.get("days", DEFAULT_DAYS), "data.days", 2)
        start = _timestamp(table.get("start", DEFAULT_START), "data.start").strftime("%Y-%m-%d")
        return DataSpec("synthetic", seed=seed, days=days, start=start)
    _check_keys(table, DATA_KEYS, "data")
    first = _timestamp(table["start"], "data.start").isoformat() if "start" in table else None
    end = _timestamp(table["end"], "data.end").isoformat() if "end" in table else None
    if first is not None and end is not None and pd.Timestamp(end) <= pd.Timestamp(first):
        raise ValidationError("data.end", f"is {table['end']!r}, not after data.start",
                              "give an end later than the start")
    step = table.get("step", "1d")
    if not isinstance(step, str) or step.lower() not in DATA_STEPS:
        raise ValidationError("data.step", f"is {step!r}",
                              f"use one of {', '.join(map(repr, DATA_STEPS))}")
    if "data_dir" in table:
        d: Path | None = _resolve(_string(table["data_dir"], "data.data_dir"), base_dir)
    else:
        from models.io import default_data_dir

        d = default_data_dir()
        if d is None:
            raise ValidationError("data.data_dir", "is not set and no data folder was found",
                                  'set data_dir = "path/to/shared/data" (relative to this file) '
                                  "or FBR_DATA_DIR")
    if d is None or not d.is_dir():
        raise ValidationError("data.data_dir", f"is {str(d)!r}, which is not a folder",
                              "give the folder that holds spot_1d/ (relative to this file)")
    return DataSpec("data", start=first, end=end, step=step.lower(), data_dir=d)


def _policy(row: Mapping[str, Any], where: str) -> PolicySpec:
    """One [[policies]] entry, validated (the policy object itself is built per run)."""
    if "kind" not in row:
        raise ValidationError(_join(where, "kind"), "is missing",
                              f"give kind = one of {', '.join(POLICY_KINDS)}")
    kind = row["kind"]
    if not isinstance(kind, str) or kind not in POLICY_KINDS:
        raise ValidationError(_join(where, "kind"), f"is {kind!r}, not a known policy kind",
                              f"use one of {', '.join(POLICY_KINDS)}")
    _check_keys(row, ("kind", "name", *POLICY_PARAMS[kind]), where)

    def at(key: str) -> str:
        return _join(where, key)

    params: dict[str, Any] = {}
    if "period" in row:
        params["period"] = _period(row["period"], at("period"))
    for key in ("band", "base_band", "min_band", "max_band"):
        if key in row:
            params[key] = _fraction(row[key], at(key), positive=key != "min_band")
    if kind == "calendar_spot":
        params.setdefault("period", "30D")
    elif kind == "band_spot":
        params.setdefault("band", 0.05)
    elif kind in ("naive_futures", "dca_futures") and "period" not in params and "band" not in params:
        raise ValidationError(where, f"({kind}) has neither a period nor a band",
                              'give period = "7D" and/or band = 0.05')
    elif kind == "vol_band_futures":
        if "base_band" not in params:
            raise ValidationError(at("base_band"), "is missing", "give base_band = 0.05 (a weight)")
        if "ref_vol" in row:
            params["ref_vol"] = _fraction(row["ref_vol"], at("ref_vol"), upper=10.0, positive=True)
        if "window" in row:
            params["window"] = _int(row["window"], at("window"), 2)
        lo, hi = params.get("min_band"), params.get("max_band")
        if lo is not None and hi is not None and lo > hi:
            raise ValidationError(at("min_band"), f"is {lo} > max_band {hi}", "give min_band <= max_band")
    if kind == "edge_band_futures":
        params.update(_edge_params(row, params, at))
    if kind == "dca_futures":
        if "steps" not in row:
            raise ValidationError(at("steps"), "is missing", "give steps = 3 (a whole number >= 1)")
        params["steps"] = _int(row["steps"], at("steps"), 1)
    if kind == "optimized":
        for key in ("gamma_trade", "gamma_fund"):
            if key in row:
                v = _number(row[key], at(key))
                if v < 0:
                    raise ValidationError(at(key), f"is {row[key]!r}", "give a weight >= 0")
                params[key] = v
        if "risk_lookback_days" in row:
            params["risk_lookback_days"] = _int(row["risk_lookback_days"], at("risk_lookback_days"),
                                                MIN_RISK_ROWS)
        if "risk_method" in row:
            from models.risk import RiskMethod

            method = row["risk_method"]
            options = [m.value for m in RiskMethod]
            if not isinstance(method, str) or method.lower() not in options:
                raise ValidationError(at("risk_method"), f"is {method!r}",
                                      f"use one of {', '.join(map(repr, options))}")
            params["risk_method"] = method.lower()
    name = _string(row["name"], at("name")) if "name" in row else _default_name(kind, params)
    return PolicySpec(kind=kind, name=name, params=params, where=where)


def _edge_params(row: Mapping[str, Any], params: Mapping[str, Any],
                 at: Callable[[str], str]) -> dict[str, Any]:
    """inner, scaling and window of an ``edge_band_futures`` entry (band already parsed)."""
    from optimizer.edge_bands import EdgeScaling

    if "band" not in params:
        raise ValidationError(at("band"), "is missing", "give band = 0.05 (a weight)")
    out: dict[str, Any] = {}
    if "inner" in row:
        out["inner"] = _fraction(row["inner"], at("inner"))
    scaling = row.get("scaling", EdgeScaling.UNIFORM.value)
    options = [s.value for s in EdgeScaling]
    if not isinstance(scaling, str) or scaling.lower() not in options:
        raise ValidationError(at("scaling"), f"is {scaling!r}", f"use one of {', '.join(map(repr, options))}")
    if "scaling" in row:
        out["scaling"] = scaling.lower()
    if "window" in row:
        if scaling.lower() != EdgeScaling.VOL:
            raise ValidationError(at("window"), "is set, but scaling is not 'vol'",
                                  'remove window, or set scaling = "vol"')
        out["window"] = _int(row["window"], at("window"), 2)
    return out


def _default_name(kind: str, params: Mapping[str, Any]) -> str:
    parts = [kind]
    for key in ("period", "band", "base_band", "steps", "risk_lookback_days", "scaling", "inner"):
        if key in params:
            v = params[key]
            parts.append(f"{key}={v:g}" if isinstance(v, float) else f"{key}={v}")
    return " ".join(parts)


# ==============================================================================================
# building and running
# ==============================================================================================
def build_path(cfg: BacktestConfig) -> Any:
    """The market path (``scenarios.backtest.MarketPath``) for the book's assets and contracts."""
    from scenarios.market_path import MarketPath

    book = cfg.loaded.book
    spec = cfg.data
    if spec.source == "synthetic":
        from models.synthetic import generate_history

        try:
            hist = generate_history(tuple(book.asset_symbols), days=spec.days,
                                    start=spec.start or DEFAULT_START, seed=spec.seed)
        except ValidationError as exc:
            raise ValidationError(_join("data", exc.field.removeprefix("synthetic.")), exc.problem,
                                  exc.fix) from exc
        return MarketPath.from_synthetic(hist, book.contracts)
    from_data = getattr(MarketPath, "from_data", None)
    if from_data is None:
        raise ValidationError("data.source", "is 'data', but this build's MarketPath has no "
                              "from_data", 'use source = "synthetic" (or update fbr)')
    kwargs: dict[str, Any] = {"start": spec.start, "end": spec.end, "step": spec.step}
    if "assets" in inspect.signature(from_data).parameters:
        kwargs["assets"] = tuple(book.asset_symbols)
    try:
        path = from_data(spec.data_dir, book.contracts, **kwargs)
    except ValidationError as exc:
        raise ValidationError(f"data ({exc.field})", exc.problem, exc.fix) from exc
    return _with_quarterly_marks(path, book.contracts, spec.data_dir)


def _with_quarterly_marks(path: Any, contracts: Sequence[FuturesContract],
                          data_dir: Path | None) -> Any:
    """``path`` with its dated contracts marked by ``scenarios.rolls.with_quarterly_marks`` (real
    quarterly closes where the files have them, the fitted basis term structure elsewhere); the
    path as it is when ``contracts`` has no dated contract. Warns (a note of the run) when an
    underlying has no quarterly file and its marks are modelled on other underlyings' fit."""
    dated = [c for c in contracts if c.kind == ContractKind.DATED]
    if not dated or data_dir is None:
        return path
    import warnings

    from scenarios.rolls import with_quarterly_marks

    try:
        marked, term = with_quarterly_marks(path, contracts, data_dir)
    except ValidationError as exc:
        raise ValidationError(f"data ({exc.field})", exc.problem, exc.fix) from exc
    missing = sorted({c.underlying for c in dated} - set(term.underlyings))
    if missing:
        warnings.warn(f"no quarterly file for {', '.join(missing)} in {data_dir / 'quarterly_1d'}: "
                      f"its dated contracts are marked on the basis term structure fitted to the "
                      f"{', '.join(term.underlyings)} quarterlies", stacklevel=3)
    return marked


class TrailingRisk:
    """risk(t): the book's model until ``MIN_RISK_ROWS`` trailing returns exist, then
    models.risk.estimate_risk on the path's spot returns with timestamps <= t (no look-ahead) over
    the last ``lookback_days``, refreshed every ``RISK_REESTIMATE_DAYS`` days."""

    def __init__(self, fallback: RiskModel, spot: pd.DataFrame, symbols: Sequence[str],
                 lookback_days: int, method: str = "ledoit_wolf") -> None:
        from models.risk import returns_from_prices

        self.fallback = fallback
        self.symbols = list(symbols)
        self.returns = returns_from_prices(spot[self.symbols].astype(float))
        idx = pd.DatetimeIndex(spot.index)
        step_days = (float(pd.Series(idx).diff().dropna().median() / pd.Timedelta(days=1))
                     if len(idx) > 1 else 1.0)
        self.periods_per_year = 365.0 / step_days if step_days > 0 else 365.0
        self.rows = max(2, round(lookback_days / step_days)) if step_days > 0 else lookback_days
        self.method = method
        self.current: RiskModel = fallback
        self.refreshed: pd.Timestamp | None = None
        self.estimates = 0

    def __call__(self, t: pd.Timestamp) -> RiskModel:
        if self.refreshed is not None and t - self.refreshed < pd.Timedelta(days=RISK_REESTIMATE_DAYS):
            return self.current
        past = self.returns.loc[self.returns.index <= t].tail(self.rows)
        if len(past) < MIN_RISK_ROWS:
            return self.fallback
        from models.risk import estimate_risk

        est = estimate_risk(past, self.method, periods_per_year=self.periods_per_year)
        self.current = dataclasses.replace(est.subset(self.symbols), basis_cov=self.fallback.basis_cov)
        self.refreshed = t
        self.estimates += 1
        return self.current


def build_policy(spec: PolicySpec, cfg: BacktestConfig, path: Any) -> Policy:
    """A fresh policy object for ``spec`` (policies with state must not be shared between runs)."""
    from optimizer.baselines import DcaFutures, VolScaledBandFutures
    from optimizer.edge_bands import edge_band_policy
    from optimizer.policies import (
        BandSpotRebalance,
        CalendarSpotRebalance,
        NaiveFutures,
        NoRebalance,
        OptimizedFutures,
    )

    p = dict(spec.params)
    try:
        policy: Policy
        if spec.kind == "no_rebalance":
            policy = NoRebalance()
        elif spec.kind == "calendar_spot":
            policy = CalendarSpotRebalance(period=p["period"])
        elif spec.kind == "band_spot":
            policy = BandSpotRebalance(band=p["band"])
        elif spec.kind == "naive_futures":
            policy = NaiveFutures(period=p.get("period"), band=p.get("band"))
        elif spec.kind == "vol_band_futures":
            policy = VolScaledBandFutures(**p)
        elif spec.kind == "dca_futures":
            policy = DcaFutures(**p)
        elif spec.kind == "edge_band_futures":
            policy = edge_band_policy(**p)
        else:
            policy = OptimizedFutures(*_optimized_inputs(p, cfg, path))
    except ValidationError as exc:
        key = exc.field.removeprefix("policy").lstrip(".")
        raise ValidationError(_join(spec.where, key) if key else spec.where, exc.problem,
                              exc.fix) from exc
    policy.name = spec.name
    return policy


def _utc(t: Any) -> pd.Timestamp:
    ts = pd.Timestamp(t)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def risk_lookahead(cfg: BacktestConfig, path: Any) -> pd.Timestamp | None:
    """T_book, the end of the data the book's risk model was estimated on (its market time), when
    the model is estimated (not given) and T_book is after the path's first step t0; else None
    (no look-ahead: an explicit model, or one estimated on data up to t0 at the latest)."""
    if cfg.loaded.risk.method == "given":
        return None
    t_book = _utc(cfg.loaded.market.time)
    return t_book if t_book > _utc(path.spot.index[0]) else None


def trailing_closes(cfg: BacktestConfig, path: Any) -> pd.DataFrame:
    """Closes (USD) the look-ahead-free risk estimate reads, indexed by close time (UTC), up to the
    path's last step: the data folder's daily closes (history before the path included) for a
    data path, the path's own closes for a synthetic one."""
    if cfg.data.source != "data" or cfg.data.data_dir is None:
        return pd.DataFrame(path.spot)
    from fbr.config_sources import spot_closes

    closes = spot_closes(cfg.data.data_dir, list(cfg.loaded.book.asset_symbols), "data")
    idx = pd.DatetimeIndex(closes.index)
    if idx.tz is None:
        closes.index = idx.tz_localize("UTC")
    return closes.loc[closes.index <= _utc(path.spot.index[-1])]


def _check_trailing_history(closes: pd.DataFrame, t0: pd.Timestamp, t_book: pd.Timestamp) -> None:
    """At least ``MIN_RISK_ROWS`` returns must close at or before t0 (the first estimate's data)."""
    n = max(int((pd.DatetimeIndex(closes.index) <= t0).sum()) - 1, 0)
    if n < MIN_RISK_ROWS:
        raise ValidationError(
            "backtest.risk_model", f"is 'trailing' (the default: no look-ahead), but the book's "
            f"risk model is estimated on data up to {t_book:%Y-%m-%d %H:%M}, after the backtest's "
            f"start {t0:%Y-%m-%d %H:%M}, and only {n} daily returns precede that start "
            f"({MIN_RISK_ROWS} needed for an estimate without look-ahead)",
            f"start the backtest at least {MIN_RISK_ROWS + 1} days after the data begin, give the "
            "book explicit [risk] vols and correlation, or set backtest.risk_model = \"book\" to "
            "use the book's full-sample model (look-ahead, stated in the output and the report)")


def _trailing_method(p: Mapping[str, Any], fallback: RiskModel) -> str:
    """The entry's risk_method, else the book's estimator when it is one estimate_risk knows."""
    from models.risk import RiskMethod

    if "risk_method" in p:
        return str(p["risk_method"])
    return fallback.method if fallback.method in {m.value for m in RiskMethod} else "ledoit_wolf"


def _risk_input(p: Mapping[str, Any], cfg: BacktestConfig, path: Any
                ) -> RiskModel | Callable[[pd.Timestamp], RiskModel]:
    """The optimised policy's risk model (see the module docstring, "Look-ahead"): the book's; a
    :class:`TrailingRisk` on the path's returns (``risk_lookback_days``); or, when the book's
    model would look ahead and ``risk_model = "trailing"``, a TrailingRisk on daily closes that
    start before the path (so its book-model fallback is never reached)."""
    loaded = cfg.loaded
    t_book = risk_lookahead(cfg, path)
    if t_book is None or cfg.risk_model == "book":
        if "risk_lookback_days" not in p:
            return loaded.risk
        return TrailingRisk(loaded.risk, path.spot, loaded.book.asset_symbols,
                            int(p["risk_lookback_days"]), str(p.get("risk_method", "ledoit_wolf")))
    closes = trailing_closes(cfg, path)
    _check_trailing_history(closes, _utc(path.spot.index[0]), t_book)
    return TrailingRisk(loaded.risk, closes, loaded.book.asset_symbols,
                        int(p.get("risk_lookback_days", DEFAULT_TRAILING_DAYS)),
                        _trailing_method(p, loaded.risk))


def dated_mark_labels(cfg: BacktestConfig, path: Any) -> list[str]:
    """One label counting the dated contracts' marks by source on a data path (``build_path``,
    ``MarketPath.mark_source``), over the steps up to each contract's expiry: real Binance
    quarterly closes (some, at sub-daily steps, a close under a day old carried to the step's
    spot) vs modelled on the fitted basis term structure. None for synthetic paths and books
    without dated contracts."""
    source = getattr(path, "mark_source", None)
    if cfg.data.source != "data" or source is None:
        return []
    from scenarios.rolls import MODELLED, REAL, REAL_FFILL
    from scenarios.settlement import expiry_ns

    dated = [c for c in cfg.loaded.book.contracts
             if c.kind == ContractKind.DATED and c.symbol in source.columns]
    if not dated:
        return []
    index = pd.DatetimeIndex(source.index).tz_convert("UTC").as_unit("ns").asi8
    counts: dict[str, int] = {REAL: 0, REAL_FFILL: 0, MODELLED: 0}
    for c in dated:
        expiry = expiry_ns(c)
        live = index <= expiry if expiry is not None else slice(None)
        for label, n in source.loc[live, c.symbol].value_counts().items():
            counts[str(label)] = counts.get(str(label), 0) + int(n)
    real = counts[REAL] + counts[REAL_FFILL]
    carried = (f" ({counts[REAL_FFILL]} of them a close under a day old carried to the step's spot)"
               if counts[REAL_FFILL] else "")
    folder = cfg.data.data_dir / "quarterly_1d" if cfg.data.data_dir is not None else "quarterly_1d"
    return [f"dated contract marks ({', '.join(c.symbol for c in dated)}, steps up to expiry): "
            f"{real} real{carried} from the quarterly closes in {folder}, {counts[MODELLED]} "
            "modelled on the fitted basis term structure"]


def risk_labels(cfg: BacktestConfig, path: Any) -> list[str]:
    """The risk-model label of the built path (shown in the CLI, the JSON and the report): when
    the book's risk model would look ahead, what the optimised policies' risk model is; none
    otherwise. Raises (before any run) when the trailing estimate lacks history before the
    path's start."""
    if not any(spec.kind == "optimized" for spec in cfg.policies):
        return []
    t_book = risk_lookahead(cfg, path)
    if t_book is None:
        return []
    t0 = _utc(path.spot.index[0])
    if cfg.risk_model == "trailing":
        _check_trailing_history(trailing_closes(cfg, path), t0, t_book)
    where = f"estimated on data up to {t_book:%Y-%m-%d}, after the backtest's start {t0:%Y-%m-%d}"
    if cfg.risk_model == "book":
        return [f"LOOK-AHEAD: the optimised policies use the book's full-sample risk model, {where} "
                '(backtest.risk_model = "book")']
    return [f"risk model of the optimised policies: re-estimated without look-ahead every "
            f"{RISK_REESTIMATE_DAYS} days from daily returns up to each refresh (the book's model is "
            f"{where}, so it is not used)"]


def actual_span(path: Any) -> tuple[pd.Timestamp, pd.Timestamp, int]:
    """(first step, last step, number of steps) of the path actually replayed (UTC)."""
    idx = pd.DatetimeIndex(path.spot.index)
    return _utc(idx[0]), _utc(idx[-1]), len(idx)


def span_notes(cfg: BacktestConfig, path: Any) -> list[str]:
    """A note when the data end before ``data.end`` (or begin after ``data.start``) by more than one
    step: the backtest then runs over the shorter span, and says so."""
    if cfg.data.source != "data":
        return []
    first, last, n = actual_span(path)
    idx = pd.DatetimeIndex(path.spot.index)
    step = pd.Series(idx).diff().median() if n > 1 else pd.Timedelta(days=1)
    ran = f"the backtest ran {first:%Y-%m-%d %H:%M} .. {last:%Y-%m-%d %H:%M} UTC ({n} steps)"
    notes = []
    if cfg.data.end is not None and last + step < _utc(cfg.data.end):
        notes.append(f"data.end is {cfg.data.end}, but the data end at {last:%Y-%m-%d %H:%M} UTC: "
                     f"{ran}, shorter than asked")
    if cfg.data.start is not None and first - step > _utc(cfg.data.start):
        notes.append(f"data.start is {cfg.data.start}, but the data (common to every series) begin "
                     f"at {first:%Y-%m-%d %H:%M} UTC: {ran}")
    return notes


def span_dict(cfg: BacktestConfig, path: Any) -> dict[str, Any]:
    """JSON-ready span: the steps actually replayed and the start/end asked for (None: not set)."""
    first, last, n = actual_span(path)
    return {"start": first.isoformat(), "end": last.isoformat(), "steps": n,
            "requested_start": cfg.data.start,
            "requested_end": cfg.data.end if cfg.data.source == "data" else None,
            "shorter_than_requested": bool(span_notes(cfg, path))}


def _optimized_inputs(p: Mapping[str, Any], cfg: BacktestConfig, path: Any
                      ) -> tuple[RiskModel | Callable[[pd.Timestamp], RiskModel], OptimizerSettings]:
    """(risk, settings) of the optimised policy: the book's, with the entry's overrides."""
    loaded = cfg.loaded
    settings = loaded.settings
    if "gamma_trade" in p or "gamma_fund" in p:
        costs = dataclasses.replace(settings.costs,
                                    gamma_trade=float(p.get("gamma_trade", settings.costs.gamma_trade)),
                                    gamma_fund=float(p.get("gamma_fund", settings.costs.gamma_fund)))
        settings = dataclasses.replace(settings, costs=costs)
    return _risk_input(p, cfg, path), settings


def backtest_options(cfg: BacktestConfig) -> dict[str, Any]:
    """Keyword options for scenarios.backtest.run_backtest (``collateral`` only when set, and only
    if this build's run_backtest takes it; otherwise the backtester's default applies;
    ``pledged=True`` only with ``backtest.pledged = true``)."""
    import scenarios.backtest as bt

    opts: dict[str, Any] = {"liquidation_penalty": cfg.liquidation_penalty, "spot_fee": cfg.spot_fee}
    if cfg.pledged:
        opts["pledged"] = True
    if cfg.collateral is not None:
        make = getattr(bt, "CollateralPolicy", None)
        if make is None or "collateral" not in inspect.signature(bt.run_backtest).parameters:
            raise ValidationError("backtest.collateral", "is set, but this build's backtester has "
                                  "no collateral option", "remove it")
        try:
            opts["collateral"] = make(**cfg.collateral)
        except ValidationError as exc:
            raise ValidationError(_join("backtest", exc.field), exc.problem, exc.fix) from exc
    return opts


def run_all(cfg: BacktestConfig, path: Any,
            on_start: Callable[[str, int], Callable[[], None] | None] | None = None) -> dict[str, Any]:
    """Run every policy over ``path``: {name: BacktestResult}, in file order.

    ``on_start(name, n_steps)`` may return a callback called once per step (a progress bar).
    """
    from scenarios.replay import run_backtest

    opts = backtest_options(cfg)
    n = len(path.spot.index)
    results: dict[str, Any] = {}
    for spec in cfg.policies:
        policy = build_policy(spec, cfg, path)
        tick = on_start(spec.name, n) if on_start is not None else None
        if tick is not None:
            policy = Ticking(policy, tick)
        try:
            results[spec.name] = run_backtest(cfg.loaded.book, path, policy, **opts)
        except ValidationError as exc:
            raise ValidationError(exc.field, f"{exc.problem} (policy {spec.name!r})", exc.fix) from exc
    return results


class Ticking(Policy):
    """A policy that calls ``tick()`` after each decision (drives a progress bar)."""

    def __init__(self, inner: Policy, tick: Callable[[], None]) -> None:
        self.inner = inner
        self.tick = tick
        self.name = inner.name

    def __call__(self, book: Book, market: MarketSnapshot, t: pd.Timestamp) -> TargetHoldings:
        out = self.inner(book, market, t)
        self.tick()
        return out


# ==============================================================================================
# before the long work: output paths and the size of the run
# ==============================================================================================
#: CPU seconds per policy step (one decision and one replay step): the optimiser solves a convex
#: problem (a few ms), rule-based policies only do arithmetic. Rough, on the side of caution.
SECONDS_PER_STEP = {"optimized": 5e-3}
SECONDS_PER_STEP_DEFAULT = 3e-4
#: Bytes kept per policy step (the steps frame's float columns and the NAV series).
BYTES_PER_STEP = 400.0
#: Above either limit a run is refused unless --force: 30 CPU-minutes, 4 GB.
MAX_WORK_SECONDS = 1800.0
MAX_WORK_BYTES = 4e9


@dataclass(frozen=True)
class WorkEstimate:
    """The size of a run, estimated before it starts.

    ``policy_steps`` = sum over runs of steps (paths x steps x policy runs for Monte Carlo);
    ``seconds`` = sum of policy_steps x ``SECONDS_PER_STEP`` of the kind (CPU seconds, whatever
    the engine); ``bytes`` held in memory. ``factors`` are (option, value, usual value): the one
    furthest above its usual value is named when the run is refused.
    """

    policy_steps: float
    seconds: float
    bytes: float
    factors: tuple[tuple[str, float, float], ...]

    @property
    def too_big(self) -> bool:
        """Above ``MAX_WORK_SECONDS`` or ``MAX_WORK_BYTES``."""
        return self.seconds > MAX_WORK_SECONDS or self.bytes > MAX_WORK_BYTES

    def describe(self) -> str:
        """``3.6e+09 policy steps, about 5.0 CPU-hours and 58 GB``."""
        secs = self.seconds
        span = (f"{secs / 3600:.1f} CPU-hours" if secs >= 3600 else f"{secs / 60:.1f} CPU-minutes"
                if secs >= 60 else f"{secs:.0f} CPU-seconds")
        return f"{self.policy_steps:.3g} policy steps, about {span} and {self.bytes / 1e9:.2g} GB"

    def check(self, force: bool) -> None:
        """Refuse a run above the limits (naming the option to lower), unless ``force``."""
        if force or not self.too_big:
            return
        name, value, _usual = max(self.factors, key=lambda f: f[1] / f[2])
        sizes = ", ".join(f"{n} {v:.10g}" for n, v, _ in self.factors)
        raise ValidationError(name, f"is {value:.10g}: the run ({sizes}) is {self.describe()}, above "
                              f"the limit of {MAX_WORK_SECONDS / 60:.0f} CPU-minutes or "
                              f"{MAX_WORK_BYTES / 1e9:.0f} GB",
                              f"lower {name}, or pass --force to run it anyway")


def seconds_per_step(kinds: Sequence[str]) -> float:
    """Sum over policy runs of the CPU seconds one step costs."""
    return sum(SECONDS_PER_STEP.get(k, SECONDS_PER_STEP_DEFAULT) for k in kinds)


def estimate_steps(cfg: BacktestConfig) -> float:
    """Steps of the path before it is built: ``days`` (synthetic), else the span asked for (or
    the data folder's whole history, at most to the data's end, 2025-06-30) over the step."""
    spec = cfg.data
    if spec.source == "synthetic":
        return float(spec.days)
    lo = _utc(spec.start) if spec.start else _utc("2017-01-01")
    now = _utc(pd.Timestamp.now(tz="UTC"))
    hi = min(_utc(spec.end), now) if spec.end else now  # no data after today
    step = {"1d": pd.Timedelta(days=1), "8h": pd.Timedelta(hours=8),
            "4h": pd.Timedelta(hours=4)}.get(spec.step, pd.Timedelta(days=1))
    return max((hi - lo) / step, 1.0)


def estimate_backtest(cfg: BacktestConfig) -> WorkEstimate:
    """Every policy over the one path: steps x policies (the path's history counted too)."""
    steps = estimate_steps(cfg)
    kinds = [p.kind for p in cfg.policies]
    n_cols = len(cfg.loaded.book.asset_symbols) + 2 * len(cfg.loaded.book.contracts)
    factors = (("data.days" if cfg.data.source == "synthetic" else "data.end", steps, DEFAULT_DAYS),
               ("policies", float(len(kinds)), 6.0))
    return WorkEstimate(policy_steps=steps * len(kinds), seconds=steps * seconds_per_step(kinds),
                        bytes=steps * (len(kinds) * BYTES_PER_STEP + 8.0 * 4 * n_cols),
                        factors=factors)


def check_output_file(path: Path | None, field_name: str) -> None:
    """Fail now, not after the run, when ``path`` cannot be written as a file: it is a folder,
    a parent is a file, or the nearest existing folder is not writable."""
    if path is None:
        return
    fix = f"give a file path such as out/report.html to {field_name}"
    if path.is_dir():
        raise ValidationError(field_name, f"is {str(path)!r}, which is a folder",
                              f"{fix} (e.g. {path / 'report.html'})")
    _check_writable_parent(path, field_name, fix)
    if path.exists() and not _writable(path):
        raise ValidationError(field_name, f"is {str(path)!r}, which is not writable",
                              f"{fix}, or make the file writable")


def check_output_dir(path: Path | None, field_name: str) -> None:
    """Like :func:`check_output_file` for a folder to write into (``png_dir``)."""
    if path is None:
        return
    fix = f"give a folder path to {field_name}"
    if path.exists() and not path.is_dir():
        raise ValidationError(field_name, f"is {str(path)!r}, which is a file", fix)
    _check_writable_parent(path / "x", field_name, fix)


def _writable(path: Path) -> bool:
    import os

    return os.access(path, os.W_OK)


def _check_writable_parent(path: Path, field_name: str, fix: str) -> None:
    """The nearest existing ancestor of ``path`` must be a writable folder."""
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise ValidationError(field_name, f"is {str(path)!r}, but {parent} is a file, not a folder",
                              fix)
    if parent.exists() and not _writable(parent):
        raise ValidationError(field_name, f"is {str(path)!r}, but the folder {parent} is not "
                              "writable", fix)


def is_timing(key: str) -> bool:
    """Wall-clock measurements (e.g. solve_time_median_ms): they differ from run to run."""
    return "time" in key and key.endswith(("_ms", "_s"))


def metrics_dict(result: Any) -> dict[str, Any]:
    """scenarios.metrics.compute_metrics as a JSON-ready dict (nan/inf become None)."""
    from scenarios.metrics import compute_metrics

    m = compute_metrics(result)
    raw = dataclasses.asdict(m) if dataclasses.is_dataclass(m) else dict(vars(m))
    out: dict[str, Any] = {}
    for k, v in raw.items():
        if isinstance(v, float) and not math.isfinite(v):
            out[k] = None
        elif isinstance(v, bool | int | float | str) or v is None:
            out[k] = v
        else:
            try:
                out[k] = float(v)
            except (TypeError, ValueError):
                out[k] = str(v)
    return out


__all__ = ["BacktestConfig", "DataSpec", "PolicySpec", "WorkEstimate", "actual_span", "build_path",
           "build_policy", "check_output_dir", "check_output_file", "dated_mark_labels",
           "estimate_backtest",
           "is_timing", "load_backtest_file", "metrics_dict", "risk_labels", "risk_lookahead",
           "run_all", "span_dict", "span_notes"]
