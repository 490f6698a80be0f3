"""The exact posterior by quadrature over log tau (hnnjax.exact), checked against BDA3,
seed 002, brute-force 2-D integration, i.i.d. sampling, grid refinement and invariants."""

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

from hnnjax import Flat, GroupData, HalfCauchy, HalfNormal, Normal, Prior, datasets
from hnnjax.exact import ExactPosterior, exact, log_marginal_mu_logtau, tail_exponent

EIGHT = datasets.eight_schools()
Y = np.array(EIGHT.y)
SIGMA = np.array(EIGHT.sigma)


@pytest.fixture(scope="module")
def flat():
    return exact(EIGHT, Prior.flat())


@pytest.fixture(scope="module")
def default():
    return exact(EIGHT)


# ------------------------------------------------------------------ BDA3 and seed 002


def test_bda3_school_a_flat_prior(flat):
    """BDA3 (section 5.5, flat prior on (mu, tau)): theta_A has posterior mean ~11.4, sd ~8.3."""
    m, s = flat.mean["theta"][0], flat.sd["theta"][0]
    print(f"theta_A: mean {m:.6f}, sd {s:.6f}")
    assert round(m, 1) == 11.4
    assert round(s, 1) == 8.3


def test_seed002_mcmc_summaries_are_within_monte_carlo_error(flat):
    """Seed 002 reports theta means/sds, P(theta_A > 28) and P(theta_A > theta_j) from 5000
    random-walk Metropolis draws (flat prior); the exact values agree to Monte Carlo error."""
    seed_mean = np.array([11.226786, 7.812253, 6.078697, 7.609353, 5.162853, 6.231208,
                          10.340858, 8.490497])
    seed_sd = np.array([8.510583, 6.185383, 7.993831, 6.515474, 6.381664, 6.729192,
                        6.990141, 8.045273])
    np.testing.assert_allclose(flat.mean["theta"], seed_mean, atol=0.5)
    np.testing.assert_allclose(flat.sd["theta"], seed_sd, atol=0.3)
    p28 = float(flat.prob("theta", 28.0)[0])
    print(f"P(theta_A > 28) = {p28:.6f} (seed 002: 0.0468)")
    assert abs(p28 - 0.0468) < 0.01
    seed_greater = [0.6346, 0.6800, 0.6382, 0.7162, 0.6804, 0.5382, 0.5994]
    exact_greater = [flat.prob_greater(0, j) for j in range(1, 8)]
    print("P(theta_A > theta_j):", np.round(exact_greater, 4))
    np.testing.assert_allclose(exact_greater, seed_greater, atol=0.03)


def test_log_marginal_matches_seed002_logpost_up_to_a_constant():
    def seed_logpost(lam1, lam2):  # seed 002's R function, transcribed
        v = np.exp(2 * lam2)[..., None] + SIGMA**2
        return np.sum(-0.5 * np.log(v) - (lam1[..., None] - Y) ** 2 / (2 * v), axis=-1) + lam2

    rng = np.random.default_rng(0)
    mu, lt = rng.uniform(-18, 37, 50), rng.uniform(-6, 4, 50)
    diff = log_marginal_mu_logtau(mu, lt, EIGHT, Prior.flat()) - seed_logpost(mu, lt)
    np.testing.assert_allclose(diff, -4 * math.log(2 * math.pi), rtol=0, atol=1e-12)
    # Broadcasting over a grid.
    assert log_marginal_mu_logtau(mu[:, None], lt[None, :5], EIGHT, "flat").shape == (50, 5)


# ------------------------------------------------------- brute-force 2-D integration


def _brute_force(data, prior, mu_lim=(-45.0, 55.0), n_mu=1601, u_lim=(-25.0, 7.0), n_u=1201):
    """Moments by the trapezoid rule on a tensor grid over (mu, log tau), theta integrated
    analytically given (mu, tau): an independent route that never integrates mu out."""
    mu = np.linspace(*mu_lim, n_mu)
    u = np.linspace(*u_lim, n_u)
    log_p = log_marginal_mu_logtau(mu[None, :], u[:, None], data, prior)
    top = log_p.max()
    p = np.exp(log_p - top)
    area = (mu[1] - mu[0]) * (u[1] - u[0])
    log_z = top + math.log(p.sum() * area)
    p /= p.sum()
    tau = np.exp(u)[:, None]
    out = {"log_evidence": log_z}

    def mean_sd(x, second):
        m = float((p * x).sum())
        return m, math.sqrt(float((p * second).sum()) - m * m)

    out["mu"] = mean_sd(mu[None, :], mu[None, :] ** 2)
    out["tau"] = mean_sd(tau, tau**2)
    theta = []
    for y_j, s_j in zip(data.y, data.sigma):
        v = s_j**2 + tau**2
        cond_mean = tau**2 / v * y_j + s_j**2 / v * mu[None, :]
        theta.append(mean_sd(cond_mean, s_j**2 * tau**2 / v + cond_mean**2))
    out["theta"] = np.array(theta)
    return out


@pytest.mark.parametrize(
    "prior",
    [Prior.default(), Prior.make(mu=Normal(0, 5), tau=HalfNormal(5))],
    ids=["normal-halfcauchy", "normal-halfnormal"],
)
def test_matches_brute_force_2d_integration(prior):
    post = exact(EIGHT, prior)
    ref = _brute_force(EIGHT, prior)
    for name in ("mu", "tau"):
        np.testing.assert_allclose(post.mean[name], ref[name][0], rtol=1e-6)
        np.testing.assert_allclose(post.sd[name], ref[name][1], rtol=1e-6)
    np.testing.assert_allclose(post.mean["theta"], ref["theta"][:, 0], rtol=1e-6)
    np.testing.assert_allclose(post.sd["theta"], ref["theta"][:, 1], rtol=1e-6)
    np.testing.assert_allclose(post.log_evidence, ref["log_evidence"], rtol=0, atol=1e-6)


def test_evidence_and_tau_cdf_match_scipy_quad(default):
    """The normalizing constant by scipy's adaptive dblquad, and the interpolated tau CDF
    against quad of the directly evaluated density of log tau."""
    z, _ = integrate.dblquad(
        lambda mu, u: math.exp(float(log_marginal_mu_logtau(mu, u, EIGHT)) - default.log_evidence),
        -30.0, 6.0, -35.0, 60.0, epsabs=1e-11, epsrel=1e-10,
    )
    assert abs(z - 1.0) < 1e-7
    for t in (0.05, 1.0, 3.7, 20.0):
        ref, _ = integrate.quad(lambda u: math.exp(default.logpdf_log_tau(u)), -45.0, math.log(t),
                                epsabs=1e-14, epsrel=1e-12, limit=200)
        assert abs(default.cdf("tau", t) - ref) < 1e-10


# ---------------------------------------------------------------- i.i.d. draws


@pytest.mark.parametrize("prior", [Prior.flat(), Prior.default()], ids=["flat", "default"])
def test_iid_draws_match_exact_moments_and_tau_cdf(prior):
    post = exact(EIGHT, prior)
    n = 200_000
    draws = post.sample(n, seed=20240501)
    assert draws["mu"].shape == (n,) and draws["tau"].shape == (n,)
    assert draws["theta"].shape == (n, EIGHT.J)
    for name in ("mu", "tau", "theta"):
        z = (draws[name].mean(axis=0) - post.mean[name]) / (post.sd[name] / math.sqrt(n))
        assert np.all(np.abs(z) < 4), (name, z)
    ks = stats.kstest(draws["tau"], lambda t: post.cdf("tau", t))
    assert ks.pvalue > 1e-3, ks
    # The mixture CDF of mu costs N_grid normal CDFs a point: test a subsample.
    ks_mu = stats.kstest(draws["mu"][:20_000], lambda x: post.cdf("mu", x))
    assert ks_mu.pvalue > 1e-3, ks_mu
    # Same seed, same draws.
    again = post.sample(1000, seed=20240501)
    np.testing.assert_array_equal(again["tau"], draws["tau"][:1000])


# ------------------------------------------------------------ quadrature accuracy


@pytest.mark.parametrize(
    "prior",
    [Prior.flat(), Prior.default(), Prior.make(tau=HalfNormal(2)),
     Prior.make(mu=Normal(3, 10), tau=Flat())],
    ids=["flat", "default", "halfnormal", "normal-flat"],
)
def test_doubling_the_grid_changes_nothing(prior):
    a, b = exact(EIGHT, prior), exact(EIGHT, prior, n_grid=4096)
    assert b.log_tau.size == 2 * a.log_tau.size
    for name in ("mu", "tau", "theta"):
        np.testing.assert_allclose(a.mean[name], b.mean[name], rtol=1e-8)
        np.testing.assert_allclose(a.sd[name], b.sd[name], rtol=1e-8)
    assert abs(a.log_evidence - b.log_evidence) < 1e-10
    q = [0.01, 0.5, 0.99]
    np.testing.assert_allclose(a.quantile("tau", q), b.quantile("tau", q), rtol=1e-8)
    np.testing.assert_allclose(a.quantile("theta", q), b.quantile("theta", q), rtol=1e-8)


def test_quantiles_invert_cdfs(default):
    q = np.array([1e-6, 0.025, 0.25, 0.5, 0.75, 0.975, 1 - 1e-6])
    for name in ("mu", "tau", "theta"):
        x = default.quantile(name, q)
        expected = q if name != "theta" else np.broadcast_to(q[:, None], x.shape)
        np.testing.assert_allclose(default.cdf(name, x), expected, rtol=1e-8, atol=1e-12)
    assert default.quantile("theta", 0.5).shape == (EIGHT.J,)
    assert default.quantile("tau", 0.0) == 0.0 and default.quantile("tau", 1.0) == np.inf
    assert default.quantile("mu", 0.0) == -np.inf
    with pytest.raises(ValueError, match="q"):
        default.quantile("mu", 1.5)
    with pytest.raises(ValueError, match="name"):
        default.quantile("sigma", 0.5)


def test_probabilities_are_consistent(default):
    for name, t in (("mu", 5.0), ("tau", 5.0), ("theta", 10.0)):
        up, down = default.prob(name, t), default.prob(name, t, upper=False)
        np.testing.assert_allclose(up + down, 1.0, atol=1e-12)
    # P(theta_i > theta_j) + P(theta_j > theta_i) = 1.
    assert abs(default.prob_greater(0, 4) + default.prob_greater(4, 0) - 1) < 1e-12


# ---------------------------------------------------- propriety and missing moments


def test_improper_flat_prior_raises():
    with pytest.raises(ValueError, match="prior"):
        exact(GroupData([1.0, 2.0], [1.0, 1.0]), Prior.flat())
    with pytest.raises(ValueError, match="improper"):
        exact(GroupData([1.0], [1.0]), Prior.make(mu=Normal(0, 5), tau=Flat()))


def test_moments_that_do_not_exist_are_inf():
    # Flat prior, J = 3: p(tau | y) ~ tau^-2, so E[tau] and sd(mu) are infinite.
    post = exact(GroupData([1.0, 2.0, 30.0], [1.0, 1.0, 1.0]), Prior.flat())
    assert post.tail_exponent == 2
    assert post.mean["tau"] == np.inf and post.sd["tau"] == np.inf and post.sd["mu"] == np.inf
    assert np.isfinite(post.mean["mu"]) and np.all(np.isfinite(post.sd["theta"]))
    # J = 4: the mean of tau exists, its sd does not.
    post = exact(GroupData([1.0, 2.0, 30.0, 4.0], [1.0, 1.0, 1.0, 1.0]), Prior.flat())
    assert np.isfinite(post.mean["tau"]) and post.sd["tau"] == np.inf
    # J = 1 with a HalfCauchy is proper: tau^-2 tails, so no E[tau] and (flat mu) no sd(mu).
    post = exact(GroupData([3.0], [1.0]), Prior.make(mu=Flat(), tau=HalfCauchy(2)))
    assert post.mean["tau"] == np.inf and post.sd["mu"] == np.inf
    assert abs(post.mean["mu"] - 3.0) < 1e-12
    # A Normal prior on mu adds a power of 1/tau and keeps sd(mu) finite.
    post = exact(GroupData([3.0], [1.0]), Prior.make(mu=Normal(0, 5), tau=HalfCauchy(2)))
    assert post.tail_exponent == 3 and np.isfinite(post.mean["tau"]) and post.sd["tau"] == np.inf
    assert np.isfinite(post.sd["mu"])
    assert tail_exponent(8, Prior.make(tau=HalfNormal(1))) == math.inf


def test_accepts_padded_data_and_rejects_batches():
    post = exact(EIGHT.padded(12), Prior.flat())
    np.testing.assert_allclose(post.mean["theta"], exact(EIGHT, "flat").mean["theta"], rtol=1e-13)
    batch = Prior(*(np.stack([np.asarray(f)] * 2) for f in Prior.default()))
    with pytest.raises(ValueError, match="prior"):
        exact(EIGHT, batch)


def test_sd_theta_can_exceed_sigma():
    """Not an invariant: var(theta_j | y) = E[var(theta_j | tau, y)] + var(E[theta_j | tau, y]);
    only the first term is bounded by sigma_j^2, and the second can push past it."""
    post = exact(GroupData([-50.0, -50.0, -50.0, 50.0, -50.0],
                           [9.47, 0.5, 2.2, 27.87, 6.78]), Prior.flat())
    assert post.sd["theta"][3] > 1.3 * 27.87
    assert np.all(post.weights @ post.theta_var <= post.sigma**2 * (1 + 1e-12))


# ------------------------------------------------------------------ invariants


@st.composite
def datasets_(draw):
    j = draw(st.integers(3, 20))
    y = draw(st.lists(st.floats(-50, 50), min_size=j, max_size=j))
    s = draw(st.lists(st.floats(0.5, 30), min_size=j, max_size=j))
    return GroupData(y, s)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=datasets_(), use_flat=st.booleans())
def test_invariants_on_random_datasets(data, use_flat):
    prior = Prior.flat() if use_flat else Prior.default()
    post = exact(data, prior)
    y, s = post.y, post.sigma
    assert isinstance(post, ExactPosterior)
    assert np.all(post.weights >= 0) and abs(post.weights.sum() - 1) < 1e-12
    assert np.all(np.diff(post.cdf_edges) >= 0)
    # Moments exist for mu and theta; tau's as the tail exponent says.
    assert np.isfinite(post.mean["mu"]) and np.all(np.isfinite(post.mean["theta"]))
    assert np.all(np.isfinite(post.sd["theta"])) and np.all(post.sd["theta"] > 0)
    assert np.isfinite(post.mean["tau"]) == (post.tail_exponent > 2)
    # mu_hat(tau) is a weighted average of y (and of the prior mean), so E[mu | y] lies in
    # their range, and so does each E[theta_j | y] (a weighted average of y_j and mu_hat).
    pts = y if use_flat else np.append(y, 0.0)
    lo, hi = pts.min() - 1e-9, pts.max() + 1e-9
    assert lo <= post.mean["mu"] <= hi
    assert np.all((lo <= post.mean["theta"]) & (post.mean["theta"] <= hi))
    # Given tau, var(theta_j | tau, y) = V_j + B_j^2 V_mu <= sigma_j^2 (V_mu <= sigma_j^2 +
    # tau^2); the total variance can exceed it (test_sd_theta_can_exceed_sigma).
    assert np.all(post.weights @ post.theta_var <= s**2 * (1 + 1e-12))
    # Shrinkage grows with sigma_j.
    b = post.weights @ post.shrink
    order = np.argsort(s, kind="stable")
    assert np.all((0 < b) & (b < 1)) and np.all(np.diff(b[order]) >= -1e-12)
    # Quantiles invert the CDF.
    med = post.quantile("theta", 0.5)
    np.testing.assert_allclose(post.cdf("theta", med), 0.5, atol=1e-9)
    np.testing.assert_allclose(post.cdf("tau", post.quantile("tau", 0.3)), 0.3, atol=1e-9)
    # The grid resolves the posterior: doubling it changes nothing.
    fine = exact(data, prior, n_grid=4096)
    for name in ("mu", "theta"):
        scale = np.abs(post.mean[name]) + post.sd[name]
        assert np.all(np.abs(fine.mean[name] - post.mean[name]) <= 1e-8 * scale)
