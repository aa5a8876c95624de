"""fbr.backtest_summary: the note a backtest prints for steps where no solver answered."""

from __future__ import annotations

import pandas as pd

from fbr.backtest_summary import unsolved_notes
from scenarios.backtest_result import UNSOLVED_COLUMNS, BacktestResult

T0 = pd.Timestamp("2021-10-29 08:00", tz="UTC")


def _result(n_steps: int, unsolved: list[dict[str, object]]) -> BacktestResult:
    empty = pd.DataFrame(index=pd.date_range(T0, periods=n_steps, freq="8h"))
    return BacktestResult(steps=empty, spot_value=empty, futures_notional=empty, weights=empty,
                          trades=pd.DataFrame(), liquidations=pd.DataFrame(),
                          targets=pd.Series(dtype=float), spot_returns=empty, policy="p",
                          unsolved=pd.DataFrame(unsolved, columns=UNSOLVED_COLUMNS))


def test_one_note_per_policy_with_unsolved_steps() -> None:
    rows: list[dict[str, object]] = [
        {"time": T0, "step": 0, "reason": "every solver failed (CLARABEL: solver_error)"},
        {"time": T0 + pd.Timedelta(hours=8), "step": 1, "reason": "every solver failed (..)"}]
    notes = unsolved_notes({"fbr": _result(5, rows), "band": _result(5, [])})
    assert notes == ["fbr: no answer to trade at 2 of 5 steps (first 2021-10-29T08:00:00+00:00: "
                     "every solver failed (CLARABEL: solver_error)); the book was held as it "
                     "stood there"]
    assert unsolved_notes({"band": _result(5, [])}) == []
