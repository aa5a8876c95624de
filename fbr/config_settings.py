"""Book-file optimiser settings: [costs], [constraints] and [solver] as OptimizerSettings (with
the spot leg's [solver] spot_leg, [tax] and [[lots]] parsed by fbr.config_tax).

Constraints include stress scenarios ([[constraints.stress]]: simple asset returns, each > -1) and
cluster bands ([[constraints.clusters]]: |sum of (e_i - w*_i)| <= band, in weights). Money in USD;
fractions accept "30%" / "5bp". ``constraints.min_days_to_expiry`` (days, default 2) is read by the
order planner: a dated contract is not opened or increased that close to its expiry.
``constraints.stress_preset = "each_and_all"`` adds each asset alone and all together
+-``stress_preset_move`` (default 40%); ``constraints.size_reserve = true`` reports the smallest
stablecoin reserve keeping every stress row solvent and its cost at ``costs.reserve_yield`` (4%/yr);
``costs.reserve_cost = true`` also prices that reserve in the objective (optimizer.reserve_term);
``costs.cost_to_go`` (kappa) and ``costs.cost_to_go_power`` (p) add the quadratic cost-to-go
kappa (e - w*)' Q_p (e - w*) (optimizer.terms.CostToGo).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from typing import Any

from fbr.config_tax import SPOT_SOLVER_KEYS, parse_spot_leg
from fbr.config_values import (
    Table,
    boolean,
    check_keys,
    choice,
    in_range,
    known,
    nonneg,
    number,
    optional,
    positive,
    string,
    sub_table,
    symbol_map,
    table_array,
    usd_limit,
    weight,
)
from models.book import Book
from models.bounds import MAX_HORIZON_DAYS
from models.errors import ValidationError
from optimizer.settings import (
    ClusterBand,
    ConstraintSettings,
    CostSettings,
    FundingForecastRule,
    OptimizerSettings,
    SolverName,
    StressScenario,
    check_horizon,
)

COST_KEYS = tuple(f.name for f in dataclasses.fields(CostSettings))
CONSTRAINT_KEYS = tuple(f.name for f in dataclasses.fields(ConstraintSettings))
STRESS_KEYS = ("name", "returns", "common")
CLUSTER_KEYS = ("name", "assets", "band")
SOLVER_KEYS = ("solvers", "objective_scale", "round_lots", "noise_trade_weight", "noise_objective",
               "noise_objective_flat", "horizon", *SPOT_SOLVER_KEYS)


def parse_settings(data: Mapping[str, object], risk_table: Table, book: Book) -> OptimizerSettings:
    """[costs], [constraints], [solver] and risk.basis_risk as OptimizerSettings."""
    solver = sub_table(data, "solver", "")
    check_keys(solver, SOLVER_KEYS, "solver")
    kwargs: dict[str, Any] = {
        "costs": _costs(sub_table(data, "costs", "")),
        "constraints": _constraints(sub_table(data, "constraints", ""), book),
    }
    cons = kwargs["constraints"]
    if kwargs["costs"].reserve_cost and not cons.stress and cons.stress_preset is None:
        raise ValidationError("costs.reserve_cost", "is true but no stress scenario is given",
                              'add [[constraints.stress]] rows or stress_preset = "each_and_all"')
    if "basis_risk" in risk_table:
        kwargs["basis_risk"] = boolean(risk_table["basis_risk"], "risk.basis_risk")
    if "solvers" in solver:
        kwargs["solvers"] = _solvers(solver["solvers"])
    if "objective_scale" in solver:
        kwargs["objective_scale"] = positive(solver["objective_scale"], "solver.objective_scale")
    if "round_lots" in solver:
        kwargs["round_lots"] = boolean(solver["round_lots"], "solver.round_lots")
    for key in ("noise_trade_weight", "noise_objective", "noise_objective_flat"):
        if key in solver:
            kwargs[key] = nonneg(solver[key], f"solver.{key}")
    # the spot leg: [solver] spot_leg, [tax], [[lots]] (fbr.config_tax); off unless asked for
    kwargs["spot"] = parse_spot_leg(data, solver, book)
    if "horizon" in solver:
        kwargs["horizon"] = check_horizon(solver["horizon"])
    settings = OptimizerSettings(**kwargs)
    warn_last_forecast(settings)
    return settings


def warn_last_forecast(settings: OptimizerSettings) -> None:
    """One warning when the spot leg prices carry with the "last" funding forecast over a horizon
    longer than a day: the latest settlement's rate is then held for every settlement of the
    horizon, a forecast worse than the EWMA's past a day on Binance data (benchmarks/results/
    funding_forecast.md, 21 settlements), and with spot and perpetuals both open to it the
    optimiser moves exposure between them on one settlement's noise."""
    costs = settings.costs
    if not (settings.spot.enabled and costs.carry and costs.funding_forecast == FundingForecastRule.LAST
            and costs.horizon_days > 1.0):
        return
    warnings.warn(f"costs.funding_forecast is \"last\" with the spot leg on and horizon_days = "
                  f"{costs.horizon_days:g}: one settlement's funding rate is assumed for the whole "
                  f"horizon, so spot and perpetual exposures can be swapped on its noise (churn); "
                  f"set funding_forecast = \"ewma\" in [costs] (see benchmarks/results/"
                  f"funding_forecast.md)", stacklevel=2)


def _solvers(value: object) -> tuple[SolverName, ...]:
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
    check_keys(table, COST_KEYS, "costs")
    kwargs: dict[str, Any] = {}
    for key in ("trading", "impact", "carry", "reserve_cost"):
        if key in table:
            kwargs[key] = boolean(table[key], f"costs.{key}")
    for key in ("impact_k", "gamma_trade", "gamma_fund"):
        if key in table:
            kwargs[key] = weight(table[key], f"costs.{key}")
    if "horizon_days" in table:
        kwargs["horizon_days"] = positive(table["horizon_days"], "costs.horizon_days")
        if kwargs["horizon_days"] > MAX_HORIZON_DAYS:
            raise ValidationError("costs.horizon_days", f"is {table['horizon_days']!r}",
                                  f"give the carry horizon in days, at most {MAX_HORIZON_DAYS:,} "
                                  "(ten years; the default is 1)")
    if "reserve_yield" in table:
        kwargs["reserve_yield"] = nonneg(table["reserve_yield"], "costs.reserve_yield", percent=True)
    kwargs.update(_funding_forecast(table))
    kwargs.update(cost_to_go_keys(table))
    return CostSettings(**kwargs)


def cost_to_go_keys(table: Mapping[str, object], where: str = "costs", *,
                    pair: bool = True) -> dict[str, float]:
    """[costs] (or ``where``'s) cost_to_go (kappa >= 0, a multiple of TE^2; 0 = off) and
    cost_to_go_power (p in [0, 1]) of the quadratic cost-to-go kappa (e - w*)' Q_p (e - w*)
    (optimizer.terms.CostToGo). With ``pair``, a power given without a kappa > 0 beside it would
    be ignored: refused, as the EWMA keys are (a backtest entry's kappa may come from its book:
    checked when the policy is built, fbr.backtest_risk.optimized_inputs)."""
    out: dict[str, float] = {}
    if "cost_to_go" in table:
        out["cost_to_go"] = weight(table["cost_to_go"], f"{where}.cost_to_go")
    if "cost_to_go_power" in table:
        out["cost_to_go_power"] = in_range(table["cost_to_go_power"], f"{where}.cost_to_go_power",
                                           0.0, 1.0)
        if pair and not out.get("cost_to_go", 0.0) > 0.0:
            raise ValidationError(f"{where}.cost_to_go_power",
                                  f"is set but {where}.cost_to_go is 0, so it would be ignored",
                                  "set cost_to_go (a multiple of TE^2, e.g. 30), or remove the key")
    return out


#: [costs] keys of the EWMA funding forecaster (meaningful only with funding_forecast = "ewma")
FORECAST_KEYS = ("funding_half_life", "funding_reversion_half_life", "funding_long_run_rate")


def _funding_forecast(table: Table) -> dict[str, float | FundingForecastRule]:
    """[costs] funding_forecast ("last" default, or "ewma") and the EWMA forecaster's half-lives
    (settlements, > 0) and long-run level (fraction per settlement in (-1, 1), "0.01%" allowed)."""
    out: dict[str, float | FundingForecastRule] = {}
    if "funding_forecast" in table:
        out["funding_forecast"] = choice(table["funding_forecast"], "costs.funding_forecast",
                                         [r.value for r in FundingForecastRule], FundingForecastRule)
    given = [k for k in FORECAST_KEYS if k in table]
    if given and out.get("funding_forecast") != FundingForecastRule.EWMA:
        raise ValidationError(f"costs.{given[0]}", "is set but costs.funding_forecast is not "
                              '"ewma", so it would be ignored',
                              'add funding_forecast = "ewma" to [costs], or remove the key')
    for key in ("funding_half_life", "funding_reversion_half_life"):
        if key in table:
            out[key] = _half_life(table[key], f"costs.{key}")
    if "funding_long_run_rate" in table:
        mu = number(table["funding_long_run_rate"], "costs.funding_long_run_rate", percent=True)
        if not abs(mu) < 1:
            raise ValidationError("costs.funding_long_run_rate", f"is {table['funding_long_run_rate']!r}",
                                  "give the long-run funding rate per 8 h settlement as a fraction "
                                  'in (-1, 1), e.g. 0.0001 or "0.01%" (Binance\'s interest part)')
        out["funding_long_run_rate"] = mu
    return out


def _half_life(value: object, path: str) -> float:
    """A half-life in settlements, > 0 (inf allowed for the reversion: no shrinkage)."""
    v = number(value, path, allow_inf=path.endswith("reversion_half_life"))
    if not v > 0:
        raise ValidationError(path, f"is {value!r}",
                              "give a half-life > 0 in funding settlements (e.g. 21: one week at 8 h)")
    return v


def _positive_usd(value: object, path: str) -> float:
    """A USD limit > 0 (a cap, a trade limit): :func:`fbr.config_values.usd_limit`."""
    return usd_limit(value, path, strict=True)


def _constraints(table: Table, book: Book) -> ConstraintSettings:
    """[constraints]: each limit is off unless given."""
    check_keys(table, CONSTRAINT_KEYS, "constraints")
    p = "constraints"
    kwargs: dict[str, Any] = {
        "margin_buffer_usd": usd_limit(table.get("margin_buffer_usd", 0.0),
                                       f"{p}.margin_buffer_usd"),
        "margin_buffer_fraction": _fraction_below_one(table.get("margin_buffer_fraction", 0.0),
                                                      f"{p}.margin_buffer_fraction"),
        "max_gross_leverage": optional(table, "max_gross_leverage", p, positive),
        "default_cap_usd": optional(table, "default_cap_usd", p, _positive_usd),
        "vol_cap": optional(table, "vol_cap", p, lambda v, q: positive(v, q, percent=True)),
        "rho_min": optional(table, "rho_min", p, lambda v, q: in_range(v, q, -1.0, 1.0)),
        "funding_budget_usd": optional(table, "funding_budget_usd", p,
                                       lambda v, q: usd_limit(v, q, signed=True)),
        "trade_limit_adv": optional(table, "trade_limit_adv", p,
                                    lambda v, q: positive(v, q, percent=True)),
        "trade_limit_usd": optional(table, "trade_limit_usd", p, _positive_usd),
        "caps_usd": _caps(sub_table(table, "caps_usd", p), book),
        "stress": tuple(_stress(row, k, book) for k, row in enumerate(table_array(table, "stress", p))),
        "clusters": tuple(_cluster(row, k, book)
                          for k, row in enumerate(table_array(table, "clusters", p))),
    }
    if "margin" in table:
        kwargs["margin"] = boolean(table["margin"], f"{p}.margin")
    if "margin_hysteresis" in table:
        kwargs["margin_hysteresis"] = boolean(table["margin_hysteresis"], f"{p}.margin_hysteresis")
    if "min_days_to_expiry" in table:
        kwargs["min_days_to_expiry"] = _days(table["min_days_to_expiry"],
                                             f"{p}.min_days_to_expiry")
    if "expiry_row" in table:
        kwargs["expiry_row"] = boolean(table["expiry_row"], f"{p}.expiry_row")
    kwargs.update(_reserve_and_preset(table, bool(kwargs["stress"])))
    return ConstraintSettings(**kwargs)


#: the stress presets [constraints] stress_preset accepts (optimizer.reserve.preset_scenarios)
STRESS_PRESETS = ("each_and_all",)


def _reserve_and_preset(table: Table, listed: bool) -> dict[str, str | float | bool]:
    """[constraints] size_reserve (bool), stress_preset ("each_and_all") and stress_preset_move (a
    move in (0, 1), "40%" allowed; default 0.4). Sizing the reserve needs some stress scenario."""
    p = "constraints"
    out: dict[str, str | float | bool] = {}
    if "stress_preset" in table:
        out["stress_preset"] = choice(table["stress_preset"], f"{p}.stress_preset", STRESS_PRESETS, str)
    if "stress_preset_move" in table:
        if "stress_preset" not in out:
            raise ValidationError(f"{p}.stress_preset_move", "is set but constraints.stress_preset "
                                  "is not, so it would be ignored",
                                  'add stress_preset = "each_and_all" to [constraints], or remove the key')
        move = number(table["stress_preset_move"], f"{p}.stress_preset_move", percent=True)
        if not 0 < move < 1:
            raise ValidationError(f"{p}.stress_preset_move", f"is {table['stress_preset_move']!r}",
                                  'give a move in (0, 1), e.g. 0.4 or "40%"')
        out["stress_preset_move"] = move
    if "size_reserve" in table:
        out["size_reserve"] = boolean(table["size_reserve"], f"{p}.size_reserve")
        if out["size_reserve"] and not listed and "stress_preset" not in out:
            raise ValidationError(f"{p}.size_reserve", "is true but no stress scenario is given",
                                  'add [[constraints.stress]] rows or stress_preset = "each_and_all"')
    return out


def _days(value: object, path: str) -> float:
    """A number of days in [0, 366] (0: only expired contracts are refused)."""
    v = nonneg(value, path)
    if v > 366:
        raise ValidationError(path, f"is {value!r} days",
                              "give the days before expiry within which a dated contract is no "
                              "longer opened, between 0 and 366 (e.g. 2)")
    return v


def _fraction_below_one(value: object, path: str) -> float:
    """A fraction in [0, 1) ("20%" allowed)."""
    v = number(value, path, percent=True)
    if not 0.0 <= v < 1.0:
        raise ValidationError(path, f"is {value!r}", 'give a fraction in [0, 1), e.g. 0.2 or "20%"')
    return v


def _caps(table: Table, book: Book) -> dict[str, float]:
    """constraints.caps_usd: |x_j| <= cap (USD) by contract symbol; 0 keeps the contract unused
    (a position held in it is closed)."""
    for sym, v in table.items():
        known(sym, book.contract_symbols, f"constraints.caps_usd.{sym}", "a contract", v)
    return symbol_map(table, "constraints.caps_usd", usd_limit)


def _stress(row: Table, k: int, book: Book) -> StressScenario:
    """One [[constraints.stress]]: asset returns (each > -1); others move by ``common``."""
    p = f"constraints.stress[{k}]"
    check_keys(row, STRESS_KEYS, p)
    name = string(row.get("name", f"stress {k + 1}"), f"{p}.name")
    rets = sub_table(row, "returns", p)
    for sym, v in rets.items():
        known(sym, book.asset_symbols, f"{p}.returns.{sym}", "an asset of the book", v)
    returns = symbol_map(rets, f"{p}.returns", _shock)
    common = _shock(row.get("common", 0.0), f"{p}.common")
    if not returns and common == 0.0:
        raise ValidationError(p, "moves no asset",
                              'give returns = {BTC = "-30%"} or common = "-30%"')
    return StressScenario(name, returns, common)


def _shock(value: object, path: str) -> float:
    """A simple return > -1 ("-30%" allowed)."""
    v = number(value, path, percent=True)
    if v <= -1:
        raise ValidationError(path, f"is {value!r}", 'give a return above -100%, e.g. "-30%"')
    return v


def _cluster(row: Table, k: int, book: Book) -> ClusterBand:
    """One [[constraints.clusters]]: |sum over assets of (e_i - w*_i)| <= band (weights)."""
    p = f"constraints.clusters[{k}]"
    check_keys(row, CLUSTER_KEYS, p)
    name = string(row.get("name", f"cluster {k + 1}"), f"{p}.name")
    assets = row.get("assets")
    if not isinstance(assets, list) or not assets or not all(isinstance(a, str) for a in assets):
        raise ValidationError(f"{p}.assets", f"is {assets!r}", 'give a list, e.g. ["SOL", "AVAX"]')
    for a in assets:
        known(a, book.asset_symbols, f"{p}.assets", "an asset of the book")
    if "band" not in row:
        raise ValidationError(f"{p}.band", "is missing", 'give the band as a weight, e.g. "1%"')
    band = nonneg(row["band"], f"{p}.band", percent=True)
    return ClusterBand(name, tuple(assets), band)
