"""Counter-based random numbers for the sampling loop: Threefry-2x32, unrolled.

Threefry-2x32 with 20 rounds (Salmon, Moraes, Dror & Shaw 2011, "Parallel random numbers:
as easy as 1, 2, 3") is the generator behind `jax.random`'s default keys. On CPU, JAX
lowers it as a rolled `while` loop, so every `jax.random` call inside the per-leapfrog loop
adds a nested loop (kernel launches at run time, and compile time). Written out here as
plain elementwise uint32 arithmetic, XLA fuses it into the surrounding kernel.

A key is two uint32 words, optionally followed by a third, a stream offset. Every draw is
a pure function of (key, counter, stream): the Threefry counter words are (counter,
offset + stream). `transition` gives transition t of a lane the lane's key with offset
8 (t + 1), and `substream` moves a key's offset on: a transition's draws thus need no key
of their own, which would cost a Threefry evaluation that XLA copies into every kernel
reading a draw (eight schools, fresh processes: XLA compile 1.24-1.26 s against
1.37-1.45 s with derived keys). `uniform` and `normal` draw values. The
lanes' key words come from the user's seed through `threefry2x32` on numpy arrays
(`sampler.model_keys`, `sampler.lane_inputs`): it is plain operator arithmetic, so it
runs on the host too, with no program to compile.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["threefry2x32", "bits", "substream", "transition", "uniform", "normal"]

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = np.uint32(0x1BD11BDA)


def _rotl(x, r):
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def threefry2x32(key, x0, x1):
    """Threefry-2x32 (20 rounds) of the counter words (x0, x1) under `key` (2 uint32).

    Bit-identical to `jax._src.random.threefry2x32.threefry_2x32` (tested).
    """
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


def _offset(key):
    """A key's stream offset: its third word, 0 for a two-word key (words on axis 0)."""
    return key[2] if key.shape[0] == 3 else jnp.zeros((), jnp.uint32)


def bits(key, counter, stream: int):
    """Two uint32 words for each element of `counter` in the numbered `stream`."""
    c = jnp.asarray(counter).astype(jnp.uint32)
    return threefry2x32(key, c, jnp.broadcast_to(_offset(key) + np.uint32(stream), c.shape))


def substream(key, stream: int) -> jax.Array:
    """The key (three words) whose stream 0 is `stream` of `key`."""
    return jnp.concatenate([key[:2], (_offset(key) + np.uint32(stream))[None]])


# Streams a transition may use: 0..7 (`transition`).
TRANSITION_STREAMS = 8


def transition(key, t) -> jax.Array:
    """The key (three words) of transition t >= 0 of the chain with two-word `key`: offset
    8 (t + 1), clear of the streams 0..7 that the chain itself uses before transition 0."""
    if key.shape[0] != 2:
        raise ValueError(f"key: a chain's key is two words, got shape {key.shape}")
    offset = (jnp.asarray(t).astype(jnp.uint32) + np.uint32(1)) * np.uint32(TRANSITION_STREAMS)
    return jnp.concatenate([key[:2], offset[None]])


def _open_unit(words, dtype):
    """A uniform on the open interval (0, 1) from the words, at the dtype's precision."""
    hi, lo = words
    if jnp.dtype(dtype) == jnp.float64:
        b = (hi.astype(jnp.uint64) << np.uint64(20)) ^ (lo.astype(jnp.uint64) >> np.uint64(12))
        m = (b & np.uint64((1 << 52) - 1)).astype(jnp.float64)
        return (m + 0.5) * 2.0**-52
    m = (hi >> np.uint32(9)).astype(jnp.float32)
    return ((m + 0.5) * 2.0**-23).astype(dtype)


def uniform(key, counter, stream: int, dtype):
    """Uniforms on (0, 1), one per element of `counter`."""
    return _open_unit(bits(key, counter, stream), dtype)


def normal(key, counter, stream: int, dtype):
    """Standard normals by inversion, one per element of `counter`."""
    u = uniform(key, counter, stream, dtype)
    return np.sqrt(2.0).astype(dtype) * jax.lax.erf_inv(2.0 * u - 1.0)
