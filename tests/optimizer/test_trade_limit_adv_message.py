"""``trade_limit_adv`` on a market without ADV: an unknown ADV bounds nothing, and the solution
now says which contracts the limit leaves unlimited (before, the naive -1,000 / +500 / +500 USD
of seed example 1 came out with no word of the requested limit). With ADV given it binds:
0.1 x 2,000 USD = 200 USD per contract at most, by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from fbr.config import load_book_file
from optimizer.rebalance import Rebalancer

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed_example_1.toml"


def _solve(tmp_path: Path, adv: str) -> tuple[list[float], tuple[str, ...]]:
    text = SEED.read_text().replace(
        "margin = false                # and no other constraint is listed",
        "margin = false\ntrade_limit_adv = 0.1\n").replace("[risk]\n", adv + "[risk]\n", 1)
    p = tmp_path / "b.toml"
    p.write_text(text)
    lb = load_book_file(p)
    sol = Rebalancer().solve(lb.book, lb.market, lb.risk, lb.settings)
    return [round(t.notional, 6) for t in sol.trades], sol.messages


def test_the_contracts_left_unlimited_are_named(tmp_path: Path) -> None:
    notional, messages = _solve(tmp_path, "")
    assert notional == pytest.approx([-1_000.0, 500.0, 500.0], abs=0.01)  # lot rounding
    said = [m for m in messages if m.startswith("trade_limit_adv")]
    assert said == ["trade_limit_adv does not limit BTC-PERP, ETH-PERP, SOL-PERP: the market "
                    "gives no ADV for them (give [market.adv], or trade_limit_usd)"]


def test_with_adv_the_limit_binds_and_nothing_is_said(tmp_path: Path) -> None:
    adv = "[market.adv]\nBTC-PERP = 2000.0\nETH-PERP = 2000.0\nSOL-PERP = 2000.0\n\n"
    notional, messages = _solve(tmp_path, adv)
    assert max(abs(x) for x in notional) <= 200.0 + 1e-6
    assert not any(m.startswith("trade_limit_adv") for m in messages)
