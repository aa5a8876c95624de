"""Every policy of a backtest file is checked before the first one runs (``fbr.backtest_run.
run_all``): a spot policy on a book whose targets it would sell into cash, or a risk_method the
run would ignore, listed after a policy that runs fine, is refused with no policy started (the
refusals came when that policy's own run began, after the ones listed before it had run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fbr.backtest_config import build_path, load_backtest_file
from fbr.backtest_run import run_all
from models.errors import ValidationError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _book_with_targets_below_one(tmp_path: Path) -> Path:
    """examples/backtest_book.toml with its first target lowered by 10 pp (its targets sum to 0.9)
    on the invested base."""
    text = (EXAMPLES / "backtest_book.toml").read_text()
    head, rest = text.split("[targets]\n", 1)
    first, others = rest.split("\n", 1)
    key, value = first.split("=")
    pct = float(value.strip().strip('"').rstrip("%"))
    book = tmp_path / "book.toml"
    book.write_text(f'{head}[targets]\n{key}= "{pct - 10:g}%"\n{others}')
    return book


def _run(tmp_path: Path, book: Path, second: str) -> list[str]:
    f = tmp_path / "bt.toml"
    f.write_text(f'book = "{book.as_posix()}"\n'
                 '[data]\nsource = "synthetic"\nseed = 12\ndays = 20\nstart = "2024-01-01"\n'
                 '[[policies]]\nkind = "naive_futures"\nperiod = "7D"\n'
                 f"[[policies]]\n{second}\n")
    cfg = load_backtest_file(f)
    started: list[str] = []

    def on_start(name: str, n: int) -> None:
        started.append(name)

    with pytest.raises(ValidationError) as exc:
        run_all(cfg, build_path(cfg), on_start=on_start)
    assert started == []
    return [exc.value.field, exc.value.problem]


def test_a_spot_policy_the_targets_refuse_stops_the_file_before_any_run(tmp_path: Path) -> None:
    field, problem = _run(tmp_path, _book_with_targets_below_one(tmp_path),
                          'kind = "band_spot"\nband = "5%"')
    assert field == "targets" and "sum to 0.9" in problem and "band_spot" in problem


def test_an_ignored_risk_method_stops_the_file_before_any_run(tmp_path: Path) -> None:
    field, problem = _run(tmp_path, EXAMPLES / "backtest_book.toml",
                          'kind = "optimized"\nrisk_method = "sample"')
    assert field == "policies[1].risk_method" and "ignored" in problem
