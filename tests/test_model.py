"""Log densities of both parametrizations (float64): Jacobian identity, gradients, masking, priors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy import stats

import hnnjax
from hnnjax import model
from hnnjax.data import GroupData

PRIORS = [
    hnnjax.Prior.default(),
    hnnjax.Prior.flat(),
    hnnjax.Prior.make(mu=hnnjax.Normal(2.0, 3.0), tau=hnnjax.HalfNormal(4.0)),
    hnnjax.Prior.make(mu=hnnjax.Flat(), tau=hnnjax.HalfCauchy(1.5)),
]

finite = st.floats(-3.0, 3.0, allow_nan=False)
PAD = 12  # every dataset is padded to this size so the jitted densities compile once
LOGDENS = {p: jax.jit(model.logdensity(p)) for p in model.PARAMETRIZATIONS}
GRADS = {p: jax.jit(jax.grad(model.logdensity(p))) for p in model.PARAMETRIZATIONS}


def _data(J, seed):
    rng = np.random.default_rng(seed)
    return GroupData(rng.normal(0, 10, J), rng.uniform(0.5, 20, J))


@settings(max_examples=40, deadline=None)
@given(J=st.integers(1, 12), seed=st.integers(0, 10_000), mu=finite, log_tau=finite, prior_i=st.integers(0, 3))
def test_centered_equals_noncentered_minus_jacobian(J, seed, mu, log_tau, prior_i):
    """theta = mu + tau * eta has Jacobian tau^J: log p_c(theta) = log p_nc(eta) - J log tau."""
    gd = _data(J, seed)
    data = gd.padded(PAD)
    eta = np.random.default_rng(seed + 1).normal(size=PAD)
    x_nc = jnp.concatenate([jnp.array([mu, log_tau]), eta])
    theta = mu + math.exp(log_tau) * eta
    x_c = jnp.concatenate([jnp.array([mu, log_tau]), theta])
    prior = PRIORS[prior_i]
    lc = LOGDENS["centered"](x_c, data, prior)
    lnc = LOGDENS["noncentered"](x_nc, data, prior)
    np.testing.assert_allclose(lc, lnc - J * log_tau, rtol=1e-10, atol=1e-9)


@settings(max_examples=25, deadline=None)
@given(J=st.integers(1, 10), seed=st.integers(0, 10_000), param=st.sampled_from(model.PARAMETRIZATIONS))
def test_gradient_matches_finite_differences(J, seed, param):
    data = _data(J, seed).padded(PAD)
    prior = hnnjax.Prior.default()
    x = np.random.default_rng(seed).normal(size=2 + PAD)
    g = GRADS[param](jnp.asarray(x), data, prior)
    h = 1e-6
    shifts = np.eye(x.size) * h
    f = jax.jit(jax.vmap(lambda z: model.logdensity(param)(z, data, prior)))
    fd = (f(jnp.asarray(x + shifts)) - f(jnp.asarray(x - shifts))) / (2 * h)
    np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-6)


@settings(max_examples=12, deadline=None)
@given(J=st.integers(1, PAD), seed=st.integers(0, 10_000), param=st.sampled_from(model.PARAMETRIZATIONS))
def test_masked_padding_changes_nothing(J, seed, param):
    """Padded groups contribute nothing, whatever the position holds there."""
    gd = _data(J, seed)
    small, big = gd.padded(PAD), gd.padded(2 * PAD)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=2 + PAD)
    x[2 + J:] = rng.normal(0, 100, size=PAD - J)  # arbitrary values in padded coordinates
    junk = rng.normal(0, 100, size=PAD)
    prior = hnnjax.Prior.default()
    a = LOGDENS[param](jnp.asarray(x), small, prior)
    b = LOGDENS[param](jnp.asarray(np.concatenate([x, junk])), big, prior)
    direct = model.logdensity(param)(jnp.asarray(x[: 2 + J]), gd.padded(J), prior)
    np.testing.assert_allclose(a, direct, rtol=1e-12)
    np.testing.assert_allclose(b, direct, rtol=1e-12)
    gb = GRADS[param](jnp.asarray(np.concatenate([x, junk])), big, prior)
    np.testing.assert_array_equal(gb[2 + J:], 0.0)


def test_prior_densities_match_scipy():
    """Each prior term is the normalized density (plus the log tau Jacobian)."""
    data = GroupData([0.0], [1.0]).padded(1)
    data = data._replace(mask=np.zeros(1))  # likelihood and theta terms off
    x = jnp.array([1.3, math.log(2.5), 0.0])
    cases = [
        (hnnjax.Prior.default(), stats.norm(0, 5).logpdf(1.3) + stats.halfcauchy(scale=5).logpdf(2.5)),
        (hnnjax.Prior.make(mu=hnnjax.Normal(2, 3), tau=hnnjax.HalfNormal(4)),
         stats.norm(2, 3).logpdf(1.3) + stats.halfnorm(scale=4).logpdf(2.5)),
        (hnnjax.Prior.flat(), 0.0),
    ]
    for prior, expected in cases:
        got = model.logdensity_noncentered(x, data, prior)
        np.testing.assert_allclose(got, expected + math.log(2.5), rtol=1e-12)


def test_likelihood_term_matches_scipy():
    gd = hnnjax.datasets.eight_schools()
    data = gd.padded()
    theta = np.linspace(-5, 20, 8)
    x = jnp.concatenate([jnp.array([1.0, 0.5]), jnp.asarray(theta)])
    tau = math.exp(0.5)
    expected = (stats.norm(0, 5).logpdf(1.0) + stats.halfcauchy(scale=5).logpdf(tau) + 0.5
                + stats.norm(1.0, tau).logpdf(theta).sum() + stats.norm(theta, gd.sigma).logpdf(gd.y).sum())
    np.testing.assert_allclose(model.logdensity_centered(x, data, hnnjax.Prior.default()), expected, rtol=1e-12)


def test_constrain_roundtrip_and_vmap():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 4, 10)))
    for param in model.PARAMETRIZATIONS:
        mu, tau, theta = model.constrain(x, param)
        assert mu.shape == (3, 4) and theta.shape == (3, 4, 8)
        np.testing.assert_allclose(model.unconstrain(mu, tau, theta, param), x, rtol=1e-12, atol=1e-12)
    data = hnnjax.datasets.eight_schools().padded()
    f = jax.vmap(lambda p: model.logdensity_noncentered(p, data, hnnjax.Prior.default()))
    assert f(x[0]).shape == (4,)


def test_bad_prior_and_parametrization():
    with pytest.raises(ValueError, match="prior.mu.scale"):
        hnnjax.Prior.make(mu=hnnjax.Normal(0, -1))
    with pytest.raises(ValueError, match="prior.tau"):
        hnnjax.Prior.make(tau=hnnjax.Normal(0, 1))
    with pytest.raises(ValueError, match="parametrization"):
        model.logdensity("funnel")
