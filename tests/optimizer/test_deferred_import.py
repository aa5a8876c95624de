"""optimizer.deferred_import: cvxpy imported without scipy.stats and scipy.optimize, nothing else
changed."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import scipy.optimize
import scipy.stats

from optimizer.deferred_import import StandIn, import_cvxpy


def run_fresh(code: str) -> str:
    """stdout of ``code`` in a fresh interpreter (so no test has imported cvxpy yet)."""
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                         text=True, check=True)
    return out.stdout.strip()


def test_importing_the_optimiser_leaves_scipy_stats_unimported() -> None:
    got = run_fresh("""
        import sys
        import optimizer.problem
        print('cvxpy' in sys.modules, 'scipy.stats' in sys.modules, 'scipy.optimize' in sys.modules)
    """)
    assert got == "True False False"


QUANTUM_ENTROPY = textwrap.dedent("""
    import numpy as np
    import cvxpy as cp
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((2, 3, 3))
    X, Y = a @ a.T + np.eye(3), b @ b.T + np.eye(3)
    print(repr(float(cp.quantum_rel_entr(X, Y).value)))
""")


def test_scipy_stats_and_cvxpy_behave_as_without_the_deferral() -> None:
    """After the deferred import ``import scipy.stats`` is SciPy's own module, and cvxpy's quantum
    relative entropy (the one user of the deferred ``entropy``) gives what it gives when
    scipy.stats is imported before cvxpy."""
    got = run_fresh("""
        import sys, types
        import optimizer.problem
        import scipy.stats
        from scipy import optimize
        real = sys.modules['scipy.stats']
        print(type(real) is types.ModuleType, real is scipy.stats, scipy.stats.norm.cdf(0.0))
        real = sys.modules['scipy.optimize']
        print(type(real) is types.ModuleType, real is optimize, optimize.brentq(lambda x: x - 2, 0, 5))
        import cvxpy as cp
        print(cp.SCIPY in cp.installed_solvers())
    """)
    assert got.splitlines() == ["True True 0.5", "True True 2.0", "True"]
    deferred = run_fresh("import optimizer.problem\n" + QUANTUM_ENTROPY)
    plain = run_fresh("import scipy.stats\n" + QUANTUM_ENTROPY)
    assert np.isfinite(float(plain))
    assert deferred == plain


def test_stand_in_defers_entropy_and_reads_anything_else_from_scipy() -> None:
    p = np.random.default_rng(5).random(6)
    stand_in = StandIn("scipy.stats")
    assert stand_in.entropy(p) == scipy.stats.entropy(p)
    assert stand_in.norm is scipy.stats.norm
    assert not hasattr(stand_in, "__path__")  # what 'from scipy.stats import x' probes
    assert StandIn("scipy.optimize").brentq is scipy.optimize.brentq


def test_import_cvxpy_is_a_no_op_once_imported() -> None:
    before = sys.modules["scipy.stats"]
    import_cvxpy()
    assert sys.modules["scipy.stats"] is before
