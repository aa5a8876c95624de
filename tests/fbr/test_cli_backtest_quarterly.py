"""`fbr backtest` on real data marks a book's dated contracts at the real quarterly closes
(``scenarios.quarterly_basis.with_quarterly_marks`` through ``fbr.backtest_config.build_path``), at the
fitted basis term structure elsewhere, and says how many marks are which in the run's labels.

The data folder is written by the test in the shared layout (``models.io``): ``spot_1d``,
``funding`` and one ``quarterly_1d`` file (BTCUSDT delivering 2025-03-28 08:00 UTC), from a fixed
random walk. Books without dated contracts, and synthetic paths, are built as before.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from cli_helpers import run_fbr

ROOT = Path(__file__).resolve().parents[2]
SYMBOLS = ("BTC", "ETH")
SPOT_FROM, SPOT_DAYS = "2024-10-01", 212  # bars opening 2024-10-01 .. 2025-04-30
DELIVERY = pd.Timestamp("2025-03-28 08:00", tz="UTC")
#: bar opens of the quarterly file: listed mid-span, last bar the delivery day
Q_FROM, Q_TO = "2025-01-20", "2025-03-28"
DATED = "BTC-250328"
QTY = -0.5  # contracts of the dated future held by the book (short)


def _gz(path: Path, frame: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as fh:
        frame.to_csv(fh, index=False)


def _stamp(index: pd.DatetimeIndex) -> list[str]:
    return [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in index]


def spot_closes() -> pd.DataFrame:
    """Daily spot closes by bar open (UTC): a fixed random walk per symbol."""
    opens = pd.date_range(SPOT_FROM, periods=SPOT_DAYS, freq="1D", tz="UTC")
    rng = np.random.default_rng(3)
    steps = rng.normal(0.0, 0.03, (SPOT_DAYS, len(SYMBOLS)))
    return pd.DataFrame(np.array([60_000.0, 3_000.0]) * np.exp(np.cumsum(steps, axis=0)),
                        index=opens, columns=list(SYMBOLS))


def quarterly_closes() -> pd.Series:
    """Quarterly closes by bar open: spot x (1 + ~9% a year x tau) plus noise (so the real marks
    differ from any fitted line)."""
    spot = spot_closes()["BTC"]
    opens = pd.date_range(Q_FROM, Q_TO, freq="1D", tz="UTC")
    tau = (DELIVERY - (opens + pd.Timedelta(days=1))).total_seconds().to_numpy() / 86400.0
    noise = np.random.default_rng(4).normal(0.0, 5e-4, len(opens))
    # spot_1d closes are at bar open + 1 day: the close of the bar opening the same day
    s = spot.reindex(opens).to_numpy()
    return pd.Series(s * (1.0 + 0.09 * np.maximum(tau, 0.0) / 365.0 + noise), index=opens)


def write_data(root: Path, *, quarterly: bool = True) -> Path:
    spot = spot_closes()
    for sym in SYMBOLS:
        c = spot[sym].to_numpy()
        _gz(root / "spot_1d" / f"{sym}.csv.gz",
            pd.DataFrame({"timestamp": _stamp(pd.DatetimeIndex(spot.index)), "open": c, "high": c,
                          "low": c, "close": c, "volume": 1e3, "quote_volume": 1e3 * c}))
        settle = pd.date_range(SPOT_FROM, periods=SPOT_DAYS * 3, freq="8h", tz="UTC")
        rate = 1e-4 * (1.0 + 0.5 * np.sin(np.arange(len(settle)) / 9.0))
        _gz(root / "funding" / f"{sym}.csv.gz",
            pd.DataFrame({"timestamp": _stamp(settle), "funding_rate": rate}))
    if quarterly:
        q = quarterly_closes()
        _gz(root / "quarterly_1d" / "BTCUSDT_250328.csv.gz",
            pd.DataFrame({"timestamp": _stamp(pd.DatetimeIndex(q.index)), "open": q, "high": q,
                          "low": q, "close": q}))
    return root


def write_book(path: Path, *, dated: str | None = DATED, underlying: str = "BTC") -> Path:
    """A BTC/ETH book with perpetuals and (``dated``) a short dated future on ``underlying``."""
    contracts = "[[contracts]]\nsymbol = \"BTC-PERP\"\nunderlying = \"BTC\"\n" \
                "[[contracts]]\nsymbol = \"ETH-PERP\"\nunderlying = \"ETH\"\n"
    marks = 'BTC-PERP = 60000.0\n"ETH-PERP" = 3000.0\n'
    futures = ""
    if dated is not None:
        contracts += (f'[[contracts]]\nsymbol = "{dated}"\nunderlying = "{underlying}"\n'
                      'kind = "dated"\nexpiry = 2025-03-28T08:00:00Z\n')
        marks += f'"{dated}" = {61000.0 if underlying == "BTC" else 3050.0}\n'
        futures = (f'[[futures]]\nsymbol = "{dated}"\ncontracts = {QTY}\n'
                   f"entry_price = {61000.0 if underlying == 'BTC' else 3050.0}\n")
    path.write_text(f"""[book]
name = "quarterly book"
cash = 20000.0
[targets]
BTC = 0.6
ETH = 0.4
[spot]
BTC = 1.0
ETH = 10.0
[contract_defaults]
lot_step = 1e-6
min_notional = 0.0
leverage = 10.0
{contracts}
{futures}
[market]
time = 2025-01-01T00:00:00Z
[market.spot]
BTC = 60000.0
ETH = 3000.0
[market.mark]
{marks}
[risk]
basis_risk = false
correlation = 0.7
[risk.vols]
BTC = 0.6
ETH = 0.7
""")
    return path


def write_backtest(path: Path, book: Path, data_dir: Path, step: str = "1d") -> Path:
    path.write_text(f"""book = "{book.as_posix()}"
[data]
source = "data"
data_dir = "{data_dir.as_posix()}"
start = "2025-01-01"
end = "2025-04-15"
step = "{step}"
[[policies]]
kind = "no_rebalance"
name = "hold"
[[policies]]
kind = "naive_futures"
period = "7D"
name = "naive"
""")
    return path




def backtest_json(cfg: Path) -> dict[str, Any]:
    proc = run_fbr("backtest", str(cfg), "--json", "--no-report")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    out: dict[str, Any] = json.loads(proc.stdout)
    return out


def real_stamps() -> pd.Series:
    """The quarterly closes as known at each daily step: bar open + 1 day, before delivery."""
    q = quarterly_closes()
    stamped = pd.Series(q.to_numpy(), index=pd.DatetimeIndex(q.index) + pd.Timedelta(days=1))
    return stamped.loc[stamped.index < DELIVERY]


def test_dated_marks_are_the_quarterly_closes(tmp_path: Path) -> None:
    from fbr.backtest_config import load_backtest_file
    from fbr.cli import run_backtest_config
    from scenarios.quarterly_basis import fit_quarterly_term_structure

    d = write_data(tmp_path / "data")
    cfg_path = write_backtest(tmp_path / "bt.toml", write_book(tmp_path / "book.toml"), d)
    doc = backtest_json(cfg_path)

    # the CLI's own run (the function `fbr backtest` calls): the recorded dated notional / quantity
    cfg = load_backtest_file(cfg_path)
    results, summary = run_backtest_config(cfg, report=None, show_progress=False, title="t")
    assert summary["labels"] == doc["labels"]
    assert {k: {m: v for m, v in p.items()} for k, p in summary["policies"].items()} == doc["policies"]
    hold = results["hold"]
    index = pd.DatetimeIndex(hold.futures_notional.index)
    real = real_stamps()
    at = index[index.isin(real.index)]
    assert len(at) == len(real) > 40  # every real close is a step of the path
    recorded = hold.futures_notional.loc[at, DATED] / QTY
    np.testing.assert_allclose(recorded.to_numpy(), real.loc[at].to_numpy(), rtol=1e-12)

    # before the listing: the fitted term structure on spot; the delivery settles at spot
    term = fit_quarterly_term_structure(d, ["BTC"])
    assert term.underlyings == ("BTC",) and 0.05 < term.a < 0.13
    before = index[index < real.index[0]]
    tau = (DELIVERY - before).total_seconds().to_numpy() / 86400.0
    spot = spot_closes()["BTC"]
    spot_at = spot.set_axis(pd.DatetimeIndex(spot.index) + pd.Timedelta(days=1)).reindex(before)
    np.testing.assert_allclose(hold.futures_notional.loc[before, DATED].to_numpy() / QTY,
                               term.price(spot_at.to_numpy(), tau), rtol=1e-12)
    settle = hold.trades.loc[hold.trades["kind"] == "settle"]
    assert list(settle["symbol"]) == [DATED]
    assert pd.Timestamp(settle["time"].iloc[0]) == pd.Timestamp("2025-03-29", tz="UTC")

    # one label: real vs modelled marks up to expiry
    live = index[index <= DELIVERY]
    label = [x for x in doc["labels"] if x.startswith("dated contract marks")]
    assert label == [f"dated contract marks ({DATED}, steps up to expiry): {len(real)} real from "
                     f"the quarterly closes in {d / 'quarterly_1d'}, {len(live) - len(real)} "
                     "modelled on the fitted basis term structure"]
    assert not any("no quarterly file" in n for n in doc.get("notes", []))


def test_without_dated_contracts_the_json_is_as_before(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A perpetual-only book: the CLI's JSON equals a run on the path built as before this change
    (``MarketPath.from_data`` as it is), and a folder without quarterlies gives the same JSON."""
    import fbr.backtest_config as bc
    from fbr.cli import run_backtest_config
    from scenarios.market_path import MarketPath

    d = write_data(tmp_path / "data")
    cfg_path = write_backtest(tmp_path / "bt.toml", write_book(tmp_path / "book.toml", dated=None), d)
    doc = backtest_json(cfg_path)
    assert not any(x.startswith("dated contract marks") for x in doc["labels"])

    cfg = bc.load_backtest_file(cfg_path)
    spec = cfg.data

    def old_build_path(c: bc.BacktestConfig) -> MarketPath:
        assert spec.data_dir is not None
        return MarketPath.from_data(spec.data_dir, c.loaded.book.contracts, start=spec.start,
                                    end=spec.end, step=spec.step,
                                    assets=tuple(c.loaded.book.asset_symbols))

    new_path = bc.build_path(cfg)
    assert new_path.mark_source is None
    old_path = old_build_path(cfg)
    for name in ("spot", "mark", "funding", "adv"):
        a, b = getattr(new_path, name), getattr(old_path, name)
        assert (a is None) == (b is None), name
        if a is not None:
            pd.testing.assert_frame_equal(a, b, check_exact=True)
    monkeypatch.setattr(bc, "build_path", old_build_path)
    _, before = run_backtest_config(cfg, report=None, show_progress=False, title="t")
    plain = {k: v for k, v in before.items() if k != "timings"}  # wall-clock times differ
    doc.pop("timings", None)
    assert doc.pop("status") == "ok"  # --json adds the top-level status to the summary
    assert json.loads(json.dumps(plain)) == doc

    bare = write_data(tmp_path / "bare", quarterly=False)
    other = write_backtest(tmp_path / "bt2.toml", write_book(tmp_path / "book2.toml", dated=None),
                           bare)
    doc2 = backtest_json(other)
    doc2.pop("timings", None)
    assert doc2["policies"] == doc["policies"] and doc2["span"] == doc["span"]


def test_underlying_without_files_uses_the_btc_fit(tmp_path: Path) -> None:
    """An ETH dated contract with only BTC quarterly files: every mark modelled on the BTC fit,
    and a note says so."""
    from fbr.backtest_config import build_path, load_backtest_file
    from fbr.backtest_summary import dated_mark_labels
    from scenarios.quarterly_basis import MODELLED, fit_quarterly_term_structure

    d = write_data(tmp_path / "data")
    book = write_book(tmp_path / "book.toml", dated="ETH-250328", underlying="ETH")
    cfg_path = write_backtest(tmp_path / "bt.toml", book, d)
    doc = backtest_json(cfg_path)
    assert any("no quarterly file for ETH" in n and "fitted to the BTC quarterlies" in n
               for n in doc["notes"])
    cfg = load_backtest_file(cfg_path)
    with pytest.warns(UserWarning, match="no quarterly file for ETH"):
        path = build_path(cfg)
    assert path.mark_source is not None and set(path.mark_source["ETH-250328"]) == {MODELLED}
    term = fit_quarterly_term_structure(d, ["ETH"])
    assert term == fit_quarterly_term_structure(d, ["BTC"]) and term.underlyings == ("BTC",)
    live = pd.DatetimeIndex(path.spot.index[path.spot.index <= DELIVERY])
    tau = (DELIVERY - live).total_seconds().to_numpy() / 86400.0
    assert path.mark is not None
    np.testing.assert_allclose(path.mark.loc[live, "ETH-250328"],
                               term.price(path.spot.loc[live, "ETH"].to_numpy(), tau), rtol=1e-12)
    assert dated_mark_labels(cfg, path) == [
        f"dated contract marks (ETH-250328, steps up to expiry): 0 real from the quarterly closes "
        f"in {d / 'quarterly_1d'}, {len(live)} modelled on the fitted basis term structure"]


def test_no_quarterly_file_at_all_is_one_clear_message(tmp_path: Path) -> None:
    d = write_data(tmp_path / "data", quarterly=False)
    cfg = write_backtest(tmp_path / "bt.toml", write_book(tmp_path / "book.toml"), d)
    proc = run_fbr("backtest", str(cfg), "--json", "--no-report")
    assert proc.returncode == 2, proc.stdout
    assert "Traceback" not in proc.stderr
    msg = " ".join(proc.stderr.split())
    for needle in ("quarterly_1d", "has no quarterly file", "BTCUSDT_250627.csv.gz",
                   "list no dated contracts"):
        assert needle in msg, (needle, msg)
    assert str(d / "quarterly_1d") in proc.stderr.replace("\n", "")
    assert json.loads(proc.stdout)["status"] == "error"


def test_synthetic_paths_are_unchanged(tmp_path: Path) -> None:
    """A synthetic source with a dated contract: the path is MarketPath.from_synthetic as it is."""
    from fbr.backtest_config import build_path, load_backtest_file
    from fbr.backtest_summary import dated_mark_labels
    from models.synthetic import generate_history
    from scenarios.market_path import MarketPath

    book = write_book(tmp_path / "book.toml")
    f = tmp_path / "syn.toml"
    f.write_text(f"""book = "{book.as_posix()}"
[data]
source = "synthetic"
seed = 4
days = 30
start = "2025-01-01"
[[policies]]
kind = "no_rebalance"
""")
    cfg = load_backtest_file(f)
    path = build_path(cfg)
    ref = MarketPath.from_synthetic(generate_history(SYMBOLS, days=30, start="2025-01-01", seed=4),
                                    cfg.loaded.book.contracts)
    assert path.mark_source is None and path.mark is not None and ref.mark is not None
    pd.testing.assert_frame_equal(path.mark, ref.mark, check_exact=True)
    assert dated_mark_labels(cfg, path) == []


def test_montecarlo_source_history_with_dated_contracts(tmp_path: Path) -> None:
    """`fbr montecarlo` builds its source history through the same build_path: a dated book on
    the data folder runs (the generator reads the perpetuals' basis, not the dated marks)."""
    d = write_data(tmp_path / "data")
    cfg = write_backtest(tmp_path / "mc.toml", write_book(tmp_path / "book.toml"), d)
    cfg.write_text(cfg.read_text() + '[montecarlo]\npaths = 2\nsteps = 10\nstep = "1d"\n')
    proc = run_fbr("montecarlo", str(cfg), "--json", "--no-report")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["summary"]["hold"]["paths"] == 2
