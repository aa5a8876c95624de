"""An ``optimized`` [[policies]] entry takes ``horizon`` (the multi-period planner) and
``cost_to_go`` / ``cost_to_go_power`` (the quadratic cost-to-go) over the book's [solver] and
[costs], so one backtest file compares the single-period policy, the cost-to-go and the planner
(before, those came from the book only and an entry with them was refused as an unknown key)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fbr.backtest_config import build_path, load_backtest_file
from fbr.backtest_policies import parse_policy
from fbr.backtest_run import build_policy
from models.errors import ValidationError
from optimizer.policies import OptimizedFutures

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _file(tmp_path: Path) -> Path:
    f = tmp_path / "bt.toml"
    f.write_text(f'book = "{(EXAMPLES / "backtest_book.toml").as_posix()}"\n'
                 '[data]\nsource = "synthetic"\nseed = 12\ndays = 12\nstart = "2024-01-01"\n'
                 '[[policies]]\nkind = "optimized"\nname = "single"\n'
                 '[[policies]]\nkind = "optimized"\nname = "planner"\nhorizon = 3\n'
                 '[[policies]]\nkind = "optimized"\nname = "ctg"\ncost_to_go = 30\n'
                 'cost_to_go_power = 0.4\n')
    return f


def test_entries_override_the_book_horizon_and_cost_to_go(tmp_path: Path) -> None:
    """The book (examples/backtest_book.toml) has horizon 1 and no cost-to-go: the first entry
    keeps them, the second plans 3 steps (its first decision's solution lists 3 steps), the third
    prices the cost-to-go with kappa 30 and p 0.4."""
    cfg = load_backtest_file(_file(tmp_path))
    path = build_path(cfg)
    assert cfg.loaded.settings.horizon == 1 and cfg.loaded.settings.costs.cost_to_go == 0.0
    single, planner, ctg = (build_policy(spec, cfg, path) for spec in cfg.policies)
    assert isinstance(single, OptimizedFutures) and isinstance(planner, OptimizedFutures)
    assert isinstance(ctg, OptimizedFutures)
    assert single.settings.horizon == 1 and single.settings.costs.cost_to_go == 0.0
    assert planner.settings.horizon == 3 and planner.settings.costs.cost_to_go == 0.0
    assert ctg.settings.horizon == 1
    assert (ctg.settings.costs.cost_to_go, ctg.settings.costs.cost_to_go_power) == (30.0, 0.4)
    book, market = cfg.loaded.book, cfg.loaded.market
    sol = planner.rebalancer.solve(book, market, cfg.loaded.risk, planner.settings)
    assert sol.plan is not None and sol.plan.horizon == 3


@pytest.mark.parametrize(("line", "field"), [
    ("horizon = 0", "policies[1].horizon"),
    ("horizon = 2.5", "policies[1].horizon"),
    ("cost_to_go = -1", "policies[1].cost_to_go"),
    ("cost_to_go = 30\ncost_to_go_power = 2", "policies[1].cost_to_go_power"),
])
def test_bad_values_name_the_entry_field(line: str, field: str) -> None:
    row = dict(kind="optimized")
    for part in line.splitlines():
        key, value = (x.strip() for x in part.split("="))
        row[key] = float(value) if "." in value or "-" in value else int(value)  # type: ignore[assignment]
    with pytest.raises(ValidationError) as exc:
        parse_policy(row, "policies[1]")
    assert exc.value.field == field


def _power_only(tmp_path: Path, book_kappa: str) -> Path:
    """A backtest file whose optimized entry sets cost_to_go_power only, on the example book with
    ``book_kappa`` added to its [costs] (or nothing)."""
    text = (EXAMPLES / "backtest_book.toml").read_text()
    if book_kappa:
        text = text.replace("[costs]\n", f"[costs]\n{book_kappa}\n", 1)
    (tmp_path / "book.toml").write_text(text)
    f = tmp_path / "bt.toml"
    f.write_text('book = "book.toml"\n[data]\nsource = "synthetic"\nseed = 12\ndays = 12\n'
                 'start = "2024-01-01"\n[[policies]]\nkind = "optimized"\ncost_to_go_power = 0.4\n')
    return f


def test_a_power_alone_takes_the_books_kappa(tmp_path: Path) -> None:
    """The book's kappa 30 with the entry's p 0.4 (the entry's power had been refused as ignored
    whatever the book said); without a kappa anywhere it is refused when the policy is built,
    before any replay, naming the entry's field."""
    cfg = load_backtest_file(_power_only(tmp_path, "cost_to_go = 30"))
    policy = build_policy(cfg.policies[0], cfg, build_path(cfg))
    assert isinstance(policy, OptimizedFutures)
    assert (policy.settings.costs.cost_to_go, policy.settings.costs.cost_to_go_power) == (30.0, 0.4)
    cfg = load_backtest_file(_power_only(tmp_path, ""))
    with pytest.raises(ValidationError) as exc:
        build_policy(cfg.policies[0], cfg, build_path(cfg))
    assert exc.value.field == "policies[0].cost_to_go_power" and "ignored" in exc.value.problem
