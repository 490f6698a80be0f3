"""Test configuration: float64 and one CPU device for the whole suite.

Tests that exercise float32 pass `dtype=jnp.float32` (or build float32 arrays) explicitly;
everything else runs in float64 so that reference comparisons are tight. The suite runs
on one CPU device whatever calls `use_cpu_cores` later (the CLI does); runs on two
devices happen in a subprocess (tests/test_devices.py).
"""

import os

os.environ.setdefault("XLA_FLAGS", "")
import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_num_cpu_devices", 1)
