"""Simulation-based calibration and interval coverage of the samplers (docs/sbc.md).

Talts, Betancourt, Simpson, Vehtari & Gelman (2018), "Validating Bayesian inference
algorithms with simulation-based calibration": draw (mu, tau, theta) from the prior the
sampler uses (mu ~ N(0, 5), tau ~ HalfCauchy(5)), y_j ~ N(theta_j, sigma_j) with eight
schools' sigma, fit, and rank each true value among L = 99 thinned posterior draws. A
correct sampler gives uniform ranks; a chi-square test over 20 bins checks it.

    python examples/sbc_study.py                       # the full study (~3 min on 2 cores)
    python examples/sbc_study.py --datasets 200 --configs nuts:noncentered   # a quick look
    python examples/sbc_study.py --no-exact --configs chees:noncentered chees:centered
    python examples/sbc_study.py --no-exact --configs nuts:centered:0.99 --warmup 1000

Prints chi-square p-values and coverage per configuration and writes rank histograms to
docs/figures/sbc_<kernel>_<parametrization>.png and the numbers to docs/figures/sbc_results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax

jax.config.update("jax_enable_x64", True)

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import numpy as np  # noqa: E402

from hnnjax import plots, simulate  # noqa: E402

FIG = os.path.join(os.path.dirname(__file__), "..", "docs", "figures")
CHAINS = {"chees": 4}  # chains per fit where the kernel needs more than one


def report(res, results, key):
    u = res.uniformity(bins=20)
    c = res.coverage()
    n = res.n_datasets
    print(f"\n== {res.method}: {n} datasets, L = {res.L}, {res.n_draws} draws per fit "
          f"(timing: {res.timing.get('wall_s', float('nan')):.0f} s) ==")
    print(f"divergent transitions: {int(res.divergences.sum())} in {int((res.divergences > 0).sum())} fits")
    print(u)
    print(c)
    # The funnel's signature: tau's truth below nearly all posterior draws (the lowest of
    # 20 bins: ranks 0-4 for L = 99).
    width = (res.L + 1) // 20
    low_tau = int((res.ranks[:, list(res.names).index("tau")] < width).sum())
    print(f"tau ranks in the lowest of 20 bins (0..{width - 1}): {low_tau} of {n} (uniform: {n / 20:.0f})")
    results[key] = {
        "datasets": n, "L": res.L, "draws_per_fit": res.n_draws,
        "p_values": dict(zip(res.names, np.round(u["p_value"], 4).tolist())),
        "chi2": dict(zip(res.names, np.round(u["chi2"], 2).tolist())),
        "coverage_50": dict(zip(c.index, np.round(c["cover_0.5"], 3).tolist())),
        "coverage_90": dict(zip(c.index, np.round(c["cover_0.9"], 3).tolist())),
        "divergences": int(res.divergences.sum()),
        "fits_with_divergences": int((res.divergences > 0).sum()),
        "tau_lowest_bin": low_tau,
        "wall_s": round(float(res.timing.get("wall_s", 0.0)), 1),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", type=int, default=1000)
    ap.add_argument("--configs", nargs="+", default=["nuts:noncentered", "nuts:centered",
                                                      "hmc:noncentered", "hmc:centered"])
    ap.add_argument("--seed", type=int, default=2018)
    ap.add_argument("--warmup", type=int, default=500, help="warmup iterations per fit")
    ap.add_argument("--no-exact", action="store_true", help="skip the exact i.i.d. reference")
    ap.add_argument("--out", default=FIG)
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    results = {}
    if not args.no_exact:
        t0 = time.perf_counter()
        res = simulate.sbc_exact(args.datasets, L=99, n_draws=1000, seed=args.seed)
        res.timing["wall_s"] = time.perf_counter() - t0
        report(res, results, "exact")
        plots.rank_histogram(res).savefig(os.path.join(args.out, "sbc_exact.png"), dpi=80)
    for cfg in args.configs:
        kernel, par, *rest = cfg.split(":")  # kernel:parametrization[:target acceptance]
        target = float(rest[0]) if rest else 0.8
        key = f"{kernel}_{par}" + (f"_ta{rest[0]}" if rest else "") + (f"_w{args.warmup}" if args.warmup != 500 else "")
        # One chain of 500 warmup + 1000 draws, thinned by 10 to L = 99 (Talts et al.
        # section 5: thin until the kept draws are nearly independent). ChEES adapts on the
        # spread across a model's chains, so it runs 4 chains of 250 draws (the same 1000).
        chains = CHAINS.get(kernel, 1)
        res = simulate.sbc(args.datasets, parametrization=par, kernel=kernel, L=99, chains=chains,
                           warmup=args.warmup, draws=1000 // chains, target_accept=target, seed=args.seed)
        report(res, results, key)
        steps = res.total_steps
        print(f"leapfrog steps per fit: median {np.median(steps):.0f}, max {steps.max()} "
              f"(true tau {res.truth['tau'][np.argmax(steps)]:.1f})")
        plots.rank_histogram(res).savefig(os.path.join(args.out, f"sbc_{key}.png"), dpi=80)
    path = os.path.join(args.out, "sbc_results.json")
    old = {}
    if os.path.exists(path):
        with open(path) as fh:
            old = json.load(fh)
    old.update(results)
    with open(path, "w") as fh:
        json.dump(old, fh, indent=1)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
