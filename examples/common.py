"""Shared setup of the example scripts: float64, the Agg backend, figure saving."""

from __future__ import annotations

import os
import time

import jax

jax.config.update("jax_enable_x64", True)

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

FIGURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "figures")
MAX_BYTES = 300_000
_T0 = time.perf_counter()


def save(fig, name: str, dpi: int = 90) -> str:
    """Save under docs/figures/<name>.png, keeping the file below 300 KB."""
    os.makedirs(FIGURES, exist_ok=True)
    path = os.path.join(FIGURES, f"{name}.png")
    for d in (dpi, 70, 55):
        fig.savefig(path, dpi=d)
        if os.path.getsize(path) < MAX_BYTES:
            break
    plt.close(fig)
    print(f"[figure] docs/figures/{name}.png ({os.path.getsize(path) // 1024} KB)")
    return path


def elapsed() -> str:
    return f"{time.perf_counter() - _T0:.0f} s"
