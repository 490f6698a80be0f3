"""Run a benchmark suite: `python -m benchmarks.run --suite quick|full|smoke`.

    python -m benchmarks.run --suite quick [--device cpu|gpu] [--out PATH] [--plots]
                             [--samplers a,b,...] [--sections headline,grid,...]
                             [--precision float64|float32] [--persistent-cache]

Writes one JSON results file (default benchmarks/results/<suite>-<device>-<UTC time>.json)
and a Markdown copy next to it, and prints the Markdown. Progress goes to stderr.

Fairness: within a section every sampler gets the same settings (chains, warmup, draws,
target acceptance, diagonal mass matrix, float precision) and the same data, runs in the
same process, in round-robin order, with one ESS/R-hat estimator. hnnjax's cache of
compiled programs on disk is switched off in this process (HNNJAX_NO_PERSISTENT_CACHE=1,
unless --persistent-cache), so that hnnjax's compile times are measured, not loaded; its
effect is measured by the fresh-process section instead.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import time
from pathlib import Path

__all__ = ["run_suite", "write_results", "main"]

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SECTIONS = ("headline", "grid", "scaling", "lanes", "fresh")


def _json_default(o):
    import numpy as np

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o) if np.isfinite(o) else None
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _clean(o):
    """NaN/inf -> None, recursively (strict JSON)."""
    import math

    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


def run_suite(suite_name: str = "quick", device: str = "cpu", precision: str = "float64",
              samplers: list[str] | None = None, sections=SECTIONS, seed: int = 0,
              log=None, suite=None) -> dict:
    """Run the suite in this process and return the results dict (nothing written)."""
    import jax

    from . import machine, report, suites
    from .datasets import MU_TRUE, SIGMA_HIGH, SIGMA_LOW, eight_schools_dataset
    from .fresh import fresh_suite
    from .grid import run_grid
    from .lanes import lane_shares
    from .measure import Bench
    from .metrics import estimator_name
    from .scaling import scale_chains, scale_J

    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    suite = suite or suites.get(suite_name)
    jax.config.update("jax_enable_x64", precision == "float64")
    t_start = time.perf_counter()
    load_start = machine.load_average()

    def pick(names):
        return tuple(n for n in names if samplers is None or n in samplers)

    bench = Bench(log=log)
    results = {
        "schema": report.SCHEMA, "suite": suite.name,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "argv": sys.argv, "device": device, "precision": precision,
        "machine": machine.machine_info(), "versions": machine.versions(),
        "git": machine.git_info(Path(__file__).resolve().parent.parent),
        "estimator": estimator_name(),
        "settings": {
            "headline": suite.headline.as_dict(), "grid": suite.grid.as_dict(),
            "scale": suite.scale.as_dict(), "lanes": suite.scale.as_dict(),
            "fresh": suite.headline.as_dict() | {"chains": 4, "warmup": 1000, "draws": 1000},
            "headline_repeats": suite.headline_repeats, "seed": seed,
        },
        "data_generator": {
            "mu_true": MU_TRUE, "sigma": f"log-uniform on [{SIGMA_LOW:g}, {SIGMA_HIGH:g}]",
            "grid_J": list(suite.grid_J), "grid_tau": list(suite.grid_tau),
            "per_cell": suite.grid_per_cell, "scale_J": list(suite.scale_J), "scale_tau": suite.scale_tau,
        },
        "headline": None, "grid": None, "scaling": None, "lanes": None, "fresh": None,
        "notes": list(suite.notes),
    }
    results["machine"]["load_average_start"] = load_start

    if "headline" in sections:
        t0 = time.perf_counter()
        log(f"== headline: eight schools, {suite.headline_repeats} repeats")
        data = eight_schools_dataset().data
        runners = bench.runners(pick(suite.headline_samplers), suite.headline)
        seeds = [seed + 1 + i for i in range(suite.headline_repeats)]
        results["headline"] = {"dataset": "eight_schools", "repeats": suite.headline_repeats,
                               "seeds": seeds, "results": bench.repeats(runners, data, seeds),
                               "elapsed_s": time.perf_counter() - t0}
    if "grid" in sections:
        t0 = time.perf_counter()
        log(f"== grid: J {suite.grid_J} x tau {suite.grid_tau}, {suite.grid_per_cell} per cell")
        sub = suite if samplers is None else _replace(suite, grid_samplers=pick(suite.grid_samplers))
        results["grid"] = run_grid(bench, sub, seed)
        results["grid"]["elapsed_s"] = time.perf_counter() - t0
    if "scaling" in sections or "lanes" in sections:
        sub = suite if samplers is None else _replace(
            suite, scale_J_samplers=pick(suite.scale_J_samplers),
            scale_chains_samplers=pick(suite.scale_chains_samplers), lanes_samplers=pick(suite.lanes_samplers))
    if "scaling" in sections:
        t0 = time.perf_counter()
        log("== scaling")
        grid_runs = (results["grid"] or {}).get("runs")
        results["scaling"] = {"J": scale_J(bench, sub, seed, grid_runs), "chains": scale_chains(bench, sub, seed)}
        results["scaling"]["elapsed_s"] = time.perf_counter() - t0
    if "lanes" in sections:
        t0 = time.perf_counter()
        log("== lanes")
        reuse = (results["scaling"] or {}).get("chains")
        results["lanes"] = lane_shares(bench, sub.lanes_samplers, sub.lanes, sub.scale, seed, reuse)
    if "fresh" in sections and suite.fresh:
        log("== fresh processes")
        libs = suite.fresh_samplers if samplers is None else tuple(
            lib for lib in suite.fresh_samplers if any(s.startswith(lib) for s in samplers))
        results["fresh"] = fresh_suite(libs, x64=precision == "float64",
                                       platform={"cpu": "cpu", "gpu": "cuda"}.get(device), log=log,
                                       chains=4, warmup=1000, draws=1000,
                                       target_accept=suite.headline.target_accept, rounds=suite.fresh_rounds)
    results["samplers"] = {"skipped": dict(bench.skipped),
                           "compiled": [dict(zip(("sampler", "settings", "shape"),
                                                 (k[0], k[1].as_dict(), k[2])), **v)
                                        for k, v in bench.compile_records.items()]}
    results["jax_config"] = machine.jax_config()
    results["machine"]["load_average_end"] = machine.load_average()
    results["ratios"] = report.headline_ratios(results)
    results["targets"] = {k: f"{op} {v:g}" for k, (op, v) in report.TARGETS.items()}
    results["notes"] += _standard_notes(results)
    results["elapsed_s"] = time.perf_counter() - t_start
    return _clean(json.loads(json.dumps(results, default=_json_default)))


def _replace(suite, **kw):
    from dataclasses import replace

    return replace(suite, **kw)


def _standard_notes(results) -> list[str]:
    notes = [
        "Same settings for every sampler within a section; data are arguments of every compiled "
        "program (one program per padded shape); initial positions uniform(-2, 2) on the unconstrained "
        "space for the peers, uniform(-init_radius, init_radius) for hnnjax.",
        "Warmup: BlackJAX window_adaptation and NumPyro's Stan-style windows adapt per chain; "
        "hnnjax uses its own adaptation (see hnnjax/adaptation.py). Max tree depth 10 for the peers.",
        "ESS/s uses the run time after compilation (wall minus the JAX compile seconds seen inside the "
        "call). NumPyro's MCMC.run re-traces and re-compiles its sampling loop on every call "
        "(chain_method='vectorized', progress_bar=False): its user-visible warm wall ('wall s') "
        "includes that; see ess_per_s_user in the JSON.",
        "Gradient counts: sum of integration steps over warmup and sampling, all chains (the peers' "
        "initial-gradient evaluations are not counted).",
    ]
    h = results.get("headline")
    if h:
        for name, r in h["results"].items():
            if (r["median"].get("max_rhat") or 0) > 1.01:
                notes.append(f"headline {name}: max R-hat {r['median']['max_rhat']:.3f} > 1.01")
    load = (results["machine"].get("load_average_start"), results["machine"].get("load_average_end"))
    cpus = results["machine"].get("cpus_usable") or results["machine"].get("cpu_count")
    if all(load) and cpus and max(load[0][0], load[1][0]) > cpus:
        notes.append(f"machine was loaded (1-min load average {load[0][0]} at start, {load[1][0]} at end, "
                     f"{cpus} CPUs): timings are noisy; samplers ran round-robin so load falls on all alike")
    return notes


def write_results(results: dict, out: Path) -> str:
    """Write the JSON results file and its Markdown copy (same stem, .md); return the Markdown."""
    from .report import to_markdown

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, allow_nan=False))
    md = to_markdown(results)
    out.with_suffix(".md").write_text(md + "\n")
    return md


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run",
                                description="hnnjax benchmark suite: ESS/s against BlackJAX and NumPyro.")
    p.add_argument("--suite", choices=("smoke", "quick", "full"), default="quick")
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    p.add_argument("--out", type=Path, default=None, help="results JSON path")
    p.add_argument("--plots", action="store_true", help="write ESS/s plots next to the JSON")
    p.add_argument("--samplers", default=None, help="comma-separated subset of samplers")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    p.add_argument("--precision", choices=("float64", "float32"), default="float64")
    p.add_argument("--persistent-cache", action="store_true",
                   help="leave hnnjax's cache of compiled programs on disk on in this process")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cores", type=int, default=None,
                   help="CPU devices for hnnjax (hnnjax.use_cpu_cores; default: all cores; the peers "
                        "run their usual single-device programs)")
    a = p.parse_args(argv)

    if not a.persistent_cache:
        os.environ["HNNJAX_NO_PERSISTENT_CACHE"] = "1"
    import jax

    jax.config.update("jax_platforms", {"cpu": "cpu", "gpu": "cuda"}[a.device])
    if a.device == "cpu":
        import hnnjax

        hnnjax.use_cpu_cores(a.cores)
    try:
        jax.devices()
    except RuntimeError as exc:
        print(f"error: --device {a.device}: no such JAX backend here ({exc})", file=sys.stderr)
        return 2
    sections = tuple(s for s in a.sections.split(",") if s)
    bad = [s for s in sections if s not in SECTIONS]
    if bad:
        p.error(f"--sections: unknown {bad}; known {SECTIONS}")
    samplers = a.samplers.split(",") if a.samplers else None

    from .report import plots, validate

    results = run_suite(a.suite, a.device, a.precision, samplers, sections, a.seed)
    out = a.out or RESULTS_DIR / f"{a.suite}-{a.device}-{results['created_utc'].replace(':', '')}.json"
    md = write_results(results, out)
    problems = validate(results)
    print(md)
    print(f"\nresults: {out} (and {out.with_suffix('.md').name}); {results['elapsed_s']:.0f} s", file=sys.stderr)
    if a.plots:
        for path in plots(results, out.with_suffix("")):
            print(f"plot: {path}", file=sys.stderr)
    if problems:
        print("schema problems: " + "; ".join(problems), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
