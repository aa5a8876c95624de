"""`fbr backtest`'s progress bar does not change the replay (fbr.backtest_run.run_all).

The progress callback used to wrap each policy in a ticking wrapper, which hid the optimising
policy's type from the replay: its funding-forecast rule, its tax settings, its spot leg and the
tax lots it is handed never reached the steps when a progress bar was shown (always, in
``fbr backtest``). The replay now takes the callback itself (``run_backtest(on_step=...)``).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from pathlib import Path

from fbr.backtest_config import build_path, load_backtest_file
from fbr.backtest_run import run_all
from optimizer.settings import FundingForecastRule

DEMO = Path(__file__).resolve().parents[2] / "examples" / "backtest_demo.toml"


def test_the_progress_callback_leaves_the_replay_as_it_is() -> None:
    cfg = load_backtest_file(DEMO)
    settings = cfg.loaded.settings
    costs = dataclasses.replace(settings.costs, funding_forecast=FundingForecastRule.EWMA)
    loaded = dataclasses.replace(cfg.loaded,
                                 settings=dataclasses.replace(settings, costs=costs))
    cfg = dataclasses.replace(cfg, loaded=loaded, data=dataclasses.replace(cfg.data, days=40),
                              policies=tuple(p for p in cfg.policies if p.kind == "optimized"))
    assert len(cfg.policies) == 1
    ticks: list[str] = []

    def start(name: str, n: int) -> Callable[[], None]:
        return lambda: ticks.append(name)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = build_path(cfg)
        shown = run_all(cfg, path, start)
        quiet = run_all(cfg, path)
    (name, a), (_, b) = next(iter(shown.items())), next(iter(quiet.items()))
    assert len(ticks) == len(path.spot.index) and set(ticks) == {name}  # one tick per step
    assert a.trades.equals(b.trades)
    assert a.weights.equals(b.weights)
    assert a.steps.drop(columns=["solve_time_ms"]).equals(b.steps.drop(columns=["solve_time_ms"]))
