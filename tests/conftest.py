"""Test configuration: float64 and one CPU device for the whole suite.

Tests that exercise float32 pass `dtype=jnp.float32` (or build float32 arrays) explicitly;
everything else runs in float64 so that reference comparisons are tight. The suite runs
on one CPU device whatever calls `use_cpu_cores` later (the CLI does); runs on two
devices happen in a subprocess (tests/test_devices.py). hnnjax's cache on disk (its
compiled programs) goes to a fresh directory per session, so that compile-count checks do
not depend on earlier runs.
"""

import os
import tempfile

os.environ.setdefault("XLA_FLAGS", "")
os.environ["HNNJAX_CACHE_DIR"] = tempfile.mkdtemp(prefix="hnnjax-test-cache-")
import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_num_cpu_devices", 1)
