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

The models live in :mod:`scenarios.path_bootstrap` and :mod:`scenarios.path_garch`, the shared
history, frame and path building in :mod:`scenarios.path_history`; this module names the models
(:class:`GeneratorKind`) and builds one (:func:`make_generator`).
"""

from __future__ import annotations

from enum import StrEnum

from scenarios.path_bootstrap import BlockBootstrap
from scenarios.path_garch import GarchT
from scenarios.path_history import JointHistory, PathFrame


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
