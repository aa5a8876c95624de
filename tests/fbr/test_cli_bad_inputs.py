"""Bad or awkward inputs of ``fbr backtest`` / ``fbr montecarlo`` / ``fbr whatif``, end to end on
embedded synthetic data (no network, no shared data folder):

- a backtest ``end`` beyond the data: the actual end is said in the CLI output, the JSON and the
  HTML report;
- no look-ahead of a data-estimated book risk model (trailing estimate by default; the explicit
  full-sample option is stated in the output and the report);
- output paths checked before any work (a folder as ``--report``);
- Monte Carlo / backtest runs above the work limit refused up front, ``--force`` overrides;
- a truncated ``.csv.gz`` named in one message.

The data folder used here is written by the test in the shared layout from the embedded
SYNTHETIC generator (``models.synthetic.generate_history``, fixed seed).
"""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from cli_helpers import FUTURES_ONLY
from typer.testing import CliRunner

from fbr.cli import app

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
SYMBOLS = ("BTC", "ETH")
#: The synthetic data folder: 2023-01-01 .. 2024-12-31 (731 daily bars).
DATA_START, DATA_DAYS = "2023-01-01", 731


def write_data_dir(root: Path, seed: int = 5, *, days: int = DATA_DAYS,
                   tail_seed: int | None = None, tail_from: int | None = None) -> Path:
    """spot_1d/<SYM>.csv.gz in the shared layout (bar open times, close in USD). With
    ``tail_seed``, the closes from bar ``tail_from`` on are multiplied by another random walk:
    a different future with the same past."""
    from models.synthetic import generate_history

    hist = generate_history(SYMBOLS, days=days, start=DATA_START, seed=seed)
    spot = hist.spot.copy()
    if tail_seed is not None and tail_from is not None:
        rng = np.random.default_rng(tail_seed)
        shock = np.exp(np.cumsum(rng.normal(0.0, 0.08, (days - tail_from, len(SYMBOLS))), axis=0))
        spot.iloc[tail_from:] = spot.iloc[tail_from:].to_numpy() * shock
    (root / "spot_1d").mkdir(parents=True)
    for sym in SYMBOLS:
        close = spot[sym].to_numpy()
        frame = pd.DataFrame({"timestamp": [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in spot.index],
                              "open": close, "high": close, "low": close, "close": close,
                              "volume": 1e3, "quote_volume": 1e3 * close})
        with gzip.open(root / "spot_1d" / f"{sym}.csv.gz", "wt") as fh:
            frame.to_csv(fh, index=False)
    return root


def write_book(path: Path, data_dir: Path, market_time: str = "2024-12-31") -> Path:
    """A BTC/ETH book whose market and risk model come from ``data_dir`` up to ``market_time``."""
    path.write_text(f"""[book]
name = "data book"
cash = 20000.0
[targets]
BTC = 0.6
ETH = 0.4
[spot_usd]
BTC = 33000.0
ETH = 17000.0
[contract_defaults]
lot_step = 1e-6
min_notional = 0.0
leverage = 10.0
[market]
source = "data"
data_dir = "{data_dir.as_posix()}"
time = {market_time}T00:00:00Z
[risk]
lookback_days = 365
basis_risk = false
[costs]
trading = true
carry = false
impact = false
[constraints]
margin = false
""")
    return path


def write_backtest(path: Path, book: Path, data_dir: Path, *, start: str = "2024-03-01",
                   end: str = "2024-05-01", extra: str = "") -> Path:
    path.write_text(f"""book = "{book.as_posix()}"
[data]
source = "data"
data_dir = "{data_dir.as_posix()}"
start = "{start}"
end = "{end}"
step = "1d"
[[policies]]
kind = "no_rebalance"
name = "hold"
[[policies]]
kind = "optimized"
name = "opt"
[backtest]
{extra}
""")
    return path


def invoke(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(app, list(args))
    return res.exit_code, res.stdout, res.stderr


# --- defect 4: the backtest end beyond the data ------------------------------------------------

def test_end_beyond_the_data_is_said_everywhere(tmp_path: Path) -> None:
    d = write_data_dir(tmp_path / "data")
    book = write_book(tmp_path / "book.toml", d, market_time="2024-10-01")
    cfg = write_backtest(tmp_path / "bt.toml", book, d, start="2024-10-01", end="2026-06-30")
    report = tmp_path / "out" / "bt.html"
    code, stdout, stderr = invoke("backtest", str(cfg), "--json", "--report", str(report))
    assert code == 0, stderr
    doc = json.loads(stdout)
    # the last bar opens 2024-12-31, so the last close (the last step) is 2025-01-01
    last_close = pd.Timestamp(DATA_START, tz="UTC") + pd.Timedelta(days=DATA_DAYS)
    assert pd.Timestamp(doc["span"]["end"]) == last_close
    assert doc["span"]["requested_end"].startswith("2026-06-30")
    assert doc["span"]["shorter_than_requested"] is True
    note = next(n for n in doc["notes"] if n.startswith("data.end"))
    assert "2025-01-01" in note and "shorter than asked" in note
    assert note in doc["labels"]
    assert "2025-01-01" in report.read_text() and "shorter than asked" in report.read_text()
    code, stdout, stderr = invoke("backtest", str(cfg), "--no-report")
    assert code == 0, stderr
    assert "shorter than asked" in " ".join(stdout.split())


def test_end_inside_the_data_says_nothing(tmp_path: Path) -> None:
    d = write_data_dir(tmp_path / "data")
    book = write_book(tmp_path / "book.toml", d, market_time="2024-03-01")
    cfg = write_backtest(tmp_path / "bt.toml", book, d)
    code, stdout, stderr = invoke("backtest", str(cfg), "--json", "--no-report")
    assert code == 0, stderr
    doc = json.loads(stdout)
    assert doc["span"]["shorter_than_requested"] is False
    assert pd.Timestamp(doc["span"]["end"]) == pd.Timestamp("2024-05-01", tz="UTC")
    assert not any("LOOK-AHEAD" in x or "re-estimated" in x for x in doc["labels"])


# --- defect 5: look-ahead of a data-estimated book risk model ----------------------------------

def _opt_risk_at(cfg_path: Path, t: pd.Timestamp) -> np.ndarray:
    from fbr.backtest_config import build_path, load_backtest_file
    from fbr.backtest_run import build_policy

    cfg = load_backtest_file(cfg_path)
    path = build_path(cfg)
    policy = build_policy(next(p for p in cfg.policies if p.kind == "optimized"), cfg, path)
    risk = policy.risk(t) if callable(policy.risk) else policy.risk  # type: ignore[attr-defined]
    return np.asarray(risk.subset(list(SYMBOLS)).covariance)


def _reference_cov(data_dir: Path, t: pd.Timestamp, lookback: int = 365) -> np.ndarray:
    """Independent reference: read the files, daily closes at close time (open + 1 day) <= t,
    simple returns, the last ``lookback`` of them, Ledoit-Wolf via models.risk.estimate_risk."""
    from models.risk import estimate_risk

    closes = pd.concat({s: pd.read_csv(data_dir / "spot_1d" / f"{s}.csv.gz", index_col="timestamp",
                                       parse_dates=True)["close"] for s in SYMBOLS}, axis=1)
    closes.index = pd.DatetimeIndex(closes.index) + pd.Timedelta(days=1)
    returns = closes.loc[closes.index <= t].pct_change().dropna().tail(lookback)
    model = estimate_risk(returns, "ledoit_wolf", periods_per_year=365.0)
    return np.asarray(model.subset(list(SYMBOLS)).covariance)


def test_default_risk_model_has_no_look_ahead(tmp_path: Path) -> None:
    """The book's model is estimated up to 2024-12-31, the backtest starts 2024-03-01: the
    optimised policy's model at t0 is the estimate on returns up to t0 only, and a different
    future (after t0 + 10 days) leaves it unchanged."""
    t0 = pd.Timestamp("2024-03-01", tz="UTC")
    a = write_data_dir(tmp_path / "a")
    tail_from = (t0 - pd.Timestamp(DATA_START, tz="UTC")).days + 10
    b = write_data_dir(tmp_path / "b", tail_seed=11, tail_from=tail_from)
    cov = {}
    for name, d in (("a", a), ("b", b)):
        book = write_book(tmp_path / f"book_{name}.toml", d)
        cfg = write_backtest(tmp_path / f"bt_{name}.toml", book, d)
        cov[name] = _opt_risk_at(cfg, t0)
    np.testing.assert_allclose(cov["a"], _reference_cov(a, t0), rtol=1e-9)
    np.testing.assert_allclose(cov["a"], cov["b"], rtol=1e-12)
    # the book's own (full-sample) model differs: it saw the different futures
    from fbr.config import load_book_file

    full_a = load_book_file(tmp_path / "book_a.toml").risk.covariance
    full_b = load_book_file(tmp_path / "book_b.toml").risk.covariance
    assert not np.allclose(full_a, full_b, rtol=1e-3)


def test_default_risk_label_and_full_sample_option_is_stated(tmp_path: Path) -> None:
    d = write_data_dir(tmp_path / "data")
    book = write_book(tmp_path / "book.toml", d)
    cfg = write_backtest(tmp_path / "bt.toml", book, d)
    code, stdout, stderr = invoke("backtest", str(cfg), "--json", "--no-report")
    assert code == 0, stderr
    labels = json.loads(stdout)["labels"]
    assert any("without look-ahead" in x for x in labels)
    assert not any("LOOK-AHEAD" in x for x in labels)

    full = write_backtest(tmp_path / "full.toml", book, d, extra='risk_model = "book"')
    np.testing.assert_allclose(_opt_risk_at(full, pd.Timestamp("2024-03-01", tz="UTC")),
                               _reference_cov(d, pd.Timestamp("2024-12-31", tz="UTC")), rtol=1e-9)
    report = tmp_path / "full.html"
    code, stdout, stderr = invoke("backtest", str(full), "--json", "--report", str(report))
    assert code == 0, stderr
    assert any(x.startswith("LOOK-AHEAD") for x in json.loads(stdout)["labels"])
    assert "LOOK-AHEAD" in report.read_text()
    code, stdout, _ = invoke("backtest", str(full), "--no-report")
    assert code == 0 and "LOOK-AHEAD" in stdout


def test_too_little_history_before_the_start_is_refused(tmp_path: Path) -> None:
    d = write_data_dir(tmp_path / "data")
    book = write_book(tmp_path / "book.toml", d)
    cfg = write_backtest(tmp_path / "bt.toml", book, d, start="2023-01-10", end="2023-03-01")
    code, stdout, _ = invoke("backtest", str(cfg), "--json", "--no-report")
    assert code == 2
    err = json.loads(stdout.splitlines()[0])["error"]
    assert err.startswith("backtest.risk_model") and "precede that start" in err
    assert "Fix:" in err and "risk_model" in err


def test_bad_risk_model_option(tmp_path: Path) -> None:
    d = write_data_dir(tmp_path / "data")
    book = write_book(tmp_path / "book.toml", d)
    cfg = write_backtest(tmp_path / "bt.toml", book, d, extra='risk_model = "oracle"')
    code, stdout, _ = invoke("backtest", str(cfg), "--json", "--no-report")
    assert code == 2 and "backtest.risk_model" in json.loads(stdout.splitlines()[0])["error"]


# --- defect 6: output paths checked before the run; unreadable data files named -----------------

def _demo_copy(tmp_path: Path, days: int = 30) -> Path:
    text = (EXAMPLES / "backtest_demo.toml").read_text().replace("days = 365", f"days = {days}")
    text = text.replace('book = "backtest_book.toml"',
                        f'book = "{(EXAMPLES / "backtest_book.toml").as_posix()}"')
    f = tmp_path / "demo.toml"
    f.write_text(text)
    return f


def test_report_folder_is_refused_before_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                  ) -> None:
    import fbr.backtest_run as bc

    ran: list[str] = []
    real = bc.run_all
    def counting(*a: Any, **k: Any) -> Any:
        ran.append("run")
        return real(*a, **k)

    monkeypatch.setattr(bc, "run_all", counting)
    folder = tmp_path / "some_dir"
    folder.mkdir()
    code, stdout, _ = invoke("backtest", str(_demo_copy(tmp_path)), "--json", "--report", str(folder))
    assert code == 2 and ran == []
    err = json.loads(stdout.splitlines()[0])["error"]
    assert err.startswith("--report") and "is a folder" in err and "Fix:" in err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, stdout, _ = invoke("backtest", str(_demo_copy(tmp_path)), "--json", "--report",
                             str(blocker / "r.html"))
    assert code == 2 and ran == [] and "is a file" in json.loads(stdout.splitlines()[0])["error"]


def test_montecarlo_report_folder_is_refused_before_the_run(tmp_path: Path) -> None:
    folder = tmp_path / "some_dir"
    folder.mkdir()
    f = _mc_config(tmp_path, "paths = 2\nsteps = 10")
    t = time.perf_counter()
    code, stdout, _ = invoke("montecarlo", str(f), "--json", "--report", str(folder))
    assert code == 2 and time.perf_counter() - t < 20
    err = json.loads(stdout.splitlines()[0])["error"]
    assert err.startswith("--report") and "is a folder" in err


def test_truncated_data_file_is_named(tmp_path: Path) -> None:
    d = write_data_dir(tmp_path / "data")
    f = d / "spot_1d" / "ETH.csv.gz"
    raw = f.read_bytes()
    f.write_bytes(raw[: len(raw) // 2])
    book = write_book(tmp_path / "book.toml", d)
    cfg = write_backtest(tmp_path / "bt.toml", book, d)
    code, stdout, stderr = invoke("backtest", str(cfg), "--json", "--no-report")
    assert code == 2, stderr
    err = json.loads(stdout.splitlines()[0])["error"]
    assert str(f) in err and "truncated" in err and "EOFError" in err and "Fix:" in err
    assert "internal error" not in err


# --- defect 1: the size of a run is estimated and refused above the limit -----------------------

def _mc_config(tmp_path: Path, montecarlo: str, days: int = 200) -> Path:
    f = tmp_path / "mc.toml"
    f.write_text(f"""book = "{(EXAMPLES / 'backtest_book.toml').as_posix()}"
[data]
source = "synthetic"
seed = 3
days = {days}
start = "2023-01-01"
[montecarlo]
{montecarlo}
[[policies]]
kind = "no_rebalance"
name = "hold"
[[policies]]
kind = "naive_futures"
band = "5%"
name = "naive"
""")
    return f


@pytest.mark.parametrize(("montecarlo", "args", "days", "option"), [
    ("paths = 10000000\nsteps = 365", (), 200, "montecarlo.paths"),
    ("paths = 10\nsteps = 100000000", (), 200, "montecarlo.steps"),
    ("paths = 10\nsteps = 30", ("--paths", "10000000"), 200, "--paths"),
    ("paths = 10\nsteps = 30", (), 100_000_000, "data.days"),
])
def test_huge_montecarlo_is_refused_at_once(tmp_path: Path, montecarlo: str, args: tuple[str, ...],
                                            days: int, option: str) -> None:
    f = _mc_config(tmp_path, montecarlo, days=days)
    t = time.perf_counter()
    code, stdout, _ = invoke("montecarlo", str(f), "--json", "--no-report", *args)
    assert time.perf_counter() - t < 20
    assert code == 2
    err = json.loads(stdout.splitlines()[0])["error"]
    assert err.startswith(option), err
    assert "--force" in err and "Fix:" in err


def test_montecarlo_work_estimate_by_hand(tmp_path: Path) -> None:
    """paths x steps x policy runs: 10^7 x 365 x 2 policy steps; NAV kept per step."""
    from fbr.backtest_work import SECONDS_PER_STEP_DEFAULT
    from fbr.montecarlo_cli import estimate_montecarlo
    from fbr.montecarlo_config import load_montecarlo_file

    cfg = load_montecarlo_file(_mc_config(tmp_path, "paths = 10000000\nsteps = 365"))
    est = estimate_montecarlo(cfg)
    assert est.policy_steps == pytest.approx(1e7 * 365 * 2)
    assert est.seconds >= 1e7 * 365 * 2 * SECONDS_PER_STEP_DEFAULT
    assert est.bytes >= 1e7 * 2 * 366 * 8  # the NAV series alone
    assert est.too_big
    small = load_montecarlo_file(_mc_config(tmp_path, "paths = 3\nsteps = 10"))
    assert not estimate_montecarlo(small).too_big


def test_force_runs_above_the_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fbr.backtest_work as bc

    monkeypatch.setattr(bc, "MAX_WORK_SECONDS", 1e-6)  # every run is "too big" now
    f = _mc_config(tmp_path, "paths = 2\nsteps = 10")
    code, stdout, _ = invoke("montecarlo", str(f), "--json", "--no-report")
    assert code == 2 and "--force" in json.loads(stdout.splitlines()[0])["error"]
    code, stdout, stderr = invoke("montecarlo", str(f), "--json", "--no-report", "--force")
    assert code == 0, stderr
    assert json.loads(stdout)["summary"]["hold"]["paths"] == 2
    demo = _demo_copy(tmp_path)
    code, stdout, _ = invoke("backtest", str(demo), "--json", "--no-report")
    assert code == 2 and "--force" in json.loads(stdout.splitlines()[0])["error"]
    code, stdout, stderr = invoke("backtest", str(demo), "--json", "--no-report", "--force")
    assert code == 0, stderr


def test_huge_backtest_days_refused(tmp_path: Path) -> None:
    code, stdout, _ = invoke("backtest", str(_demo_copy(tmp_path, days=1_000_000)), "--json",
                             "--no-report")
    assert code == 2
    err = json.loads(stdout.splitlines()[0])["error"]
    assert err.startswith("data.days") and "--force" in err


# --- defect 3: a futures-only book in fbr whatif ------------------------------------------------



def test_whatif_accepts_a_futures_only_book(tmp_path: Path) -> None:
    """No spot, 10,000 USD in the wallet, long 0.1 BTC (6,000 USD), short 1 ETH (2,500 USD).
    Weights are fractions of the NAV: before BTC 0.6, ETH -0.25; after BTC -10% the BTC position
    loses 600: NAV 9,400, BTC 5,400 / 9,400, ETH -2,500 / 9,400."""
    f = tmp_path / "futures_only.toml"
    f.write_text(FUTURES_ONLY)
    code, stdout, stderr = invoke("whatif", str(f), "--shock", "BTC=-10%", "--no-resolve", "--json")
    assert code == 0, stderr + stdout
    doc = json.loads(stdout)
    r = doc["scenarios"][0]
    assert r["nav_before"] == pytest.approx(10_000.0) and r["nav_after"] == pytest.approx(9_400.0)
    assert r["weights_before"] == {"BTC": pytest.approx(0.6), "ETH": pytest.approx(-0.25)}
    assert r["weights_after"] == {"BTC": pytest.approx(5_400 / 9_400), "ETH": pytest.approx(-2_500 / 9_400)}
    assert r["drift_pp"]["ETH"] == pytest.approx(100 * (-2_500 / 9_400 - 0.3))
    assert any("futures-only" in n and "NAV" in n for n in doc["notes"])
    code, stdout, _ = invoke("whatif", str(f), "--shock", "BTC=-10%")  # with the re-solve, tables
    assert code == 0 and "futures-only" in stdout


def test_whatif_book_with_spot_is_unchanged(tmp_path: Path) -> None:
    code, stdout, stderr = invoke("whatif", str(EXAMPLES / "seed_example_1.toml"), "--shock",
                                  "BTC=-10%", "--no-resolve", "--json")
    assert code == 0, stderr
    doc = json.loads(stdout)
    assert not any("futures-only" in n for n in doc["notes"])
    assert doc["scenarios"][0]["nav_before"] == pytest.approx(13_000.0)


def test_whatif_funding_over_a_huge_horizon_in_the_cli(tmp_path: Path) -> None:
    f = tmp_path / "futures_only.toml"
    f.write_text(FUTURES_ONLY)
    code, stdout, stderr = invoke("whatif", str(f), "--shock", "funding.BTC-PERP=+1%",
                                  "--shock", "horizon=1000000d", "--no-resolve", "--json")
    assert code == 0, stderr
    doc = json.loads(stdout)
    r = doc["scenarios"][0]
    # 60 USD a settlement until the wallet (all the account holds) is liquidated; the penalty
    # (1% of 8,500 USD) is charged and what the wallet then lacks is the insurance fund's, so the
    # loss is at most the NAV
    assert r["liquidated"] and r["nav_after"] >= -1e-9
    assert -r["pnl"]["funding"] <= r["nav_before"]
    assert r["liquidation_penalty"] == pytest.approx(0.01 * 8_500.0)
    assert r["insurance_fund"] > 0 and r["nav_after"] == pytest.approx(0.0, abs=1e-9)
    assert r["nav_after"] == pytest.approx(r["nav_before"] + r["pnl"]["total"]
                                           - r["liquidation_penalty"] + r["insurance_fund"])
    assert any("liquidated" in n and "losses stop there" in n for n in doc["notes"])
