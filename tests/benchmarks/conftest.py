"""Make the benchmark scripts (``benchmarks/*.py``) importable by name in these tests, as
``tests/optimizer/conftest.py`` does for ``optcases``: pytest's importlib mode puts neither folder
on sys.path."""

from __future__ import annotations

import sys
from pathlib import Path

_BENCHMARKS = str(Path(__file__).resolve().parents[2] / "benchmarks")
if _BENCHMARKS not in sys.path:
    sys.path.insert(0, _BENCHMARKS)
