"""Settings of one rebalance problem: which objective terms and constraints are on, and their limits.

Every field is in user units (USD, fractions, days); the optimiser converts to weight units
(divide USD by the base V). ``None`` switches a constraint off.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from models.errors import ValidationError
from models.instruments import MIN_DAYS_TO_EXPIRY
from models.tax import LotMethod, TaxLot, TaxRates


class SolverName(StrEnum):
    """Solvers fbr can use. PIQP for QPs, Clarabel for conic problems, SCS as the last resort."""

    PIQP = "PIQP"
    CLARABEL = "CLARABEL"
    SCS = "SCS"


#: the EWMA funding forecaster's defaults (models.funding_forecast.EwmaShrinkForecaster: L = 21,
#: T = 90 settlements, mu = 1e-4 per 8 h settlement), repeated here so that reading settings does
#: not import scipy.signal (about 1 s); tests/optimizer/test_terms_funding_carry.py checks they agree
FUNDING_HALF_LIFE = 21.0
FUNDING_REVERSION_HALF_LIFE = 90.0
FUNDING_LONG_RUN_RATE = 1e-4


class FundingForecastRule(StrEnum):
    """The funding rate a perpetual's carry assumes over the cost horizon.

    ``LAST``: the latest settled rate persists (the default, fbr's behaviour before forecasts).
    ``EWMA``: ``models.funding_forecast.EwmaShrinkForecaster`` (an EWMA of the realised settlements
    shrunk towards a long-run level as the horizon grows), filled into
    ``MarketSnapshot.funding_forecast`` by whoever has the settlement history (the replay,
    ``scenarios.replay_inputs``); a market without a forecast falls back to the latest rate.
    """

    LAST = "last"
    EWMA = "ewma"


@dataclass(frozen=True)
class StressScenario:
    """A named vector of simple asset returns (each > -1); assets not named move by ``common``."""

    name: str
    returns: Mapping[str, float]
    common: float = 0.0


@dataclass(frozen=True)
class ClusterBand:
    """|sum_{i in assets} (e_i - w*_i)| <= band (weights): a group of correlated assets stays on target."""

    name: str
    assets: tuple[str, ...]
    band: float


@dataclass(frozen=True)
class CostSettings:
    """Objective: TE^2 + gamma_trade * trading_cost + gamma_fund * carry_cost (+ cost_to_go x
    (e - w*)' Q_p (e - w*) when ``cost_to_go`` > 0).

    ``impact`` switches on the 3/2-power term (conic); ``impact_k`` is its coefficient k.
    ``horizon_days`` is the carry horizon (funding paid over it per unit of notional).

    ``funding_forecast`` picks the funding rate the carry assumes (:class:`FundingForecastRule`;
    "last" by default). For "ewma": ``funding_half_life`` L and ``funding_reversion_half_life`` T
    in settlements (> 0, whatever their spacing) and ``funding_long_run_rate`` mu, a fraction per
    8 h settlement in (-1, 1) (0.03 %/day at the default): a perpetual settling every h hours is
    shrunk towards mu_h = mu h / 8 per settlement (models.funding_forecast.
    long_run_rate_per_settlement), the same level a day. The forecast over H = horizon_days x 24 / h
    settlements (h the measured spacing where the market gives one, else funding_interval_h) is
    ``mu_h + (m_t - mu_h) (1 - phi^H) / (H ln(1/phi))``, m_t the EWMA, phi = 2^(-1/T). Defaults
    are the forecaster's (L = 21, T = 90, mu = 1e-4, benchmarks/results/funding_forecast.md).
    """

    trading: bool = True
    impact: bool = False
    impact_k: float = 1.0
    carry: bool = True
    gamma_trade: float = 1.0
    gamma_fund: float = 1.0
    horizon_days: float = 1.0
    funding_forecast: FundingForecastRule = FundingForecastRule.LAST
    funding_half_life: float = FUNDING_HALF_LIFE
    funding_reversion_half_life: float = FUNDING_REVERSION_HALF_LIFE
    funding_long_run_rate: float = FUNDING_LONG_RUN_RATE
    #: the yearly yield the stablecoin reserve forgoes (a fraction per year): its opportunity cost
    #: is reserve x reserve_yield, reported when ``constraints.size_reserve`` is on
    reserve_yield: float = 0.04
    #: the reserve as a decision (off): the objective also pays rho x R(z), R(z) = max(0, max_s
    #: (wallet - stress surplus_s(z))) the smallest wallet keeping every stress scenario solvent
    #: (weights), rho = reserve_yield x horizon_days / 365 (optimizer.reserve_term); the solution
    #: then reports the reserve as with ``constraints.size_reserve``. Needs stress scenarios
    reserve_cost: bool = False
    #: kappa >= 0 of the quadratic cost-to-go (0: off, the term is not built): the objective also
    #: pays kappa (e - w*)' Q_p (e - w*), Q_p = Sigma^p trace(Sigma) / trace(Sigma^p) (annualised
    #: variance, weight units; optimizer.terms.CostToGo), a dimensionless multiple of TE^2 (p = 1:
    #: kappa TE^2) pricing the deviation left after the trade beyond this period
    cost_to_go: float = 0.0
    #: p in [0, 1], the shape of the cost-to-go: 1 the covariance's shape, 0 the identity's (scaled
    #: to Sigma's trace); in between the eigenvalues of Sigma are compressed towards their mean
    cost_to_go_power: float = 0.5


@dataclass(frozen=True)
class ConstraintSettings:
    """The switchable constraints (None = off).

    - margin: sum_j |x_j| / L_j <= collateral - margin_buffer_usd (on when ``margin`` is True);
      ``margin_buffer_fraction`` f in [0, 1) also keeps f x collateral free (new margin is taken
      only up to collateral (1 - f) - margin_buffer_usd); ``margin_hysteresis`` turns that free
      share into a no-chase band: positions already using more margin, up to collateral -
      margin_buffer_usd, need not be cut (see optimizer.data.MarginBudget)
    - maintenance: collateral - sum_j MM_j(|x_j|) >= 0 is implied by the margin row, because the
      tier limit keeps |x_j| in brackets whose max leverage is >= L_j and mmr_k <= 1 / max_lev_k, so
      MM_j <= IM_j (models.instruments.MarginTiers validates mmr_k <= 1 / max_lev_k)
    - stress: no liquidation in any of ``stress`` scenarios
    - max_gross_leverage: sum_i |e_i| <= L_max
    - caps_usd: |x_j| <= cap_j by contract symbol; ``default_cap_usd`` for the others
    - clusters: correlation cluster bands; vol_cap: sqrt(e' Sigma e) <= vol_cap (annualised)
    - rho_min: a contract on an asset with no target and no spot may be held only if its correlation
      with some target asset is >= rho_min
    - funding_budget_usd: carry cost over the horizon <= budget (USD)
    - trade_limit_adv: |t_j| <= fraction x ADV_j; trade_limit_usd: |t_j| <= USD
    - min_days_to_expiry: a dated contract is not opened or increased within this many days of its
      expiry (enforced by the order planner, executor.plan; closing and reducing are still allowed);
      ``expiry_row`` (off by default) also makes it a row of the optimiser
      (optimizer.constraints.ExpiryGuard: within it, 0 <= x_j / x0_j <= 1, x_j = 0 when x0_j = 0);
      the row is on by itself whenever a dated contract is within the window at the market time
    - size_reserve: report the smallest stablecoin reserve that keeps every stress row's surplus
      >= 0 at the target positions, and its yearly opportunity cost (optimizer.reserve; off)
    - stress_preset: ``"each_and_all"`` adds each asset alone +-``stress_preset_move`` and all
      assets together +-``stress_preset_move`` (2N + 2 scenarios) to ``stress`` (off: None)
    """

    margin: bool = True
    margin_buffer_usd: float = 0.0
    margin_buffer_fraction: float = 0.0
    margin_hysteresis: bool = False
    stress: tuple[StressScenario, ...] = ()
    max_gross_leverage: float | None = None
    caps_usd: Mapping[str, float] = field(default_factory=dict)
    default_cap_usd: float | None = None
    clusters: tuple[ClusterBand, ...] = ()
    vol_cap: float | None = None
    rho_min: float | None = None
    funding_budget_usd: float | None = None
    trade_limit_adv: float | None = None
    trade_limit_usd: float | None = None
    min_days_to_expiry: float = MIN_DAYS_TO_EXPIRY
    expiry_row: bool = False
    size_reserve: bool = False
    stress_preset: str | None = None
    stress_preset_move: float = 0.4


@dataclass(frozen=True)
class SpotLegSettings:
    """The spot leg (off by default: overlay only, spot untouched).

    With ``enabled`` the optimiser may also buy and sell spot (weights b_i, q_i >= 0, q_i <= s_i):
    effective exposure e = s + b - q + B z. Each spot trade pays gamma_trade (fee_i + half_spread_i)
    (the asset's ``SpotAsset.fee`` and the market's ``spot_half_spread``, 1 bp when missing) and,
    with ``costs.impact``, k sigma_i |trade|^{3/2} / sqrt(ADV_i) (ADV by asset symbol in
    ``market.adv``; none given: no spot impact).

    Tax: with ``rates`` set, a sale of q_i pays gamma_tax T_i(q_i), a convex piecewise-linear tax
    curve of the asset's ``lots`` (models.tax.breakpoints; per asset, they must add up to the spot
    held), loss lots credited only when ``harvest_losses`` (otherwise taxed at 0). ``lot_method``
    is the user's books' order and picks the curve: HIFO and specific, the ascending-tax curve
    (exact for specific and single-rate HIFO, a lower bound for mixed-rate HIFO); FIFO, the FIFO
    order with slopes raised to their running maximum (exact while the FIFO slopes ascend,
    otherwise an upper bound). It also reports the tax the sale realises in the books.
    ``rates`` None: no tax term. Net spot buys are financed by sales plus at most
    ``cash_usd`` of wallet cash: sum(b) - sum(q) <= min(cash_usd, book cash) / V (never more than the
    stablecoin held; ``optimizer.spot_data.spot_budget``).
    """

    enabled: bool = False
    rates: TaxRates | None = None
    lots: Mapping[str, tuple[TaxLot, ...]] = field(default_factory=dict)
    lot_method: LotMethod = LotMethod.HIFO
    harvest_losses: bool = False
    gamma_tax: float = 1.0
    cash_usd: float = 0.0
    #: also price the tax of realising futures gains (off): reducing a position with unrealised
    #: gain U_j > 0 (USD, against its tax entry) from x0_j to x_j (same sign) realises
    #: U_j (|x0_j| - |x_j|) / |x0_j|, taxed at ``rates.futures_rate`` (optimizer.terms.FuturesTax)
    futures_tax: bool = False
    #: U_j by contract symbol (USD) when the tax entries are not the book's entry prices (a replay
    #: passes its average-cost entries); None: each position's own unrealised PnL at the marks
    futures_gains: Mapping[str, float] | None = None


@dataclass(frozen=True)
class OptimizerSettings:
    """Everything that parametrises one rebalance besides the book, market and risk model."""

    costs: CostSettings = field(default_factory=CostSettings)
    constraints: ConstraintSettings = field(default_factory=ConstraintSettings)
    basis_risk: bool = True
    solvers: tuple[SolverName, ...] = ()
    #: numerical scale of the objective (the objective is multiplied by it before the solver sees
    #: it); None: 1e4, for PIQP and Clarabel alike
    objective_scale: float | None = None
    round_lots: bool = True
    #: trades smaller than this fraction of the base are cancelled when cancelling them does not
    #: raise the objective (solver noise, not a decision; see optimizer.rounding.snap_small_trades)
    noise_trade_weight: float = 1e-4
    #: ... and when cancelling raises the objective f (TE^2 + costs, annualised) by at most
    #: noise_objective, or noise_objective_flat for a cancellation that moves no asset's exposure by
    #: more than optimizer.rounding.NOISE_EXPOSURE (1e-5) of the base (a shift between contracts on
    #: one asset, or dust: solvers leave such moves within about 1e-9; a re-solve moved 1e-5 of the
    #: base between a perpetual and a quarterly for 2e-10). A trade that moves exposure by more,
    #: worth about sigma^2 delta^2, is kept from about 2e-6 of the base on (1e-9 for every trade
    #: had cancelled real hedges up to 6e-5 of it); 0 for all turns the cancellation off
    noise_objective: float = 1e-12
    noise_objective_flat: float = 1e-9
    #: from this many assets on, a risk model with more than ``factor_max`` loading columns (e.g.
    #: a full covariance, N columns) is solved in its K-factor form F F' + diag(d), K <=
    #: ``factor_max`` (models.factor_form; exact when Sigma has that structure, else the
    #: residual is reported): the dense form's compiled problem needs O(N^3) memory (about
    #: 120 GiB at N = 2,000), the factor form's O(N^2)
    factor_min_assets: int = 100
    factor_max: int = 20
    #: ... a Sigma without that structure (the fit's residual above models.factor_form's
    #: EXACT_RESIDUAL) is solved as it is below this many assets (the full form's compile takes
    #: about 1 GiB at 400), and in its K-factor form (an approximation, stated) from there on
    factor_approx_assets: int = 400
    #: the spot leg with tax lots (off: overlay only, the default)
    spot: SpotLegSettings = field(default_factory=SpotLegSettings)
    #: the multi-period planner (optimizer.planner): the number H >= 1 of rebalancing steps of
    #: ``costs.horizon_days`` each that one solve plans ahead (trades at every step, every cost and
    #: constraint at every step, only the first step's trades used); 1: the single-period problem.
    #: H > 1 does not support the spot leg (``spot.enabled``)
    horizon: int = 1


#: The most steps a plan may look ahead: a problem H times the single-period one is compiled and
#: solved, so a typo (days for steps) would start minutes of work and gigabytes of memory (365
#: steps of the ten-asset example: 37 s and 1.9 GB); three years of daily steps is 1,095.
MAX_HORIZON = 1_000


def check_horizon(horizon: object, where: str = "solver.horizon") -> int:
    """The multi-period planner's H (``[solver] horizon``, or ``where``), validated: a whole number
    in [1, MAX_HORIZON]. The one check for the book file, ``prepare``, the planner and a
    backtest's policy entry alike."""
    if (isinstance(horizon, bool) or not isinstance(horizon, numbers.Integral)
            or not 1 <= int(horizon) <= MAX_HORIZON):
        raise ValidationError(where, f"is {horizon!r}",
                              "give the number of rebalancing steps to plan ahead as a whole number "
                              f"in [1, {MAX_HORIZON}] (1: the single-period problem)")
    steps = int(horizon)
    return steps
