"""The CLI's console (issue 13 items 3 and 6): no number cut in an 80-column terminal, warnings as
one line, ``fbr --version``, the journal in the per-user data directory, a light ``fbr --help``,
and command modules that never import ``fbr.cli``."""

from __future__ import annotations

import ast
import itertools
import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from cli_helpers import run_fbr
from typer.testing import CliRunner

from fbr import console
from fbr.cli import app

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
SEED = str(EXAMPLES / "seed_example_1.toml")
ANSI = re.compile(r"\x1b\[[0-9;]*m")




def terminal_80(*args: str) -> str:
    """The command's human output on an 80-column terminal (rich sees a terminal), no colour."""
    proc = run_fbr(*args, env={"COLUMNS": "80", "TTY_COMPATIBLE": "1", "NO_COLOR": "1"})
    assert proc.returncode == 0, proc.stderr
    return ANSI.sub("", proc.stdout)


def check_80(text: str, numbers: list[str]) -> None:
    """Nothing cut ("…"), no line past 80 columns, each number printed whole on one line."""
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 80
    for n in numbers:
        assert n in text, n


def test_solve_and_whatif_fit_80_columns() -> None:
    sol = json.loads(run_fbr("solve", str(EXAMPLES / "ten_assets.toml"), "--json").stdout)
    text = terminal_80("solve", str(EXAMPLES / "ten_assets.toml"))
    check_80(text, [f"{t['notional']:,.2f}" for t in sol["trades"]] + [f"{sol['nav']:,.2f}"])
    text = terminal_80("whatif", SEED, "--shock", "BTC=-30%", "--scenario", "crash-30",
                       "--with-solution")
    check_80(text, ["-3,000.00", "10,000.00", "+42756.28%"])


def test_execute_status_and_backtest_fit_80_columns(tmp_path: Path) -> None:
    text = terminal_80("execute", SEED)
    check_80(text, ["-1,000.00", "500.00", "0.01666667", "3.33333333"])
    assert "client id" in text  # the ids go to their own table, whole
    journal = str(tmp_path / "j.sqlite")
    assert run_fbr("execute", SEED, "--exchange", "paper", "--journal", journal).returncode == 0
    check_80(terminal_80("status", SEED, "--journal", journal), ["50.000%", "12,998.80"])
    cfg = tmp_path / "bt.toml"
    cfg.write_text(f"""book = "{(EXAMPLES / 'backtest_book.toml').as_posix()}"
[data]
source = "synthetic"
seed = 3
days = 30
start = "2023-01-01"
[[policies]]
kind = "no_rebalance"
name = "hold"
[[policies]]
kind = "naive_futures"
band = "5%"
name = "naive"
""")
    summary = json.loads(run_fbr("backtest", str(cfg), "--no-report", "--json").stdout)
    ret = summary["policies"]["hold"]["total_return"]
    text = terminal_80("backtest", str(cfg), "--no-report")
    check_80(text, [f"{100 * ret:.2f}", "liquidations", "TE %"])


def test_warnings_print_as_one_line() -> None:
    code = ("import warnings\nfrom fbr.console import route_warnings\nroute_warnings()\n"
            "warnings.warn('data gap:\\n 3 days   missing', UserWarning)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=ROOT)
    assert proc.returncode == 0
    assert proc.stderr == "warning: data gap: 3 days missing\n"


def test_a_warning_text_prints_once_wherever_it_is_raised() -> None:
    code = ("import warnings\nfrom fbr.console import route_warnings\nroute_warnings()\n"
            "def market():\n    warnings.warn('aligned on the common span', UserWarning)\n"
            "def risk():\n    warnings.warn('aligned on the common span', UserWarning)\n"
            "market(); risk(); warnings.warn('another note', UserWarning)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=ROOT)
    assert proc.returncode == 0
    assert proc.stderr == "warning: aligned on the common span\nwarning: another note\n"


def test_every_command_routes_warnings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # restored afterwards
    CliRunner().invoke(app, ["solve", str(tmp_path / "none.toml")])
    assert warnings.showwarning is console._one_line_warning


def test_version() -> None:
    from importlib.metadata import version

    res = CliRunner().invoke(app, ["--version"])
    assert res.exit_code == 0 and res.stdout.strip() == f"fbr {version('fbr')}"


def test_journal_lives_in_the_user_data_directory(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    home = Path(os.environ["FBR_DATA_HOME"])  # tests/fbr/conftest.py: a temporary folder
    assert console.default_journal() == home / "journal.sqlite"
    monkeypatch.setenv("FBR_DATA_HOME", str(tmp_path / "data"))
    res = CliRunner().invoke(app, ["execute", SEED, "--exchange", "paper", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["journal"] == str(tmp_path / "data" / "journal.sqlite")
    assert (tmp_path / "data" / "journal.sqlite").is_file()
    monkeypatch.setenv("FBR_JOURNAL", str(tmp_path / "j.sqlite"))  # the file itself wins
    assert console.default_journal() == tmp_path / "j.sqlite"
    monkeypatch.delenv("FBR_JOURNAL")
    monkeypatch.delenv("FBR_DATA_HOME")
    import platformdirs

    assert console.default_journal() == platformdirs.user_data_path("fbr") / "journal.sqlite"


def test_help_imports_nothing_heavy() -> None:
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom fbr.cli import app\n"
            "assert CliRunner().invoke(app, ['--help']).exit_code == 0\n"
            "heavy = ('numpy', 'pandas', 'scipy', 'cvxpy', 'ccxt', 'plotly', 'optimizer.rebalance',"
            " 'fbr.backtest_config')\n"
            "print(sorted(m for m in heavy if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_command_modules_never_import_fbr_cli() -> None:
    for name in ("whatif_cli", "montecarlo_cli", "execute_cli", "data_cli", "render",
                 "whatif_render", "console"):
        tree = ast.parse((ROOT / "fbr" / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert node.module != "fbr.cli", name
            elif isinstance(node, ast.Import):
                assert all(a.name != "fbr.cli" for a in node.names), name


def test_drift_prints_in_percentage_points_everywhere() -> None:
    """Drift is percentage points in JSON (``drift_pp``) and in every table: solve, whatif and
    status print '+10.00 pp' for BTC at 60% against 50% (status and whatif printed '10.000%')."""
    assert console.pp_text(0.1) == "+10.00 pp" and console.pp_text(None) == "-"
    assert console.pp_text(-0.0525) == "-5.25 pp"
    assert console.pp_text(-1e-9) == "+0.00 pp" and console.pp_text(-0.00004) == "+0.00 pp"
    assert console.signed_pct(-1e-9) == "+0.00%" and console.signed_pct(-0.0955) == "-9.55%"
    text = terminal_80("whatif", SEED, "--shock", "BTC=0%", "--no-resolve")
    assert "+10.00 pp" in text and "-5.00 pp" in text
    status = terminal_80("status", SEED, "--exchange", "dry-run")
    assert "+10.00 pp" in status and "-5.00 pp" in status


def test_help_keeps_toml_table_names_and_rewraps_docstrings() -> None:
    """Help text is Markdown, not Rich markup: a TOML table name such as ``[run]`` is text (Rich
    markup took it for a style tag and dropped it), and a docstring's line breaks do not cut a
    sentence in the middle of the terminal."""
    run_help = " ".join(terminal_80("run", "--help").split())
    for table in ("[run]", "[triggers]", "[limits]", "[alerts]", "[data]"):
        assert table in run_help
    cells = [line[2:].rstrip(" │") for line in terminal_80("--help").splitlines()
             if line.startswith("│ ")]
    assert sum(c.startswith(" ") for c in cells) >= 5  # descriptions over several lines
    width = max(len(c) for c in cells)  # the widest line fills the panel
    for line, nxt in itertools.pairwise(cells):
        if nxt.startswith(" "):  # the next line goes on with this command's description
            assert len(line) + 1 + len(nxt.split()[0]) > width, (line, nxt)


def test_status_says_what_a_rebalance_buys_in_user_units() -> None:
    """The seed book (60/25/15 against 50/30/20 of 10,000 USD) is due: its plan takes the tracking
    error from 4.981% to 0% for 1.20 USD of trading cost, 2,000 USD traded at a 5 bp fee plus a
    1 bp half spread; the rule's own figures follow (1.20 / 10,000 = 0.00012 with gamma_trade 1).
    It printed only 'TE² falls by 0.00248, trading cost 0.00012 (annualised units)'."""
    text = " ".join(terminal_80("status", SEED, "--exchange", "dry-run").split())
    assert ("rebalance due: tracking error 4.981% -> 0.000% for 1.20 USD of trading cost" in text)
    assert "0.00248 vs 0.00012)" in text
    doc = json.loads(run_fbr("status", SEED, "--exchange", "dry-run", "--json").stdout)
    assert doc["trading_cost_usd"] == pytest.approx(2_000 * (0.0005 + 0.0001))
    assert doc["tracking_error_after"] == pytest.approx(0.0, abs=1e-6)
    assert doc["cost"] == pytest.approx(doc["trading_cost_usd"] / 10_000)


def test_a_busy_journal_is_exit_6_with_its_fix_not_an_internal_error(
        capsys: pytest.CaptureFixture[str]) -> None:
    """SQLite's BUSY (code 5) from a journal another process holds, raised outside the executor's
    own handling (before a plan is journalled), is exit 6 (refused) naming the fix; any other
    OperationalError stays an internal error (exit 1)."""
    import sqlite3

    import typer

    busy = sqlite3.OperationalError("database is locked")
    busy.sqlite_errorcode = 5  # what the sqlite3 module sets
    with pytest.raises(typer.Exit) as info, console.user_errors(as_json=True):
        raise busy
    assert info.value.exit_code == 6
    doc = json.loads(capsys.readouterr().out)
    assert doc["status"] == "error" and "in use by another process" in doc["error"]
    other = sqlite3.OperationalError("no such table: plans")
    other.sqlite_errorcode = 1
    with pytest.raises(typer.Exit) as info, console.user_errors(as_json=True):
        raise other
    assert info.value.exit_code == 1
