"""pack_scalars gives what jnp.stack gives, set_row what a dynamic-update-slice gives and
put_rows what a dropping scatter gives (float32 and float64), traced or not, batched."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hnnjax.packing import UNROLL_MAX, pack_scalars, put_rows, set_row


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_pack_equals_stack(dtype):
    values = [jnp.asarray(v, dtype) for v in (1.5, -jnp.inf, 0.0, 3e30, -2.0)]
    np.testing.assert_array_equal(pack_scalars(values), jnp.stack(values))
    packed = jax.jit(jax.vmap(lambda a, b: pack_scalars([a, jnp.exp(b), a * b])))
    a, b = jnp.arange(4, dtype=dtype), jnp.linspace(-1, 1, 4, dtype=dtype)
    np.testing.assert_array_equal(packed(a, b), jnp.stack([a, jnp.exp(b), a * b], -1))
    assert packed(a, b).dtype == dtype


def _plain_row_write(table, index, row):
    zero = jnp.zeros((), jnp.int32)
    return jax.lax.dynamic_update_slice(table, row[None], (index, zero, zero))


@pytest.mark.parametrize("lanes", [1, 2, 8, 9, 40])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_set_row_equals_dynamic_update_slice(lanes, dtype):
    """Both batching paths (unrolled in-place writes up to UNROLL_MAX lanes, a scatter
    above) give what the vmapped dynamic-update-slice gives, out-of-range indices clamped;
    also with an unbatched table, index or row."""
    rng = np.random.default_rng(lanes)
    table = jnp.asarray(rng.normal(size=(lanes, 10, 3, 4)), dtype)
    index = jnp.asarray(rng.integers(-13, 14, lanes), jnp.int32)
    row = jnp.asarray(rng.normal(size=(lanes, 3, 4)), dtype)
    want = jax.vmap(_plain_row_write)(table, index, row)
    got = jax.jit(jax.vmap(set_row))(table, index, row)
    np.testing.assert_array_equal(got, want)
    for axes in [(None, 0, 0), (0, None, 0), (0, 0, None)]:
        args = [a if ax == 0 else a[0] for a, ax in zip((table, index, row), axes)]
        want = jax.vmap(_plain_row_write, in_axes=axes)(*args)
        np.testing.assert_array_equal(jax.jit(jax.vmap(set_row, in_axes=axes))(*args), want)
    np.testing.assert_array_equal(set_row(table[0], index[0], row[0]), _plain_row_write(table[0], index[0], row[0]))


def test_set_row_few_lanes_is_not_a_scatter():
    """The point of set_row: with few lanes the compiled program has no scatter (XLA's CPU
    emitters expand one into a while loop over the lanes); with many it keeps one."""
    def hlo(lanes):
        f = jax.jit(jax.vmap(set_row))
        args = (jnp.zeros((lanes, 10, 3, 4)), jnp.zeros((lanes,), jnp.int32), jnp.ones((lanes, 3, 4)))
        return f.lower(*args).as_text()
    assert "scatter" not in hlo(UNROLL_MAX)
    assert "dynamic_update_slice" in hlo(UNROLL_MAX)
    assert "scatter" in hlo(UNROLL_MAX + 1)


@pytest.mark.parametrize("n", [1, 3, UNROLL_MAX, UNROLL_MAX + 1, 20])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_put_rows_equals_dropping_scatter(n, dtype):
    """put_rows gives table.at[indices].set(values, mode="drop") on both paths: negative
    indices count from the end, a write with any index out of range is dropped (the
    driver's sentinel row n_tasks, -size - 1), repeated indices keep the last write (on CPU), and k
    indices may address fewer dimensions than the table has."""
    rng = np.random.default_rng(n)
    table = jnp.asarray(rng.normal(size=(5, 7, 2, 3)), dtype)
    i = jnp.asarray(rng.integers(-7, 8, n), jnp.int32)
    j = jnp.asarray(rng.integers(-9, 10, n), jnp.int32)
    i = i.at[0].set(5)  # the sentinel: dropped
    for idx, shape in [((i, j), (n, 2, 3)), ((i,), (n, 7, 2, 3))]:
        values = rng.normal(size=shape)  # float64, cast to the table's dtype
        want = table.at[idx].set(jnp.asarray(values, dtype), mode="drop")
        np.testing.assert_array_equal(jax.jit(put_rows)(table, idx, jnp.asarray(values)), want)
        np.testing.assert_array_equal(put_rows(table, idx, jnp.asarray(values)), want)
        assert put_rows(table, idx, jnp.asarray(values)).dtype == dtype
