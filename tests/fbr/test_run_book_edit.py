"""``fbr run`` and its book file edited while it loops (review Q4): the CLI watches the book file
(and the files it names) by content from the moment the run file loaded it
(``fbr.book_watch.book_watcher``); an edit ends the loop with ``book_changed`` and exit code 6, so
that a supervisor (``Restart=on-failure``) starts it again on the file as saved. The Runner's own
behaviour (the stop, the alert, nothing sent, the health file) is in
tests/executor/test_run_loop_book_edit.py."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from executor.schedule import SimClock
from fbr.book_watch import book_watcher, run_watcher
from fbr.cli import app
from models.errors import ExitCode

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "examples" / "seed_example_1.toml"


@pytest.fixture(autouse=True)
def _dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FBR_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.setenv("FBR_DATA_HOME", str(tmp_path / "fbr-data"))
    monkeypatch.delenv("FBR_JOURNAL", raising=False)


def test_the_check_compares_contents_of_the_book_and_the_files_it_names(tmp_path: Path) -> None:
    tiers = tmp_path / "tiers.json"
    tiers.write_text("[1, 2]")
    book = tmp_path / "book.toml"
    book.write_text('[contracts.BTC-PERP]\ntiers_from = {file = "tiers.json", symbol = "x"}\n')
    check = book_watcher(book)
    assert check() is None
    st = book.stat()
    book.write_text(book.read_text())  # the same bytes, a new mtime: no change
    os.utime(book, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert check() is None
    tiers.write_text("[1, 3]")  # a file the book names
    assert check() == f"book file changed: {tiers} (named by the book file {book}) is not what " \
                      f"the loop loaded"
    tiers.write_text("[1, 2]")  # back to what was loaded
    assert check() is None
    book.unlink()
    assert check() == f"book file changed: {book} can no longer be read"


def test_the_run_check_names_the_run_file_first_then_the_book(tmp_path: Path) -> None:
    """The run file's own bytes, then the book's check: unchanged -> None; the book edited -> the
    book's message; the run file edited too -> the run file's (the first checked); the run file
    back as loaded -> the book's again; the run file gone -> 'can no longer be read'."""
    book, run = _run_file(tmp_path)
    check = run_watcher(run, book)
    assert check() is None
    run.write_bytes(run.read_bytes())  # saved again, the same bytes
    assert check() is None
    loaded_book, loaded_run = book.read_text(), run.read_text()
    book.write_text(loaded_book + "\n# edited\n")
    assert check() == f"book file changed: {book} is not what the loop loaded"
    run.write_text(loaded_run.replace('check_every = "6h"', 'check_every = "1h"'))
    assert check() == f"run file changed: {run} is not what the loop loaded"
    run.write_text(loaded_run)
    assert check() == f"book file changed: {book} is not what the loop loaded"
    run.unlink()
    assert check() == f"run file changed: {run} can no longer be read"


def _run_file(tmp_path: Path) -> tuple[Path, Path]:
    book = tmp_path / "book.toml"
    shutil.copy(SEED, book)
    run = tmp_path / "run.toml"
    run.write_text(f'book = "book.toml"\n[[policies]]\nkind = "naive_futures"\nband = "1%"\n'
                   f'name = "naive"\n[run]\nexchange = "paper"\ninterval = "1d"\n'
                   f'state_dir = "{tmp_path / "st"}"\n[triggers]\ncheck_every = "6h"\n')
    return book, run


def _clock(monkeypatch: pytest.MonkeyPatch, hook: Callable[[datetime, datetime], None]) -> None:
    """``fbr run``'s wall clock replaced by a simulated one over a day, ``hook`` at each step."""
    start = datetime.now(UTC).replace(microsecond=0)
    monkeypatch.setattr("executor.schedule.WallClock",
                        lambda: SimClock(start, end=start + timedelta(days=1), on_advance=[hook]))


@pytest.mark.parametrize("as_json", [True, False], ids=["json", "text"])
def test_fbr_run_ends_with_book_changed_and_exit_6(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   as_json: bool) -> None:
    """The book's targets edited after the first cycle: the next wake-up ends the loop (one
    cycle), exit code 6, ``run`` ``book_changed`` with the message naming the file (``--json``:
    ``status`` ``error``), health ``book_changed``."""
    book, run = _run_file(tmp_path)

    def edit(_t0: datetime, _t1: datetime) -> None:
        text = book.read_text()
        book.write_text(text.replace("BTC = 0.50", "BTC = 0.30").replace("ETH = 0.30", "ETH = 0.50"))

    _clock(monkeypatch, edit)
    args = ["run", str(run), "--journal", str(tmp_path / "j.sqlite")] + (["--json"] if as_json
                                                                         else [])
    res = CliRunner().invoke(app, args)
    assert res.exit_code == ExitCode.REFUSED, res.output
    if as_json:
        doc = json.loads(res.stdout)
        assert (doc["status"], doc["exit_code"], doc["run"], doc["cycles"]) == (
            "error", 6, "book_changed", 1)
        assert doc["error"].startswith(f"book file changed: {book} is not what the loop loaded")
    else:
        assert "fbr run (paper): book_changed after 1 cycles" in res.stdout
        assert f"book file changed: {book}" in res.stderr.replace("\n", "")
    health = json.loads((tmp_path / "st" / "health.json").read_text())
    assert health["status"] == "book_changed" and str(book) in health["last_error"]


def test_fbr_run_ends_when_its_run_file_changes(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The run file's daily loss limit added after the first cycle (the book untouched): the next
    wake-up ends the loop as a book edit does (one cycle, exit code 6, ``book_changed``), the
    message naming the run file, so that the new limit is not ignored until a restart."""
    _book, run = _run_file(tmp_path)

    def edit(_t0: datetime, _t1: datetime) -> None:
        if "[limits]" not in run.read_text():
            run.write_text(run.read_text() + '[limits]\ndaily_loss_usd = 1000\n')

    _clock(monkeypatch, edit)
    res = CliRunner().invoke(app, ["run", str(run), "--journal", str(tmp_path / "j.sqlite"),
                                   "--json"])
    assert res.exit_code == ExitCode.REFUSED, res.output
    doc = json.loads(res.stdout)
    assert (doc["status"], doc["run"], doc["cycles"]) == ("error", "book_changed", 1)
    assert doc["error"].startswith(f"run file changed: {run} is not what the loop loaded")


def test_fbr_run_on_an_unchanged_book_runs_on(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The same loop with the book saved again unchanged at each step: it runs to the end of the
    simulated day (exit 0, ``finished``)."""
    book, run = _run_file(tmp_path)

    def resave(_t0: datetime, _t1: datetime) -> None:
        book.write_bytes(book.read_bytes())

    _clock(monkeypatch, resave)
    res = CliRunner().invoke(app, ["run", str(run), "--journal", str(tmp_path / "j.sqlite"),
                                   "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert (doc["status"], doc["run"]) == ("ok", "finished")
