"""The book: what the user holds (spot, futures, collateral) and what they want (target weights).

Units: spot quantities in base units, futures positions in contracts (signed, long > 0), cash and all
valuations in USD. Weights are fractions of the target base (invested NAV unless ``targets_base`` is
``nav``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property

import numpy as np

from models.book_checks import check_book
from models.collateral import CollateralRule, Pledge, as_rule, pledged_collateral
from models.errors import ValidationError
from models.fill_rule import inverse_fill
from models.instruments import FuturesContract, Settlement, SpotAsset
from models.market import MarketSnapshot


class TargetsBase(StrEnum):
    """What the target weights are fractions of.

    INVESTED: NAV less the futures wallet (the margin reserve carries no target exposure).
    NAV: the whole NAV (capital-efficient: futures give exposure on the reserve too).
    """

    INVESTED = "invested"
    NAV = "nav"


@dataclass(frozen=True)
class Valuation:
    """A book valued at one market (USD): spot value per asset, futures notional per contract (the
    exchange's notional: margin, funding, fees; ``Book.futures_notional``), unrealised PnL, wallet
    (cash + PnL), NAV, collateral (wallet + the exchange's collateral value of pledged spot,
    ``Book.pledged_collateral``), the target base V and the futures USD exposure per contract (the
    price sensitivity of the position's value; ``Book.futures_exposure``). The two differ only for
    an inverse position struck away from the mark."""

    spot_values: np.ndarray
    notional: np.ndarray
    upnl: float
    wallet: float
    nav: float
    collateral: float
    base: float
    exposure: np.ndarray


@dataclass(frozen=True)
class FuturesPosition:
    """An open futures position: signed contracts and the average entry price (USD)."""

    contracts: float
    entry_price: float


@dataclass(frozen=True)
class Book:
    """A spot portfolio with its futures overlay and targets.

    ``cash`` is the stablecoin balance of the futures wallet (collateral, USD; negative is a debt).
    ``pledged`` maps a spot asset to how the exchange counts it as collateral: a flat ratio after
    haircut (0.95 = 5% haircut) or a :class:`models.collateral.CollateralRule` (Multi-Assets
    bidBuffer, tiered Portfolio Margin rates, optionally a pledged quantity). ``targets`` map spot
    asset -> weight; the weights sum to at most 1 (the rest is cash).
    """

    assets: tuple[SpotAsset, ...]
    contracts: tuple[FuturesContract, ...]
    spot: Mapping[str, float]
    targets: Mapping[str, float]
    cash: float = 0.0
    futures: Mapping[str, FuturesPosition] = field(default_factory=dict)
    pledged: Mapping[str, Pledge] = field(default_factory=dict)
    targets_base: TargetsBase = TargetsBase.INVESTED
    name: str = "book"

    def __post_init__(self) -> None:
        check_book(self)

    # --- symbols and structure -------------------------------------------------------------
    @property
    def asset_symbols(self) -> list[str]:
        """Spot asset symbols, in book order (the optimiser's asset index i)."""
        return [a.symbol for a in self.assets]

    @property
    def contract_symbols(self) -> list[str]:
        """Contract symbols, in book order (the optimiser's contract index j)."""
        return [c.symbol for c in self.contracts]

    @cached_property
    def _exposure(self) -> np.ndarray:
        idx = {s: i for i, s in enumerate(self.asset_symbols)}
        B = np.zeros((len(self.assets), len(self.contracts)))
        for j, c in enumerate(self.contracts):
            B[idx[c.underlying], j] = 1.0
        B.flags.writeable = False
        return B

    @cached_property
    def _contract_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(contract sizes, inverse mask) per contract."""
        size = np.array([c.contract_size for c in self.contracts], dtype=float)
        inverse = np.array([c.settlement == Settlement.INVERSE for c in self.contracts], dtype=bool)
        return size, inverse

    def exposure_matrix(self) -> np.ndarray:
        """B (N x M): B[i, j] = 1 when contract j's underlying is asset i (read-only)."""
        return self._exposure

    def target_vector(self) -> np.ndarray:
        """w* (N): target weights in asset order (0 for assets without a target)."""
        return np.array([float(self.targets.get(s, 0.0)) for s in self.asset_symbols])

    @cached_property
    def _pledge_rules(self) -> tuple[CollateralRule | None, ...]:
        """The collateral rule per asset in book order (None where not pledged)."""
        return tuple(as_rule(self.pledged[s], f"pledged.{s}") if s in self.pledged else None
                     for s in self.asset_symbols)

    @cached_property
    def _flat_pledges(self) -> np.ndarray | None:
        """h_i per asset when every rule is a flat ratio over the whole holding (the fast path of
        :meth:`pledged_collateral`), else None."""
        out = np.zeros(len(self.assets))
        for i, rule in enumerate(self._pledge_rules):
            if rule is None:
                continue
            if rule.flat_ratio is None or rule.quantity is not None:
                return None
            out[i] = rule.flat_ratio
        out.flags.writeable = False
        return out

    def pledge_rules(self) -> tuple[CollateralRule | None, ...]:
        """The collateral rule per asset in book order (None where not pledged)."""
        return self._pledge_rules

    def pledge_vector(self) -> np.ndarray:
        """The collateral ratio per asset (0 where not pledged): C_i(u) / u for a flat ratio; for a
        tiered rule its first tier's rate (an upper bound of C_i(u) / u: use
        :meth:`pledged_collateral` or :meth:`stressed_collateral` for exact values), times the
        pledged fraction of the holding when a rule pledges a quantity."""
        return np.array([0.0 if rule is None else
                         rule.first_rate * rule.pledged_fraction(float(self.spot.get(s, 0.0)))
                         for s, rule in zip(self.asset_symbols, self._pledge_rules, strict=True)])

    def pledged_usd(self, spot_values: np.ndarray) -> np.ndarray:
        """u_i (USD): the pledged part of each asset's spot value, spot_value_i x min(1,
        quantity_i / held_i) (the whole value when the rule gives no quantity; 0 if not pledged)."""
        frac = np.array([0.0 if rule is None else rule.pledged_fraction(float(self.spot.get(s, 0.0)))
                         for s, rule in zip(self.asset_symbols, self._pledge_rules, strict=True)])
        result: np.ndarray = frac * np.asarray(spot_values, dtype=float)
        return result

    def pledged_collateral(self, spot_values: np.ndarray) -> float:
        """sum_i C_i(u_i) (USD): the exchange's collateral value of pledged spot at asset values
        ``spot_values`` (USD, book order); ``models.collateral`` has the rules."""
        if not self.pledged:
            return 0.0
        flat = self._flat_pledges
        if flat is not None:
            return float(flat @ spot_values)
        return pledged_collateral(self._pledge_rules, self.pledged_usd(spot_values))

    def stressed_collateral(self, valuation: Valuation, returns: np.ndarray) -> float:
        """collateral(r) = W + sum_i C_i(u_i (1 + r_i)) (USD): the margin balance after asset returns
        r (N, each > -1) with pledged spot re-priced through its rule (tiers included) and the
        wallet W = cash + uPnL held fixed (the futures PnL g' x of the move is added by
        ``MarginModel.stress_surplus``). At r = 0 it equals ``valuation.collateral``."""
        moved = np.asarray(valuation.spot_values, dtype=float) * (1.0 + np.asarray(returns, dtype=float))
        return valuation.wallet + self.pledged_collateral(moved)

    # --- valuation -------------------------------------------------------------------------
    def check_market(self, market: MarketSnapshot) -> None:
        """Raise a clear error if the market lacks a price this book needs."""
        for s in self.asset_symbols:
            market.spot_price(s)
        for c in self.contracts:
            market.mark_price(c.symbol)

    def spot_values(self, market: MarketSnapshot) -> np.ndarray:
        """Spot value per asset (USD)."""
        return np.array([float(self.spot.get(s, 0.0)) * market.spot_price(s)
                         for s in self.asset_symbols])

    def contracts_vector(self) -> np.ndarray:
        """Current position per contract, in contracts (signed)."""
        return np.array([self.futures[c.symbol].contracts if c.symbol in self.futures else 0.0
                         for c in self.contracts])

    def marks(self, market: MarketSnapshot) -> np.ndarray:
        """Mark price per contract (USD)."""
        return np.array([market.mark_price(c.symbol) for c in self.contracts], dtype=float)

    def futures_notional(self, market: MarketSnapshot) -> np.ndarray:
        """Signed USD notional of each current position as the exchange counts it (margin tiers,
        initial and maintenance margin, funding, fees, liquidation penalty): linear q x size x mark;
        inverse q x size, the face value (USD), fixed whatever the price (a coin-M exchange margins
        face / mark coin, i.e. face USD). This is *not* the exposure of an inverse position struck
        away from the mark: see :meth:`futures_exposure` (effective weights, the optimiser's x0)."""
        size, inverse = self._contract_arrays
        result: np.ndarray = self.contracts_vector() * size * np.where(inverse, 1.0, self.marks(market))
        return result

    def _entries(self) -> np.ndarray:
        """Entry price per contract (USD; 1.0 where no position is held, a harmless placeholder)."""
        q = self.contracts_vector()
        entry = np.array([self.futures[c.symbol].entry_price if c.symbol in self.futures else 1.0
                          for c in self.contracts], dtype=float)
        result: np.ndarray = np.where(q != 0, entry, 1.0)
        return result

    def futures_exposure(self, market: MarketSnapshot) -> np.ndarray:
        """x0 (M): signed USD exposure of each current position, dValue / dlog(price) (USD per unit
        log move of the underlying): the futures term of the effective weights e = (spot + B x0) / V
        and the optimiser's starting position.

        Linear: q x size x mark (its notional, :meth:`futures_notional`). Inverse: the position's
        value is its USD PnL q x size x (1/entry - 1/mark) x mark = q x size x (mark/entry - 1), so
        the exposure is q x size x mark / entry (face x mark / entry), not the face q x size: a
        short of face F struck at E against spot worth S is flat when S = F x mark / E. How a trade
        moves it: ``models.fill_rule``."""
        size, inverse = self._contract_arrays
        q = self.contracts_vector()
        mark = self.marks(market)
        linear: np.ndarray = q * size * mark
        if not inverse.any():
            return linear
        result: np.ndarray = np.where(inverse, q * size * (mark / self._entries()), linear)
        return result

    def exposure_offset(self, market: MarketSnapshot) -> np.ndarray:
        """delta0 (M, USD): exposure less notional of each current position, :meth:`futures_exposure`
        - :meth:`futures_notional` = q x size x (mark/entry - 1) for an inverse position (its USD
        PnL), exactly 0 for a linear one (how a trade at the mark moves both: ``models.fill_rule``)."""
        size, inverse = self._contract_arrays
        if not inverse.any():
            return np.zeros(len(self.contracts))
        q = self.contracts_vector()
        result: np.ndarray = np.where(inverse, q * size * (self.marks(market) / self._entries() - 1.0),
                                      0.0)
        return result

    def unrealized_pnl(self, market: MarketSnapshot) -> float:
        """Unrealised futures PnL (USD) at mark: linear q*size*(mark-entry); inverse in coin x mark,
        q*size*(1/entry - 1/mark)*mark."""
        if not self.futures:
            return 0.0
        size, inverse = self._contract_arrays
        q = self.contracts_vector()
        entry = np.array([self.futures[c.symbol].entry_price if c.symbol in self.futures else 1.0
                          for c in self.contracts], dtype=float)
        entry = np.where(q != 0, entry, 1.0)
        mark = self.marks(market)
        linear = q * size * (mark - entry)
        inv = q * size * (1.0 / entry - 1.0 / mark) * mark
        return float(np.where(inverse, inv, linear).sum())

    def valuation(self, market: MarketSnapshot) -> Valuation:
        """Every valuation at once (each price read once): see :class:`Valuation`. The same
        formulas as :meth:`spot_values`, :meth:`unrealized_pnl`, :meth:`futures_notional` and
        :meth:`futures_exposure`."""
        spot = self.spot_values(market)
        size, inverse = self._contract_arrays
        mark = self.marks(market)
        if self.futures:
            q = self.contracts_vector()
            entry = np.array([self.futures[c.symbol].entry_price if c.symbol in self.futures else 1.0
                              for c in self.contracts], dtype=float)
            entry = np.where(q != 0, entry, 1.0)
            upnl = float(np.where(inverse, q * size * (1.0 / entry - 1.0 / mark) * mark,
                                  q * size * (mark - entry)).sum())
            notional = q * size * np.where(inverse, 1.0, mark)
            # exposure: linear = notional; inverse q x size x mark / entry (see futures_exposure)
            exposure = (np.where(inverse, q * size * (mark / entry), notional) if inverse.any()
                        else notional)
        else:
            upnl = 0.0
            notional = np.zeros(len(self.contracts))
            exposure = notional
        wallet = self.cash + upnl
        invested = float(spot.sum())
        nav = invested + wallet
        collateral = wallet + self.pledged_collateral(spot)
        return Valuation(spot_values=spot, notional=notional, upnl=upnl, wallet=wallet, nav=nav,
                         collateral=collateral,
                         base=nav if self.targets_base == TargetsBase.NAV else invested,
                         exposure=exposure)

    def wallet_balance(self, market: MarketSnapshot) -> float:
        """Futures wallet margin balance (USD): stable cash + unrealised PnL (pledged spot excluded)."""
        return self.cash + self.unrealized_pnl(market)

    def collateral(self, market: MarketSnapshot) -> float:
        """Margin balance (USD): stable cash + unrealised PnL + sum_i C_i(pledged value_i), C_i the
        asset's collateral rule (flat ratio, bidBuffer or tiers; ``models.collateral``)."""
        return self.wallet_balance(market) + self.pledged_collateral(self.spot_values(market))

    def nav(self, market: MarketSnapshot) -> float:
        """NAV (USD) = spot value + stable cash + unrealised futures PnL."""
        return float(self.spot_values(market).sum()) + self.wallet_balance(market)

    def base(self, market: MarketSnapshot) -> float:
        """V, the value the target weights apply to (USD): NAV, or NAV less the wallet (= spot value)."""
        if self.targets_base == TargetsBase.NAV:
            return self.nav(market)
        return float(self.spot_values(market).sum())

    def effective_weights(self, market: MarketSnapshot) -> np.ndarray:
        """e = s + B x0 / V: spot plus futures exposure per asset, as weights of the base (x0 the
        USD exposure of :meth:`futures_exposure`: q x size x mark / entry for an inverse position,
        not its face value)."""
        V = self.base(market)
        exposure = self.spot_values(market) + self.exposure_matrix() @ self.futures_exposure(market)
        result: np.ndarray = exposure / V
        return result

    def with_futures(self, contracts: Mapping[str, float], market: MarketSnapshot) -> Book:
        """A copy holding ``contracts`` (by contract symbol), traded at the mark (fees are not
        charged here); NAV and collateral are unchanged by the switch.

        Linear positions that change are re-struck at the mark, their unrealised PnL moved into
        cash (a linear exposure does not depend on the entry: the exchange's averaging with the
        PnL booked sooner). Inverse positions follow the exchange's fill rule
        (:func:`models.fill_rule.inverse_fill`), as their exposure depends on the entry."""
        new_cash = self.cash
        new_pos: dict[str, FuturesPosition] = {}
        for c in self.contracts:
            old = self.futures.get(c.symbol)
            q = float(contracts.get(c.symbol, old.contracts if old else 0.0))
            mark = market.mark_price(c.symbol)
            if old is not None and old.contracts == q:
                new_pos[c.symbol] = old
                continue
            if old is not None and old.contracts != 0 and c.settlement == Settlement.INVERSE:
                entry, realised = inverse_fill(old.contracts, old.entry_price, q, c.contract_size,
                                               mark)
                new_cash += realised
                if q != 0:
                    new_pos[c.symbol] = FuturesPosition(q, entry)
                continue
            if old is not None and old.contracts != 0:
                new_cash += old.contracts * c.contract_size * (mark - old.entry_price)
            if q != 0:
                new_pos[c.symbol] = FuturesPosition(q, mark)
        return self.evolve(futures=new_pos, cash=new_cash)

    def evolve(self, *, spot: Mapping[str, float] | None = None,
               futures: Mapping[str, FuturesPosition] | None = None,
               cash: float | None = None, validate: bool = True) -> Book:
        """A copy with new holdings (same instruments, targets and settings).

        Only the holdings change, so the full validation of ``__post_init__`` is not re-run (a
        replay calls this every step); the new values are checked here instead: spot quantities
        finite and >= 0 for known assets, positions in known contracts, cash finite. Cached
        instrument arrays (exposure matrix, contract sizes) carry over. ``validate=False`` skips
        those checks for a caller that has already checked the holdings (the backtester's replay
        loop checks every policy output before it changes its state).
        """
        # fill the caches once so every copy shares them
        _ = self._exposure, self._contract_arrays, self._pledge_rules, self._flat_pledges
        new = copy.copy(self)
        if not validate:
            if spot is not None:
                object.__setattr__(new, "spot", dict(spot))
            if futures is not None:
                object.__setattr__(new, "futures", dict(futures))
            if cash is not None:
                object.__setattr__(new, "cash", float(cash))
            return new
        if spot is not None:
            known = set(self.asset_symbols)
            for sym, q in spot.items():
                if sym not in known or not (math.isfinite(q) and q >= 0):
                    raise ValidationError(f"spot.{sym}", f"is {q}",
                                          "hold a finite quantity >= 0 of a book asset")
            object.__setattr__(new, "spot", dict(spot))
        if futures is not None:
            known_c = set(self.contract_symbols)
            for sym, pos in futures.items():
                if sym not in known_c or not math.isfinite(pos.contracts):
                    raise ValidationError(f"futures.{sym}", f"is {pos.contracts} contracts",
                                          "hold a finite position in a book contract")
            object.__setattr__(new, "futures", dict(futures))
        if cash is not None:
            if not math.isfinite(cash):
                raise ValidationError("cash", f"is {cash}", "give the wallet's stablecoin USD")
            object.__setattr__(new, "cash", float(cash))
        return new

