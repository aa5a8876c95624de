"""Numbers of the spot leg of one rebalance, in weight units (USD / V), prepared once per rebalance.

The spot leg (``OptimizerSettings.spot``) adds per-asset spot buys b_i >= 0 and sells q_i >= 0
(weights): e = s + b - q + B z. This module turns the book, market, risk model and settings into the
arrays its Parameters take: linear cost per unit traded (fee + half spread), the 3/2-power impact
coefficient, the most each asset may sell (its spot weight), and each asset's convex tax curve of a
sale, T_i(q_i) in weights (models.tax.breakpoints(...).in_weights(V)).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

import numpy as np

from models.book import Book, TargetsBase
from models.bounds import check_weight
from models.costs import impact_coefficient
from models.errors import ValidationError
from models.market import MarketSnapshot, as_datetime
from models.tax import TaxCurve, TaxLot, TaxRates, breakpoints, total_quantity
from optimizer.pledge_pieces import PledgePieces, pledge_pieces
from optimizer.settings import SpotLegSettings

#: lots of an asset must add up to its spot quantity within this relative tolerance ...
LOT_SUM_RTOL = 1e-9
#: ... plus this absolute one (units: a holding sold down to dust carries float residue)
LOT_SUM_ATOL = 1e-12
#: the most pieces a tax curve keeps (models.tax.TaxCurve.capped: the dearest lots beyond the
#: first MAX_TAX_PIECES - 1 pieces are priced by their chord, exact at the whole holding), so a
#: replay that adds a lot per spot buy keeps a problem of bounded size
MAX_TAX_PIECES = 16


def check_lots(lots: Mapping[str, Sequence[TaxLot]], spot: Mapping[str, float],
               assets: Sequence[str], path: str = "lots") -> None:
    """Every asset's lots add up to its spot quantity within LOT_SUM_RTOL (relative) plus
    LOT_SUM_ATOL (units), and every lot
    names a book asset; else one ValidationError naming the asset and both figures."""
    for sym in lots:
        if sym not in assets:
            raise ValidationError(f"{path}.{sym}", "is not an asset of the book",
                                  f"give lots of one of {list(assets)}")
    for sym in assets:
        held = float(spot.get(sym, 0.0))
        in_lots = total_quantity(lots.get(sym, ()))
        if abs(in_lots - held) > LOT_SUM_RTOL * max(abs(held), abs(in_lots)) + LOT_SUM_ATOL:
            raise ValidationError(
                f"{path}.{sym}", f"tax lots of {sym} add up to {in_lots:.12g} units but the book "
                f"holds {held:.12g} units of {sym}",
                f"give [[lots]] for {sym} whose quantities sum to the spot quantity {held:.12g}")


@dataclass(frozen=True)
class SpotLegData:
    """The spot leg of one rebalance (weights = USD / V; i indexes the book's assets).

    ``prices`` USD/unit, ``quantities`` units held; ``lin_cost``, ``fee``, ``half_spread``
    fractions of the USD traded; ``impact_cost`` c_i with impact = c_i |trade weight|^{3/2}
    (weights); ``holdings`` the most each asset may sell (weights); ``curves`` the tax curves in
    weights (None: no tax term); ``cash`` the net buy budget (weights).
    """

    prices: np.ndarray
    quantities: np.ndarray
    lin_cost: np.ndarray
    fee: np.ndarray
    half_spread: np.ndarray
    impact_cost: np.ndarray
    holdings: np.ndarray
    cash: float
    curves: tuple[TaxCurve, ...] | None
    tax_pieces: int
    lots: tuple[tuple[TaxLot, ...], ...]
    rates: TaxRates | None
    now: datetime
    settings: SpotLegSettings
    #: True when the target base is the spot value (``targets_base = "invested"``), so it moves
    #: with the net spot trade (see :func:`target_shift`); False for a NAV base
    base_follows: bool = False
    #: kappa_i (N): collateral gained per unit of asset i's spot sold, net of the pledged value the
    #: sale removes (:func:`collateral_gains`; 1 for unpledged spot); None: the rows ignore spot
    collateral_gain: np.ndarray | None = None
    #: kappa_s,i (S x N): the same in each stress scenario (the pledged value re-priced)
    stress_collateral_gain: np.ndarray | None = None
    #: the exact pledged value after the trade of the assets whose rule has kinks (tiers, a
    #: pledged quantity: optimizer.pledge_pieces); their kappa is 1 (the cash alone); None: none
    pledge: PledgePieces | None = None

    @property
    def taxed(self) -> bool:
        """True when the tax term is on."""
        return self.curves is not None


def target_shift(w: np.ndarray, sd: SpotLegData) -> np.ndarray:
    """k (N, weights): how the targets move per unit of net spot trade sigma = 1'(b - q).

    With ``targets_base = "invested"`` the base V is the spot value, so a net spot trade moves it
    to V' = V (1 + sigma) (fees and tax are paid from the wallet, not from spot) and the targets
    w* V' are w* (1 + sigma) in units of today's V: k = w*. A NAV base does not move with a spot
    trade (the cash stays in the NAV): k = 0. The deviation the optimiser prices is then
    e - w* - k sigma = s + b - q + B z - w* - k 1'(b - q)."""
    return np.asarray(w, dtype=float) if sd.base_follows else np.zeros(len(w))


def collateral_gains(book: Book, values: np.ndarray,
                     stress_r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """kappa (N) and kappa_s (S x N): the margin collateral a sale of one USD of each asset's spot
    brings, per USD sold (a buy costs as much).

    The sale's cash lands in the wallet (+1) and the pledged value it held leaves: kappa_i =
    1 - h_i, h_i the flat collateral ratio of asset i's whole holding (0 unpledged, 1 - bidBuffer
    in Multi-Assets mode): exact, as C_i is linear. In stress scenario s the pledged spot would
    have moved by r_s: kappa_s,i = 1 - h_i (1 + r_s,i), the cash fixed at today's price. An asset
    whose rule has kinks (tiers, a pledged quantity) gets kappa = 1, the cash alone: its pledged
    value moves through optimizer.pledge_pieces, exactly. ``values`` (USD, book order) sizes
    the arrays."""
    n = len(np.asarray(values))
    r = np.asarray(stress_r, dtype=float).reshape(-1, n)
    h = np.array([rule.flat_ratio if rule is not None and rule.linear and rule.flat_ratio
                  is not None else 0.0 for rule in book.pledge_rules()])
    return 1.0 - h, 1.0 - h[None, :] * (1.0 + r)


def net_sale_room(sd: SpotLegData) -> float:
    """The most the spot leg may sell on balance, 1'(q - b) <= room (weights): 0 on an invested
    base (the sales pay for the buys; a net sale would shrink the base, optimizer.spot_leg), all
    the spot it may sell on a NAV base (no limit beyond q <= holdings)."""
    return 0.0 if sd.base_follows else float(np.sum(sd.holdings))


def spot_budget(book: Book, settings: SpotLegSettings) -> float:
    """The net spot buys one rebalance may pay from the wallet (USD): ``settings.cash_usd``, but
    never more than the stablecoin the book holds (``Book.cash``, 0 when it owes): buys are paid
    in cash, not in unrealised PnL or credit."""
    return min(settings.cash_usd, max(float(book.cash), 0.0))


def prepare_spot(book: Book, market: MarketSnapshot, daily_vol: np.ndarray, V: float,
                 settings: SpotLegSettings, impact_k: float,
                 stress_r: np.ndarray | None = None) -> SpotLegData:
    """The spot leg's arrays (see :class:`SpotLegData`); lots are checked against the book's spot.
    ``stress_r`` (S x N, the stress scenarios' asset returns): the margin rows' collateral gains
    (:func:`collateral_gains`); None: none (the rows ignore the spot trades)."""
    assets = book.asset_symbols
    prices = np.array([market.spot_price(a) for a in assets], dtype=float)
    qty = np.array([float(book.spot.get(a, 0.0)) for a in assets], dtype=float)
    fee = np.array([a.fee for a in book.assets], dtype=float)
    hs = np.array([market.asset_half_spread(a) for a in assets])
    bad = np.flatnonzero(~np.isfinite(hs) | (hs < 0) | (hs >= 0.5))
    if bad.size:
        a = assets[int(bad[0])]
        raise ValidationError(f"market.spot_half_spread.{a}", f"is {hs[bad[0]]}",
                              "give the half spread as a fraction in [0, 0.5)")
    adv = np.array([float(market.adv.get(a, math.inf)) for a in assets], dtype=float)
    impact = impact_coefficient(impact_k, daily_vol, adv) * math.sqrt(V)  # weight units
    if not (math.isfinite(settings.cash_usd) and settings.cash_usd >= 0):
        raise ValidationError("spot.cash_usd", f"is {settings.cash_usd}", "give USD >= 0")
    check_weight(settings.gamma_tax, "tax.gamma")
    now = as_datetime(market.time)
    hold = qty * prices / V
    lots = tuple(tuple(settings.lots.get(a, ())) for a in assets)
    curves: tuple[TaxCurve, ...] | None = None
    pieces = 0
    if settings.rates is not None:
        check_lots(settings.lots, book.spot, assets)
        curves = tuple(breakpoints(lots[i], float(prices[i]), now, settings.rates,
                                   credit_losses=settings.harvest_losses,
                                   method=settings.lot_method)
                       .capped(MAX_TAX_PIECES).in_weights(V)
                       for i in range(len(assets)))
        pieces = min(max([1, *(len(ls) for ls in lots)]), MAX_TAX_PIECES)
        hold = np.minimum(hold, np.array([c.holdings for c in curves]))
    sd = SpotLegData(prices=prices, quantities=qty, lin_cost=fee + hs, fee=fee, half_spread=hs,
                     impact_cost=impact, holdings=hold, cash=spot_budget(book, settings) / V,
                     curves=curves, tax_pieces=pieces, lots=lots, rates=settings.rates, now=now,
                     settings=settings,
                     base_follows=book.targets_base == TargetsBase.INVESTED)
    return sd if stress_r is None else _with_collateral(sd, book, V, stress_r)


def _with_collateral(sd: SpotLegData, book: Book, V: float, stress_r: np.ndarray) -> SpotLegData:
    """``sd`` with its collateral fields: kappa, kappa_s and the kinked pledges' pieces."""
    values = sd.quantities * sd.prices
    kappa, stressed = collateral_gains(book, values, stress_r)
    return replace(sd, collateral_gain=kappa, stress_collateral_gain=stressed,
                   pledge=pledge_pieces(book, values, sd.prices, V, stress_r))


def futures_tax_coefficients(book: Book, market: MarketSnapshot,
                             settings: SpotLegSettings) -> np.ndarray | None:
    """c_j = gamma_tax x rate_futures x max(U_j, 0) / |x0_j| per contract (book order; 0 where no
    position is held): reducing position j by r (weights, same sign) realises U_j r / |z0_j| of
    its gain, a tax of rate x U_j x r / |x0_j| as a fraction of V. U_j: ``settings.futures_gains``
    (USD) or the position's unrealised PnL at the marks against its entry price. None when
    ``settings.futures_tax`` is off or there is no futures rate."""
    if not settings.futures_tax or settings.rates is None or not book.contracts:
        return None
    check_weight(settings.gamma_tax, "tax.gamma")
    rate = settings.rates.futures_rate
    x0 = np.abs(book.futures_exposure(market))  # |z0| V: the optimiser's exposure units
    out = np.zeros(len(book.contracts))
    for j, c in enumerate(book.contracts):
        pos = book.futures.get(c.symbol)
        if pos is None or pos.contracts == 0 or x0[j] <= 0:
            continue
        if settings.futures_gains is not None:
            gain = float(settings.futures_gains.get(c.symbol, 0.0))
        else:
            gain = book.evolve(futures={c.symbol: pos}, validate=False).unrealized_pnl(market)
        if not math.isfinite(gain):
            raise ValidationError(f"spot.futures_gains.{c.symbol}", f"is {gain}", "give USD")
        out[j] = settings.gamma_tax * rate * max(gain, 0.0) / float(x0[j])
    return out
