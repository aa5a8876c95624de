"""``risk_method`` of te_band_futures / optimized is refused where it would be ignored.

fbr.backtest_risk.risk_input reads risk_method only for a trailing estimate: with
``risk_lookback_days`` (on the path's returns), or, without it, when the book's estimated model
would look ahead (T_book after the path's start) and ``backtest.risk_model = "trailing"``. Anywhere
else (a given model, one estimated up to the start, or risk_model = "book") the book's model is used
as it is; risk_method alone used to be accepted and dropped. examples/backtest_book.toml gives its
model explicitly (vols + one correlation), so there T_book is None: the book's model is used.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fbr.backtest_config import BacktestConfig
from fbr.backtest_policies import PolicyParam
from models.errors import ValidationError
from models.trailing_risk import TrailingRisk
from scenarios.market_path import MarketPath

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def cfg_file(tmp_path: Path, policy: str, backtest: str = "") -> Path:
    f = tmp_path / "bt.toml"
    f.write_text(f'book = "{(EXAMPLES / "backtest_book.toml").as_posix()}"\n'
                 '[data]\nsource = "synthetic"\nseed = 12\ndays = 40\nstart = "2024-01-01"\n'
                 f"[[policies]]\n{policy}\n[backtest]\nreport = \"{tmp_path.as_posix()}/r.html\"\n"
                 f"{backtest}")
    return f


def build(f: Path) -> object:
    from fbr.backtest_config import build_path, load_backtest_file
    from fbr.backtest_run import build_policy

    cfg = load_backtest_file(f)
    return build_policy(cfg.policies[0], cfg, build_path(cfg))


@pytest.mark.parametrize("kind", ['kind = "te_band_futures"\nte_band = "1%"', 'kind = "optimized"'])
def test_risk_method_alone_on_a_given_model_is_refused(tmp_path: Path, kind: str) -> None:
    """A given model and no risk_lookback_days: risk_method = "sample" would be ignored (before
    the fix the policy's risk was the book's model object itself); refused naming the entry."""
    f = cfg_file(tmp_path, f'{kind}\nrisk_method = "sample"')
    with pytest.raises(ValidationError) as exc:
        build(f)
    assert exc.value.field == "policies[0].risk_method"
    assert "'sample'" in exc.value.problem and "ignored" in exc.value.problem
    assert exc.value.fix == "add risk_lookback_days = 90, or remove risk_method"


def test_risk_method_with_lookback_is_used(tmp_path: Path) -> None:
    """With risk_lookback_days = 30 the estimate on the path's returns uses risk_method."""
    policy = build(cfg_file(tmp_path, 'kind = "te_band_futures"\nte_band = "1%"\n'
                                      'risk_lookback_days = 30\nrisk_method = "sample"'))
    risk = policy.risk  # type: ignore[attr-defined]
    assert isinstance(risk, TrailingRisk) and risk.method == "sample"


def test_no_risk_method_keeps_the_book_model(tmp_path: Path) -> None:
    """Neither key: the book's model as it is, the given vols (BTC 0.55, ..., XRP 0.85)."""
    policy = build(cfg_file(tmp_path, 'kind = "te_band_futures"\nte_band = "1%"'))
    risk = policy.risk  # type: ignore[attr-defined]
    assert not isinstance(risk, TrailingRisk) and risk.method == "given"
    vols = np.sqrt(np.diag(risk.covariance))
    np.testing.assert_allclose(vols, [0.55, 0.70, 0.95, 0.65, 0.85])


def _lookahead_inputs(tmp_path: Path, mode: str, monkeypatch: pytest.MonkeyPatch
                      ) -> tuple[Mapping[str, PolicyParam], BacktestConfig, MarketPath]:
    """A config (risk_model = ``mode``) whose book model is taken to end after the path's start
    (T_book = the path's last step), with 60 daily closes before the start for the trailing
    estimate; returns (params, cfg, path)."""
    import fbr.backtest_risk as br
    from fbr.backtest_config import build_path, load_backtest_file

    f = cfg_file(tmp_path, 'kind = "optimized"\nrisk_method = "sample"',
                 f'risk_model = "{mode}"\n')
    cfg = load_backtest_file(f)
    path = build_path(cfg)
    t0 = path.spot.index[0]
    idx = pd.date_range(t0 - pd.Timedelta("60D"), path.spot.index[-1], freq="D")
    rng = np.random.default_rng(3)
    closes = pd.DataFrame(100 * np.exp(np.cumsum(rng.normal(0, 0.03, (len(idx), 5)), axis=0)),
                          index=idx, columns=list(cfg.loaded.book.asset_symbols))
    monkeypatch.setattr(br, "risk_lookahead", lambda c, p: br.utc(p.spot.index[-1]))
    monkeypatch.setattr(br, "trailing_closes", lambda c, p: closes)
    return cfg.policies[0].params, cfg, path


def test_risk_method_alone_is_used_by_the_trailing_lookahead_estimate(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """T_book after the start and risk_model = "trailing": the default look-ahead-free estimate
    (365-day lookback) reads risk_method, so it is accepted without risk_lookback_days."""
    from fbr.backtest_risk import risk_input

    params, cfg, path = _lookahead_inputs(tmp_path, "trailing", monkeypatch)
    risk = risk_input(params, cfg, path)
    assert isinstance(risk, TrailingRisk) and risk.method == "sample"


def test_risk_method_alone_with_book_mode_is_refused(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """T_book after the start but risk_model = "book": the book's model as it is, risk_method
    ignored: refused, the problem naming backtest.risk_model."""
    from fbr.backtest_risk import risk_input

    params, cfg, path = _lookahead_inputs(tmp_path, "book", monkeypatch)
    with pytest.raises(ValidationError) as exc:
        risk_input(params, cfg, path)
    assert exc.value.field == "policy.risk_method"
    assert 'risk_model = "book"' in exc.value.problem
