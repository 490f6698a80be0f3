"""What a results file records about where it was measured: machine, devices, versions."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

__all__ = ["machine_info", "versions", "git_info", "load_average", "jax_config"]

LIBRARIES = ("hnnjax", "jax", "jaxlib", "numpy", "blackjax", "numpyro", "arviz", "matplotlib")


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on every platform
        return None


def versions() -> dict:
    out = {"python": sys.version.split()[0]}
    for lib in LIBRARIES:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            out[lib] = None
    return out


def jax_config() -> dict:
    import jax

    return {
        "x64": bool(jax.config.jax_enable_x64),
        "default_backend": jax.default_backend(),
        "compilation_cache_dir": jax.config.jax_compilation_cache_dir,
        "HNNJAX_NO_PERSISTENT_CACHE": os.environ.get("HNNJAX_NO_PERSISTENT_CACHE"),
        "XLA_FLAGS": os.environ.get("XLA_FLAGS"),
        "jax_platforms": jax.config.jax_platforms or os.environ.get("JAX_PLATFORMS"),
    }


def machine_info() -> dict:
    import jax

    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        affinity = None
    cpu_model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": cpu_model or platform.processor(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": affinity,
        "jax_devices": [str(d) for d in jax.devices()],
        "jax_device_kinds": sorted({getattr(d, "device_kind", "?") for d in jax.devices()}),
    }


def git_info(root: Path) -> dict:
    """The commit of the working tree and whether it had local changes (read-only git calls)."""
    def _git(*args):
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except Exception:
            return None

    status = _git("status", "--porcelain")
    return {"commit": _git("rev-parse", "HEAD"), "dirty": bool(status) if status is not None else None}
