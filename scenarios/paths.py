"""Market path generators for Monte Carlo: resample or simulate joint asset returns and funding.

A generator turns a seed and a number of steps into a ``scenarios.market_path.MarketPath`` that the
backtester replays like history. Two models, both fitted to one :class:`JointHistory` (per step
t = 1..T of the source: the assets' simple returns r_t, the perp funding of each settlement in
(t-1, t], and the perp basis b_t = mark / spot - 1):

- :class:`BlockBootstrap`: the stationary bootstrap (Politis and Romano, 1994). Rows of the
  history are copied whole (returns, funding and basis of one source step stay together, so the
  cross-section and the funding/return dependence are kept) in blocks: after each row the next one
  continues the block (source row j + 1, circularly) with probability 1 - p, else a new block starts
  at a uniformly drawn row. Block lengths are geometric with mean ``mean_block`` = 1 / p.
- :class:`GarchT`: per asset a GARCH(1,1) with Student-t innovations fitted by ``arch`` to the log
  returns l_t (in percent):
      l_t = mu + e_t,  e_t = sigma_t z_t,  sigma_t^2 = omega + alpha e_{t-1}^2 + beta sigma_{t-1}^2,
  z_t standardised Student-t with nu degrees of freedom (unit variance: fat tails, kurtosis > 3;
  alpha > 0: volatility clustering; alpha + beta is capped at ``MAX_PERSISTENCE``, omega then set so
  that omega / (1 - alpha - beta) is the sample variance). The innovations are tied by a
  Gaussian copula: z_t = F_nu^-1(Phi(L n_t)) * sqrt((nu - 2) / nu), n_t ~ N(0, I), L the
  Cholesky factor of the correlation R of the fitted standardised residuals (constant conditional
  correlation: per-asset variances lower the unconditional correlation of returns a little).
  Funding and basis are block-bootstrapped from the history (independently of the returns).
  Simple returns exp(l / 100) - 1 > -1.

A generated path starts at ``start`` (the book's market time) at ``start_prices`` (the book's spot
prices) and has ``steps + 1`` timestamps ``start + k x step``; prices follow
p_k = p_{k-1} (1 + r_k). Row 0's funding and basis are drawn too (the policy sees a funding rate
and a mark at the first step). Funding settlements of step k are stamped ``t_k - offset`` for the
source's settlement offsets (e.g. 0, 8 and 16 h before a daily close). Contracts take their
underlying's series: mark = spot x (1 + basis) (perpetuals and dated alike), funding for
perpetuals only; half spread and ADV are the source's, held constant. Every path is labelled
synthetic. Same seed -> the same path.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd
from scipy import stats

from models.errors import ValidationError
from models.instruments import ContractKind, FuturesContract
from scenarios.market_path import MarketPath

SeedLike = int | np.random.Generator | np.random.SeedSequence
#: Largest alpha + beta kept from a GARCH fit. Each asset's variance follows its own recursion
#: (constant conditional correlation), so near-integrated variances drift apart for long spells
#: and lower the unconditional correlation of returns below the fitted R; capping the persistence
#: keeps clustering (half-life ~34 steps) while keeping the cross-section close to R.
MAX_PERSISTENCE = 0.98
#: Default funding interval (hours) when the book has no perpetual on an asset.
DEFAULT_FUNDING_HOURS = 8.0


def as_generator(seed: SeedLike) -> np.random.Generator:
    """A numpy Generator from an int, a SeedSequence or a Generator (returned as is)."""
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


# ---------------------------------------------------------------------------------------------
# the source history


@dataclass(frozen=True)
class JointHistory:
    """Per-step joint rows of a source history (T rows, N assets, S settlements per step).

    ``returns`` (T x N): simple returns of step t; ``funding`` (T x S x N): rate per settlement
    (fraction, positive: longs pay) of the settlements stamped ``t - settle_offsets[s]``;
    ``basis`` (T x N): mark / spot - 1 at the end of step t; ``step``: the step length;
    ``half_spread`` (fraction) and ``adv`` (USD/day, NaN: unknown) per asset.
    """

    assets: tuple[str, ...]
    returns: np.ndarray
    funding: np.ndarray
    basis: np.ndarray
    step: pd.Timedelta
    settle_offsets: tuple[pd.Timedelta, ...]
    half_spread: Mapping[str, float] = field(default_factory=dict)
    adv: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        t, n = self.returns.shape if self.returns.ndim == 2 else (0, 0)
        if self.returns.ndim != 2 or n != len(self.assets) or t < 2:
            raise ValidationError("history.returns", f"has shape {self.returns.shape}",
                                  f"give at least 2 rows of {len(self.assets)} asset returns")
        if self.funding.shape != (t, len(self.settle_offsets), n):
            raise ValidationError("history.funding", f"has shape {self.funding.shape}",
                                  f"give (rows, settlements per step, assets) = "
                                  f"({t}, {len(self.settle_offsets)}, {n})")
        if self.basis.shape != (t, n):
            raise ValidationError("history.basis", f"has shape {self.basis.shape}",
                                  f"give (rows, assets) = ({t}, {n})")
        for name, arr in (("returns", self.returns), ("funding", self.funding), ("basis", self.basis)):
            if not np.all(np.isfinite(arr)):
                raise ValidationError(f"history.{name}", "has missing or non-finite values",
                                      "drop or fill the gaps in the source history")
        if np.any(self.returns <= -1.0) or np.any(self.basis <= -1.0):
            raise ValidationError("history.returns", "has a return or basis <= -100%",
                                  "give prices > 0")

    @property
    def rows(self) -> int:
        """T, the number of joint rows."""
        return int(self.returns.shape[0])

    @staticmethod
    def from_market_path(path: MarketPath, contracts: Sequence[FuturesContract],
                         assets: Sequence[str]) -> JointHistory:
        """The joint rows of a market path (e.g. ``MarketPath.from_synthetic`` or ``from_data``).

        Per asset the funding and basis come from its first perpetual among ``contracts`` (an asset
        without one has no funding and mark = spot). Settlements are put on a regular grid of
        ``interval`` (that perpetual's funding interval) ending at each step's timestamp: the rate at
        grid time s is the last settlement at or before s (0 before the first), so a step of length
        ``step`` holds ``step / interval`` settlements. The step is the median spacing of the path.
        """
        syms = list(assets)
        missing = [a for a in syms if a not in path.spot.columns]
        if missing:
            raise ValidationError("history.spot", f"has no prices for {missing}",
                                  "give a spot column for every asset of the book")
        index = pd.DatetimeIndex(path.spot.index)
        if len(index) < 3:
            raise ValidationError("history.spot", f"has {len(index)} rows",
                                  "give a history of at least 3 steps")
        step = pd.Timedelta(pd.Series(index).diff().dropna().median())
        perp: dict[str, FuturesContract] = {}
        for c in contracts:
            if c.kind == ContractKind.PERPETUAL and c.underlying in syms and c.underlying not in perp:
                perp[c.underlying] = c
        hours = {c.funding_interval_h for c in perp.values()} or {DEFAULT_FUNDING_HOURS}
        if len(hours) > 1:
            raise ValidationError("contracts.funding_interval_h", f"differs between perpetuals "
                                  f"({sorted(hours)})", "give the book's perpetuals one funding "
                                  "interval for Monte Carlo")
        interval = pd.Timedelta(hours=float(hours.pop()))
        ratio = step / interval
        if ratio < 1 or abs(ratio - round(ratio)) > 1e-9:
            raise ValidationError("montecarlo.step", f"is {step}, not a whole number of funding "
                                  f"intervals ({interval})", 'use step = "1d" or "8h"')
        offsets = tuple(k * interval for k in range(round(ratio)))
        spot = path.spot[syms].to_numpy(dtype=float)
        returns = spot[1:] / spot[:-1] - 1.0
        ends = index[1:]
        funding = np.zeros((len(ends), len(offsets), len(syms)))
        basis = np.zeros((len(ends), len(syms)))
        for i, a in enumerate(syms):
            pc = perp.get(a)
            if pc is None:
                continue
            if path.funding is not None and pc.symbol in path.funding.columns:
                col = path.funding[pc.symbol].astype(float)
                for s, off in enumerate(offsets):
                    pos = col.index.searchsorted(ends - off, side="right") - 1
                    values = col.to_numpy(dtype=float)[np.maximum(pos, 0)]
                    funding[:, s, i] = np.where(pos >= 0, values, 0.0)
            if path.mark is not None and pc.symbol in path.mark.columns:
                basis[:, i] = path.mark[pc.symbol].to_numpy(dtype=float)[1:] / spot[1:, i] - 1.0
        half = _per_asset(path.half_spread, perp)
        adv_src = path.adv.median() if isinstance(path.adv, pd.DataFrame) else path.adv
        adv = _per_asset(adv_src, perp)
        return JointHistory(assets=tuple(syms), returns=returns, funding=funding, basis=basis,
                            step=step, settle_offsets=offsets, half_spread=half, adv=adv)


def _per_asset(values: pd.Series | None, perp: Mapping[str, FuturesContract]) -> dict[str, float]:
    """A per-contract series re-keyed by the underlying of each asset's perpetual (finite only)."""
    if values is None:
        return {}
    out: dict[str, float] = {}
    for a, c in perp.items():
        if c.symbol in values.index and math.isfinite(float(values[c.symbol])):
            out[a] = float(values[c.symbol])
    return out


# ---------------------------------------------------------------------------------------------
# the generated path


@dataclass(frozen=True)
class PathFrame:
    """Where a generated path starts and which contracts it prices.

    ``start``: the first timestamp (tz-aware UTC); ``start_prices``: USD per asset at ``start``;
    ``contracts``: the book's futures contracts (each one's underlying must be an asset).
    """

    start: pd.Timestamp
    start_prices: Mapping[str, float]
    contracts: tuple[FuturesContract, ...] = ()

    def __post_init__(self) -> None:
        if self.start.tzinfo is None:
            raise ValidationError("montecarlo.start", f"is {self.start} (no time zone)",
                                  "give a UTC timestamp")
        bad = {a: p for a, p in self.start_prices.items() if not (math.isfinite(p) and p > 0)}
        if bad:
            raise ValidationError("montecarlo.start_prices", f"has {bad}", "give USD prices > 0")
        for c in self.contracts:
            if c.underlying not in self.start_prices:
                raise ValidationError(f"contracts.{c.symbol}.underlying",
                                      f"is {c.underlying!r}, which has no start price",
                                      "give every underlying a start price")


def build_market_path(history: JointHistory, frame: PathFrame, returns: np.ndarray,
                      funding: np.ndarray, basis: np.ndarray) -> MarketPath:
    """A ``MarketPath`` of ``len(returns)`` timestamps from generated rows (see the module doc).

    ``returns`` ((steps + 1) x N, row 0 ignored), ``funding`` ((steps + 1) x S x N),
    ``basis`` ((steps + 1) x N), in ``history.assets`` order.
    """
    assets = list(history.assets)
    n_rows = returns.shape[0]
    index = pd.DatetimeIndex([frame.start + k * history.step for k in range(n_rows)], name="timestamp")
    p0 = np.array([frame.start_prices[a] for a in assets], dtype=float)
    growth = np.vstack([np.ones(len(assets)), np.cumprod(1.0 + returns[1:], axis=0)])
    spot = pd.DataFrame(p0 * growth, index=index, columns=assets)
    col = {a: i for i, a in enumerate(assets)}
    cons = [c for c in frame.contracts if c.underlying in col]
    mark = pd.DataFrame({c.symbol: spot[c.underlying].to_numpy() * (1.0 + basis[:, col[c.underlying]])
                         for c in cons}, index=index, columns=[c.symbol for c in cons], dtype=float)
    offsets = history.settle_offsets
    settle_times = [t - off for t in index for off in offsets]
    rates = funding.reshape(n_rows * len(offsets), len(assets))
    order = np.argsort(np.array([t.value for t in settle_times]), kind="stable")
    settle_index = pd.DatetimeIndex([settle_times[k] for k in order], name="timestamp")
    perps = [c for c in cons if c.kind == ContractKind.PERPETUAL]
    fund = pd.DataFrame({c.symbol: rates[order, col[c.underlying]] for c in perps},
                        index=settle_index, columns=[c.symbol for c in perps], dtype=float)
    half = pd.Series({c.symbol: history.half_spread[c.underlying] for c in cons
                      if c.underlying in history.half_spread}, dtype=float)
    adv = pd.Series({c.symbol: history.adv[c.underlying] for c in cons
                     if c.underlying in history.adv}, dtype=float)
    return MarketPath(spot=spot, mark=mark, funding=fund, half_spread=half,
                      adv=adv if len(adv) else None, synthetic=True)


def _check_steps(steps: int) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 1:
        raise ValidationError("montecarlo.steps", f"is {steps!r}", "give a whole number of steps >= 1")


def stationary_indices(rng: np.random.Generator, rows: int, n: int, mean_block: float) -> np.ndarray:
    """``n`` source row indices of a stationary bootstrap over ``rows`` rows: the first uniform;
    each next one j + 1 (mod rows) with probability 1 - 1/mean_block, else a fresh uniform draw."""
    p = 1.0 / mean_block
    new_block = rng.random(n) < p
    new_block[0] = True
    fresh = rng.integers(0, rows, size=n)
    out = np.empty(n, dtype=np.int64)
    for k in range(n):
        out[k] = fresh[k] if new_block[k] else (out[k - 1] + 1) % rows
    return out


@runtime_checkable
class PathGenerator(Protocol):
    """Makes market paths: ``generate(seed, steps)`` -> a ``MarketPath`` of ``steps + 1`` timestamps.
    Implementations are frozen, picklable data (they travel to worker processes)."""

    @property
    def name(self) -> str:
        """A short label for reports."""
        ...

    @property
    def step(self) -> pd.Timedelta:
        """The time between two steps of a generated path."""
        ...

    def generate(self, seed: SeedLike, steps: int) -> MarketPath:
        """One path from ``seed`` (same seed -> same path)."""
        ...


@dataclass(frozen=True)
class BlockBootstrap:
    """Stationary block bootstrap of the joint rows of ``history`` (mean block length in steps)."""

    history: JointHistory
    frame: PathFrame
    mean_block: float = 20.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.mean_block) and self.mean_block >= 1.0):
            raise ValidationError("montecarlo.mean_block", f"is {self.mean_block!r}",
                                  "give a mean block length >= 1 step")

    @property
    def name(self) -> str:
        return f"stationary block bootstrap (mean block {self.mean_block:g} steps)"

    @property
    def step(self) -> pd.Timedelta:
        return self.history.step

    def indices(self, seed: SeedLike, steps: int) -> np.ndarray:
        """The source rows of a path (``steps + 1`` of them; row 0's return is not used)."""
        _check_steps(steps)
        return stationary_indices(as_generator(seed), self.history.rows, steps + 1, self.mean_block)

    def generate(self, seed: SeedLike, steps: int) -> MarketPath:
        idx = self.indices(seed, steps)
        h = self.history
        return build_market_path(h, self.frame, h.returns[idx], h.funding[idx], h.basis[idx])


# ---------------------------------------------------------------------------------------------
# GARCH(1,1) with Student-t innovations and a Gaussian copula


@dataclass(frozen=True)
class GarchParams:
    """Fitted per-asset GARCH(1,1)-t parameters (returns in percent): mu, omega, alpha, beta, nu."""

    mu: np.ndarray
    omega: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    nu: np.ndarray

    def __post_init__(self) -> None:
        if np.any(self.nu <= 2.0):
            raise ValidationError("garch.nu", f"is {self.nu}", "give degrees of freedom > 2")
        if np.any(self.alpha < 0) or np.any(self.beta < 0) or np.any(self.omega <= 0):
            raise ValidationError("garch.params", "has omega <= 0 or a negative alpha/beta",
                                  "give omega > 0, alpha >= 0, beta >= 0")
        if np.any(self.alpha + self.beta >= 1.0):
            raise ValidationError("garch.params", f"has alpha + beta = {self.alpha + self.beta} >= 1",
                                  "give a stationary model (alpha + beta < 1)")

    @property
    def long_run_variance(self) -> np.ndarray:
        """omega / (1 - alpha - beta), per asset (percent^2 per step)."""
        return self.omega / (1.0 - self.alpha - self.beta)


def fit_garch_t(log_returns: np.ndarray) -> tuple[GarchParams, np.ndarray]:
    """Fit a GARCH(1,1)-t per column of ``log_returns`` (T x N, fractions) with ``arch``: the
    parameters and the standardised residuals e_t / sigma_t (T x N)."""
    from arch import arch_model

    cols = log_returns.shape[1]
    mu, omega, alpha, beta, nu = (np.zeros(cols) for _ in range(5))
    resid = np.zeros_like(log_returns)
    for i in range(cols):
        model = arch_model(100.0 * log_returns[:, i], mean="Constant", vol="GARCH", p=1, q=1,
                           dist="t", rescale=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence chatter: the result is checked below
            res = model.fit(disp="off", show_warning=False)
        prm = res.params
        mu[i], omega[i] = float(prm["mu"]), max(float(prm["omega"]), 1e-8)
        alpha[i], beta[i], nu[i] = float(prm["alpha[1]"]), float(prm["beta[1]"]), float(prm["nu"])
        persistence = alpha[i] + beta[i]
        if persistence > MAX_PERSISTENCE:  # (near-)integrated: cap it; long-run = sample variance
            long_run = float(np.var(100.0 * log_returns[:, i]))
            alpha[i], beta[i] = (alpha[i] * MAX_PERSISTENCE / persistence,
                                 beta[i] * MAX_PERSISTENCE / persistence)
            omega[i] = long_run * (1.0 - MAX_PERSISTENCE)
        nu[i] = max(nu[i], 2.1)
        std = np.asarray(res.std_resid, dtype=float)
        resid[:, i] = np.where(np.isfinite(std), std, 0.0)
    return GarchParams(mu=mu, omega=omega, alpha=alpha, beta=beta, nu=nu), resid


def nearest_correlation(c: np.ndarray, floor: float = 1e-8) -> np.ndarray:
    """A symmetric unit-diagonal positive definite matrix near ``c`` (eigenvalues floored)."""
    sym = (c + c.T) / 2.0
    vals, vecs = np.linalg.eigh(sym)
    fixed = (vecs * np.maximum(vals, floor)) @ vecs.T
    d = np.sqrt(np.diag(fixed))
    out = fixed / np.outer(d, d)
    np.fill_diagonal(out, 1.0)
    return np.asarray(out, dtype=float)


@dataclass(frozen=True)
class GarchT:
    """Fat-tailed returns with volatility clustering: per-asset GARCH(1,1)-t tied by a Gaussian
    copula with correlation ``correlation``; funding and basis block-bootstrapped from ``history``.
    Build it with :meth:`fit`."""

    history: JointHistory
    frame: PathFrame
    params: GarchParams
    correlation: np.ndarray
    mean_block: float = 20.0

    def __post_init__(self) -> None:
        n = len(self.history.assets)
        if self.correlation.shape != (n, n):
            raise ValidationError("garch.correlation", f"has shape {self.correlation.shape}",
                                  f"give a {n} x {n} correlation matrix")
        if not (math.isfinite(self.mean_block) and self.mean_block >= 1.0):
            raise ValidationError("montecarlo.mean_block", f"is {self.mean_block!r}",
                                  "give a mean block length >= 1 step")

    @staticmethod
    def fit(history: JointHistory, frame: PathFrame, mean_block: float = 20.0) -> GarchT:
        """Fit the marginals to the history's log returns and R to the standardised residuals."""
        params, resid = fit_garch_t(np.log1p(history.returns))
        corr = np.corrcoef(resid, rowvar=False) if resid.shape[1] > 1 else np.ones((1, 1))
        return GarchT(history=history, frame=frame, params=params,
                      correlation=nearest_correlation(np.atleast_2d(corr)), mean_block=mean_block)

    @property
    def name(self) -> str:
        return "GARCH(1,1)-t with a Gaussian copula"

    @property
    def step(self) -> pd.Timedelta:
        return self.history.step

    def innovations(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` rows of copula-tied standardised Student-t innovations z_t (unit variance)."""
        p = self.params
        chol = np.linalg.cholesky(self.correlation)
        normals = rng.standard_normal((n, len(p.mu))) @ chol.T
        u = np.clip(stats.norm.cdf(normals), 1e-12, 1.0 - 1e-12)
        return np.asarray(stats.t.ppf(u, p.nu) * np.sqrt((p.nu - 2.0) / p.nu), dtype=float)

    def log_returns(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` rows of simulated log returns (fractions), started at the long-run variance."""
        p = self.params
        z = self.innovations(rng, n)
        var = p.long_run_variance.copy()
        eps_prev = np.zeros(len(p.mu))
        out = np.empty_like(z)
        for k in range(n):
            if k > 0:
                var = p.omega + p.alpha * eps_prev**2 + p.beta * var
            eps_prev = np.sqrt(var) * z[k]
            out[k] = p.mu + eps_prev
        return out / 100.0

    def generate(self, seed: SeedLike, steps: int) -> MarketPath:
        _check_steps(steps)
        rng = as_generator(seed)
        n = steps + 1
        returns = np.expm1(self.log_returns(rng, n))
        idx = stationary_indices(rng, self.history.rows, n, self.mean_block)
        h = self.history
        return build_market_path(h, self.frame, returns, h.funding[idx], h.basis[idx])


class GeneratorKind(StrEnum):
    """Path models the config file names."""

    BOOTSTRAP = "bootstrap"
    GARCH_T = "garch_t"


def make_generator(kind: GeneratorKind, history: JointHistory, frame: PathFrame,
                   mean_block: float) -> BlockBootstrap | GarchT:
    """The generator of ``kind`` over ``history`` (GARCH is fitted here, once)."""
    if kind == GeneratorKind.BOOTSTRAP:
        return BlockBootstrap(history=history, frame=frame, mean_block=mean_block)
    return GarchT.fit(history, frame, mean_block=mean_block)


__all__ = ["BlockBootstrap", "GarchParams", "GarchT", "GeneratorKind", "JointHistory",
           "PathFrame", "PathGenerator", "SeedLike", "as_generator", "build_market_path",
           "fit_garch_t", "make_generator", "nearest_correlation", "stationary_indices"]
