"""The dashboard under concurrent requests: every view that solves or reads runs in a worker thread
(``run_in_threadpool``), so one page's solve does not hold up the others, and the state's lock
lets one thread at a time use the compiled cvxpy problems (a problem whose Parameters two threads
write at once solves a mix of two books).

The requests go through the ASGI app in one event loop (``httpx.AsyncClient`` over
``httpx.ASGITransport``): a view that blocks the loop's thread holds up every other request, which
``starlette.testclient.TestClient`` (one event loop per request) would not show.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from web_world import SHOCK, World

from fbr.web.app import create_app
from fbr.web.state import DashboardState, SerialRebalancer
from optimizer.rebalance import Rebalancer

BASE = "http://127.0.0.1:8765"
SHOCK_Q = "BTC%3D-30%25"
#: How long a blocked solve waits for its release before it goes on alone (seconds): on a view in
#: the loop's thread nothing can release it, and the test fails instead of hanging.
HOLD_S = 5.0


def _client(state: DashboardState) -> httpx.AsyncClient:
    """An async client of the read-only dashboard over ``state``, in the caller's event loop."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(state, None)),
                             base_url=BASE)


class Overlap:
    """Wraps a solve: counts the calls, the most running at once, and the threads they ran in."""

    def __init__(self, real: Callable[..., Any], pause_s: float = 0.05) -> None:
        self.real, self.pause_s = real, pause_s
        self.guard = threading.Lock()
        self.running = self.most = self.calls = 0
        self.threads: set[int] = set()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self.guard:
            self.running += 1
            self.calls += 1
            self.most = max(self.most, self.running)
            self.threads.add(threading.get_ident())
        try:
            time.sleep(self.pause_s)  # widens the window in which a second solve could enter
            return self.real(*args, **kwargs)
        finally:
            with self.guard:
                self.running -= 1


@pytest.fixture
def solves(shared_state: DashboardState, monkeypatch: pytest.MonkeyPatch) -> Iterator[Overlap]:
    """The shared state's compiled-problem solves, watched (:class:`Overlap`) inside the
    rebalancer's lock, where they use the compiled problems."""
    assert isinstance(shared_state.rebalancer, SerialRebalancer)
    watch = Overlap(Rebalancer.solve)
    monkeypatch.setattr(Rebalancer, "solve", watch)
    yield watch


def test_a_slow_solve_does_not_hold_up_other_requests(shared_state: DashboardState,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """While /api/plan's solve is blocked, /api/status (a solve of its own), a static file and
    /api/reports are answered; then the plan is released and answered too. With the views in the
    event loop's thread, the blocked solve held every other request until it gave up."""
    entered, release = threading.Event(), threading.Event()
    released: list[bool] = []
    real = shared_state.plan

    def slow_plan() -> Any:
        entered.set()
        released.append(release.wait(HOLD_S))
        return real()

    monkeypatch.setattr(shared_state, "plan", slow_plan)

    async def scenario() -> tuple[list[httpx.Response], bool, httpx.Response]:
        async with _client(shared_state) as c:
            first = asyncio.ensure_future(c.get("/api/plan"))
            while not entered.is_set():  # the plan's solve has begun (in whichever thread)
                await asyncio.sleep(0.01)
            others = await asyncio.wait_for(asyncio.gather(
                c.get("/api/status"), c.get("/static/fbr.css"), c.get("/api/reports")), 60)
            still_blocked = not first.done()
            release.set()
            return list(others), still_blocked, await asyncio.wait_for(first, 60)

    others, still_blocked, plan = asyncio.run(scenario())
    assert [r.status_code for r in others] == [200, 200, 200]
    assert others[0].json()["status"] == "ok" and "text/css" in others[1].headers["content-type"]
    assert still_blocked, "the other requests waited for the blocked solve"
    assert released == [True], "the plan's solve was not released by the test (it timed out)"
    assert plan.status_code == 200 and plan.json()["status"] == "ok"


def test_concurrent_pages_solve_one_at_a_time_off_the_loop(shared_state: DashboardState,
                                                           solves: Overlap, world: World) -> None:
    """Five pages that solve, requested at once: each solve runs in a worker thread (not the event
    loop's), never two at once on the shared compiled problems, and the answers are the CLI's."""
    loop_threads: list[int] = []

    async def scenario() -> list[httpx.Response]:
        loop_threads.append(threading.get_ident())
        async with _client(shared_state) as c:
            paths = ("/api/plan", "/api/status", f"/api/whatif?shock={SHOCK_Q}", "/plan", "/")
            return list(await asyncio.wait_for(asyncio.gather(*(c.get(p) for p in paths)), 120))

    responses = asyncio.run(scenario())
    assert [r.status_code for r in responses] == [200] * 5
    assert solves.calls >= 5 and solves.most == 1
    assert loop_threads[0] not in solves.threads, "a solve ran in the event loop's thread"
    plan, status, whatif = (r.json() for r in responses[:3])
    assert plan["solution"]["tracking_error_after"] == pytest.approx(
        world.solve["tracking_error_after"], rel=1e-9, abs=1e-12)
    assert status["tracking_error"] == pytest.approx(world.status["tracking_error"], rel=1e-9,
                                                     abs=1e-12)
    ref = world.whatif["scenarios"][0]
    assert whatif["shocks"] == ref["shocks"] and ref["shocks"]
    assert whatif["tracking_error_after"] == pytest.approx(ref["tracking_error_after"], rel=1e-9,
                                                           abs=1e-12)


def test_the_state_serialises_solves_across_threads(shared_state: DashboardState,
                                                    solves: Overlap) -> None:
    """The state itself, called from three threads at once (plan, status, what-if, twice each):
    the compiled problems are used by one thread at a time, and nothing deadlocks (the
    rebalancer's lock is held for a solve only)."""
    calls: list[Callable[[], object]] = [shared_state.plan, shared_state.status,
                                         lambda: shared_state.whatif([SHOCK])] * 2
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = [pool.submit(f) for f in calls]
        for f in futures:
            f.result(timeout=120)
    assert solves.calls >= len(calls) and solves.most == 1
    assert len(solves.threads) >= 2
