"""Test configuration: float64 is enabled for the whole suite.

Tests that exercise float32 pass `dtype=jnp.float32` (or build float32 arrays) explicitly;
everything else runs in float64 so that reference comparisons are tight.
"""

import os

os.environ.setdefault("XLA_FLAGS", "")
import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
