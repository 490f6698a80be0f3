"""Which devices run the lanes: on CPU, one JAX device per core.

XLA runs a program's loop on one CPU thread at a time; a small model's NUTS loop is a
chain of short kernels, so it cannot use a second core by itself. `sampler.run` deals
the model x chain tasks to all local devices in contiguous blocks, and each device runs
the same program on its block with its own loop, so with one CPU device per core every
core advances its own lanes. A task's draws do not depend on the device it ran on.

JAX fixes its CPU device count when it starts its CPU backend (the first array or
device query), so `use_cpu_cores` must be called before that, right after `import jax`,
as NumPyro's `set_host_device_count` must.
"""

from __future__ import annotations

import os

import jax

__all__ = ["use_cpu_cores", "available_cores"]


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def use_cpu_cores(n: int | None = None) -> int:
    """Make JAX's CPU backend one device per core: n devices (default `available_cores()`).

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
    return n
