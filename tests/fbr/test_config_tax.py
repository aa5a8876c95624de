"""Book-file sections of the spot leg: [solver] spot_leg, [tax] and [[lots]] (fbr.config_tax).

Seed example 1 holds 0.1 BTC, 1 ETH and 10 SOL; the lots below add up to exactly those quantities.
"""

from __future__ import annotations

import json
import tomllib
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from typer.testing import CliRunner

from fbr.cli import app
from fbr.config import load_book_file
from fbr.config_loader import TOP_LEVEL_KEYS
from models.errors import ValidationError
from models.tax import LotMethod, TaxLot, TaxRates
from optimizer.rebalance import Rebalancer
from optimizer.settings import SpotLegSettings

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _doc() -> dict[str, Any]:
    doc = tomllib.loads((EXAMPLES / "seed_example_1.toml").read_text(encoding="utf-8"))
    doc["solver"] = {"spot_leg": True}
    doc["tax"] = {"short_term": "30%", "long_term": "15%", "long_term_days": 365,
                  "futures": "25%", "lot_method": "fifo", "harvest_losses": True, "gamma": 2.0}
    doc["lots"] = [
        {"asset": "BTC", "quantity": 0.04, "cost_basis": 20_000.0, "acquired": date(2022, 1, 5)},
        {"asset": "BTC", "quantity": 0.06, "cost_basis": 58_000.0,
         "acquired": datetime(2024, 3, 1, 12, tzinfo=UTC)},
        {"asset": "ETH", "quantity": 1.0, "cost_basis": 3_000.0, "acquired": "2023-08-01"},
        {"asset": "SOL", "quantity": 10.0, "cost_basis": 20.0, "acquired": date(2023, 1, 1)},
    ]
    return doc


def _load(tmp_path: Path, doc: dict[str, Any]) -> Any:
    path = tmp_path / "book.toml"
    path.write_text(tomli_w.dumps(doc), encoding="utf-8")
    return load_book_file(path)


def _error(tmp_path: Path, doc: dict[str, Any]) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        _load(tmp_path, doc)
    return info.value


def test_no_sections_leave_the_spot_leg_off(tmp_path: Path) -> None:
    doc = tomllib.loads((EXAMPLES / "seed_example_1.toml").read_text(encoding="utf-8"))
    assert _load(tmp_path, doc).settings.spot == SpotLegSettings()
    assert "tax" in TOP_LEVEL_KEYS and "lots" in TOP_LEVEL_KEYS


def test_tax_and_lots_parse(tmp_path: Path) -> None:
    spot = _load(tmp_path, _doc()).settings.spot
    assert spot.enabled and spot.lot_method is LotMethod.FIFO and spot.harvest_losses
    assert spot.gamma_tax == 2.0 and spot.cash_usd == 0.0
    assert spot.rates == TaxRates(0.30, 0.15, 365, 0.25)
    assert spot.lots["BTC"] == (TaxLot(0.04, 20_000.0, datetime(2022, 1, 5, tzinfo=UTC)),
                                TaxLot(0.06, 58_000.0, datetime(2024, 3, 1, 12, tzinfo=UTC)))
    assert [lot.quantity for lot in spot.lots["SOL"]] == [10.0]
    # [tax] and [[lots]] without spot_leg: parsed and checked, the leg stays off
    doc = _doc()
    del doc["solver"]
    off = _load(tmp_path, doc).settings.spot
    assert not off.enabled and off.rates is not None


def test_spot_leg_without_tax_has_no_tax_term(tmp_path: Path) -> None:
    doc = _doc()
    del doc["tax"], doc["lots"]
    doc["solver"]["spot_cash_usd"] = 500.0
    spot = _load(tmp_path, doc).settings.spot
    assert spot.enabled and spot.rates is None and spot.lots == {} and spot.cash_usd == 500.0


def test_lots_must_sum_to_the_spot_quantity(tmp_path: Path) -> None:
    doc = _doc()
    doc["lots"][1]["quantity"] = 0.05
    err = _error(tmp_path, doc)
    assert err.field == "lots.BTC"
    assert "0.09 units" in str(err) and "holds 0.1 units of BTC" in str(err)
    # an asset held without any lot is the same mismatch
    doc = _doc()
    doc["lots"] = [lot for lot in doc["lots"] if lot["asset"] != "SOL"]
    err = _error(tmp_path, doc)
    assert err.field == "lots.SOL" and "add up to 0 units" in str(err) and "holds 10 units" in str(err)


def test_lot_sum_tolerance_is_1e9_relative(tmp_path: Path) -> None:
    doc = _doc()
    doc["lots"][3]["quantity"] = 10.0 * (1 + 5e-10)
    assert _load(tmp_path, doc).settings.spot.enabled
    doc["lots"][3]["quantity"] = 10.0 * (1 + 5e-9)
    assert _error(tmp_path, doc).field == "lots.SOL"


@pytest.mark.parametrize(("change", "field"), [
    (lambda d: d["tax"].update(lot_method="lifo"), "tax.lot_method"),
    (lambda d: d["tax"].update(short_term="130%"), "tax.short_term"),
    (lambda d: d["tax"].pop("long_term"), "tax.long_term"),
    (lambda d: d["tax"].update(long_term_days=365.5), "tax.long_term_days"),
    (lambda d: d["tax"].update(rate=0.2), "tax.rate"),
    (lambda d: d["lots"][0].update(asset="DOGE"), "lots[0].asset"),
    (lambda d: d["lots"][0].update(quantity=0.0), "lots[0].quantity"),
    (lambda d: d["lots"][0].update(cost_basis=-1.0), "lots[0].cost_basis"),
    (lambda d: d["lots"][0].pop("acquired"), "lots[0].acquired"),
    (lambda d: d["lots"][0].update(acquired="yesterday"), "lots[0].acquired"),
    (lambda d: d["lots"][0].update(basis=1.0), "lots[0].basis"),
    (lambda d: d.pop("tax"), "lots"),
    (lambda d: d["solver"].update(spot_leg="yes"), "solver.spot_leg"),
])
def test_bad_tax_inputs_name_the_field(tmp_path: Path, change: Any, field: str) -> None:
    doc = _doc()
    change(doc)
    assert _error(tmp_path, doc).field == field


def test_a_taxed_book_file_solves_and_reports_the_spot_leg(tmp_path: Path) -> None:
    doc = _doc()
    doc["tax"]["lot_method"] = "hifo"
    # (with harvest_losses the ETH loss lot would be sold too, its exposure kept by a long future)
    doc["tax"]["harvest_losses"] = False
    doc["costs"] = {"trading": True, "carry": False, "impact": False}
    # BTC futures capped far below the 1,000 USD short the target needs: the rest is sold as spot
    doc["constraints"] = {"margin": False, "caps_usd": {"BTC-PERP": 400.0},
                          "clusters": [{"name": "btc", "assets": ["BTC"], "band": 0.0}]}
    doc["solver"]["round_lots"] = False
    loaded = _load(tmp_path, doc)
    sol = Rebalancer().solve(loaded.book, loaded.market, loaded.risk, loaded.settings)
    (btc,) = [t for t in sol.spot_trades if t.asset == "BTC"]
    # 600 USD = 0.01 BTC from the short-term 58,000 lot (600 USD/BTC of tax, not the long-term
    # 20,000 lot's 6,000 USD/BTC): 0.3 x 2,000 x 0.01 = 6.00 USD
    assert btc.notional == pytest.approx(-600.0, abs=1e-4)
    assert round(btc.tax, 2) == 6.00 and sol.spot_costs is not None
    path = tmp_path / "cli.toml"
    path.write_text(tomli_w.dumps(doc), encoding="utf-8")
    res = CliRunner().invoke(app, ["solve", str(path), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert round(out["spot_costs"]["tax"], 2) == 6.00 and out["spot_costs"]["lot_method"] == "hifo"
    res = CliRunner().invoke(app, ["solve", str(path)])
    assert res.exit_code == 0 and "Trades (spot leg)" in res.stdout


def test_price_futures_reaches_the_spot_leg(tmp_path: Path) -> None:
    assert not _load(tmp_path, _doc()).settings.spot.futures_tax
    doc = _doc()
    doc["tax"]["price_futures"] = True
    assert _load(tmp_path, doc).settings.spot.futures_tax
    doc["tax"]["price_futures"] = "yes"
    assert _error(tmp_path, doc).field == "tax.price_futures"


def test_a_lot_acquired_after_the_market_time_names_its_row(tmp_path: Path) -> None:
    """The seed book's market time is 2024-06-01: a lot bought later is refused at load, naming
    the [[lots]] row (the solve used to fail on it with a bare 'lot.acquired')."""
    doc = _doc()
    doc["lots"][2]["acquired"] = "2024-07-01"
    err = _error(tmp_path, doc)
    assert err.field == "lots[2].acquired" and "after the market time" in str(err)
    doc["lots"][2]["acquired"] = "2024-06-01"  # the market time itself is fine
    assert _load(tmp_path, doc).settings.spot.lots["ETH"][0].acquired == datetime(2024, 6, 1,
                                                                                   tzinfo=UTC)
