"""cvxpy imported without importing scipy.stats.

cvxpy's atoms package imports ``scipy.stats`` when cvxpy is imported, for one function,
``entropy``, which only the numeric value of its quantum relative-entropy atoms calls (fbr builds
no such atom). With SciPy >= 1.16 importing scipy.stats takes about 0.3 s (it rewrites the
docstrings of hundreds of functions), a fifth of ``fbr solve`` on a small book.

:func:`import_cvxpy` imports cvxpy with a stand-in for scipy.stats in ``sys.modules``: its
``entropy`` calls SciPy's own on first use, and any other name imports the real module and is read
from it, so nothing behaves differently. The stand-in leaves ``sys.modules`` as soon as cvxpy's
import ends, so every later ``import scipy.stats`` loads SciPy's module. When cvxpy or scipy.stats
is already imported, nothing is done.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

#: the module deferred while cvxpy is imported
DEFERRED = "scipy.stats"


def _real() -> types.ModuleType:
    """SciPy's own scipy.stats (the stand-in removed from ``sys.modules`` first)."""
    if isinstance(sys.modules.get(DEFERRED), StandIn):
        del sys.modules[DEFERRED]
    return importlib.import_module(DEFERRED)


def entropy(*args: Any, **kwargs: Any) -> Any:
    """``scipy.stats.entropy``, imported on first call."""
    return _real().entropy(*args, **kwargs)


class StandIn(types.ModuleType):
    """What ``sys.modules['scipy.stats']`` holds while cvxpy is imported: ``entropy`` deferred,
    any other public attribute read from the real module (imported then). Dunder names the import
    system probes (``__path__`` for ``from scipy.stats import ...``) are absent, as on a plain
    module object."""

    def __init__(self) -> None:
        super().__init__(DEFERRED)
        self.entropy = entropy

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return getattr(_real(), name)


def import_cvxpy() -> None:
    """Import cvxpy with scipy.stats deferred (a no-op when either is imported already)."""
    if "cvxpy" in sys.modules or DEFERRED in sys.modules:
        return
    stand_in = StandIn()
    sys.modules[DEFERRED] = stand_in
    try:
        importlib.import_module("cvxpy")
    finally:
        if sys.modules.get(DEFERRED) is stand_in:
            del sys.modules[DEFERRED]
