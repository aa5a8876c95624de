"""Annualised vols beyond any market's (a typo, a unit slip) are refused by name before any
solve: ``risk.vols.X`` and ``risk.basis_vols.X`` lie in (0, MAX_VOL] and [0, MAX_VOL]."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fbr.config import load_book_file
from fbr.config_risk import MAX_VOL
from models.errors import ValidationError

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed_example_1.toml"


def _book(tmp_path: Path, btc_vol: str, basis: str = "") -> Path:
    text = re.sub(r"(?m)^BTC = 0\.55 *$", f"BTC = {btc_vol}", SEED.read_text())
    if basis:
        text = text.replace("basis_risk = false", "basis_risk = true")
        text = re.sub(r"(?m)^\[risk\.vols\]", f"[risk.basis_vols]\n{basis}\n\n[risk.vols]", text)
    p = tmp_path / "b.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("vol", ["1e300", "101.0", "-0.5", "0.0", "inf"])
def test_an_unrealistic_vol_is_refused_by_name(tmp_path: Path, vol: str) -> None:
    with pytest.raises(ValidationError) as exc:
        load_book_file(_book(tmp_path, vol))
    assert exc.value.field == "risk.vols.BTC"


@pytest.mark.parametrize("vol", ["0.55", '"250%"', str(MAX_VOL)])
def test_a_realistic_vol_is_read_as_given(tmp_path: Path, vol: str) -> None:
    lb = load_book_file(_book(tmp_path, vol))
    want = 2.5 if "%" in vol else float(vol)
    assert lb.risk.covariance[0, 0] == pytest.approx(want ** 2, rel=1e-12)


def test_a_basis_vol_past_the_bound_is_refused_and_zero_is_read(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as exc:
        load_book_file(_book(tmp_path, "0.55", basis="BTC-PERP = 1e200"))
    assert exc.value.field == "risk.basis_vols.BTC-PERP"
    lb = load_book_file(_book(tmp_path, "0.55", basis="BTC-PERP = 0.0\nETH-PERP = 0.2"))
    assert lb.risk.basis_cov is not None
    assert list(lb.risk.basis_cov.diagonal()) == pytest.approx([0.0, 0.04, 0.0], abs=1e-15)
