"""counter_rng: Threefry bits, the transitions' stream offsets, the normals (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hnnjax import counter_rng

KEY = jnp.asarray([0x12345678, 0x9ABCDEF0], jnp.uint32)


def test_threefry_matches_jax():
    """jax.random.fold_in(key, d) is Threefry-2x32 of the counter words (0, d)."""
    key = jax.random.wrap_key_data(KEY, impl="threefry2x32")
    for d in (0, 1, 77, 2**31 + 5):
        want = np.asarray(jax.random.key_data(jax.random.fold_in(key, d)))
        got = counter_rng.threefry2x32(KEY, jnp.uint32(0), jnp.uint32(d))
        np.testing.assert_array_equal([int(w) for w in got], want)


def test_two_word_key_streams_are_the_counter_word():
    c = jnp.arange(5)
    for stream in (0, 3, 4):
        got = counter_rng.bits(KEY, c, stream)
        want = counter_rng.threefry2x32(KEY, c.astype(jnp.uint32), jnp.full(5, stream, jnp.uint32))
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)


def test_transition_streams_are_distinct():
    """Every (transition, stream) pair of a chain, and the chain's own streams 3 and 4,
    draw different words: transitions 0, 1 and the last allowed one, streams 0..2."""
    c = jnp.arange(4)
    words = {("chain", s): np.asarray(counter_rng.bits(KEY, c, s)[0]) for s in (3, 4)}
    for t in (0, 1, 2**29 - 3):
        key = counter_rng.transition(KEY, t)
        for s in (0, 1, 2):
            words[(t, s)] = np.asarray(counter_rng.bits(key, c, s)[0])
    rows = list(words.values())
    assert len({r.tobytes() for r in rows}) == len(rows)


def test_substream_composes():
    key = counter_rng.transition(KEY, 5)
    a = counter_rng.bits(counter_rng.substream(counter_rng.substream(key, 1), 1), jnp.arange(3), 0)
    b = counter_rng.bits(key, jnp.arange(3), 2)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_transition_needs_a_chain_key():
    with pytest.raises(ValueError, match="two words"):
        counter_rng.transition(counter_rng.transition(KEY, 0), 1)


def test_normals_are_standard():
    """50,000 normals: mean and variance within 5 standard errors, and the tails."""
    z = np.asarray(jax.jit(lambda k: counter_rng.normal(k, jnp.arange(50_000), 0, jnp.float64))(KEY))
    n = z.size
    assert abs(z.mean()) < 5 / np.sqrt(n)
    assert abs(z.var() - 1.0) < 5 * np.sqrt(2.0 / n)
    assert abs(np.mean(np.abs(z) > 1.96) - 0.05) < 5 * np.sqrt(0.05 * 0.95 / n)
