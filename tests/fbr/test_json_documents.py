"""The JSON documents the CLI and the dashboard read back by key match their TypedDicts.

``Solution.to_dict()`` (optimizer.solution_doc.SolutionDoc), ``OrderPlan.to_dict()``
(executor.plan_doc.OrderPlanDoc), ``StatusReport.to_dict()`` (executor.status.StatusDoc) and
``WhatIfResult.to_dict()`` (scenarios.whatif_result.WhatIfDoc) are built from dataclasses with
``asdict``, so nothing but this test keeps the TypedDicts in step with the fields: every dict in a
real document, nested ones included, has exactly its TypedDict's keys (all required keys, no key
the type does not name).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NotRequired, Required, get_args, get_origin, is_typeddict

import pytest

import executor.plan
import executor.status
import scenarios.whatif_result
from executor.plan_doc import OrderPlanDoc
from executor.status import StatusDoc
from fbr.config_loader import LoadedBook, load_book_file
from fbr.execute_wiring import ExchangeChoice
from fbr.status_cli import StatusJson, status_json, status_report
from optimizer.rebalance import Rebalancer
from optimizer.settings import SpotLegSettings
from optimizer.solution_doc import SolutionDoc
from scenarios.shocks import parse_scenario
from scenarios.whatif import run_whatif
from scenarios.whatif_result import WhatIfDoc

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
#: names the documents' annotations use that their modules import only for type checking
NAMES: dict[str, Any] = {**vars(executor.plan), **vars(executor.status),
                         **vars(scenarios.whatif_result)}


def _mismatches(doc: object, hint: Any, where: str) -> list[str]:
    """Where ``doc`` departs from the type ``hint`` (TypedDict keys, recursively)."""
    if is_typeddict(hint):
        if not isinstance(doc, Mapping):
            return [f"{where}: {type(doc).__name__}, not a dict"]
        hints = typing.get_type_hints(hint, localns=NAMES, include_extras=True)
        # NotRequired read from the hints: with postponed annotations the class's own
        # __required_keys__ cannot see it (Python 3.11)
        optional = {k for k, h in hints.items() if get_origin(h) is NotRequired}
        required = set(hints) - optional
        out = [f"{where}: missing {k!r}" for k in sorted(required - set(doc))]
        out += [f"{where}: {k!r} not in {hint.__name__}" for k in sorted(set(doc) - required - optional)]
        for key in set(doc) & (required | optional):
            out += _mismatches(doc[key], hints[key], f"{where}.{key}")
        return out
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Required, NotRequired):
        return _mismatches(doc, args[0], where)
    if origin in (typing.Union, types.UnionType):
        if doc is None and type(None) in args:
            return []
        inner = [a for a in args if a is not type(None)]
        return _mismatches(doc, inner[0], where) if len(inner) == 1 else []
    if origin in (list, tuple) and isinstance(doc, list | tuple) and args:
        return [m for i, item in enumerate(doc) for m in _mismatches(item, args[0], f"{where}[{i}]")]
    if origin is dict and isinstance(doc, Mapping) and len(args) == 2:
        return [m for k, v in doc.items() for m in _mismatches(v, args[1], f"{where}[{k!r}]")]
    return []


def _loaded(name: str) -> LoadedBook:
    return load_book_file(EXAMPLES / name)


BOOKS = ("seed_example_1.toml", "ten_assets.toml")


class _Inner(typing.TypedDict):
    a: int
    b: NotRequired[int]


class _Outer(typing.TypedDict):
    rows: list[_Inner]


def test_the_checker_sees_a_missing_and_an_extra_key() -> None:
    assert _mismatches({"rows": [{"a": 1}, {"a": 1, "b": 2}]}, _Outer, "d") == []
    assert _mismatches({"rows": [{"b": 2}, {"a": 1, "c": 3}]}, _Outer, "d") == [
        "d.rows[0]: missing 'a'", "d.rows[1]: 'c' not in _Inner"]


@pytest.mark.parametrize("name", BOOKS)
def test_solution_documents_match_solution_doc(name: str) -> None:
    loaded = _loaded(name)
    sol = Rebalancer().solve(loaded.book, loaded.market, loaded.risk, loaded.settings)
    assert _mismatches(sol.to_dict(), SolutionDoc, "solution") == []


@pytest.mark.parametrize("name", BOOKS)
def test_status_and_plan_documents_match_their_types(name: str) -> None:
    report = status_report(_loaded(name), ExchangeChoice.DRY_RUN, None)
    doc = report.to_dict()
    assert doc["plan"]["legs"], "a plan with legs, so the leg type is checked too"
    assert _mismatches(doc, StatusDoc, "status") == []
    assert _mismatches(status_json(doc), StatusJson, "status --json") == []
    assert _mismatches(report.plan.to_dict(), OrderPlanDoc, "plan") == []


@pytest.mark.parametrize("name", BOOKS)
def test_whatif_documents_match_whatif_doc(name: str) -> None:
    loaded = _loaded(name)
    scenario = parse_scenario("test", ["common=-30%", "BTC=-10%"])
    result = run_whatif(loaded.book, loaded.market, loaded.risk, scenario, loaded.settings)
    assert _mismatches(result.to_dict(), WhatIfDoc, "whatif") == []


def _variant(name: str, kind: str) -> LoadedBook:
    """The example book with the spot leg, the priced reserve or the 2-step planner switched on."""
    loaded = load_book_file(EXAMPLES / name)
    st = loaded.settings
    if kind == "spot_leg":
        st = dataclasses.replace(st, spot=SpotLegSettings(enabled=True))
    elif kind == "reserve":
        st = dataclasses.replace(st, costs=dataclasses.replace(st.costs, reserve_cost=True))
    else:
        st = dataclasses.replace(st, horizon=2)
    return dataclasses.replace(loaded, settings=st)


@pytest.mark.parametrize(("kind", "key"), [("spot_leg", "spot_trades"), ("reserve", "reserve"),
                                           ("plan", "plan")])
def test_the_optional_parts_of_a_solution_match_too(kind: str, key: str) -> None:
    """The keys present only when the spot leg, the priced reserve or the planner is on."""
    loaded = _variant("ten_assets.toml", kind)
    doc = Rebalancer().solve(loaded.book, loaded.market, loaded.risk, loaded.settings).to_dict()
    assert key in doc, f"{kind}: the optional key {key!r} is absent, so nothing was checked"
    assert _mismatches(doc, SolutionDoc, "solution") == []
