"""Closed-form pooling analyses, shrinkage, the marginal mode and empirical Bayes
(hnnjax.pooling), against seeds 002 and 004 and scipy."""

import math

import jax
import numpy as np
import pytest
from scipy import optimize

from hnnjax import GroupData, Prior, datasets
from hnnjax.exact import _log_lik_mu_tau, exact, log_marginal_mu_logtau
from hnnjax.pooling import (
    complete_pooling, complete_pooling_predictive, empirical_bayes, marginal_mode, no_pooling,
    shrinkage,
)

EIGHT = datasets.eight_schools()
# Seed 002's table of shrinkage factors from its 5000 random-walk Metropolis draws.
SEED_SHRINK = np.array([0.8328975, 0.7376910, 0.8458181, 0.7620532, 0.7096051, 0.7620532,
                        0.7376910, 0.8676774])


# ------------------------------------------------------------------ pooling extremes


def test_no_pooling_is_the_data():
    est = no_pooling(EIGHT)
    np.testing.assert_array_equal(est.mean, EIGHT.y)
    np.testing.assert_array_equal(est.sd, EIGHT.sigma)


def test_complete_pooling_seed004():
    pooled = complete_pooling(EIGHT)
    assert f"{pooled.mean:.6f}" == "7.685617"  # seed 004 (and seed 002: 7.68561672495604)
    assert abs(pooled.mean - 7.68561672495604) < 1e-12
    assert f"{pooled.var:.5f}" == "16.58053"
    assert abs(pooled.sd**2 - pooled.var) < 1e-12


def test_complete_pooling_predictive_seed004():
    p_a = complete_pooling_predictive(EIGHT, 0, 28.0)
    p_c = complete_pooling_predictive(EIGHT, "C", -3.0, upper=False)
    print(f"P(y~_A >= 28) = {p_a:.10f}, P(y~_C <= -3) = {p_c:.10f}")
    assert f"{p_a:.8f}" == "0.09560784"
    assert f"{p_c:.7f}" == "0.2587447"
    assert abs(complete_pooling_predictive(EIGHT, "A", 28.0, upper=False) + p_a - 1) < 1e-15
    with pytest.raises(ValueError, match="j"):
        complete_pooling_predictive(EIGHT, "Z", 0.0)
    with pytest.raises(ValueError, match="j"):
        complete_pooling_predictive(EIGHT, 8, 0.0)


# ------------------------------------------------------------------------ shrinkage


def test_shrinkage_exact_vs_seed002_and_draws():
    post = exact(EIGHT, Prior.flat())
    b = shrinkage(post)
    print("exact E[B_j]:", np.round(b, 4), "seed 002 - exact:", np.round(SEED_SHRINK - b, 4))
    # The seed's values are Monte Carlo estimates from one correlated chain: close, not equal.
    np.testing.assert_allclose(b, SEED_SHRINK, atol=0.02)
    # Shrinkage ranks exactly as sigma (ties included), as the seed's table shows.
    np.testing.assert_array_equal(np.argsort(b, kind="stable"),
                                  np.argsort(EIGHT.sigma, kind="stable"))
    draws = post.sample(50_000, seed=7)
    from_draws = shrinkage(draws["tau"], EIGHT)
    np.testing.assert_allclose(from_draws, b, atol=5e-3)
    np.testing.assert_array_equal(shrinkage(draws, EIGHT), from_draws)
    np.testing.assert_allclose(shrinkage(post, EIGHT), b)
    # Fixed tau: B_j exactly.
    np.testing.assert_allclose(shrinkage(np.full(3, 10.0), EIGHT),
                               EIGHT.sigma**2 / (EIGHT.sigma**2 + 100.0))
    with pytest.raises(ValueError, match="data"):
        shrinkage(draws["tau"])
    with pytest.raises(ValueError, match="source"):
        shrinkage(np.array([-1.0]), EIGHT)


# -------------------------------------------------------------------- marginal mode


@pytest.fixture(scope="module")
def flat_mode():
    return marginal_mode(EIGHT, Prior.flat())


def _scipy_mode(data, prior):
    res = optimize.minimize(
        lambda x: -float(log_marginal_mu_logtau(x[0], x[1], data, prior)), [8.0, 2.0],
        method="Nelder-Mead", options={"xatol": 1e-11, "fatol": 1e-14, "maxiter": 20_000},
    )
    return res.x


def test_marginal_mode_seed002(flat_mode):
    """Seed 002 (R optim, Nelder-Mead): mode (7.926685, 1.841525) and covariance
    [[22.3232882, 0.1935228], [0.1935228, 0.5352576]]. Nelder-Mead's default relative
    tolerance of 1e-8 on the log density leaves the mode off by ~2e-3 in mu; the exact mode
    is (7.92441, 1.84140)."""
    print("mode", flat_mode.mode, "cov", flat_mode.cov.tolist())
    np.testing.assert_allclose(flat_mode.mode, [7.926685, 1.841525], rtol=1e-3)
    np.testing.assert_allclose(flat_mode.cov, [[22.3232882, 0.1935228], [0.1935228, 0.5352576]],
                               rtol=1e-2)
    np.testing.assert_allclose(flat_mode.mode, _scipy_mode(EIGHT, Prior.flat()), atol=1e-6)
    assert flat_mode.grad_norm < 1e-9
    assert abs(flat_mode.log_density
               - float(log_marginal_mu_logtau(*flat_mode.mode, EIGHT, "flat"))) < 1e-12


def _flat_log_density(x):
    return float(log_marginal_mu_logtau(x[0], x[1], EIGHT, "flat"))


def _fd_hessian(f, x0, h=1e-4):
    hess = np.empty((2, 2))
    for i in range(2):
        for k in range(2):
            ei, ek = np.eye(2)[i] * h, np.eye(2)[k] * h
            hess[i, k] = (f(x0 + ei + ek) - f(x0 + ei - ek)
                          - f(x0 - ei + ek) + f(x0 - ei - ek)) / (4 * h * h)
    return hess


def test_marginal_mode_covariance_is_the_inverse_hessian(flat_mode):
    """A central finite-difference Hessian of the numpy log density agrees with jax.hessian."""
    hess = _fd_hessian(_flat_log_density, flat_mode.mode)
    np.testing.assert_allclose(flat_mode.cov, np.linalg.inv(-hess), rtol=1e-5)


def test_seed002_numbers_are_explained_by_its_stopping_point(flat_mode):
    """Seed 002's point is within Nelder-Mead's reltol (1e-8) of the maximum of its logpost,
    and its covariance is the inverse negative Hessian at that point to all printed digits
    (finite differences with R's default step ndeps = 1e-3)."""
    seed_point = np.array([7.926685, 1.841525])
    gap = flat_mode.log_density - _flat_log_density(seed_point)
    seed_logpost_at_mode = flat_mode.log_density + 4 * math.log(2 * math.pi)
    assert 0 < gap < 1e-8 * abs(seed_logpost_at_mode)
    cov = np.linalg.inv(-_fd_hessian(_flat_log_density, seed_point, h=1e-3))
    np.testing.assert_allclose(cov, [[22.3232882, 0.1935228], [0.1935228, 0.5352576]],
                               rtol=1e-6)


def test_marginal_mode_default_prior_and_without_x64():
    mode = marginal_mode(EIGHT)
    np.testing.assert_allclose(mode.mode, _scipy_mode(EIGHT, Prior.default()), atol=1e-6)
    assert mode.tau == pytest.approx(math.exp(mode.mode[1]))
    # float64 even when jax's global x64 flag is off.
    with jax.enable_x64(False):
        off = marginal_mode(EIGHT, Prior.flat())
    assert off.mode.dtype == np.float64
    np.testing.assert_allclose(off.mode, marginal_mode(EIGHT, Prior.flat()).mode, atol=1e-12)


# ------------------------------------------------------------------- empirical Bayes


def test_empirical_bayes_eight_schools_is_at_the_boundary():
    eb = empirical_bayes(EIGHT)
    pooled = complete_pooling(EIGHT)
    assert eb.at_boundary and eb.tau == 0.0
    assert abs(eb.mu - pooled.mean) < 1e-12
    np.testing.assert_allclose(eb.theta_mean, pooled.mean, rtol=1e-12)
    np.testing.assert_allclose(eb.theta_sd, 0.0)
    np.testing.assert_allclose(eb.theta_sd_mu_integrated, pooled.sd, rtol=1e-12)
    # The profile likelihood really does increase all the way down to tau = 0.
    u = np.linspace(-10, 5, 200)
    w = 1 / (EIGHT.sigma**2 + np.exp(2 * u)[:, None])
    mu_hat = (w * EIGHT.y).sum(1) / w.sum(1)
    prof = _log_lik_mu_tau(mu_hat, u, EIGHT.y, EIGHT.sigma)
    assert np.all(np.diff(prof) < 0) and prof[0] < eb.log_lik


def test_empirical_bayes_interior_matches_scipy():
    data = GroupData([28.0, -20.0, 15.0, -10.0, 30.0, 2.0], [5.0, 6.0, 4.0, 8.0, 5.0, 7.0])
    eb = empirical_bayes(data)
    res = optimize.minimize(lambda x: -float(_log_lik_mu_tau(x[0], x[1], data.y, data.sigma)),
                            [0.0, 2.0], method="Nelder-Mead",
                            options={"xatol": 1e-11, "fatol": 1e-14, "maxiter": 20_000})
    assert not eb.at_boundary
    assert eb.mu == pytest.approx(res.x[0], abs=1e-6)
    assert eb.tau == pytest.approx(math.exp(res.x[1]), rel=1e-6)
    assert eb.log_lik == pytest.approx(-res.fun, abs=1e-10)
    # Plug-in theta: (1 - B_j) y_j + B_j mu_hat with B_j = sigma_j^2 / (sigma_j^2 + tau_hat^2).
    b = data.sigma**2 / (data.sigma**2 + eb.tau**2)
    np.testing.assert_allclose(eb.theta_mean, (1 - b) * data.y + b * eb.mu, rtol=1e-12)
    np.testing.assert_allclose(eb.theta_sd, np.sqrt(data.sigma**2 * (1 - b)), rtol=1e-12)
    assert np.all(eb.theta_sd_mu_integrated > eb.theta_sd)
    # mu_hat is the weighted mean at tau_hat (the first-order condition in mu).
    w = 1 / (data.sigma**2 + eb.tau**2)
    assert eb.mu == pytest.approx((w * data.y).sum() / w.sum(), abs=1e-9)
