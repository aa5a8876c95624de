"""The dynamic-programming optimum of rebalancing with proportional costs (three assets), on a grid.

Model (one step = one rebalancing interval, 8 h by default)
----------------------------------------------------------
Deviations of the effective weights from target, d = e - w* (N = 3, fractions of the base). Between
two steps the returns r ~ N(0, Sigma dt) move them by the linearised drift of a fixed-weight book,

    d_{k+1} = y_k + A r_k,       A = diag(w*) - w* w*'                              (1)

where y_k is the deviation after the step-k trade. A r sums to zero (drift moves weight between
assets, never the total), so the noise lives in a plane. A trade of asset i by t_i (fraction of the
base) costs c |t_i| (c = 6 bp per unit traded). Tracking error: the return difference over a step is
y_k' r_k, so TE^2 (annual) = E[y' Sigma y]. For a weight lambda on TE^2 per step the Bellman
equation of the long-run average cost g is

    h(x) + g = min_y  c |y - x|_1 + lambda y' Sigma dt y + E h(y + A r).           (2)

Discretisation (stated, and refined to show it does not move the frontier)
--------------------------------------------------------------------------
Coordinates q = (d_1, d_2, s) with s = d_1 + d_2 + d_3: the noise moves (d_1, d_2) and leaves s, so
E h(y + A r) is a 2-D convolution of each s-slice with the Gaussian kernel of (A r)_{1,2}, sampled
at the grid nodes and normalised (done by FFT). A uniform grid of spacing eta in all three
coordinates makes the three trade directions, g_1 = (1, 0, 1), g_2 = (0, 1, 1), g_3 = (0, 0, 1),
grid lines, so min_y c|y - x|_1 + W(y) is three exact one-dimensional L1 distance transforms along
them (forward and backward passes), with the argmin carried along (the policy pi: node -> node).
Relative value iteration runs (2) until the policy is fixed and g settles; the stationary law of
the chain "trade by pi, then diffuse" (power iteration) then gives the policy's trading cost and
TE separately. Points pushed off the grid by the noise are clamped to its edge (the grid spans the
no-trade region plus several noise widths, so that mass is negligible; it is reported).

Self-financing variant (``Model.self_financing``): a spot book rebalanced by swaps, the weights
summing to one, so every trade sums to zero and the deviations stay on the plane s = 0; the grid
has one s node and the three trade directions are the pair swaps (``bellman_min_sf``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import fftconvolve


@dataclass(frozen=True)
class Model:
    """Assets' annual vols (fractions), correlations, target weights, steps per year, unit cost."""

    vols: tuple[float, ...] = (0.55, 0.70, 0.95)
    corr: tuple[float, float, float] = (0.80, 0.70, 0.75)  # (1,2), (1,3), (2,3)
    weights: tuple[float, ...] = (0.5, 0.3, 0.2)
    steps_per_year: float = 1095.0
    cost: float = 6e-4
    #: trades sum to zero (a spot book rebalanced by swaps, weights summing to one) instead of the
    #: overlay's independent legs: the deviations stay on the plane s = 0 (see ``bellman_min_sf``)
    self_financing: bool = False

    @property
    def sigma(self) -> np.ndarray:
        """Annual covariance of returns (3 x 3)."""
        c12, c13, c23 = self.corr
        C = np.array([[1.0, c12, c13], [c12, 1.0, c23], [c13, c23, 1.0]])
        v = np.asarray(self.vols)
        return np.outer(v, v) * C

    @property
    def drift_map(self) -> np.ndarray:
        """A = diag(w*) - w* w*' (3 x 3): a step's returns r move the deviations by A r."""
        w = np.asarray(self.weights)
        return np.diag(w) - np.outer(w, w)

    @property
    def noise_cov(self) -> np.ndarray:
        """Covariance of A r per step (3 x 3, rank 2)."""
        A = self.drift_map
        return A @ self.sigma @ A.T / self.steps_per_year


@dataclass(frozen=True)
class Grid:
    """Nodes q = (d1, d2, s) = eta * (i - c1, j - c2, k - c3) on a box of n1 x n2 x ns nodes."""

    eta: float
    n1: int
    n2: int
    ns: int

    @staticmethod
    def around(eta: float, half1: float, half2: float, halfs: float) -> Grid:
        """The grid of spacing eta covering [-half, half] on each coordinate (odd sizes, 0 a node)."""
        def n(half: float) -> int:
            return 2 * int(np.ceil(half / eta)) + 1
        return Grid(eta, n(half1), n(half2), n(halfs))

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.n1, self.n2, self.ns)

    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Coordinates of the nodes along each axis (fractions)."""
        def ax(n: int) -> np.ndarray:
            return (np.arange(n) - n // 2) * self.eta
        return ax(self.n1), ax(self.n2), ax(self.ns)

    def deviations(self) -> np.ndarray:
        """d = (d1, d2, s - d1 - d2) at every node, shape (n1, n2, ns, 3)."""
        a1, a2, a3 = self.axes()
        D1, D2, S = np.meshgrid(a1, a2, a3, indexing="ij")
        return np.stack([D1, D2, S - D1 - D2], axis=-1)


def kernel(model: Model, eta: float, width: float = 6.0) -> np.ndarray:
    """Probabilities of the (d1, d2) move A r at grid offsets (m eta, n eta).

    Fine grids (eta^2 < C11 + C22, where the stencil below cannot hold the variance): the N(0, C)
    density (C the noise covariance of d1, d2) sampled out to ``width`` standard deviations and
    normalised; its covariance is C to within about exp(-2 pi^2 sd^2 / eta^2) relative (Poisson
    summation, sd the smaller standard deviation: under 0.5% at the coarsest such grid here).
    Coarse grids: the 3 x 3 stencil with the same mean (0) and covariance C: moves (+-1, 0) with
    probability C11 / (2 eta^2) - |C12| / (2 eta^2) each, (0, +-1) likewise with C22, the diagonal
    pair along sign(C12) with |C12| / (2 eta^2) each, and no move otherwise (a lazy random walk; a
    diffusion approximation, good while the no-trade region spans many nodes).
    """
    C = model.noise_cov[:2, :2]
    sd = np.sqrt(np.diag(C))
    if eta * eta >= float(C[0, 0] + C[1, 1]):
        return _stencil(C, eta)
    m1, m2 = (int(np.ceil(width * s / eta)) for s in sd)
    o1 = np.arange(-m1, m1 + 1) * eta
    o2 = np.arange(-m2, m2 + 1) * eta
    X1, X2 = np.meshgrid(o1, o2, indexing="ij")
    P = np.linalg.inv(C)
    q = P[0, 0] * X1**2 + 2 * P[0, 1] * X1 * X2 + P[1, 1] * X2**2
    k = np.exp(-0.5 * q)
    return k / k.sum()


def _stencil(C: np.ndarray, eta: float) -> np.ndarray:
    """The moment-matched 3 x 3 lazy random walk of :func:`kernel` (needs |C12| <= C11, C22 and
    the move probabilities summing to at most 1)."""
    e2 = 2.0 * eta * eta
    diag = abs(float(C[0, 1])) / e2
    a, b = float(C[0, 0]) / e2 - diag, float(C[1, 1]) / e2 - diag
    if min(a, b) < 0 or 2 * (a + b + 2 * diag) > 1:
        raise ValueError("grid too fine or noise too anisotropic for the 3 x 3 stencil")
    k = np.zeros((3, 3))
    k[0, 1] = k[2, 1] = a
    k[1, 0] = k[1, 2] = b
    if C[0, 1] >= 0:
        k[0, 0] = k[2, 2] = diag
    else:
        k[0, 2] = k[2, 0] = diag
    k[1, 1] = 1.0 - k.sum()
    return k


def expect(h: np.ndarray, ker: np.ndarray) -> np.ndarray:
    """E h(y + A r) at every node: h padded by its edge values (clamping) and convolved per s-slice
    with the (symmetric) kernel."""
    p1, p2 = ker.shape[0] // 2, ker.shape[1] // 2
    hp = np.pad(h, ((p1, p1), (p2, p2), (0, 0)), mode="edge")
    out = fftconvolve(hp, ker[:, :, None], mode="valid", axes=(0, 1))
    return np.asarray(out)


def spread(mu: np.ndarray, ker: np.ndarray) -> np.ndarray:
    """The law after the noise step (the adjoint of :func:`expect`): mass convolved with the kernel,
    mass beyond an edge put on that edge's nodes."""
    p1, p2 = ker.shape[0] // 2, ker.shape[1] // 2
    full = np.asarray(fftconvolve(mu, ker[:, :, None], mode="full", axes=(0, 1)))
    full = np.clip(full, 0.0, None)
    # fold the p-wide margins back onto the edge nodes
    n1, n2 = mu.shape[0], mu.shape[1]
    core = full[p1:p1 + n1].copy()
    core[0] += full[:p1].sum(axis=0)
    core[-1] += full[p1 + n1:].sum(axis=0)
    out = core[:, p2:p2 + n2].copy()
    out[:, 0] += core[:, :p2].sum(axis=1)
    out[:, -1] += core[:, p2 + n2:].sum(axis=1)
    return out


def _sweep(W: np.ndarray, P: np.ndarray, axis: int, diag: bool, step_cost: float) -> None:
    """In place: W(x) <- min over nodes y on x's line along the direction of ``axis`` (+ the s axis
    when ``diag``) of W(y) + step_cost * |steps|, and P(x) <- P(y) (the target carried along)."""
    n = W.shape[axis]

    def sl(i: int, shift: int) -> tuple[slice | int, ...]:
        idx: list[slice | int] = [slice(None)] * 3
        idx[axis] = i
        if diag:
            idx[2] = slice(1, None) if shift > 0 else slice(None, -1)
        return tuple(idx)

    for order, src_shift in ((range(1, n), -1), (range(n - 2, -1, -1), 1)):
        for i in order:
            if diag:
                # node (i, k) takes from (i + src_shift, k + src_shift)
                dst = sl(i, -src_shift)
                src = sl(i + src_shift, src_shift)
            else:
                dst, src = sl(i, 0), sl(i + src_shift, 0)
            cand = W[src] + step_cost
            better = cand < W[dst]
            if better.any():
                W[dst] = np.where(better, cand, W[dst])
                P[dst] = np.where(better, P[src], P[dst])


def _sweep_s(W: np.ndarray, P: np.ndarray, step_cost: float) -> None:
    """The third trade direction g_3 = (0, 0, 1): a line along the s axis."""
    W2 = np.moveaxis(W, 2, 0)
    P2 = np.moveaxis(P, 2, 0)
    n = W2.shape[0]
    for order, src_shift in ((range(1, n), -1), (range(n - 2, -1, -1), 1)):
        for i in order:
            cand = W2[i + src_shift] + step_cost
            better = cand < W2[i]
            if better.any():
                W2[i] = np.where(better, cand, W2[i])
                P2[i] = np.where(better, P2[i + src_shift], P2[i])


def bellman_min(W: np.ndarray, cost: float, eta: float) -> tuple[np.ndarray, np.ndarray]:
    """min_y c |y - x|_1 + W(y) over grid nodes y, and the argmin (flat node index) at every x.

    Exact over the targets y reachable by trading asset 1, then asset 2, then asset 3 through
    grid nodes (every y when the s axis is wide enough for the intermediate s + t_1 + t_2)."""
    V = W.copy()
    P = np.arange(W.size).reshape(W.shape)
    step = cost * eta  # one grid step along any g_i trades eta of one asset
    _sweep(V, P, 0, True, step)
    _sweep(V, P, 1, True, step)
    _sweep_s(V, P, step)
    return V, P


def _sweep_antidiagonal(W: np.ndarray, P: np.ndarray, step_cost: float) -> None:
    """In place on a 2-D array: the 1-D distance transform along the direction (+1, -1)."""
    n1 = W.shape[0]
    for i in range(1, n1):  # node (i, j) from (i - 1, j + 1)
        cand = W[i - 1, 1:] + step_cost
        better = cand < W[i, :-1]
        W[i, :-1] = np.where(better, cand, W[i, :-1])
        P[i, :-1] = np.where(better, P[i - 1, 1:], P[i, :-1])
    for i in range(n1 - 2, -1, -1):  # node (i, j) from (i + 1, j - 1)
        cand = W[i + 1, :-1] + step_cost
        better = cand < W[i, 1:]
        W[i, 1:] = np.where(better, cand, W[i, 1:])
        P[i, 1:] = np.where(better, P[i + 1, :-1], P[i, 1:])


def bellman_min_sf(W: np.ndarray, cost: float, eta: float) -> tuple[np.ndarray, np.ndarray]:
    """:func:`bellman_min` for self-financing trades (t_1 + t_2 + t_3 = 0) on the plane s = 0
    (a grid with one s node). Such a trade costs c (|t_1| + |t_2| + |t_1 + t_2|), which is
    2c times its length in the generators (1, 0) (asset 1 against asset 3), (0, 1) (2 against 3)
    and (1, -1) (1 against 2) of the (d1, d2) plane: three exact 1-D L1 distance transforms along
    them, 2 c eta per grid step."""
    if W.shape[2] != 1:
        raise ValueError("self-financing trades live on the plane s = 0: a grid with one s node")
    V = W[:, :, 0].copy()
    P = np.arange(V.size).reshape(V.shape)
    step = 2.0 * cost * eta
    for axis in (0, 1):
        Vm, Pm = np.moveaxis(V, axis, 0), np.moveaxis(P, axis, 0)
        n = Vm.shape[0]
        for order, src_shift in ((range(1, n), -1), (range(n - 2, -1, -1), 1)):
            for i in order:
                cand = Vm[i + src_shift] + step
                better = cand < Vm[i]
                Vm[i] = np.where(better, cand, Vm[i])
                Pm[i] = np.where(better, Pm[i + src_shift], Pm[i])
    _sweep_antidiagonal(V, P, step)
    return V[:, :, None], P[:, :, None]


@dataclass(frozen=True)
class DPSolution:
    """The optimal policy on a grid for one lambda: targets (flat node index) and the average cost."""

    grid: Grid
    lam: float
    policy: np.ndarray
    gain: float
    iterations: int
    values: np.ndarray


def solve_dp(model: Model, grid: Grid, lam: float, *, tol: float = 1e-7,
             max_iter: int = 20000, start: np.ndarray | None = None) -> DPSolution:
    """Relative value iteration of (2) until the span of the change of the relative values,
    max(V_k+1 - V_k) - min(V_k+1 - V_k), which brackets the gain's error, falls below ``tol``
    times the gain."""
    ker = kernel(model, grid.eta)
    D = grid.deviations()
    stage = lam * np.einsum("...i,ij,...j->...", D, model.sigma / model.steps_per_year, D)
    h = np.zeros(grid.shape) if start is None else start - start[grid.n1 // 2, grid.n2 // 2,
                                                                   grid.ns // 2]
    centre = (grid.n1 // 2, grid.n2 // 2, grid.ns // 2)
    for it in range(1, max_iter + 1):
        W = stage + expect(h, ker)
        V, P = (bellman_min_sf if model.self_financing else bellman_min)(W, model.cost, grid.eta)
        diff = V - h
        gain = float(V[centre])
        h = V - gain
        if float(diff.max() - diff.min()) <= tol * gain:
            return DPSolution(grid, lam, P, gain, it, h)
    return DPSolution(grid, lam, P, gain, max_iter, h)


@dataclass(frozen=True)
class ChainStats:
    """A policy's long-run figures on the grid chain: trading cost (bp of the base per year), TE
    (fraction per year), the mean number of trades per year and the mass lost to the grid's edge."""

    cost_bp: float
    te: float
    trades_per_year: float
    edge_mass: float


def evaluate(model: Model, grid: Grid, policy: np.ndarray, *, iters: int = 200000,
             tol: float = 1e-12) -> ChainStats:
    """Stationary law of "trade by ``policy``, then diffuse" by power iteration, and its figures."""
    ker = kernel(model, grid.eta)
    D = grid.deviations().reshape(-1, 3)
    flat = policy.ravel()
    traded = np.abs(D[flat] - D).sum(axis=1)
    risk = np.einsum("ni,ij,nj->n", D, model.sigma, D)
    mu = np.zeros(grid.shape)
    mu[grid.n1 // 2, grid.n2 // 2, grid.ns // 2] = 1.0
    for _ in range(iters):
        nu = np.bincount(flat, weights=mu.ravel(), minlength=mu.size).reshape(grid.shape)
        new = spread(nu, ker)
        new /= new.sum()
        if np.abs(new - mu).sum() < tol:
            mu = new
            break
        mu = new
    m = mu.ravel()
    nu = np.bincount(flat, weights=m, minlength=m.size)
    edge = np.zeros(grid.shape, dtype=bool)
    edge[[0, -1], :, :] = True
    edge[:, [0, -1], :] = True
    return ChainStats(cost_bp=float(m @ traded) * model.cost * model.steps_per_year * 1e4,
                      te=float(np.sqrt(nu @ risk)),
                      trades_per_year=float(m[traded > 0].sum()) * model.steps_per_year,
                      edge_mass=float(m[edge.ravel()].sum()))


def grid_for(model: Model, lam: float, div: float) -> Grid:
    """A grid scaled to lambda's no-trade region: its size scales as L = (c / lambda)^(1/3) (the
    small-cost law of proportional-cost rebalancing); spacing L / ``div``; the (d1, d2) box spans
    1.3 L plus 4 noise standard deviations, the s axis 0.6 L plus as much (the common direction is
    held far tighter, its risk being the largest, but a trade of one asset passes through s + t
    on its way). The solution's edge mass says whether that was enough."""
    L = (model.cost / lam) ** (1.0 / 3.0)
    sd = float(np.sqrt(np.diag(model.noise_cov)).max())
    half = 1.3 * L + 4.0 * sd
    return Grid.around(L / div, half, half, 0.0 if model.self_financing else 0.6 * L + 4.0 * sd)


def regrid(h: np.ndarray, src: Grid, dst: Grid) -> np.ndarray:
    """Relative values on ``src`` carried to ``dst`` by multilinear interpolation (clamped at the
    edges): a warm start for a refined solve."""
    from scipy.interpolate import RegularGridInterpolator

    axes = src.axes()
    keep = [k for k in range(3) if len(axes[k]) > 1]  # a one-node axis (the plane s = 0) is dropped
    f = RegularGridInterpolator([axes[k] for k in keep], h.reshape([len(axes[k]) for k in keep]),
                                bounds_error=False, fill_value=None)
    cut = [np.clip(dst.axes()[k], axes[k][0], axes[k][-1]) for k in keep]
    pts = np.stack(np.meshgrid(*cut, indexing="ij"), axis=-1)
    return np.asarray(f(pts.reshape(-1, len(keep))).reshape(dst.shape))
