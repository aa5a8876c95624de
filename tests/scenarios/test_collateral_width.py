"""CollateralPolicy.width: an absolute band around the reserve target, by hand."""

from __future__ import annotations

import pytest

from models.errors import ValidationError
from scenarios.collateral import CollateralPolicy


def test_edges_relative_and_absolute() -> None:
    assert CollateralPolicy(band=0.5).edges(0.2) == pytest.approx((0.1, 0.3))
    assert CollateralPolicy(target_fraction=0.0, width=0.01).edges(0.0) == pytest.approx((-0.01, 0.01))
    assert CollateralPolicy(width=0.02, band=9.0).edges(0.05) == pytest.approx((0.03, 0.07))


@pytest.mark.parametrize("width", [-0.1, 1.0, float("nan")])
def test_bad_width_names_the_field(width: float) -> None:
    with pytest.raises(ValidationError, match=r"collateral\.width"):
        CollateralPolicy(width=width)
