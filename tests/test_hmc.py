"""hnnjax.hmc: static-trajectory HMC as a one-leapfrog-per-call state machine.

The trajectory is recomputed independently in numpy (leapfrog, Hamiltonian, Metropolis
probability) and compared with the kernel's; moments are z-tested on independent chains
started from exact draws (the spread of the chain means is the standard error).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from hnnjax import hmc
from hnnjax.nuts import ChainState

SCALES = np.array([0.5, 1.0, 2.0, 3.0, 10.0])
N = 128  # chains per vmapped call (one compilation per driver)
Z_MAX = 4.0


def gauss_ldg(x):
    s = jnp.asarray(SCALES, x.dtype)
    return -0.5 * jnp.sum((x / s) ** 2), -x / s**2


def np_leapfrog(x, p, eps, inv, n):
    """n leapfrog steps on N(0, diag(SCALES^2)), numpy; returns every state."""
    grad = lambda y: -y / SCALES**2  # noqa: E731
    out = []
    for _ in range(n):
        p = p + 0.5 * eps * grad(x)
        x = x + eps * inv * p
        p = p + 0.5 * eps * grad(x)
        out.append((x, p))
    return out


def np_energy(x, p, inv):
    return 0.5 * np.sum((x / SCALES) ** 2) + 0.5 * np.sum(inv * p * p)


@functools.lru_cache(maxsize=None)
def _driver(override: bool, max_delta: float = 1000.0):
    """Vmapped, jitted: init (optionally with a traced num_steps), advance until done, finish.
    Returns the fresh trajectory, the finished one, the chain state and the info."""
    config = hmc.HMC(num_steps=7, max_delta=max_delta)

    def one(key, x, step_size, inv, num_steps):
        lp, grad = gauss_ldg(x)
        traj0 = hmc.init(key, ChainState(x, lp, grad), step_size, inv, config,
                         num_steps=num_steps if override else None)
        traj = lax.while_loop(
            lambda t: ~t.done, lambda t: hmc.advance(t, step_size, inv, gauss_ldg, config), traj0
        )
        chain, info = hmc.finish(traj, inv)
        return traj0, traj, chain, info

    return jax.jit(jax.vmap(one, in_axes=(0, 0, 0, None, 0)))


def run(seed, x, eps, inv, num_steps=None, max_delta=1000.0):
    """One transition of N chains; `seed` makes the N keys (counter_rng keys: two uint32 words)."""
    keys = jnp.asarray(np.random.default_rng(seed).integers(0, 2**32, (N, 2), dtype=np.uint32))
    steps = jnp.zeros(N, jnp.int32) if num_steps is None else jnp.broadcast_to(jnp.asarray(num_steps, jnp.int32), (N,))
    eps = jnp.broadcast_to(jnp.asarray(eps, x.dtype), (N,))
    return jax.device_get(_driver(num_steps is not None, max_delta)(keys, x, eps, jnp.asarray(inv, x.dtype), steps))


def test_moments():
    """N(0, diag(SCALES^2)), num_steps = 7 (the configured default), step 0.3, a diagonal
    inverse mass near SCALES^2 (so every coordinate moves ~2 radians per transition, away
    from the multiples of pi where fixed-length HMC stalls): z-tests of E[x] and E[x^2]."""
    inv = SCALES**2 * np.array([1.2, 0.8, 1.0, 0.9, 1.1])
    rng = np.random.default_rng(31)
    x = jnp.asarray(rng.normal(size=(N, 5)) * SCALES)
    draws, accepts, momenta = [], [], []
    for t in range(200):
        traj0, traj, chain, info = run(31_000 + t, x, 0.3, inv)
        assert np.all(np.asarray(info.n_steps) == 7)
        x = jnp.asarray(chain.position)
        draws.append(np.asarray(chain.position))
        accepts.append(np.asarray(info.accept_stat))
        momenta.append(np.asarray(traj0.state.momentum))
    draws = np.stack(draws, 1)
    # The initial momenta drawn by hmc.init are N(0, diag(1/inv)): mean and variance z-tests.
    p = np.concatenate(momenta)
    var = 1.0 / inv
    assert np.all(np.abs(p.mean(0)) / np.sqrt(var / len(p)) < Z_MAX)
    assert np.all(np.abs((p**2).mean(0) - var) / ((p**2).std(0, ddof=1) / np.sqrt(len(p))) < Z_MAX)
    for stat, truth in ((draws, np.zeros(5)), (draws**2, SCALES**2)):
        means = stat.mean(1)
        z = (means.mean(0) - truth) / (means.std(0, ddof=1) / np.sqrt(N))
        print(means.mean(0), z)
        assert np.all(np.abs(z) < Z_MAX), z
    c = draws - draws.mean((0, 1))
    rho1 = np.sum(c[:, 1:] * c[:, :-1], axis=(0, 1)) / np.sum(c * c, axis=(0, 1))
    print("lag-1 autocorrelation", rho1, "mean accept", np.mean(accepts))
    assert np.all(rho1 < 0.8)  # moving (a stuck chain gives 1; observed about -0.3 to -0.65)
    assert 0.5 < np.mean(accepts) < 1.0


def test_acceptance_statistic_is_recomputed_metropolis_probability():
    """accept_stat = min(1, exp(H0 - H_end)) with H recomputed in numpy from the initial
    momentum; the draw is the end point when accepted and the start otherwise; over many
    transitions the acceptance frequency matches the probabilities (z-test)."""
    inv = np.ones(5)
    eps, steps = 0.8, 10  # eps * omega_max = 1.6: stable but with large energy errors
    rng = np.random.default_rng(41)
    n_acc, sum_p, sum_var = 0, 0.0, 0.0
    for b in range(8):
        x = rng.normal(size=(N, 5)) * SCALES
        traj0, traj, chain, info = run(400 + b, jnp.asarray(x), eps, inv, steps)
        for i in range(N):
            p0 = np.asarray(traj0.state.momentum[i])
            x_end, p_end = np_leapfrog(x[i], p0, eps, inv, steps)[-1]
            np.testing.assert_allclose(traj.state.position[i], x_end, rtol=1e-12, atol=1e-12)
            h0, h1 = np_energy(x[i], p0, inv), np_energy(x_end, p_end, inv)
            prob = min(1.0, np.exp(h0 - h1))
            assert info.accept_stat[i] == pytest.approx(prob, rel=1e-10, abs=1e-14)
            accepted = np.array_equal(chain.position[i], traj.state.position[i])
            if prob == 1.0:
                assert accepted
            if not accepted:
                np.testing.assert_array_equal(chain.position[i], x[i])
            assert info.energy[i] == pytest.approx(h1 if accepted else h0, rel=1e-10)
            assert not info.diverging[i]
            n_acc += accepted
            sum_p += prob
            sum_var += prob * (1 - prob)
    print("accepted", n_acc, "expected", sum_p, "sd", np.sqrt(sum_var))
    assert sum_var > 10  # the test has rejections to look at
    assert abs(n_acc - sum_p) / np.sqrt(sum_var) < Z_MAX


def test_divergent_trajectory_is_rejected_and_flagged():
    """A huge step makes the leapfrog unstable: the trajectory stops at the first step with
    H - H0 > 1000, is flagged, reports that (finite) point, and is rejected."""
    inv = np.ones(5)
    eps, steps = 5.0, 20
    rng = np.random.default_rng(51)
    x = rng.normal(size=(N, 5)) * SCALES
    traj0, traj, chain, info = run(5, jnp.asarray(x), eps, inv, steps)
    assert np.all(info.diverging)
    for i in range(N):
        p0 = np.asarray(traj0.state.momentum[i])
        h0 = np_energy(x[i], p0, inv)
        states = np_leapfrog(x[i], p0, eps, inv, steps)
        first = next(k for k, (xs, ps) in enumerate(states) if np_energy(xs, ps, inv) - h0 > 1000)
        assert info.n_steps[i] == first + 1 < steps
        pos = np.asarray(info.divergence_position[i])
        assert np.all(np.isfinite(pos))
        np.testing.assert_allclose(pos, states[first][0], rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(chain.position[i], x[i])
        assert info.accept_stat[i] == 0.0
        assert info.energy[i] == pytest.approx(h0, rel=1e-12)


def test_divergence_is_rejected_even_when_its_metropolis_probability_is_not_zero():
    """With max_delta = 1 a 'divergence' (H - H0 > 1) still has Metropolis probability
    exp(H0 - H) > e^-1000; the kernel must reject every flagged trajectory regardless, and
    run the unflagged ones to the end."""
    inv = np.ones(5)
    rng = np.random.default_rng(81)
    x = rng.normal(size=(N, 5)) * SCALES
    traj0, traj, chain, info = run(9, jnp.asarray(x), 0.9, inv, 10, max_delta=1.0)
    div = np.asarray(info.diverging)
    assert 10 < div.sum() < N - 10  # both kinds present
    for i in range(N):
        p0 = np.asarray(traj0.state.momentum[i])
        h0 = np_energy(x[i], p0, inv)
        dh = [np_energy(xs, ps, inv) - h0 for xs, ps in np_leapfrog(x[i], p0, 0.9, inv, 10)]
        first = next((k for k, d in enumerate(dh) if d > 1.0), None)
        assert div[i] == (first is not None)
        if div[i]:
            assert info.n_steps[i] == first + 1 and dh[first] < 50  # finite, modest energy error
            np.testing.assert_array_equal(chain.position[i], x[i])
            assert info.accept_stat[i] == 0.0
        else:
            assert info.n_steps[i] == 10


def test_num_steps_override():
    """init(..., num_steps=k) (traced, per chain) runs exactly k leapfrog steps to the same
    end point as k numpy steps; k = 0 is an immediate, accepted no-op."""
    inv = np.array([0.3, 1.0, 2.0, 5.0, 50.0])
    rng = np.random.default_rng(61)
    x = rng.normal(size=(N, 5)) * SCALES
    ks = np.arange(N) % 9 * 3  # 0, 3, ..., 24
    traj0, traj, chain, info = run(6, jnp.asarray(x), 0.05, inv, ks)
    np.testing.assert_array_equal(traj0.num_steps, ks)
    np.testing.assert_array_equal(traj0.done, ks == 0)
    np.testing.assert_array_equal(info.n_steps, ks)
    for i in range(N):
        if ks[i] == 0:
            np.testing.assert_array_equal(chain.position[i], x[i])
            assert info.accept_stat[i] == pytest.approx(1.0, abs=1e-12)  # H0 recomputed: rounding
            continue
        p0 = np.asarray(traj0.state.momentum[i])
        x_end, p_end = np_leapfrog(x[i], p0, 0.05, inv, int(ks[i]))[-1]
        np.testing.assert_allclose(traj.state.position[i], x_end, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(traj.state.momentum[i], p_end, rtol=1e-12, atol=1e-13)
    # Without the override the configured count is used.
    _, _, _, info = run(7, jnp.asarray(x), 0.05, inv)
    np.testing.assert_array_equal(info.n_steps, 7)


def test_float32_stays_float32():
    """A float32 chain (float32 position, inverse mass and step size) stays float32."""
    x = jnp.asarray(np.random.default_rng(71).normal(size=(N, 5)) * SCALES, jnp.float32)
    traj0, traj, chain, info = run(8, x, 0.3, np.ones(5), 7)
    assert chain.position.dtype == np.float32
    assert info.energy.dtype == np.float32 and info.accept_stat.dtype == np.float32
    assert traj.state.momentum.dtype == np.float32
    assert np.all(np.isfinite(chain.position)) and not np.any(info.diverging)
