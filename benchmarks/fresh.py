"""Time to result from a fresh process, as the user sees it.

Each sampler gets a new `python -c ...` process that imports its library, builds eight
schools, compiles and runs NUTS, non-centered, 4 chains x (1000 warmup + 1000 draws),
target acceptance 0.8, and waits for the draws. The parent times the process from spawn to
exit (`wall_s`); the child reports its own import / compile-and-run split.

The processes run in rounds (`fresh_suite`), the two sides of a round back to back. In
each round hnnjax runs twice in a row with a new, empty directory as its cache
(HNNJAX_CACHE_DIR, where hnnjax saves its compiled programs; JAX's own persistent cache
stays off, its default, for every library): the first run is cold, the second shows what
the cache saves. The child reports the cache directory it ended up with; if hnnjax chose
another directory the cold run may not have been cold, and the report says so (and leaves
the round out of the ratio). The peers run without a persistent cache (JAX's default), as a
user would run them; their scripts never import hnnjax (see peers.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from hnnjax.devices import XLA_OPTIONS_FLAG
from hnnjax.sampler import _saved_programs

__all__ = ["SCRIPTS", "run_fresh", "fresh_suite"]

REPO_ROOT = Path(__file__).resolve().parent.parent

_PRELUDE = """
import time, json
_t0 = time.perf_counter()
"""

_EPILOGUE = """
import jax as _jax
_res["total_in_process_s"] = time.perf_counter() - _t0
_res["compilation_cache_dir"] = _jax.config.jax_compilation_cache_dir
_res["x64"] = bool(_jax.config.jax_enable_x64)
_res["backend"] = _jax.default_backend()
print("FRESH_RESULT " + json.dumps(_res))
"""

SCRIPTS = {
    "hnnjax": """
import hnnjax
hnnjax.use_cpu_cores()  # one JAX CPU device per core, as the README shows
_t1 = time.perf_counter()
fit = hnnjax.sample(hnnjax.datasets.eight_schools(), parametrization="noncentered", kernel="nuts",
                    chains={chains}, warmup={warmup}, draws={draws}, target_accept={target_accept}, seed=0)
import numpy as np
_res = {{"import_s": _t1 - _t0, "sample_s": time.perf_counter() - _t1,
         "mean_mu": float(np.mean(fit.draws["mu"])), "hnnjax_cache_dir": hnnjax.sampler._cache_dir(),
         "compile_s": float(fit.timing.get("compile_s", float("nan"))),
         "run_s": float(fit.timing.get("run_s", float("nan")))}}
""",
    "blackjax": """
import jax, jax.numpy as jnp, blackjax
from benchmarks.peers import blackjax_program
from benchmarks.runner import Settings
_t1 = time.perf_counter()
dt = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
y = jnp.array([28., 8., -3., 7., -1., 1., 18., 12.], dt)
sigma = jnp.array([15., 10., 16., 11., 9., 11., 10., 18.], dt)
prog = jax.jit(blackjax_program("noncentered", Settings(chains={chains}, warmup={warmup}, draws={draws},
                                target_accept={target_accept}), warmup_info=False))
out = jax.block_until_ready(prog(jax.random.key(0), y, sigma))
_res = {{"import_s": _t1 - _t0, "sample_s": time.perf_counter() - _t1,
         "mean_mu": float(jnp.mean(out["mu"]))}}
""",
    "numpyro": """
import jax, jax.numpy as jnp, numpyro
from numpyro.infer import MCMC, NUTS
from benchmarks.peers import numpyro_model
_t1 = time.perf_counter()
dt = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
y = jnp.array([28., 8., -3., 7., -1., 1., 18., 12.], dt)
sigma = jnp.array([15., 10., 16., 11., 9., 11., 10., 18.], dt)
mcmc = MCMC(NUTS(numpyro_model("noncentered"), target_accept_prob={target_accept}), num_warmup={warmup},
            num_samples={draws}, num_chains={chains}, chain_method="vectorized", progress_bar=False)
mcmc.run(jax.random.PRNGKey(0), sigma, y=y)
mu = jax.block_until_ready(mcmc.get_samples()["mu"])
_res = {{"import_s": _t1 - _t0, "sample_s": time.perf_counter() - _t1, "mean_mu": float(jnp.mean(mu))}}
""",
}

_CACHE_VARS = ("JAX_COMPILATION_CACHE_DIR", "HNNJAX_CACHE_DIR", "HNNJAX_NO_PERSISTENT_CACHE")


def script(library: str, chains=4, warmup=1000, draws=1000, target_accept=0.8) -> str:
    body = SCRIPTS[library].format(chains=chains, warmup=warmup, draws=draws, target_accept=target_accept)
    return textwrap.dedent(_PRELUDE) + textwrap.dedent(body) + textwrap.dedent(_EPILOGUE)


def run_fresh(library: str, env_extra: dict | None = None, x64: bool = True,
              platform: str | None = None, timeout: float = 600.0, **settings) -> dict:
    """Spawn one fresh process for `library`; return its figures (or the error)."""
    env = {k: v for k, v in os.environ.items() if k not in _CACHE_VARS}
    # Every library starts from the user's XLA_FLAGS: the options that hnnjax.use_cpu_cores added
    # to this process's environment are not passed on (hnnjax's script adds them itself).
    flags = env.get("XLA_FLAGS", "").replace(XLA_OPTIONS_FLAG, "").strip()
    env.pop("XLA_FLAGS", None)
    if flags:
        env["XLA_FLAGS"] = flags
    env["JAX_ENABLE_X64"] = "1" if x64 else "0"
    if platform:
        env["JAX_PLATFORMS"] = platform
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    env.update(env_extra or {})
    code = script(library, **settings)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-c", code], cwd=str(REPO_ROOT), env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"library": library, "ok": False, "error": f"timed out after {timeout} s"}
    wall = time.perf_counter() - t0
    res = {"library": library, "wall_s": wall, "returncode": proc.returncode}
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("FRESH_RESULT ")), None)
    if proc.returncode != 0 or line is None:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        res.update(ok=False, error=" | ".join(tail) or "no output")
        return res
    res.update(ok=True, **json.loads(line[len("FRESH_RESULT "):]))
    return res


def _importable(library: str) -> str | None:
    """None if `library` can run its fresh script here, else the reason it cannot."""
    import importlib.util

    if importlib.util.find_spec(library) is None:
        return f"{library} is not installed"
    return None


def _round_order(libraries, r: int) -> list:
    """The libraries of round r + 1 (r 0-based): as given in rounds 1, 3, ..., the peers
    first in rounds 2, 4, ... (hnnjax's cold run always before its warm one), so that
    neither side always runs right after the other's heavy compile."""
    libs = list(libraries)
    if r % 2 == 0:
        return libs
    return [lib for lib in libs if lib != "hnnjax"] + [lib for lib in libs if lib == "hnnjax"]


def fresh_suite(libraries=("hnnjax", "hnnjax", "blackjax", "numpyro"), x64: bool = True,
                platform: str | None = None, log=print, rounds: int = 1, **settings) -> list[dict]:
    """`rounds` rounds of fresh processes, one per entry of `libraries` each round (a
    library listed twice runs twice: hnnjax cold, then warm). Every round gives hnnjax a new,
    empty cache directory, so its first run of each round is cold. Rows carry `round` (1..)
    and `run` (the library's run within its round)."""
    rows = []
    for lib in dict.fromkeys(libraries):
        why = _importable(lib)
        if why:
            log(f"[skip] fresh process {lib}: {why}")
            rows.append({"library": lib, "ok": False, "skipped": why})
    available = [lib for lib in libraries if not any(r["library"] == lib for r in rows)]
    for r in range(int(rounds)):
        cache_dir = tempfile.mkdtemp(prefix="hnnjax-bench-cache-")
        runs_of = {}
        for lib in _round_order(available, r):
            runs_of[lib] = runs_of.get(lib, 0) + 1
            extra = {"HNNJAX_CACHE_DIR": cache_dir} if lib == "hnnjax" else {}
            log(f"fresh process: {lib} (round {r + 1}, run {runs_of[lib]})")
            saved_before = len(_saved_programs(cache_dir))
            row = run_fresh(lib, env_extra=extra, x64=x64, platform=platform, **settings)
            row["run"] = runs_of[lib]
            row["round"] = r + 1
            if lib == "hnnjax":
                row["cache_dir_given"] = cache_dir
                seen = row.get("hnnjax_cache_dir")
                # controlled: hnnjax used the given folder, which was empty before the cold run
                # and held a program before the warm one (not so if the cold run failed)
                row["cache_files_after"] = len(_saved_programs(cache_dir))
                row["cache_controlled"] = (bool(seen) and os.path.realpath(str(seen)) == os.path.realpath(cache_dir)
                                           and (saved_before > 0 if runs_of[lib] > 1 else saved_before == 0)
                                           and row["cache_files_after"] > 0)
            rows.append(row)
            if not row.get("ok"):
                log(f"  failed: {row.get('error')}")
            else:
                log(f"  {row['wall_s']:.2f} s")
        shutil.rmtree(cache_dir, ignore_errors=True)
    return rows
