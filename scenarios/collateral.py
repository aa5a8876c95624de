"""Collateral management of a backtest (step 5): the wallet's reserve band and the sweeps.

:class:`CollateralPolicy` states the band (reserve target tau as a fraction of NAV, relative band
b); :func:`sweep_collateral` moves value between spot and the futures wallet when the wallet
leaves ``[tau (1 - b) V, tau (1 + b) V]`` and reports what moved (:class:`Sweep`, USD).
``NO_SWEEPS`` switches the sweeps off.

**Pledged collateral** (``run_backtest(pledged=True)``; off by default). Spot pledged as margin
(``Book.pledged``: flat ratio, Multi-Assets bidBuffer or Portfolio Margin tiers) counts through its
rule C_i (``models.collateral``) in two places:

- **no sweep needed while it covers the target**: the top-up is tested on the margin balance
  ``W + sum_i C_i(u_i)`` (u_i the pledged USD value) instead of the wallet W alone: no top-up while
  it stays at or above ``tau (1 - b) V``; below, the top-up sells spot as above for the gap
  ``tau V - (W + sum_i C_i(u_i))`` (the pledged value the sale itself removes is not solved for:
  the balance lands at most that much short of ``tau V``, and the next step tops it up again).
  The sweep-out of excess wallet cash is unchanged (tested on W: pledged spot is never sold to
  hold stablecoins);
- **a maintenance breach** (``scenarios.replay_steps.margin_step``) closes every futures position
  at mark and takes the liquidation penalty p x |notional| from the wallet as always; if the
  wallet cash is then negative, pledged spot is sold at the close to cover it
  (:func:`cover_with_pledged`): gross ``G = min(-cash / (1 - p), sum_i u_i)`` pro rata to the
  pledged values u_i, the penalty p x G taken on the collateral sold (recorded in
  ``liquidation_penalty``; trade kind ``collateral_sale`` with the penalty in its fee column,
  not in fee_spot), the wallet receiving G (1 - p). What a debt larger than all the pledged
  spot leaves is the exchange's insurance fund's (``models.margin.insurance_fund_cover``: the
  wallet back at 0). Unpledged spot is never sold by the exchange. Without ``pledged`` (the
  pledges still count in the margin check) the debt stays in the wallet up to the pledged spot's
  value, and only what exceeds it is the insurance fund's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq

from models.book import Book
from models.errors import ValidationError
from models.margin import insurance_fund_cover
from models.market import MarketSnapshot
from scenarios.replay_state import ReplayState, StepValuation, value_state


@dataclass(frozen=True)
class CollateralPolicy:
    """Keep the futures wallet's margin balance in a band around a reserve target (DESIGN.md).

    Wallet balance ``W = cash + unrealised PnL`` (USD; pledged spot is not counted), NAV ``V``.
    ``target_fraction`` tau (fraction of NAV; None: the book's initial ``W / V`` at the first
    step's prices, before any trade) and ``band`` b (relative, >= 0): after the policy's trades,
    while futures positions are open, a wallet outside ``[tau (1 - b) V, tau (1 + b) V]`` is moved
    back to exactly ``tau V'`` (V' the NAV after the sweep's fees):

    - **top-up** (W too low): sell spot pro rata to spot values v_i, gross
      ``G = (tau V - W) / (1 - f + tau f)`` with f = sum_i v_i f_i / sum_i v_i (spot fee rates), capped
      at all the spot held; the wallet receives G (1 - f);
    - **sweep-out** (W too high): buy spot pro rata to the target weights w*_i, gross
      ``B = (W - tau V) / (1 + f - tau f)`` with f = sum_i w*_i f_i / sum_i w*_i; the wallet pays
      B (1 + f).

    Spot trades at the close and pays what a policy's spot trade pays: in the replay the fee and
    half spread (the f_i above) and, where the path has the asset's ADV, the 3/2-power impact
    (:func:`sweep_collateral`'s ``impact``; G and B then solve the same balance with it).
    ``enabled=False`` switches sweeps off (see ``NO_SWEEPS``).

    ``width`` (a fraction of NAV, None by default) replaces the relative band by an absolute one,
    ``[(tau - width) V, (tau + width) V]``: the way to keep a wallet that only settles PnL (a
    book whose margin is pledged spot, tau = 0) near zero without sweeping at every step; a
    negative lower edge lets the wallet owe stablecoins against the pledged collateral.
    """

    target_fraction: float | None = None
    band: float = 0.5
    enabled: bool = True
    width: float | None = None

    def __post_init__(self) -> None:
        if self.target_fraction is not None and not (
                math.isfinite(self.target_fraction) and 0 <= self.target_fraction < 1):
            raise ValidationError("collateral.target_fraction", f"is {self.target_fraction}",
                                  "give the wallet reserve as a fraction of NAV in [0, 1)")
        if not (math.isfinite(self.band) and self.band >= 0):
            raise ValidationError("collateral.band", f"is {self.band}",
                                  "give the relative band around the target as a number >= 0")
        if self.width is not None and not (math.isfinite(self.width) and 0 <= self.width < 1):
            raise ValidationError("collateral.width", f"is {self.width}",
                                  "give the band's half-width as a fraction of NAV in [0, 1)")

    def edges(self, tau: float) -> tuple[float, float]:
        """(low, high) edges of the wallet's band as fractions of NAV for target ``tau``."""
        return band_edges(tau, self.band, self.width)


def band_edges(tau: float, band: float, width: float | None) -> tuple[float, float]:
    """(low, high) edges of the wallet's band (fractions of NAV): ``[tau (1 - b), tau (1 + b)]``,
    or ``[tau - width, tau + width]`` with an absolute ``width``."""
    if width is not None:
        return tau - width, tau + width
    return tau * (1.0 - band), tau * (1.0 + band)


#: Collateral management switched off (the wallet drifts with futures PnL, as without sweeps).
NO_SWEEPS = CollateralPolicy(enabled=False)


@dataclass(frozen=True)
class Sweep:
    """One collateral sweep (USD): gross spot sold into the wallet, gross spot bought from it, fees."""

    sweep_in: float = 0.0
    sweep_out: float = 0.0
    fees: float = 0.0


def sweep_collateral(book: Book, state: ReplayState, market: MarketSnapshot, tau: float,
                     band: float, fee_rate: np.ndarray, trades: list[dict[str, object]],
                     val: StepValuation | None = None, *, pledged: bool = False,
                     width: float | None = None, impact: np.ndarray | None = None) -> Sweep:
    """Move value between spot and the wallet when W leaves [tau (1-b) V, tau (1+b) V], or
    [(tau - width) V, (tau + width) V] with ``width`` (``CollateralPolicy``); returns what moved.
    Mutates ``state`` and appends to ``trades``. ``fee_rate``: each asset's cost per USD of spot
    traded (the replay passes the spot fee plus the spot half spread; a trade row's ``fee``);
    ``impact``: each asset's impact coefficient c_i (USD^-1/2: a trade of n USD pays
    c_i |n|^{3/2}, the row's ``slippage``; None: none). Both are the sweep's ``fees``.
    ``val``: the state's valuation at ``market`` when the caller already has it. ``pledged``:
    the top-up is tested on W plus the pledged collateral value (module docstring)."""
    if val is None:
        val = value_state(book, state, market)
    nav, wallet = val.nav, val.wallet
    covered = val.collateral if pledged else wallet
    if not (nav > 0) or not np.any(val.notional != 0):
        return Sweep()
    lo_f, hi_f = band_edges(tau, band, width)
    if covered < lo_f * nav:
        return _sweep_in(book, state, market, val.spot_values, tau * nav - covered, tau, fee_rate,
                         trades, impact)
    if wallet > hi_f * nav:
        return _sweep_out(book, state, market, wallet - tau * nav, tau, fee_rate, trades, impact)
    return Sweep()


def _impact_bar(impact: np.ndarray | None, share: np.ndarray) -> float:
    """sum_i c_i s_i^{3/2}: the impact of a gross trade g split by ``share`` s (sum 1) is this
    times g^{3/2} (0 without ``impact``)."""
    if impact is None:
        return 0.0
    return float(np.asarray(impact, dtype=float) @ np.power(share, 1.5))


def sale_for(short: float, tau: float, fbar: float, cbar: float, total: float) -> float:
    """The gross sale g (USD, at most ``total``) whose proceeds bring the wallet ``short`` below
    tau x NAV back to it: g - (1 - tau)(fbar g + cbar g^{3/2}) = short (its costs leave the
    wallet and lower the NAV). Linear costs (cbar 0): g = short / (1 - fbar + tau fbar), all the
    spot when that is more. With impact the left side is concave and the root lies above that
    linear answer; past the left side's peak more selling raises less, so when short is out of
    reach the sale is the peak, or all the spot when that comes first."""
    linear = short / (1.0 - fbar + tau * fbar)
    if cbar == 0.0:
        return min(linear, total)
    a, c = 1.0 - (1.0 - tau) * fbar, (1.0 - tau) * cbar

    def gap(g: float) -> float:
        return a * g - c * float(g ** 1.5) - short

    top = min(total, (a / (1.5 * c)) ** 2)  # where d/dg (a g - c g^1.5) = 0, or all the spot
    if linear >= top or gap(top) <= 0.0:
        return top
    if gap(linear) >= 0.0:  # an impact too small to move the answer in floating point
        return linear
    return float(brentq(gap, linear, top))


def purchase_for(excess: float, tau: float, fbar: float, cbar: float) -> float:
    """The gross purchase b (USD) that spends the wallet's ``excess`` over tau x NAV:
    b + (1 - tau)(fbar b + cbar b^{3/2}) = excess. Linear costs: b = excess / (1 + fbar - tau
    fbar), an upper bound of the root with impact (the left side is increasing)."""
    linear = excess / (1.0 + fbar - tau * fbar)
    if cbar == 0.0:
        return linear
    a, c = 1.0 + (1.0 - tau) * fbar, (1.0 - tau) * cbar

    def gap(b: float) -> float:
        return a * b + c * float(b ** 1.5) - excess

    if gap(linear) <= 0.0:  # an impact too small to move the answer in floating point
        return linear
    return float(brentq(gap, 0.0, linear))


def _impact_of(impact: np.ndarray | None, i: int, usd: float) -> float:
    """c_i |usd|^{3/2} (USD; 0 without ``impact``)."""
    return 0.0 if impact is None else float(impact[i]) * float(usd ** 1.5)


def _sweep_in(book: Book, state: ReplayState, market: MarketSnapshot, v: np.ndarray,
              short: float, tau: float, fee_rate: np.ndarray,
              trades: list[dict[str, object]], impact: np.ndarray | None = None) -> Sweep:
    """Sell spot pro rata to its value ``v`` (USD per asset) so that the wallet, ``short`` USD
    below tau x NAV, comes back to it after costs: the gross sale g of :func:`sale_for`
    (g (1 - fbar) = short - tau fbar g with linear costs: selling g lowers the NAV by its fees),
    fbar the value-weighted fee rate, cbar the impact of the split (:func:`_impact_bar`);
    everything when g reaches the spot's whole value."""
    total = float(v.sum())
    if total <= 0:
        return Sweep()
    fbar = float(v @ fee_rate) / total
    gross = sale_for(short, tau, fbar, _impact_bar(impact, v / total), total)
    sell_all = gross >= total
    fees = 0.0
    for i, a in enumerate(book.asset_symbols):
        if v[i] <= 0:
            continue
        g = float(v[i]) if sell_all else gross * float(v[i]) / total
        px = market.spot_price(a)
        dq = -state.spot[a] if sell_all else -g / px
        fee = float(fee_rate[i]) * g
        slip = _impact_of(impact, i, g)
        state.spot[a] = 0.0 if sell_all else state.spot[a] + dq
        state.cash += g - fee - slip
        fees += fee + slip
        trades.append({"time": market.time, "kind": "sweep_in", "symbol": a, "quantity": dq,
                       "price": px, "notional": -g, "fee": fee, "slippage": slip})
    return Sweep(sweep_in=float(v.sum()) if sell_all else gross, fees=fees)


def _sweep_out(book: Book, state: ReplayState, market: MarketSnapshot, excess: float, tau: float,
               fee_rate: np.ndarray, trades: list[dict[str, object]],
               impact: np.ndarray | None = None) -> Sweep:
    """Buy spot at the target weights with the wallet's ``excess`` over tau x NAV (USD): the gross
    purchase b of :func:`purchase_for` (b (1 + fbar) = excess + tau fbar b with linear costs:
    buying b lowers the NAV by its fees), fbar the target-weighted fee rate, cbar the impact of
    the split."""
    w = book.target_vector()
    wsum = float(w.sum())
    if wsum <= 0:
        return Sweep()
    fbar = float(w @ fee_rate) / wsum
    gross = purchase_for(excess, tau, fbar, _impact_bar(impact, w / wsum))
    fees = 0.0
    for i, a in enumerate(book.asset_symbols):
        if w[i] <= 0:
            continue
        b = gross * float(w[i]) / wsum
        px = market.spot_price(a)
        fee = float(fee_rate[i]) * b
        slip = _impact_of(impact, i, b)
        state.spot[a] += b / px
        state.cash -= b + fee + slip
        fees += fee + slip
        trades.append({"time": market.time, "kind": "sweep_out", "symbol": a, "quantity": b / px,
                       "price": px, "notional": b, "fee": fee, "slippage": slip})
    return Sweep(sweep_out=gross, fees=fees)


@dataclass(frozen=True)
class CollateralSale:
    """Pledged spot sold after a liquidation left the wallet negative (USD): gross sold, penalty."""

    gross: float = 0.0
    penalty: float = 0.0


def cover_with_pledged(book: Book, state: ReplayState, market: MarketSnapshot, penalty_rate: float,
                       trades: list[dict[str, object]]) -> CollateralSale:
    """Sell pledged spot at the close to bring a negative wallet cash back to 0 (module docstring):
    gross G = min(-cash / (1 - p), sum_i u_i) pro rata to the pledged values u_i, penalty p G.
    Mutates ``state`` (spot, cash) and appends ``collateral_sale`` trades. Nothing when the cash
    is >= 0 or nothing is pledged."""
    if state.cash >= 0 or not book.pledged:
        return CollateralSale()
    val = value_state(book, state, market)
    view = book.evolve(spot=state.spot, futures=state.futures, cash=state.cash, validate=False)
    u = view.pledged_usd(val.spot_values)
    total = float(u.sum())
    if total <= 0:
        return CollateralSale()
    gross = min(-state.cash / (1.0 - penalty_rate), total)
    sell_all = gross >= total
    fees = 0.0
    for i, a in enumerate(book.asset_symbols):
        if u[i] <= 0:
            continue
        g = float(u[i]) if sell_all else gross * float(u[i]) / total
        px = market.spot_price(a)
        units = min(g / px, state.spot[a])
        fee = penalty_rate * g
        state.spot[a] = max(state.spot[a] - units, 0.0)
        state.cash += g - fee
        fees += fee
        trades.append({"time": market.time, "kind": "collateral_sale", "symbol": a,
                       "quantity": -units, "price": px, "notional": -g, "fee": fee,
                       "slippage": 0.0})
    return CollateralSale(gross=total if sell_all else gross, penalty=fees)


def pledged_spot_usd(book: Book, state: ReplayState, market: MarketSnapshot) -> float:
    """sum_i u_i (USD): the market value of the spot the book pledges as margin, as it stands (0
    without pledges). With the replay's pledged switch off it still backs a wallet's debt after a
    liquidation (the margin check counted it), so the insurance fund takes only what exceeds it."""
    if not book.pledged:
        return 0.0
    # the pledged part of a holding depends on the quantity held now (a rule's quantity cap)
    view = book.evolve(spot=state.spot)
    return float(view.pledged_usd(value_state(book, state, market).spot_values).sum())


def cover_deficit(book: Book, state: ReplayState, market: MarketSnapshot, penalty_rate: float,
                  trades: list[dict[str, object]], *, pledged: bool) -> tuple[float, float]:
    """After a liquidation (positions closed, penalty paid), the wallet's deficit: with
    ``pledged`` on, pledged spot is sold at the penalty to cover it (:func:`cover_with_pledged`);
    what the account then lacks is the insurance fund's (``models.margin.insurance_fund_cover``),
    the account being the wallet cash, plus the pledged spot's value when ``pledged`` is off (the
    margin check counted it, so it still backs the debt). Mutates ``state``; returns (the penalty
    on the collateral sold, the USD the insurance fund absorbed)."""
    sale = (cover_with_pledged(book, state, market, penalty_rate, trades) if pledged
            else CollateralSale())
    backing = 0.0 if pledged else pledged_spot_usd(book, state, market)
    absorbed = insurance_fund_cover(state.cash + backing)
    state.cash += absorbed
    return sale.penalty, absorbed
