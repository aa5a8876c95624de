"""models.errors: the list a message names its items by."""

from __future__ import annotations

import pytest

from models.errors import spoken_list


@pytest.mark.parametrize(("items", "said"), [
    ([], ""), (["BTC"], "BTC"), (["BTC", "ETH"], "BTC and ETH"),
    (["BTC", "ETH", "SOL"], "BTC, ETH and SOL"), (["a, b", "c"], "a, b and c")])
def test_spoken_list(items: list[str], said: str) -> None:
    assert spoken_list(items) == said
