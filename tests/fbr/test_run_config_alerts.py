"""``[alerts]`` bounds in the run file: ``retries`` is a whole number from 0 to 5 and ``timeout_s``
a number of seconds > 0 and at most 60; anything else gets one message naming the field and the fix
(retries = 30 used to be accepted: 2^30 - 1 s of backoff inside one alert)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from fbr.run_config import AlertSpec, parse_run
from models.errors import ValidationError

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "run_paper.toml"
HOOK = "https://hooks.example.com/fbr"


def _alerts(**alerts: object) -> AlertSpec:
    data = tomllib.loads(EXAMPLE.read_text())
    data["alerts"] = {"webhook": HOOK, **alerts}
    return parse_run(data, source=EXAMPLE).alerts


def test_defaults() -> None:
    spec = _alerts()
    assert (spec.retries, spec.timeout_s) == (2, 5.0)


@pytest.mark.parametrize("retries", [0, 1, 5])
def test_retries_in_range_are_kept(retries: int) -> None:
    assert _alerts(retries=retries).retries == retries


@pytest.mark.parametrize("retries", [6, 30, 10**9])
def test_too_many_retries_are_refused_naming_the_field(retries: int) -> None:
    with pytest.raises(ValidationError, match=r"^alerts\.retries: is \d+, more than 5") as err:
        _alerts(retries=retries)
    assert err.value.field == "alerts.retries"
    assert "give a whole number from 0 to 5" in err.value.fix


@pytest.mark.parametrize("retries", [-1, 1.5, "2", True])
def test_retries_that_are_not_whole_numbers_are_refused(retries: object) -> None:
    with pytest.raises(ValidationError, match=r"^alerts\.retries: ") as err:
        _alerts(retries=retries)
    assert err.value.field == "alerts.retries"


@pytest.mark.parametrize("timeout", [0.5, 1, 30.0, 60])
def test_timeouts_in_range_are_kept(timeout: float) -> None:
    assert _alerts(timeout_s=timeout).timeout_s == timeout


@pytest.mark.parametrize("timeout", [60.5, 3600, 1e9])
def test_too_long_timeouts_are_refused_naming_the_field(timeout: float) -> None:
    with pytest.raises(ValidationError, match=r"^alerts\.timeout_s: is .* s, more than 60 s") as err:
        _alerts(timeout_s=timeout)
    assert err.value.field == "alerts.timeout_s"
    assert "at most 60" in err.value.fix


@pytest.mark.parametrize("timeout", [0, -1.0, float("inf"), float("nan"), "5s"])
def test_timeouts_not_positive_finite_are_refused(timeout: object) -> None:
    with pytest.raises(ValidationError, match=r"^alerts\.timeout_s: ") as err:
        _alerts(timeout_s=timeout)
    assert err.value.field == "alerts.timeout_s"
