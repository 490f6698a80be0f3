"""Which devices run the lanes: on CPU, one JAX device per core.

XLA runs a program's loop on one CPU thread at a time; a small model's NUTS loop is a
chain of short kernels, so it cannot use a second core by itself. `sampler.run` deals
the model x chain tasks to all local devices in contiguous blocks, and each device runs
the same program on its block with its own loop, so with one CPU device per core every
core advances its own lanes. A task's draws do not depend on the device it ran on.

JAX fixes its CPU device count when it starts its CPU backend (the first array or
device query), so `use_cpu_cores` must be called before that, right after `import jax`,
as NumPyro's `set_host_device_count` must.

It also lets XLA compile small while loops into single kernels (`SMALL_LOOP_BYTES`), read
from XLA_FLAGS when the backend starts. XLA's CPU runtime otherwise runs a loop body as a
sequence of kernels, one dispatch each, and a NUTS step of eight schools is some forty
kernels of a few arithmetic operations each: compiled as one kernel, the program gives the
same draws bit for bit (eight schools, tested) in about half the time (2 devices x 2
chains, 1000 + 1000, float64: median run 0.052-0.054 s against 0.097-0.100 s), for
0.2-0.25 s more compile time in a fresh process. XLA decides per loop from the bytes it
touches, so large programs (many lanes, large models, also one device running 4 chains of
eight schools) keep their kernels. The flag is XLA's, so it holds for every CPU program of
the process, hnnjax's or not, and for child processes that inherit the environment; it
cannot be set per program (JAX's `compiler_options` cannot set XLA's
`xla_backend_extra_options` map).
"""

from __future__ import annotations

import os

import jax

__all__ = ["use_cpu_cores", "available_cores", "SMALL_LOOP_BYTES", "SMALL_LOOP_FLAG"]

# XLA's CPU backend compiles a while loop that touches fewer bytes than this into one kernel
# (xla_cpu_small_while_loop_byte_threshold, an `xla_backend_extra_options` entry).
SMALL_LOOP_BYTES = 65536
SMALL_LOOP_FLAG = f"--xla_backend_extra_options=xla_cpu_small_while_loop_byte_threshold={SMALL_LOOP_BYTES}"


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def use_cpu_cores(n: int | None = None) -> int:
    """Make JAX's CPU backend one device per core: n devices (default `available_cores()`),
    and let XLA compile small loops into single kernels (module docstring; XLA_FLAGS that
    already set the threshold, or name a flags file, are left as they are).

    Returns n. Call it before JAX runs anything; afterwards it raises RuntimeError unless
    the backend already has n CPU devices.
    """
    n = available_cores() if n is None else int(n)
    if n < 1:
        raise ValueError(f"n: must be >= 1, got {n}")
    try:
        jax.config.update("jax_num_cpu_devices", n)
    except RuntimeError as exc:
        have = len(jax.devices("cpu"))
        if have != n:
            raise RuntimeError(
                f"use_cpu_cores({n}): JAX's CPU backend already started with {have} device(s); "
                "call hnnjax.use_cpu_cores right after `import jax`, before any JAX operation"
            ) from exc
        return n  # the backend has read XLA_FLAGS already
    if _backend_started():  # with n devices already: setting the count again does not raise
        return n
    flags = os.environ.get("XLA_FLAGS", "")
    # XLA reads a value that does not start with "-" as the path of a flags file: leave it.
    # Repeated --xla_backend_extra_options merge, the later winning: ours goes first.
    if (not flags or flags.lstrip().startswith("-")) and "xla_cpu_small_while_loop_byte_threshold" not in flags:
        os.environ["XLA_FLAGS"] = f"{SMALL_LOOP_FLAG} {flags}".strip()
    return n


def _backend_started() -> bool:
    """Whether JAX has started its backends (and so read XLA_FLAGS); True if this JAX
    cannot tell, so that the environment is then left alone."""
    try:
        from jax._src import xla_bridge

        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):
        return True
