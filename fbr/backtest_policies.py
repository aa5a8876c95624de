"""The [[policies]] entries of a backtest (or Monte Carlo) file: kinds, parameters, validation.

:func:`parse_policy` turns one entry into a :class:`PolicySpec` (kind, display name, parsed
parameters); the policy object itself is built per run by ``fbr.backtest_run.build_policy``.

Policy parameters (fractions accept "5%" / "50bp"; a period is a number and a unit, D, h, min or
W, such as "7D", "8h" or "90min", at least one minute: "30" (nanoseconds to pandas) and "1m"/"1M"
are refused, see ``fbr.config_values.period``):

- ``no_rebalance``: none
- ``calendar_spot``: period (default "30D")
- ``band_spot``: band (default 0.05)
- ``naive_futures``: period and/or band (at least one)
- ``vol_band_futures``: base_band (required), ref_vol, window, min_band, max_band
- ``dca_futures``: steps (required), period and/or band (at least one)
- ``edge_band_futures``: band (required; a weight), inner (in [0, 1], default 1), scaling
  ("uniform", default, or "vol"), window (trailing returns of the vol scaling, >= 2, default 30;
  only with scaling = "vol"). Per asset, when |e_i - w*_i| > b_i, futures trade the asset's
  deviation to sign(e_i - w*_i) inner b_i (1: the band's edge, 0: the target); b_i = band
  (uniform) or band sigma_i / mean_k sigma_k (vol: trailing realised vols of the path's spot
  prices). See ``optimizer.edge_bands``.
- ``te_band_futures``: te_band (required; a tracking error, a fraction a year, not a weight: so
  a ``[montecarlo.grid] band`` does not reach it), inner (in [0, 1], default 1), risk_lookback_days,
  risk_method (the risk model, as ``optimized``, the same rule for risk_method). When the book's
  tracking error sqrt(d' Sigma d) exceeds te_band, futures scale every hedgeable asset's
  deviation d_i by inner x te_band / TE (1: to the band's edge, 0: to target). See
  ``optimizer.te_band``.
- ``optimized``: gamma_trade, gamma_fund, cost_to_go, cost_to_go_power (override the book's
  [costs]), horizon (overrides [solver] horizon: the multi-period planner), risk_lookback_days,
  risk_method. So one file compares the single-period policy, the cost-to-go and the planner.
  Without ``risk_lookback_days`` the optimiser uses the book file's risk model
  throughout (simple, but the book's model may have been estimated on data after the path's start).
  With it, the model is re-estimated with models.risk.estimate_risk every
  ``models.trailing_risk.RISK_REESTIMATE_DAYS`` days from the path's spot returns up to the current
  step only (no look-ahead), over the trailing ``risk_lookback_days``; until
  ``models.trailing_risk.MIN_RISK_ROWS`` returns exist the book's model is used. The book's basis
  covariance (if any) is kept. See ``fbr.backtest_risk`` for the default look-ahead-free estimate.
  ``risk_method`` (the estimator) is read only by such an estimate: given without
  ``risk_lookback_days`` where the book's model is used as it is (a given model, one estimated up to
  the path's start, or ``backtest.risk_model = "book"``), it is refused when the policy is built
  (``fbr.backtest_risk.check_risk_method``: "add risk_lookback_days = 90, or remove risk_method").

The spot policies (``calendar_spot``, ``band_spot``) trade spot to w*_i V: on a book with
``targets_base = "invested"`` (V = the spot value) whose targets sum below 1 each trade would sell
the remainder of the spot into the wallet, so the policy refuses such a book at its first call
(``targets``; ``optimizer.policies.check_spot_targets``): use ``targets_base = "nav"`` there.

Every mistake raises :class:`models.errors.ValidationError` naming the field (``policies[2].band``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from fbr.config_values import check_keys, fraction, join, period, string, weight, whole
from models.errors import ValidationError
from models.trailing_risk import MIN_RISK_ROWS

POLICY_KINDS = ("no_rebalance", "calendar_spot", "band_spot", "naive_futures", "vol_band_futures",
                "dca_futures", "edge_band_futures", "te_band_futures", "optimized")
#: Parameters of each policy kind (besides ``kind`` and ``name``).
POLICY_PARAMS: dict[str, tuple[str, ...]] = {
    "no_rebalance": (),
    "calendar_spot": ("period",),
    "band_spot": ("band",),
    "naive_futures": ("period", "band"),
    "vol_band_futures": ("base_band", "ref_vol", "window", "min_band", "max_band"),
    "dca_futures": ("steps", "period", "band"),
    "edge_band_futures": ("band", "inner", "scaling", "window"),
    "te_band_futures": ("te_band", "inner", "risk_lookback_days", "risk_method"),
    "optimized": ("gamma_trade", "gamma_fund", "risk_lookback_days", "risk_method", "horizon",
                  "cost_to_go", "cost_to_go_power"),
}
#: One parsed policy parameter: a fraction or weight, a whole number, or a text (period, method).
PolicyParam = float | int | str
#: The band-like fractions of an entry (all > 0 except ``min_band``).
BAND_KEYS = ("band", "base_band", "min_band", "max_band", "te_band")


@dataclass(frozen=True)
class PolicySpec:
    """One [[policies]] entry: its kind, display name and parsed parameters."""

    kind: str
    name: str
    params: Mapping[str, PolicyParam] = field(default_factory=dict)
    where: str = "policies"


def parse_policy(row: Mapping[str, object], where: str) -> PolicySpec:
    """One [[policies]] entry, validated (the policy object itself is built per run)."""
    kind = _kind(row, where)
    check_keys(row, ("kind", "name", *POLICY_PARAMS[kind]), where)

    def at(key: str) -> str:
        return join(where, key)

    params: dict[str, PolicyParam] = {}
    if "period" in row:
        params["period"] = period(row["period"], at("period"))
    for key in BAND_KEYS:
        if key in row:
            params[key] = fraction(row[key], at(key), positive=key != "min_band")
    if kind == "calendar_spot":
        params.setdefault("period", "30D")
    elif kind == "band_spot":
        params.setdefault("band", 0.05)
    elif kind in ("naive_futures", "dca_futures") and "period" not in params and "band" not in params:
        raise ValidationError(where, f"({kind}) has neither a period nor a band",
                              'give period = "7D" and/or band = 0.05')
    elif kind == "vol_band_futures":
        params.update(_vol_band_params(row, params, at))
    if kind == "edge_band_futures":
        params.update(_edge_params(row, params, at))
    if kind == "te_band_futures":
        params.update(_te_band_params(row, params, where))
    if kind == "dca_futures":
        if "steps" not in row:
            raise ValidationError(at("steps"), "is missing", "give steps = 3 (a whole number >= 1)")
        params["steps"] = whole(row["steps"], at("steps"), 1)
    if kind == "optimized":
        params.update(_optimized_params(row, where))
    name = string(row["name"], at("name")) if "name" in row else _default_name(kind, params)
    return PolicySpec(kind=kind, name=name, params=params, where=where)


def _kind(row: Mapping[str, object], where: str) -> str:
    """The entry's ``kind``: present and one of ``POLICY_KINDS``."""
    if "kind" not in row:
        raise ValidationError(join(where, "kind"), "is missing",
                              f"give kind = one of {', '.join(POLICY_KINDS)}")
    kind = row["kind"]
    if not isinstance(kind, str) or kind not in POLICY_KINDS:
        raise ValidationError(join(where, "kind"), f"is {kind!r}, not a known policy kind",
                              f"use one of {', '.join(POLICY_KINDS)}")
    return kind


def _vol_band_params(row: Mapping[str, object], params: Mapping[str, PolicyParam],
                     at: Callable[[str], str]) -> dict[str, PolicyParam]:
    """ref_vol and window of a ``vol_band_futures`` entry (bands already parsed)."""
    if "base_band" not in params:
        raise ValidationError(at("base_band"), "is missing", "give base_band = 0.05 (a weight)")
    out: dict[str, PolicyParam] = {}
    if "ref_vol" in row:
        out["ref_vol"] = fraction(row["ref_vol"], at("ref_vol"), upper=10.0, positive=True)
    if "window" in row:
        out["window"] = whole(row["window"], at("window"), 2)
    lo, hi = params.get("min_band"), params.get("max_band")
    if isinstance(lo, float) and isinstance(hi, float) and lo > hi:
        raise ValidationError(at("min_band"), f"is {lo} > max_band {hi}", "give min_band <= max_band")
    return out


def _edge_params(row: Mapping[str, object], params: Mapping[str, PolicyParam],
                 at: Callable[[str], str]) -> dict[str, PolicyParam]:
    """inner, scaling and window of an ``edge_band_futures`` entry (band already parsed)."""
    from optimizer.edge_bands import EdgeScaling

    if "band" not in params:
        raise ValidationError(at("band"), "is missing", "give band = 0.05 (a weight)")
    out: dict[str, PolicyParam] = {}
    if "inner" in row:
        out["inner"] = fraction(row["inner"], at("inner"))
    scaling = row.get("scaling", EdgeScaling.UNIFORM.value)
    options = [s.value for s in EdgeScaling]
    if not isinstance(scaling, str) or scaling.lower() not in options:
        raise ValidationError(at("scaling"), f"is {scaling!r}", f"use one of {', '.join(map(repr, options))}")
    if "scaling" in row:
        out["scaling"] = scaling.lower()
    if "window" in row:
        if scaling.lower() != EdgeScaling.VOL:
            raise ValidationError(at("window"), "is set, but scaling is not 'vol'",
                                  'remove window, or set scaling = "vol"')
        out["window"] = whole(row["window"], at("window"), 2)
    return out


def _te_band_params(row: Mapping[str, object], params: Mapping[str, PolicyParam],
                    where: str) -> dict[str, PolicyParam]:
    """inner and the risk model's keys of a ``te_band_futures`` entry (te_band already parsed)."""
    def at(key: str) -> str:
        return join(where, key)

    if "te_band" not in params:
        raise ValidationError(at("te_band"), "is missing",
                              'give te_band = "1%" (a tracking error, a fraction a year)')
    out = {k: v for k, v in _optimized_params(row, where).items() if k.startswith("risk_")}
    if "inner" in row:
        out["inner"] = fraction(row["inner"], at("inner"))
    return out


def _optimized_params(row: Mapping[str, object], where: str) -> dict[str, PolicyParam]:
    """gamma_trade, gamma_fund, cost_to_go, cost_to_go_power, horizon, risk_lookback_days and
    risk_method of an ``optimized`` entry (risk_method alone is checked against the book and path
    when the policy is built: ``fbr.backtest_risk.check_risk_method``)."""
    from fbr.config_settings import cost_to_go_keys
    from models.risk import RiskMethod
    from optimizer.settings import check_horizon

    def at(key: str) -> str:
        return join(where, key)

    out: dict[str, PolicyParam] = dict(cost_to_go_keys(row, where, pair=False))
    if "horizon" in row:
        out["horizon"] = check_horizon(row["horizon"], at("horizon"))
    for key in ("gamma_trade", "gamma_fund"):
        if key in row:
            out[key] = weight(row[key], at(key))
    if "risk_lookback_days" in row:
        out["risk_lookback_days"] = whole(row["risk_lookback_days"], at("risk_lookback_days"),
                                          MIN_RISK_ROWS)
    if "risk_method" in row:
        method = row["risk_method"]
        options = [m.value for m in RiskMethod]
        if not isinstance(method, str) or method.lower() not in options:
            raise ValidationError(at("risk_method"), f"is {method!r}",
                                  f"use one of {', '.join(map(repr, options))}")
        out["risk_method"] = method.lower()
    return out


def _default_name(kind: str, params: Mapping[str, PolicyParam]) -> str:
    """``kind key=value ...`` from the entry's main parameters (when it has no ``name``)."""
    parts = [kind]
    for key in ("period", "band", "base_band", "te_band", "steps", "risk_lookback_days", "scaling",
                "inner", "horizon", "cost_to_go"):
        if key in params:
            v = params[key]
            parts.append(f"{key}={v:g}" if isinstance(v, float) else f"{key}={v}")
    return " ".join(parts)
