"""Counter-based uniforms for use inside the leapfrog loop: Threefry-2x32, unrolled.

Threefry-2x32 with 20 rounds (Salmon, Moraes, Dror & Shaw 2011, "Parallel random numbers:
as easy as 1, 2, 3") is the generator behind `jax.random`'s default keys. On CPU, JAX
lowers it as a rolled `while` loop, which inside a per-leapfrog loop body costs several
kernel launches per draw. Written out here as plain elementwise uint32 arithmetic, XLA
fuses it into the surrounding kernel. The key words come from a JAX key at the start of
each transition (`jax.random.bits`), so streams stay derived from the user's seed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["key_words", "threefry2x32", "uniform_pair"]

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = np.uint32(0x1BD11BDA)


def key_words(key) -> jax.Array:
    """Two uint32 key words drawn from a JAX key."""
    return jax.random.bits(key, (2,), jnp.uint32)


def _rotl(x, r):
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def threefry2x32(key, x0, x1):
    """Threefry-2x32 (20 rounds) of the counter words (x0, x1) under `key` (2 uint32)."""
    k0, k1 = key[0], key[1]
    ks = (k0, k1, k0 ^ k1 ^ _PARITY)
    x0 = x0 + ks[0]
    x1 = x1 + ks[1]
    for block in range(5):
        for r in _ROTATIONS[block % 2]:
            x0 = x0 + x1
            x1 = _rotl(x1, r) ^ x0
        x0 = x0 + ks[(block + 1) % 3]
        x1 = x1 + ks[(block + 2) % 3] + np.uint32(block + 1)
    return x0, x1


def _to_unit(bits, dtype):
    # The top 23 (float32) or 52 (float64, from the two words) bits fill the mantissa of a
    # number in [1, 2); subtracting 1 gives a uniform on [0, 1) with no rounding bias.
    if jnp.dtype(dtype) == jnp.float64:
        hi, lo = bits
        b = (hi.astype(jnp.uint64) << np.uint64(20)) ^ (lo.astype(jnp.uint64) >> np.uint64(12))
        one = jax.lax.bitcast_convert_type((b & np.uint64(0x000FFFFFFFFFFFFF)) | np.uint64(0x3FF0000000000000), jnp.float64)
        return one - 1.0
    (b,) = bits
    one = jax.lax.bitcast_convert_type((b >> np.uint32(9)) | np.uint32(0x3F800000), jnp.float32)
    return (one - 1.0).astype(dtype)


def uniform_pair(key, counter, dtype):
    """Two independent uniforms on [0, 1) for integer `counter` under `key`."""
    c = jnp.asarray(counter).astype(jnp.uint32)
    a, b = threefry2x32(key, c, jnp.zeros_like(c))
    if jnp.dtype(dtype) == jnp.float64:
        c2, d2 = threefry2x32(key, c, jnp.ones_like(c))
        return _to_unit((a, b), dtype), _to_unit((c2, d2), dtype)
    return _to_unit((a,), dtype), _to_unit((b,), dtype)
