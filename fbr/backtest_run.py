"""Running a backtest file: a fresh policy per entry, the replay options, every policy over one path.

``build_policy(spec, cfg, path)`` makes the policy object of one [[policies]] entry
(``fbr.backtest_policies``); ``backtest_options(cfg)`` the keyword options of
``scenarios.replay.run_backtest`` from the file's [backtest] section; ``run_all`` replays every
policy over the same market path (``fbr.backtest_config.build_path``), in file order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypedDict

from fbr.backtest_config import BacktestConfig
from fbr.backtest_policies import PolicySpec
from fbr.config_values import join
from models.errors import ValidationError
from optimizer.policies import Policy
from optimizer.settings import SpotLegSettings

if TYPE_CHECKING:
    from scenarios.backtest_result import BacktestResult
    from scenarios.collateral import CollateralPolicy
    from scenarios.market_path import MarketPath


class BacktestOptions(TypedDict, total=False):
    """Keyword options of scenarios.replay.run_backtest set by a backtest file."""

    liquidation_penalty: float
    spot_fee: float | None
    pledged: bool
    collateral: CollateralPolicy
    tax: SpotLegSettings


#: The policy kinds that trade spot to the target weights (``optimizer.policies.check_spot_targets``)
SPOT_KINDS = ("calendar_spot", "band_spot")


def build_policy(spec: PolicySpec, cfg: BacktestConfig, path: MarketPath) -> Policy:
    """A fresh policy object for ``spec`` (policies with state must not be shared between runs)."""
    try:
        policy = _make_policy(spec, cfg, path)
    except ValidationError as exc:
        key = exc.field.removeprefix("policy").lstrip(".")
        raise ValidationError(join(spec.where, key) if key else spec.where, exc.problem,
                              exc.fix) from exc
    policy.name = spec.name
    return policy


def _make_policy(spec: PolicySpec, cfg: BacktestConfig, path: MarketPath) -> Policy:
    """The policy class of ``spec.kind`` with the entry's parameters."""
    from fbr.backtest_risk import optimized_inputs
    from optimizer.baselines import DcaFutures, VolScaledBandFutures
    from optimizer.edge_bands import edge_band_policy
    from optimizer.policies import (
        BandSpotRebalance,
        CalendarSpotRebalance,
        NaiveFutures,
        NoRebalance,
        OptimizedFutures,
    )

    # keyword arguments as parse_policy checked them, each of the type its parameter takes
    kw: dict[str, Any] = dict(spec.params)
    if spec.kind == "no_rebalance":
        return NoRebalance()
    if spec.kind == "calendar_spot":
        return CalendarSpotRebalance(period=kw["period"])
    if spec.kind == "band_spot":
        return BandSpotRebalance(band=kw["band"])
    if spec.kind == "naive_futures":
        return NaiveFutures(period=kw.get("period"), band=kw.get("band"))
    if spec.kind == "vol_band_futures":
        return VolScaledBandFutures(**kw)
    if spec.kind == "dca_futures":
        return DcaFutures(**kw)
    if spec.kind == "edge_band_futures":
        return edge_band_policy(**kw)
    if spec.kind == "te_band_futures":
        from fbr.backtest_risk import risk_input
        from optimizer.te_band import TrackingErrorBandFutures

        return TrackingErrorBandFutures(risk_input(spec.params, cfg, path), float(kw["te_band"]),
                                        float(kw.get("inner", 1.0)))
    return OptimizedFutures(*optimized_inputs(spec.params, cfg, path))


def backtest_options(cfg: BacktestConfig) -> BacktestOptions:
    """Keyword options for scenarios.replay.run_backtest (``collateral`` only when set, otherwise
    the backtester's default applies; ``pledged=True`` only with ``backtest.pledged = true``;
    ``tax`` when the book has a [tax] section: every policy's replay then pays tax on its realised
    gains, spot and futures alike, so the policies compare on the same rules)."""
    from scenarios.collateral import CollateralPolicy

    opts = BacktestOptions(liquidation_penalty=cfg.liquidation_penalty, spot_fee=cfg.spot_fee)
    spot = cfg.loaded.settings.spot
    if spot.rates is not None:
        opts["tax"] = spot
    if cfg.pledged:
        opts["pledged"] = True
    if cfg.collateral is not None:
        try:
            opts["collateral"] = CollateralPolicy(**cfg.collateral)
        except ValidationError as exc:
            raise ValidationError(join("backtest", exc.field), exc.problem, exc.fix) from exc
    return opts


def _checked(spec: PolicySpec, cfg: BacktestConfig, path: MarketPath) -> Policy:
    """``build_policy`` (which refuses a parameter the run would ignore), and for a spot policy
    the book's targets (``optimizer.policies.check_spot_targets``), each named with its policy:
    every policy of the file is checked before the first one runs."""
    from optimizer.policies import check_spot_targets

    try:
        if spec.kind in SPOT_KINDS:
            check_spot_targets(cfg.loaded.book)
        return build_policy(spec, cfg, path)
    except ValidationError as exc:
        raise ValidationError(exc.field, f"{exc.problem} (policy {spec.name!r})", exc.fix) from exc


def check_lots_dated(cfg: BacktestConfig, path: MarketPath) -> None:
    """Refuse, before any policy runs, a book whose tax lots (``[tax]`` with ``[[lots]]``: every
    policy's replay books its sales against them) include one acquired after the path's first
    step: the first sale would meet a lot from the future."""
    spot = cfg.loaded.settings.spot
    if spot.rates is None or not spot.lots or not len(path.spot.index):
        return
    start = path.spot.index[0]
    late = sorted((lot.acquired, asset) for asset, lots in spot.lots.items() for lot in lots
                  if lot.acquired > start)
    if late:
        when, asset = late[-1]
        raise ValidationError(
            "lots", f"hold {len(late)} lot(s) acquired after the backtest's first step "
            f"{start:%Y-%m-%d %H:%M} UTC (the latest: {asset} on {when:%Y-%m-%d})",
            "start the backtest ([data] start) on or after the last acquisition, or date the "
            "book's lots on or before its start")


def run_all(cfg: BacktestConfig, path: MarketPath,
            on_start: Callable[[str, int], Callable[[], None] | None] | None = None
            ) -> dict[str, BacktestResult]:
    """Run every policy over ``path``: {name: BacktestResult}, in file order.

    ``on_start(name, n_steps)`` may return a callback called once per step (a progress bar).
    """
    from scenarios.replay import run_backtest

    opts = backtest_options(cfg)
    n = len(path.spot.index)
    results: dict[str, BacktestResult] = {}
    check_lots_dated(cfg, path)
    built = [(spec, _checked(spec, cfg, path)) for spec in cfg.policies]  # refusals before any run
    for spec, policy in built:
        tick = on_start(spec.name, n) if on_start is not None else None
        try:
            results[spec.name] = run_backtest(cfg.loaded.book, path, policy, on_step=tick, **opts)
        except ValidationError as exc:
            raise ValidationError(exc.field, f"{exc.problem} (policy {spec.name!r})", exc.fix) from exc
    return results
