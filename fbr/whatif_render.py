"""Rich tables of what-if results (``fbr whatif``): one panel of tables per scenario and a summary."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fbr.console import RATIO_SHOWN_UP_TO, margin_share_text, pp_text, signed_pct
from models.liquidation_distance import LiquidationMove
from models.margin import MarginState
from scenarios.whatif_result import WhatIfResult


def usd(x: float) -> str:
    """USD with thousands separators."""
    return f"{x:,.2f}"


def move_text(m: LiquidationMove | None) -> str:
    """"down -41.23% / up +12.00%", "none", or "liquidated now"."""
    if m is None:
        return "-"
    if m.down is None and m.up is None:
        return "no open position" if not m.has_positions else "none in (-100%, +inf)"
    if m.down == 0.0 and m.up == 0.0:
        return "liquidated now"
    parts = [f"down {signed_pct(m.down)}" if m.down is not None else "no down move",
             f"up {signed_pct(m.up)}" if m.up is not None else "no up move"]
    return " / ".join(parts)


def ratio_text(m: MarginState) -> str:
    """MM / collateral as a percentage, or why there is none (collateral <= 0, or so small that
    the ratio is above :data:`RATIO_SHOWN_UP_TO`)."""
    if m.collateral <= 0:
        return "no collateral" if m.maintenance <= 0 else "collateral <= 0"
    if m.margin_ratio > RATIO_SHOWN_UP_TO:
        return f"{margin_share_text(m.margin_ratio)} (collateral {m.collateral:.2g} USD)"
    return margin_share_text(m.margin_ratio)


def _book_move(moves: Sequence[LiquidationMove]) -> LiquidationMove | None:
    return next((m for m in moves if m.scope == "book"), None)


def summary_table(r: WhatIfResult) -> Table:
    """Key figures of one scenario: NAV, PnL split, margin, liquidation, next move."""
    t = Table(title="result", title_justify="left", show_header=False)
    t.add_column("what", overflow="fold")
    t.add_column("value", justify="right", overflow="fold")
    t.add_row("positions tested", r.positions_tested)
    t.add_row("NAV before -> after (USD)", f"{usd(r.nav_before)} -> {usd(r.nav_after)}")
    t.add_row("PnL spot / futures / funding (USD)",
              f"{usd(r.pnl.spot)} / {usd(r.pnl.futures)} / {usd(r.pnl.funding)}")
    t.add_row("PnL total (USD)", usd(r.pnl.total))
    if r.settlements:
        n = sorted(set(r.settlements.values()))
        t.add_row("funding settlements", ", ".join(f"{v:g}" for v in n))
    t.add_row("margin ratio MM / collateral", f"{ratio_text(r.margin_before)} -> "
              f"{ratio_text(r.margin_after)}")
    if r.has_pledged:
        t.add_row("pledged collateral before -> after (USD)",
                  f"{usd(r.pledged_before)} -> {usd(r.pledged_after)}")
    t.add_row("margin surplus after (USD)", usd(r.margin_surplus_after))
    liq = "NO"
    if r.liquidated:
        liq = (f"YES: {len(r.liquidations)} positions closed, penalty "
               f"{usd(r.liquidation_penalty)} USD")
        if r.insurance_fund > 0:
            liq += (f"; the insurance fund absorbed the wallet's {usd(r.insurance_fund)} USD "
                    f"deficit (an account owes no more than it holds)")
    t.add_row("liquidated", liq)
    t.add_row("common move to liquidation, now", move_text(_book_move(r.distance_before)))
    t.add_row("common move to liquidation, after", move_text(_book_move(r.distance_after)))
    t.add_row("tracking error before -> after", f"{100 * r.tracking_error_before:.2f}% -> "
              f"{100 * r.tracking_error_after:.2f}%")
    if r.next_solution is not None and r.next_solution.status == "infeasible":
        s = r.next_solution
        names = ", ".join([c.name for c in s.conflicts] + list(s.opposing)) or "(none identified)"
        t.add_row("next move (re-solve)", escape(f"infeasible, no order would be sent: these "
                                                 f"constraints conflict: {names}"))
    elif r.next_solution is not None:
        s = r.next_solution
        spot = s.spot_costs
        trades = (f"{len(s.trades)} trades" if spot is None else
                  f"{len(s.trades)} futures and {len(s.spot_trades)} spot trades")
        cost = s.costs.trading + (spot.trading if spot is not None else 0.0)
        t.add_row("next move (re-solve)", f"{s.status}: {trades}, TE "
                  f"{100 * s.tracking_error_before:.2f}% -> {100 * s.tracking_error_after:.2f}%, "
                  f"trading cost {usd(cost)} USD"
                  + (f" (spot tax {usd(spot.tax)} USD)" if spot is not None else ""))
    elif r.next_error:
        t.add_row("next move (re-solve)", escape(f"failed: {r.next_error}"))
    return t


def weights_table(r: WhatIfResult) -> Table:
    """Effective weights per asset: target, before, after, drift."""
    t = Table(title="effective weights", title_justify="left")
    for head in ("asset", "target", "before", "after", "drift"):
        t.add_column(head, justify="left" if head == "asset" else "right", overflow="fold")
    drift = r.drift
    for a in r.weights_after:
        t.add_row(escape(a), f"{100 * r.targets.get(a, 0.0):.2f}%", f"{100 * r.weights_before[a]:.2f}%",
                  f"{100 * r.weights_after[a]:.2f}%", pp_text(drift[a]))
    return t


def distance_table(r: WhatIfResult) -> Table:
    """Per-contract liquidation moves (its underlying alone moves), now and after the shock."""
    t = Table(title="move of the underlying alone that liquidates the book", title_justify="left")
    for head in ("contract", "now", "after the shock"):
        t.add_column(head, overflow="fold")
    after = {m.scope: m for m in r.distance_after}
    for m in r.distance_before:
        if m.scope == "book":
            continue
        later = after.get(m.scope)
        t.add_row(escape(m.scope), move_text(m),
                  move_text(later) if later is not None else "position closed")
    return t


def trades_table(r: WhatIfResult) -> Table | None:
    """The re-solve's trades (None without any); an infeasible re-solve's are its least-violation
    book's, titled as not tradeable."""
    s = r.next_solution
    if s is None or not (s.trades or s.spot_trades):
        return None
    title = ("infeasible re-solve: the least-violation book's trades (not tradeable)"
             if s.status == "infeasible" else "next move: trades of the re-solve")
    t = Table(title=title, title_justify="left")
    for head in ("contract / spot", "notional USD", "contracts / units"):
        t.add_column(head, justify="left" if head == "contract / spot" else "right", overflow="fold")
    for tr in s.trades:
        t.add_row(escape(tr.symbol), usd(tr.notional), f"{tr.contracts:+,.4f}")
    for st in s.spot_trades:
        t.add_row(escape(f"{st.asset} spot"), usd(st.notional), f"{st.units:+,.6g}")
    return t


def render_result(r: WhatIfResult, console: Console) -> None:
    """Every table of one scenario."""
    head = f"[bold]{escape(r.scenario.name)}[/bold]"
    if r.scenario.description:
        head += f": {escape(r.scenario.description)}"
    console.print(head)
    console.print(f"shocks: {escape(', '.join(r.scenario.shock_texts))}", highlight=False)
    console.print(summary_table(r))
    console.print(weights_table(r))
    if len(r.distance_before) > 1:
        console.print(distance_table(r))
    trades = trades_table(r)
    if trades is not None:
        console.print(trades)


def overview_table(results: Sequence[WhatIfResult]) -> Table:
    """One row per scenario."""
    t = Table(title="scenarios", title_justify="left")
    # numbers are kept whole (no_wrap), their headers on two lines: fits 80 columns
    numbers = ("PnL\nUSD", "NAV\nafter", "margin\nratio", "next\nTE")
    move = "move to liquidation (after)"
    for head in ("scenario", *numbers[:3], "liq.", move, numbers[3]):
        t.add_column(head, justify="left" if head in ("scenario", "liq.") else "right",
                     overflow="fold", no_wrap=head in numbers,
                     min_width=10 if head == move else None)  # "+42756.28%" whole
    for r in results:
        nxt = "-" if r.next_solution is None else f"{100 * r.next_solution.tracking_error_after:.2f}%"
        t.add_row(escape(r.scenario.name), usd(r.pnl.total), usd(r.nav_after),
                  ratio_text(r.margin_after), "YES" if r.liquidated else "no",
                  move_text(_book_move(r.distance_after)), nxt)
    return t
