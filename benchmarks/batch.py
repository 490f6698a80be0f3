"""Many small models: hnnjax.sample_batch against BlackJAX NUTS vmapped over models.

    python -m benchmarks.batch [--models 1000 10000] [--quick] [--chunk-size N] [--max-lanes L] [--kernels nuts chees]

Workload: M eight-schools-sized synthetic models (J = 8, `benchmarks.datasets.synthetic`,
true tau cycling over 0.1, 2 and 20), non-centered, 4 chains, 500 warmup + 500 draws,
target acceptance 0.8, float32 unless --float64. Both samplers run in this process, on
the same datasets, in chunks of the same number of models:

- hnnjax: `sample_batch(..., keep_draws=False)`: one compiled program per chunk shape;
  each lane runs its own trajectories, and a lane whose chain is done takes the chunk's
  next chain (a pool of `default_max_lanes` lanes; `hnnjax.sampler`).
- BlackJAX: `benchmarks.peers.blackjax_program` (window adaptation + sampling, chains
  vmapped) vmapped once more over the chunk's models, all inside one `jax.jit`, compiled
  ahead of time; model m's key is hnnjax's (`hnnjax.sampler.model_keys`).

Figures, per sampler (one estimator for both: `hnnjax.diagnostics` through
`hnnjax.batch.summarize_blocks`, over mu, tau and every theta_j):

- models/s = M / sampling seconds (compile excluded; sampling seconds are the compiled
  calls, to results on the host); also the end-to-end wall time of hnnjax's call;
- ESS/s = sum over models of the model's smallest bulk ESS / sampling seconds;
- share of models with R-hat > 1.01 (max over the model's scalars; Vehtari et al. 2021);
- useful-step share: leapfrog steps the lanes needed / steps the vectorized loop paid
  for. hnnjax: sum of n_steps / (loop iterations x lanes), per chunk (its loop advances
  each lane one step per iteration). BlackJAX: every transition is a vmapped while loop
  that runs until the longest trajectory of the chunk ends, so the loop pays
  lanes x max_lanes(steps) per iteration: sum steps / sum_t (lanes x max_l steps[l, t])
  (`benchmarks.metrics.useful_step_share`), warmup and sampling together.

Writes benchmarks/results/batch_<timestamp>.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .datasets import GRID_TAU, synthetic
from .machine import git_info, jax_config, load_average, machine_info, versions
from .runner import Settings

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]


def datasets(n_models: int, seed: int = 2024):
    """M models of 8 groups, true tau cycling over the grid's values."""
    return [synthetic(8, GRID_TAU[i % len(GRID_TAU)], i // len(GRID_TAU), seed).data for i in range(n_models)]


def _per_model(draws_mu, draws_tau, draws_theta):
    """(max R-hat, min bulk ESS) per model from (M, chains, draws[, J]) draws."""
    from hnnjax.batch import summarize_blocks

    M, J = draws_theta.shape[0], draws_theta.shape[-1]
    x = np.concatenate([draws_mu[:, None], draws_tau[:, None], np.moveaxis(draws_theta, -1, 1)], axis=1)
    st = summarize_blocks(x.reshape((M * (J + 2),) + x.shape[2:]))
    r_hat = st["r_hat"].reshape(M, J + 2)
    ess = st["ess_bulk"].reshape(M, J + 2)
    return np.max(r_hat, axis=1), np.min(ess, axis=1)


def _figures(name, n_models, sampling_s, compile_s, r_hat, ess, useful, wall_s=None, extra=None):
    return {
        "sampler": name, "models": n_models, "sampling_s": sampling_s, "compile_s": compile_s,
        "wall_s": wall_s, "models_per_s": n_models / sampling_s,
        "ess_per_s": float(np.nansum(ess) / sampling_s),
        "median_min_ess_bulk": float(np.nanmedian(ess)),
        "share_rhat_above_1_01": float(np.mean(~(r_hat <= 1.01))),
        "useful_step_share": useful, **(extra or {}),
    }


def default_chunk(n_models: int, settings: Settings, dtype) -> int:
    """The chunk width sample_batch picks by default (its memory budget), used for both."""
    import inspect

    from hnnjax.batch import bytes_per_model, sample_batch

    budget = inspect.signature(sample_batch).parameters["memory_budget_mb"].default
    per = bytes_per_model(8, settings.chains, settings.warmup, settings.draws, np.dtype(dtype).itemsize)
    return max(1, min(n_models, int(budget * 2**20 // per)))


def run_hnnjax(data, settings: Settings, chunk_size: int, dtype, seed: int, max_lanes=None, kernel="nuts") -> dict:
    from hnnjax.batch import sample_batch

    t0 = time.perf_counter()
    res = sample_batch(data, kernel=kernel, chains=settings.chains, warmup=settings.warmup, draws=settings.draws,
                       target_accept=settings.target_accept, seed=seed, dtype=dtype,
                       chunk_size=chunk_size, max_lanes=max_lanes, keep_draws=False, progress=False)
    wall = time.perf_counter() - t0
    m = res.models
    t = res.timing
    name = "hnnjax" if kernel == "nuts" else f"hnnjax-{kernel}"
    return _figures(name, len(data), t["run_s"], t["compile_s"], m["r_hat_max"], m["ess_bulk_min"],
                    t["useful_step_share"], wall_s=wall,
                    extra={"chunks": len(res.chunks), "lanes": res.chunks[0]["lanes"],
                           "divergences": int(m["divergences"].sum())})


def run_blackjax(data, settings: Settings, chunk_size: int, dtype, seed: int, max_lanes=None) -> dict:
    """BlackJAX over the same chunks (`max_lanes` is hnnjax's; BlackJAX has no lane pool)."""
    import jax
    import jax.numpy as jnp

    from hnnjax.sampler import model_keys

    from .peers import blackjax_program

    program = jax.vmap(blackjax_program("noncentered", settings))
    y_all = np.stack([d.y for d in data]).astype(dtype)
    s_all = np.stack([d.sigma for d in data]).astype(dtype)
    compiled, compile_s, sampling_s = {}, 0.0, 0.0
    r_hats, esses, steps_sum, paid = [], [], 0.0, 0.0
    for start in range(0, len(data), chunk_size):
        idx = np.arange(start, min(start + chunk_size, len(data)))
        width = min(chunk_size, len(data))
        lanes = np.r_[idx, np.full(width - idx.size, idx[0])]  # same shape for the last chunk
        keys = jax.random.wrap_key_data(jnp.asarray(model_keys(seed, lanes)))  # hnnjax's model keys
        y, s = jnp.asarray(y_all[lanes]), jnp.asarray(s_all[lanes])
        if width not in compiled:
            t0 = time.perf_counter()
            compiled[width] = jax.jit(program).lower(keys, y, s).compile()
            compile_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        out = jax.device_get(jax.block_until_ready(compiled[width](keys, y, s)))
        sampling_s += time.perf_counter() - t0
        n = idx.size
        r, e = _per_model(np.asarray(out["mu"])[:n], np.asarray(out["tau"])[:n], np.asarray(out["theta"])[:n])
        r_hats.append(r)
        esses.append(e)
        # (models, chains, iterations) -> (lanes, iterations); the padding lanes ran too
        st = np.concatenate([out["warmup_n_steps"], out["n_steps"]], axis=-1)
        st = st.reshape(-1, st.shape[-1]).astype(np.float64)
        steps_sum += st[: n * settings.chains].sum()  # padding lanes' steps are waste
        paid += lockstep_cost(st)
    return _figures("blackjax", len(data), sampling_s, compile_s, np.concatenate(r_hats),
                    np.concatenate(esses), steps_sum / paid if paid else float("nan"),
                    extra={"chunks": -(-len(data) // chunk_size), "lanes": chunk_size * settings.chains})


def lockstep_cost(steps: np.ndarray) -> float:
    """Lane-steps a lock-step vmapped loop pays: sum_t lanes x max_l steps[l, t].

    Equal to steps.sum() / `benchmarks.metrics.useful_step_share(steps)`."""
    return float(steps.shape[0] * steps.max(axis=0).sum())


def markdown(rows: list[dict], settings: Settings) -> str:
    head = (f"Models of J = 8, non-centered, {settings.chains} chains x ({settings.warmup} warmup + "
            f"{settings.draws} draws); sampling seconds exclude compilation.\n\n"
            "| sampler | models | chunks | lanes | compile s | sampling s | models/s | ESS/s | "
            "median min ESS | R-hat > 1.01 | useful-step share |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    lines = [head]
    for r in rows:
        lines.append(
            f"| {r['sampler']} | {r['models']} | {r['chunks']} | {r['lanes']} | {r['compile_s']:.1f} | "
            f"{r['sampling_s']:.1f} | "
            f"{r['models_per_s']:.1f} | {r['ess_per_s']:.0f} | {r['median_min_ess_bulk']:.0f} | "
            f"{r['share_rhat_above_1_01']:.1%} | {r['useful_step_share']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.batch", description=__doc__.splitlines()[0])
    p.add_argument("--models", type=int, nargs="+", default=[1000, 10000])
    p.add_argument("--quick", action="store_true", help="200 models only")
    p.add_argument("--chains", type=int, default=4)
    p.add_argument("--warmup", type=int, default=500)
    p.add_argument("--draws", type=int, default=500)
    p.add_argument("--chunk-size", type=int, default=None,
                   help="models per compiled call, both samplers (default: hnnjax's, from its memory budget)")
    p.add_argument("--peer-chunk-sizes", type=int, nargs="+", default=None,
                   help="BlackJAX's chunk sizes, each run in turn (default: the same chunks as hnnjax); "
                        "its lanes wait for the longest tree in a chunk, so small chunks are its best")
    p.add_argument("--max-lanes", type=int, default=None,
                   help="hnnjax's lane pool per chunk (default: hnnjax.batch.default_max_lanes)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--float64", action="store_true")
    p.add_argument("--samplers", nargs="+", default=["hnnjax", "blackjax"], choices=["hnnjax", "blackjax"])
    p.add_argument("--kernels", nargs="+", default=["nuts"], choices=["nuts", "chees", "hmc"],
                   help="hnnjax's kernels, each a row (ChEES runs 4 chains x (warmup + draws) as NUTS does)")
    p.add_argument("--cores", type=int, default=None,
                   help="CPU devices for hnnjax (hnnjax.use_cpu_cores; default: all cores); BlackJAX runs "
                        "its usual single-device program")
    args = p.parse_args(argv)
    import jax

    import hnnjax

    hnnjax.use_cpu_cores(args.cores)

    if args.float64:
        jax.config.update("jax_enable_x64", True)
    dtype = np.float64 if args.float64 else np.float32
    settings = Settings(chains=args.chains, warmup=args.warmup, draws=args.draws)
    sizes = [200] if args.quick else args.models
    runners = {"hnnjax": run_hnnjax, "blackjax": run_blackjax}
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"batch_{stamp}.json"
    rows = []

    def write():  # after every row: a run stopped early keeps the rows it finished
        record = {"settings": settings.as_dict(), "dtype": np.dtype(dtype).name, "chunk_size": args.chunk_size,
                  "peer_chunk_sizes": args.peer_chunk_sizes, "max_lanes": args.max_lanes, "seed": args.seed,
                  "rows": rows, "machine": machine_info(), "versions": versions(), "jax": jax_config(),
                  "git": git_info(ROOT), "load_average": load_average()}
        path.write_text(json.dumps(record, indent=1, default=float))

    for n in sizes:
        data = datasets(n)
        chunk = min(args.chunk_size or default_chunk(n, settings, dtype), n)
        for name in args.samplers:
            chunks = [chunk] if name == "hnnjax" or not args.peer_chunk_sizes else args.peer_chunk_sizes
            kernels = args.kernels if name == "hnnjax" else [None]
            for size, kernel in ((c, k) for c in chunks for k in kernels):
                size = min(size, n)
                print(f"[batch] {name} {kernel or ''}: {n} models, chunks of {size}", file=sys.stderr, flush=True)
                extra = {"kernel": kernel} if kernel else {}
                rows.append(runners[name](data, settings, size, dtype, args.seed, max_lanes=args.max_lanes, **extra))
                write()
                print(markdown(rows[-1:], settings).splitlines()[-1], file=sys.stderr, flush=True)
    print(markdown(rows, settings))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
