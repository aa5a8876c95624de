"""``[pledged]`` quantities against the holding (``fbr.config_holdings.check_pledged_quantities``):
the seed book holds 0.1 BTC, 1 ETH and 10 SOL; a pledge of more than that is refused in one message
naming the field (a typo such as 5 for 0.5 had pledged the whole holding silently)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fbr.config_loader import load_book_file
from models.errors import ValidationError

ROOT = Path(__file__).resolve().parents[2]
SEED = (ROOT / "examples" / "seed_example_1.toml").read_text()


def _book(tmp_path: Path, pledged: str) -> Path:
    path = tmp_path / "book.toml"
    path.write_text(SEED + f"\n[pledged]\n{pledged}\n")
    return path


@pytest.mark.parametrize(("pledged", "field", "held"), [
    ("BTC = { bid_buffer = 0.05, quantity = 1.0 }", "pledged.BTC.quantity", "0.1"),
    ("SOL = { tiers = [[0, 1e9, 0.9]], quantity = 10.5 }", "pledged.SOL.quantity", "10"),
])
def test_pledging_more_than_held_is_refused(tmp_path: Path, pledged: str, field: str,
                                            held: str) -> None:
    with pytest.raises(ValidationError) as err:
        load_book_file(_book(tmp_path, pledged))
    assert err.value.field == field
    assert f"{held} units" in err.value.problem


@pytest.mark.parametrize("pledged", ["BTC = { bid_buffer = 0.05, quantity = 0.1 }",
                                     "SOL = { tiers = [[0, 1e9, 0.9]], quantity = 4.0 }",
                                     "ETH = { bid_buffer = 0.05 }"])
def test_pledging_up_to_the_holding_loads(tmp_path: Path, pledged: str) -> None:
    book = load_book_file(_book(tmp_path, pledged)).book
    assert len(book.pledged) == 1
