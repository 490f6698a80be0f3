"""Warmup schedule, dual averaging and Welford estimates (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hnnjax import adaptation


@pytest.mark.parametrize(
    "n, ends, first_slow",
    [
        # Stan's windows for the default 1000 iterations: 75 | 25, 50, 100, 200, 500 | 50
        (1000, [99, 149, 249, 449, 949], 75),
        (500, [99, 149, 249, 449], 75),
        (150, [99], 75),
        # Short warmups scale to 15% / 75% / 10% (Stan's windowed_adaptation).
        (100, [89], 15),
        (20, [17], 3),
    ],
)
def test_schedule_matches_stan(n, ends, first_slow):
    s = adaptation.warmup_schedule(n)
    assert np.flatnonzero(s.window_end).tolist() == ends
    slow = np.flatnonzero(s.slow)
    assert slow[0] == first_slow and slow[-1] == ends[-1]
    assert slow.size == slow[-1] - slow[0] + 1  # contiguous


def test_very_short_warmup_adapts_step_size_only():
    s = adaptation.warmup_schedule(10)
    assert not s.slow.any() and not s.window_end.any()


def test_welford_matches_numpy_and_regularization():
    x = np.random.default_rng(1).normal(3.0, [1.0, 5.0, 0.1], size=(200, 3))
    st = adaptation.welford_init(jnp.zeros(3))
    for row in x:
        st = adaptation.welford_update(st, jnp.asarray(row))
    np.testing.assert_allclose(st.mean, x.mean(0), rtol=1e-12)
    var = x.var(0, ddof=1)
    np.testing.assert_allclose(st.m2 / (st.count - 1), var, rtol=1e-10)
    n = 200.0
    np.testing.assert_allclose(adaptation.regularized_variance(st), n / (n + 5) * var + 1e-3 * 5 / (n + 5), rtol=1e-10)


def test_dual_averaging_finds_step_size_of_target_acceptance():
    """With acceptance exp(-eps) (a smooth decreasing curve), DA converges to eps* = -log(0.8)."""
    state = adaptation.dual_averaging_init(1.0)

    def body(s, _):
        eps = jnp.exp(s.log_step_size)
        return adaptation.dual_averaging_update(s, jnp.exp(-eps), 0.8), None

    state, _ = jax.lax.scan(body, state, None, length=2000)
    # The averaged iterate converges like t^-(1 - kappa): 2% after 2000 steps.
    np.testing.assert_allclose(jnp.exp(state.log_step_size_avg), -np.log(0.8), rtol=2e-2)
    np.testing.assert_allclose(jnp.exp(state.log_step_size), -np.log(0.8), rtol=2e-2)


def test_update_is_identity_after_warmup():
    sched = adaptation.warmup_schedule(100)
    sched = adaptation.Schedule(jnp.asarray(np.r_[sched.slow, False]), jnp.asarray(np.r_[sched.window_end, False]))
    st = adaptation.adaptation_init(0.5, jnp.ones(3))
    new = adaptation.adaptation_update(st, 100, jnp.ones(3), 0.3, 0.8, sched, jnp.ones(3), 100)
    for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(st)):
        np.testing.assert_array_equal(a, b)


def test_packed_state_views_round_trip():
    """AdaptationState packs its ten fields into two arrays; the views give them back."""
    dual = adaptation.DualAveragingState(*(jnp.asarray(v) for v in (0.1, 0.2, 0.3, 0.4, 5.0)))
    welford = adaptation.WelfordState(jnp.asarray(7.0), jnp.arange(3.0), jnp.arange(3.0) + 10)
    st = adaptation.AdaptationState.pack(jnp.asarray(0.25), jnp.ones(3) * 2, dual, welford)
    assert st.scalars.shape == (7,) and st.vectors.shape == (3, 3)
    assert float(st.step_size) == 0.25
    np.testing.assert_array_equal(st.inverse_mass, 2.0)
    for a, b in zip(st.dual, dual):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(st.welford, welford):
        np.testing.assert_array_equal(a, b)
    batch = jax.tree.map(lambda a: jnp.stack([a, a]), st)  # the views index from the end
    np.testing.assert_array_equal(batch.step_size, [0.25, 0.25])
    np.testing.assert_array_equal(batch.welford.mean, [np.arange(3.0)] * 2)
