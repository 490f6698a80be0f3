"""Posterior queries (hnnjax.queries): MCMC estimates against the exact posterior.

Correctness is a z-score: (MCMC estimate - exact value) / MCSE, the MCSE of a probability
being `diagnostics.mcse_mean` of its indicator draws (the ESS of the indicator itself).
With ~35 queries per fit, |z| < 4 fails by chance with probability ~2e-3 at most, and the
seeds are fixed. Sampler settings are shared by every test module of the seed analyses
(chains=4, warmup=500, draws=500), so the program compiles once per parametrization.
"""

import numpy as np
import pytest

import hnnjax
from hnnjax import pooling, queries

SETTINGS = dict(chains=4, warmup=500, draws=500)
SCHOOLS = hnnjax.datasets.eight_schools()
EXACT = hnnjax.exact(SCHOOLS)
FLAT = hnnjax.Prior.flat()
EXACT_FLAT = hnnjax.exact(SCHOOLS, FLAT)


@pytest.fixture(scope="module")
def fit():
    return hnnjax.sample(SCHOOLS, "noncentered", target_accept=0.9, seed=11, **SETTINGS)


@pytest.fixture(scope="module")
def fit_flat():
    # The prior is a runtime argument: same compiled program as `fit`.
    return hnnjax.sample(SCHOOLS, "noncentered", target_accept=0.95, seed=12, prior=FLAT, **SETTINGS)


def _check_z(table, limit=4.0):
    ok = table["mcse"] > 0
    z = table["z"][ok]
    assert ok.sum() >= 30
    assert np.all(np.abs(z) < limit), dict(zip(np.asarray(table.index)[ok], np.round(z, 2)))


def test_all_queries_match_exact_default_prior(fit):
    table = queries.compare(fit, EXACT)
    _check_z(table)


def test_all_queries_match_exact_flat_prior(fit_flat):
    """BDA3's flat prior (seed 002): the heavy-tailed tau posterior, still within MCSE."""
    _check_z(queries.compare(fit_flat, EXACT_FLAT))


def test_probabilities_agree_with_exact_methods():
    np.testing.assert_allclose(queries.prob_positive(EXACT).value, EXACT.prob("theta", 0.0))
    assert queries.prob_positive(EXACT, "mu").value == pytest.approx(float(EXACT.prob("mu", 0.0)))
    np.testing.assert_allclose(queries.shrinkage(EXACT).value, pooling.shrinkage(EXACT))
    assert queries.prob(EXACT, "tau", 5.0, upper=False).value == pytest.approx(float(EXACT.cdf("tau", 5.0)))


def test_draw_estimates_match_direct_computation(fit):
    th = fit.draws["theta"]
    est = queries.prob_positive(fit)
    np.testing.assert_allclose(est.value, (th > 0).mean(axis=(0, 1)))
    gt = queries.prob_greater(fit, 2)
    assert np.isnan(gt.value[2]) and np.isnan(gt.mcse[2])
    np.testing.assert_allclose(np.delete(gt.value, 2), np.delete((th[..., 2:3] > th).mean(axis=(0, 1)), 2))
    np.testing.assert_allclose(queries.shrinkage(fit).value, pooling.shrinkage(fit.draws, SCHOOLS))
    assert np.all(np.asarray(est.mcse) > 0)


def test_predictive_closed_form_against_simulation():
    """Exact predictive probabilities (mixtures over tau) against i.i.d. simulation."""
    n = 200_000
    sim = queries.predictive_draws(EXACT, n=n, seed=3, sigma_new=10.0)
    cases = [
        (queries.predictive_prob(EXACT, "new_group", 0.0).value, (sim["theta_new"] > 0).mean()),
        (queries.predictive_prob(EXACT, "new_group", 20.0, sigma_new=10.0).value, (sim["y_new"] > 20).mean()),
        (queries.predictive_prob(EXACT, "replicate", 28.0, j=0).value, (sim["y_rep"][..., 0] > 28).mean()),
        (queries.predictive_prob(EXACT, "replicate", -3.0, j=2, upper=False).value,
         (sim["y_rep"][..., 2] <= -3).mean()),
    ]
    for p, freq in cases:
        assert abs(freq - p) < 4 * np.sqrt(p * (1 - p) / n), (p, freq)


def test_predictive_from_draws_within_mcse(fit):
    for which, kw in (("new_group", {}), ("new_group", {"sigma_new": 15.0}), ("replicate", {"j": 0})):
        est = queries.predictive_prob(fit, which, 28.0, **kw)
        ex = queries.predictive_prob(EXACT, which, 28.0, **kw)
        assert abs(est.z(ex.value)) < 4
    allj = queries.predictive_prob(fit, "replicate", 0.0, upper=False)
    assert np.asarray(allj.value).shape == (8,)
    draws = queries.predictive_draws(fit, sigma_new=5.0)
    assert draws["theta_new"].shape == (4, 500) and draws["y_rep"].shape == (4, 500, 8)
    assert draws["y_new"].shape == (4, 500)


def test_dict_sources_and_errors(fit):
    one_chain = {k: fit.draws[k][0] for k in ("mu", "tau", "theta")}
    est = queries.prob_positive(one_chain)
    np.testing.assert_allclose(est.value, (fit.draws["theta"][0] > 0).mean(axis=0))
    with pytest.raises(ValueError, match="data"):
        queries.shrinkage(one_chain)
    assert np.asarray(queries.shrinkage(one_chain, SCHOOLS).value).shape == (8,)
    table = queries.summary(one_chain, data=SCHOOLS)
    assert "P(theta[A] > 28)" in table.index
    with pytest.raises(ValueError, match="name"):
        queries.prob(fit, "sigma")
    with pytest.raises(ValueError, match="which"):
        queries.predictive_prob(fit, "new", 0.0)
    with pytest.raises(ValueError, match="source"):
        queries.prob_positive({"mu": np.zeros(3)})
    # A constant indicator has MCSE 0, not NaN.
    assert queries.prob(fit, "tau", -1.0).mcse == 0.0
