"""ChEES-HMC adaptation (hnnjax.chees): jitter sequence, gradient estimator, adaptation loop.

The reference for the gradient is the isotropic Gaussian, where HMC dynamics are analytic:
for N(0, s^2) per coordinate with inverse mass s^2, x(t) = x0 cos t + s^2 p0 sin t and
p(t) = p0 cos t - (x0 / s^2) sin t. For a standard normal with unit mass and true mean 0,

    ||x(theta)||^2 - ||x0||^2 = sin^2(theta) sum(p^2 - x^2) + sin(2 theta) sum(x p),

so ChEES(theta) = 1/4 E[(...)^2] = d sin^2(theta) and dChEES/dtheta = d sin(2 theta).
With the jittered length theta = u T, dChEES/dT = u d sin(2 u T).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hnnjax import chees

# Jitted entry points (one compile each per shape and dtype instead of eager op-by-op).
_update = jax.jit(chees.update)
_gradient = jax.jit(chees.chees_gradient, static_argnames=("whiten",))

# --- jitter and step counts -------------------------------------------------------------


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_halton_first_values(dtype):
    got = np.asarray(chees.halton(jnp.arange(8), dtype))
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got, [1 / 2, 1 / 4, 3 / 4, 1 / 8, 5 / 8, 3 / 8, 7 / 8, 1 / 16])


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_halton_in_half_open_unit_interval_and_equidistributed(dtype):
    t = jnp.arange(2**10 - 1)
    u = np.asarray(chees.halton(t, dtype), np.float64)
    # t + 1 = 1 .. 2^10 - 1 gives every j / 2^10, j = 1 .. 2^10 - 1, once.
    np.testing.assert_array_equal(np.sort(u), np.arange(1, 2**10) / 2**10)
    big = jnp.asarray([2**24, 2**31 - 1, 2**32 - 2], jnp.uint32)
    ub = np.asarray(chees.halton(big, dtype))
    assert np.all(ub > 0) and np.all(ub <= 1)
    # Traced under jit with an int32 counter, as the driver calls it.
    np.testing.assert_array_equal(jax.jit(lambda i: chees.halton(i, dtype))(jnp.int32(2)), 0.75)


def test_num_steps_formula_floor_and_cap():
    x = jnp.zeros((4, 3))
    st = chees.init(0.1, x, jnp.ones(3), trajectory_length=1.0)
    t = jnp.arange(16)
    n = np.asarray(jax.vmap(lambda i: chees.num_steps(st, i, 1024))(t))
    u = np.asarray(chees.halton(t, jnp.float64))
    np.testing.assert_array_equal(n, np.maximum(1, np.ceil(u * 1.0 / 0.1)))
    assert n.dtype == np.int32
    # One step at least; the cap applies.
    st_short = chees.init(0.1, x, jnp.ones(3), trajectory_length=1e-3)
    assert int(chees.num_steps(st_short, 5)) == 1
    st_long = chees.init(0.1, x, jnp.ones(3), trajectory_length=1e6)
    assert int(chees.num_steps(st_long, 2, max_steps=50)) == 50
    assert int(chees.steps_for(0.1, 1.0, 0)) == 5


# --- the gradient estimator ---------------------------------------------------------------


def _analytic_hmc(x0, p0, theta, s2):
    """Exact dynamics of N(0, s2) with inverse mass s2 for integration time theta."""
    c, s = jnp.cos(theta), jnp.sin(theta)
    return x0 * c + s2 * p0 * s, p0 * c - (x0 / s2) * s


@pytest.mark.parametrize("whiten", [True, False])
def test_gradient_matches_finite_difference(whiten):
    """Same (x0, p0) at every T (common random numbers), cross-chain means held fixed, as
    the estimator treats them: its value is exactly d ChEES_hat / d log T."""
    C, d = 32, 5
    k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(0), 4)
    s2 = jnp.exp(jax.random.normal(k4, (d,)))  # non-unit metric: whitening matters
    x0 = jnp.sqrt(s2) * jax.random.normal(k1, (C, d))
    p0 = jax.random.normal(k2, (C, d)) / jnp.sqrt(s2)
    a = jax.random.uniform(k3, (C,), minval=0.05, maxval=1.0)
    diverging = jnp.zeros(C, bool).at[3].set(True)
    live = jnp.ones(d)
    u = chees.halton(4, jnp.float64)  # 5/8
    metric = 1.0 / s2 if whiten else jnp.ones(d)
    w = jnp.where(diverging, 0.0, a)

    for T0 in [0.3, 1.2, 2.0]:
        xp0, pp0 = _analytic_hmc(x0, p0, u * T0, s2)
        m_prev = x0.mean(0)
        m_prop = jnp.sum(w[:, None] * xp0, 0) / jnp.sum(w)

        @jax.jit
        def criterion(log_T):
            xp, _ = _analytic_hmc(x0, p0, u * jnp.exp(log_T), s2)
            delta = jnp.sum(metric * (xp - m_prop) ** 2, -1) - jnp.sum(metric * (x0 - m_prev) ** 2, -1)
            return 0.25 * jnp.sum(w * delta**2) / jnp.sum(w)

        h = 1e-5
        fd = (criterion(np.log(T0) + h) - criterion(np.log(T0) - h)) / (2 * h)
        grad_T, total = _gradient(x0, xp0, pp0, a, diverging, s2, u, live=live, whiten=whiten)
        np.testing.assert_allclose(T0 * grad_T, fd, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(total, jnp.sum(w))
        # And the autodiff derivative of the same criterion (independent of h).
        np.testing.assert_allclose(T0 * grad_T, jax.grad(criterion)(jnp.log(T0)), rtol=1e-10)


def test_gradient_matches_closed_form_expectation():
    """Monte Carlo mean of the estimator vs d ChEES / dT = u d sin(2 u T) (unit Gaussian)."""
    C, d, groups = 2**15, 4, 16
    k1, k2 = jax.random.split(jax.random.PRNGKey(1))
    x0 = jax.random.normal(k1, (groups, C // groups, d))
    p0 = jax.random.normal(k2, (groups, C // groups, d))
    ones = jnp.ones(d)
    u = chees.halton(0, jnp.float64)  # 1/2
    for T in [0.5, 1.5, 2.5, 3.5]:
        xp, pp = _analytic_hmc(x0, p0, u * T, 1.0)
        est = jax.vmap(
            lambda a, b, c: _gradient(a, b, c, jnp.ones(C // groups), jnp.zeros(C // groups, bool), ones, u)[0]
        )(x0, xp, pp)
        mean, se = float(est.mean()), float(est.std(ddof=1) / np.sqrt(groups))
        exact = float(u * d * np.sin(2 * u * T))
        assert abs(mean - exact) < 4 * se + 0.02, (T, mean, exact, se)


def test_adam_ascends_and_clips_in_log_space():
    """First Adam step (beta1 = 0, bias-corrected) is exactly lr * sign(gradient)."""
    C, d = 16, 3
    k1, k2 = jax.random.split(jax.random.PRNGKey(2))
    x0 = jax.random.normal(k1, (C, d))
    p0 = jax.random.normal(k2, (C, d))
    st = chees.init(1e-3, x0, jnp.ones(d), trajectory_length=0.4)
    u = chees.halton(0, jnp.float64)
    xp, pp = _analytic_hmc(x0, p0, u * 0.4, 1.0)
    a, div = jnp.ones(C), jnp.zeros(C, bool)
    g, _ = _gradient(x0, xp, pp, a, div, jnp.ones(d), u)
    for lr in [0.025, 1.0]:
        new = _update(st, 0, x0, xp, pp, a, div, jnp.ones(d), 0.8, learning_rate=lr)
        step = float(new.log_T - st.log_T)
        np.testing.assert_allclose(step, np.sign(float(g)) * min(lr, chees.LOG_UPDATE_CLIP), rtol=1e-9)
        assert int(new.adam[0].count) == 1
    # T is bounded by max_steps * eps (here eps shrinks a little after one update).
    big = chees.init(0.1, x0, jnp.ones(d), trajectory_length=100.0)
    new = _update(big, 0, x0, xp, pp, a, div, jnp.ones(d), 0.8, max_steps=20)
    assert float(chees.trajectory_length(new)) <= 20 * float(chees.step_size(new)) * (1 + 1e-12)
    eps_f, T_f = chees.final(new, max_steps=20)
    assert float(eps_f) <= float(T_f) <= 20 * float(eps_f) * (1 + 1e-12)


# --- divergences and non-finite values ------------------------------------------------------


def _batch(C=8, d=3, seed=3):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    x0 = jax.random.normal(k1, (C, d))
    p0 = jax.random.normal(k2, (C, d))
    xp, pp = _analytic_hmc(x0, p0, 0.7, 1.0)
    return x0, xp, pp


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_divergent_chain_gets_zero_weight(dtype):
    C, d = 8, 3
    x0, xp, pp = (v.astype(dtype) for v in _batch(C, d))
    a = jnp.full(C, 0.9, dtype)
    div = jnp.zeros(C, bool).at[2].set(True)
    inv = jnp.ones(d, dtype)
    st = chees.init(0.5, x0, jnp.ones(d, dtype))
    # A NaN proposal (with its accept prob 0 from the kernel) in the divergent chain ...
    xp_nan = xp.at[2].set(jnp.nan)
    pp_nan = pp.at[2].set(jnp.nan)
    a_nan = a.at[2].set(0.0)
    new = _update(st, 0, x0, xp_nan, pp_nan, a_nan, div, inv, 0.8)
    for leaf in jax.tree.leaves(new):
        assert np.all(np.isfinite(np.asarray(leaf, np.float64))), new
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            assert leaf.dtype == dtype
    # ... gives the same state as any finite value in its place: its weight is 0.
    ref = _update(st, 0, x0, xp.at[2].set(123.0), pp.at[2].set(-7.0), a, div, inv, 0.8)
    for l1, l2 in zip(jax.tree.leaves(new), jax.tree.leaves(ref)):
        np.testing.assert_array_equal(l1, l2)
    assert float(new.log_T) != float(st.log_T)  # the other chains still adapted T
    # A non-finite proposal that was not flagged divergent is dropped too.
    g1, w1 = _gradient(x0, xp.at[5].set(jnp.inf), pp, a, div, inv, 0.5)
    g2, w2 = _gradient(x0, xp.at[5].set(0.0), pp, a.at[5].set(0.0), div, inv, 0.5)
    np.testing.assert_allclose(g1, g2, rtol=1e-6)
    np.testing.assert_allclose(w1, w2, rtol=1e-6)


def test_all_chains_divergent_keeps_T_and_shrinks_eps():
    C, d = 8, 3
    x0, xp, pp = _batch(C, d)
    st = chees.init(0.5, x0, jnp.ones(d), trajectory_length=2.0)
    new = _update(st, 0, x0, xp * jnp.nan, pp, jnp.zeros(C), jnp.ones(C, bool), jnp.ones(d), 0.8)
    assert float(new.log_T) == float(st.log_T)
    assert int(new.adam[0].count) == 0
    # Dual averaging (mu = log(10 eps0)) moves eps by the statistic's distance to the
    # target: all-divergent counts as 0 acceptance, lower than any accepting batch.
    ok = _update(st, 0, x0, xp, pp, jnp.full(C, 0.8), jnp.zeros(C, bool), jnp.ones(d), 0.8)
    assert float(chees.step_size(new)) < float(chees.step_size(ok))
    np.testing.assert_allclose(new.dual.h_bar, 0.8 / 11.0)
    assert all(np.all(np.isfinite(np.asarray(leaf, np.float64))) for leaf in jax.tree.leaves(new))


def test_overflowing_float32_gradient_is_skipped():
    """A finite gradient whose square overflows float32 must not poison Adam's state."""
    C, d = 8, 3
    x0, xp, pp = (1e7 * v.astype(jnp.float32) for v in _batch(C, d))
    st = chees.init(jnp.float32(0.5), x0, jnp.ones(d, jnp.float32), trajectory_length=jnp.float32(50.0))
    new = _update(st, 0, x0, xp, pp, jnp.ones(C), jnp.zeros(C, jnp.int32), jnp.ones(d, jnp.float32), 0.8)
    assert int(new.adam[0].count) == 0 and float(new.log_T) == float(st.log_T)
    assert all(np.all(np.isfinite(np.asarray(leaf))) for leaf in jax.tree.leaves(new))


def test_harmonic_mean():
    a = jnp.asarray([0.5, 1.0, 0.25, 0.9])
    div = jnp.asarray([False, False, False, True])
    np.testing.assert_allclose(chees.harmonic_mean(a, div), 3 / (2 + 1 + 4))
    np.testing.assert_allclose(chees.harmonic_mean(a, div.astype(jnp.int32)), 3 / (2 + 1 + 4))
    assert float(chees.harmonic_mean(a.at[0].set(0.0), div)) == 0.0  # one stuck chain
    assert float(chees.harmonic_mean(a, jnp.ones(4, bool))) == 0.0  # all divergent
    assert float(chees.harmonic_mean(a.at[1].set(jnp.nan), div)) == pytest.approx(2 / 6)


def test_padding_coordinates_are_ignored():
    """A padded coordinate (inverse mass 0, live 0) does not change the gradient."""
    C, d = 8, 3
    x0, xp, pp = _batch(C, d)
    g, _ = _gradient(x0, xp, pp, jnp.ones(C), jnp.zeros(C, bool), jnp.ones(d), 0.5)
    junk = jax.random.normal(jax.random.PRNGKey(9), (C, 1))
    g_pad, _ = _gradient(
        jnp.concatenate([x0, junk], 1), jnp.concatenate([xp, 2 * junk], 1), jnp.concatenate([pp, junk], 1),
        jnp.ones(C), jnp.zeros(C, bool), jnp.asarray([1.0, 1.0, 1.0, 0.0]), 0.5, live=jnp.asarray([1.0, 1, 1, 0]),
    )
    np.testing.assert_allclose(g_pad, g, rtol=1e-12)
    st = chees.init(0.5, jnp.zeros((C, 4)), jnp.asarray([1.0, 1, 1, 0]))
    assert float(chees.inverse_mass(st)[3]) == 0.0


def test_update_vmaps_over_models():
    """The driver vmaps over blocks of models (`sampler._blockwise`): batched updates equal the per-model ones."""
    C, d, M = 8, 3, 3
    batches = [_batch(C, d, seed=s) for s in range(M)]
    x0, xp, pp = (jnp.stack(v) for v in zip(*batches))
    eps0 = jnp.asarray([0.3, 0.5, 0.7])
    st = jax.vmap(lambda e, x: chees.init(e, x, jnp.ones(d)))(eps0, x0)
    a = jnp.full((M, C), 0.7)
    div = jnp.zeros((M, C), bool)
    inv = jnp.ones((M, d))
    upd = jax.jit(jax.vmap(lambda s, x, y, p, aa, dv, im: chees.update(s, 7, x, y, p, aa, dv, im, 0.8)))
    new = upd(st, x0, xp, pp, a, div, inv)
    steps = jax.vmap(lambda s: chees.num_steps(s, 8))(new)
    for m in range(M):
        one = _update(jax.tree.map(lambda v: v[m], st), 7, x0[m], xp[m], pp[m], a[m], div[m], inv[m], 0.8)
        for l1, l2 in zip(jax.tree.leaves(one), jax.tree.leaves(new)):
            np.testing.assert_allclose(l1, l2[m], rtol=1e-12)
        assert int(steps[m]) == int(chees.num_steps(one, 8))


# --- the whole adaptation loop on a standard normal ------------------------------------------


@functools.lru_cache(maxsize=None)
def _warmup_program(C, d, n, dtype, target=0.8):
    """ChEES warmup of jittered HMC on N(0, I_d) with unit mass (leapfrog, Metropolis).

    The random numbers are drawn ahead, in numpy, and scanned over (keeps the compiled
    program small: compile time dominates this test).
    """

    def run(x0, momenta, uniforms, T0):
        inv = jnp.ones(d, dtype)
        st = chees.init(jnp.asarray(0.1, dtype), x0, inv, T0.astype(dtype))

        def body(carry, inputs):
            st, x = carry
            t, p, v = inputs
            eps = chees.step_size(st)

            def leapfrog(_, c):
                q, r = c
                r = r - 0.5 * eps * q
                q = q + eps * r
                return q, r - 0.5 * eps * q

            q, r = jax.lax.fori_loop(0, chees.num_steps(st, t), leapfrog, (x, p))
            h0 = 0.5 * jnp.sum(x * x + p * p, -1)
            h1 = 0.5 * jnp.sum(q * q + r * r, -1)
            div = ~(h1 - h0 <= 1000.0)
            a = jnp.where(div, 0.0, jnp.exp(jnp.minimum(h0 - h1, 0.0)))
            x_new = jnp.where((v < a)[:, None], q, x)
            st = chees.update(st, t, x, q, r, a, div, inv, target)
            return (st, x_new), chees.harmonic_mean(a, div)

        (st, _), hm = jax.lax.scan(body, (st, x0), (jnp.arange(n), momenta, uniforms))
        return st, hm

    return jax.jit(run)


def _chees_fixed_point(eps):
    """Root of E_u[u sin(2 phi ceil(u T / eps))] in T (the first sign change from + to -).

    With exact dynamics the expected ChEES gradient is proportional to E_u[u sin(2 u T)]
    (module docstring), zero at T = 2.2467 (tan 2T = 2T): with a uniform jitter on
    (0, T], the best T is longer than the quarter period pi/2 that is best without
    jitter. Leapfrog with step eps on a unit-frequency oscillator turns by
    phi = arccos(1 - eps^2/2) per step and runs ceil(u T / eps) steps, which moves the
    root to about 1.7 at eps ~ 0.73 (the step size that gives 0.8 harmonic-mean
    acceptance in 10 dimensions). The Halton jitter is equidistributed, so E_u is a
    uniform average.
    """
    u = (np.arange(20000) + 0.5) / 20000
    phi = np.arccos(1.0 - eps**2 / 2.0)
    Ts = np.linspace(0.5, 4.0, 701)
    g = np.array([np.mean(u * np.sin(2 * phi * np.ceil(u * T / eps))) for T in Ts])
    i = np.nonzero((g[:-1] > 0) & (g[1:] <= 0))[0][0]
    return Ts[i]


@pytest.mark.parametrize(
    "dtype,T0,seed",
    [(jnp.float64, None, 0), (jnp.float64, 3.0, 1), (jnp.float32, None, 2)],
)
def test_adaptation_finds_chees_length_on_standard_normal(dtype, T0, seed):
    """64 chains, d = 10, 600 warmup iterations, from T = eps (one step) or from T = 3.

    Band for T: [1.2, 2.6] contains the jitter-free optimum pi/2 and the continuous-time
    jittered optimum 2.2467 and the leapfrog-corrected one (~1.7); it excludes both failure
    modes, T stuck near its start eps = 0.1 and T running off toward max_steps eps. The
    sharper check is against the fixed point predicted for the final step size (within
    12%; observed within ~3%). The starting value T = 3 lies below the first minimum of the
    jittered ChEES curve (T ~ 3.9), so it must come down to the same fixed point (above
    that minimum there are further, lower local maxima of ChEES, e.g. near T ~ 5.4).
    """
    C, d, n = 64, 10, 600
    rng = np.random.default_rng(seed)
    x0 = jnp.asarray(3.0 * rng.standard_normal((C, d)), dtype)  # over-dispersed start
    momenta = jnp.asarray(rng.standard_normal((n, C, d)), dtype)
    uniforms = jnp.asarray(rng.uniform(size=(n, C)), dtype)
    T_init = jnp.asarray(0.1 if T0 is None else T0, dtype)
    st, hm = _warmup_program(C, d, n, dtype)(x0, momenta, uniforms, T_init)
    eps, T = (float(v) for v in chees.final(st))
    assert 1.2 < T < 2.6, T
    assert abs(T / _chees_fixed_point(eps) - 1.0) < 0.12, (T, eps, _chees_fixed_point(eps))
    # Step size: harmonic-mean acceptance at the target on average over the last third;
    # eps well inside leapfrog's stability limit (2) and far from its start (0.1).
    assert abs(float(jnp.mean(hm[-200:])) - 0.8) < 0.03
    assert 0.4 < eps < 1.2, eps
    # The moving-average cross-chain variance forgot the over-dispersed start (var 9).
    np.testing.assert_allclose(np.asarray(chees.inverse_mass(st)), 1.0, atol=0.25)
    for leaf in jax.tree.leaves(st):
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            assert leaf.dtype == dtype
