"""optimizer.cvxpy_adapter: the one module touching cvxpy internals checks the cvxpy version, and
no other optimizer module reaches into cvxpy's internals."""

from __future__ import annotations

import re
from pathlib import Path

import cvxpy as cp
import numpy as np
import pytest

from optimizer import cvxpy_adapter
from optimizer.cvxpy_adapter import CvxpyVersionError, assign, check_version

ROOT = Path(__file__).resolve().parents[2]
#: what only optimizer/cvxpy_adapter.py may use (attribute access or imports of cvxpy internals)
INTERNALS = re.compile(r"get_problem_data|param_prog|param_prob|inverse_data|cone_dims|"
                       r"apply_parameters|reduced_[AP]|problem_data_index|var_id_to_col|"
                       r"param_id_to_col|save_value|save_dual_value|unpack_results|ConeDims|"
                       r"from cvxpy\.reductions|from cvxpy\.problems|_parameters\b|\.value\s*=[^=]")


def test_the_installed_cvxpy_is_supported() -> None:
    check_version(cp.__version__)  # what the import did


@pytest.mark.parametrize("version", ["1.8.2", "1.10.0", "2.0.0", "1.10.0rc1", "0.4.11"])
def test_other_versions_are_refused_naming_both_and_the_fix(version: str) -> None:
    with pytest.raises(CvxpyVersionError) as exc:
        check_version(version)
    msg = str(exc.value)
    assert version in msg and cvxpy_adapter.supported_range() in msg and "pip install" in msg


def test_supported_bounds_pass() -> None:
    lo, hi = cvxpy_adapter.MIN_VERSION, cvxpy_adapter.MAX_VERSION
    check_version(f"{lo[0]}.{lo[1]}.0")
    check_version(f"{hi[0]}.{hi[1] - 1}.99")


def test_unreadable_version_is_an_error() -> None:
    with pytest.raises(CvxpyVersionError):
        check_version("dev")


def test_assign_checks_shape_and_sign() -> None:
    p = cp.Parameter(3, nonneg=True, name="p")
    assign(p, np.array([1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(p.value, [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="shape"):
        assign(p, np.zeros(2))
    with pytest.raises(ValueError, match="non-negative"):
        assign(p, np.array([1.0, -1.0, 0.0]))


def test_no_other_module_touches_cvxpy_internals() -> None:
    """Every use of cvxpy internals sits in optimizer/cvxpy_adapter.py (scenarios/sweep.py too)."""
    files = [*sorted((ROOT / "optimizer").glob("*.py")), ROOT / "scenarios" / "sweep.py"]
    offenders = []
    for f in files:
        if f.name == "cvxpy_adapter.py":
            continue
        for i, line in enumerate(f.read_text().splitlines(), start=1):
            code = line.split("#", 1)[0]
            if INTERNALS.search(code) and not code.lstrip().startswith(('"', "'")):
                offenders.append(f"{f.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_an_inaccurate_answer_is_unpacked_without_cvxpys_try_another_solver_warning() -> None:
    """Clarabel asked for a 1e-16 gap stops 'almost solved' on a small conic problem: the unpacked
    problem says optimal_inaccurate (fbr reports that status itself) and cvxpy's "Solution may be
    inaccurate. Try another solver" warning, advice fbr's chain has already followed, is not
    repeated to the user. Other warnings still pass."""
    import warnings

    x = cp.Variable(3)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(x - np.array([1.0, 2.0, 3.0]))
                                  + cp.norm(x, 1.5)), [x >= 0.5])
    compiled = cvxpy_adapter.compile_problem(prob, cp.CLARABEL)
    data, inverse = compiled.apply()
    opts = {"tol_gap_abs": 1e-16, "tol_gap_rel": 1e-16, "tol_feas": 1e-16}
    raw = compiled.solve_via_data(data, opts)
    assert str(raw.status) == "AlmostSolved"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compiled.unpack_via(raw, inverse, opts)
        warnings.warn("another warning", UserWarning, stacklevel=1)
    assert prob.status == cp.OPTIMAL_INACCURATE and x.value is not None
    assert [str(w.message) for w in caught] == ["another warning"]
