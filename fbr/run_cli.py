"""``fbr run CONFIG``: the daily loop (see :mod:`executor.run_loop`), and ``--simulate`` over the
file's market path on a simulated clock (:mod:`fbr.run_sim`). Wiring and the checks made before
the loop starts are in :mod:`fbr.run_wiring`; the file format in :mod:`fbr.run_config`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from executor.safety import install_log_redaction
from fbr.console import CliError, err, out, user_errors
from fbr.execute_wiring import JournalOpt, _emit, redacting
from models.errors import ExitCode

if TYPE_CHECKING:
    from executor.alerts import AlertHub
    from executor.run_loop import RunSummary
    from fbr.run_config import RunConfig
    from fbr.run_wiring import OpenVenue


def register(app: typer.Typer) -> None:
    """Add ``run`` to the fbr app."""
    app.command("run")(run)


def run(config: Annotated[Path, typer.Argument(help="Run file (TOML): a backtest file plus [run], "
                                               "[triggers], [limits], [alerts].")],
        live: Annotated[bool, typer.Option("--live", help="Send real orders (exchange = "
                                           "binanceusdm; keys from the environment).")] = False,
        simulate: Annotated[bool, typer.Option(
            "--simulate", help="Run over the file's [data] path on a simulated clock and the "
            "paper venue (the trades of `fbr backtest` with the same policy).")] = False,
        journal: JournalOpt = None,
        max_cycles: Annotated[int | None, typer.Option(
            "--max-cycles", min=1, help="Stop after this many cycles.")] = None,
        once: Annotated[bool, typer.Option(
            "--once", help="One wake-up: read the account, run the cycle if one is due, exit (for "
            "cron).")] = False,
        as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object at the end."
                                              )] = False,
        ) -> None:
    """Run the rebalancing loop: read the account, solve, trade when it pays, alert; until stopped."""
    install_log_redaction()
    with user_errors(as_json), redacting():
        from fbr.run_config import load_run_file

        if not config.exists():
            raise CliError(f"run file {config} does not exist. Fix: give the path to a TOML run "
                           f"file (see examples/run_paper.toml)")
        cfg = load_run_file(config)
        result = (_simulate(cfg, journal) if simulate
                  else _loop(cfg, journal, live, max_cycles, once, _watch(cfg, config)))
        changed = result.pop("book_change", None)
        if as_json:
            _emit({"status": "ok", **result} if changed is None else
                  {"status": "error", "exit_code": int(ExitCode.REFUSED), "error": changed, **result})
        else:
            _print(result)
        if changed is not None:  # exit 6, so that a supervisor (Restart=on-failure) restarts it
            _book_changed(str(changed), as_json)


def _book_changed(message: str, as_json: bool) -> None:
    """The end of a loop stopped because its book file changed: the message on stderr (the JSON
    object on stdout already holds it) and exit code 6, so that a supervisor restarts the loop on
    the file as it is now."""
    from rich.markup import escape

    err.print(f"[bold red]error:[/bold red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=int(ExitCode.REFUSED))


def _journal(cfg: RunConfig, journal: Path | None) -> Path:
    from executor.journal_schema import check_journal_path
    from fbr.console import default_journal

    path = journal or cfg.journal or default_journal()
    check_journal_path(path)
    return path


def _open(cfg: RunConfig, journal_path: Path, live: bool, alerts: AlertHub) -> OpenVenue:
    from fbr.run_wiring import dry_venue, exchange_venue, paper_venue

    if live and cfg.exchange != "binanceusdm":
        raise CliError(f"--live sends real orders, but run.exchange is {cfg.exchange!r}. Fix: drop "
                       f"--live, or set exchange = \"binanceusdm\" in [run]")
    if cfg.exchange == "binanceusdm":
        return exchange_venue(cfg, journal_path, live)
    if cfg.exchange == "paper":
        return paper_venue(cfg, journal_path, alerts)
    return dry_venue(cfg, journal_path)


def _watch(cfg: RunConfig, run_path: Path) -> Callable[[], str | None]:
    """The loop's check of its run file and its book file (:mod:`fbr.book_watch`), made right
    after the run file loaded the book: an edit from then on stops the loop at its next wake-up."""
    from fbr.book_watch import run_watcher

    return run_watcher(run_path, cfg.backtest.book_path)


def _loop(cfg: RunConfig, journal: Path | None, live: bool, max_cycles: int | None,
          once: bool = False, book_changed: Callable[[], str | None] | None = None
          ) -> dict[str, object]:
    from dataclasses import replace

    from executor.journal_schema import check_one_book
    from executor.plan import OrderType, PlanOptions, with_book_settings
    from executor.run_loop import Runner
    from executor.run_settings import RunSettings
    from executor.safety import Limits
    from executor.schedule import WallClock
    from fbr.backtest_config import build_path
    from fbr.run_wiring import (
        alert_hub,
        check_webhooks,
        loop_policy,
        signals,
        state_dir,
        structured_logs,
    )

    if "risk_lookback_days" in cfg.policy.params:
        raise CliError(f"{cfg.policy.where}.risk_lookback_days re-estimates risk on the file's "
                       f"[data] path, which a live loop does not follow. Fix: remove it (the loop "
                       f"uses the book's [risk] model), or use it with --simulate")
    journal_path = _journal(cfg, journal)
    loaded = cfg.backtest.loaded
    bt = replace(cfg.backtest, risk_model="book")
    policy = loop_policy(cfg, bt, build_path(bt))
    hub = alert_hub(cfg)
    opened = _open(cfg, journal_path, live, hub)
    mode = "live" if live else ("paper" if cfg.exchange == "paper" else "dry-run")
    sdir = state_dir(cfg, journal_path)
    settings = RunSettings(schedule=cfg.schedule, mode=mode, health_file=sdir / "health.json",
                           kill_file=sdir / "KILL", triggers=cfg.triggers, limits=cfg.limits,
                           gate=cfg.gate, costs=loaded.settings.costs,
                           max_cycles=max_cycles, once=once)
    options = with_book_settings(PlanOptions(
        venue=opened.venue.gateway.venue, order_type=OrderType(cfg.order_type),
        limits=Limits(cfg.max_order_usd, cfg.max_plan_usd)), loaded.settings)
    handler = structured_logs(cfg.log_file)
    try:
        runner = Runner(opened.venue, loaded.book, loaded.risk, policy, settings, options,
                        WallClock(), hub, book_path=str(cfg.backtest.book_path.resolve()),
                        gamma_fund=loaded.settings.costs.gamma_fund, book_changed=book_changed)
        with signals(runner):
            def preflight() -> None:  # the run lock is held: one book, the webhook, then record
                if opened.venue.executor is not None:  # a loop that trades: one book an account
                    check_one_book(journal_path, opened.venue.gateway.venue, loaded.book.name,
                                   runner.book_path, runner.account)
                check_webhooks(hub, mode, runner.account)  # a refused run never says "started"
                opened.started()

            summary = runner.run(preflight=preflight)
    finally:
        opened.close()
        _drop_handler(handler)
    return _result(summary, journal_path, sdir, mode, alerts_undelivered=hub.undelivered,
                   **({"book_change": runner.book_change} if runner.book_change else {}))


def _drop_handler(handler: logging.Handler) -> None:
    logging.getLogger("executor").removeHandler(handler)
    handler.close()


def _simulate(cfg: RunConfig, journal: Path | None) -> dict[str, object]:
    import tempfile

    from fbr.backtest_config import build_path
    from fbr.run_sim import simulate
    from fbr.run_wiring import alert_hub, check_webhooks

    path = build_path(cfg.backtest)
    hub = alert_hub(cfg)
    with tempfile.TemporaryDirectory(prefix="fbr-sim-") as tmp:
        journal_path = journal or Path(tmp) / "journal.sqlite"
        if journal is not None and journal.exists():
            raise CliError(f"--journal {journal} exists; a simulation starts from an empty "
                           f"journal. Fix: give a new path, or leave --journal out (a temporary "
                           f"one is used)")
        sdir = Path(tmp) / "state"
        sim = simulate(cfg, path, journal_path, sdir, hub,
                       preflight=lambda: check_webhooks(hub, "simulate", "paper"))
        return _result(sim.summary, journal_path if journal else None, None, "simulate",
                       labels=sim.labels, fills=_fills(journal_path, cfg.backtest.loaded.book.name),
                       liquidations=sim.liquidation_doc())


def _fills(journal_path: Path, book_name: str) -> list[dict[str, object]]:
    """The paper fills of a simulation: time (ISO UTC), symbol, contracts (signed), price, fee."""
    import pandas as pd

    from executor.paper import PaperStore

    store = PaperStore(journal_path, book_name)
    try:
        return [{"time": pd.Timestamp(t.time_ms, unit="ms", tz="UTC").isoformat(), "symbol": s,
                 "contracts": t.contracts, "price": t.price, "fee": t.fee}
                for s, t in store.trades()]
    finally:
        store.close()


def _result(summary: RunSummary, journal_path: Path | None, sdir: Path | None, mode: str,
            **extra: object) -> dict[str, object]:
    return {"mode": mode, "run": summary.status, "cycles": summary.cycles,
            "trades": summary.trades, "failures": summary.failures, "alerts": summary.alerts,
            "journal": str(journal_path) if journal_path else None,
            "health_file": str(sdir / "health.json") if sdir else None, **extra}


def _print(result: Mapping[str, object]) -> None:
    lost = result.get("alerts_undelivered")
    out.print(f"fbr run ({result['mode']}): {result['run']} after {result['cycles']} cycles, "
              f"{result['trades']} with trades, {result['failures']} failures, "
              f"{result['alerts']} alerts" + (f" ({lost} not delivered to the webhook: see the "
                                               f"journal's run_alerts)" if lost else ""))
    liq = result.get("liquidations")
    if isinstance(liq, dict) and liq.get("count"):
        n = int(liq["count"])
        out.print(f"LIQUIDATED: {n} liquidation{'s' if n != 1 else ''} of the paper account, "
                  f"penalty {liq['penalty']:,.2f} USD, insurance fund {liq['insurance_fund']:,.2f} "
                  f"USD (first at {liq['events'][0]['time']})")
    labels = result.get("labels")
    for label in labels if isinstance(labels, list) else []:
        out.print(str(label))
    if result.get("journal"):
        out.print(f"journal: {result['journal']}")
    if result.get("health_file"):
        out.print(f"health file: {result['health_file']}")
