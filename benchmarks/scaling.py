"""Scaling: ESS/s and wall time as J grows, and as the number of chains of one model grows.

- In J: one synthetic dataset per J (true tau = the suite's `scale_tau`), the suite's
  `scale` settings, every sampler of `scale_J_samplers`.
- In chains: eight schools (non-centered samplers), the `scale` settings with `chains`
  replaced by each value of `scale_chains`. Each chain count is its own compiled program.

Each point is one warm run after a cold (compiling) call; compile time is reported too.
"""

from __future__ import annotations

from .datasets import eight_schools_dataset, synthetic
from .measure import Bench
from .suites import Suite

__all__ = ["scale_J", "scale_chains"]


def _point(bench: Bench, runner, data, seed: int) -> dict:
    comp = bench.ensure_compiled(runner, data)
    fig = bench.run(runner, data, seed)
    return {"sampler": runner.name, "settings": runner.settings.as_dict(),
            "compile_s": comp["compile_s"], "compile_method": comp["method"], **fig}


def scale_J(bench: Bench, suite: Suite, seed: int = 0, grid_runs: list[dict] | None = None) -> list[dict]:
    """`grid_runs`: the grid section's runs; when the grid ran with the same settings, its
    run of the same dataset (replicate 0 of the cell) serves here instead of a new one."""
    rows = []
    same = suite.grid == suite.scale
    for J in suite.scale_J:
        ds = synthetic(J, suite.scale_tau, replicate=0)
        bench.log(f"scaling in J: J={J}")
        for r in bench.runners(suite.scale_J_samplers, suite.scale):
            prev = [g for g in (grid_runs or []) if same and g["dataset"] == ds.name
                    and g["sampler"] == r.name]
            if prev:
                comp = bench.ensure_compiled(r, ds.data)   # recorded already: no work
                fig = {k: v for k, v in prev[0].items()
                       if k not in ("dataset", "cell", "J", "tau_true", "sampler")}
                point = {"sampler": r.name, "settings": r.settings.as_dict(),
                         "compile_s": comp["compile_s"], "compile_method": comp["method"],
                         "from_grid": True, **fig}
            else:
                point = _point(bench, r, ds.data, seed + J)
            rows.append({"J": J, "tau_true": suite.scale_tau, **point})
    return rows


def scale_chains(bench: Bench, suite: Suite, seed: int = 0) -> list[dict]:
    rows = []
    data = eight_schools_dataset().data
    for C in suite.scale_chains:
        bench.log(f"scaling in chains: chains={C}")
        for r in bench.runners(suite.scale_chains_samplers, suite.scale.with_(chains=C)):
            rows.append({"chains_requested": C, **_point(bench, r, data, seed + C)})
    return rows
