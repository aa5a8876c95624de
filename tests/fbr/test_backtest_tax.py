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
from models.errors import ValidationError
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


def test_a_lot_acquired_after_the_start_is_refused_before_any_policy_runs(tmp_path: Path) -> None:
    """The replay books each sale against the lots; a lot dated after the backtest's first step
    was met at the first sale, inside the first policy's run ("lot.acquired: ... (policy 'opt')").
    Now the file is refused before any policy runs, naming ``lots`` and the latest date."""
    bt = _files(tmp_path)  # the book's market time: 2024-01-01 (its lots may not be later)
    book = tmp_path / "book.toml"
    book.write_text(book.read_text().replace("acquired = 2022-01-01\n", "acquired = 2023-10-15\n", 1))
    bt.write_text(bt.read_text().replace('start = "2024-01-01"', 'start = "2023-09-01"'))
    cfg = load_backtest_file(bt)
    started: list[str] = []

    def on_start(name: str, steps: int) -> None:
        started.append(name)

    with pytest.raises(ValidationError) as info:
        run_all(cfg, build_path(cfg), on_start)
    assert started == []
    assert info.value.field == "lots" and "(the latest: BTC on 2023-10-15)" in info.value.problem
    assert "2023-09-01 00:00 UTC" in info.value.problem and "[data] start" in info.value.fix


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


def _render(tables: list[object], width: int) -> list[str]:
    from rich.console import Console

    con = Console(width=width, record=True, color_system=None)
    for t in tables:
        con.print(t)
    return con.export_text().splitlines()


def test_the_backtest_table_shows_tax_and_total_cost_within_80_columns() -> None:
    """A taxed run: fees 19.7 + funding -11.5 + tax 88.3 = total 96.5 bp/yr (hand sum); the
    table gains "tax bp/yr" and "total cost bp/yr" (the old table had neither) and, split in
    three, keeps every line within 80 columns; an untaxed run's table is unchanged."""
    from fbr.backtest_table import BACKTEST_COLUMNS, backtest_columns, backtest_tables

    base = {"tracking_error": 0.0035, "total_return": 0.0493, "volatility": 0.5032,
            "max_drawdown": 0.0751, "fees_bps": 19.7, "funding_bps": -11.5, "turnover": 3.34,
            "peak_margin_ratio": 0.0033, "liquidations": 0}
    taxed = {"optimized_futures": {**base, "tax_bps": 88.3, "total_cost_bps": 19.7 - 11.5 + 88.3}}
    for width in (80, 120, 160):
        lines = _render(backtest_tables(taxed, "Policies", width), width)  # type: ignore[arg-type]
        text = "\n".join(lines)
        assert "tax bp/yr" in text and "total cost bp/yr" in text
        assert "88.3" in text and "96.5" in text
        assert max(len(line.rstrip()) for line in lines) <= width
    assert len(backtest_tables(taxed, "Policies", 80)) == 3
    untaxed = {"opt": {**base, "tax_bps": 0.0, "total_cost_bps": 8.2}}
    assert backtest_columns(untaxed) is BACKTEST_COLUMNS
    text = "\n".join(_render(backtest_tables(untaxed, "Policies", 80), 80))  # type: ignore[arg-type]
    assert "tax bp/yr" not in text and "total cost" not in text
