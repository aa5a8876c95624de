"""A what-if scenario (``scenarios.shocks``) resolved against a book and applied to its market and
risk model: :func:`resolve_shocks` (per-asset and per-contract arrays), :func:`shock_market` (the
prices moved by ``models.price_moves.move_prices``) and :func:`shock_risk`.

Units: returns, basis shocks and vol/spread/ADV multipliers are fractions; funding rates per
settlement interval; prices USD; covariances annualised.

- prices: spot'_i = spot_i (1 + r_i), r_i = the asset's own move, else ``common``, else 0; marks
  mark'_j = mark_j (1 + r_u(j)) (1 + b_j) with b_j the basis shock of contract j;
- funding (perpetuals): f'_j = f_j + df_j, and the carry's forecast mean rate (``funding_forecast``,
  where the market has one) moves by the same df_j; df_j is the shock's rate per settlement, or for
  a shock stated per p hours (``funding=+0.3%/8h``) df_j = rate x h_j / p with h_j the hours
  between the contract's settlements, so every contract pays the same rate per p hours
  (+0.3%/8h: +0.15% per settlement of a 4 h contract, +0.0375% of a 1 h one); a funding shock
  aimed only at dated contracts (no funding) is refused: their marks move through a basis shock;
- settlements: n_j = ``horizon`` (a count, the same for every contract), or for a duration T hours
  n_j = floor(T / h_j) (``horizon=7d``: 21 settlements at 8 h, 42 at 4 h, 168 at 1 h); without a
  horizon one settlement with a funding shock, none without;
- h_j (:func:`settlement_hours`): the spacing the optimiser's carry counts,
  ``MarketSnapshot.funding_hours`` (a data market's measured spacing where it differs from the
  contract's ``funding_interval_h``, ``fbr.config_market``), so a what-if and ``fbr solve`` on one
  book count the same settlements a day; without a market the contract's ``funding_interval_h``;
- risk: vol multipliers m_i and a correlation blend give Sigma' = D' C' D' (D' = diag(m_i sigma_i),
  C' = (1 - lam) C + lam (rho 11' + (1 - rho) I)); spread and liquidity multiply the half spreads and
  ADV the re-solve's cost model sees.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from models.book import Book
from models.errors import ValidationError
from models.instruments import ContractKind
from models.market import MarketSnapshot
from models.price_moves import move_prices
from models.risk import RiskModel, singular_eigenvalue
from scenarios.shocks import Scenario, Shock, ShockKind

#: Half spreads are capped below the market snapshot's limit of 0.5.
MAX_HALF_SPREAD = 0.4999


@dataclass(frozen=True)
class AppliedShocks:
    """A scenario resolved against a book: per asset (N, book order) and per contract (M).

    ``returns`` r_i; ``mark_factor`` (1 + r_u(j)) (1 + b_j); ``funding_add`` df_j (per interval);
    ``settlements`` n_j (0 for dated futures); ``vol_mult`` m_i; ``corr`` (rho, lam) or None;
    ``spread_mult`` (contracts) and ``spot_spread_mult`` (assets); ``adv_mult`` (contracts);
    ``hours`` h_j, the hours between contract j's settlements that df_j and n_j count
    (:func:`settlement_hours`).
    """

    returns: np.ndarray
    mark_factor: np.ndarray
    funding_add: np.ndarray
    settlements: np.ndarray
    vol_mult: np.ndarray
    corr: tuple[float, float] | None
    spread_mult: np.ndarray
    spot_spread_mult: np.ndarray
    adv_mult: np.ndarray
    hours: np.ndarray


def _unknown(scenario: Scenario, shock: Shock, what: str, known: Sequence[str]) -> ValidationError:
    return ValidationError(f"scenario {scenario.name!r}: shock {shock.text or shock.key!r}",
                           f"names {shock.target!r}, not {what} of the book",
                           f"use one of {list(known)}")


def _contract_targets(scenario: Scenario, shock: Shock, book: Book) -> list[int]:
    """Contract indices a (possibly targeted) shock applies to: all, one contract, or every
    contract on one asset (none for an unknown symbol of a non-strict scenario)."""
    cons = book.contract_symbols
    if shock.target is None:
        return list(range(len(cons)))
    if shock.target in cons:
        return [cons.index(shock.target)]
    if shock.target in book.asset_symbols:
        return [j for j, c in enumerate(book.contracts) if c.underlying == shock.target]
    if not scenario.strict:
        return []
    raise _unknown(scenario, shock, "a contract or asset", cons + book.asset_symbols)


def _funding_targets(scenario: Scenario, shock: Shock, book: Book) -> list[int]:
    """Contract indices of a funding shock: those of :func:`_contract_targets`, refused when it is
    aimed only at dated contracts (they pay no funding, so the shock would change nothing); a
    non-strict scenario skips it instead."""
    idx = _contract_targets(scenario, shock, book)
    dated = [book.contracts[j].symbol for j in idx if book.contracts[j].kind != ContractKind.PERPETUAL]
    if shock.target is None or not idx or len(dated) < len(idx):
        return idx
    if not scenario.strict:
        return []
    example = f"basis.{dated[0]}=-1%"
    what = "a dated contract" if len(dated) == 1 else "dated contracts"
    raise ValidationError(f"scenario {scenario.name!r}: shock {shock.text or shock.key!r}",
                          f"aims a funding shock at {', '.join(dated)}, {what} "
                          "(no funding: the shock would change nothing)",
                          f"shock a dated contract's mark through its basis instead, e.g. {example}; "
                          "funding shocks apply to perpetuals")


def _ordered(shocks: list[Shock]) -> list[Shock]:
    """Global shocks first, then targeted ones (the more specific one wins)."""
    return [s for s in shocks if s.target is None] + [s for s in shocks if s.target is not None]


def settlement_hours(book: Book, market: MarketSnapshot | None = None) -> np.ndarray:
    """h_j per contract (M, hours between settlements): ``market.funding_hours``, the spacing
    the optimiser's carry counts (a data market's measured spacing, else the contract's
    ``funding_interval_h``); each contract's ``funding_interval_h`` when ``market`` is None."""
    return np.array([c.funding_interval_h if market is None
                     else market.funding_hours(c.symbol, c.funding_interval_h)
                     for c in book.contracts], dtype=float)


def funding_per_settlement(shock: Shock, hours: float) -> float:
    """df_j of a funding shock on a contract settling every ``hours`` hours (fraction per
    settlement): the shock's rate, or rate x h_j / p for a rate stated per p = ``shock.per_hours``
    hours: +0.3%/8h is +0.3% per 8 h settlement, +0.15% per 4 h, +0.0375% per 1 h."""
    if shock.per_hours is None:
        return float(shock.value)
    return float(shock.value) * hours / float(shock.per_hours)


def _funding_and_settlements(scenario: Scenario, book: Book,
                             hours: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(df_j, n_j) per contract (see the module docstring; ``hours`` h_j): the funding shocks
    (global ones first, the more specific one wins; :func:`funding_per_settlement`) and the
    settlements the scenario lasts (0 for dated futures)."""
    funding = np.zeros(len(book.contracts))
    fshocks = scenario.of_kind(ShockKind.FUNDING)
    for s in _ordered(fshocks):
        for j in _funding_targets(scenario, s, book):
            funding[j] = funding_per_settlement(s, float(hours[j]))
    perp = np.array([c.kind == ContractKind.PERPETUAL for c in book.contracts], dtype=bool)
    horizon = scenario.of_kind(ShockKind.HORIZON)
    if horizon and horizon[0].hours is not None:
        span = float(horizon[0].hours)
        n = np.array([math.floor(span / h + 1e-9) for h in hours], dtype=float)
    else:
        count = horizon[0].value if horizon else (1.0 if fshocks else 0.0)
        n = np.full(len(book.contracts), count)
    return funding, np.where(perp, n, 0.0)


def resolve_shocks(scenario: Scenario, book: Book,
                   market: MarketSnapshot | None = None) -> AppliedShocks:
    """Resolve ``scenario`` against ``book``, its settlements at ``market``'s spacing
    (:func:`settlement_hours`; None: the contracts' ``funding_interval_h``): unknown symbols are a
    clear error."""
    assets = book.asset_symbols
    N, M = len(assets), len(book.contracts)
    common = scenario.of_kind(ShockKind.COMMON)
    returns = np.full(N, common[0].value if common else 0.0)
    for s in scenario.of_kind(ShockKind.PRICE):
        if s.target not in assets:
            if not scenario.strict:
                continue
            raise _unknown(scenario, s, "an asset", assets)
        returns[assets.index(str(s.target))] = s.value
    basis = np.zeros(M)
    for s in _ordered(scenario.of_kind(ShockKind.BASIS)):
        basis[_contract_targets(scenario, s, book)] = s.value
    under = np.array([assets.index(c.underlying) for c in book.contracts], dtype=int)
    mark_factor = (1.0 + returns[under]) * (1.0 + basis) if M else np.zeros(0)

    hours = settlement_hours(book, market)
    funding, settlements = _funding_and_settlements(scenario, book, hours)
    vol = np.ones(N)
    for s in _ordered(scenario.of_kind(ShockKind.VOL)):
        if s.target is None:
            vol[:] = s.value
        elif s.target in assets:
            vol[assets.index(s.target)] = s.value
        elif scenario.strict:
            raise _unknown(scenario, s, "an asset", assets)
    corr_shocks = scenario.of_kind(ShockKind.CORR)
    corr = (corr_shocks[0].value, corr_shocks[0].weight) if corr_shocks else None

    spread = np.ones(M)
    spot_spread = np.ones(N)
    for s in _ordered(scenario.of_kind(ShockKind.SPREAD)):
        spread[_contract_targets(scenario, s, book)] = s.value
        if s.target is None:
            spot_spread[:] = s.value
        elif s.target in assets:
            spot_spread[assets.index(s.target)] = s.value
    adv = np.ones(M)
    for s in _ordered(scenario.of_kind(ShockKind.LIQUIDITY)):
        adv[_contract_targets(scenario, s, book)] = s.value
    return AppliedShocks(returns=returns, mark_factor=mark_factor, funding_add=funding,
                         settlements=settlements, vol_mult=vol, corr=corr, spread_mult=spread,
                         spot_spread_mult=spot_spread, adv_mult=adv, hours=hours)


def _shocked_funding(book: Book, market: MarketSnapshot, applied: AppliedShocks
                     ) -> tuple[dict[str, float], dict[str, float]]:
    """The funding rates and the carry's funding forecasts after the funding shocks: df_j is added
    to the current rate f_j and, where the market has one, to the forecast mean rate (the rate
    ``MarketSnapshot.carry_rate`` gives the re-solve's carry); each stays in (-1, 1)."""
    funding = dict(market.funding)
    forecast = dict(market.funding_forecast)
    for j, c in enumerate(book.contracts):
        add = float(applied.funding_add[j])
        rates = {"funding": (funding, market.funding_rate(c.symbol) + add)}
        if c.symbol in forecast:
            rates["funding_forecast"] = (forecast, float(forecast[c.symbol]) + add)
        for what, (table, rate) in rates.items():
            if not abs(rate) < 1.0:
                raise ValidationError(f"{what}.{c.symbol}", f"becomes {rate:g} per interval",
                                      "give a funding shock that keeps the rate in (-1, 1)")
            if add != 0.0 or c.symbol in table:
                table[c.symbol] = rate
    return funding, forecast


def shock_market(book: Book, market: MarketSnapshot, applied: AppliedShocks) -> MarketSnapshot:
    """The market after the shocks: prices, marks, funding rates (and their forecasts), half
    spreads and ADV."""
    moved = move_prices(book, market, applied.returns, applied.mark_factor)
    funding, forecast = _shocked_funding(book, market, applied)
    half = dict(market.half_spread)
    adv = dict(market.adv)
    for j, c in enumerate(book.contracts):
        if applied.spread_mult[j] != 1.0:
            half[c.symbol] = min(market.contract_half_spread(c.symbol) * float(applied.spread_mult[j]),
                                 MAX_HALF_SPREAD)
        a = market.contract_adv(c.symbol)
        if applied.adv_mult[j] != 1.0 and math.isfinite(a):
            adv[c.symbol] = a * float(applied.adv_mult[j])
    spot_half = dict(market.spot_half_spread)
    for i, s in enumerate(book.asset_symbols):
        if applied.spot_spread_mult[i] != 1.0:
            # from the half spread the optimiser prices a spot trade at: the market's, else its default
            base = market.asset_half_spread(s)
            spot_half[s] = min(base * float(applied.spot_spread_mult[i]), MAX_HALF_SPREAD)
    return replace(moved, funding=funding, funding_forecast=forecast, half_spread=half, adv=adv,
                   spot_half_spread=spot_half)


def shock_risk(risk: RiskModel, book: Book, applied: AppliedShocks) -> RiskModel:
    """Sigma' = D' C' D' (see the module docstring); ``risk`` itself when no vol/corr shock."""
    if applied.corr is None and np.all(applied.vol_mult == 1.0):
        return risk
    cov = risk.covariance
    vol = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    safe = np.where(vol > 0, vol, 1.0)
    C = cov / np.outer(safe, safe)
    if applied.corr is not None:
        rho, lam = applied.corr
        n = len(vol)
        C = (1.0 - lam) * C + lam * (rho * np.ones((n, n)) + (1.0 - rho) * np.eye(n))
    mult = np.ones(len(vol))
    pos = {s: k for k, s in enumerate(risk.symbols)}
    for i, a in enumerate(book.asset_symbols):
        if a in pos:
            mult[pos[a]] = applied.vol_mult[i]
    v2 = vol * mult
    cov2 = C * np.outer(v2, v2)
    if not np.all(np.isfinite(cov2)):  # else numpy's "Eigenvalues did not converge", no field
        bad = [s for s, v in zip(risk.symbols, np.diag(cov2), strict=True) if not np.isfinite(v)]
        raise ValidationError("shock vol", f"makes the variance of {bad or list(risk.symbols)} "
                              f"overflow (not finite)", "give a smaller vol multiplier")
    if applied.corr is not None and (low := singular_eigenvalue(C)) is not None:
        raise ValidationError("shock corr", f"makes the correlation singular (smallest eigenvalue "
                              f"{low:.3g}): some mix of the assets would carry no risk and the "
                              "next move would be arbitrary", "give a correlation below 1, e.g. "
                              "corr=0.99, or blend part of the way, e.g. corr=1@90%")
    shocked = RiskModel.from_covariance(risk.symbols, cov2, method=f"{risk.method} (shocked)")
    return replace(shocked, basis_cov=risk.basis_cov)
