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
