"""Scaling-law fit: recovers known coefficients, frontier closed form, bootstrap intervals."""

import math

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from trimodal.study.fit import ScalingLaw, bootstrap, compare_with_paper, fit_scaling_law, paper_d_opt

TRUE = ScalingLaw(E=1.7, A=400.0, B=4000.0, alpha=0.34, beta=0.28)


def synthetic(law: ScalingLaw, noise: float, seed: int = 0):
    N, D = np.meshgrid(np.geomspace(1e6, 1e9, 4), np.geomspace(1e8, 1e11, 4))
    N, D = N.ravel(), D.ravel()
    L = law.loss(N, D) * np.exp(np.random.default_rng(seed).normal(0, noise, N.size))
    return N, D, L


def test_fit_recovers_known_coefficients_from_noisy_losses():
    N, D, L = synthetic(TRUE, noise=0.003)
    res = fit_scaling_law(N, D, L)
    assert res.law.alpha == pytest.approx(TRUE.alpha, abs=0.03)
    assert res.law.beta == pytest.approx(TRUE.beta, abs=0.02)
    assert res.law.E == pytest.approx(TRUE.E, rel=0.1)
    assert res.law.frontier_exponent == pytest.approx(TRUE.frontier_exponent, rel=0.1)
    assert res.rms_log_residual < 0.01


def test_fit_is_exact_without_noise_and_robust_to_one_outlier():
    N, D, L = synthetic(TRUE, noise=0.0)
    exact = fit_scaling_law(N, D, L).law
    for k in ("E", "A", "B", "alpha", "beta"):
        assert getattr(exact, k) == pytest.approx(getattr(TRUE, k), rel=1e-3)
    L2 = L.copy()
    L2[5] *= 1.5  # a diverged run
    robust = fit_scaling_law(N, D, L2).law
    assert robust.alpha == pytest.approx(TRUE.alpha, abs=0.02)
    assert robust.beta == pytest.approx(TRUE.beta, abs=0.02)


def test_frontier_closed_form_minimises_loss_at_fixed_compute():
    for C in (1e18, 1e21):
        # Numerically minimise L(N, C / 6N) over log N.
        opt = minimize_scalar(lambda x: float(TRUE.loss(math.exp(x), C / 6 / math.exp(x))),
                              bounds=(math.log(1e3), math.log(1e13)), method="bounded",
                              options={"xatol": 1e-9})
        n_star = math.exp(opt.x)
        assert float(TRUE.n_opt(C)) == pytest.approx(n_star, rel=1e-3)
        assert float(TRUE.d_opt(n_star)) == pytest.approx(C / 6 / n_star, rel=1e-3)
        assert float(TRUE.d_opt_at_compute(C)) == pytest.approx(C / 6 / n_star, rel=1e-3)


def test_paper_comparison_numbers():
    assert float(paper_d_opt(1e9)) == pytest.approx(7754 * 1e9 ** 0.84)
    row = compare_with_paper(TRUE, at_N=(1e9,))[0]
    assert row["tokens/param_paper"] == pytest.approx(7754 * 1e9 ** -0.16)
    assert row["tokens/param_AR"] == 20.0
    assert row["tokens/param_ours"] == pytest.approx(float(TRUE.tokens_per_param(1e9)))


def test_bootstrap_interval_covers_truth():
    N, D, L = synthetic(TRUE, noise=0.005, seed=1)
    boot = bootstrap(N, D, L, n_boot=40, seed=0)
    assert boot.n_ok >= 30
    lo, hi = boot.intervals["alpha"]
    assert lo < hi
    assert lo - 0.02 <= TRUE.alpha <= hi + 0.02
    lo, hi = boot.intervals["frontier_exponent"]
    assert lo - 0.1 <= TRUE.frontier_exponent <= hi + 0.1


def test_fit_rejects_too_few_points():
    with pytest.raises(ValueError, match="at least 5"):
        fit_scaling_law([1e6, 1e7], [1e8, 1e9], [3.0, 2.5])
    with pytest.raises(ValueError, match="2 distinct model sizes"):
        fit_scaling_law([1e6] * 6, np.geomspace(1e8, 1e10, 6), np.linspace(3, 2, 6))
