"""Helpers the CLI tests share (importable through tests/fbr/conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import typer

ROOT = Path(__file__).resolve().parents[2]


def run_fbr(*args: str, env: dict[str, str] | None = None,
            timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
    """The real console entry point (``python -m fbr.cli ARGS``) in a subprocess from the
    repository root, with ``env`` added to the environment."""
    return subprocess.run([sys.executable, "-m", "fbr.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**os.environ, **(env or {})})


def account_app() -> typer.Typer:
    """A fresh CLI holding only the ``account`` group (as fbr.cli registers it), for CliRunner."""
    from fbr import account_cli

    app = typer.Typer(add_completion=False)

    @app.callback()
    def _root() -> None:
        """fbr (test)."""

    account_cli.register(app)
    return app


# A futures-only book: no spot, 10,000 USD in the wallet, long 0.1 BTC (6,000 USD at 60,000) and
# short 1 ETH (2,500 USD at 2,500), costs and margin off.
FUTURES_ONLY = """[book]
name = "futures only"
cash = 10000.0
[targets]
BTC = 0.5
ETH = 0.3
[[futures]]
symbol = "BTC-PERP"
contracts = 0.1
entry_price = 60000.0
[[futures]]
symbol = "ETH-PERP"
contracts = -1.0
entry_price = 2500.0
[contract_defaults]
lot_step = 1e-8
min_notional = 0.0
leverage = 10.0
[market]
time = 2024-06-01T00:00:00Z
mark_from_spot = true
[market.spot]
BTC = 60000.0
ETH = 2500.0
[risk]
basis_risk = false
correlation = 0.7
[risk.vols]
BTC = 0.55
ETH = 0.70
[costs]
trading = false
carry = false
impact = false
[constraints]
margin = false
"""


#: A book with every part on (spot leg with tax lots, pledged spot, a dated future, impact, reserve
#: cost, cost-to-go, a stress preset and scenario, caps, bands, budgets), every limit loose.
KITCHEN_SINK = """[book]
name = "kitchen sink"
cash = 3000.0
targets_base = "invested"

[targets]
BTC = 0.50
ETH = 0.30
SOL = 0.20

[spot]
BTC = 0.1
ETH = 1.0
SOL = 10.0

[[assets]]
symbol = "BTC"
fee = 0.001
lot_step = 0.00001
[[assets]]
symbol = "ETH"
[[assets]]
symbol = "SOL"

[contract_defaults]
lot_step = 0.001
min_notional = 5.0
leverage = 10.0
tiers = [
  { max_notional = 50000, max_leverage = 125, mmr = 0.004, cum = 0 },
  { max_notional = 250000, max_leverage = 100, mmr = 0.005, cum = 50 },
  { max_notional = inf, max_leverage = 50, mmr = 0.01, cum = 1300 },
]

[[contracts]]
symbol = "BTC-PERP"
underlying = "BTC"
[[contracts]]
symbol = "BTC-0627"
underlying = "BTC"
kind = "dated"
expiry = 2024-06-28T08:00:00Z
[[contracts]]
symbol = "ETH-PERP"
underlying = "ETH"
[[contracts]]
symbol = "SOL-PERP"
underlying = "SOL"

[[futures]]
symbol = "BTC-PERP"
contracts = -0.005
entry_price = 59000.0

[pledged]
BTC = { bid_buffer = 0.05, quantity = 0.05 }
ETH = 0.9

[market]
time = 2024-06-01T00:00:00Z

[market.spot]
BTC = 60000.0
ETH = 2500.0
SOL = 150.0

[market.mark]
BTC-PERP = 60010.0
BTC-0627 = 60500.0
ETH-PERP = 2501.0
SOL-PERP = 150.1

[market.funding]
BTC-PERP = 0.0001
ETH-PERP = 0.0002
SOL-PERP = -0.0001

[market.adv]
BTC-PERP = 1e9
BTC-0627 = 1e7
ETH-PERP = 5e8
SOL-PERP = 2e8

[risk]
correlation = 0.7

[risk.vols]
BTC = 0.55
ETH = 0.70
SOL = 0.95

[costs]
trading = true
impact = true
carry = true
gamma_trade = 2.0
horizon_days = 3.0
reserve_cost = true
cost_to_go = 5.0
cost_to_go_power = 0.4

[constraints]
margin = true
margin_buffer_usd = 100.0
margin_buffer_fraction = "10%"
max_gross_leverage = 1.5
default_cap_usd = 50000.0
vol_cap = 0.9
funding_budget_usd = 50.0
trade_limit_usd = 20000.0
stress_preset = "each_and_all"
min_days_to_expiry = 2
expiry_row = true

[[constraints.stress]]
name = "crash"
common = "-30%"

[[constraints.clusters]]
name = "majors"
assets = ["BTC", "ETH"]
band = 0.02

[solver]
spot_leg = true
horizon = 1

[tax]
short_term = "30%"
long_term = "15%"
long_term_days = 365
futures = "25%"
lot_method = "hifo"
harvest_losses = true

[[lots]]
asset = "BTC"
quantity = 0.04
cost_basis = 20000.0
acquired = 2022-01-05
[[lots]]
asset = "BTC"
quantity = 0.06
cost_basis = 58000.0
acquired = 2024-03-01
[[lots]]
asset = "ETH"
quantity = 1.0
cost_basis = 3000.0
acquired = 2023-08-01
[[lots]]
asset = "SOL"
quantity = 10.0
cost_basis = 20.0
acquired = 2023-01-01
"""
