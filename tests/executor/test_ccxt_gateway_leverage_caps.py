"""Position caps at the account's leverage: Binance refuses an order that takes a position past
the largest notionalCap of the leverage brackets whose initialLeverage allows the symbol's
leverage (-2027, "Exceeded the maximum allowable position at current leverage"). The emulator's
SOLUSDT brackets allow 25x up to 1,000,000 USD, so at 20x a SOL position is capped at 1,000,000.

The optimiser reads the brackets through real ccxt and keeps the hedge under the cap (its margin
rows carry it), so the plan goes through; with those rows off the order plan stops at the cap and
lists the rest (executor.plan_parts.capped_target); a plan made without the brackets is refused
by the exchange and nothing fills."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
from binance_emulator import BinanceEmulator
from exec_helpers import SEED_BOOK, solution_with

from executor.base import Outcome
from executor.ccxt_gateway import CcxtGateway
from executor.journal import Journal
from executor.live import JournaledExecutor, PlanBasis, RetryPolicy
from executor.plan import PlanOptions, plan_orders
from executor.safety import Limits
from executor.workflow import prepare_plan
from fbr.config import load_book_file
from fbr.config_loader import LoadedBook
from models.instruments import MarginTiers

CAP_USD = 1_000_000.0  # SOLUSDT at 20x: brackets (50k, 75x) and (1M, 25x) allow it
NO_LIMITS = PlanOptions(limits=Limits(max_order_usd=math.inf, max_plan_usd=math.inf))

#: the seed book at 9,000,000 USD invested, none of it in SOL (the naive hedge: 1,800,000 USD long
#: SOL-PERP at the exchange's marks), 20x, a 5,000,000 USD wallet, the margin rows on (they carry
#: the brackets' cap)
BOOK = (SEED_BOOK.read_text().replace("cash = 3000.0", "cash = 5000000.0")
        .replace("BTC = 0.1\n", "BTC = 90.0\n").replace("ETH = 1.0\n", "ETH = 1200.0\n")
        .replace("SOL = 10.0\n", "SOL = 0.0\n").replace("leverage = 10.0", "leverage = 20.0")
        .replace("margin = false", "margin = true"))


def _setup(emu: BinanceEmulator, tmp_path: Path) -> tuple[CcxtGateway, LoadedBook]:
    (tmp_path / "book.toml").write_text(BOOK)
    return CcxtGateway(emu.exchange(timeout=400), base_delay_s=0.0), load_book_file(
        tmp_path / "book.toml")


def test_the_optimiser_keeps_the_hedge_under_the_cap_and_the_exchange_takes_the_plan(
        tmp_path: Path) -> None:
    with BinanceEmulator(balance_usdt=5_000_000.0) as emu:
        gw, loaded = _setup(emu, tmp_path)
        assert gw.instruments(loaded.book)["SOL-PERP"].contract.max_notional_usd == CAP_USD
        prep = prepare_plan(gw, loaded.book, loaded.market, loaded.risk, loaded.settings,
                            NO_LIMITS)
        sol = prep.plan.reachable["SOL-PERP"] * emu.marks["SOLUSDT"]
        assert CAP_USD - 150.0 <= sol <= CAP_USD  # binding: one lot (1 SOL) below it at most
        ex = JournaledExecutor(gw, Journal(tmp_path / "j.sqlite"),
                               PlanBasis(prep.book, prep.market, prep.instruments, loaded.risk),
                               retry=RetryPolicy(base_delay_s=0.0))
        report = ex.execute(prep.plan)
        assert report.outcome == Outcome.COMPLETE
        assert emu.positions["SOLUSDT"] == prep.plan.reachable["SOL-PERP"]
        assert emu.positions["SOLUSDT"] * emu.marks["SOLUSDT"] <= CAP_USD


def test_with_the_margin_rows_off_the_plan_stops_at_the_cap_and_says_so(tmp_path: Path) -> None:
    """The optimiser without its margin rows does not see the cap and asks for the 1,800,000 USD
    hedge; the plan sends SOL up to the cap, lists the rest with the reason and the tracking
    error it leaves, and the exchange takes every order."""
    with BinanceEmulator(balance_usdt=5_000_000.0) as emu:
        (tmp_path / "book.toml").write_text(BOOK.replace("margin = true", "margin = false"))
        gw = CcxtGateway(emu.exchange(timeout=400), base_delay_s=0.0)
        loaded = load_book_file(tmp_path / "book.toml")
        prep = prepare_plan(gw, loaded.book, loaded.market, loaded.risk, loaded.settings,
                            NO_LIMITS)
        mark = emu.marks["SOLUSDT"]
        assert prep.solution.trade_vector()["SOL-PERP"] > 1.5 * CAP_USD  # no cap in the solve
        sol = prep.plan.reachable["SOL-PERP"] * mark
        assert CAP_USD - mark <= sol <= CAP_USD
        (excess,) = prep.plan.dropped
        assert excess.symbol == "SOL-PERP" and excess.notional > 0.5 * CAP_USD
        assert excess.reason.startswith("past the exchange's position cap at 20x leverage")
        assert excess.tracking_error_left is not None and excess.tracking_error_left > 0.0
        ex = JournaledExecutor(gw, Journal(tmp_path / "j.sqlite"),
                               PlanBasis(prep.book, prep.market, prep.instruments, loaded.risk),
                               retry=RetryPolicy(base_delay_s=0.0))
        report = ex.execute(prep.plan)
        assert report.outcome == Outcome.COMPLETE
        assert emu.positions["SOLUSDT"] == prep.plan.reachable["SOL-PERP"]


def test_a_plan_made_without_the_brackets_is_refused_past_the_cap_and_nothing_fills(
        tmp_path: Path) -> None:
    """Instruments that do not carry the exchange's brackets (the book's own, flat tiers) plan
    past the cap; the exchange refuses (-2027), nothing fills, the run ends incomplete."""
    with BinanceEmulator(balance_usdt=5_000_000.0) as emu:
        gw, loaded = _setup(emu, tmp_path)
        inst = gw.instruments(loaded.book)
        gw.prepare(inst)  # the account's leverage set to the book's 20x
        blind = {s: replace(i, contract=replace(i.contract, tiers=MarginTiers.flat()))
                 for s, i in inst.items()}
        sol = solution_with({"BTC-PERP": 0.0, "ETH-PERP": 0.0, "SOL-PERP": 1_500_000.0})
        plan = plan_orders(sol, loaded.book, loaded.market, blind, NO_LIMITS, risk=loaded.risk)
        assert plan.dropped == ()
        ex = JournaledExecutor(gw, Journal(tmp_path / "j.sqlite"),
                               PlanBasis(loaded.book, loaded.market, inst, loaded.risk),
                               retry=RetryPolicy(base_delay_s=0.0))
        report = ex.execute(plan)
        assert report.outcome == Outcome.INCOMPLETE and emu.positions["SOLUSDT"] == 0.0
        assert any("-2027" in m or "maximum allowable position" in m for m in report.messages), \
            report.messages
        assert len(emu.accepted_orders()) == 0
        assert emu.leverage["SOLUSDT"] == pytest.approx(20)
