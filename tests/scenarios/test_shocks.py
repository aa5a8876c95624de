"""The shock grammar: every form parses to the documented value; bad shocks name the fix."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.errors import ValidationError
from scenarios.shocks import (
    Scenario,
    ShockKind,
    format_shock,
    parse_scenario,
    parse_shock,
    scenario_from_returns,
)


@pytest.mark.parametrize(("text", "kind", "target", "value"), [
    ("BTC=-30%", ShockKind.PRICE, "BTC", -0.30),
    ("BTC=-0.3", ShockKind.PRICE, "BTC", -0.30),
    ("ETH=+12.5%", ShockKind.PRICE, "ETH", 0.125),
    ("common=-20%", ShockKind.COMMON, None, -0.20),
    ("funding=+0.3%", ShockKind.FUNDING, None, 0.003),
    ("funding.ETH=+0.1%", ShockKind.FUNDING, "ETH", 0.001),
    ("funding.ETH-PERP=10bp", ShockKind.FUNDING, "ETH-PERP", 0.001),
    ("basis.BTC-PERP=-5%", ShockKind.BASIS, "BTC-PERP", -0.05),
    ("basis=-5%", ShockKind.BASIS, None, -0.05),
    ("vol=x1.5", ShockKind.VOL, None, 1.5),
    ("vol.SOL=2x", ShockKind.VOL, "SOL", 2.0),
    ("spread=x3", ShockKind.SPREAD, None, 3.0),
    ("liquidity=0.5", ShockKind.LIQUIDITY, None, 0.5),
    ("liquidity.BTC-PERP=x0.5", ShockKind.LIQUIDITY, "BTC-PERP", 0.5),
    (" horizon = 21 ", ShockKind.HORIZON, None, 21.0),
])
def test_grammar(text: str, kind: ShockKind, target: str | None, value: float) -> None:
    s = parse_shock(text)
    assert (s.kind, s.target) == (kind, target)
    assert s.value == pytest.approx(value, abs=1e-15)


def test_corr_and_horizon_forms() -> None:
    full = parse_shock("corr=0.9")
    assert (full.value, full.weight) == (0.9, 1.0)
    half = parse_shock("corr=90%@50%")
    assert half.value == pytest.approx(0.9) and half.weight == pytest.approx(0.5)
    assert parse_shock("horizon=7d").hours == 168.0
    assert parse_shock("horizon=8h").hours == 8.0
    assert parse_shock("horizon=1w").hours == 168.0


@pytest.mark.parametrize(("text", "needle"), [
    ("BTC=-100%", "above -100%"),
    ("BTC=-150%", "above -100%"),
    ("common=-1", "above -100%"),
    ("basis=-100%", "above -100%"),
    ("BTC", "KEY=VALUE"),
    ("=5%", "KEY=VALUE"),
    ("BTC=", "KEY=VALUE"),
    ("BTC=lots", "percentage"),
    ("foo.BTC=1%", "unknown kind"),
    ("common.BTC=1%", "whole book"),
    ("vol=x0", "> 0"),
    ("vol=x-1", "multiplier"),
    ("spread=big", "multiplier"),
    ("corr=1.5", "[0, 1]"),
    ("corr=0.9@0", "blend weight"),
    ("funding=+150%", "(-1, 1)"),
    ("horizon=2.5", "whole number"),
    ("horizon=soon", "settlements"),
    ("B TC=1%", "not an asset symbol"),
])
def test_bad_shocks_say_how_to_fix(text: str, needle: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_shock(text)
    assert needle in str(info.value)
    assert "Fix:" in str(info.value)


def test_a_target_twice_is_an_error() -> None:
    with pytest.raises(ValidationError, match="shocked twice"):
        parse_scenario("x", ["BTC=-10%", "BTC=-20%"])
    with pytest.raises(ValidationError, match="no shocks"):
        parse_scenario("x", [])
    # the same kind on different targets is fine
    sc = parse_scenario("x", ["funding=+0.1%", "funding.ETH=+0.2%"])
    assert [s.key for s in sc.shocks] == ["funding", "funding.ETH"]


def test_format_round_trip() -> None:
    texts = ["BTC=-30%", "common=-20%", "funding.ETH=+0.1%", "basis.BTC-PERP=-5%", "vol=x1.5",
             "corr=0.9@50%", "spread=x3", "liquidity=x0.5", "horizon=21", "horizon=7d"]
    for t in texts:
        s = parse_shock(t)
        again = parse_shock(format_shock(s))
        assert (again.kind, again.target, again.weight, again.hours) == \
            (s.kind, s.target, s.weight, s.hours)
        assert again.value == pytest.approx(s.value, rel=1e-12, nan_ok=True)


def test_scenario_from_returns() -> None:
    sc = scenario_from_returns("alt crash", {"BTC": -0.2}, common=-0.5)
    assert isinstance(sc, Scenario)
    assert [(s.kind, s.target, s.value) for s in sc.shocks] == [
        (ShockKind.COMMON, None, -0.5), (ShockKind.PRICE, "BTC", -0.2)]
    assert sc.shock_texts == ["common=-50%", "BTC=-20%"]
    with pytest.raises(ValidationError, match="above -100%"):
        scenario_from_returns("bad", {"BTC": -1.0})


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.floats(min_value=-99.99, max_value=1e4, allow_nan=False))
def test_percent_text_is_the_return(percent: float) -> None:
    s = parse_shock(f"BTC={percent!r}%")
    assert s.value == pytest.approx(percent / 100.0, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize(("text", "hours"), [("horizon=3D", 72.0), ("horizon=1W", 168.0),
                                             ("horizon=90min", 1.5), ("horizon=72h", 72.0)])
def test_horizon_reads_the_run_files_units(text: str, hours: float) -> None:
    # one duration grammar (models.durations): "3D" and "1W" as a policy period writes them
    assert parse_shock(text).hours == pytest.approx(hours, rel=1e-15)


def test_funding_per_duration_reads_the_same_units() -> None:
    assert parse_shock("funding=+0.9%/1D").per_hours == 24.0
    with pytest.raises(ValidationError):
        parse_shock("funding=+0.9%/1M")
