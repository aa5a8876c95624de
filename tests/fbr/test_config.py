"""Book files (fbr.config): the examples load as documented, and every bad input gets one clear
error that names the TOML field and quotes the offending value. No network."""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import tomli_w

import fbr
from fbr.config import LoadedBook, load_book_file, parse_book
from models.book import TargetsBase
from models.errors import ConfigError, ValidationError
from models.instruments import ContractKind, MarginTiers, Settlement
from optimizer.rebalance import Rebalancer

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
TIERS_NAME = "binance_usdm_leverage_tiers_2026-05-07.csv.gz"
TEN = ["BTC", "ETH", "SOL", "BNB", "XRP", "ADA", "DOGE", "AVAX", "LINK", "LTC"]


def seed_doc() -> dict[str, Any]:
    """The parsed seed example 1, to be mutated by a test."""
    return tomllib.loads((EXAMPLES / "seed_example_1.toml").read_text(encoding="utf-8"))


def write(tmp_path: Path, doc: dict[str, Any], name: str = "book.toml") -> Path:
    path = tmp_path / name
    path.write_text(tomli_w.dumps(doc), encoding="utf-8")
    return path


def load_mutated(tmp_path: Path, change: Callable[[dict[str, Any]], object]) -> LoadedBook:
    doc = seed_doc()
    change(doc)
    return load_book_file(write(tmp_path, doc))


def error_of(tmp_path: Path, change: Callable[[dict[str, Any]], object]) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        load_mutated(tmp_path, change)
    return info.value


# ---------------------------------------------------------------------------------------------
# the examples
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "values"), [
    ("seed_example_1.toml", [6000.0, 2500.0, 1500.0]),
    ("seed_example_2.toml", [5500.0, 2000.0, 2500.0]),
])
def test_seed_examples_load(name: str, values: list[float]) -> None:
    lb = load_book_file(EXAMPLES / name)
    book, market = lb.book, lb.market
    assert book.asset_symbols == ["BTC", "ETH", "SOL"]
    assert book.spot_values(market).tolist() == values  # exactly
    assert dict(book.targets) == {"BTC": 0.5, "ETH": 0.3, "SOL": 0.2}
    assert book.cash == 3000.0
    assert book.targets_base == TargetsBase.INVESTED
    assert book.base(market) == 10_000.0
    assert book.contract_symbols == ["BTC-PERP", "ETH-PERP", "SOL-PERP"]
    for c in book.contracts:
        assert c.kind == ContractKind.PERPETUAL and c.settlement == Settlement.LINEAR
        assert c.lot_step == 1e-8 and c.min_notional == 0.0
        assert market.mark_price(c.symbol) == market.spot_price(c.underlying)
    assert not market.synthetic
    s = lb.settings
    assert not (s.costs.trading or s.costs.carry or s.costs.impact)
    assert not s.constraints.margin and not s.basis_risk
    assert s.constraints.stress == () and s.constraints.clusters == ()
    assert s.constraints.max_gross_leverage is None and s.constraints.vol_cap is None
    assert np.allclose(lb.risk.vol, [0.55, 0.70, 0.95])
    corr = lb.risk.correlation()
    assert np.allclose(corr[~np.eye(3, dtype=bool)], 0.7)
    assert lb.labels and all(isinstance(x, str) for x in lb.labels)


def test_seed_example_naive_answer_is_one_cent_lot_safe() -> None:
    """The naive overlay B x = w* V - spot, and lot steps far below a cent at these prices."""
    lb = load_book_file(EXAMPLES / "seed_example_1.toml")
    V = lb.book.base(lb.market)
    naive = lb.book.target_vector() * V - lb.book.spot_values(lb.market)
    assert np.allclose(naive, [-1000.0, 500.0, 500.0])
    for c in lb.book.contracts:
        lot_usd = c.lot_step * c.notional_per_contract(lb.market.mark_price(c.symbol))
        assert lot_usd < 0.01


def test_default_book_is_package_data() -> None:
    path = Path(fbr.__file__).parent / "data" / "seed_example_1.toml"
    lb = load_book_file(path)
    assert lb.book.spot_values(lb.market).tolist() == [6000.0, 2500.0, 1500.0]


def test_ten_assets_synthetic() -> None:
    lb = load_book_file(EXAMPLES / "ten_assets.toml")
    book, market = lb.book, lb.market
    assert book.asset_symbols == TEN
    assert len(book.contracts) == 10
    assert market.synthetic
    assert any("synthetic" in label for label in lb.labels)
    assert np.allclose(book.spot_values(market).sum(), 100_000.0)
    assert math.isclose(sum(book.targets.values()), 1.0)
    # spot drifted from target by 3-5 pp on six assets
    drift = book.spot_values(market) / book.base(market) - book.target_vector()
    assert np.sum(np.abs(drift) >= 0.03 - 1e-9) >= 4
    assert lb.risk.symbols == tuple(TEN)
    assert np.all(lb.risk.vol > 0)
    c = lb.settings.constraints
    assert c.margin and c.max_gross_leverage is not None
    assert len(c.stress) == 2 and c.stress[0].common == pytest.approx(-0.3)
    assert c.clusters[0].band == pytest.approx(0.01)
    assert lb.settings.costs.trading and lb.settings.costs.carry


def test_ten_assets_is_deterministic() -> None:
    a = load_book_file(EXAMPLES / "ten_assets.toml")
    b = load_book_file(EXAMPLES / "ten_assets.toml")
    assert dict(a.market.spot) == dict(b.market.spot)
    assert np.array_equal(a.risk.covariance, b.risk.covariance)


def _assert_continuous(tiers: MarginTiers) -> None:
    """MM has no jump at any bracket edge and the convex form equals the bracket lookup."""
    for lo, hi in zip(tiers.brackets, tiers.brackets[1:], strict=False):
        edge = hi.min_notional
        assert lo.max_notional == edge
        left = lo.mmr * edge - lo.cum
        right = hi.mmr * edge - hi.cum
        assert abs(left - right) <= 1e-6 * max(1.0, edge)
    edges = [b.min_notional for b in tiers.brackets] + [tiers.brackets[-1].max_notional * 0.999]
    rng = np.random.default_rng(3)
    points = np.concatenate([edges, rng.uniform(0, tiers.brackets[-1].max_notional, 200)])
    for n in points:
        assert tiers.maintenance(n) == pytest.approx(tiers.bracket_lookup(float(n)), abs=1e-6)


def test_ten_assets_tiers_continuous() -> None:
    lb = load_book_file(EXAMPLES / "ten_assets.toml")
    sizes = {c.symbol: len(c.tiers.brackets) for c in lb.book.contracts}
    assert sizes["BTC-PERP"] == 9 and sizes["SOL-PERP"] == 9 and sizes["ADA-PERP"] == 8
    for c in lb.book.contracts:
        _assert_continuous(c.tiers)
        assert c.tiers.brackets[0].max_leverage >= c.leverage


# ---------------------------------------------------------------------------------------------
# features of the format
# ---------------------------------------------------------------------------------------------
def test_spot_usd_percent_strings_and_contract_defaults(tmp_path: Path) -> None:
    def change(doc: dict[str, Any]) -> None:
        doc["spot_usd"] = {"BTC": 6000.0, "ETH": 2500.0}
        doc["spot"] = {"SOL": 10.0}
        doc["targets"] = {"BTC": "50%", "ETH": 0.3, "SOL": "20%"}
        doc["contract_defaults"]["taker_fee"] = "4bp"
        doc["contracts"] = [{"symbol": "BTCUSDT", "underlying": "BTC", "taker_fee": 0.001},
                            {"symbol": "ETHUSDT", "underlying": "ETH"}]
    lb = load_mutated(tmp_path, change)
    assert np.allclose(lb.book.spot_values(lb.market), [6000.0, 2500.0, 1500.0])
    assert dict(lb.book.targets) == {"BTC": 0.5, "ETH": 0.3, "SOL": 0.2}
    fees = {c.symbol: c.taker_fee for c in lb.book.contracts}
    assert fees == {"BTCUSDT": 0.001, "ETHUSDT": pytest.approx(0.0004)}
    assert lb.book.contracts[0].lot_step == 1e-8


def test_inline_tiers_cum_computed_and_named_schedule(tmp_path: Path) -> None:
    def change(doc: dict[str, Any]) -> None:
        doc["tier_schedules"] = {"flat": [{"max_notional": 1e9, "max_leverage": 20, "mmr": 0.01}]}
        doc["contract_defaults"]["tiers"] = "flat"
        doc["contracts"] = [
            {"symbol": "BTC-PERP", "underlying": "BTC", "tiers": [
                {"max_notional": 50_000, "max_leverage": 125, "mmr": "0.4%"},
                {"max_notional": 250_000, "max_leverage": 100, "mmr": 0.005},
                {"min_notional": 250_000, "max_notional": 1e6, "max_leverage": 50, "mmr": 0.01,
                 "cum": 1300}]},
            {"symbol": "ETH-PERP", "underlying": "ETH"},
        ]
    lb = load_mutated(tmp_path, change)
    btc, eth = lb.book.contracts
    assert [b.cum for b in btc.tiers.brackets] == pytest.approx([0.0, 50.0, 1300.0])
    _assert_continuous(btc.tiers)
    assert eth.tiers.brackets[0].mmr == 0.01 and len(eth.tiers.brackets) == 1


def test_futures_pledged_constraints_solver(tmp_path: Path) -> None:
    def change(doc: dict[str, Any]) -> None:
        doc["futures"] = [{"symbol": "BTC-PERP", "contracts": -0.01, "entry_price": 58000.0}]
        doc["pledged"] = {"BTC": "95%"}
        doc["constraints"] = {
            "margin": True, "margin_buffer_usd": 100, "max_gross_leverage": 1.2,
            "caps_usd": {"BTC-PERP": 5000}, "default_cap_usd": 3000, "vol_cap": "80%",
            "rho_min": 0.5, "funding_budget_usd": 10, "trade_limit_adv": "1%",
            "trade_limit_usd": 2000,
            "stress": [{"name": "crash", "returns": {"BTC": "-40%"}, "common": -0.3}],
            "clusters": [{"name": "alts", "assets": ["ETH", "SOL"], "band": "2%"}],
        }
        doc["costs"] = {"trading": True, "impact": True, "impact_k": 0.5, "carry": True,
                        "gamma_trade": 2.0, "gamma_fund": 1.0, "horizon_days": 7}
        doc["solver"] = {"solvers": ["clarabel", "SCS"], "objective_scale": 100,
                         "round_lots": False}
    lb = load_mutated(tmp_path, change)
    pos = lb.book.futures["BTC-PERP"]
    assert pos.contracts == -0.01 and pos.entry_price == 58000.0
    assert lb.book.unrealized_pnl(lb.market) == pytest.approx(-0.01 * (60000 - 58000))
    assert dict(lb.book.pledged) == {"BTC": 0.95}
    c = lb.settings.constraints
    assert c.margin and c.margin_buffer_usd == 100 and c.vol_cap == pytest.approx(0.8)
    assert dict(c.caps_usd) == {"BTC-PERP": 5000.0} and c.trade_limit_adv == pytest.approx(0.01)
    assert c.stress[0].returns == {"BTC": pytest.approx(-0.4)} and c.stress[0].common == -0.3
    assert c.clusters[0].assets == ("ETH", "SOL") and c.clusters[0].band == pytest.approx(0.02)
    assert lb.settings.costs.impact and lb.settings.costs.horizon_days == 7
    assert [s.value for s in lb.settings.solvers] == ["CLARABEL", "SCS"]
    assert lb.settings.objective_scale == 100 and not lb.settings.round_lots


def test_correlation_matrix_in_vols_order(tmp_path: Path) -> None:
    def change(doc: dict[str, Any]) -> None:
        doc["risk"]["vols"] = {"SOL": 0.9, "BTC": 0.5, "ETH": "70%"}
        doc["risk"]["correlation"] = [[1.0, 0.6, 0.7], [0.6, 1.0, 0.8], [0.7, 0.8, 1.0]]
    lb = load_mutated(tmp_path, change)
    assert lb.risk.symbols == ("BTC", "ETH", "SOL")  # book order
    assert np.allclose(lb.risk.vol, [0.5, 0.7, 0.9])
    corr = lb.risk.correlation()
    assert corr[0, 1] == pytest.approx(0.8) and corr[0, 2] == pytest.approx(0.6)
    assert corr[1, 2] == pytest.approx(0.7)


def test_synthetic_market_with_explicit_override(tmp_path: Path) -> None:
    def change(doc: dict[str, Any]) -> None:
        doc["market"] = {"source": "synthetic", "seed": 3, "days": 400,
                         "spot": {"BTC": 50_000.0}, "funding": {"ETH-PERP": "0.02%"}}
        doc["risk"] = {"source": "synthetic", "method": "ewma", "lookback_days": 200,
                       "basis_risk": True}
    lb = load_mutated(tmp_path, change)
    assert lb.market.synthetic and lb.market.spot_price("BTC") == 50_000.0
    assert lb.market.funding_rate("ETH-PERP") == pytest.approx(0.0002)
    assert lb.book.spot_values(lb.market)[0] == pytest.approx(5000.0)
    assert lb.risk.basis_cov is not None and lb.risk.basis_cov.shape == (3, 3)
    assert lb.settings.basis_risk
    assert any("200 days" in label for label in lb.labels)


def test_single_asset_needs_no_correlation(tmp_path: Path) -> None:
    def change(doc: dict[str, Any]) -> None:
        doc["targets"] = {"BTC": 1.0}
        doc["spot"] = {"BTC": 0.1}
        doc["market"]["spot"] = {"BTC": 60000.0}
        doc["risk"] = {"vols": {"BTC": "55%"}}
    lb = load_mutated(tmp_path, change)
    assert lb.risk.vol == pytest.approx([0.55])


def test_parse_book_from_dict() -> None:
    lb = parse_book(seed_doc())
    assert lb.book.name == "seed example 1"
    bad = seed_doc()
    bad["targets"]["BTC"] = 0.8
    with pytest.raises(ValidationError) as info:
        parse_book(bad)
    assert info.value.field == "targets" and "(in " not in str(info.value)


@pytest.mark.shared_data
def test_tiers_from_file(tmp_path: Path, shared_data_dir: Path) -> None:
    def change(doc: dict[str, Any]) -> None:
        doc["contract_defaults"]["tiers_from"] = {"file": str(shared_data_dir / "markets" / TIERS_NAME),
                                                  "symbol": "BTC/USDT:USDT"}
    lb = load_mutated(tmp_path, change)
    tiers = lb.book.contracts[0].tiers
    assert len(tiers.brackets) > 3 and tiers.brackets[0].min_notional == 0
    _assert_continuous(tiers)


@pytest.mark.shared_data
def test_data_market_and_risk(tmp_path: Path, shared_data_dir: Path) -> None:
    def change(doc: dict[str, Any]) -> None:
        doc["market"] = {"source": "data", "data_dir": str(shared_data_dir), "time": "2024-06-01"}
        doc["risk"] = {"source": "data", "lookback_days": 180}
    with pytest.warns(UserWarning):  # SOL starts later than BTC/ETH: the loader says so
        lb = load_mutated(tmp_path, change)
    assert not lb.market.synthetic
    assert lb.market.time == pd.Timestamp("2024-06-01", tz="UTC")  # close of the 05-31 bar
    assert 20_000 < lb.market.spot_price("BTC") < 100_000
    assert lb.market.mark_price("BTC-PERP") != lb.market.spot_price("BTC")  # perp_mark_4h close
    assert lb.market.funding_rate("BTC-PERP") != 0.0  # the last settled rate
    assert lb.risk.symbols == ("BTC", "ETH", "SOL") and np.all(lb.risk.vol > 0.1)


# ---------------------------------------------------------------------------------------------
# bad input: one clear error naming the field and quoting the value
# ---------------------------------------------------------------------------------------------
def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml.*does not exist"):
        load_book_file(tmp_path / "nope.toml")


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('[book]\nname = "caf\u00e9"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.toml.*cannot be read"):
        load_book_file(path)


def test_default_name_is_file_stem(tmp_path: Path) -> None:
    doc = seed_doc()
    del doc["book"]["name"]
    assert load_book_file(write(tmp_path, doc, "my_fund.toml")).book.name == "my_fund"


def test_malformed_toml(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('[book]\nname = "x"\ncash = 3000 USD\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_book_file(path)
    msg = str(info.value)
    assert "broken.toml" in msg and "line 3" in msg and "column" in msg
    assert "cash = 3000 USD" in msg  # the offending line is quoted


def _unknown_target(doc: dict[str, Any]) -> None:
    doc["assets"] = [{"symbol": s} for s in ("BTC", "ETH", "SOL")]
    doc["targets"]["DOGE"] = 0.0


BAD_CASES: list[tuple[str, Callable[[dict[str, Any]], object], str, str]] = [
    ("unknown section", lambda d: d.update(costz={"trading": False}), "costz", "costs"),
    ("unknown key", lambda d: d["book"].update(csh=1.0), "book.csh", "cash"),
    ("weights sum to 1.3",
     lambda d: d["targets"].update(BTC=0.8), "targets", "1.3"),
    ("negative price", lambda d: d["market"]["spot"].update(BTC=-60000.0),
     "market.spot.BTC", "-60000"),
    ("nan price", lambda d: d["market"]["spot"].update(ETH=math.nan), "market.spot.ETH", "nan"),
    ("nan weight", lambda d: d["targets"].update(SOL=math.nan), "targets.SOL", "nan"),
    ("target for unknown symbol", _unknown_target, "targets.DOGE", "DOGE"),
    ("contract without a price",
     lambda d: d["market"].pop("mark_from_spot"), "market.mark.BTC-PERP", "mark_from_spot"),
    ("unknown underlying",
     lambda d: d.update(contracts=[{"symbol": "XRP-PERP", "underlying": "XRP"}]),
     "contracts[0].underlying", "XRP"),
    ("correlation not symmetric",
     lambda d: d["risk"].update(correlation=[[1, 0.5, 0.5], [0.6, 1, 0.5], [0.5, 0.5, 1]]),
     "risk.correlation[0][1]", "0.6"),
    ("correlation not PSD",
     lambda d: d["risk"].update(correlation=[[1, 0.9, -0.9], [0.9, 1, 0.9], [-0.9, 0.9, 1]]),
     "risk.correlation", "semi-definite"),
    ("correlation wrong size",
     lambda d: d["risk"].update(correlation=[[1, 0.5], [0.5, 1]]), "risk.correlation", "3 x 3"),
    ("common correlation not PSD",
     lambda d: d["risk"].update(correlation=-0.9), "risk.correlation", "-0.9"),
    ("zero vol", lambda d: d["risk"]["vols"].update(ETH=0.0), "risk.vols.ETH", "0.0"),
    ("negative vol", lambda d: d["risk"]["vols"].update(SOL="-5%"), "risk.vols.SOL", "-5%"),
    ("missing vol", lambda d: d["risk"]["vols"].pop("SOL"), "risk.vols", "SOL"),
    ("text instead of number",
     lambda d: d["targets"].update(BTC="half"), "targets.BTC", "half"),
    ("bool instead of number", lambda d: d["book"].update(cash=True), "book.cash", "True"),
    ("bad targets_base",
     lambda d: d["book"].update(targets_base="all"), "book.targets_base", "all"),
    ("discontinuous cum",
     lambda d: d["contract_defaults"].update(tiers=[
         {"max_notional": 50_000, "max_leverage": 125, "mmr": 0.004, "cum": 0},
         {"max_notional": 250_000, "max_leverage": 100, "mmr": 0.005, "cum": 500}]),
     "contract_defaults.tiers[1].cum", "set cum = 50"),
    ("stress return <= -1",
     lambda d: d["constraints"].update(stress=[{"name": "x", "common": "-100%"}]),
     "constraints.stress[0].common", "-100%"),
    ("cluster with unknown asset",
     lambda d: d["constraints"].update(clusters=[{"assets": ["ETH", "SOLL"], "band": 0.01}]),
     "constraints.clusters[0].assets", "SOLL"),
    ("cap for unknown contract",
     lambda d: d["constraints"].update(caps_usd={"BTC": 1000}), "constraints.caps_usd.BTC",
     "BTC-PERP"),
    ("unknown solver",
     lambda d: d.update(solver={"solvers": ["gurobi"]}), "solver.solvers[0]", "gurobi"),
    ("estimate keys on an explicit risk model",
     lambda d: d["risk"].update(lookback_days=90), "risk.lookback_days", "90"),
    ("position in an unknown contract",
     lambda d: d.update(futures=[{"symbol": "BTCUSDT", "contracts": 1, "entry_price": 1}]),
     "futures[0].symbol", "BTCUSDT"),
    ("haircut above 1", lambda d: d.update(pledged={"BTC": 1.5}), "pledged.BTC", "1.5"),
    ("negative spot", lambda d: d["spot"].update(BTC=-0.1), "spot.BTC", "-0.1"),
    ("spot given twice", lambda d: d.update(spot_usd={"BTC": 6000}), "spot_usd.BTC", "6000"),
    ("leverage above the tiers",
     lambda d: d["contract_defaults"].update(leverage=50), "contract_defaults.leverage", "50"),
    ("dated future without expiry",
     lambda d: d["contract_defaults"].update(kind="dated"), "contracts[0].expiry", "missing"),
    ("negative lot step",
     lambda d: d.update(contracts=[{"symbol": "B", "underlying": "BTC", "lot_step": -1}]),
     "contracts[0].lot_step", "-1"),
    ("bracket leverage 0",
     lambda d: d["contract_defaults"].update(tiers=[
         {"max_notional": 1e6, "max_leverage": 0, "mmr": 0.01}]),
     "contract_defaults.tiers[0].max_leverage", "0"),
    ("no risk model", lambda d: d.pop("risk"), "risk", "risk.vols"),
    ("tiers_from file missing",
     lambda d: d["contract_defaults"].update(tiers_from={"file": "no/such.csv",
                                                         "symbol": "BTC/USDT:USDT"}),
     "contract_defaults.tiers_from.file", "no/such.csv"),
    ("carry horizon past ten years (1e308 overflowed the objective)",
     lambda d: d["costs"].update(horizon_days=1e308), "costs.horizon_days", "1e+308"),
]


@pytest.mark.parametrize(("change", "field", "quoted"),
                         [pytest.param(c, f, q, id=name) for name, c, f, q in BAD_CASES])
def test_bad_input(tmp_path: Path, change: Callable[[dict[str, Any]], object], field: str,
                   quoted: str) -> None:
    err = error_of(tmp_path, change)
    msg = str(err)
    assert field in err.field, msg
    assert field in msg and quoted in msg, msg
    assert "Fix:" in msg and "book.toml" in msg  # says how to fix it, and in which file


def test_unknown_key_lists_valid_ones(tmp_path: Path) -> None:
    err = error_of(tmp_path, lambda d: d["constraints"].update(max_gross_leverge=2.0))
    assert err.field == "constraints.max_gross_leverge"
    assert "did you mean 'max_gross_leverage'" in str(err)
    assert "margin_buffer_usd" in err.fix  # the valid keys are listed


def test_nan_literal_in_toml_text(tmp_path: Path) -> None:
    """TOML has a nan literal: it must be refused, not silently used."""
    text = (EXAMPLES / "seed_example_1.toml").read_text(encoding="utf-8")
    path = tmp_path / "nan.toml"
    path.write_text(text.replace("BTC = 60000.0", "BTC = nan"), encoding="utf-8")
    with pytest.raises(ValidationError, match=r"market\.spot\.BTC: is nan"):
        load_book_file(path)


def test_seed_doc_is_not_shared_between_tests() -> None:
    """A change to one seed_doc() leaves the next call's as the file has it (BTC = 0.5)."""
    a = seed_doc()
    a["targets"]["BTC"] = 0.1
    assert seed_doc()["targets"]["BTC"] == 0.5


@pytest.mark.parametrize("kind", ["book", "backtest", "montecarlo", "scenario"])
def test_one_reader_and_one_error_for_every_input_file(tmp_path: Path, kind: str) -> None:
    """Book, backtest, Monte Carlo and scenario files are read by models.toml_file.read_toml: a
    missing file and a syntax error are the same ConfigError, naming the file (line, column)."""
    from fbr.backtest_config import load_backtest_file
    from fbr.montecarlo_config import load_montecarlo_file
    from scenarios.library import load_scenario_file

    load: Callable[[Path], object] = {"book": load_book_file, "backtest": load_backtest_file,
                                      "montecarlo": load_montecarlo_file,
                                      "scenario": load_scenario_file}[kind]
    with pytest.raises(ConfigError, match=rf"{kind} file .*nope\.toml.* does not exist\. Fix: "):
        load(tmp_path / "nope.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text('name = "x"\ncash = 3000 USD\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load(broken)
    msg = str(info.value)
    assert "broken.toml, line" in msg and "column" in msg and "not valid TOML" in msg
    assert "Fix:" in msg


def test_market_adv_takes_assets_for_the_spot_legs_impact(tmp_path: Path) -> None:
    """[market.adv] keyed by an asset is the spot market's volume (it was refused as 'not a
    contract', so the spot leg never paid impact): with the spot leg on and the futures capped,
    the spot impact of the solve is k sigma_daily sqrt(V / ADV) |t / V|^1.5 V per asset, by hand."""
    def change(doc: dict[str, Any]) -> None:
        doc["market"]["adv"] = {"BTC": 1e6, "ETH": 2e6, "SOL": 5e5}
        doc["costs"]["impact"] = True
        doc["constraints"]["caps_usd"] = {"BTC-PERP": 1.0, "ETH-PERP": 1.0, "SOL-PERP": 1.0}
        doc["solver"] = {"spot_leg": True}

    loaded = load_mutated(tmp_path, change)
    assert dict(loaded.market.adv) == {"BTC": 1e6, "ETH": 2e6, "SOL": 5e5}
    sol = Rebalancer().solve(loaded.book, loaded.market, loaded.risk, loaded.settings)
    assert sol.status == "optimal" and sol.spot_costs is not None
    V = 10_000.0
    vols = {"BTC": 0.55, "ETH": 0.70, "SOL": 0.95}
    k = loaded.settings.costs.impact_k
    want = sum(k * vols[t.asset] / math.sqrt(365.0) * math.sqrt(V / loaded.market.adv[t.asset])
               * abs(t.notional / V) ** 1.5 * V for t in sol.spot_trades)
    assert want > 0.01 and sol.spot_costs.impact == pytest.approx(want, rel=1e-9)
    bad = error_of(tmp_path, lambda d: d["market"].update(adv={"DOGE": 1e6}))
    assert "market.adv.DOGE" in str(bad) and "a contract or an asset of the book" in str(bad)


def test_a_cap_of_zero_keeps_a_contract_unused(tmp_path: Path) -> None:
    """[constraints.caps_usd] BTC-PERP = 0 (it was refused as "give a value > 0"): the BTC hedge
    is left undone (the seed book's naive overlay shorts 1,000 USD of it) and ETH and SOL take
    the least-squares hedge of the rest, by hand: with d = s - w* = (+10, -5, -5) pp and z_BTC = 0,
    (z_ETH, z_SOL) solves Sigma_{ES,ES} (d_ES + z) = -Sigma_{ES,BTC} d_BTC (vols 0.55 / 0.70 /
    0.95, correlation 0.7, no costs). A negative cap is still refused."""
    loaded = load_mutated(tmp_path, lambda d: d["constraints"].update(caps_usd={"BTC-PERP": 0}))
    assert dict(loaded.settings.constraints.caps_usd) == {"BTC-PERP": 0.0}
    sol = Rebalancer().solve(loaded.book, loaded.market, loaded.risk, loaded.settings)
    assert sol.status == "optimal"
    x = {p.symbol: p.notional for p in sol.target_positions}
    assert x["BTC-PERP"] == pytest.approx(0.0, abs=1e-6)
    vol = np.array([0.55, 0.70, 0.95])
    cov = 0.7 * np.outer(vol, vol) + np.diag(0.3 * vol**2)
    d = np.array([0.10, -0.05, -0.05])
    z = np.linalg.solve(cov[1:, 1:], -cov[1:, 0] * d[0]) - d[1:]
    assert x["ETH-PERP"] == pytest.approx(z[0] * 10_000.0, abs=1e-3)
    assert x["SOL-PERP"] == pytest.approx(z[1] * 10_000.0, abs=1e-3)
    assert z[0] * 10_000.0 < 400.0  # less than the 500 USD without the cap: BTC's excess is hedged too
    bad = error_of(tmp_path, lambda d: d["constraints"].update(caps_usd={"BTC-PERP": -1}))
    assert "constraints.caps_usd.BTC-PERP" in str(bad) and "give a value >= 0" in str(bad)


@pytest.mark.parametrize(("spot_leg", "horizon", "forecast", "warned"), [
    (True, 7.0, None, True),          # the default "last" held for 21 settlements, spot leg on
    (True, 7.0, "ewma", False),
    (True, 1.0, None, False),         # a day: the horizon "last" was measured best on
    (False, 7.0, None, False),        # overlay only: no instrument to swap into
])
def test_last_forecast_over_a_long_horizon_with_the_spot_leg_warns_once(
        tmp_path: Path, spot_leg: bool, horizon: float, forecast: str | None, warned: bool) -> None:
    import warnings

    def change(doc: dict[str, Any]) -> None:
        doc.setdefault("costs", {}).update(carry=True, horizon_days=horizon)
        if forecast is not None:
            doc["costs"]["funding_forecast"] = forecast
        doc.setdefault("solver", {})["spot_leg"] = spot_leg

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = load_mutated(tmp_path, change)
    notes = [str(w.message) for w in caught if "funding_forecast" in str(w.message)]
    assert loaded.settings.spot.enabled is spot_leg
    assert len(notes) == (1 if warned else 0)
    if warned:
        assert "horizon_days = 7" in notes[0] and 'funding_forecast = "ewma"' in notes[0]
