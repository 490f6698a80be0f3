"""Array updates shaped so that XLA on CPU emits few kernels for them.

`pack_scalars`: per-chain scalars packed into one array, in one kernel.

The sampler's loops rewrite their state every iteration, and XLA on CPU runs a kernel
for every array that an iteration rewrites (nuts module docstring, "Layout"). So states
keep their scalars in one vector. Built with `jnp.stack`, a vector of scalars that each
end a reduction (a log density, a U-turn check) still became one kernel per scalar plus
a concatenation: eleven kernels for the ten scalars of a NUTS tree. Built as a chain of
selects on an iota, XLA fuses it into a single kernel (measured: eight schools, 4 chains,
float64, one core, 5.95 against 5.56 us per leapfrog step of the advance loop, the same
draws bit for bit).

`set_row`: one chain's write of a row at a dynamic index (a dynamic-update-slice).
vmapped, JAX turns it into a scatter with one index per lane, and XLA's classic CPU
emitters (those of the NUTS programs, `sampler._compiler_options`) expand a scatter into
a while loop over the lanes, with its own condition and five kernels per trip, every
leapfrog step (eight schools' optimized HLO). With few lanes `set_row`'s batching rule
writes their rows as separate dynamic-update-slices instead, one kernel each, without a
loop; with many it keeps a scatter: a select over the whole (lanes, rows, ...) table was
slower (1,000 models on 2 x 256 lanes: 28.6 s against 22.0 s).

`put_rows`: the driver's writes of the lanes' records (`table.at[i, j].set(values,
mode="drop")`, one (i, j) per lane), unrolled in the same way when there are few lanes.

Both together: the same draws bit for bit, and within this machine's noise in time
(eight schools, 2 CPU devices x 2 chains, float64, three alternating processes each:
median run 0.093-0.095 s against 0.094-0.098 s). `set_row` has no reverse-mode
derivative (`custom_vmap`; nothing differentiates the tree code), and under nested vmaps
the outer one turns the unrolled writes back into a scatter (the drivers vmap once).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import custom_batching

__all__ = ["pack_scalars", "set_row", "put_rows"]

# Up to this many lanes, `set_row` and `put_rows` write each lane's row with its own
# dynamic-update-slice; above it, a scatter. The headline runs 2 to 4 lanes per device and
# the batch engine 256, so any value in between serves both (not tuned).
UNROLL_MAX = 8


def pack_scalars(values):
    """The scalars `values` as one vector (what `jnp.stack(values)` gives), in one kernel."""
    values = [jnp.asarray(v) for v in values]
    dtype = jnp.result_type(*values)
    k = jnp.arange(len(values))
    out = jnp.broadcast_to(values[0].astype(dtype), k.shape)
    for j in range(1, len(values)):
        out = jnp.where(k == j, values[j].astype(dtype), out)
    return out


@custom_batching.custom_vmap
def set_row(table, index, row):
    """`table` with `table[index] = row`, as `lax.dynamic_update_slice` gives it: a negative
    index counts from the end, one out of range is clamped. `row` has the shape of
    `table[0]` (it is cast to the table's dtype). Under `vmap`, see the module docstring;
    the values are the same either way."""
    return _dus_row(table, index, row)


def _dus_row(table, index, row):
    zero = jnp.zeros((), jnp.asarray(index).dtype)
    start = (index,) + (zero,) * (table.ndim - 1)
    return jax.lax.dynamic_update_slice(table, row[None].astype(table.dtype), start)


@set_row.def_vmap
def _set_row_batched(axis_size, in_batched, table, index, row):
    table_b, index_b, row_b = in_batched
    if not table_b:
        table = jnp.broadcast_to(table, (axis_size,) + table.shape)
    if not index_b:
        index = jnp.broadcast_to(index, (axis_size,))
    if not row_b:
        row = jnp.broadcast_to(row, (axis_size,) + row.shape)
    # Wrapped and clamped as lax.dynamic_update_slice does, the indices are all in range, so
    # put_rows drops no write.
    n_rows = table.shape[1]
    index = jnp.clip(jnp.where(index < 0, index + n_rows, index), 0, n_rows - 1)
    return put_rows(table, (jnp.arange(axis_size, dtype=index.dtype), index), row), True


def put_rows(table, indices, values):
    """`table.at[indices].set(values, mode="drop")` for `indices`, a tuple of k integer arrays
    of shape (B,) (negative ones count from the end; a write with any index out of range is
    dropped) and `values` of shape (B,) + table.shape[k:]. For B <= UNROLL_MAX, B
    in-place dynamic-update-slices, each writing its row or, when dropped, the row already
    there (module docstring); else the scatter."""
    n = values.shape[0]
    if n > UNROLL_MAX:
        return table.at[indices].set(values.astype(table.dtype), mode="drop")
    k = len(indices)
    sizes = table.shape[:k]
    zeros = (jnp.zeros((), jnp.int32),) * (table.ndim - k)
    for b in range(n):
        idx = [jnp.asarray(ix[b], jnp.int32) for ix in indices]
        idx = [jnp.where(i < 0, i + size, i) for i, size in zip(idx, sizes)]
        inside = jnp.all(jnp.stack([(i >= 0) & (i < size) for i, size in zip(idx, sizes)]))
        start = tuple(jnp.clip(i, 0, size - 1) for i, size in zip(idx, sizes)) + zeros
        shape = (1,) * k + table.shape[k:]
        old = jax.lax.dynamic_slice(table, start, shape)
        new = jnp.where(inside, values[b].astype(table.dtype).reshape(shape), old)
        table = jax.lax.dynamic_update_slice(table, new, start)
    return table
