"""Useful-step share that hnnjax's drivers actually pay, from the loop-iteration count.

    share = sum over lanes and transitions of n_steps / lane-steps computed

`sampler.run` counts the loop iterations inside the compiled program, per device, and
reports `lane_iterations` = sum over devices of iterations x lanes: for the
lane-independent driver an iteration is a trip through its leapfrog loop (each trip
advances every lane by one step); for the synchronized driver the iterations are the sum
over transitions of the longest lane's trajectory. Warmup and sampling are counted together (the programs interleave
them per lane). Timings here are incidental; the share does not depend on machine load.

    python -m benchmarks.paid_share [--chains 4,64,1024,4096] [--models 100,1000] [--warmup 500 --draws 500]
        [--kernel nuts|hmc|chees]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from .machine import jax_config, machine_info, versions

__all__ = ["measure", "main"]


def _synthetic_models(n_models: int, seed: int = 0):
    """Eight-schools-sized datasets: J = 8, tau in {0.5, 2, 5, 10}, sigma_j ~ U(5, 20)."""
    import hnnjax

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_models):
        tau = rng.choice([0.5, 2.0, 5.0, 10.0])
        sig = rng.uniform(5, 20, 8)
        out.append(hnnjax.GroupData(rng.normal(rng.normal(5, tau, 8), sig), sig))
    return out


def measure(n_models: int, chains: int, driver: str, warmup: int, draws: int, seed: int = 0,
            max_lanes: int | None = None, kernel: str = "nuts") -> dict:
    import jax

    import hnnjax
    from hnnjax import sampler
    from hnnjax.data import stack

    datasets = [hnnjax.datasets.eight_schools()] if n_models == 1 else _synthetic_models(n_models, seed)
    dtype = np.float64 if jax.config.jax_enable_x64 else np.float32
    prior = hnnjax.model.stack_priors([hnnjax.Prior.default()] * n_models, dtype)
    config = sampler.RunConfig(kernel=sampler.resolve_kernel(kernel), chains=chains, warmup=warmup, draws=draws,
                               driver=driver, max_lanes=max_lanes)
    out, timing = sampler.run(sampler.model_keys(seed, range(n_models)), stack(datasets, 8, dtype), prior, config)
    lanes = timing["lanes"]
    needed = int(out["n_steps"].sum())
    per_lane = out["n_steps"].reshape(n_models * chains, -1).sum(axis=1)
    return {
        "models": n_models, "chains": chains, "lanes": lanes, "kernel": kernel, "driver": driver,
        "max_lanes": max_lanes,
        "warmup": warmup, "draws": draws,
        "useful_share": needed / timing["lane_iterations"],
        "loop_iterations": timing["loop_iterations"],
        "mean_steps_per_chain": float(per_lane.mean()), "max_steps_per_chain": int(per_lane.max()),
        "run_s": timing["run_s"], "compile_s": timing["compile_s"],
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--chains", default="4,64,1024,4096", help="one model (eight schools) with this many chains")
    p.add_argument("--models", default="100,1000", help="this many synthetic models x 4 chains")
    p.add_argument("--warmup", type=int, default=500)
    p.add_argument("--draws", type=int, default=500)
    p.add_argument("--drivers", default="independent,synchronized")
    p.add_argument("--kernel", default="nuts", help="nuts, hmc or chees (ChEES runs its own driver)")
    p.add_argument("--max-lanes", default="all",
                   help="comma list of lane-pool sizes for the multi-model cases (a queue); 'all': a lane per chain")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    import sys

    command = "python -m benchmarks.paid_share " + " ".join(sys.argv[1:] if argv is None else argv)
    rows = []
    cases = [(1, int(c)) for c in args.chains.split(",") if c] + [(int(m), 4) for m in args.models.split(",") if m]
    pools = [None if x == "all" else int(x) for x in args.max_lanes.split(",") if x]
    for n_models, chains in cases:
        for driver in args.drivers.split(","):
            for pool in pools if (n_models > 1 and driver == "independent") else [None]:
                row = measure(n_models, chains, driver, args.warmup, args.draws, max_lanes=pool, kernel=args.kernel)
                rows.append(row)
                print(f"{n_models:6d} models x {chains:5d} chains  {args.kernel} {driver:13s} lanes {row['lanes']:5d}  "
                      f"useful share {row['useful_share']:.3f}  loop iters {row['loop_iterations']:7d}  "
                      f"run {row['run_s']:.1f} s", flush=True)
    out = args.out or os.path.join(os.path.dirname(__file__), "results",
                                   f"paid_share-{time.strftime('%Y-%m-%dT%H%M%SZ', time.gmtime())}.json")
    with open(out, "w") as fh:
        json.dump({"rows": rows, "command": command, "machine": machine_info(), "versions": versions(),
                   "jax": jax_config()}, fh, indent=1)
    print("wrote", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
