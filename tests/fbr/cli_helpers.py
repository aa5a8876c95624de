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
