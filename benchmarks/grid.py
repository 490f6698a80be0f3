"""The synthetic grid: every sampler on every dataset, per-cell medians and hnnjax/peer ratios.

Datasets run in order, every sampler on each one before the next dataset (so load on the
machine spreads over the samplers alike), one warm run each, seed = base seed + index.
A cell's figure is the median over its datasets; its compile time is that of the cell's
padded shape (measured once per sampler and shape).
"""

from __future__ import annotations

from .datasets import grid as make_grid
from .measure import Bench, median_figures
from .suites import RATIO_PAIRS, Suite

__all__ = ["run_grid", "cell_ratios", "ratio"]


def ratio(num, den):
    if num is None or den is None or den == 0:
        return None
    return num / den


def run_grid(bench: Bench, suite: Suite, seed: int = 0, data_seed: int = 2024) -> dict:
    datasets = make_grid(suite.grid_J, suite.grid_tau, suite.grid_per_cell, data_seed)
    runners = bench.runners(suite.grid_samplers, suite.grid)
    runs, compile_of = [], {}
    for i, ds in enumerate(datasets):
        bench.log(f"grid: {ds.name} ({i + 1}/{len(datasets)})")
        for r in runners:
            comp = bench.ensure_compiled(r, ds.data)
            compile_of[(ds.cell, r.name)] = comp["compile_s"]
            fig = bench.run(r, ds.data, seed + 1000 * (i + 1))
            runs.append({"dataset": ds.name, "cell": ds.cell, "J": ds.J, "tau_true": ds.tau_true,
                         "sampler": r.name, **fig})
    cells = []
    for ds_cell in dict.fromkeys(d.cell for d in datasets):
        first = next(d for d in datasets if d.cell == ds_cell)
        for r in runners:
            cell_runs = [x for x in runs if x["cell"] == ds_cell and x["sampler"] == r.name]
            cells.append({"cell": ds_cell, "J": first.J, "tau_true": first.tau_true, "sampler": r.name,
                          "compile_s": compile_of.get((ds_cell, r.name)), **median_figures(cell_runs)})
    return {"datasets": [d.describe() for d in datasets], "runs": runs, "cells": cells,
            "ratios": cell_ratios(cells)}


def cell_ratios(cells: list[dict]) -> list[dict]:
    """ESS/s ratio hnnjax / peer per cell, for the pairs of `RATIO_PAIRS` present."""
    out = []
    by = {(c["cell"], c["sampler"]): c for c in cells}
    for cell in dict.fromkeys(c["cell"] for c in cells):
        for num, den in RATIO_PAIRS:
            a, b = by.get((cell, num)), by.get((cell, den))
            if a is None or b is None:
                continue
            out.append({"cell": cell, "J": a["J"], "tau_true": a["tau_true"], "numerator": num,
                        "denominator": den, "ess_per_s_ratio": ratio(a.get("ess_per_s"), b.get("ess_per_s")),
                        "ess_per_grad_ratio": ratio(a.get("ess_per_grad"), b.get("ess_per_grad"))})
    return out
