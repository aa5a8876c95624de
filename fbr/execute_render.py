"""The text output of ``fbr execute`` and ``fbr status``: plan tables (contracts, notional in
USD), planned vs filled, warnings and notes, and the status report (weights and tracking error in
%, NAV, margin and funding in USD, times in UTC).

Every message shown goes through :func:`executor.safety.redact`. rich is imported inside the
functions, so ``fbr --help`` stays fast.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from executor.safety import redact
from fbr.console import margin_share_text, pp_text, signed_pct, wide

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from executor.plan_doc import OrderLegDoc, OrderPlanDoc
    from executor.status import StatusReport
    from fbr.execute_cli import ExecuteResult


def _console() -> Console:
    """fbr's console; piped output (80 columns by default) gets room for the plan's columns."""
    return wide(width=160)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.3f}%"


#: Below this console width the plan's order ids go to a second table, so that no column is cut.
NARROW_WIDTH = 120


def _plan_tables(plan: OrderPlanDoc, title: str, width: int = NARROW_WIDTH) -> list[Table]:
    """The plan's legs: one table, or on a console narrower than ``NARROW_WIDTH`` the orders
    (contract, side, size, type) and their ids (exchange symbol, reduce-only, client id) apart."""
    from rich.table import Table

    def limit(leg: OrderLegDoc) -> str:
        return str(leg["order_type"]) + (f" @ {leg['limit_price']:.10g}" if leg["limit_price"] else "")

    def cells(leg: OrderLegDoc) -> dict[str, str]:
        return {"leg": str(leg["index"]), "contract": leg["symbol"],
                "exchange symbol": leg["exchange_symbol"], "side": leg["side"],
                "contracts": f"{leg['contracts']:.10g}", "notional USD": f"{leg['notional']:,.2f}",
                "reduce-only": "yes" if leg["reduce_only"] else "", "type": limit(leg),
                "client id": leg["client_id"]}

    heads = ("leg", "contract", "exchange symbol", "side", "contracts", "notional USD",
             "reduce-only", "type", "client id")
    groups: list[tuple[str, tuple[str, ...]]] = [(title, heads)]
    if width < NARROW_WIDTH:
        groups = [(title, ("leg", "contract", "side", "contracts", "notional USD", "type")),
                  ("Order ids", ("leg", "exchange symbol", "reduce-only", "client id"))]
    tables = []
    for name, cols in groups:
        t = Table(title=name, title_justify="left")
        for head in cols:
            t.add_column(head, justify="right" if head in ("contracts", "notional USD") else "left",
                         overflow="fold")
        for leg in plan["legs"]:
            row = cells(leg)
            t.add_row(*(row[c] for c in cols))
        tables.append(t)
    return tables


def _print_plan(plan: OrderPlanDoc, out: Console) -> None:
    from rich.markup import escape

    for table in _plan_tables(plan, f"Plan {plan['plan_id']} ({plan['venue']})", out.width):
        out.print(table)
    _print_warnings(plan["warnings"], out)
    for d in plan["dropped"]:
        out.print(f"[yellow]dropped[/yellow] {escape(d['symbol'])} {d['contracts']:.10g} contracts "
                  f"({d['notional']:,.2f} USD): {escape(d['reason'])}; tracking error without it "
                  f"{_pct(d['tracking_error_left'])}")
    out.print(f"tracking error: now {_pct(plan['tracking_error_before'])}, at the lot-rounded target "
              f"{_pct(plan['tracking_error_solution'])}, residual after this plan "
              f"{_pct(plan['tracking_error_residual'])}; gross {plan['gross_notional']:,.2f} USD")


def _print_warnings(warnings: Iterable[str], out: Console) -> None:
    """A plan's warnings (e.g. lot rounding that removed most of the solution), one line each."""
    from rich.markup import escape

    for w in warnings:
        out.print(f"[yellow]warning:[/yellow] {escape(redact(w))}")


def _print_result(result: ExecuteResult) -> None:
    from rich.markup import escape
    from rich.table import Table

    out = _console()
    out.rule(f"fbr execute: {result['mode']}")
    solution = result.get("solution")
    for m in [] if solution is None else solution["messages"]:  # as `fbr solve` prints them
        out.print(f"[bold]note:[/bold] {escape(redact(m))}")
    _print_plan(result["plan"], out)
    rep = result["report"]
    if result["mode"] != "dry-run":
        t = Table(title="Planned vs filled", title_justify="left")
        for head in ("leg", "contract", "side", "planned", "filled", "avg price", "fee USD", "status",
                     "sends"):
            t.add_column(head, overflow="fold")
        for leg in rep["legs"]:
            t.add_row(str(leg["index"]), leg["symbol"], leg["side"], f"{leg['planned']:.10g}",
                      f"{leg['filled']:.10g}", "-" if leg["average"] is None else f"{leg['average']:.10g}",
                      f"{leg['fee']:.4f}", leg["status"], str(leg["attempts"]))
        out.print(t)
        out.print(f"residual tracking error at the positions reached: "
                  f"{_pct(rep['tracking_error_residual'])}")
    for m in rep["messages"]:
        out.print(f"[bold]note:[/bold] {escape(redact(m))}")
    out.print(f"plan id [bold]{escape(result['plan_id'])}[/bold]"
              + (f", journal {escape(result['journal'])}" if result["journal"] else ""))


def _print_status(rep: StatusReport) -> None:
    from rich.markup import escape
    from rich.table import Table

    out = _console()
    out.rule(f"fbr status: {rep.book_name} on {rep.venue}")
    for a in rep.alerts:
        out.print(f"[bold red]alert:[/bold red] {escape(redact(a))}")
    t = Table(title="Effective weights vs targets", title_justify="left")
    for head in ("asset", "effective", "target", "drift"):
        t.add_column(head, justify="right", overflow="fold")
    for w in rep.weights:
        t.add_row(escape(w.asset), _pct(w.effective), _pct(w.target), pp_text(w.drift))
    out.print(t)
    m = rep.margin
    out.print(f"NAV {rep.nav:,.2f} USD, base {rep.base:,.2f} USD, tracking error {_pct(rep.tracking_error)}")
    out.print(f"margin: collateral {m.collateral:,.2f} USD, initial {m.initial:,.2f}, maintenance "
              f"{m.maintenance:,.2f}, margin ratio {margin_share_text(m.margin_ratio, 3)}; "
              f"liquidation at a common move of {signed_pct(m.liquidation_move_down, 3)} down / "
              f"{signed_pct(m.liquidation_move_up, 3)} up ('-' = none)")
    f = rep.funding
    since = ("" if f.since_ms is None else
             f" ({datetime.fromtimestamp(f.since_ms / 1000, tz=UTC):%Y-%m-%d %H:%M} UTC)")
    count = "" if f.payments is None else f", {f.payments} payments"
    out.print(f"funding since the last rebalance{since}: {f.total:+,.4f} USD (+ = received; source: "
              f"{escape(f.source)}{count})")
    if f.note:
        out.print(f"[yellow]note:[/yellow] {escape(redact(f.note))}")
    out.print(f"open orders: {len(rep.open_orders)}")
    if rep.infeasible:  # the alert above says why: no plan, so no figures to weigh
        out.print("rebalance not possible: the solution may not be traded (the alert above says why)")
    else:
        verdict = "[bold green]due[/bold green]" if rep.rebalance_due else "not due"
        out.print(f"rebalance {verdict}: {due_text(rep)}")
    if rep.plan.legs:
        _print_plan(rep.plan.to_dict(), out)
    else:
        _print_warnings(rep.plan.warnings, out)


def due_text(rep: StatusReport) -> str:
    """The due test in user units: the tracking error the plan reaches and its trading cost, then
    the rule's figures (TE^2 fall against gamma_trade x cost / base, squared annualised), and the
    broken hard rows that make it due for safety (rich markup escaped)."""
    from rich.markup import escape

    te = ("" if rep.tracking_error_after is None else
          f"tracking error {_pct(rep.tracking_error)} -> {_pct(rep.tracking_error_after)} for ")
    repair = ("" if not rep.repairs else
              f"; due to repair: {escape('; '.join(rep.repairs))}, which the plan mends")
    return (f"{te}{rep.trading_cost_usd:,.2f} USD of trading cost (due when the fall in TE² beats "
            f"gamma_trade x cost / base: {rep.benefit:.3g} vs {rep.cost:.3g}){repair}")
