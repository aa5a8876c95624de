"""A book with [tax] in `fbr backtest` and `fbr montecarlo`: every policy's replay pays tax on its
realised gains, so a spot policy and the optimiser compare on the same rules (only an optimiser
that priced tax paid any)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fbr.backtest_config import build_path, load_backtest_file
from fbr.backtest_run import run_all
from fbr.montecarlo_cli import build_spec
from fbr.montecarlo_config import load_montecarlo_file
from scenarios.montecarlo import run_montecarlo

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
#: the units each asset of examples/backtest_book.toml holds at the first synthetic close
#: (its [spot_usd] at that close's prices: 60,000 / 3,000 / 150 / 550 / 0.55 USD)
UNITS = {"BTC": 0.6, "ETH": 9.0, "SOL": 17_000.0 / 150.0, "BNB": 10_000.0 / 550.0,
         "XRP": 10_000.0 / 0.55}


def _files(tmp_path: Path) -> Path:
    """The backtest book held in units with one lot per asset bought at 1 USD in 2022 (every
    sale a long-term gain, 15%), and a backtest of the optimiser and a weekly spot rebalance."""
    book = (EXAMPLES / "backtest_book.toml").read_text()
    book = re.sub(r"\[spot_usd\][^\[]*", "[spot]\n" + "".join(
        f"{a} = {q!r}\n" for a, q in UNITS.items()) + "\n", book)
    book += '\n[tax]\nshort_term = "30%"\nlong_term = "15%"\nlot_method = "fifo"\n'
    book += "".join(f'\n[[lots]]\nasset = "{a}"\nquantity = {q!r}\ncost_basis = 1.0\n'
                    f"acquired = 2022-01-01\n" for a, q in UNITS.items())
    (tmp_path / "book.toml").write_text(book)
    bt = tmp_path / "bt.toml"
    bt.write_text('book = "book.toml"\n[data]\nsource = "synthetic"\nseed = 12\ndays = 40\n'
                  'start = "2024-01-01"\n[[policies]]\nkind = "optimized"\nname = "opt"\n'
                  '[[policies]]\nkind = "calendar_spot"\nperiod = "7D"\nname = "spotw"\n'
                  '[backtest]\nspot_fee = "10bp"\n')
    return bt


def test_every_policy_pays_the_books_tax(tmp_path: Path) -> None:
    cfg = load_backtest_file(_files(tmp_path))
    results = run_all(cfg, build_path(cfg))
    for res in results.values():
        assert "tax" in res.steps.columns
    spot = results["spotw"]
    sales = spot.trades[(spot.trades["kind"] == "spot") & (spot.trades["quantity"] < 0)]
    assert len(sales) > 0
    # FIFO from one lot per asset at 1 USD, held since 2022: 15% of (price - 1) per unit sold
    by_step = (0.15 * (-sales["quantity"]) * (sales["price"] - 1.0)).groupby(sales["time"]).sum()
    taxed = spot.steps["tax_spot"][spot.steps["tax_spot"] != 0.0]
    assert list(taxed.index) == list(by_step.index)
    assert taxed.to_numpy() == pytest.approx(by_step.to_numpy(), abs=0.005)


def test_monte_carlo_runs_carry_the_books_tax(tmp_path: Path) -> None:
    """The Monte Carlo spec built from a book with [tax] hands it to every replay: the weekly spot
    rebalance pays tax on every path (it paid none)."""
    _files(tmp_path)
    mc = tmp_path / "mc.toml"
    mc.write_text('book = "book.toml"\n[data]\nsource = "synthetic"\nseed = 12\ndays = 120\n'
                  'start = "2022-01-01"\n[montecarlo]\ngenerator = "bootstrap"\npaths = 2\n'
                  'steps = 30\nstep = "1d"\nseed = 1\nmean_block = 10\n'
                  '[[policies]]\nkind = "calendar_spot"\nperiod = "7D"\nname = "spotw"\n')
    spec, _ = build_spec(load_montecarlo_file(mc))
    assert spec.tax is not None and spec.tax.rates is not None
    result = run_montecarlo(spec)
    assert (result.metrics["tax_bps"] > 0).all()
