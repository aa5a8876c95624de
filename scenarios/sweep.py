"""Run a grid of independent tasks serially, on local processes or on a Dask cluster.

A sweep is a picklable *work* object (``work(key) -> result``, holding the configuration: book,
path generator, policy specs) and a list of task keys. The engines only decide where ``work(key)``
runs:

- ``Engine.SERIAL``: in this process, in key order;
- ``Engine.PROCESSES``: a ``concurrent.futures.ProcessPoolExecutor`` with ``workers`` processes
  (the work object is sent once to each process by the pool initializer);
- ``Engine.DASK``: ``distributed.Client(address)`` for a running scheduler, or a
  ``distributed.LocalCluster(n_workers=workers, threads_per_worker=1)`` started and closed here;
  the work object is scattered to every worker once, then one Dask task per key.

Results come back sorted by key whatever the engine or the completion order, and every task
derives its randomness from its key only (e.g. ``np.random.SeedSequence([sweep_seed, path])``),
so the output is identical on every engine. ``on_done`` is called once per finished task (a
progress bar). A task's error is re-raised here (``ValidationError`` keeps its type; an error that
cannot be pickled becomes a :class:`TaskError` with its message); a process pool then cancels
the tasks not yet started.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import pickle
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol, TypeVar

from models.errors import FbrError, ValidationError

K = TypeVar("K", bound=Hashable)
R = TypeVar("R")
K_contra = TypeVar("K_contra", contravariant=True)
R_co = TypeVar("R_co", covariant=True)


class Work(Protocol[K_contra, R_co]):
    """A picklable callable run once per task key."""

    def __call__(self, key: K_contra) -> R_co:
        """The result of one task."""
        ...


class Engine(StrEnum):
    """Where the tasks run."""

    SERIAL = "serial"
    PROCESSES = "processes"
    DASK = "dask"


@dataclass(frozen=True)
class EngineSpec:
    """An engine and its size: ``workers`` processes (PROCESSES, local DASK), or the ``address`` of a
    running Dask scheduler (``tcp://host:8786``; then ``workers`` is ignored)."""

    engine: Engine = Engine.SERIAL
    workers: int = 1
    address: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise ValidationError("workers", f"is {self.workers!r}", "give a whole number >= 1")
        if self.address is not None and self.engine != Engine.DASK:
            raise ValidationError("scheduler", f"is {self.address!r} for the {self.engine} engine",
                                  "give a scheduler address only with the Dask engine")

    def describe(self) -> str:
        """One line for reports: which engine, how many workers."""
        if self.engine == Engine.SERIAL:
            return "serial (1 process)"
        if self.engine == Engine.PROCESSES:
            return f"local processes ({self.workers})"
        if self.address:
            return f"Dask scheduler at {self.address}"
        return f"Dask LocalCluster ({self.workers} worker processes)"


# ---------------------------------------------------------------------------------------------
# errors raised in a worker travel back pickled


class TaskError(FbrError):
    """A task failed on a worker with an error that cannot be pickled back; the message is the
    original error's."""



def _portable(exc: Exception) -> Exception:
    """``exc`` if it survives a pickle round trip, else a :class:`TaskError` with its message."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return TaskError(f"{type(exc).__name__}: {exc}")
    return exc


def _run_one(work: Any, key: Any) -> Any:
    try:
        return work(key)
    except Exception as exc:
        portable = _portable(exc)
        if portable is exc:
            raise
        raise portable from None


# ---------------------------------------------------------------------------------------------
# process pool: the work object lives in a module global of each worker

_WORK: Any = None


def _init_worker(work: Any) -> None:
    global _WORK
    _WORK = work


def _call_global(key: Any) -> Any:
    return _run_one(_WORK, key)


def _apply(work: Any, key: Any) -> Any:
    """A Dask task: the scattered work object applied to one key."""
    return _run_one(work, key)


def _mp_context(work: object) -> multiprocessing.context.BaseContext:
    """forkserver where available (no fork of a threaded parent), else spawn. The fork server
    preloads the work object's module (and so its imports: numpy, pandas, cvxpy...), so each
    worker forks with them loaded instead of importing them again."""
    methods = multiprocessing.get_all_start_methods()
    if "forkserver" not in methods:
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([type(work).__module__])
    return ctx


def _run_serial(work: Work[K, R], keys: Sequence[K], on_done: Callable[[], None] | None
                ) -> dict[K, R]:
    out: dict[K, R] = {}
    for key in keys:
        out[key] = work(key)
        if on_done is not None:
            on_done()
    return out


def _run_processes(work: Work[K, R], keys: Sequence[K], workers: int,
                   on_done: Callable[[], None] | None) -> dict[K, R]:
    out: dict[K, R] = {}
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=_mp_context(work),
                                initializer=_init_worker, initargs=(work,)) as pool:
        futures = {pool.submit(_call_global, key): key for key in keys}
        try:
            for fut in cf.as_completed(futures):
                out[futures[fut]] = fut.result()
                if on_done is not None:
                    on_done()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # a failed task: do not run the rest
            raise
    return out


def _run_dask(work: Work[K, R], keys: Sequence[K], spec: EngineSpec,
              on_done: Callable[[], None] | None) -> dict[K, R]:
    import importlib

    dist: Any = importlib.import_module("distributed")  # untyped: used through Any
    cluster: Any = None
    if spec.address:
        try:
            client: Any = dist.Client(spec.address)
        except OSError as exc:  # includes the connect timeout
            raise ValidationError("scheduler", f"is {spec.address!r}: {exc}",
                                  "start a Dask scheduler and workers there (`dask scheduler`, "
                                  "`dask worker ADDRESS`, with fbr installed), or use --workers N "
                                  "for a local cluster") from exc
    else:
        cluster = dist.LocalCluster(n_workers=spec.workers, threads_per_worker=1, processes=True,
                                    dashboard_address=None)
        client = dist.Client(cluster)
    out: dict[K, R] = {}
    try:
        shared = client.scatter(work, broadcast=True)
        futures = client.map(_apply, [shared] * len(keys), list(keys), pure=False)
        by_future = {f.key: k for f, k in zip(futures, keys, strict=True)}
        for fut, result in dist.as_completed(futures, with_results=True):
            out[by_future[fut.key]] = result
            if on_done is not None:
                on_done()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return out


def run_sweep(work: Work[K, R], keys: Sequence[K], spec: EngineSpec | None = None,
              on_done: Callable[[], None] | None = None) -> list[tuple[K, R]]:
    """``[(key, work(key))]`` for every key, sorted by key (keys must be unique and orderable)."""
    spec = spec or EngineSpec()
    unique = list(dict.fromkeys(keys))
    if len(unique) != len(keys):
        raise ValidationError("sweep.keys", "repeat a task", "give each task key once")
    if not keys:
        return []
    if spec.engine == Engine.SERIAL:
        done = _run_serial(work, unique, on_done)
    elif spec.engine == Engine.PROCESSES:
        done = _run_processes(work, unique, spec.workers, on_done)
    else:
        done = _run_dask(work, unique, spec, on_done)
    return [(k, done[k]) for k in sorted(unique)]  # type: ignore[type-var]


__all__ = ["Engine", "EngineSpec", "TaskError", "Work", "run_sweep"]
