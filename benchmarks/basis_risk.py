"""Basis risk of Binance's quarterlies against their perpetuals, as fbr's data-book risk model
estimates it (fbr.config_basis).

What is measured
----------------
For each underlying with quarterly files (``quarterly_1d/<U>USDT_<YYMMDD>``) and a perpetual mark
file (``perp_mark_4h/<U>``), at the 00:00 UTC closes against ``spot_1d``:

- per quarterly contract, over the days it has a close: the annualised volatility of the daily
  change of its basis b = F / S - 1 (sqrt(365) x std, divisor T - 1), the perpetual's over the
  same days, and the correlation of the two changes;
- the constant-maturity chain the risk model prices a dated contract with
  (``fbr.config_basis.nearest_maturity_changes``: each day the change of the quarterly whose days
  to expiry are nearest tau), at tau = 15, 45, 90 and 150 days, over every day of the files.

Nothing is fitted or chosen: these are descriptive statistics of the data folder.

Run: ``python benchmarks/basis_risk.py [--data DIR] [--out DIR]`` (a few seconds). Writes
``DIR/basis_risk.md``. Without a data folder with quarterly and perpetual mark files it prints why
and exits 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fbr.config_basis import BasisHistory, nearest_maturity_changes, perp_basis, quarterly_bases  # noqa: E402
from fbr.config_loader import parse_book  # noqa: E402
from fbr.config_sources import spot_closes  # noqa: E402
from fbr.execute_wiring import solve_loaded  # noqa: E402
from models.io import default_data_dir  # noqa: E402
from models.risk import tracking_error  # noqa: E402
from scenarios.quarterly_basis import quarterly_underlyings  # noqa: E402

TAUS = (15.0, 45.0, 90.0, 150.0)
#: The instrument-choice book (``DATA`` is the data folder).
BOOK = """[book]
name = "quarterly"
cash = 50000.0
[targets]
BTC = 0.6
ETH = 0.4
[spot]
BTC = 5.0
ETH = 40.0
[[contracts]]
symbol = "BTC-PERP"
underlying = "BTC"
[[contracts]]
symbol = "BTC-240628"
underlying = "BTC"
kind = "dated"
expiry = 2024-06-28T08:00:00Z
[[contracts]]
symbol = "ETH-PERP"
underlying = "ETH"
[[contracts]]
symbol = "ETH-240927"
underlying = "ETH"
kind = "dated"
expiry = 2024-09-27T08:00:00Z
[market]
source = "data"
data_dir = "DATA"
time = 2024-05-01T00:00:00Z
[risk]
source = "data"
lookback_days = 180
"""
ANNUAL = math.sqrt(365.0)


def contract_rows(asset: str, bases: dict[pd.Timestamp, pd.Series], perp: pd.Series) -> list[str]:
    """One markdown row per quarterly: days, its basis-change vol, the perpetual's, correlation."""
    rows = []
    for delivery, b in sorted(bases.items()):
        both = pd.DataFrame({"q": b, "p": perp}).dropna()
        ch = both.diff().dropna()
        if len(ch) < 3:
            continue
        rows.append(f"| {asset} | {delivery:%Y-%m-%d} | {len(ch)} | {100 * ANNUAL * ch['q'].std():.2f} | "
                    f"{100 * ANNUAL * ch['p'].std():.2f} | {ch['q'].corr(ch['p']):.2f} |")
    return rows


def chain_rows(asset: str, bases: dict[pd.Timestamp, pd.Series]) -> list[str]:
    """One markdown row per tau: the constant-maturity chain's days and basis-change vol."""
    end = max(b.index.max() for b in bases.values())
    rows = []
    for tau in TAUS:
        ch = nearest_maturity_changes(bases, tau, end)
        rows.append(f"| {asset} | {tau:g} | {len(ch)} | {100 * ANNUAL * ch.std():.2f} |")
    return rows


def choice_rows(data: Path) -> list[str]:
    """``BOOK`` solved with the quarterlies' own basis and with the perpetuals' for them: the
    notional (USD) held in each contract, and each answer's tracking error under the model with
    the quarterlies' own basis (models.risk.tracking_error)."""
    import tomllib

    loaded = parse_book(tomllib.loads(BOOK.replace("DATA", data.as_posix())), source="basis_risk")
    history = BasisHistory.load(loaded.book, data)
    before = dataclasses.replace(history, quarterly={})  # every dated contract at its perpetual's
    old = before.estimate(loaded.market.time, 180).cov
    risk = loaded.risk
    contracts = loaded.book.contracts
    rows = ["| dated contracts' basis | " + " | ".join(c.symbol for c in contracts)
            + " | TE after % (quarterlies' own basis) |", "|---" * (len(contracts) + 2) + "|"]
    models = (("own quarterlies", risk), ("the perpetual's", dataclasses.replace(risk, basis_cov=old)))
    for name, model in models:
        sol = solve_loaded(dataclasses.replace(loaded, risk=model))
        held = {p.symbol: p.notional for p in sol.target_positions}
        z = np.array([held.get(c.symbol, 0.0) for c in contracts]) / sol.base
        dev = np.array([sol.effective_weights_after[a] - sol.targets[a] for a in risk.symbols])
        te = tracking_error(dev, risk.covariance, z, risk.basis_cov)
        rows.append(f"| {name} | " + " | ".join(f"{x * sol.base:,.0f}" for x in z) + f" | {100 * te:.3f} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=None, help="data folder (default ../shared/data)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="output folder")
    a = ap.parse_args(argv)
    found = a.data if a.data is not None else default_data_dir()
    data = Path(found) if found is not None else None
    underlyings = quarterly_underlyings(data) if data is not None else []
    perps: dict[str, pd.Series] = {}
    if data is not None and underlyings:
        spot = spot_closes(data, underlyings, "data")
        perps = {u: b for u in underlyings if (b := perp_basis(data, u, spot[u])) is not None}
    if data is None or not perps:
        print("basis_risk: skipped: no data folder with quarterly_1d/ and perp_mark_4h/ files "
              "(give --data, set FBR_DATA_DIR or provide ../shared/data)")
        return 0
    assets = list(perps)
    per_contract = ["| asset | delivery | daily changes | quarterly vol % | perpetual vol % | corr |",
                    "|---|---|---|---|---|---|"]
    chains = ["| asset | tau days | daily changes | vol % |", "|---|---|---|---|"]
    for asset, perp in perps.items():
        bases = quarterly_bases(data, asset, spot[asset])
        per_contract += contract_rows(asset, bases, perp)
        chains += chain_rows(asset, bases)
    md = ["# Basis risk: quarterlies against perpetuals (annualised vol of the daily basis change)", "",
          f"Data: {data}. Command: `python benchmarks/basis_risk.py`.", "",
          "## Per quarterly, over the days it has a close", "", *per_contract, "",
          "## The constant-maturity chain fbr's risk model prices a dated contract with", "", *chains, ""]
    if {"BTC", "ETH"} <= set(assets):
        md += ["## What it changes: futures notional (USD) of `fbr solve` on `BOOK` (2024-05-01)", "",
               *choice_rows(data), ""]
    text = "\n".join(md)
    print(text)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "basis_risk.md").write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
