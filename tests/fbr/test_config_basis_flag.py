"""``[risk] basis_risk = false`` leaves the basis out of every tracking error, not only the
solve's: the loaded model carries no basis covariance (status, whatif and the daily loop's gate
read it through models.risk), and basis vols given beside the switch are refused as ignored.
Before, a synthetic or basis_vols basis was attached whatever the switch said, so status and
whatif reported sqrt(TE^2 + basis) where solve reported TE."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fbr.cli import app
from fbr.config import load_book_file
from models.errors import ValidationError

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed_example_1.toml"
runner = CliRunner()


def _write(tmp_path: Path, risk: str, futures: str = "") -> Path:
    text = re.sub(r"(?ms)^\[risk\]\n.*?(?=^\[costs\])", risk + "\n", SEED.read_text())
    p = tmp_path / "b.toml"
    p.write_text(text + futures)
    return p


def test_basis_vols_beside_the_switch_off_are_refused(tmp_path: Path) -> None:
    risk = ("[risk]\nbasis_risk = false\ncorrelation = 0.7\n[risk.vols]\nBTC = 0.55\nETH = 0.70\n"
            "SOL = 0.95\n[risk.basis_vols]\nBTC-PERP = 0.5\n")
    with pytest.raises(ValidationError) as exc:
        load_book_file(_write(tmp_path, risk))
    assert exc.value.field == "risk.basis_vols" and "ignored" in exc.value.problem


def test_a_synthetic_model_without_basis_gives_one_te_everywhere(tmp_path: Path) -> None:
    """A synthetic estimate with the switch off: no basis covariance; solve's TE before and
    status's TE are sqrt(d' Sigma d) of the model (d: the book's weights less its targets after
    a 3,000 USD BTC short), by numpy."""
    risk = '[risk]\nsource = "synthetic"\nbasis_risk = false\nlookback_days = 200\n'
    futures = '\n[[futures]]\nsymbol = "BTC-PERP"\ncontracts = -0.05\nentry_price = 60000.0\n'
    book = _write(tmp_path, risk, futures)
    lb = load_book_file(book)
    assert lb.risk.basis_cov is None
    d = np.array([0.30 - 0.50, 0.25 - 0.30, 0.15 - 0.20])
    te = float(np.sqrt(d @ lb.risk.covariance @ d))
    solve = json.loads(runner.invoke(app, ["solve", str(book), "--json"]).stdout)
    status = json.loads(runner.invoke(app, ["status", str(book), "--exchange", "dry-run",
                                            "--journal", str(tmp_path / "j.sqlite"),
                                            "--json"]).stdout)
    assert solve["tracking_error_before"] == pytest.approx(te, rel=1e-9)
    assert status["tracking_error"] == pytest.approx(te, rel=1e-9)
