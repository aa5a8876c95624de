"""Constraint limits in USD past what any book can hold are refused by name before any solve: a
margin buffer of 1e308 USD made every solver fail ("every solver failed", exit 2) where the
answer is that no margin is left. Limits up to fbr.config_values.MAX_HOLDING_USD are read."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import tomli_w

from fbr.config import load_book_file
from fbr.config_values import MAX_HOLDING_USD
from models.errors import ValidationError

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed_example_1.toml"


def _write(tmp_path: Path, constraints: dict[str, object]) -> Path:
    doc = tomllib.loads(SEED.read_text(encoding="utf-8"))
    doc["constraints"] = {"margin": True, **constraints}
    p = tmp_path / "b.toml"
    p.write_text(tomli_w.dumps(doc), encoding="utf-8")
    return p


@pytest.mark.parametrize(("key", "value"), [
    ("margin_buffer_usd", 1e308), ("margin_buffer_usd", 2e13), ("margin_buffer_usd", -1.0),
    ("default_cap_usd", 1e30), ("default_cap_usd", 0.0), ("trade_limit_usd", 1e20),
    ("funding_budget_usd", -1e30), ("funding_budget_usd", 1e14)])
def test_a_usd_limit_out_of_range_is_refused_by_name(tmp_path: Path, key: str,
                                                     value: float) -> None:
    with pytest.raises(ValidationError) as exc:
        load_book_file(_write(tmp_path, {key: value}))
    assert exc.value.field == f"constraints.{key}"


def test_a_contract_cap_past_the_bound_is_refused_and_limits_at_it_are_read(
        tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as exc:
        load_book_file(_write(tmp_path, {"caps_usd": {"BTC-PERP": 1e300}}))
    assert exc.value.field == "constraints.caps_usd.BTC-PERP"
    lb = load_book_file(_write(tmp_path, {
        "margin_buffer_usd": 100.0, "default_cap_usd": MAX_HOLDING_USD,
        "trade_limit_usd": MAX_HOLDING_USD, "funding_budget_usd": -MAX_HOLDING_USD,
        "caps_usd": {"BTC-PERP": 0.0, "ETH-PERP": MAX_HOLDING_USD}}))
    c = lb.settings.constraints
    assert (c.margin_buffer_usd, c.default_cap_usd, c.trade_limit_usd, c.funding_budget_usd) == (
        100.0, MAX_HOLDING_USD, MAX_HOLDING_USD, -MAX_HOLDING_USD)
    assert c.caps_usd == {"BTC-PERP": 0.0, "ETH-PERP": MAX_HOLDING_USD}
