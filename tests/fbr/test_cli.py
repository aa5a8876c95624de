"""The CLI end to end: `fbr solve ... --json` on the seed examples, and bad input as one message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import run_fbr

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"




def solve_json(path: Path) -> dict[str, object]:
    proc = run_fbr("solve", str(path), "--json")
    assert proc.returncode == 0, proc.stderr
    out: dict[str, object] = json.loads(proc.stdout)
    return out


def trades_by_underlying(result: dict[str, object]) -> dict[str, float]:
    trades = result["trades"]
    assert isinstance(trades, list)
    return {t["underlying"]: t["notional"] for t in trades}


@pytest.mark.parametrize(("name", "expected"), [
    ("seed_example_1.toml", {"BTC": -1000.0, "ETH": 500.0, "SOL": 500.0}),
    ("seed_example_2.toml", {"BTC": -500.0, "ETH": 1000.0, "SOL": -500.0}),
])
def test_seed_examples_through_cli(name: str, expected: dict[str, float]) -> None:
    """The seed article's worked examples: trades to the cent after lot rounding."""
    res = solve_json(EXAMPLES / name)
    assert res["status"] == "optimal"
    got = trades_by_underlying(res)
    assert set(got) == set(expected)
    for sym, usd in expected.items():
        assert got[sym] == pytest.approx(usd, abs=0.01), (sym, got[sym])
    for key in ("solver", "solve_time_ms", "nav", "tracking_error_before", "tracking_error_after",
                "target_positions", "costs", "margin", "leverage", "binding_constraints"):
        assert key in res
    assert res["tracking_error_after"] < 1e-6 < res["tracking_error_before"]  # type: ignore[operator]
    for t in res["trades"]:  # type: ignore[attr-defined]
        assert set(t) >= {"symbol", "underlying", "notional", "contracts"}


def test_ten_assets_has_a_binding_cluster_band() -> None:
    res = solve_json(EXAMPLES / "ten_assets.toml")
    assert res["status"] == "optimal"
    names = [b["name"] for b in res["binding_constraints"]]  # type: ignore[attr-defined]
    assert any(n.startswith("cluster_band") for n in names), names
    for b in res["binding_constraints"]:  # type: ignore[attr-defined]
        assert b["dual"] > 0


def test_human_output_has_tables() -> None:
    proc = run_fbr("solve", str(EXAMPLES / "seed_example_1.toml"))
    assert proc.returncode == 0, proc.stderr
    assert "Trades" in proc.stdout and "BTC-PERP" in proc.stdout
    assert "tracking error" in proc.stdout


BAD_BOOKS = {
    "weights_13": ("[targets]\nBTC = 0.8\nETH = 0.5\n", "targets"),
    "nan_price": ("[market.spot]\nBTC = nan\n", "BTC"),
    "negative_price": ("[market.spot]\nETH = -5.0\n", "ETH"),
    "unknown_target": ("[targets]\nBTC = 0.5\nETH = 0.3\nDOGE = 0.2\n", "DOGE"),
}

BASE = """
[book]
name = "bad"
cash = 3000.0
[spot]
BTC = 0.1
ETH = 1.0
[contract_defaults]
lot_step = 1e-8
min_notional = 0.0
[market]
time = 2024-06-01T00:00:00Z
mark_from_spot = true
[risk]
correlation = 0.7
[risk.vols]
BTC = 0.55
ETH = 0.70
"""


def _merge(base: str, patch: str) -> str:
    """Replace whole tables of ``base`` by those in ``patch`` (tiny TOML table splice)."""
    import tomllib

    import tomli_w

    data = tomllib.loads(base)
    for key, val in tomllib.loads(patch).items():
        if isinstance(val, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **val}
        else:
            data[key] = val
    data.setdefault("targets", {"BTC": 0.6, "ETH": 0.4})
    data.setdefault("market", {}).setdefault("spot", {"BTC": 60000.0, "ETH": 2500.0})
    data["market"]["spot"] = {"BTC": 60000.0, "ETH": 2500.0, **data["market"]["spot"]}
    return tomli_w.dumps(data)


@pytest.mark.parametrize("case", sorted(BAD_BOOKS))
def test_bad_input_is_one_clear_message(case: str, tmp_path: Path) -> None:
    patch, needle = BAD_BOOKS[case]
    f = tmp_path / f"{case}.toml"
    f.write_text(_merge(BASE, patch))
    proc = run_fbr("solve", str(f), "--json")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert needle in proc.stderr
    assert json.loads(proc.stdout)["status"] == "error"


def test_malformed_toml(tmp_path: Path) -> None:
    f = tmp_path / "broken.toml"
    f.write_text("[book\nname = 'x'\n")
    proc = run_fbr("solve", str(f))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "broken.toml" in proc.stderr and "line" in proc.stderr


def test_missing_file() -> None:
    proc = run_fbr("solve", "no/such/book.toml")
    assert proc.returncode == 2 and "does not exist" in proc.stderr


def test_unbounded_book_refused(tmp_path: Path) -> None:
    f = tmp_path / "unbounded.toml"
    f.write_text("""
[book]
name = "two perps"
cash = 3000.0
[targets]
BTC = 1.0
[spot]
BTC = 0.1
[[contracts]]
symbol = "BTC-PERP-A"
underlying = "BTC"
lot_step = 1e-8
min_notional = 0.0
[[contracts]]
symbol = "BTC-PERP-B"
underlying = "BTC"
lot_step = 1e-8
min_notional = 0.0
[market]
time = 2024-06-01T00:00:00Z
[market.spot]
BTC = 60000.0
[market.mark]
BTC-PERP-A = 60000.0
BTC-PERP-B = 60000.0
[market.funding]
BTC-PERP-A = 0.0003
BTC-PERP-B = -0.0003
[risk]
basis_risk = false
correlation = 0.7
[risk.vols]
BTC = 0.55
[costs]
trading = true
carry = true
[constraints]
margin = false
""")
    proc = run_fbr("solve", str(f))
    assert proc.returncode == 2
    assert "unbounded" in proc.stderr and "BTC-PERP-A" in proc.stderr and "BTC-PERP-B" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_collateral_too_small(tmp_path: Path) -> None:
    text = (EXAMPLES / "seed_example_1.toml").read_text()
    text = text.replace("cash = 3000.0", "cash = 0.0").replace("margin = false", "margin = true")
    f = tmp_path / "poor.toml"
    f.write_text(text)
    proc = run_fbr("solve", str(f))
    assert proc.returncode == 2
    assert "collateral too small" in proc.stderr and "Traceback" not in proc.stderr


def test_demo_runs() -> None:
    proc = run_fbr("demo", "--json")
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert res["status"] == "ok"
    books = {k: v for k, v in res.items() if k not in ("backtest", "status")}
    assert len(books) == 3 and all(v["status"] == "optimal" for v in books.values())
    assert "backtest" in res


def test_demo_books_match_examples() -> None:
    """The demo's embedded books are the shipped examples, byte for byte (no drift)."""
    for name in ("seed_example_1.toml", "seed_example_2.toml", "ten_assets.toml"):
        assert (ROOT / "fbr" / "data" / name).read_bytes() == (EXAMPLES / name).read_bytes()


def test_contract_without_price(tmp_path: Path) -> None:
    text = (EXAMPLES / "seed_example_1.toml").read_text().replace("mark_from_spot = true", "")
    text += '\n[market.mark]\n"BTC-PERP" = 60000.0\n"ETH-PERP" = 2500.0\n'
    f = tmp_path / "noprice.toml"
    f.write_text(text)
    proc = run_fbr("solve", str(f))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    # the message names the field and the fix, with its TOML table intact
    assert "market.mark.SOL-PERP" in proc.stderr and "[market.mark]" in proc.stderr
