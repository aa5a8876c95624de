"""A risk model whose covariance is singular is refused before any solve: with every cost and
constraint off, seed example 1 with correlation = 1.0 answered BUY 89 / 114 / 154 USD (BTC left
at 60.9% against its 50% target, "TE 0.000%") instead of the naive -1,000 / +500 / +500, since a
whole set of hedges ties at zero risk; an estimate on 2 daily returns (an asset listed 3 days
before the market time) did the same. Now the correlation must be positive definite and an
estimate needs MIN_RISK_ROWS returns and a non-singular covariance."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fbr.config import load_book_file
from models.errors import ValidationError
from models.trailing_risk import MIN_RISK_ROWS

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed_example_1.toml"


def _book(tmp_path: Path, risk: str) -> Path:
    text = re.sub(r"(?ms)^\[risk\]\n.*?(?=^\[costs\])", risk + "\n", SEED.read_text())
    p = tmp_path / "b.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("corr", ["1.0", "[[1, 1, 0.7], [1, 1, 0.7], [0.7, 0.7, 1]]",
                                  "[[1, 0.5, -0.5], [0.5, 1, 0.5], [-0.5, 0.5, 1]]"])
def test_a_singular_correlation_is_refused(tmp_path: Path, corr: str) -> None:
    """Each is positive semi-definite with a zero eigenvalue (the last: v = (1, -1, 1) gives
    v' C v = 3 + 2 (-0.5 - 0.5 - 0.5) = 0)."""
    risk = (f"[risk]\nbasis_risk = false\ncorrelation = {corr}\n[risk.vols]\nBTC = 0.55\n"
            "ETH = 0.70\nSOL = 0.95\n")
    with pytest.raises(ValidationError) as exc:
        load_book_file(_book(tmp_path, risk))
    assert exc.value.field == "risk.correlation" and "singular" in exc.value.problem


def test_a_nearly_perfect_correlation_is_kept(tmp_path: Path) -> None:
    risk = ("[risk]\nbasis_risk = false\ncorrelation = 0.99\n[risk.vols]\nBTC = 0.55\n"
            "ETH = 0.70\nSOL = 0.95\n")
    cov = load_book_file(_book(tmp_path, risk)).risk.covariance
    assert cov[0, 1] == pytest.approx(0.99 * 0.55 * 0.70)


def test_an_estimate_on_too_few_returns_is_refused(tmp_path: Path) -> None:
    risk = (f'[risk]\nsource = "synthetic"\nbasis_risk = false\n'
            f"lookback_days = {MIN_RISK_ROWS - 1}\n")
    with pytest.raises(ValidationError) as exc:
        load_book_file(_book(tmp_path, risk))
    assert exc.value.field == "risk.lookback_days"
    assert f"leaves {MIN_RISK_ROWS - 1} daily returns" in exc.value.problem
    ok = f'[risk]\nsource = "synthetic"\nbasis_risk = false\nlookback_days = {MIN_RISK_ROWS}\n'
    assert load_book_file(_book(tmp_path, ok)).risk.symbols == ("BTC", "ETH", "SOL")
