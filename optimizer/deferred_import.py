"""cvxpy imported without importing scipy.stats and scipy.optimize.

cvxpy imports two SciPy subpackages it needs for nothing fbr does: ``scipy.stats`` for one function,
``entropy``, which only the numeric value of its quantum relative-entropy atoms calls (fbr builds no
such atom), and ``scipy.optimize``, imported to learn whether its SciPy solver interface is
available (fbr never solves with it). With SciPy >= 1.16 the two imports take about 0.4 s (they
rewrite the docstrings of hundreds of functions), a third of ``fbr solve`` on a small book.

:func:`import_cvxpy` imports cvxpy with a stand-in for each in ``sys.modules``: the stand-in's
deferred functions (``scipy.stats.entropy``) call SciPy's own on first use, and any other name
imports the real module and is read from it, so nothing behaves differently. The stand-ins leave
``sys.modules`` as soon as cvxpy's import ends, so every later import of either loads SciPy's
module. When cvxpy is already imported, nothing is done; a module already imported is not stood in.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any


def _real(name: str) -> types.ModuleType:
    """SciPy's own module ``name`` (a stand-in removed from ``sys.modules`` first)."""
    if isinstance(sys.modules.get(name), StandIn):
        del sys.modules[name]
    return importlib.import_module(name)


def entropy(*args: Any, **kwargs: Any) -> Any:
    """``scipy.stats.entropy``, imported on first call."""
    return _real("scipy.stats").entropy(*args, **kwargs)


#: the modules deferred while cvxpy is imported, with the names cvxpy reads from them then
DEFERRED: dict[str, dict[str, Any]] = {"scipy.stats": {"entropy": entropy}, "scipy.optimize": {}}


class StandIn(types.ModuleType):
    """What ``sys.modules[name]`` holds while cvxpy is imported: the deferred names, and any other
    public attribute read from the real module (imported then). Dunder names the import system
    probes (``__path__`` for ``from scipy.stats import ...``) are absent, as on a plain module."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        for key, value in DEFERRED[name].items():
            setattr(self, key, value)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return getattr(_real(self.__name__), name)


def import_cvxpy() -> None:
    """Import cvxpy with :data:`DEFERRED` stood in (a no-op when cvxpy is imported already)."""
    if "cvxpy" in sys.modules:
        return
    stand_ins = {name: StandIn(name) for name in DEFERRED if name not in sys.modules}
    sys.modules.update(stand_ins)
    try:
        importlib.import_module("cvxpy")
    finally:
        for name, stand_in in stand_ins.items():
            if sys.modules.get(name) is stand_in:
                del sys.modules[name]
