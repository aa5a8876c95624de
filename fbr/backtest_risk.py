"""The optimised policies' risk model in a backtest, and its look-ahead.

Look-ahead of the book's risk model: a book whose [risk] is *estimated* (source "data" or
"synthetic") is estimated on returns up to its market time T_book. When the path starts at
t0 < T_book, using that model from t0 on would use returns from (t0, T_book]. So by default
(``risk_model = "trailing"``) the optimised policies then re-estimate the book's model themselves
at each refresh t (every ``RISK_REESTIMATE_DAYS`` of models.trailing_risk) from daily returns with
close time <= t only, with the book's estimator (``LoadedBook.risk_estimator``: its [risk] method,
halflife in days, n_factors) over the trailing ``risk_lookback_days`` (default: the book's
``lookback_days``), so at t = T_book, on the book's own data, the estimate is the book's model.
For a data path these are the data folder's daily closes, the history before t0 included (at
least ``MIN_RISK_ROWS`` returns must precede t0, else the file is refused); for a synthetic path,
the path's own returns (so the path must not start before the book's estimate ends: refused
otherwise). The basis risk, when the book's was estimated from the data folder too
(fbr.config_basis), is re-estimated with it from the folder's marks up to t, over the same
window. ``risk_model = "book"`` uses the book's full-sample model as it is; the CLI output, the
JSON and the HTML report then say "LOOK-AHEAD". An explicit risk model (vols + correlation in the
book) is used as given.

An entry's ``risk_lookback_days`` (days) asks for a trailing estimate on the path's own returns
(at the path's step) where the book's model would be used as it is, and sets the window of the
default one. Every trailing estimate uses the book's estimator (:func:`trailing_estimator`;
``ledoit_wolf`` with a 30-day half-life, over ``DEFAULT_TRAILING_DAYS`` when no window is set,
when the book's model is given); an entry's ``risk_method`` overrides the method.

Times are UTC; closes are USD; the estimate is :class:`models.trailing_risk.TrailingRisk`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from datetime import date, datetime
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from fbr.backtest_config import BacktestConfig
from fbr.backtest_policies import PolicyParam
from models.errors import ValidationError
from models.risk import RiskModel
from models.trailing_risk import MIN_RISK_ROWS, RiskEstimator, TrailingRisk
from optimizer.settings import OptimizerSettings

if TYPE_CHECKING:
    from scenarios.market_path import MarketPath

#: Trailing window (days) of a re-estimate of a given (explicit) risk model without
#: risk_lookback_days; an estimated model's is the book's [risk] lookback_days.
DEFAULT_TRAILING_DAYS = 365
#: A risk input of the optimised policy: a fixed model, or one per decision time.
RiskInput = RiskModel | Callable[[pd.Timestamp], RiskModel]


def utc(t: pd.Timestamp | datetime | date | str) -> pd.Timestamp:
    """``t`` as a tz-aware UTC timestamp (naive times are read as UTC)."""
    ts = pd.Timestamp(t)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def risk_lookahead(cfg: BacktestConfig, path: MarketPath) -> pd.Timestamp | None:
    """T_book, the end of the data the book's risk model was estimated on (its market time), when
    the model is estimated (not given) and T_book is after the path's first step t0; else None
    (no look-ahead: an explicit model, or one estimated on data up to t0 at the latest)."""
    if cfg.loaded.risk.method == "given":
        return None
    t_book = utc(cfg.loaded.market.time)
    return t_book if t_book > utc(path.spot.index[0]) else None


def trailing_closes(cfg: BacktestConfig, path: MarketPath) -> pd.DataFrame:
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
    return closes.loc[closes.index <= utc(path.spot.index[-1])]


def check_trailing_history(closes: pd.DataFrame, t0: pd.Timestamp, t_book: pd.Timestamp) -> None:
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


def trailing_estimator(p: Mapping[str, PolicyParam], cfg: BacktestConfig) -> RiskEstimator:
    """The entry's trailing estimator: the book's (``LoadedBook.risk_estimator``, its [risk]
    method, lookback_days, halflife and n_factors as loaded; for a given model ``ledoit_wolf`` over
    ``DEFAULT_TRAILING_DAYS``), its ``risk_lookback_days`` and ``risk_method`` overriding the
    window and the method."""
    book = cfg.loaded.risk_estimator or RiskEstimator("ledoit_wolf", DEFAULT_TRAILING_DAYS)
    return dataclasses.replace(book, method=str(p.get("risk_method", book.method)),
                               lookback_days=int(p.get("risk_lookback_days", book.lookback_days)))


def check_risk_method(p: Mapping[str, PolicyParam], t_book: pd.Timestamp | None) -> None:
    """Refuse ``risk_method`` where :func:`risk_input` would not read it: no
    ``risk_lookback_days`` and the book's model used as it is (``t_book`` None: the model is given,
    or estimated on data up to the path's start at the latest; else ``risk_model = "book"``).
    The field is ``policy.risk_method`` (``build_policy`` names the entry: policies[k])."""
    if "risk_method" not in p:
        return
    why = ("the book's risk model is used as it is (given, or estimated before the path's start)"
           if t_book is None else 'backtest.risk_model = "book" uses the book\'s risk model as it is')
    raise ValidationError("policy.risk_method",
                          f"is {p['risk_method']!r} without risk_lookback_days, and {why}: "
                          "risk_method would be ignored",
                          "add risk_lookback_days = 90, or remove risk_method")


def risk_input(p: Mapping[str, PolicyParam], cfg: BacktestConfig, path: MarketPath) -> RiskInput:
    """The optimised policy's risk model (see the module docstring): the book's; a
    :class:`TrailingRisk` on the path's returns (``risk_lookback_days``); or, when the book's
    model would look ahead and ``risk_model = "trailing"``, a TrailingRisk on daily closes that
    start before the path (so its book-model fallback is never reached). Both re-estimate with
    :func:`trailing_estimator`. ``risk_method`` where it would be ignored is refused
    (:func:`check_risk_method`)."""
    loaded = cfg.loaded
    t_book = risk_lookahead(cfg, path)
    if (t_book is None or cfg.risk_model == "book") and "risk_lookback_days" not in p:
        check_risk_method(p, t_book)
        return loaded.risk
    est = trailing_estimator(p, cfg)
    closes, basis = path.spot, None
    if t_book is not None and cfg.risk_model != "book":
        closes = trailing_closes(cfg, path)
        check_trailing_history(closes, utc(path.spot.index[0]), t_book)
        basis = trailing_basis(cfg, est.lookback_days)
    return TrailingRisk(loaded.risk, closes, loaded.book.asset_symbols, est.lookback_days,
                        est.method, basis, halflife_days=est.halflife_days, n_factors=est.n_factors)


def trailing_basis(cfg: BacktestConfig, lookback: int) -> Callable[[pd.Timestamp], np.ndarray] | None:
    """basis(t), the basis covariance re-estimated from the data folder's marks up to t over
    ``lookback`` days (fbr.config_basis), when the book's was estimated (on data up to its market
    time, after the path's start); None otherwise (a given basis, or none, is kept as it is)."""
    if (cfg.loaded.risk.basis_method != "estimated" or cfg.data.source != "data"
            or cfg.data.data_dir is None):
        return None
    from fbr.config_basis import BasisHistory

    history = BasisHistory.load(cfg.loaded.book, cfg.data.data_dir)
    return lambda t: history.estimate(utc(t), lookback).cov


def optimized_inputs(p: Mapping[str, PolicyParam], cfg: BacktestConfig, path: MarketPath
                     ) -> tuple[RiskInput, OptimizerSettings]:
    """(risk, settings) of the optimised policy: the book's, with the entry's overrides of
    [costs] (gamma_trade, gamma_fund, cost_to_go, cost_to_go_power) and of [solver] horizon."""
    settings = cfg.loaded.settings
    c = settings.costs

    def value(key: str, default: float) -> float:
        return float(p.get(key, default))

    costs = dataclasses.replace(c, gamma_trade=value("gamma_trade", c.gamma_trade),
                                gamma_fund=value("gamma_fund", c.gamma_fund),
                                cost_to_go=value("cost_to_go", c.cost_to_go),
                                cost_to_go_power=value("cost_to_go_power", c.cost_to_go_power))
    if "cost_to_go_power" in p and not costs.cost_to_go > 0.0:
        raise ValidationError("policy.cost_to_go_power", "is set but cost_to_go is 0 (in the "
                              "entry and the book's [costs]), so it would be ignored",
                              "set cost_to_go (a multiple of TE^2, e.g. 30), or remove the key")
    horizon = int(p.get("horizon", settings.horizon))
    settings = dataclasses.replace(settings, costs=costs, horizon=horizon)
    return risk_input(p, cfg, path), settings
