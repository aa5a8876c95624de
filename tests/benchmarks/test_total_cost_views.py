"""benchmarks/total_cost.py: the tax views and the goal rules, by hand (the script itself needs the
real data; these are its pure parts)."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]


TC = importlib.import_module("total_cost")


def _steps(tax: list[float], owed: list[float], wallet: list[float]) -> SimpleNamespace:
    idx = pd.DatetimeIndex([pd.Timestamp("2023-01-01", tz="UTC") + pd.Timedelta(days=365 * k)
                            for k in range(len(tax))])
    return SimpleNamespace(steps=pd.DataFrame({"tax": tax, "tax_deferred": owed, "wallet": wallet},
                                              index=idx))


def test_tax_views_by_hand() -> None:
    """Taxes 0, 100, 50 USD paid at t = 0, 1, 2 years, 300 USD owed on unrealised gains at the end:
    realised = 150; pv at 4% = 100 / 1.04 + (50 + 300) / 1.04^2 (nothing owed at the start)."""
    res = _steps([0.0, 100.0, 50.0], [120.0, 200.0, 300.0], [0.0, 0.0, 0.0])
    realised, pv = TC.tax_views(res, np.ones(3, dtype=bool), 1e4)
    assert realised == pytest.approx(150.0)
    assert pv == pytest.approx(100 / 1.04 + 350 / 1.04 ** 2)
    # a window from t = 1: the 120 owed when it opens (after the step before it) is subtracted,
    # its payments discounted from t = 1
    m = np.array([False, True, True])
    realised, pv = TC.tax_views(res, m, 1e4)
    assert realised == pytest.approx(150.0)
    assert pv == pytest.approx(100 + 350 / 1.04 - 120)


def test_financing_charges_the_wallet_either_way() -> None:
    """y |W_prev| dt: +1,000 held for a year and -1,000 owed for a year cost 40 USD each at 4%."""
    res = _steps([0.0] * 3, [0.0] * 3, [1_000.0, -1_000.0, 0.0])
    assert TC.financing_bps(res, np.ones(3, dtype=bool), 1e4) == pytest.approx(80.0)


@pytest.mark.parametrize(("fbr", "best", "rule", "met"), [
    (10.0, 20.0, "half", True), (10.1, 20.0, "half", False),      # fbr <= best / 2
    (4.0, 7.0, "half", True), (4.1, 7.0, "half", False),          # best < 10 bp: 3 bp below it
    (-8.0, -5.0, "half", True), (-7.9, -5.0, "half", False),      # negative best: 3 bp below it
    (5.0, 5.0, "not_dearer", True), (5.1, 5.0, "not_dearer", False),
])
def test_goal_rules(fbr: float, best: float, rule: str, met: bool) -> None:
    assert TC.verdict(fbr, best, rule)["met"] is met


def _run(family: str, param: str, te: float, trading: float) -> dict[str, object]:
    """A run whose every window has the same TE and trading cost (bp/yr)."""
    win = {"tracking_error": te, "trading_cost_bps": trading, "funding_bps": 0.0,
           "total_realised_bps": trading, "liquidations": 0}
    windows = {w: dict(win) for w in ("select", *TC.vn.REGIMES)}
    return {"family": family, "param": param, "case": "0", "windows": windows}


def test_trading_comparison_by_hand(monkeypatch: pytest.MonkeyPatch) -> None:
    """Naive to target: (0.4%, 20 bp), (0.8%, 10 bp); to edge: (0.4%, 16), (0.8%, 8). fbr runs at
    TE 0.566% (the geometric mean of 0.4 and 0.8, where the log-log frontiers give 20/sqrt(2) =
    14.14 and 16/sqrt(2) = 11.31): one trading 9 bp, one at TE 0.3% trading 15 bp. The first is
    chosen (9 / 14.14 of the to-target frontier, against 15 / 20 for the other, whose TE is
    below the frontier's range), and is 36.4% below to target and below to edge."""
    te = float(np.sqrt(0.004 * 0.008))
    raw = {f"0|{r['family']}|{r['param']}": r for r in (
        _run("naive_pledged", "band 0.01", 0.004, 20.0), _run("naive_pledged", "band 0.02", 0.008, 10.0),
        _run("naive_reserve", "edge 0.01", 0.004, 16.0), _run("naive_reserve", "edge 0.02", 0.008, 8.0),
        _run("fbr_overlay", "gt 8", te, 9.0), _run("fbr_overlay", "gt 1", 0.003, 15.0),
        _run("spot", "band 0.001", 0.0001, 1.0))}
    got = TC.compare_trading(raw, "0", 0.01, "")
    assert got["chosen"] == "fbr_overlay|gt 8"
    row = got["regimes"]["oos"]
    assert row["to_target_bps"] == pytest.approx(20 / np.sqrt(2))
    assert row["to_edge_bps"] == pytest.approx(16 / np.sqrt(2))
    assert row["below_target_pct"] == pytest.approx((1 - 9 / (20 / np.sqrt(2))) * 100)
    assert row["met_30pct"] and row["met_edge"]
    # a dearer fbr fails both rules
    raw["0|fbr_overlay|gt 8"] = _run("fbr_overlay", "gt 8", te, 12.0)
    row = TC.compare_trading(raw, "0", 0.01, "")["regimes"]["oos"]
    assert not row["met_30pct"] and not row["met_edge"]


@pytest.mark.parametrize("gamma", [0.5, 4.0, 32.0])
def test_the_cost_to_go_variant_scales_every_cost_weight_alike(gamma: float) -> None:
    """``gt g`` weighs trades g and carry 1; its cost-to-go variant prices the deviation about
    (1 + kappa) x as much, so both weights scale by 1 + kappa (trades : carry stays g : 1), and
    a stored run of the variant from before carry was scaled is dropped as superseded."""
    words = TC.ctg_param(gamma).split()
    opts = dict(zip(words[::2], words[1::2], strict=True))
    k = 1 + float(opts["ctg"])
    assert float(opts["gt"]) == pytest.approx(gamma * k) and float(opts["gf"]) == pytest.approx(k)
    assert TC.ctg_param(gamma, carry=False).endswith(" gf 0")
    assert TC.superseded(f"0|fbr_hybrid|gt {gamma * k:g} ctg {opts['ctg']} p {opts['p']}")
    assert not TC.superseded(f"0|fbr_hybrid|{TC.ctg_param(gamma)}")
    assert not TC.superseded(f"0|fbr_overlay|gt {gamma:g}")


def test_a_choice_made_by_the_lowest_te_fallback_says_so() -> None:
    """``choose`` takes the cheapest setting within 1.05 x the budget on select, else the lowest
    TE there: the table's heading names the fallback and the TE it had."""
    within = {"chosen": "gt 4", "select_te": 0.0104}
    over = {"chosen": "gt 248 ctg 30 p 0.4 gf 31", "select_te": 0.0115}
    assert TC.chosen_note(within, 0.01) == "chosen: gt 4"
    assert TC.chosen_note({"chosen": None, "regimes": {}}, 0.01) == "chosen: None"
    note = TC.chosen_note(over, 0.01)
    assert note.startswith("chosen: gt 248 ctg 30 p 0.4 gf 31; no setting within the TE budget")
    assert note.endswith("1.15%")


def test_the_path_basis_is_the_trailing_covariance_of_the_8h_basis_changes() -> None:
    """basis(t) = 3 x 365 x cov of the changes of mark / spot - 1 over the trailing lookback up to
    t (a contract without marks, marked at spot, has none); zeros before MIN_BASIS_STEPS changes."""
    from models.instruments import FuturesContract

    rng = np.random.default_rng(5)
    idx = pd.date_range("2024-01-01", periods=200, freq="8h", tz="UTC")
    spot = pd.DataFrame({"BTC": 60_000 * np.exp(np.cumsum(rng.normal(0, 0.01, 200))),
                         "ETH": 3_000 * np.exp(np.cumsum(rng.normal(0, 0.01, 200)))}, index=idx)
    mark = pd.DataFrame({"BTC-PERP": spot["BTC"] * (1 + rng.normal(3e-4, 2e-4, 200))}, index=idx)
    cons = [FuturesContract("BTC-PERP", "BTC"), FuturesContract("ETH-PERP", "ETH")]
    basis = TC.path_basis(SimpleNamespace(spot=spot, mark=mark), cons, lookback=20)
    t = idx[150]
    b = (mark["BTC-PERP"] / spot["BTC"] - 1.0).loc[:t].diff().dropna().tail(60)
    cov = basis(t)
    assert cov[0, 0] == pytest.approx(3 * 365.0 * b.var(ddof=1), rel=1e-12)
    assert cov[1, 1] == 0.0 and cov[0, 1] == 0.0
    assert not basis(idx[TC.MIN_BASIS_STEPS - 1]).any()  # 29 changes: too few
    assert basis(idx[TC.MIN_BASIS_STEPS])[0, 0] > 0.0
