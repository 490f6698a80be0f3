"""Timing: compile time, warm wall time over repeats, and per-cell summaries.

Every call is timed twice over:

- `wall_s`: the call as the user sees it, from entry to draws on the host;
- `compile_in_call_s`: the seconds JAX spent tracing, lowering and compiling during the
  call, from `jax.monitoring`'s duration events (overlapping events merged), so
  `run_s = wall_s - compile_in_call_s` is the warmup + sampling time after compilation.

That matters for NumPyro, whose `MCMC.run` re-traces and re-compiles its sampling loop on
every call (progress_bar=False): its warm calls are not compile-free. ESS/s is computed on
`run_s` (the brief's "wall time after compilation"); the user-visible `wall_s` of warm
calls is reported next to it (`ess_per_s_user`).

Compile time of a sampler for one shape: the ahead-of-time compile seconds where the runner
compiles ahead of time (BlackJAX), else the compile seconds JAX reported during the first
(cold) call. The first-call wall minus the median warm-call wall is recorded as a cross-check.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import numpy as np

from .metrics import RunOutput, run_figures
from .runner import Runner, Settings, Unavailable
from . import samplers as _samplers

__all__ = ["CompileClock", "Bench", "median_figures"]

_COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)
_ACTIVE: list["CompileClock"] = []
_REGISTERED = False


def _listener(event: str, duration: float, **_kw) -> None:
    if event in _COMPILE_EVENTS and _ACTIVE:
        end = time.perf_counter()
        for clock in _ACTIVE:
            clock.intervals.append((end - float(duration), end))


def _register() -> None:
    global _REGISTERED
    if not _REGISTERED:
        from jax import monitoring

        monitoring.register_event_duration_secs_listener(_listener)
        _REGISTERED = True


class CompileClock:
    """Context manager: seconds JAX spent compiling inside the block (union of intervals)."""

    def __init__(self):
        self.intervals: list[tuple[float, float]] = []

    def __enter__(self):
        _register()
        _ACTIVE.append(self)
        return self

    def __exit__(self, *exc):
        _ACTIVE.remove(self)
        return False

    @property
    def seconds(self) -> float:
        total, cur_start, cur_end = 0.0, None, None
        for start, end in sorted(self.intervals):
            if cur_end is None or start > cur_end:
                if cur_end is not None:
                    total += cur_end - cur_start
                cur_start, cur_end = start, end
            else:
                cur_end = max(cur_end, end)
        if cur_end is not None:
            total += cur_end - cur_start
        return total


def timed_run(runner: Runner, data, seed: int) -> tuple[RunOutput, float]:
    with CompileClock() as clock:
        out = runner.run(data, seed)
    return out, clock.seconds


def figures(out: RunOutput, compile_in_call: float) -> dict:
    fig = run_figures(out)
    run_s = max(out.wall_s - compile_in_call, 1e-9)
    fig["compile_in_call_s"] = compile_in_call
    fig["run_s"] = run_s
    mb = fig["min_ess_bulk"]
    fig["ess_per_s_user"] = fig["ess_per_s"]            # on the user-visible wall
    fig["ess_per_s"] = None if mb is None else mb / run_s
    g = fig["n_grad_evals"]
    fig["grads_per_s"] = (g / run_s) if g else None
    return fig


def _median(vals):
    vals = [v for v in vals if isinstance(v, (int, float)) and v is not None and np.isfinite(v)]
    return statistics.median(vals) if vals else None


def median_figures(runs: list[dict]) -> dict:
    """Median over runs of every numeric figure; the min/max of ESS/s; `n_runs`."""
    if not runs:
        return {"n_runs": 0}
    keys = [k for k in runs[0] if isinstance(runs[0][k], (int, float)) or runs[0][k] is None]
    out = {k: _median([r.get(k) for r in runs]) for k in keys}
    ess = [r["ess_per_s"] for r in runs if r.get("ess_per_s") is not None]
    out["ess_per_s_min"] = min(ess) if ess else None
    out["ess_per_s_max"] = max(ess) if ess else None
    out["divergences_total"] = sum(r["divergences"] or 0 for r in runs if r.get("divergences") is not None)
    out["n_runs"] = len(runs)
    return out


class Bench:
    """Holds the runners of one process (one per sampler and settings) and their compile records."""

    def __init__(self, log: Callable[[str], None] = print, cold_seed: int = 10_000_019):
        self.log = log
        self.cold_seed = cold_seed
        self._runners: dict = {}
        self.skipped: dict[str, str] = {}
        self.compile_records: dict = {}   # (name, settings, shape) -> dict

    def runner(self, name: str, settings: Settings) -> Runner | None:
        key = (name, settings)
        if key not in self._runners:
            try:
                self._runners[key] = _samplers.make(name, settings)
            except Unavailable as exc:
                if name not in self.skipped:
                    self.log(f"[skip] {name}: {exc}")
                self.skipped[name] = str(exc)
                self._runners[key] = None
        return self._runners[key]

    def runners(self, names, settings: Settings) -> list[Runner]:
        return [r for r in (self.runner(n, settings) for n in names) if r is not None]

    def ensure_compiled(self, runner: Runner, data) -> dict:
        """Compile `runner` for data's shape once; return the compile record."""
        key = (runner.name, runner.settings, runner.shape_key(data))
        if key in self.compile_records:
            return self.compile_records[key]
        with CompileClock() as clock:
            t0 = time.perf_counter()
            aot = runner.compile(data)
            t_aot = time.perf_counter() - t0
        if aot is not None:
            rec = {"method": "aot", "compile_s": t_aot, "compile_jax_s": clock.seconds}
        else:
            out, cin = timed_run(runner, data, self.cold_seed)
            rec = {"method": "first-call", "compile_s": cin, "first_call_s": out.wall_s}
            if "hnnjax_compile_s" in out.extra:
                rec["hnnjax_compile_s"] = out.extra["hnnjax_compile_s"]
        rec["shape"] = runner.shape_key(data)
        self.compile_records[key] = rec
        self.log(f"  compiled {runner.name} (shape {rec['shape']}, {runner.settings.chains} chains): "
                 f"{rec['compile_s']:.2f} s [{rec['method']}]")
        return rec

    def run(self, runner: Runner, data, seed: int) -> dict:
        out, cin = timed_run(runner, data, seed)
        return figures(out, cin)

    def repeats(self, runners: list[Runner], data, seeds) -> dict[str, dict]:
        """Compile every runner, then run them round-robin over `seeds` (so that load on the
        machine spreads over all samplers alike). Returns name -> {compile, runs, median}."""
        comp = {r.name: self.ensure_compiled(r, data) for r in runners}
        runs = {r.name: [] for r in runners}
        for seed in seeds:
            for r in runners:
                runs[r.name].append(self.run(r, data, seed))
        out = {}
        for r in runners:
            med = median_figures(runs[r.name])
            c = dict(comp[r.name])
            if "first_call_s" in c and med.get("wall_s") is not None:
                c["first_minus_warm_s"] = c["first_call_s"] - med["wall_s"]
            out[r.name] = {"sampler": r.describe(), "compile": c, "runs": runs[r.name], "median": med}
        return out
