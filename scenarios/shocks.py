"""Shocks and scenarios: what a what-if changes, written as ``KEY=VALUE`` strings.

A scenario is a named set of shocks. Each shock is one ``KEY=VALUE`` string (the same grammar on the
command line, ``fbr whatif --shock``, and in scenario files, ``shocks = [...]``):

============================  =================================================================
``BTC=-30%``                  price move of one asset: a simple return r_i > -100% applied to its
                              spot and to the mark of every contract on it (basis kept)
``common=-20%``               the common crypto move: the return of every asset not named by its
                              own price shock (as ``common`` in ``[[constraints.stress]]``)
``funding=+0.1%``             funding spike, added to every perpetual's rate per interval
``funding.ETH=+0.1%``         ... to the perpetuals on asset ETH; ``funding.ETH-PERP=`` one contract
``funding=+0.3%/8h``          a funding spike stated per duration p (``/8h``, ``/1d``): a contract
                              settling every h_j hours gets df x h_j / p per settlement (+0.15% per
                              settlement of a 4 h one), so every contract pays df per p hours
``basis=-5%``                 basis shock: every mark moves by (1 + b) on top of its spot move,
                              mark' = mark (1 + r_i) (1 + b); ``basis.BTC`` / ``basis.BTC-PERP``
``vol=x1.5``                  volatility multiplier of every asset (``vol.SOL=x2``: one asset)
``corr=0.9``                  every pairwise correlation moved to 0.9; ``corr=0.9@50%`` moves half
                              way: C' = (1 - lam) C + lam (rho 11' + (1 - rho) I), PSD for rho in [0, 1]
``spread=x3``                 half-spread multiplier (contracts and spot); ``spread.BTC-PERP=x3``
``liquidity=x0.5``            ADV multiplier (less volume: more impact); ``liquidity.BTC-PERP=x0.5``
``horizon=21``                funding settlements the scenario lasts (``horizon=7d``, ``horizon=8h``:
                              a duration, settlements = floor(hours / funding interval) per contract)
============================  =================================================================

Values: a return or rate is a fraction (``-0.3``), a percentage (``-30%``) or basis points
(``5bp``), sign optional; a multiplier is ``x1.5``, ``1.5x`` or ``1.5`` (> 0, at most x100); a
duration is a number and a unit, ``s``, ``min`` (or ``m``), ``h``, ``D`` (or ``d``) or ``W`` (or
``w``) (models.durations: as the run file's). Keys are case
sensitive for symbols; the kind words (``common``, ``funding`` ...) are lower case. A target named
twice is an error. Symbols are checked against a book by ``scenarios.applied_shocks`` (unknown asset or
contract: a clear error).

Funding units: ``funding=+x%`` is a rate per settlement, whatever the contract's interval (a 1 h
contract gets +x% at each of its 24 settlements a day, an 8 h one at each of its 3);
``funding=+x%/p`` is a rate per p hours, df_j = x h_j / p per settlement of contract j (interval
h_j hours), so over a duration T (hours) every contract pays x T / p of its notional: +0.3%/8h for
a week (``horizon=7d``) is 21 x 0.3% = 6.3% of notional whether it settles every 8 h (21 x 0.3%),
4 h (42 x 0.15%) or 1 h (168 x 0.0375%).

Horizon: a scenario lasts ``horizon`` funding settlements; without ``horizon`` it lasts one settlement
when it has a funding shock and none otherwise (an instantaneous price shock pays no funding).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from models.durations import UNITS_HINT, duration_seconds
from models.errors import ValidationError

GRAMMAR_HINT = ("write KEY=VALUE, e.g. BTC=-30%, common=-20%, funding.ETH=+0.1% (or +0.3%/8h), "
                "basis.BTC-PERP=-5%, vol=x1.5, corr=0.9, spread=x3, liquidity=x0.5, horizon=21 or "
                "horizon=7d")


class ShockKind(StrEnum):
    """What a shock changes (the key word before ``=`` or ``.``; a bare symbol is a price move)."""

    PRICE = "price"
    COMMON = "common"
    FUNDING = "funding"
    BASIS = "basis"
    VOL = "vol"
    CORR = "corr"
    SPREAD = "spread"
    LIQUIDITY = "liquidity"
    HORIZON = "horizon"


#: Kinds that take a ``.SYMBOL`` target (the others are global).
TARGETED = frozenset({ShockKind.FUNDING, ShockKind.BASIS, ShockKind.VOL, ShockKind.SPREAD,
                      ShockKind.LIQUIDITY})
#: Kinds whose value is a multiplier.
MULTIPLIERS = frozenset({ShockKind.VOL, ShockKind.SPREAD, ShockKind.LIQUIDITY})
#: The largest vol / spread / liquidity multiplier: x100 vol is a 5,500%/yr BTC, far past any
#: stress, and beyond it the shocked covariance soon overflows (vol=x1e160: inf, no eigenvalues).
MAX_MULTIPLIER = 100.0
#: Kinds whose value is a simple return (must stay above -100%).
RETURNS = frozenset({ShockKind.PRICE, ShockKind.COMMON, ShockKind.BASIS})


@dataclass(frozen=True)
class Shock:
    """One shock: ``kind``, an optional ``target`` symbol (asset or contract), ``value``.

    Units: PRICE/COMMON/BASIS a simple return (fraction, > -1); FUNDING an additive rate per funding
    interval (fraction) or, when ``per_hours`` p is set, per p hours (``funding=+0.3%/8h``: a
    contract settling every h hours gets value x h / p per settlement); VOL/SPREAD/LIQUIDITY a
    multiplier (> 0); CORR the target correlation rho in [0, 1] with ``weight`` lam in (0, 1] (how
    far toward rho); HORIZON a number of settlements (``value``) or, when ``hours`` is set, a
    duration in hours.
    """

    kind: ShockKind
    target: str | None
    value: float
    weight: float = 1.0
    hours: float | None = None
    text: str = ""
    per_hours: float | None = None

    @property
    def key(self) -> str:
        """The shock's key (``BTC``, ``funding.ETH``, ``vol``): two shocks on one key conflict."""
        if self.kind == ShockKind.PRICE:
            return str(self.target)
        return self.kind.value if self.target is None else f"{self.kind.value}.{self.target}"


@dataclass(frozen=True)
class Scenario:
    """A named set of shocks (see the module docstring). ``source`` says where it came from
    (a file, the library, the data, the command line) and ``description`` what it means.
    ``strict``: a shock naming a symbol the book lacks is an error (True) or is skipped (False: a
    library scenario that moves assets some books do not hold)."""

    name: str
    shocks: tuple[Shock, ...]
    description: str = ""
    source: str = ""
    strict: bool = True

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for s in self.shocks:
            if s.key in seen:
                raise ValidationError(f"scenario {self.name!r}: {s.key}", "is shocked twice",
                                      "give each asset, contract or setting one shock")
            seen.add(s.key)

    def of_kind(self, kind: ShockKind) -> list[Shock]:
        """The shocks of one kind, in order."""
        return [s for s in self.shocks if s.kind == kind]

    @property
    def shock_texts(self) -> list[str]:
        """The shocks as ``KEY=VALUE`` strings (parseable again)."""
        return [s.text or format_shock(s) for s in self.shocks]


_NUMBER = r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"
_FRACTION = re.compile(rf"^({_NUMBER})\s*(%|bps|bp)?$")
_MULT = re.compile(rf"^(?:[xX]\s*({_NUMBER})|({_NUMBER})\s*[xX]?)$")
_SYMBOL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-/:]*$")


def parse_fraction(text: str, field: str) -> float:
    """``-30%`` -> -0.3, ``5bp`` -> 0.0005, ``-0.3`` -> -0.3 (finite)."""
    m = _FRACTION.match(text.strip())
    if m is None:
        raise ValidationError(field, f"has the value {text!r}",
                              'give a fraction (-0.3), a percentage ("-30%") or basis points ("5bp")')
    v = float(m.group(1))
    unit = m.group(2)
    v = v / 100.0 if unit == "%" else v / 10_000.0 if unit in ("bp", "bps") else v
    if not math.isfinite(v):
        raise ValidationError(field, f"has the value {text!r}", "give a finite number")
    return v


def parse_multiplier(text: str, field: str) -> float:
    """``x1.5``, ``1.5x`` or ``1.5`` -> 1.5 (finite, in (0, MAX_MULTIPLIER])."""
    m = _MULT.match(text.strip())
    if m is None:
        raise ValidationError(field, f"has the value {text!r}", 'give a multiplier such as "x1.5"')
    v = float(m.group(1) or m.group(2))
    if not (math.isfinite(v) and v > 0):
        raise ValidationError(field, f"has the multiplier {text!r}", "give a multiplier > 0, e.g. x1.5")
    if v > MAX_MULTIPLIER:
        raise ValidationError(field, f"has the multiplier {text!r}, above x{MAX_MULTIPLIER:g}",
                              f"give a multiplier in (0, {MAX_MULTIPLIER:g}], e.g. x3 "
                              f"(x{MAX_MULTIPLIER:g} is already an extreme stress)")
    return v


def _check_return(v: float, field: str, text: str) -> None:
    if v <= -1.0:
        raise ValidationError(field, f"is a move of {text!r} (to or below -100%)",
                              "give a simple return above -100%, e.g. -30% (a price cannot go below 0)")


def _parse_corr(value: str, field: str) -> tuple[float, float]:
    rho_text, _, weight_text = value.partition("@")
    rho = parse_fraction(rho_text, field)
    if not 0.0 <= rho <= 1.0:
        raise ValidationError(field, f"is a correlation of {rho_text!r}",
                              "give a target correlation in [0, 1], e.g. corr=0.9")
    lam = parse_fraction(weight_text, field) if weight_text else 1.0
    if not 0.0 < lam <= 1.0:
        raise ValidationError(field, f"moves {weight_text!r} of the way",
                              "give the blend weight after @ in (0%, 100%], e.g. corr=0.9@50%")
    return rho, lam


def _parse_horizon(value: str, field: str, text: str) -> Shock:
    v = value.strip()
    seconds = duration_seconds(v)
    if seconds is not None:
        return Shock(ShockKind.HORIZON, None, math.nan, hours=seconds / 3600.0, text=text)
    try:
        n = float(v)
    except ValueError:
        raise ValidationError(field, f"is {v!r}", "give a number of funding settlements (21) or a "
                              f"duration >= 0 with a unit, {UNITS_HINT} (7D, 8h, 1W)") from None
    if not (math.isfinite(n) and n >= 0 and n == int(n)):
        raise ValidationError(field, f"is {v!r}", "give a whole number of settlements >= 0")
    return Shock(ShockKind.HORIZON, None, n, text=text)


def _parse_funding(value: str, field: str, target: str | None, text: str) -> Shock:
    """``+0.1%`` (per settlement) or ``+0.3%/8h`` (per p = 8 hours: ``per_hours``), the rate a
    fraction in (-1, 1) and p a duration > 0 (models.durations)."""
    rate_text, slash, per_text = value.partition("/")
    v = parse_fraction(rate_text, field)
    if abs(v) >= 1.0:
        raise ValidationError(field, f"is a funding change of {rate_text.strip()!r}",
                              "give a rate per funding interval as a fraction in (-1, 1), e.g. +0.1% "
                              "(or per a duration, e.g. +0.3%/8h)")
    if not slash:
        return Shock(ShockKind.FUNDING, target, v, text=text)
    seconds = duration_seconds(per_text.strip())
    hours = math.nan if seconds is None else seconds / 3600.0
    if not hours > 0:
        raise ValidationError(field, f"states the rate per {per_text.strip()!r}",
                              "give the rate per a duration > 0 after the slash, e.g. +0.3%/8h or "
                              "+0.9%/1d (scaled to each contract's funding interval)")
    return Shock(ShockKind.FUNDING, target, v, text=text, per_hours=hours)


def parse_shock(text: str) -> Shock:
    """One ``KEY=VALUE`` string -> :class:`Shock` (see the module docstring for the grammar)."""
    raw = str(text).strip()
    key, eq, value = raw.partition("=")
    key, value = key.strip(), value.strip()
    field = f"shock {raw!r}"
    if not eq or not key or not value:
        raise ValidationError(field, "is not KEY=VALUE", GRAMMAR_HINT)
    word, dot, target = key.partition(".")
    kind = next((k for k in ShockKind if k.value == word and k != ShockKind.PRICE), None)
    if kind is None:
        if dot:
            raise ValidationError(field, f"has the unknown kind {word!r}",
                                  f"use one of {[k.value for k in TARGETED]} before the dot; "
                                  + GRAMMAR_HINT)
        if not _SYMBOL.match(key):
            raise ValidationError(field, f"names {key!r}, not an asset symbol", GRAMMAR_HINT)
        v = parse_fraction(value, field)
        _check_return(v, field, value)
        return Shock(ShockKind.PRICE, key, v, text=raw)
    if dot and kind not in TARGETED:
        raise ValidationError(field, f"gives {word!r} a target", f"write {word}=VALUE (it applies to "
                              "the whole book)")
    if dot and not (target and _SYMBOL.match(target)):
        raise ValidationError(field, f"has the target {target!r}", "name an asset or a contract "
                              "after the dot, e.g. funding.ETH or basis.BTC-PERP")
    tgt = target if dot else None
    if kind == ShockKind.HORIZON:
        return _parse_horizon(value, field, raw)
    if kind == ShockKind.CORR:
        rho, lam = _parse_corr(value, field)
        return Shock(kind, None, rho, weight=lam, text=raw)
    if kind in MULTIPLIERS:
        return Shock(kind, tgt, parse_multiplier(value, field), text=raw)
    if kind == ShockKind.FUNDING:
        return _parse_funding(value, field, tgt, raw)
    v = parse_fraction(value, field)
    _check_return(v, field, value)
    return Shock(kind, tgt, v, text=raw)


def format_shock(s: Shock) -> str:
    """A shock back as ``KEY=VALUE``."""
    if s.kind == ShockKind.HORIZON:
        return f"horizon={s.hours:g}h" if s.hours is not None else f"horizon={int(s.value)}"
    if s.kind == ShockKind.CORR:
        return f"corr={s.value:g}" + (f"@{100 * s.weight:g}%" if s.weight != 1.0 else "")
    if s.kind in MULTIPLIERS:
        return f"{s.key}=x{s.value:g}"
    per = f"/{s.per_hours:g}h" if s.kind == ShockKind.FUNDING and s.per_hours is not None else ""
    return f"{s.key}={100 * s.value:+g}%{per}"


def parse_scenario(name: str, shocks: Iterable[str], *, description: str = "",
                   source: str = "", strict: bool = True) -> Scenario:
    """A scenario from ``KEY=VALUE`` strings."""
    texts = list(shocks)
    if not texts:
        raise ValidationError(f"scenario {name!r}", "has no shocks", "give at least one KEY=VALUE shock")
    return Scenario(name=name, shocks=tuple(parse_shock(t) for t in texts), description=description,
                    source=source, strict=strict)


def scenario_from_returns(name: str, returns: Mapping[str, float], *, common: float = 0.0,
                          description: str = "", source: str = "", strict: bool = True) -> Scenario:
    """A pure price scenario (e.g. a book's ``[[constraints.stress]]``): asset returns and ``common``."""
    shocks: list[Shock] = []
    if common != 0.0:
        _check_return(common, f"scenario {name!r}: common", f"{100 * common:g}%")
        shocks.append(Shock(ShockKind.COMMON, None, float(common)))
    for sym, r in returns.items():
        _check_return(float(r), f"scenario {name!r}: {sym}", f"{100 * float(r):g}%")
        shocks.append(Shock(ShockKind.PRICE, sym, float(r)))
    shocks = [Shock(s.kind, s.target, s.value, text=format_shock(s)) for s in shocks]
    return Scenario(name=name, shocks=tuple(shocks), description=description, source=source,
                    strict=strict)
