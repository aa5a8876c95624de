"""Path generators refuse a source history too short to fit: GARCH(1,1)-t needs at least 30
returns (5 parameters per asset; the project's floor for a trailing risk model), the block
bootstrap at least one mean block (``mean_block`` returns). Refused before any path is simulated,
with a message naming the setting and the fix. Row counts by hand in the docstrings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fbr.cli import app
from models.errors import ValidationError
from scenarios.path_bootstrap import BlockBootstrap
from scenarios.path_garch import GarchT
from scenarios.path_history import JointHistory, PathFrame

ROOT = Path(__file__).resolve().parents[2]
FRAME = PathFrame(start=pd.Timestamp("2024-01-01", tz="UTC"), start_prices={"BTC": 60_000.0})


def _history(rows: int) -> JointHistory:
    """``rows`` daily BTC returns (N(0, 3%), seeded), no funding, no basis."""
    returns = np.random.default_rng(1).normal(0.0, 0.03, (rows, 1))
    return JointHistory(assets=("BTC",), returns=returns, funding=np.zeros((rows, 1, 1)),
                        basis=np.zeros((rows, 1)), step=pd.Timedelta(days=1),
                        settle_offsets=(pd.Timedelta(0),))


def test_garch_needs_30_returns() -> None:
    """29 returns < 30: refused naming montecarlo.generator, the count and the fix (a longer
    [data] history, or the bootstrap); 30 returns are fitted (mean_block 10 <= 30)."""
    with pytest.raises(ValidationError) as info:
        GarchT.fit(_history(29), FRAME, mean_block=10.0)
    err = info.value
    assert err.field == "montecarlo.generator"
    assert "29 returns" in err.problem and "30" in err.problem
    assert "[data] days" in err.fix and "bootstrap" in err.fix
    assert GarchT.fit(_history(30), FRAME, mean_block=10.0).params.mu.shape == (1,)


def test_bootstrap_needs_one_mean_block() -> None:
    """mean_block 10 on 9 returns: refused naming montecarlo.mean_block and the fix (a longer
    history or mean_block <= 9); on 10 returns it runs."""
    with pytest.raises(ValidationError) as info:
        BlockBootstrap(_history(9), FRAME, mean_block=10.0)
    err = info.value
    assert err.field == "montecarlo.mean_block"
    assert "9 returns" in err.problem and "at most 9" in err.fix and "[data] days" in err.fix
    path = BlockBootstrap(_history(10), FRAME, mean_block=10.0).generate(1, 5)
    assert len(path.spot.index) == 6


@pytest.mark.parametrize("generator", ["garch_t", "bootstrap"])
def test_montecarlo_on_a_three_day_history_exits_2(tmp_path: Path, generator: str) -> None:
    """[data] days = 3: three daily closes, 3 - 1 = 2 returns, fewer than 30 (garch_t) and than
    mean_block = 10 (bootstrap): exit code 2, one error, no distribution printed."""
    f = tmp_path / "mc.toml"
    f.write_text(f"""book = "{(ROOT / 'examples' / 'backtest_book.toml').as_posix()}"
[data]
source = "synthetic"
seed = 12
days = 3
start = "2022-01-01"
[montecarlo]
generator = "{generator}"
paths = 4
steps = 10
seed = 3
mean_block = 10
[[policies]]
kind = "no_rebalance"
name = "hold"
""")
    res = CliRunner().invoke(app, ["montecarlo", str(f), "--no-report", "--json"])
    assert res.exit_code == 2, res.output
    doc = json.loads(res.stdout.splitlines()[0])
    assert doc["status"] == "error" and "2 returns" in doc["error"] and "[data] days" in doc["error"]
    assert "summary" not in doc
