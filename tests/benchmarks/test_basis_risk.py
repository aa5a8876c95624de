"""benchmarks/basis_risk.py on a seeded synthetic folder: its per-quarterly row is the plain pandas
volatility and correlation of the daily basis changes, and its chain row the constant-maturity
chain's. No network."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

DAYS = pd.date_range("2024-01-01", "2024-03-31", freq="1D", tz="UTC")
DELIVERY = pd.Timestamp("2024-03-29T08:00Z")


def _write(root: Path) -> tuple[pd.Series, pd.Series]:
    """BTC spot (daily), perpetual marks (4 h, the 00:00 close at spot x (1 + 5 bp noise)) and
    one quarterly (close at spot x (1 + 10% tau / 365 + 0.3% noise)); returns the perpetual's and
    the quarterly's basis at the 00:00 closes."""
    rng = np.random.default_rng(3)
    close = 40_000.0 * np.exp(np.cumsum(rng.normal(0.0, 0.03, len(DAYS))))
    stamps = DAYS + pd.Timedelta(days=1)
    for folder in ("spot_1d", "perp_mark_4h", "quarterly_1d"):
        (root / folder).mkdir(parents=True)
    pd.DataFrame({"timestamp": DAYS, "open": close, "high": close, "low": close, "close": close,
                  "volume": 1.0, "quote_volume": close}).to_csv(root / "spot_1d" / "BTC.csv.gz", index=False)
    perp_b = rng.normal(0.0, 5e-4, len(DAYS))
    bars = pd.date_range(DAYS[0], DAYS[-1] + pd.Timedelta(hours=20), freq="4h")
    mark = np.repeat(close * (1 + perp_b), 6)  # each day's six bars; the 20:00 one closes at 00:00
    pd.DataFrame({"timestamp": bars, "close": mark}).to_csv(root / "perp_mark_4h" / "BTC.csv.gz", index=False)
    live = stamps <= DELIVERY  # bars opening before delivery
    tau = (DELIVERY - stamps[live]) / pd.Timedelta(days=1)
    q_b = 0.10 * tau / 365.0 + rng.normal(0.0, 3e-3, int(live.sum()))
    px = close[live] * (1 + q_b)
    pd.DataFrame({"timestamp": DAYS[live], "open": px, "high": px, "low": px, "close": px}).to_csv(
        root / "quarterly_1d" / "BTCUSDT_240329.csv.gz", index=False)
    return pd.Series(perp_b, index=stamps), pd.Series(q_b, index=stamps[live])


def test_the_rows_are_the_plain_pandas_statistics(tmp_path: Path) -> None:
    import basis_risk

    perp, quarterly = _write(tmp_path / "data")
    assert basis_risk.main(["--data", str(tmp_path / "data"), "--out", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "basis_risk.md").read_text(encoding="utf-8")
    ch = pd.DataFrame({"q": quarterly[quarterly.index < DELIVERY], "p": perp}).dropna().diff().dropna()
    row = next(line for line in text.splitlines() if line.startswith("| BTC | 2024-03-29 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert int(cells[2]) == len(ch) == 87  # closes 2024-01-02 .. 2024-03-29 00:00
    assert float(cells[3]) == pytest.approx(100 * math.sqrt(365) * ch["q"].std(), abs=0.006)
    assert float(cells[4]) == pytest.approx(100 * math.sqrt(365) * ch["p"].std(), abs=0.006)
    assert float(cells[5]) == pytest.approx(ch["q"].corr(ch["p"]), abs=0.006)
    chain = next(line for line in text.splitlines() if line.startswith("| BTC | 90 |"))
    cells = [c.strip() for c in chain.strip("|").split("|")]
    assert int(cells[2]) == 87  # one contract: the chain is its own changes
    assert float(cells[3]) == pytest.approx(100 * math.sqrt(365) * ch["q"].std(), abs=0.006)


def test_no_data_folder_is_a_clean_skip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import basis_risk

    (tmp_path / "empty").mkdir()
    assert basis_risk.main(["--data", str(tmp_path / "empty"), "--out", str(tmp_path / "out")]) == 0
    assert "basis_risk: skipped" in capsys.readouterr().out
    assert not (tmp_path / "out").exists()
