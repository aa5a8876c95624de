"""A [montecarlo.grid] value given twice is refused when the file is read, naming the grid entry;
it used to load and fail only after the source history was loaded and the generator fitted, under
`policies` ("has the label(s) ... more than once")."""

from __future__ import annotations

from pathlib import Path

import pytest

from fbr.montecarlo_config import load_montecarlo_file
from models.errors import ValidationError

ROOT = Path(__file__).resolve().parents[2]


def _file(tmp_path: Path, grid: str) -> Path:
    f = tmp_path / "mc.toml"
    f.write_text(f"""book = "{(ROOT / 'examples' / 'backtest_book.toml').as_posix()}"
[data]
source = "synthetic"
seed = 3
days = 200
start = "2023-01-01"
[montecarlo]
paths = 2
steps = 5
[montecarlo.grid]
{grid}
[[policies]]
kind = "naive_futures"
band = "5%"
name = "naive"
""")
    return f


@pytest.mark.parametrize(("grid", "field", "shown"), [
    ('band = ["2%", 0.02]', "montecarlo.grid.band[1]", "repeats 0.02"),  # "2%" is 0.02
    ('band = ["5%", "2%", "5%"]', "montecarlo.grid.band[2]", "repeats 0.05"),
    # not equal, but both read band=0.02 in the run labels (6 significant digits)
    ('band = [0.02, 0.0200000001]', "montecarlo.grid.band[1]", "repeats 0.02 as the run label"),
])
def test_repeated_grid_value_refused_at_load(tmp_path: Path, grid: str, field: str,
                                             shown: str) -> None:
    with pytest.raises(ValidationError) as exc:
        load_montecarlo_file(_file(tmp_path, grid))
    assert exc.value.field == field
    assert exc.value.problem.startswith(shown)
    assert exc.value.fix == "give each value once"


def test_distinct_grid_values_load(tmp_path: Path) -> None:
    cfg = load_montecarlo_file(_file(tmp_path, 'band = ["2%", 0.05]'))
    assert cfg.grid["band"] == ("2%", 0.05)
