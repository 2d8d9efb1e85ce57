"""Scaling-law fit L(N, D) = E + A / N^alpha + B / D^beta, bootstrap intervals, compute frontier.

Fit (the Chinchilla recipe, our implementation): parameters (e, a, b, alpha, beta) with
E = exp(e), A = exp(a), B = exp(b); residual per point

    r_i = logsumexp(e, a - alpha log N_i, b - beta log D_i) - log L_i

minimised with a Huber loss (robust to a diverged or noisy point) by
`scipy.optimize.least_squares` from a grid of starts, keeping the best. Log-space residuals
weight a 1% miss the same at every loss level.

Compute-optimal frontier. With training compute C = 6 N D, minimise L on the line D = C/(6N):

    dL/dN = -alpha A N^(-alpha-1) + beta B D^(-beta) / N = 0
    =>  alpha A N^(-alpha) = beta B D^(-beta)
    =>  D*(N) = G * N^(alpha/beta),   G = (beta B / (alpha A))^(1/beta)

and along the frontier N*(C) = (alpha A / (beta B))^(1/(alpha+beta)) * (C/6)^(beta/(alpha+beta)),
D*(C) = (C/6) / N*(C), i.e. N* ~ C^(beta/(alpha+beta)) and D* ~ C^(alpha/(alpha+beta)).
Tokens per parameter at the optimum: D*/N = G * N^(alpha/beta - 1). The paper reports
D*(N) ~ 7754 * N^0.84 for its MDM; autoregressive LMs (Chinchilla) sit near D/N ~ 20.

Confidence intervals: bootstrap over sweep points (resample points with replacement, refit),
percentile intervals of every parameter and derived quantity.
"""

from __future__ import annotations

import itertools
import logging
import math
import warnings
from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import least_squares
from scipy.special import logsumexp

log = logging.getLogger(__name__)

PAPER_G, PAPER_EXPONENT = 7754.0, 0.84
AR_TOKENS_PER_PARAM = 20.0


@dataclass(frozen=True)
class ScalingLaw:
    E: float
    A: float
    B: float
    alpha: float
    beta: float

    def loss(self, N, D):
        N, D = np.asarray(N, dtype=np.float64), np.asarray(D, dtype=np.float64)
        return self.E + self.A / N ** self.alpha + self.B / D ** self.beta

    @property
    def frontier_exponent(self) -> float:
        """Exponent of D*(N) = G N^(alpha/beta)."""
        return self.alpha / self.beta

    @property
    def log_G(self) -> float:
        """Natural log of G (kept in logs: tiny beta makes G itself overflow)."""
        return math.log(self.beta * self.B / (self.alpha * self.A)) / self.beta

    @property
    def frontier_G(self) -> float:
        return math.exp(min(self.log_G, 700.0))

    def d_opt(self, N):
        """Compute-optimal tokens for a model of N parameters."""
        with np.errstate(over="ignore"):
            return np.exp(np.minimum(self.log_G + self.frontier_exponent * np.log(np.asarray(N, dtype=np.float64)), 700.0))

    def tokens_per_param(self, N):
        return self.d_opt(N) / np.asarray(N, dtype=np.float64)

    def n_opt(self, C):
        """Compute-optimal parameters at training compute C = 6 N D."""
        a, b = self.alpha, self.beta
        return (a * self.A / (b * self.B)) ** (1.0 / (a + b)) * (np.asarray(C, dtype=np.float64) / 6.0) ** (b / (a + b))

    def d_opt_at_compute(self, C):
        return np.asarray(C, dtype=np.float64) / 6.0 / self.n_opt(C)


def paper_d_opt(N):
    return PAPER_G * np.asarray(N, dtype=np.float64) ** PAPER_EXPONENT


def _residuals(x: np.ndarray, logN: np.ndarray, logD: np.ndarray, logL: np.ndarray) -> np.ndarray:
    e, a, b, alpha, beta = x
    terms = np.stack([np.full_like(logN, e), a - alpha * logN, b - beta * logD])
    return logsumexp(terms, axis=0) - logL


def _jacobian(x: np.ndarray, logN: np.ndarray, logD: np.ndarray, logL: np.ndarray) -> np.ndarray:
    """d r / d(e, a, b, alpha, beta): softmax weights of the three terms (cheap, exact)."""
    e, a, b, alpha, beta = x
    terms = np.stack([np.full_like(logN, e), a - alpha * logN, b - beta * logD])
    p = np.exp(terms - logsumexp(terms, axis=0))
    return np.stack([p[0], p[1], p[2], -p[1] * logN, -p[2] * logD], axis=1)


def _huber(r: np.ndarray, delta: float) -> float:
    a = np.abs(r)
    return float(np.sum(np.where(a <= delta, 0.5 * r ** 2, delta * (a - 0.5 * delta))))


def _law(x: np.ndarray) -> ScalingLaw:
    e, a, b, alpha, beta = (float(v) for v in x)
    return ScalingLaw(math.exp(e), math.exp(a), math.exp(b), alpha, beta)


def default_starts() -> list[np.ndarray]:
    """A coarse grid over (e, a, b, alpha, beta), as Chinchilla's fit does."""
    grid = itertools.product([-1.0, 0.0, 1.0], [0.0, 5.0, 10.0], [0.0, 5.0, 10.0], [0.2, 0.5, 1.0], [0.2, 0.5, 1.0])
    return [np.array(g) for g in grid]


@dataclass
class FitResult:
    law: ScalingLaw
    cost: float
    n_points: int
    rms_log_residual: float

    def as_dict(self) -> dict:
        return {**asdict(self.law), "cost": self.cost, "n_points": self.n_points,
                "rms_log_residual": self.rms_log_residual, "frontier_G": self.law.frontier_G,
                "frontier_exponent": self.law.frontier_exponent}


def _check(N, D, L) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    N, D, L = (np.asarray(x, dtype=np.float64).reshape(-1) for x in (N, D, L))
    if not (len(N) == len(D) == len(L)):
        raise ValueError(f"fit: N, D, L need equal lengths, got {len(N)}, {len(D)}, {len(L)}")
    ok = np.isfinite(N) & np.isfinite(D) & np.isfinite(L) & (N > 0) & (D > 0) & (L > 0)
    if int(ok.sum()) < 5:
        raise ValueError(f"fit: need at least 5 finite points with N, D, L > 0 (5 parameters), got {int(ok.sum())}")
    if len(np.unique(N[ok])) < 2 or len(np.unique(D[ok])) < 2:
        raise ValueError("fit: need at least 2 distinct model sizes and 2 distinct token budgets")
    return N[ok], D[ok], L[ok]


def fit_scaling_law(N, D, L, huber_delta: float = 1e-3, starts: list[np.ndarray] | None = None,
                    max_exponent: float = 3.0, refine: int = 8) -> FitResult:
    """Best Huber fit; exponents are bounded to (0, max_exponent].

    Every start is scored first (one residual evaluation each) and only the `refine` best are
    optimised: the grid is there to find the right basin, not to be optimised 243 times.
    """
    N, D, L = _check(N, D, L)
    logN, logD, logL = np.log(N), np.log(D), np.log(L)
    # Centred logs decorrelate a from alpha and b from beta (a_c = a - alpha * mean log N);
    # without it the problem is so ill-conditioned that each fit takes hundreds of steps.
    mN, mD = float(logN.mean()), float(logD.mean())
    cN, cD = logN - mN, logD - mD
    lo = np.array([-np.inf, -np.inf, -np.inf, 1e-4, 1e-4])
    hi = np.array([np.inf, np.inf, np.inf, max_exponent, max_exponent])

    def centred(x: np.ndarray) -> np.ndarray:
        e, a, b, alpha, beta = np.clip(np.asarray(x, dtype=np.float64), lo + 1e-6, hi - 1e-6)
        return np.array([e, a - alpha * mN, b - beta * mD, alpha, beta])

    best = None
    cands = [centred(x0) for x0 in (starts if starts is not None else default_starts())]
    cands.sort(key=lambda x0: _huber(_residuals(x0, cN, cD, logL), huber_delta))
    for x0 in cands[:refine]:
        try:
            with warnings.catch_warnings():
                # Far starts overflow inside scipy's trust region on the way; results are checked.
                warnings.simplefilter("ignore", RuntimeWarning)
                # Plain least squares first (Gauss-Newton converges in a few steps), then Huber
                # from there (alone, Huber's tiny delta makes trf crawl).
                sol = least_squares(_residuals, x0, jac=_jacobian, args=(cN, cD, logL),
                                    bounds=(lo, hi), method="trf", max_nfev=500)
                sol = least_squares(_residuals, sol.x, jac=_jacobian, args=(cN, cD, logL), loss="huber",
                                    f_scale=huber_delta, bounds=(lo, hi), method="trf", max_nfev=500)
        except (ValueError, FloatingPointError):
            continue
        if np.all(np.isfinite(sol.x)) and (best is None or sol.cost < best.cost):
            best = sol
    if best is None:
        raise ValueError("fit: no start converged")
    e, a_c, b_c, alpha, beta = best.x
    best.x = np.array([e, a_c + alpha * mN, b_c + beta * mD, alpha, beta])
    res = _residuals(best.x, logN, logD, logL)
    return FitResult(_law(best.x), float(best.cost), len(N), float(np.sqrt(np.mean(res ** 2))))


def _params(law: ScalingLaw) -> np.ndarray:
    return np.array([math.log(law.E), math.log(law.A), math.log(law.B), law.alpha, law.beta])


@dataclass
class Bootstrap:
    """Percentile intervals (lo, hi) of each quantity over bootstrap refits."""

    level: float
    n_ok: int
    intervals: dict[str, tuple[float, float]]
    samples: dict[str, np.ndarray]


def bootstrap(N, D, L, n_boot: int = 200, level: float = 0.9, seed: int = 0, huber_delta: float = 1e-3,
              at_N: tuple[float, ...] = (1e6, 1e9)) -> Bootstrap:
    """Refit on point sets resampled with replacement; starts: the full fit plus a small grid."""
    N, D, L = _check(N, D, L)
    full = fit_scaling_law(N, D, L, huber_delta)
    starts = [_params(full.law)] + default_starts()[::27]  # the full fit plus a few far starts
    rng = np.random.default_rng(seed)
    names = ["E", "A", "B", "alpha", "beta", "frontier_exponent", "log10_G"] + \
        [f"tokens_per_param@{n:.0e}" for n in at_N]
    samples: dict[str, list[float]] = {k: [] for k in names}
    n = len(N)
    for _ in range(n_boot):
        idx = rng.integers(0, n, size=n)
        try:
            law = fit_scaling_law(N[idx], D[idx], L[idx], huber_delta, starts=starts, refine=3).law
        except ValueError:  # a resample with one size or one budget: no fit possible
            continue
        vals = [law.E, law.A, law.B, law.alpha, law.beta, law.frontier_exponent, law.log_G / math.log(10)] + \
            [float(law.tokens_per_param(x)) for x in at_N]
        for k, v in zip(names, vals):
            samples[k].append(v)
    q = (1 - level) / 2
    arrays = {k: np.asarray(v) for k, v in samples.items()}
    intervals = {}
    for k, v in arrays.items():
        v = v[np.isfinite(v)]
        intervals[k] = (float(np.quantile(v, q)), float(np.quantile(v, 1 - q))) if len(v) else (math.nan, math.nan)
    return Bootstrap(level, len(arrays["E"]), intervals, arrays)


def compare_with_paper(law: ScalingLaw, at_N: tuple[float, ...] = (1e6, 1e8, 1e9, 3e9)) -> list[dict]:
    """Tokens at the optimum and per parameter: ours, the paper's D*(N), the AR ~20 rule."""
    rows = []
    for n in at_N:
        ours, paper = float(law.d_opt(n)), float(paper_d_opt(n))
        rows.append({"N": n, "D*_ours": ours, "D*_paper": paper, "D*_AR(20N)": AR_TOKENS_PER_PARAM * n,
                     "tokens/param_ours": ours / n, "tokens/param_paper": paper / n,
                     "tokens/param_AR": AR_TOKENS_PER_PARAM})
    return rows
