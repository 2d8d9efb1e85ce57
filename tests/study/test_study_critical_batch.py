"""Critical batch estimates on constructed loss-vs-batch curves."""

import math

import pytest

from trimodal.study.critical_batch import analyse, critical_batch


def test_first_degraded_batch_defines_the_critical_batch():
    r = critical_batch([8, 16, 32, 64, 128], [2.00, 1.99, 2.01, 2.10, 2.40], tol=0.02)
    assert r.best_batch == 16 and r.best_loss == pytest.approx(1.99)
    assert r.critical == 32 and not r.censored
    assert 32 < r.crossing < 64  # threshold 2.0298 lies between 2.01 and 2.10


def test_no_degradation_is_censored_and_diverged_runs_count_as_degraded():
    r = critical_batch([16, 8, 32], [2.0, 2.01, 2.005], tol=0.02)
    assert r.censored and r.critical == 32 and r.crossing is None
    r = critical_batch([8, 16, 32], [2.0, 2.01, math.nan], tol=0.02)
    assert r.critical == 16 and not r.censored
    with pytest.raises(ValueError):
        critical_batch([8], [2.0])


def test_analyse_reports_size_independence_and_horizon_growth():
    rows = []
    # Critical batch 32 at D=1e5 and 128 at D=1.6e6 for both sizes: exponent log(4)/log(16) = 0.5.
    for n in (1e5, 4e5):
        for d, bc in ((1e5, 32), (1.6e6, 128)):
            for b in (8, 16, 32, 64, 128, 256):
                loss = 2.0 + (0.0 if b <= bc else 0.5 * math.log2(b / bc))
                rows.append({"N": n, "tokens": d, "batch": b, "eval/elbo": loss - 0.1 * math.log10(n)})
    study = analyse(rows, "batch", "N", "tokens", tol=0.02)
    assert [r.critical for r in study.results] == [32, 128, 32, 128]
    assert all(s["ratio"] == pytest.approx(1.0, rel=0.05) for s in study.size_ratios)
    assert all(h["exponent"] == pytest.approx(0.5, abs=0.05) for h in study.horizon_exponents)
