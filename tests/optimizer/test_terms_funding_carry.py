"""The optimiser's funding carry with an optional forecast (issue 11, item 5).

``MarketSnapshot.funding_forecast`` (expected mean rate per settlement over the cost horizon, per
perpetual) replaces the current rate in ``optimizer.carry._carry_per_horizon`` when given; absent,
every number is what it was. Checked here: the example book files solve to the same carry
Parameter values and positions with no forecast, an explicitly empty one and one equal to the
current rates; the carry equals H x forecast x notional by hand; a perpetual with a high forecast
makes the optimiser shrink a long hedge, by the closed-form amount; the problem stays DPP and is
compiled once; the [costs] settings parse and refuse bad values clearly.
"""

from __future__ import annotations

import copy
import json
import math
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fbr.config import load_book_file, parse_book
from models.errors import ValidationError
from models.funding_forecast import DEFAULT_LONG_RUN_RATE, EwmaShrinkForecaster
from models.instruments import ContractKind
from models.market import MarketSnapshot
from optimizer.prepare import prepare
from optimizer.problem import HedgeProblem
from optimizer.rebalance import Rebalancer, solve_rebalance
from optimizer.settings import (
    FUNDING_HALF_LIFE,
    FUNDING_LONG_RUN_RATE,
    FUNDING_REVERSION_HALF_LIFE,
    CostSettings,
    FundingForecastRule,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
#: the example TOML files that are book files (``fbr solve`` reads them)
BOOK_FILES = ("seed_example_1", "seed_example_2", "ten_assets", "backtest_book")


def _old_carry(loaded: Any) -> np.ndarray:
    """HEAD's formula, written out: current funding rate x settlements in the horizon (perps),
    basis x horizon / max(days to expiry, horizon) (dated)."""
    book, market, h = loaded.book, loaded.market, loaded.settings.costs.horizon_days
    out = np.zeros(len(book.contracts))
    for j, c in enumerate(book.contracts):
        if c.kind == ContractKind.PERPETUAL:
            out[j] = market.funding_rate(c.symbol) * h * 24.0 / c.funding_interval_h
        else:
            basis = market.mark_price(c.symbol) / market.spot_price(c.underlying) - 1.0
            days = max((c.expiry.timestamp() - market.time.timestamp()) / 86400.0, h)
            out[j] = basis * h / days
    return out


def _solution_json(loaded: Any, market: MarketSnapshot) -> str:
    sol = solve_rebalance(loaded.book, market, loaded.risk, loaded.settings)
    d: dict[str, object] = dict(sol.to_dict())
    for key in ("solve_time_ms", "total_time_ms"):
        d.pop(key, None)
    return json.dumps(d, indent=2)


def test_settings_defaults_are_the_forecasters() -> None:
    fc = EwmaShrinkForecaster()
    repeated = (FUNDING_HALF_LIFE, FUNDING_REVERSION_HALF_LIFE, FUNDING_LONG_RUN_RATE)
    assert repeated == (fc.half_life, fc.reversion_half_life, DEFAULT_LONG_RUN_RATE)
    cs = CostSettings()
    assert cs.funding_forecast == "last"  # a StrEnum: equal to its config string
    assert cs.funding_forecast == FundingForecastRule.LAST
    assert (cs.funding_half_life, cs.funding_reversion_half_life, cs.funding_long_run_rate) == (
        fc.half_life, fc.reversion_half_life, fc.long_run_rate)


@pytest.mark.parametrize("name", BOOK_FILES)
def test_examples_unchanged_without_a_forecast(name: str) -> None:
    """No forecast (the default), an empty one, and a forecast equal to the current rates give
    HEAD's carry values bit for bit, and the same `fbr solve --json` answer (timings aside)."""
    loaded = load_book_file(EXAMPLES / f"{name}.toml")
    assert loaded.market.funding_forecast == {}
    assert loaded.settings.costs.funding_forecast == FundingForecastRule.LAST
    base = prepare(loaded.book, loaded.market, loaded.risk, loaded.settings)
    np.testing.assert_array_equal(base.carry, _old_carry(loaded))
    same = {c.symbol: loaded.market.funding_rate(c.symbol) for c in loaded.book.contracts
            if c.kind == ContractKind.PERPETUAL}
    ref = _solution_json(loaded, loaded.market)
    for market in (replace(loaded.market, funding_forecast={}),
                   replace(loaded.market, funding_forecast=same)):
        d = prepare(loaded.book, market, loaded.risk, loaded.settings)
        np.testing.assert_array_equal(d.carry, base.carry)
        assert _solution_json(loaded, market) == ref


# --- a hand-made one-asset book -------------------------------------------------------------------

SIGMA = 0.55
HORIZON_DAYS = 30.0


def _doc(*, rate: float = 1e-4, interval_h: float = 8.0) -> dict[str, Any]:
    """$6,000 of BTC and $4,000 cash, target 100% BTC of NAV: the naive hedge is a $4,000 long.
    Only TE and carry in the objective, no constraint, no rounding."""
    return {
        "book": {"name": "carry", "cash": 4000.0, "targets_base": "nav"},
        "targets": {"BTC": 1.0},
        "spot": {"BTC": 0.1},
        "contract_defaults": {"lot_step": 1e-8, "min_notional": 0.0, "leverage": 10.0,
                              "funding_interval_h": interval_h},
        "market": {"time": "2024-06-01T00:00:00Z", "mark_from_spot": True,
                   "spot": {"BTC": 60000.0}, "funding": {"BTC-PERP": rate}},
        "risk": {"basis_risk": False, "vols": {"BTC": SIGMA}},
        "costs": {"trading": False, "impact": False, "carry": True, "gamma_fund": 1.0,
                  "horizon_days": HORIZON_DAYS},
        "constraints": {"margin": False},
        "solver": {"round_lots": False},
    }


def _load(doc: dict[str, Any]) -> Any:
    return parse_book(doc)


@pytest.mark.parametrize("interval_h", [8.0, 4.0, 1.0])
def test_carry_is_h_times_forecast_times_notional(interval_h: float) -> None:
    loaded = _load(_doc(rate=1e-4, interval_h=interval_h))
    forecast = 3.2e-4
    market = replace(loaded.market, funding_forecast={"BTC-PERP": forecast})
    d = prepare(loaded.book, market, loaded.risk, loaded.settings)
    H = HORIZON_DAYS * 24.0 / interval_h  # settlements in the horizon
    assert d.carry[0] == pytest.approx(H * forecast, rel=1e-15)
    sol = solve_rebalance(loaded.book, market, loaded.risk, loaded.settings)
    notional = sol.target_positions[0].notional
    # USD of funding the target position pays over the horizon, by hand: H x rbar x notional
    assert sol.costs.funding_carry == pytest.approx(H * forecast * notional, rel=1e-9)
    # the forecast, not the current rate (which would give a third of it at 1e-4 vs 3.2e-4)
    no_fc = prepare(loaded.book, loaded.market, loaded.risk, loaded.settings)
    assert no_fc.carry[0] == pytest.approx(H * 1e-4, rel=1e-15)


def test_high_forecast_funding_shrinks_a_long_hedge() -> None:
    """One asset, TE^2 = sigma^2 (s + z - w)^2 and carry c z (c = H rbar): z* = (w - s) - c / (2
    sigma^2). With rate 1e-4 and a forecast of 5e-4 per 8 h (H = 90): c = 0.009 -> 0.045, the long
    hedge goes from 0.4 - 0.0149 = 0.3851 to 0.4 - 0.0744 = 0.3256 of V = $10,000."""
    loaded = _load(_doc(rate=1e-4))
    V, gap, H = 10_000.0, 0.4, 90.0

    def long_usd(market: MarketSnapshot) -> float:
        sol = solve_rebalance(loaded.book, market, loaded.risk, loaded.settings)
        assert sol.status == "optimal"
        return sol.target_positions[0].notional

    last = long_usd(loaded.market)
    high = long_usd(replace(loaded.market, funding_forecast={"BTC-PERP": 5e-4}))
    low = long_usd(replace(loaded.market, funding_forecast={"BTC-PERP": -2e-4}))
    assert last == pytest.approx(V * (gap - H * 1e-4 / (2 * SIGMA**2)), abs=0.05)
    assert high == pytest.approx(V * (gap - H * 5e-4 / (2 * SIGMA**2)), abs=0.05)
    assert low == pytest.approx(V * (gap + H * 2e-4 / (2 * SIGMA**2)), abs=0.05)
    assert 0 < high < last < V * gap < low
    assert last - high == pytest.approx(V * H * 4e-4 / (2 * SIGMA**2), abs=0.1)  # about $595


def test_a_forecast_changes_parameter_values_only() -> None:
    """DPP and compiled once: the forecast is a new carry Parameter value, not a new problem."""
    loaded = _load(_doc(rate=1e-4))
    reb = Rebalancer()
    d0 = prepare(loaded.book, loaded.market, loaded.risk, loaded.settings)
    z0, hp, _, _ = reb.solve_z(d0)
    assert hp.problem.is_dpp()
    builds = HedgeProblem.builds
    for f in (5e-4, -3e-4, 0.0, 1e-4):
        d = prepare(loaded.book, replace(loaded.market, funding_forecast={"BTC-PERP": f}),
                    loaded.risk, loaded.settings)
        assert d.structure == d0.structure
        z, hp2, _, _ = reb.solve_z(d)
        assert hp2 is hp
        if f == 1e-4:  # back to the current rate (warm-started: equal to solver precision)
            np.testing.assert_allclose(z, z0, rtol=0, atol=1e-12)
    assert HedgeProblem.builds == builds


def test_dated_and_unnamed_contracts_keep_todays_carry() -> None:
    """A forecast for one perp leaves the others (and dated contracts) on today's carry."""
    loaded = load_book_file(EXAMPLES / "ten_assets.toml")
    perps = [c.symbol for c in loaded.book.contracts if c.kind == ContractKind.PERPETUAL]
    market = replace(loaded.market, funding_forecast={perps[0]: 7e-4})
    d = prepare(loaded.book, market, loaded.risk, loaded.settings)
    old = _old_carry(loaded)
    c0 = loaded.book.contracts[0]
    assert d.carry[0] == pytest.approx(7e-4 * loaded.settings.costs.horizon_days * 24.0
                                       / c0.funding_interval_h, rel=1e-15)
    np.testing.assert_array_equal(d.carry[1:], old[1:])


@pytest.mark.parametrize("bad", [math.nan, math.inf, 1.0, -1.5])
def test_market_refuses_a_bad_forecast(bad: float) -> None:
    loaded = _load(_doc())
    with pytest.raises(ValidationError, match=r"market\.funding_forecast\.BTC-PERP"):
        replace(loaded.market, funding_forecast={"BTC-PERP": bad})


# --- the [costs] settings -------------------------------------------------------------------------

def _seed_doc() -> dict[str, Any]:
    with open(EXAMPLES / "seed_example_1.toml", "rb") as fh:
        return tomllib.load(fh)


def _costs(**extra: Any) -> CostSettings:
    doc = copy.deepcopy(_seed_doc())
    doc["costs"].update(extra)
    return parse_book(doc).settings.costs


def test_costs_parse_the_forecast_settings() -> None:
    assert _costs().funding_forecast == FundingForecastRule.LAST
    assert _costs(funding_forecast="LAST").funding_forecast == FundingForecastRule.LAST
    cs = _costs(funding_forecast="ewma", funding_half_life=3, funding_reversion_half_life=21,
                funding_long_run_rate="0.01%")
    assert cs.funding_forecast == FundingForecastRule.EWMA
    assert (cs.funding_half_life, cs.funding_reversion_half_life) == (3.0, 21.0)
    assert cs.funding_long_run_rate == pytest.approx(1e-4)
    assert _costs(funding_forecast="ewma", funding_reversion_half_life=math.inf) \
        .funding_reversion_half_life == math.inf
    assert _costs(funding_forecast="ewma", funding_long_run_rate=-2e-4).funding_long_run_rate == -2e-4


@pytest.mark.parametrize(("extra", "field", "fix"), [
    ({"funding_forecast": "forecast"}, "costs.funding_forecast", "'last', 'ewma'"),
    ({"funding_forecast": 1}, "costs.funding_forecast", "'last', 'ewma'"),
    ({"funding_forecast": "ewma", "funding_half_life": 0}, "costs.funding_half_life", "> 0"),
    ({"funding_forecast": "ewma", "funding_half_life": math.inf}, "costs.funding_half_life",
     "finite"),
    ({"funding_forecast": "ewma", "funding_reversion_half_life": -5},
     "costs.funding_reversion_half_life", "> 0"),
    ({"funding_forecast": "ewma", "funding_long_run_rate": 1.0}, "costs.funding_long_run_rate",
     "(-1, 1)"),
    ({"funding_forecast": "ewma", "funding_long_run_rate": "fast"}, "costs.funding_long_run_rate",
     "percentage"),
    ({"funding_half_life": 21}, "costs.funding_half_life", 'funding_forecast = "ewma"'),
    ({"funding_forecast": "last", "funding_long_run_rate": 1e-4}, "costs.funding_long_run_rate",
     'funding_forecast = "ewma"'),
    ({"funding_horizon": 3}, "costs", "valid keys"),
])
def test_costs_refuse_bad_forecast_settings(extra: dict[str, Any], field: str, fix: str) -> None:
    with pytest.raises(ValidationError) as err:
        _costs(**extra)
    assert err.value.field.startswith(field)
    assert fix in str(err.value)
