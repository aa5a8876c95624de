"""``fbr serve``'s web application (Starlette, server-rendered Jinja2 templates, plotly charts).

Pages (HTML), and the same data as JSON under ``/api``:

- ``/`` (``/api/status``): the book now: weights vs targets, drift, TE, margin ratio and
  liquidation distance, funding since the last rebalance;
- ``/history`` (``/api/history``): the journal: NAV and TE per loop cycle, fills, funding, position
  snapshots;
- ``/plan`` (``/api/plan``): the plan the optimiser would send now, its costs and binding
  constraints;
- ``/whatif`` (``/api/whatif?shock=BTC=-30%``): the shocked book, the liquidation distance, the
  hedge re-solved;
- ``/reports`` (``/api/reports``): backtest and Monte Carlo HTML reports (``/reports/<name>``);
- ``/orders`` (``/api/orders``): the order journal with fills;
- ``/run`` (``/api/run``): ``fbr run``'s health file and recent alerts;
- ``/execute``: with execution enabled only: the plan and a confirmation form (token + CSRF).

Safety rules: :mod:`fbr.web.security`. Every page is read-only except ``POST /execute``; the guard
refuses a cross-site state change before any view runs, and every page states its own content
security policy (its chart scripts by hash; a report's, a sandbox).

Threads: every view that solves, reads the journal, the book or a file runs in a worker thread
(:func:`threaded`, ``starlette.concurrency.run_in_threadpool``), so a page's solve never holds up
the other requests; the state serialises what they share (:class:`fbr.web.state.DashboardState`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from executor.safety import redact
from fbr.console import json_ready
from fbr.web import charts
from fbr.web.security import (
    CSRF_COOKIE,
    HEADERS,
    LOOPBACK_HOSTS,
    REPORT_CSP,
    TOKEN_COOKIE,
    authorised,
    cross_site_refusal,
    new_secret,
    normal_origin,
    page_csp,
    same,
    state_change_allowed,
)
from fbr.web.state import DashboardState, PlanChangedError, plan_fingerprint
from models.errors import FbrError

if TYPE_CHECKING:
    from executor.plan_doc import OrderPlanDoc
    from fbr.status_cli import StatusJson
    from optimizer.solution_doc import SolutionDoc

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
Handler = Callable[[Request], Awaitable[Response]]
#: A blocking view: run in a worker thread (:func:`threaded`).
View = Callable[[Request], Response]
#: The inline scripts of a chart fragment (plotly's drawing call), whose hashes the page's CSP
#: admits.
INLINE_SCRIPT = re.compile(r"<script[^>]*>(.*?)</script>", re.DOTALL)
PAGES = (("/", "Book"), ("/history", "History"), ("/plan", "Plan"), ("/whatif", "What-if"),
         ("/reports", "Reports"), ("/orders", "Orders"), ("/run", "Run"))


class PlanDoc(TypedDict):
    """``/api/plan``'s document (without ``status``): the solution in ``fbr solve --json``'s
    language, the order plan (``OrderPlan.to_dict()``) and why it may not be traded (None)."""

    solution: dict[str, object]
    plan: OrderPlanDoc
    blocked: str | None


def create_app(state: DashboardState, token: str | None = None,
               hosts: Sequence[str] | None = LOOPBACK_HOSTS) -> Starlette:
    """The application over ``state``; ``token`` (None: loopback without one) guards every
    request, and ``hosts`` are the Host names it answers (the loopback names by default, against
    DNS rebinding; None: any, for a bind off loopback, which the token guards; see
    :mod:`fbr.web.security`)."""
    views = Views(state, token)
    blocking: list[tuple[str, View]] = [
        ("/", views.book), ("/history", views.history), ("/plan", views.plan),
        ("/whatif", views.whatif), ("/reports", views.reports), ("/reports/{name}", views.report),
        ("/orders", views.orders), ("/run", views.run), ("/static/{name}", views.static),
        ("/api/status", views.api_status), ("/api/plan", views.api_plan),
        ("/api/history", views.api_history), ("/api/orders", views.api_orders),
        ("/api/run", views.api_run), ("/api/reports", views.api_reports),
        ("/api/whatif", views.api_whatif)]
    routes = [Route(path, threaded(view)) for path, view in blocking]
    routes += [Route("/execute", views.execute, methods=["GET", "POST"]),
               Route("/login", views.login)]

    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]
                    ) -> Response:
        own = normal_origin(request.url.scheme, request.url.netloc)  # scheme + Host
        why = cross_site_refusal(request.method, request.headers, own)
        if why is not None:
            response: Response = refused(request, why)
        elif request.url.path != "/login" and not authorised(token, request.headers,
                                                               request.cookies):
            response = HTMLResponse("401: this dashboard needs its token. Open /login?token=... "
                                    "once (or send Authorization: Bearer ...).", status_code=401)
        else:
            response = await call_next(request)
        for k, v in HEADERS.items():  # a page's or a report's own policy stays
            response.headers.setdefault(k, v)
        return response

    middleware = [Middleware(BaseHTTPMiddleware, dispatch=guard)]
    if hosts is not None:
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=list(hosts)))
    return Starlette(routes=routes, middleware=middleware)


def threaded(view: View) -> Handler:
    """An endpoint that runs ``view`` in a worker thread (``run_in_threadpool``): its solve, its
    journal, book and file reads and its rendering leave the event loop free for other requests."""

    async def endpoint(request: Request) -> Response:
        return await run_in_threadpool(view, request)

    return endpoint


def refused(request: Request, why: str) -> Response:
    """403 with ``why``: JSON under ``/api``, else one line of text."""
    if request.url.path.startswith("/api/"):
        return Views.json({"status": "error", "error": why}, 403)
    return PlainTextResponse(f"403: {why}", status_code=403)


class Views:
    """The request handlers (each renders one page or one JSON document). The plain methods block
    (solves, journal and file reads) and are served through :func:`threaded`; the coroutines
    (:meth:`execute`, :meth:`login`) run their blocking parts in worker threads themselves."""

    def __init__(self, state: DashboardState, token: str | None) -> None:
        self.state = state
        self.token = token

    # --- helpers ------------------------------------------------------------------------------
    def page(self, request: Request, template: str, **context: object) -> Response:
        """Render ``template`` with the navigation and a CSRF value (cookie set when absent)."""
        csrf = request.cookies.get(CSRF_COOKIE) or new_secret()
        html = templates.get_template(template).render(
            request=request, pages=PAGES, path=request.url.path, book=self.book_name(),
            exchange=self.state.config.exchange.value, execute=self.state.config.allow_execute,
            csrf=csrf, **context)
        scripts = [redact(s) for c in _charts(context) for s in INLINE_SCRIPT.findall(c)]
        response = HTMLResponse(redact(html),
                                headers={"Content-Security-Policy": page_csp(scripts)})
        if CSRF_COOKIE not in request.cookies:
            response.set_cookie(CSRF_COOKIE, csrf, httponly=True, samesite="strict")
        return response

    def book_name(self) -> str:
        """The book's ``[book] name`` (the file's name when the file does not load)."""
        return self.state.book_name()

    def failed(self, request: Request, exc: FbrError) -> Response:
        """A page that names what went wrong (the error's own message, secrets scrubbed)."""
        response = self.page(request, "error.html", title="Error", message=redact(str(exc)))
        response.status_code = 422 if exc.exit_code == 2 else 409
        return response

    @staticmethod
    def json(doc: object, status: int = 200) -> Response:
        """Strict JSON (non-finite numbers as null), secrets scrubbed."""
        text = json.dumps(json_ready(doc), default=str, allow_nan=False)
        return Response(redact(text), status_code=status, media_type="application/json")

    # --- pages --------------------------------------------------------------------------------
    def book(self, request: Request) -> Response:
        try:
            doc = self.status_doc()
        except FbrError as exc:
            return self.failed(request, exc)
        chart = charts.weights_chart(doc["weights_before"], doc["targets"])
        return self.page(request, "book.html", title="Book", s=doc, chart=chart)

    def history(self, request: Request) -> Response:
        try:
            h = self.state.history()
        except FbrError as exc:
            return self.failed(request, exc)
        cycles = [c for c in h["cycles"] if c["nav"] is not None]
        t = [c["time"] for c in cycles]
        nav = charts.lines_chart("nav", "NAV per cycle (USD)", t, {"NAV": [c["nav"] for c in cycles]})
        te = charts.lines_chart("risk", "Tracking error, largest drift and margin ratio per cycle "
                                "(%)", t, {"TE": [charts.pct(c["te_before"]) for c in cycles],
                                           "largest drift": [charts.pct(c["max_drift"]) for c in cycles],
                                           "margin ratio": [charts.pct(c["margin_ratio"]) for c in cycles]})
        funding = charts.cumulative(h["funding"])
        fund = charts.lines_chart("funding", "Funding received, cumulative (USD)",
                                  [f["time"] for f in h["funding"]], {"funding": funding})
        return self.page(request, "history.html", title="History", charts=[nav, te, fund],
                         cycles=h["cycles"][-50:][::-1], fills=h["fills"][-200:][::-1])

    def plan(self, request: Request) -> Response:
        try:
            sol, doc = self._plan_docs()
        except FbrError as exc:
            return self.failed(request, exc)
        trades = {t["symbol"]: t["notional"] for t in sol["trades"]}
        chart = charts.bars_chart("trades", "Trades (USD, + = buy)", trades)
        return self.page(request, "plan.html", title="Plan", d=doc, chart=chart)

    def whatif(self, request: Request) -> Response:
        from fbr.whatif_cli import scenario_json

        shocks = _shocks(request.query_params.getlist("shock"))
        result = error = None
        chart = ""
        notes: list[str] = []
        if shocks:
            try:
                result, notes = self.state.whatif(shocks)
            except (FbrError, ValueError) as exc:
                error = redact(str(exc))
        if result is not None:
            w0, w1 = result["weights_before"], result["weights_after"]
            chart = charts.bars_chart("whatif", "Effective weight change (pp)",
                                      {a: 100 * (w1[a] - w0[a]) for a in w0})
        return self.page(request, "whatif.html", title="What-if", shocks=shocks,
                         r=None if result is None else scenario_json(result), error=error,
                         chart=chart, notes=notes)

    def reports(self, request: Request) -> Response:
        return self.page(request, "reports.html", title="Reports", reports=self.state.reports())

    def report(self, request: Request) -> Response:
        path = self.state.report_path(request.path_params["name"])
        if path is None:
            return HTMLResponse("404: no such report", status_code=404)
        return HTMLResponse(redact(path.read_text()),
                            headers={"Content-Security-Policy": REPORT_CSP})

    def orders(self, request: Request) -> Response:
        try:
            rows = self.state.orders()
        except FbrError as exc:
            return self.failed(request, exc)
        return self.page(request, "orders.html", title="Orders", orders=rows)

    def run(self, request: Request) -> Response:
        try:
            r = self.state.run_state()
        except FbrError as exc:
            return self.failed(request, exc)
        return self.page(request, "run.html", title="Run", r=r)

    async def execute(self, request: Request) -> Response:
        if not self.state.config.allow_execute:
            return HTMLResponse("403: this dashboard is read-only (start fbr serve with "
                                "--allow-execute to send plans)", status_code=403)
        if request.method == "GET":
            return await run_in_threadpool(self.confirm_page, request)
        form = {k: str(v) for k, v in (await request.form()).items()}
        why = state_change_allowed(self.token, request.headers, request.cookies, form)
        if why is not None:
            return HTMLResponse(f"403: {why}", status_code=403)
        # in a worker thread: a live reconcile can wait minutes, and the other pages go on
        return await run_in_threadpool(self.send, request, form.get("plan") or "")

    def confirm_page(self, request: Request) -> Response:
        """``GET /execute``: the plan and its confirmation form (blocking: a solve)."""
        try:
            doc = self.plan_doc()
        except FbrError as exc:
            return self.failed(request, exc)
        return self.page(request, "execute.html", title="Execute", d=doc, done=None,
                         fingerprint=plan_fingerprint(doc["plan"]))

    def send(self, request: Request, confirmed: str) -> Response:
        """``POST /execute`` once allowed: send the plan of fingerprint ``confirmed`` and show the
        result (blocking: the executor)."""
        try:
            done = self.state.execute(confirmed)
        except PlanChangedError as exc:
            return HTMLResponse(f"409: {exc}", status_code=409)
        except FbrError as exc:
            return self.failed(request, exc)
        return self.page(request, "execute.html", title="Execute", d=None, done=done)

    async def login(self, request: Request) -> Response:
        given = request.query_params.get("token")
        if self.token is None or not same(given, self.token):
            return HTMLResponse("401: wrong or missing token", status_code=401)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(TOKEN_COOKIE, self.token, httponly=True, samesite="strict")
        return response

    def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name == "plotly.js":
            from plotly.offline import get_plotlyjs  # type: ignore[import-untyped]

            return Response(get_plotlyjs(), media_type="application/javascript",
                            headers={"Cache-Control": "public, max-age=86400"})
        if name == "fbr.css":
            return Response((HERE / "static" / "fbr.css").read_text(), media_type="text/css")
        return HTMLResponse("404", status_code=404)

    # --- JSON -----------------------------------------------------------------------------------
    def status_doc(self) -> StatusJson:
        """The status report in the CLI's JSON language (``fbr status --json``)."""
        from fbr.status_cli import status_json

        return status_json(self.state.status().to_dict())

    def plan_doc(self) -> PlanDoc:
        """The solution (``fbr solve --json``'s language), the order plan and what blocks it."""
        return self._plan_docs()[1]

    def _plan_docs(self) -> tuple[SolutionDoc, PlanDoc]:
        """``Solution.to_dict()`` and :meth:`plan_doc` of the same solve."""
        from fbr.console import solution_json

        sol, plan, blocked = self.state.plan()
        sol_doc = sol.to_dict()
        return sol_doc, {"solution": solution_json(sol_doc), "plan": plan, "blocked": blocked}

    def api_status(self, request: Request) -> Response:
        return self._api(self.status_doc)

    def api_plan(self, request: Request) -> Response:
        return self._api(self.plan_doc)

    def api_history(self, request: Request) -> Response:
        return self._api_doc(self.state.history)

    def api_orders(self, request: Request) -> Response:
        return self._api_doc(self.state.orders)

    def api_run(self, request: Request) -> Response:
        return self._api_doc(self.state.run_state)

    def api_reports(self, request: Request) -> Response:
        return self.json(self.state.reports())

    def api_whatif(self, request: Request) -> Response:
        shocks = _shocks(request.query_params.getlist("shock"))
        if not shocks:
            return self.json({"status": "error", "error": "give at least one ?shock=ASSET=-30%"},
                             422)
        from fbr.whatif_cli import scenario_json

        def doc() -> dict[str, object]:
            result, notes = self.state.whatif(shocks)
            return {**scenario_json(result), "notes": notes}

        return self._api(doc)

    def _api(self, make: Callable[[], Mapping[str, object]]) -> Response:
        """``{"status": "ok", **make()}``, or ``{"status": "error", "error": ...}`` (422)."""
        try:
            return self.json({"status": "ok", **make()})
        except (FbrError, ValueError) as exc:
            return self.json({"status": "error", "error": redact(str(exc))}, 422)

    def _api_doc(self, make: Callable[[], object]) -> Response:
        """``make()``'s document as it is (a journal's rows), or ``{"status": "error", "error":
        ...}`` (422) when the journal or the account cannot be read."""
        try:
            return self.json(make())
        except FbrError as exc:
            return self.json({"status": "error", "error": redact(str(exc))}, 422)


def _charts(context: Mapping[str, object]) -> list[str]:
    """The chart fragments a page renders (its ``chart`` and ``charts`` values)."""
    one, many = context.get("chart"), context.get("charts")
    return [c for c in ([one] + (list(many) if isinstance(many, list) else []))
            if isinstance(c, str)]


def _shocks(values: list[str]) -> list[str]:
    """Shock texts from query values, each possibly a comma-separated list."""
    return [part.strip() for v in values for part in v.split(",") if part.strip()]


__all__ = ["create_app"]
