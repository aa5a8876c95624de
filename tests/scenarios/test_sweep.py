"""The sweep engines: the same sorted results serially, on a process pool and on a Dask cluster
reached by its scheduler address; bad engine options are clear errors."""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterator
from typing import Any

import pytest

from models.errors import ValidationError
from scenarios.sweep import Engine, EngineSpec, run_sweep

KEYS = [(3, "b"), (0, "a"), (2, "c"), (1, "a"), (0, "b")]


@pytest.fixture(scope="module")
def dask_address() -> Iterator[str]:
    import distributed  # a declared dependency (dask[distributed]): a missing one fails

    # distributed ships no annotations on LocalCluster.__init__
    cluster = distributed.LocalCluster(  # type: ignore[no-untyped-call]
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    try:
        yield str(cluster.scheduler_address)
    finally:
        cluster.close()


def _work() -> Any:
    # a picklable library callable: key -> key * 2 (tuples repeat), so each result names its key
    return functools.partial(operator.mul, 2)


def test_serial_sorted_by_key_and_progress() -> None:
    ticks: list[int] = []
    out = run_sweep(_work(), KEYS, EngineSpec(), on_done=lambda: ticks.append(1))
    assert [k for k, _ in out] == sorted(KEYS)
    assert all(r == k * 2 for k, r in out)
    assert len(ticks) == len(KEYS)


def test_processes_match_serial() -> None:
    serial = run_sweep(_work(), KEYS)
    ticks: list[int] = []
    pooled = run_sweep(_work(), KEYS, EngineSpec(Engine.PROCESSES, workers=2),
                       on_done=lambda: ticks.append(1))
    assert pooled == serial and len(ticks) == len(KEYS)


def test_dask_scheduler_address_matches_serial(dask_address: str) -> None:
    serial = run_sweep(_work(), KEYS)
    ticks: list[int] = []
    remote = run_sweep(_work(), KEYS, EngineSpec(Engine.DASK, address=dask_address),
                       on_done=lambda: ticks.append(1))
    assert remote == serial and len(ticks) == len(KEYS)


def test_engine_options_are_checked() -> None:
    with pytest.raises(ValidationError, match="workers"):
        EngineSpec(Engine.PROCESSES, workers=0)
    with pytest.raises(ValidationError, match="scheduler"):
        EngineSpec(Engine.SERIAL, address="tcp://127.0.0.1:8786")
    with pytest.raises(ValidationError, match="repeat"):
        run_sweep(_work(), [1, 1])
    assert run_sweep(_work(), []) == []
    assert "2 worker" in EngineSpec(Engine.DASK, workers=2).describe()


def test_unreachable_scheduler_is_a_clear_error() -> None:
    import dask
    import distributed  # noqa: F401  (its config defaults first: see below)

    # dask.config.set drops on exit every top-level key that was not there when it began: without
    # distributed imported first it would drop the whole "distributed" section that importing
    # distributed inside the block filled in, and a later cluster in this process fails on
    # KeyError: 'distributed' (seen with the tests in random order)
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}), \
            pytest.raises(ValidationError, match=r"scheduler.*dask scheduler"):
        run_sweep(_work(), [1, 2], EngineSpec(Engine.DASK, address="tcp://127.0.0.1:9"))


def test_task_errors_come_back_with_their_type() -> None:
    from models.errors import check_finite_positive

    work = functools.partial(check_finite_positive, "grid.band")  # raises for a key <= 0
    for spec in (EngineSpec(), EngineSpec(Engine.PROCESSES, workers=2)):
        with pytest.raises(ValidationError, match=r"grid\.band") as info:
            run_sweep(work, [1.0, -1.0, 2.0], spec)
        assert info.value.field == "grid.band" and "> 0" in info.value.fix
    with pytest.raises(ZeroDivisionError):
        run_sweep(functools.partial(operator.truediv, 1.0), [1.0, 0.0],
                  EngineSpec(Engine.PROCESSES, workers=1))
