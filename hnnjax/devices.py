"""Which devices run the lanes: on CPU, one JAX device per core.

XLA runs a program's loop on one CPU thread at a time; a small model's NUTS loop is a
chain of short kernels, so it cannot use a second core by itself. `sampler.run` deals
the model x chain tasks to all local devices in contiguous blocks, and each device runs
the same program on its block with its own loop, so with one CPU device per core every
core advances its own lanes. A task's draws do not depend on the device it ran on
(`tests/test_devices.py`).

JAX fixes its CPU device count when it starts its CPU backend (the first array or
device query), so `use_cpu_cores` must be called before that, right after `import jax`,
as NumPyro's `set_host_device_count` must.

It also sets two of XLA's CPU code generation options (`XLA_OPTIONS_FLAG`), read from
XLA_FLAGS when the backend starts:

- `xla_cpu_small_while_loop_byte_threshold` = 64 KB (`SMALL_LOOP_BYTES`): XLA compiles a
  while loop that touches fewer bytes into one kernel. XLA's CPU runtime otherwise runs a
  loop body as a sequence of kernels, one dispatch each, and a NUTS step of eight schools
  is some forty kernels of a few arithmetic operations each: as one kernel, the program
  gives the same draws bit for bit (eight schools, tested) in about half the time (2
  devices x 2 chains, 1000 + 1000, float64: median run 0.052-0.054 s against 0.097-0.100
  s). XLA decides per loop from the bytes it touches, so large programs (many lanes, large
  models, also one device running 4 chains of eight schools) keep their kernels.
- `xla_cpu_disable_loop_unrolling`: LLVM does not unroll the loops of XLA's kernels. With
  arrays of a few dozen elements it unrolled every elementwise loop in full, and the one
  kernel of the NUTS loop took LLVM 0.55 s to compile, on one thread, while the rest of
  the program took 0.35 s on the other: 0.32 s without unrolling, XLA's whole code
  generation 0.52-0.61 s against 0.75-0.92 s (fresh processes), the same run time (0.048-
  0.051 s). Compile times, unrolled against not (one process each, float64): NUTS 1.74-
  2.06 s against 1.57-1.81 s, ChEES 4.7-5.3 s against 3.7-4.3 s, the radon regression
  2.9-3.0 s against 2.0-2.1 s, the 1,000-model batch 3.8 s against 3.1 s. Run times are
  unchanged but for the radon regression's loops over its 919 observations, which run
  about 13% slower (3.24-3.31 s against 3.69-3.76 s, 1000 + 1000). XLA sums an array
  allowing any order of the terms (its reductions carry LLVM's `reassoc` flag), and
  unrolling changes the order LLVM picks: a process that calls `use_cpu_cores` draws
  differently, in the last bits and then along the chains, from one that does not (on the
  same devices, with the same arguments, every process that calls it draws the same).
  XLA reads this option by its presence only (`=false` does not undo it); XLA_FLAGS that
  set the threshold keep `use_cpu_cores` from adding either option.

The options are XLA's, so they hold for every CPU program of the process, hnnjax's or not,
and for child processes that inherit the environment; they cannot be set per program
(JAX's `compiler_options` cannot set XLA's `xla_backend_extra_options` map).
"""

from __future__ import annotations

import os

import jax

__all__ = ["use_cpu_cores", "available_cores", "SMALL_LOOP_BYTES", "XLA_OPTIONS_FLAG"]

# XLA's CPU backend compiles a while loop that touches fewer bytes than this into one kernel
# (xla_cpu_small_while_loop_byte_threshold, an `xla_backend_extra_options` entry). The
# second entry, whose presence alone counts, keeps LLVM from unrolling (module docstring).
SMALL_LOOP_BYTES = 65536
XLA_OPTIONS_FLAG = ("--xla_backend_extra_options="
                    f"xla_cpu_small_while_loop_byte_threshold={SMALL_LOOP_BYTES},xla_cpu_disable_loop_unrolling=true")


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def use_cpu_cores(n: int | None = None) -> int:
    """Make JAX's CPU backend one device per core: n devices (default `available_cores()`),
    and set XLA's code generation options (module docstring; XLA_FLAGS that already set
    the small-loop threshold, or name a flags file, are left as they are).

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
        os.environ["XLA_FLAGS"] = f"{XLA_OPTIONS_FLAG} {flags}".strip()
    return n


def _backend_started() -> bool:
    """Whether JAX has started its backends (and so read XLA_FLAGS); True if this JAX
    cannot tell, so that the environment is then left alone."""
    try:
        from jax._src import xla_bridge

        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):
        return True
