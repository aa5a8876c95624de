"""`fbr whatif` end to end: shocks, named scenarios and files, --all --with-solution against the
book's stress constraints, and bad input as one clear message (exit code 2, no traceback)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fbr.cli import app

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
SEED = str(EXAMPLES / "seed_example_1.toml")
runner = CliRunner()


def whatif_json(*args: str) -> dict[str, Any]:
    res = runner.invoke(app, ["whatif", *args, "--json"])
    assert res.exit_code == 0, res.output
    out: dict[str, Any] = json.loads(res.stdout)
    return out


def test_shocks_on_the_seed_book() -> None:
    doc = whatif_json(SEED, "--shock", "BTC=-30%", "--shock", "common=-10%", "--no-resolve")
    [r] = doc["scenarios"]
    assert doc["positions_tested"] == "current" and r["scenario"] == "command line"
    # 0.1 BTC at 60,000 -30%; 1 ETH at 2,500 and 10 SOL at 150 -10%; no futures held
    assert r["pnl"]["spot"] == pytest.approx(-1_800 - 250 - 150, abs=1e-9)
    assert r["pnl"]["futures"] == 0.0 and r["pnl"]["funding"] == 0.0
    assert r["nav_after"] == pytest.approx(13_000 - 2_200, abs=1e-9)
    spot = {"BTC": 4_200.0, "ETH": 2_250.0, "SOL": 1_350.0}
    for a, v in spot.items():
        assert r["weights_after"][a] == pytest.approx(v / sum(spot.values()), abs=1e-12)
    assert r["liquidated"] is False and r["next"] is None
    assert r["liquidation_move_after"][0]["has_positions"] is False


def test_named_scenario_and_file_with_resolve() -> None:
    doc = whatif_json(SEED, "--scenario", "crash-30", "--scenario",
                      str(EXAMPLES / "scenarios" / "eth_squeeze.toml"))
    names = [r["scenario"] for r in doc["scenarios"]]
    assert names == ["crash-30", "eth squeeze", "deleveraging"]
    crash = doc["scenarios"][0]
    assert crash["pnl"]["spot"] == pytest.approx(-0.3 * 10_000, abs=1e-9)
    # the re-solve (no costs, no constraints in this book) puts the shocked book back on target
    assert crash["next"]["status"] == "optimal" and crash["next"]["tracking_error_after"] < 1e-6


def test_list() -> None:
    doc = whatif_json(SEED, "--list")
    names = [s["name"] for s in doc["scenarios"]]
    assert "alt-crash" in names and "funding-spike-week" in names


def test_all_with_solution_survives_the_books_stress_scenarios() -> None:
    """ten_assets.toml lists two [[constraints.stress]]; the proposed hedge survives both."""
    doc = whatif_json(str(EXAMPLES / "ten_assets.toml"), "--all", "--with-solution", "--no-resolve")
    assert doc["positions_tested"] == "solution" and doc["solution"]["status"] == "optimal"
    surplus = {s["name"]: s["surplus"] for s in doc["solution"]["stress"]}
    book_runs = {r["scenario"].removeprefix("book:"): r for r in doc["scenarios"]
                 if r["source"] == "book"}
    assert set(book_runs) == set(surplus) and len(surplus) == 2
    for name, r in book_runs.items():
        assert r["positions_tested"] == "solution" and r["liquidated"] is False
        assert r["margin_after"]["surplus"] >= 0
        assert r["margin_after"]["surplus"] == pytest.approx(surplus[name], rel=1e-9, abs=1e-6)
    lib = {r["scenario"] for r in doc["scenarios"]}
    assert {"crash-30", "alt-crash", "basis-5"} <= lib


def test_table_output() -> None:
    res = runner.invoke(app, ["whatif", SEED, "--shock", "BTC=-30%", "--shock",
                              "funding.ETH=+0.1%"])
    assert res.exit_code == 0, res.output
    for text in ("PnL spot / futures / funding", "effective weights", "next move"):
        assert text in res.stdout


@pytest.mark.parametrize(("args", "needle"), [
    (["--shock", "DOGE=-10%"], "DOGE"),
    (["--shock", "BTC=-150%"], "above -100%"),
    (["--shock", "BTC"], "KEY=VALUE"),
    (["--shock", "basis.XRP-PERP=-5%"], "XRP-PERP"),
    (["--scenario", "no-such-scenario"], "neither a file nor a library scenario"),
    ([], "no scenario given"),
])
def test_bad_input_is_one_message(args: list[str], needle: str) -> None:
    res = runner.invoke(app, ["whatif", SEED, *args])
    assert res.exit_code == 2
    assert needle in res.stderr and "Traceback" not in res.output + res.stderr
    assert res.stderr.strip().startswith("error:")
    js = runner.invoke(app, ["whatif", SEED, *args, "--json"])
    assert js.exit_code == 2 and json.loads(js.stdout)["status"] == "error"


def test_malformed_scenario_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("shocks = [\n")
    res = runner.invoke(app, ["whatif", SEED, "--scenario", str(bad)])
    assert res.exit_code == 2 and "not valid TOML" in res.stderr and "Fix:" in res.stderr
    typo = tmp_path / "typo.toml"
    typo.write_text("shocks = ['BTC=-10%']\nshock = ['ETH=-5%']\n")
    res = runner.invoke(app, ["whatif", SEED, "--scenario", str(typo)])
    assert res.exit_code == 2 and "not a scenario key" in res.stderr


def test_real_entry_point_exit_code() -> None:
    proc = subprocess.run([sys.executable, "-m", "fbr.cli", "whatif", SEED, "--shock", "ETH=-101%"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2
    assert "above -100%" in proc.stderr and "Traceback" not in proc.stderr


def test_binding_stress_constraint_is_survived_to_the_cent(tmp_path: Path) -> None:
    """A book whose stress constraint binds: little collateral (120 USD), margin on and a BTC +40%
    stress; the optimiser trims the short BTC hedge to meet it. The proposed hedge survives that
    rally with a surplus >= 0 (and equal to the optimiser's own), and the BTC move that liquidates
    it is just past +40%."""
    text = (EXAMPLES / "seed_example_1.toml").read_text()
    text = text.replace("cash = 3000.0", "cash = 120.0").replace("margin = false", "margin = true")
    text += '\n[[constraints.stress]]\nname = "btc rally"\nreturns = { BTC = "+40%" }\n'
    book = tmp_path / "bind.toml"
    book.write_text(text)
    doc = whatif_json(str(book), "--scenario", "book:btc rally", "--with-solution", "--no-resolve")
    [stress] = doc["solution"]["stress"]
    [r] = doc["scenarios"]
    assert r["liquidated"] is False
    assert 0 <= r["margin_after"]["surplus"] < 0.01  # binding: the last cent of collateral is used
    assert r["margin_after"]["surplus"] == pytest.approx(stress["surplus"], abs=1e-9)
    btc = next(m for m in r["liquidation_move_before"] if m["scope"] == "BTC-PERP")
    assert btc["down"] is None and 0.4 <= btc["up"] < 0.4 + 1e-4


def test_all_without_data_says_why_history_is_missing(tmp_path: Path) -> None:
    res = runner.invoke(app, ["whatif", SEED, "--all", "--no-resolve", "--json"],
                        env={"FBR_DATA_DIR": str(tmp_path)})
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert not any(r["scenario"].startswith("hist-") for r in doc["scenarios"])
    assert any("historical scenarios unavailable" in n for n in doc["notes"])
    bad = runner.invoke(app, ["whatif", SEED, "--scenario", "hist-nov-2022-day"],
                        env={"FBR_DATA_DIR": str(tmp_path)})
    assert bad.exit_code == 2 and "FBR_DATA_DIR" in bad.stderr


def test_all_runs_the_stress_preset_scenarios_too(tmp_path: Path) -> None:
    """A book with ``stress_preset = "each_and_all"`` (fbr solve's stress rows: each asset alone
    and all together, down and up): --all runs those 2N + 2 scenarios as book scenarios, and the
    proposed hedge's surplus in each equals the solution's own."""
    text = (EXAMPLES / "seed_example_1.toml").read_text().replace(
        "margin = false", 'margin = true\nstress_preset = "each_and_all"')
    book = tmp_path / "preset.toml"
    book.write_text(text)
    doc = whatif_json(str(book), "--all", "--with-solution", "--no-resolve")
    surplus = {s["name"]: s["surplus"] for s in doc["solution"]["stress"]}
    runs = {r["scenario"].removeprefix("book:"): r for r in doc["scenarios"] if r["source"] == "book"}
    assert len(surplus) == 2 * 3 + 2 and set(runs) == set(surplus)
    for name, r in runs.items():
        assert r["margin_after"]["surplus"] == pytest.approx(surplus[name], rel=1e-9, abs=1e-6)


def test_the_next_move_shows_the_spot_legs_trades(tmp_path: Path) -> None:
    """With the spot leg on, the re-solve's spot trades are part of its move: the what-if's
    'next' block lists them, as ``fbr solve`` on the shocked book gives them."""
    text = (EXAMPLES / "seed_example_1.toml").read_text().replace(
        "margin = false", "margin = false\ncaps_usd = { BTC-PERP = 1.0, ETH-PERP = 1.0, "
        "SOL-PERP = 1.0 }\n\n[solver]\nspot_leg = true")
    book = tmp_path / "spot.toml"
    book.write_text(text)
    doc = whatif_json(str(book), "--shock", "BTC=-30%")
    nxt = doc["scenarios"][0]["next"]
    shocked = tmp_path / "shocked.toml"
    shocked.write_text(text.replace("BTC = 60000.0", "BTC = 42000.0"))
    res = runner.invoke(app, ["solve", str(shocked), "--json"])
    assert res.exit_code == 0, res.output
    direct = json.loads(res.stdout)
    want = {t["asset"]: t["notional"] for t in direct["spot_trades"]}
    assert want and {t["asset"]: t["notional"] for t in nxt["spot_trades"]} == pytest.approx(want)
    assert nxt["spot_trading_cost"] == pytest.approx(direct["spot_costs"]["trading"])
    table = runner.invoke(app, ["whatif", str(book), "--shock", "BTC=-30%"])
    assert table.exit_code == 0 and "BTC spot" in table.stdout


def test_a_spread_shock_triples_the_spot_legs_spread_cost(tmp_path: Path) -> None:
    """The seed book with fees off and the spot leg on gives no [market.spot_half_spread], so the
    re-solve prices a spot trade at the 1 bp default half spread; spread=x3 makes that 3 bp.
    With no fee and no impact the spot trading cost is the half spread times the USD traded:
    0.0001 x sum |notional| unshocked, 0.0003 x sum |notional| under spread=x3."""
    assets = "".join(f'[[assets]]\nsymbol = "{a}"\nfee = 0.0\n\n' for a in ("BTC", "ETH", "SOL"))
    text = (EXAMPLES / "seed_example_1.toml").read_text().replace(
        "[targets]", assets + "[targets]").replace(
        "leverage = 10.0", "leverage = 10.0\ntaker_fee = 0.01").replace(  # futures dear: spot it is
        "trading = false", "trading = true").replace(
        "margin = false", "margin = false\n\n[solver]\nspot_leg = true")
    assert "spot_half_spread" not in text
    book = tmp_path / "spot.toml"
    book.write_text(text)
    for shocks, half in ((["--shock", "BTC=-30%"], 0.0001),
                         (["--shock", "BTC=-30%", "--shock", "spread=x3"], 0.0003)):
        nxt = whatif_json(str(book), *shocks)["scenarios"][0]["next"]
        traded = sum(abs(t["notional"]) for t in nxt["spot_trades"])
        assert traded > 100.0  # the -30% BTC move leaves a spot rebalance of some hundreds of USD
        assert nxt["spot_trading_cost"] == pytest.approx(half * traded, rel=1e-9)


def test_the_liquidation_note_counts_settlements_per_contract(tmp_path: Path) -> None:
    """The seed book with 300 USD of cash, long 0.2 ETH-PERP (500 USD) and 10/3 SOL-PERP (500 USD)
    at 10x, flat 0.5% maintenance: MM = 5 USD, S_0 = 295 USD. funding=+1% costs 5 + 5 = 10 USD per
    8 h settlement, so the 30th (240 h) takes S to -5: liquidated. Every contract, BTC-PERP with
    no position too, settled 30 of its 100 times (the old note summed them: "160 of 300")."""
    text = (EXAMPLES / "seed_example_1.toml").read_text().replace(
        "cash = 3000.0", "cash = 300.0") + (
        '\n[[futures]]\nsymbol = "ETH-PERP"\ncontracts = 0.2\nentry_price = 2500.0\n'
        '\n[[futures]]\nsymbol = "SOL-PERP"\ncontracts = 3.3333333333\nentry_price = 150.0\n')
    book = tmp_path / "fut2.toml"
    book.write_text(text)
    args = ["--shock", "funding=+1%", "--shock", "horizon=100", "--no-resolve"]
    doc = whatif_json(str(book), *args)
    r = doc["scenarios"][0]
    assert r["liquidated_after_hours"] == pytest.approx(240.0)
    assert r["settlements"] == {"BTC-PERP": 30.0, "ETH-PERP": 30.0, "SOL-PERP": 30.0}
    assert r["pnl"]["funding"] == pytest.approx(-300.0, abs=1e-6)
    note = ("command line: the wallet is liquidated 240 h after the shock (30 of 100 funding "
            "settlements paid per contract); losses stop there")
    assert doc["notes"] == [note]
    table = runner.invoke(app, ["whatif", str(book), *args], env={"COLUMNS": "300"})
    assert table.exit_code == 0 and note in table.stdout


def test_status_gives_the_whatifs_common_move_to_liquidation(tmp_path: Path) -> None:
    """The seed book with 300 USD of cash, short 1,000 USD of BTC-PERP and long 500 USD each of
    ETH- and SOL-PERP: a common move leaves the uPnL at 0 and MM = 0.005 x 2,000 (1 + r), so the
    book is liquidated at 300 = 10 (1 + r), r = +2,900%, and by no down move. ``fbr status`` said
    no move liquidates (it searched up to +500% only); it now gives the what-if's figure."""
    text = (EXAMPLES / "seed_example_1.toml").read_text().replace(
        "cash = 3000.0", "cash = 300.0") + "".join(
        f'\n[[futures]]\nsymbol = "{s}"\ncontracts = {q!r}\nentry_price = {p}\n'
        for s, q, p in (("BTC-PERP", -1000 / 60_000, 60000.0), ("ETH-PERP", 0.2, 2500.0),
                        ("SOL-PERP", 500 / 150, 150.0)))
    book = tmp_path / "fut1.toml"
    book.write_text(text)
    res = runner.invoke(app, ["status", str(book), "--exchange", "paper", "--journal",
                              str(tmp_path / "j.sqlite"), "--json"])
    assert res.exit_code == 0, res.output
    margin = json.loads(res.stdout)["margin"]
    assert margin["liquidation_move_up"] == pytest.approx(29.0, rel=1e-9)
    assert margin["liquidation_move_down"] is None
    r = whatif_json(str(book), "--shock", "BTC=0%", "--no-resolve")["scenarios"][0]
    common = next(m for m in r["liquidation_move_before"] if m["scope"] == "book")
    assert common["up"] == pytest.approx(margin["liquidation_move_up"], rel=1e-12)
    assert common["down"] is None  # and the same sign convention both ways (down < 0, up > 0)
    table = runner.invoke(app, ["status", str(book), "--exchange", "paper", "--journal",
                                str(tmp_path / "j.sqlite")], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "- down / +2900.000% up" in table.stdout


def test_status_and_whatif_give_a_down_move_with_one_sign(tmp_path: Path) -> None:
    """A seed book long 10,000 USD of BTC-PERP on 1,000 USD of cash is liquidated by a common fall:
    ``fbr status --json`` and the what-if's book-wide move give the same negative return (one
    name, one unit, one sign across commands), and the status text prints it signed."""
    text = (EXAMPLES / "seed_example_1.toml").read_text().replace(
        "cash = 3000.0", "cash = 1000.0") + (
        '\n[[futures]]\nsymbol = "BTC-PERP"\ncontracts = 0.16666667\nentry_price = 60000.0\n')
    book = tmp_path / "long.toml"
    book.write_text(text)
    res = runner.invoke(app, ["status", str(book), "--exchange", "paper", "--journal",
                              str(tmp_path / "j.sqlite"), "--json"])
    assert res.exit_code == 0, res.output
    down = json.loads(res.stdout)["margin"]["liquidation_move_down"]
    assert down is not None and -1.0 < down < 0.0
    r = whatif_json(str(book), "--shock", "BTC=0%", "--no-resolve")["scenarios"][0]
    common = next(m for m in r["liquidation_move_before"] if m["scope"] == "book")
    assert common["down"] == pytest.approx(down, rel=1e-12)
    table = runner.invoke(app, ["status", str(book), "--exchange", "paper", "--journal",
                                str(tmp_path / "j.sqlite")], env={"COLUMNS": "200"})
    assert f"{100 * down:+.3f}% down" in table.stdout


def test_an_infeasible_re_solve_is_no_next_move(tmp_path: Path) -> None:
    """The backtest example book with a funding budget of -1,000,000 USD (infeasible against the
    margin row): the re-solve after a shock is shown as infeasible with the conflicting
    constraints and no order, not as "infeasible: 5 trades, TE ..."; its least-violation trades are
    titled as not tradeable; --json keeps the status."""
    book = tmp_path / "book.toml"
    book.write_text((EXAMPLES / "backtest_book.toml").read_text().replace(
        "[constraints]\n", "[constraints]\nfunding_budget_usd = -1000000\n", 1))
    res = runner.invoke(app, ["whatif", str(book), "--shock", "BTC=-10%"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert ("next move (re-solve) │ infeasible, no order would be sent: these constraints "
            "conflict: funding_budget, margin") in text
    assert "infeasible: " not in text.split("next move (re-solve)")[1].split("│")[1]
    assert "the least-violation book's trades (not tradeable)" in text
    assert "next move: trades of the re-solve" not in text
    doc = whatif_json(str(book), "--shock", "BTC=-10%")
    assert doc["scenarios"][0]["next"]["status"] == "infeasible"
