"""pack_scalars gives what jnp.stack gives (float32 and float64), traced or not, batched."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hnnjax.packing import pack_scalars


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_pack_equals_stack(dtype):
    values = [jnp.asarray(v, dtype) for v in (1.5, -jnp.inf, 0.0, 3e30, -2.0)]
    np.testing.assert_array_equal(pack_scalars(values), jnp.stack(values))
    packed = jax.jit(jax.vmap(lambda a, b: pack_scalars([a, jnp.exp(b), a * b])))
    a, b = jnp.arange(4, dtype=dtype), jnp.linspace(-1, 1, 4, dtype=dtype)
    np.testing.assert_array_equal(packed(a, b), jnp.stack([a, jnp.exp(b), a * b], -1))
    assert packed(a, b).dtype == dtype
