"""Inline margin brackets: the table is checked (rates that fall, mmr x max_leverage > 1) before
the cum continuity of each bracket (review finding). A falling rate used to surface first as a
"cum" error whose suggested cum (a negative one) led to the next cum error, then the next, and
only at last to the rate. No network."""

from __future__ import annotations

from pathlib import Path

import pytest

from fbr.config import load_book_file
from models.errors import ValidationError

BOOK = """
[book]
cash = 60000.0
[targets]
BTC = 0.5
ETH = 0.5
[spot]
BTC = 1.0
ETH = 10.0
[tier_schedules]
major = [
{rows}
]
[contract_defaults]
lot_step = 1e-8
leverage = 10
tiers = "major"
[market]
time = 2024-06-01T00:00:00Z
mark_from_spot = true
[market.spot]
BTC = 60000.0
ETH = 2500.0
[risk]
correlation = 0.7
basis_risk = false
[risk.vols]
BTC = 0.55
ETH = 0.70
"""
# Binance-style brackets with exchange cums: cum_k = cum_(k-1) + (mmr_k - mmr_(k-1)) x lo_k:
# 0; 0 + 0.001 x 50,000 = 50; 50 + 0.005 x 250,000 = 1,300; 1,300 + 0.015 x 1,000,000 = 16,300;
# 16,300 + 0.025 x 10,000,000 = 266,300.
ROWS = [
    "{ max_notional = 50_000, max_leverage = 125, mmr = 0.004, cum = 0 },",
    "{ max_notional = 250_000, max_leverage = 100, mmr = 0.005, cum = 50 },",
    "{ max_notional = 1_000_000, max_leverage = 50, mmr = 0.01, cum = 1_300 },",
    "{ max_notional = 10_000_000, max_leverage = 20, mmr = 0.025, cum = 16_300 },",
    "{ max_notional = inf, max_leverage = 10, mmr = 0.05, cum = 266_300 },",
]


def _load(tmp_path: Path, rows: list[str]) -> None:
    path = tmp_path / "book.toml"
    path.write_text(BOOK.format(rows="\n".join(rows)))
    load_book_file(path)


def test_the_exchange_style_table_loads(tmp_path: Path) -> None:
    _load(tmp_path, ROWS)


def test_a_falling_rate_is_named_before_any_cum(tmp_path: Path) -> None:
    # bracket [2] at 0.0045 < bracket [1]'s 0.005 with the exchange's cum 1,300: continuity would
    # want 50 + (0.0045 - 0.005) x 250,000 = -75, but the fault is the rate
    rows = [*ROWS[:2], ROWS[2].replace("mmr = 0.01,", "mmr = 0.0045,"), *ROWS[3:]]
    with pytest.raises(ValidationError) as exc:
        _load(tmp_path, rows)
    assert exc.value.field == "tier_schedules.major[2].mmr"
    assert "0.0045" in exc.value.problem and "0.005" in exc.value.problem
    assert "cum" not in exc.value.fix


def test_mmr_above_one_over_max_leverage_is_named_before_any_cum(tmp_path: Path) -> None:
    # bracket [1]: 0.02 x 100x = 2 > 1 (maintenance above initial margin); its cum 50 also breaks
    # continuity (0 + (0.02 - 0.004) x 50,000 = 800), but the rate is the fault
    rows = [ROWS[0], ROWS[1].replace("mmr = 0.005,", "mmr = 0.02,"), *ROWS[2:]]
    with pytest.raises(ValidationError) as exc:
        _load(tmp_path, rows)
    assert exc.value.field == "tier_schedules.major[1].mmr"
    assert "max leverage" in exc.value.problem


def test_a_falling_rate_in_a_contract_s_inline_tiers_is_named(tmp_path: Path) -> None:
    text = BOOK.format(rows="\n".join(ROWS)).replace('tiers = "major"', "") + (
        '[[contracts]]\nsymbol = "BTC-PERP"\nunderlying = "BTC"\ntiers = [\n'
        "{ max_notional = 50_000, max_leverage = 20, mmr = 0.01, cum = 0 },\n"
        "{ max_notional = inf, max_leverage = 10, mmr = 0.008, cum = 500 },\n]\n"
        '[[contracts]]\nsymbol = "ETH-PERP"\nunderlying = "ETH"\n')
    (tmp_path / "book.toml").write_text(text)
    with pytest.raises(ValidationError) as exc:
        load_book_file(tmp_path / "book.toml")
    assert exc.value.field == "contracts[0].tiers[1].mmr"


def test_a_cum_that_breaks_continuity_is_still_named_with_the_continuous_value(
        tmp_path: Path) -> None:
    # bracket [2] with cum 1,000: MM at 250,000 is 0.01 x 250,000 - 1,000 = 1,500 against the
    # bracket below's 0.005 x 250,000 - 50 = 1,200, a jump of +300; the continuous cum is 1,300
    rows = [*ROWS[:2], ROWS[2].replace("cum = 1_300", "cum = 1_000"), *ROWS[3:]]
    with pytest.raises(ValidationError) as exc:
        _load(tmp_path, rows)
    assert exc.value.field == "tier_schedules.major[2].cum"
    assert "+300" in exc.value.problem
    assert "set cum = 1300 " in exc.value.fix


def test_a_first_bracket_cum_other_than_zero_is_named(tmp_path: Path) -> None:
    # MM = 0.004 x 0 - 25 = -25 USD at notional 0
    rows = [ROWS[0].replace("cum = 0", "cum = 25"), *ROWS[1:]]
    with pytest.raises(ValidationError) as exc:
        _load(tmp_path, rows)
    assert exc.value.field == "tier_schedules.major[0].cum"
    assert "-25 USD at notional 0" in exc.value.problem
