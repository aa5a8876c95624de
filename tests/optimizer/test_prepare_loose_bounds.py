"""optimizer.prepare: a bound past LOOSE_BOUND (a million bases) cannot bind and is no bound: the
data and the answer are those of the key unset (a cluster band: the cluster left out). Given to
Clarabel, a 1e13 USD trade limit, cap or funding budget on a book of a few thousand USD was a
solver_error and an 'inaccurate' SCS answer."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fbr.config import load_book_file
from optimizer.prepare import LOOSE_BOUND, no_looser_than, prepare
from optimizer.rebalance import Rebalancer
from optimizer.settings import ClusterBand

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed_example_2.toml"


def test_no_looser_than_by_hand() -> None:
    b = no_looser_than(np.array([0.0, 0.5, LOOSE_BOUND, LOOSE_BOUND * (1 + 1e-12), math.inf]))
    assert b.tolist() == [0.0, 0.5, LOOSE_BOUND, math.inf, math.inf]
    assert float(no_looser_than(-2e9)) == -2e9  # a negative budget is a bound at any size


def _loaded(**constraints: Any) -> Any:
    lb = load_book_file(SEED)
    cs = dataclasses.replace(lb.settings.constraints, **constraints)
    return lb, dataclasses.replace(lb.settings, constraints=cs)


@pytest.mark.parametrize("key", ["trade_limit_usd", "default_cap_usd", "funding_budget_usd",
                                 "max_gross_leverage"])
def test_a_loose_bound_is_the_key_unset(key: str) -> None:
    lb, _ = _loaded()
    V = prepare(lb.book, lb.market, lb.risk, lb.settings).V
    value = 10 * LOOSE_BOUND * (1.0 if key == "max_gross_leverage" else V)
    lb, loose = _loaded(**{key: value})
    _, unset = _loaded(**{key: None})
    d_loose = prepare(lb.book, lb.market, lb.risk, loose)
    d_unset = prepare(lb.book, lb.market, lb.risk, unset)
    assert d_loose.structure == d_unset.structure
    assert np.array_equal(d_loose.caps, d_unset.caps) and d_loose.cap_source == d_unset.cap_source
    assert np.array_equal(d_loose.trade_limits, d_unset.trade_limits)
    assert (d_loose.max_gross, d_loose.funding_budget) == (d_unset.max_gross, d_unset.funding_budget)
    a = Rebalancer().solve(lb.book, lb.market, lb.risk, loose)
    b = Rebalancer().solve(lb.book, lb.market, lb.risk, unset)
    assert a.status == b.status == "optimal"
    assert [t.notional for t in a.trades] == pytest.approx([t.notional for t in b.trades], abs=1e-6)


def test_a_bound_inside_the_rule_stays_a_row() -> None:
    """A trade limit of LOOSE_BOUND bases exactly is kept (weight units: LOOSE_BOUND)."""
    lb, _ = _loaded()
    V = prepare(lb.book, lb.market, lb.risk, lb.settings).V
    lb, s = _loaded(trade_limit_usd=LOOSE_BOUND * V)
    d = prepare(lb.book, lb.market, lb.risk, s)
    assert d.trade_limits == pytest.approx(np.full(len(lb.book.contracts), LOOSE_BOUND), rel=1e-12)


@pytest.mark.parametrize("example", ["ten_assets", "backtest_book"])
def test_a_loose_cluster_band_is_no_cluster(example: str) -> None:
    """A cluster of the book's first two assets with a band of 1e15 was a row 1e15 bases wide:
    PIQP and Clarabel failed on it and SCS answered 'inaccurate' (on the everything-on CLI test
    book the least-violation re-solve then called the book infeasible, 'margin' relaxed by 0.05
    USD). Now the cluster is left out, and the answer is that of no cluster, from the first
    solver."""
    lb = load_book_file(SEED.parent / f"{example}.toml")
    pair = ClusterBand("pair", tuple(lb.book.asset_symbols[:2]), 1e15)
    runs = {}
    for label, clusters in (("loose", (pair,)), ("none", ())):
        cs = dataclasses.replace(lb.settings.constraints, clusters=clusters)
        st = dataclasses.replace(lb.settings, constraints=cs)
        d = prepare(lb.book, lb.market, lb.risk, st)
        assert d.cluster_members == () and d.cluster_names == () and d.cluster_bands.size == 0
        runs[label] = Rebalancer().solve(lb.book, lb.market, lb.risk, st)
    assert runs["loose"].status == runs["none"].status == "optimal"
    assert runs["loose"].solvers_tried == runs["none"].solvers_tried
    assert len(runs["loose"].solvers_tried) == 1
    assert [t.notional for t in runs["loose"].trades] == pytest.approx(
        [t.notional for t in runs["none"].trades], abs=1e-6)


def test_a_cluster_band_inside_the_rule_stays_a_row() -> None:
    lb, _ = _loaded()
    assets = lb.book.asset_symbols[:2]
    band = ClusterBand("pair", tuple(assets), LOOSE_BOUND)
    lb, s = _loaded(clusters=(band,))
    d = prepare(lb.book, lb.market, lb.risk, s)
    assert d.cluster_names == ("pair",) and d.cluster_bands.tolist() == [LOOSE_BOUND]
    assert d.cluster_members == ((0, 1),)
