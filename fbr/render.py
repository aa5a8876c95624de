"""Human-readable rendering of a :class:`Solution` with rich tables."""

from __future__ import annotations

from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from fbr.console import margin_share_text, pp_text
from optimizer.solution import Solution


def _pct(x: float, digits: int = 2) -> str:
    return f"{100 * x:.{digits}f}%"


def _usd(x: float) -> str:
    return f"{x:,.2f}"


def trades_table(sol: Solution) -> Table:
    """Trades: contract, side, USD notional, contracts, price (an infeasible solution's are its
    least-violation book's, titled as not tradeable)."""
    title = ("Trades (futures) of the least-violation book: infeasible, not tradeable"
             if sol.status == "infeasible" else "Trades (futures)")
    t = Table(title=title, title_justify="left")
    for col in ("contract", "underlying", "side", "notional USD", "contracts", "price"):
        t.add_column(col, justify="right" if col not in ("contract", "underlying", "side") else "left",
                     overflow="fold")
    for tr in sol.trades:
        side = "BUY" if tr.notional > 0 else "SELL"
        t.add_row(tr.symbol, tr.underlying, side, _usd(tr.notional), f"{tr.contracts:.8g}",
                  _usd(tr.price))
    if not sol.trades:
        t.add_row("-", "-", "no trade", "0.00", "0", "-")
    return t


def spot_trades_table(sol: Solution) -> Table:
    """The spot leg's trades: asset, side, USD, units, price, tax realised (USD); and its costs."""
    t = Table(title="Trades (spot leg)", title_justify="left")
    for col in ("asset", "side", "notional USD", "units", "price", "tax USD"):
        t.add_column(col, justify="right" if col not in ("asset", "side") else "left", overflow="fold")
    for tr in sol.spot_trades:
        if tr.bought > 0 and tr.sold > 0:  # a sale and a buy-back (harvesting a loss): both legs
            t.add_row(tr.asset, "SELL", _usd(-tr.sold), f"{-tr.sold / tr.price:.8g}",
                      _usd(tr.price), _usd(tr.tax))
            t.add_row(tr.asset, "BUY", _usd(tr.bought), f"{tr.bought / tr.price:.8g}",
                      _usd(tr.price), _usd(0.0))
            continue
        side = "BUY" if tr.notional > 0 else "SELL"
        t.add_row(tr.asset, side, _usd(tr.notional), f"{tr.units:.8g}", _usd(tr.price),
                  _usd(tr.tax))
    if not sol.spot_trades:
        t.add_row("-", "no trade", "0.00", "0", "-", "0.00")
    c = sol.spot_costs
    if c is not None:
        t.caption = (f"spot fees / spread / impact {_usd(c.fees)} / {_usd(c.spread)} / "
                     f"{_usd(c.impact)} USD; tax {_usd(c.tax)} USD ({c.lot_method} lots; "
                     f"{_usd(c.tax_optimiser)} as the optimiser priced it)")
    return t


def exposure_table(sol: Solution) -> Table:
    """Effective weights before and after against the targets."""
    t = Table(title="Effective weights (spot + futures, % of base)", title_justify="left")
    for col in ("asset", "target", "before", "after", "drift after"):
        t.add_column(col, justify="right" if col != "asset" else "left", overflow="fold")
    for a, w in sol.targets.items():
        b, e = sol.effective_weights_before[a], sol.effective_weights_after[a]
        t.add_row(a, _pct(w), _pct(b), _pct(e), pp_text(e - w))
    return t


def summary_table(sol: Solution) -> Table:
    """Risk, costs, margin and leverage in one table."""
    t = Table(title="Risk, costs, margin", title_justify="left", show_header=False)
    t.add_column("item", overflow="fold")
    t.add_column("value", justify="right", overflow="fold")
    rows = [
        ("NAV / target base (USD)", f"{_usd(sol.nav)} / {_usd(sol.base)}"),
        ("tracking error before -> after (annualised)",
         f"{_pct(sol.tracking_error_before, 3)} -> {_pct(sol.tracking_error_after, 3)}"),
        ("fees / spread / impact (USD)",
         f"{_usd(sol.costs.fees)} / {_usd(sol.costs.spread)} / {_usd(sol.costs.impact)}"),
        (f"funding carry over {sol.costs.horizon_days:g} d (USD, + = paid)",
         _usd(sol.costs.funding_carry)),
        ("collateral (USD)", _usd(sol.margin.collateral)),
        ("initial margin (USD, % of collateral)",
         f"{_usd(sol.margin.initial)} ({margin_share_text(sol.margin.initial_utilisation)})"),
        ("maintenance margin (USD, ratio)",
         f"{_usd(sol.margin.maintenance)} ({margin_share_text(sol.margin.maintenance_ratio)})"),
        ("gross / net exposure (x base)", f"{sol.gross_leverage:.3f} / {sol.net_exposure:.3f}"),
    ]
    rows += [(f"stress {s.name}: margin surplus (USD)", _usd(s.surplus)) for s in sol.margin.stress]
    r = sol.reserve
    if r is not None:  # constraints.size_reserve or costs.reserve_cost
        rows += [
            (f"reserve: smallest wallet opening the positions and keeping every stress "
             f"surplus >= 0 (USD; binding: "
             f"{r.binding or 'none'})", _usd(r.reserve_usd)),
            (f"reserve opportunity cost at {_pct(r.reserve_yield)} a year (USD / yr)",
             _usd(r.reserve_cost_usd_per_year)),
            ("wallet now / above the reserve (USD)", f"{_usd(r.wallet_now)} / {_usd(r.excess_usd)}"),
        ]
        if r.horizon_days is not None:  # costs.reserve_cost: priced in the objective
            rows.append((f"reserve cost in the objective over {r.horizon_days:g} d (USD)",
                         _usd(r.reserve_cost_usd_over_horizon)))
    for k, v in rows:
        t.add_row(k, v)
    return t


def plan_table(sol: Solution) -> Table | None:
    """The planner's trades per step (USD notional by contract, then the net spot trades by asset
    with the spot leg on) and the share of the whole plan's trade that step 1 makes now, then the
    dated positions the plan lets settle at expiry (not trades); None without a plan
    (single-period)."""
    if sol.plan is None:
        return None
    plan = sol.plan
    t = Table(title=f"Plan: {plan.horizon} steps of {plan.step_days:g} days (only step 1 is sent)",
              title_justify="left")
    t.add_column("contract", overflow="fold")
    for st in plan.steps:
        t.add_column(f"step {st.step} USD", justify="right", overflow="fold")
    t.add_column("now / plan", justify="right", overflow="fold")
    for sym in sorted(plan.total_trades()):
        _trade_row(t, sym, [st.trades.get(sym, 0.0) for st in plan.steps])
    for asset in sorted({a for st in plan.steps for a, v in st.spot_trades.items()
                         if abs(v) >= 0.005}):
        _trade_row(t, f"{asset} spot", [st.spot_trades.get(asset, 0.0) for st in plan.steps])
    for sym in sorted({c for st in plan.steps for c in st.settlements}):
        cells = [st.settlements.get(sym, 0.0) for st in plan.steps]
        t.add_row(f"{sym} settles at expiry (no order)",
                  *[_usd(v) if abs(v) >= 0.005 else "" for v in cells], "")
    return t


def _trade_row(t: Table, label: str, cells: list[float]) -> None:
    """One row of the plan table: the USD traded at each step (under half a cent shown as 0) and
    the share of the plan's gross trade made now, |t_1| / sum_h |t_h| ("-" when the plan trades
    nothing), so a step that a later step trades back is not shown as the whole plan."""
    gross = sum(abs(v) for v in cells)
    share = f"{100 * abs(cells[0]) / gross:.0f}%" if gross > 0.005 else "-"
    t.add_row(label, *[_usd(v if abs(v) >= 0.005 else 0.0) for v in cells], share)


def plan_note(sol: Solution) -> str | None:
    """Why today's trade is what it is (:func:`optimizer.plan_note.plan_note`); None without a plan."""
    return None if sol.plan is None else sol.plan.note()


def render_solution(sol: Solution, console: Console) -> None:
    """Print the whole plan."""
    if sol.labels:
        console.print(Panel(Text(" / ".join(sol.labels)), title="data", style="yellow"))
    console.print(trades_table(sol))
    if sol.spot_costs is not None:  # the spot leg is on
        console.print(spot_trades_table(sol))
    console.print(exposure_table(sol))
    plan = plan_table(sol)
    if plan is not None:
        console.print(plan)
        console.print(f"[bold]plan:[/bold] {escape(plan_note(sol) or '')}")
    console.print(summary_table(sol))
    # rows whose dual is at solver precision hold nothing back: in --json only (holds_back false)
    held = [b for b in sol.binding_constraints if b.holds_back]
    if held:
        console.print(Panel(Group(*[Text(f"- {b.explanation}") for b in held]),
                            title="binding constraints"))
    if sol.conflicts:
        lines = [Text(f"- {c.name}: relaxed by {c.violation:.6g} {c.unit}") for c in sol.conflicts]
        lines += [Text(f"- {row}: binding against them") for row in sol.opposing]
        console.print(Panel(Group(*lines), title="conflicting constraints", style="red"))
    if sol.blockers:
        lines = [Text(f"- {b}") for b in sol.blockers]
        console.print(Panel(Group(*lines), title="not tradeable: no order may be sent", style="red"))
    for m in sol.messages:
        console.print(f"[bold]note:[/bold] {escape(m)}")
    console.print(f"status [bold]{sol.status}[/bold], solver {sol.solver}, solve "
                  f"{sol.solve_time_ms:.2f} ms (total {sol.total_time_ms:.1f} ms)")
