"""`fbr backtest` end to end (subprocess, like test_cli.py), bad backtest files as one clear message,
and the backtest file loader's pieces in-process (policy building, trailing risk without look-ahead).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_helpers import run_fbr

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
DEMO = EXAMPLES / "backtest_demo.toml"
POLICY_NAMES = ["buy and hold", "spot monthly", "spot band 5%", "naive futures weekly",
                "naive futures band 5%", "naive edge band 5%", "naive TE band 1%", "optimised"]




def test_backtest_json_every_policy_deterministic(tmp_path: Path) -> None:
    report = tmp_path / "report" / "bt.html"
    runs = [run_fbr("backtest", str(DEMO), "--json", "--report", str(report)) for _ in range(2)]
    for proc in runs:
        assert proc.returncode == 0, proc.stderr
        assert "Traceback" not in proc.stderr
    first, second = (json.loads(p.stdout) for p in runs)
    # same file -> identical JSON, apart from the wall-clock solver timings (kept separately)
    first.pop("timings", None)
    second.pop("timings", None)
    assert json.dumps(first) == json.dumps(second)
    res = first
    # the README's keys, every one present (notes empty when there is nothing to note)
    assert set(res) | {"timings"} >= {"status", "policies", "report", "labels", "span", "timings",
                                      "notes"}
    assert "timings" in json.loads(runs[0].stdout) and isinstance(res["notes"], list)
    assert list(res["policies"]) == POLICY_NAMES
    for name, m in res["policies"].items():
        for key in ("tracking_error", "total_return", "volatility", "max_drawdown", "fees_bps",
                    "funding_bps", "turnover", "peak_margin_ratio", "liquidations"):
            assert key in m, (name, key)
        assert m["tracking_error"] is not None and m["tracking_error"] >= 0
    pol = res["policies"]
    assert pol["buy and hold"]["turnover"] == 0.0
    # the optimiser tracks the target better than buy and hold on this path
    assert pol["optimised"]["tracking_error"] < pol["buy and hold"]["tracking_error"]
    assert any("SYNTHETIC" in label for label in res["labels"])
    assert res["report"] == str(report)
    assert report.is_file() and report.stat().st_size > 0


def test_backtest_table_and_no_report(tmp_path: Path) -> None:
    cfg = tmp_path / "short.toml"
    text = DEMO.read_text().replace("days = 365", "days = 60")
    book = (EXAMPLES / "backtest_book.toml").as_posix()
    text = text.replace('book = "backtest_book.toml"', f'book = "{book}"')
    cfg.write_text(text)
    proc = run_fbr("backtest", str(cfg), "--no-report")
    assert proc.returncode == 0, proc.stderr
    for head in ("policy", "TE %", "return %", "max DD %", "fees bp/yr", "funding bp/yr",
                 "peak margin %", "liquidations"):
        assert head in proc.stdout, head
    for name in POLICY_NAMES:
        assert name in proc.stdout
    assert "report written" not in proc.stdout


def _bad_config(tmp_path: Path, replace: tuple[str, str] | None = None, extra: str = "") -> Path:
    text = DEMO.read_text().replace("days = 365", "days = 30")
    text = text.replace('book = "backtest_book.toml"',
                        f'book = "{(EXAMPLES / "backtest_book.toml").as_posix()}"')
    if replace is not None:
        assert replace[0] in text
        text = text.replace(*replace)
    f = tmp_path / "bad.toml"
    f.write_text(text + extra)
    return f


BAD_CONFIGS: dict[str, tuple[tuple[str, str] | None, str, list[str]]] = {
    "unknown_kind": (('kind = "band_spot"', 'kind = "band_spots"'), "",
                     ["policies[2].kind", "band_spots", "band_spot"]),
    "bad_band": (('band = "5%"\nname = "spot band', 'band = -0.05\nname = "spot band'), "",
                 ["policies[2].band", "-0.05"]),
    "band_text": (('band = "5%"\nname = "spot band', 'band = "wide"\nname = "spot band'), "",
                  ["policies[2].band", "wide"]),
    "missing_book": (('book = "', 'book = "no/such/'), "", ["book", "does not exist"]),
    "unknown_key": (None, "\n[[policies]]\nkind = \"optimized\"\nname = \"x\"\ngama_trade = 2\n",
                    ["policies[8].gama_trade", "gamma_trade"]),
    "unknown_section": (None, "\n[report]\npath = 'x'\n", ["report", "valid keys"]),
    "bad_step": (('source = "synthetic"', 'source = "tick"'), "", ["data.source", "tick"]),
    "naive_without_trigger": (('period = "7D"\nname = "naive', 'name = "naive'), "",
                              ["policies[3]", "period"]),
    "bad_period": (('period = "7D"', 'period = "weekly"'), "", ["policies[3].period", "weekly"]),
    "collateral_key": (None, "\n[backtest.collateral]\ntarget = 0.2\n",
                       ["backtest.collateral.target", "target_fraction"]),
    "collateral_fraction": (None, "\n[backtest.collateral]\ntarget_fraction = 1.5\n",
                            ["backtest.collateral.target_fraction", "1.5"]),
    "duplicate_name": (('name = "spot monthly"', 'name = "buy and hold"'), "", ["buy and hold"]),
    "edge_without_band": (None, '\n[[policies]]\nkind = "edge_band_futures"\ninner = 0.5\n',
                          ["policies[8].band", "missing"]),
    "edge_inner": (None, '\n[[policies]]\nkind = "edge_band_futures"\nband = 0.02\ninner = 1.5\n',
                   ["policies[8].inner", "1.5"]),
    "edge_scaling": (None, '\n[[policies]]\nkind = "edge_band_futures"\nband = 0.02\nscaling = "log"\n',
                     ["policies[8].scaling", "log", "vol"]),
    "edge_window_uniform": (None, '\n[[policies]]\nkind = "edge_band_futures"\nband = 0.02\n'
                            'window = 20\n', ["policies[8].window", "scaling"]),
    "te_without_band": (None, '\n[[policies]]\nkind = "te_band_futures"\ninner = 0.5\n',
                        ["policies[8].te_band", "missing", "tracking error"]),
    "te_weight_band": (None, '\n[[policies]]\nkind = "te_band_futures"\nband = 0.01\n',
                       ["policies[8].band", "te_band"]),
    "te_inner": (None, '\n[[policies]]\nkind = "te_band_futures"\nte_band = 0.01\ninner = 2\n',
                 ["policies[8].inner", "2"]),
    "te_scaling": (None, '\n[[policies]]\nkind = "te_band_futures"\nte_band = 0.01\nscaling = "vol"\n',
                   ["policies[8].scaling"]),
    "te_risk_method": (None, '\n[[policies]]\nkind = "te_band_futures"\nte_band = 0.01\n'
                       'risk_method = "guess"\n', ["policies[8].risk_method", "guess"]),
}


#: Checked end to end (subprocess: exit code 2, one message, no traceback); the others in-process.
CLI_CASES = ("bad_band", "missing_book", "unknown_kind")


@pytest.mark.parametrize("case", CLI_CASES)
def test_bad_config_is_one_clear_message(case: str, tmp_path: Path) -> None:
    replace, extra, needles = BAD_CONFIGS[case]
    f = _bad_config(tmp_path, replace, extra)
    proc = run_fbr("backtest", str(f), "--json", "--no-report")
    assert proc.returncode == 2, proc.stdout
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in proc.stderr, (needle, proc.stderr)
    assert json.loads(proc.stdout)["status"] == "error"


@pytest.mark.parametrize("case", sorted(set(BAD_CONFIGS) - set(CLI_CASES)))
def test_bad_config_names_the_field(case: str, tmp_path: Path) -> None:
    from fbr.backtest_config import load_backtest_file
    from models.errors import ValidationError

    replace, extra, needles = BAD_CONFIGS[case]
    f = _bad_config(tmp_path, replace, extra)
    with pytest.raises(ValidationError) as info:
        load_backtest_file(f)
    message = str(info.value)
    for needle in needles:
        assert needle in message, (needle, message)
    assert "Fix" in message or "fix" in message.lower()


def test_malformed_toml(tmp_path: Path) -> None:
    f = tmp_path / "broken.toml"
    f.write_text('book = "x.toml"\n[[policies]\nkind = "no_rebalance"\n')
    proc = run_fbr("backtest", str(f))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "broken.toml" in proc.stderr and "line 2" in proc.stderr


def test_missing_backtest_file() -> None:
    proc = run_fbr("backtest", "no/such/backtest.toml")
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_demo_json_has_backtest() -> None:
    proc = run_fbr("demo", "--json")
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    for name in ("seed_example_1.toml", "seed_example_2.toml", "ten_assets.toml"):
        assert res[name]["status"] == "optimal"
    bt = res["backtest"]
    assert bt["report"] is None and bt["days"] == 180
    assert len(bt["policies"]) >= 3
    assert all(m["tracking_error"] is not None for m in bt["policies"].values())


def test_embedded_copies_match_examples() -> None:
    """The demo's embedded backtest files are the shipped examples, byte for byte."""
    for name in ("backtest_demo.toml", "backtest_book.toml"):
        assert (ROOT / "fbr" / "data" / name).read_bytes() == (EXAMPLES / name).read_bytes()


# ---------------------------------------------------------------------------------------------
# in-process: the loader's pieces


def test_every_policy_kind_builds(tmp_path: Path) -> None:
    from fbr.backtest_config import build_path, load_backtest_file
    from fbr.backtest_policies import POLICY_KINDS
    from fbr.backtest_run import build_policy

    f = _bad_config(tmp_path, extra="""
[[policies]]
kind = "vol_band_futures"
base_band = "4%"
window = 10
[[policies]]
kind = "dca_futures"
steps = 3
band = 0.05
[[policies]]
kind = "edge_band_futures"
band = "2%"
[[policies]]
kind = "te_band_futures"
te_band = "1%"
risk_lookback_days = 30
[[policies]]
kind = "optimized"
name = "optimised, trailing risk"
gamma_trade = 2.0
risk_lookback_days = 30
""")
    cfg = load_backtest_file(f)
    assert {p.kind for p in cfg.policies} == set(POLICY_KINDS)
    path = build_path(cfg)
    assert len(path.spot.index) == 30
    for spec in cfg.policies:
        policy = build_policy(spec, cfg, path)
        assert policy.name == spec.name
    opt = build_policy(cfg.policies[-1], cfg, path)
    assert opt.settings.costs.gamma_trade == 2.0  # type: ignore[attr-defined]


def test_edge_band_kind_builds_both_scalings(tmp_path: Path) -> None:
    """``edge_band_futures``: uniform by default, vol-scaled with scaling = "vol" (window, inner
    passed through); default names carry the parameters."""
    from fbr.backtest_config import build_path, load_backtest_file
    from fbr.backtest_run import build_policy
    from optimizer.edge_bands import EdgeBandFutures, VolScaledEdgeBandFutures

    f = _bad_config(tmp_path, extra="""
[[policies]]
kind = "edge_band_futures"
band = "3%"
[[policies]]
kind = "edge_band_futures"
band = 0.02
inner = "50%"
scaling = "VOL"
window = 10
""")
    cfg = load_backtest_file(f)
    uniform, vol = cfg.policies[-2:]
    assert uniform.params == {"band": 0.03} and uniform.name == "edge_band_futures band=0.03"
    assert vol.params == {"band": 0.02, "inner": 0.5, "scaling": "vol", "window": 10}
    assert vol.name == "edge_band_futures band=0.02 scaling=vol inner=0.5"
    path = build_path(cfg)
    a, b = (build_policy(spec, cfg, path) for spec in (uniform, vol))
    assert type(a) is EdgeBandFutures and a.band == 0.03 and a.inner == 1.0
    assert isinstance(b, VolScaledEdgeBandFutures)
    assert (b.band, b.inner, b.window) == (0.02, 0.5, 10)
    assert b.name == vol.name


def test_trailing_risk_has_no_look_ahead() -> None:
    from models.risk import RiskModel
    from models.trailing_risk import MIN_RISK_ROWS, TrailingRisk

    rng = np.random.default_rng(0)
    idx = pd.date_range("2024-01-01", periods=120, freq="D", tz="UTC")
    prices = pd.DataFrame(100 * np.exp(np.cumsum(rng.normal(0, 0.03, (120, 2)), axis=0)),
                          index=idx, columns=["BTC", "ETH"])
    fallback = RiskModel.from_covariance(["BTC", "ETH"], np.diag([0.3, 0.4]))
    later = prices.copy()
    later.iloc[80:] *= np.exp(rng.normal(0, 0.3, (40, 2)))  # a different future
    a = TrailingRisk(fallback, prices, ["BTC", "ETH"], lookback_days=60)
    b = TrailingRisk(fallback, later, ["BTC", "ETH"], lookback_days=60)
    assert a(idx[MIN_RISK_ROWS - 5]) is fallback  # too little history: the book's model
    t = idx[75]
    np.testing.assert_allclose(a(t).covariance, b(t).covariance)
    assert not np.allclose(a(t).covariance, fallback.covariance)


def test_collateral_option_reaches_the_backtester(tmp_path: Path) -> None:
    from fbr.backtest_config import load_backtest_file
    from fbr.backtest_run import backtest_options

    f = _bad_config(tmp_path, extra="\n[backtest.collateral]\ntarget_fraction = 0.15\nband = 0.25\n")
    opts = backtest_options(load_backtest_file(f))
    coll = opts.get("collateral")
    assert coll is not None
    assert coll.target_fraction == 0.15 and coll.band == 0.25
    off = load_backtest_file(_bad_config(tmp_path, extra="\ncollateral = false\n"))  # in [backtest]
    assert off.collateral == {"enabled": False}
    assert backtest_options(off)["collateral"].enabled is False


@pytest.mark.shared_data
def test_data_source_path(tmp_path: Path, shared_data_dir: Path) -> None:
    """source = "data": the shared data folder."""
    from fbr.backtest_config import build_path, load_backtest_file

    d = shared_data_dir
    f = tmp_path / "data.toml"
    f.write_text(f"""book = "{(EXAMPLES / 'backtest_book.toml').as_posix()}"
[data]
source = "data"
data_dir = "{d.as_posix()}"
start = "2024-01-01"
end = "2024-02-01"
step = "1d"
[[policies]]
kind = "no_rebalance"
""")
    path = build_path(load_backtest_file(f))
    assert 25 <= len(path.spot.index) <= 33
    assert not path.synthetic


def test_te_band_kind_builds_with_its_risk_model(tmp_path: Path) -> None:
    """``te_band_futures``: te_band (a TE), inner, and the risk model the optimised policy would read
    (a trailing estimate with ``risk_lookback_days``); the default name carries the parameters."""
    from fbr.backtest_config import build_path, load_backtest_file
    from fbr.backtest_run import build_policy
    from models.trailing_risk import TrailingRisk
    from optimizer.te_band import TrackingErrorBandFutures

    f = _bad_config(tmp_path, extra="""
[[policies]]
kind = "te_band_futures"
te_band = "1.5%"
inner = 0.5
risk_lookback_days = 30
""")
    cfg = load_backtest_file(f)
    spec = cfg.policies[-1]
    assert spec.params == {"te_band": 0.015, "inner": 0.5, "risk_lookback_days": 30}
    assert spec.name == "te_band_futures te_band=0.015 risk_lookback_days=30 inner=0.5"
    policy = build_policy(spec, cfg, build_path(cfg))
    assert isinstance(policy, TrackingErrorBandFutures)
    assert (policy.band, policy.inner) == (0.015, 0.5)
    assert isinstance(policy.risk, TrailingRisk)


def test_steps_held_on_an_infeasible_answer_are_noted_in_json_table_and_report(
        tmp_path: Path) -> None:
    """The example book with a funding budget of -1,000,000 USD (earn a million in funding over
    the horizon: infeasible against the margin row at every step, as ``fbr solve`` answers): the
    optimiser trades nothing in the replay, and the note (every step held, the first one's
    conflict named) is in --json's notes and labels, under the table, and in the HTML report."""
    book = tmp_path / "book.toml"
    book.write_text((EXAMPLES / "backtest_book.toml").read_text().replace(
        "[constraints]\n", "[constraints]\nfunding_budget_usd = -1000000\n", 1))
    cfg = tmp_path / "bt.toml"
    cfg.write_text('book = "book.toml"\n[data]\nsource = "synthetic"\nseed = 12\ndays = 3\n'
                   'start = "2024-01-01"\n[[policies]]\nkind = "optimized"\nname = "optimised"\n')
    report = tmp_path / "bt.html"
    proc = run_fbr("backtest", str(cfg), "--json", "--report", str(report))
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    want = "optimised: no answer to trade at 3 of 3 steps (first 2024-01-01T00:00:00+00:00: "
    (note,) = [n for n in res["notes"] if n.startswith(want)]
    assert "infeasible: these constraints conflict: funding_budget" in note
    assert note in res["labels"]
    assert res["policies"]["optimised"]["turnover"] == 0.0
    assert res["policies"]["optimised"]["unsolved_steps"] == 3
    assert "no answer to trade at 3 of 3 steps" in report.read_text()
    table = run_fbr("backtest", str(cfg), "--no-report")
    assert table.returncode == 0, table.stderr
    assert "no answer to trade at 3 of 3 steps" in " ".join(table.stdout.split())
