"""`fbr montecarlo` end to end (subprocess): JSON summary, identical on a process pool, the HTML
report, the GARCH-t generator, and bad files / options as one clear message with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import run_fbr

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"




def _config(tmp_path: Path, montecarlo: str, extra: str = "") -> Path:
    f = tmp_path / "mc.toml"
    f.write_text(f"""book = "{(EXAMPLES / 'backtest_book.toml').as_posix()}"
[data]
source = "synthetic"
seed = 3
days = 200
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
{extra}
""")
    return f


def test_json_summary_identical_on_processes(tmp_path: Path) -> None:
    f = _config(tmp_path, 'paths = 6\nsteps = 40\nseed = 2\nmean_block = 5\n[montecarlo.grid]\n'
                'band = ["2%", "10%"]')
    serial = run_fbr("montecarlo", str(f), "--json", "--per-path", "--no-report")
    pooled = run_fbr("montecarlo", str(f), "--json", "--per-path", "--no-report", "--processes", "2")
    for proc in (serial, pooled):
        assert proc.returncode == 0, proc.stderr
        assert "Traceback" not in proc.stderr
    a, b = json.loads(serial.stdout), json.loads(pooled.stdout)
    assert a["summary"] == b["summary"] and a["per_path"] == b["per_path"]
    assert list(a["summary"]) == ["hold", "naive [band=0.02]", "naive [band=0.1]"]
    assert a["paths"] == 6 and a["steps"] == 40 and a["report"] is None
    assert any("SYNTHETIC" in label for label in a["labels"])
    hold = [r for r in a["per_path"] if r["policy"] == "hold"]
    assert [r["path"] for r in hold] == list(range(6))
    te = np.array([r["tracking_error"] for r in hold])
    assert a["summary"]["hold"]["tracking_error_p50"] == pytest.approx(float(np.median(te)))
    # a tighter band tracks better on the median path
    s = a["summary"]
    assert s["naive [band=0.02]"]["tracking_error_p50"] < s["hold"]["tracking_error_p50"]
    # --paths and --seed override the file
    more = run_fbr("montecarlo", str(f), "--json", "--no-report", "--paths", "3", "--seed", "9")
    assert more.returncode == 0, more.stderr
    assert json.loads(more.stdout)["summary"]["hold"]["paths"] == 3


def test_garch_t_and_report(tmp_path: Path) -> None:
    f = _config(tmp_path, 'generator = "garch_t"\npaths = 4\nsteps = 30\nseed = 1')
    report = tmp_path / "out" / "mc.html"
    proc = run_fbr("montecarlo", str(f), "--report", str(report))
    assert proc.returncode == 0, proc.stderr
    assert "GARCH" in proc.stdout and "P(liq)" in proc.stdout
    html = report.read_text()
    for div in ("mc-fan", "mc-tracking_error", "mc-total_cost_bps", "mc-max_drawdown",
                "mc-peak_margin_ratio", "fbr-synthetic-banner"):
        assert div in html


@pytest.mark.parametrize(("montecarlo", "args", "message"), [
    ("pathz = 3", (), "montecarlo.pathz"),
    ('generator = "magic"', (), "montecarlo.generator"),
    ('step = "8h"', (), "montecarlo.step"),
    ("paths = 0", (), "montecarlo.paths"),
    ('[montecarlo.grid]\nperiod = ["0D"]', (), "montecarlo.grid.period"),
    ('[montecarlo.grid]\nwindow = [3]', (), "montecarlo.grid.window"),
    ("paths = 2", ("--workers", "2", "--processes", "2"), "choose one engine"),
    ("paths = 2", ("--processes", "0"), "--processes"),
])
def test_bad_input_one_clear_message(tmp_path: Path, montecarlo: str, args: tuple[str, ...],
                                     message: str) -> None:
    from typer.testing import CliRunner

    from fbr.cli import app

    f = _config(tmp_path, montecarlo)
    res = CliRunner().invoke(app, ["montecarlo", str(f), "--json", "--no-report", *args])
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    first = res.stdout.splitlines()[0]
    out = json.loads(first)
    assert out["status"] == "error" and message in out["error"]


def test_missing_file(tmp_path: Path) -> None:
    proc = run_fbr("montecarlo", str(tmp_path / "nope.toml"))
    assert proc.returncode == 2 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr


def test_scheduler_address_matches_serial(tmp_path: Path) -> None:
    """--scheduler ADDRESS: a running Dask cluster (a LocalCluster on loopback) gives the serial
    numbers."""
    import distributed
    from typer.testing import CliRunner

    from fbr.cli import app

    f = _config(tmp_path, "paths = 3\nsteps = 15\nseed = 4")
    base = ["montecarlo", str(f), "--json", "--per-path", "--no-report"]
    serial = CliRunner().invoke(app, base)
    assert serial.exit_code == 0, serial.output
    # distributed ships no annotations on LocalCluster.__init__
    cluster = distributed.LocalCluster(  # type: ignore[no-untyped-call]
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None, host="127.0.0.1")
    try:
        remote = CliRunner().invoke(app, [*base, "--scheduler", str(cluster.scheduler_address)])
    finally:
        cluster.close()
    assert remote.exit_code == 0, remote.output
    a, b = json.loads(serial.stdout), json.loads(remote.stdout)
    assert a["per_path"] == b["per_path"] and a["summary"] == b["summary"]
    assert "Dask scheduler at tcp://127.0.0.1" in b["engine"]


@pytest.mark.shared_data
@pytest.mark.parametrize("step", ["1d", "8h"])
def test_data_source_history(tmp_path: Path, step: str, shared_data_dir: Path) -> None:
    """source = "data": the generator resamples the shared data folder."""
    d = shared_data_dir
    f = tmp_path / "mc.toml"
    f.write_text(f"""book = "{(EXAMPLES / 'backtest_book.toml').as_posix()}"
[data]
source = "data"
data_dir = "{d.as_posix()}"
start = "2023-01-01"
end = "2024-01-01"
[montecarlo]
paths = 3
steps = 20
step = "{step}"
[[policies]]
kind = "no_rebalance"
""")
    proc = run_fbr("montecarlo", str(f), "--json", "--no-report")
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert res["summary"]["no_rebalance"]["paths"] == 3 and res["step"] == step
    assert any("market data from" in label for label in res["labels"])


def test_backtest_pledged_reaches_the_montecarlo_replays(tmp_path: Path) -> None:
    """[backtest] pledged = true (with a [pledged] book) is passed to every replay of the spec."""
    from fbr.montecarlo_cli import build_spec
    from fbr.montecarlo_config import load_montecarlo_file

    book = tmp_path / "book.toml"
    book.write_text((EXAMPLES / "backtest_book.toml").read_text() + "\n[pledged]\nBTC = 0.95\n")
    cfg = _config(tmp_path, "paths = 2\nsteps = 5", "[backtest]\npledged = true\n")
    cfg.write_text(cfg.read_text().replace((EXAMPLES / "backtest_book.toml").as_posix(),
                                           book.as_posix()))
    spec, _ = build_spec(load_montecarlo_file(cfg))
    assert spec.pledged is True
    off = _config(tmp_path, "paths = 2\nsteps = 5")
    assert build_spec(load_montecarlo_file(off))[0].pledged is False


def test_a_band_grid_does_not_reach_the_tracking_error_band(tmp_path: Path) -> None:
    """``[montecarlo.grid] band`` runs every policy taking a (weight) ``band`` once per value; the
    TE band's trigger is a tracking error named ``te_band``, so it runs once, at its own 1%."""
    from fbr.montecarlo_config import load_montecarlo_file, policy_runs

    f = _config(tmp_path, 'paths = 2\nsteps = 20\n[montecarlo.grid]\nband = ["2%", "5%"]\n',
                extra='[[policies]]\nkind = "te_band_futures"\nte_band = "1%"\nname = "te"\n')
    runs = policy_runs(load_montecarlo_file(f))
    assert [r.label for r in runs] == ["hold", "naive [band=0.02]", "naive [band=0.05]", "te"]


def test_steps_held_on_an_infeasible_answer_are_noted_in_json_table_and_report(
        tmp_path: Path) -> None:
    """The example book with a funding budget of -1,000,000 USD (infeasible against the margin
    row at every step): the optimiser is held at every step of every path (3 paths of 5 daily
    steps: 6 steps each, the start included), and one note says so in --json's notes, under the
    table and in the HTML report's labels."""
    book = tmp_path / "book.toml"
    book.write_text((EXAMPLES / "backtest_book.toml").read_text().replace(
        "[constraints]\n", "[constraints]\nfunding_budget_usd = -1000000\n", 1))
    cfg = tmp_path / "mc.toml"
    cfg.write_text('book = "book.toml"\n[data]\nsource = "synthetic"\nseed = 12\ndays = 200\n'
                   'start = "2022-01-01"\n[montecarlo]\npaths = 3\nsteps = 5\nseed = 1\n'
                   '[[policies]]\nkind = "optimized"\nname = "optimised"\n')
    report = tmp_path / "mc.html"
    proc = run_fbr("montecarlo", str(cfg), "--json", "--report", str(report))
    assert proc.returncode == 0, proc.stderr
    note = ("optimised: no answer to trade at 18 steps on 3 of 3 paths; the book was held as it "
            "stood there")
    assert json.loads(proc.stdout)["notes"] == [note]
    assert note in report.read_text()
    table = run_fbr("montecarlo", str(cfg), "--no-report")
    assert table.returncode == 0, table.stderr
    assert f"note: {note}" in " ".join(table.stdout.split())
