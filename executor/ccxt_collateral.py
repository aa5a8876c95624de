"""Spot pledged as futures margin, read from a Binance account (part of
:class:`~executor.ccxt_gateway.CcxtGateway`).

- Multi-Assets mode (USD-M; the default ``pledge_source``): when the futures wallet holds a book
  asset other than the quote (account ``assets`` rows with ``walletBalance`` > 0), the mode is read
  (``GET /fapi/v1/multiAssetsMargin``, ccxt ``fapiPrivateGetMultiAssetsMargin``) and, when on, each
  such asset's ``bidBuffer`` (a fraction; ``GET /fapi/v1/assetIndex``, ccxt
  ``fapiPublicGetAssetIndex``): the book's ``pledged`` becomes exactly those holdings, the wallet
  quantity (base units) at index (USD) x (1 - bidBuffer) (``models.collateral.bid_buffer_rule``;
  the index is the market's spot price, which :meth:`CcxtGateway.market` sets to the index), and
  spot is raised to at least the wallet quantity. With the mode off only the quote counts as margin
  on USD-M, so nothing is pledged;
- other USD stablecoins in the futures wallet (:data:`STABLECOINS` less the quote: USDC, FDUSD, ...)
  are cash: in Multi-Assets mode each adds walletBalance x index x (1 - bidBuffer) USD (its
  ``assetIndex`` row; a negative balance, a debt, x index x (1 + askBuffer)) to the wallet's cash;
  with the mode off (or without an ``assetIndex`` row) Binance counts only the quote as margin, so
  a positive balance adds 0 (a debt its face value); :attr:`CcxtCollateral.stablecoin_notes` says
  what was done with each;
- Portfolio Margin (``pledge_source="portfolio_margin"``): tiered collateral rules for the book's
  ``[pledged]`` assets and the futures wallet's assets, from ``GET /sapi/v1/margin/
  crossMarginCollateralRatio`` (ccxt ``sapiGetMarginCrossMarginCollateralRatio``: per group of
  ``assetNames`` tiers ``minUsdValue``, ``maxUsdValue`` (USD; absent: open-ended),
  ``discountRate``) and ``GET /sapi/v1/portfolio/collateralRate`` (ccxt
  ``sapiGetPortfolioCollateralRate``: one ``collateralRate`` per asset). Tier k of asset a gets
  rate c_k = min(discountRate_k, collateralRate_a) (the lower of the two, conservative; an asset in
  only one answer takes that one's rates, a flat rate being one open tier), so C(u) = sum_k c_k
  clip(u - m_k, 0, M_k - m_k) (``models.collateral.tiered_rule``). An asset in neither answer, or
  whose tiers do not validate, is not counted as margin (warned).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from executor.ccxt_base import CcxtBase
from models.book import Book
from models.collateral import CollateralRule, as_rule, bid_buffer_rule, tiered_rule
from models.errors import ValidationError

log = logging.getLogger("executor.ccxt")

#: USD stablecoins a futures wallet may hold; those other than the gateway's quote (USDT) are
#: counted into the wallet's cash (see the module docstring), never pledged as spot.
STABLECOINS = ("USDT", "USDC", "FDUSD", "BFUSD", "TUSD", "USDP", "DAI")


def wallet_balances(bal: Mapping[str, Any]) -> dict[str, float]:
    """The futures wallet's ``walletBalance`` per asset (units of the asset) from the account's
    ``info.assets`` rows (Binance USD-M ``GET /fapi/v2/account``); rows without one are left out,
    and the first row of an asset counts."""
    info = bal.get("info")
    rows = info.get("assets") if isinstance(info, Mapping) else None
    out: dict[str, float] = {}
    for row in rows if isinstance(rows, list) else []:
        if isinstance(row, Mapping) and row.get("walletBalance") is not None:
            out.setdefault(str(row.get("asset") or ""), float(row["walletBalance"]))
    return out


def stablecoin_balances(bal: Mapping[str, Any], quote: str) -> dict[str, float]:
    """The futures wallet's USD stablecoins other than ``quote``: asset -> walletBalance (units of
    the coin, non-zero; :func:`wallet_balances`)."""
    return {a: q for a, q in wallet_balances(bal).items()
            if q != 0 and a in STABLECOINS and a != quote}


def stablecoin_value(coin: str, q: float, rate: tuple[float, float, float] | None, multi: bool,
                     quote: str) -> tuple[float, str]:
    """(USD counted in cash, the note saying so) for ``q`` units of the stablecoin ``coin`` in the
    futures wallet. With its ``rate`` (index, bidBuffer, askBuffer; Multi-Assets mode) a holding
    counts q x index x (1 - bidBuffer), a debt q x index x (1 + askBuffer), as Binance values
    them; without one (the mode off: Binance counts only ``quote`` as margin; or no assetIndex
    row) a holding counts 0 and a debt its face value q x 1 USD."""
    if rate is not None:
        index, bid, ask = rate
        value = q * index * (1.0 - bid if q > 0 else 1.0 + ask)
        how = (f"index {index:g} x (1 - bidBuffer {bid:g})" if q > 0
               else f"a debt: index {index:g} x (1 + askBuffer {ask:g})")
    else:
        value = min(q, 0.0)
        why = (f"Multi-Assets mode is off, so Binance counts only {quote} as margin" if not multi
               else "it has no Multi-Assets rate (no assetIndex row)")
        how = (f"{why}; to count it, switch Multi-Assets mode on or convert it to {quote}" if q > 0
               else f"a debt, at face value: {why}")
    return value, f"futures wallet {coin} {q:g}: counted in [book] cash as {value:.2f} USD ({how})"


def index_rates(rows: Sequence[Mapping[str, Any]]) -> dict[str, tuple[float, float, float]]:
    """(index USD, bidBuffer, askBuffer) per asset from ``GET /fapi/v1/assetIndex`` rows
    (``<ASSET>USD``) that give an index and a bidBuffer (askBuffer defaults to the bidBuffer)."""
    out: dict[str, tuple[float, float, float]] = {}
    for row in rows:
        sym = str(row.get("symbol") or "")
        if sym.endswith("USD") and row.get("index") is not None and row.get("bidBuffer") is not None:
            bid = float(row["bidBuffer"])
            ask = float(row["askBuffer"]) if row.get("askBuffer") is not None else bid
            out[sym.removesuffix("USD")] = (float(row["index"]), bid, ask)
    return out


class CcxtCollateral(CcxtBase):
    """Multi-Assets bidBuffer and Portfolio Margin collateral reads of a ccxt gateway.

    ``stablecoin_notes``: after :meth:`~executor.ccxt_gateway.CcxtGateway.account`, one sentence per
    stablecoin of the futures wallet other than the quote saying how it was counted in cash."""

    stablecoin_notes: tuple[str, ...] = ()

    def multi_assets_mode(self) -> bool:
        """True when the account is in Binance Multi-Assets mode (``GET /fapi/v1/multiAssetsMargin``);
        False where the exchange has no such endpoint."""
        fn = getattr(self.ex, "fapiPrivateGetMultiAssetsMargin", None)
        if fn is None:
            return False
        answer = self._read("multi_assets_margin", fn)
        return str(answer.get("multiAssetsMargin")).lower() == "true"

    def bid_buffers(self, rows: Sequence[Mapping[str, Any]] | None = None) -> dict[str, float]:
        """bidBuffer per asset (``GET /fapi/v1/assetIndex``: rows ``<ASSET>USD``), a fraction;
        from ``rows`` when given (already read), else read now."""
        out: dict[str, float] = {}
        for row in self.asset_index_rows() if rows is None else rows:
            sym = str(row.get("symbol") or "")
            if sym.endswith("USD") and row.get("bidBuffer") is not None:
                out[sym.removesuffix("USD")] = float(row["bidBuffer"])
        return out

    def stablecoin_cash(self, stables: Mapping[str, float], multi: bool,
                        rows: Sequence[Mapping[str, Any]]) -> float:
        """USD the wallet's other stablecoins ``stables`` (coin -> walletBalance) add to its cash
        (:func:`stablecoin_value`; rates from the ``assetIndex`` ``rows`` in Multi-Assets mode,
        ``multi``). Sets :attr:`stablecoin_notes`, one sentence a coin."""
        rates = index_rates(rows) if multi else {}
        valued = [stablecoin_value(coin, q, rates.get(coin), multi, self._quote)
                  for coin, q in stables.items()]
        for _, note in valued:
            log.info("%s", note)
        self.stablecoin_notes = tuple(note for _, note in valued)
        return sum(value for value, _ in valued)

    def _with_pledged(self, book: Book, held: Mapping[str, float], multi: bool,
                      rows: Sequence[Mapping[str, Any]]) -> Book:
        """``book`` with the wallet's holdings ``held`` (asset -> base units) pledged at
        quantity x index x (1 - bidBuffer) in Multi-Assets mode (``multi``; bidBuffers from the
        ``assetIndex`` ``rows``; nothing pledged otherwise); spot is raised to at least the wallet
        quantity."""
        if not multi:
            log.warning("futures wallet holds %s but Multi-Assets mode is off: only %s counts as "
                        "margin (switch the mode on to pledge them)", sorted(held), self._quote)
            return dataclasses.replace(book, pledged={})
        buffers = self.bid_buffers(rows)
        pledged: dict[str, float | CollateralRule] = {}
        for asset, qty in held.items():
            if asset not in buffers:
                log.warning("%s is not a Multi-Assets collateral asset (no assetIndex row): "
                            "not counted as margin", asset)
                continue
            pledged[asset] = bid_buffer_rule(buffers[asset], f"pledged.{asset}", quantity=qty)
        spot = dict(book.spot)
        for asset, qty in held.items():
            spot[asset] = max(float(spot.get(asset, 0.0)), qty)
        return dataclasses.replace(book, spot=spot, pledged=pledged)

    # --- Portfolio Margin collateral tiers ------------------------------------------------------
    def portfolio_collateral_rates(self) -> dict[str, float]:
        """Portfolio Margin collateral rate per asset (``GET /sapi/v1/portfolio/collateralRate``,
        rows ``{asset, collateralRate}``), a fraction; {} where the exchange has no such endpoint."""
        fn = getattr(self.ex, "sapiGetPortfolioCollateralRate", None)
        if fn is None:
            return {}
        rows = self._read("portfolio_collateral_rate", fn)
        return {str(r["asset"]): float(r["collateralRate"]) for r in rows if isinstance(r, dict)
                and r.get("asset") and r.get("collateralRate") is not None}

    def cross_margin_collateral_tiers(self) -> dict[str, list[tuple[float, float, float]]]:
        """Tiers (min USD, max USD, rate) per asset (``GET /sapi/v1/margin/
        crossMarginCollateralRatio``: groups ``{collaterals: [{minUsdValue, maxUsdValue,
        discountRate}], assetNames}``; a tier without ``maxUsdValue`` is open-ended, max = inf);
        {} where the exchange has no such endpoint."""
        fn = getattr(self.ex, "sapiGetMarginCrossMarginCollateralRatio", None)
        if fn is None:
            return {}
        out: dict[str, list[tuple[float, float, float]]] = {}
        for group in self._read("cross_margin_collateral_ratio", fn):
            if not isinstance(group, dict):
                continue
            tiers = sorted((float(t.get("minUsdValue") or 0.0),
                            math.inf if t.get("maxUsdValue") in (None, "") else float(t["maxUsdValue"]),
                            float(t["discountRate"]))
                           for t in group.get("collaterals") or [] if t.get("discountRate") is not None)
            for name in group.get("assetNames") or []:
                out[str(name)] = tiers
        return out

    def portfolio_tiers(self, assets: set[str]) -> dict[str, list[tuple[float, float, float]]]:
        """Tiers (min USD, max USD, rate) of ``assets`` in Portfolio Margin: the cross-margin tiers
        with each rate capped at the asset's collateralRate, c_k = min(discountRate_k, rate_a);
        an asset with only a collateralRate gets one tier [0, inf, rate_a]. Asks nothing when
        ``assets`` is empty."""
        if not assets:
            return {}
        tiers = self.cross_margin_collateral_tiers()
        rates = self.portfolio_collateral_rates()
        out: dict[str, list[tuple[float, float, float]]] = {}
        for a in sorted(assets):
            cap = rates.get(a)
            if a in tiers:
                out[a] = [(lo, hi, rate if cap is None else min(rate, cap)) for lo, hi, rate in tiers[a]]
            elif cap is not None:
                out[a] = [(0.0, math.inf, cap)]
        return out

    def _with_portfolio_pledges(self, book: Book, held: Mapping[str, float]) -> Book:
        """``book`` with its ``[pledged]`` assets (their quantity caps kept) and the futures wallet's
        holdings ``held`` (quantity = the wallet's) valued by the exchange's Portfolio Margin tiers
        (:meth:`portfolio_tiers`); spot is raised to at least the wallet quantity. An asset the
        exchange gives no valid tiers for is not pledged (warned)."""
        wanted: dict[str, float | None] = {s: as_rule(p, f"pledged.{s}").quantity
                                           for s, p in book.pledged.items()}
        wanted.update(held)
        if not wanted:
            return book
        tiers = self.portfolio_tiers(set(wanted))
        pledged: dict[str, float | CollateralRule] = {}
        for asset, qty in wanted.items():
            if asset not in tiers:
                log.warning("%s has no Portfolio Margin collateral rate: not counted as margin", asset)
                continue
            try:
                pledged[asset] = tiered_rule(tiers[asset], f"pledged.{asset}", quantity=qty)
            except ValidationError as exc:
                log.warning("%s: the exchange's collateral tiers are not usable (%s): not counted "
                            "as margin", asset, exc)
        spot = dict(book.spot)
        for asset, q in held.items():
            spot[asset] = max(float(spot.get(asset, 0.0)), q)
        return dataclasses.replace(book, spot=spot, pledged=pledged)
