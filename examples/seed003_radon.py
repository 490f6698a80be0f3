"""Seed 003: the radon hierarchical regression, centered against non-centered.

Reproduces (docs/seed003_radon.md) Wiecki's comparison on the Minnesota radon data
(919 houses, 85 counties; Gelman & Hill 2007):

    log_radon_i ~ N(a[c_i] + b[c_i] floor_i, eps), a_c ~ N(mu_a, sigma_a), b_c ~ N(mu_b, sigma_b),
    mu_a, mu_b ~ N(0, 100), sigma_a, sigma_b, eps ~ HalfCauchy(5).

Both parametrizations with NUTS for three seeds, with the seed's sample size: 4 chains x
(1000 warmup + 4000 draws; the seed draws 5000 after 1000 tuning steps and drops the first
1000), target_accept 0.8: divergences, the largest R-hat, the bulk ESS of sigma_b; posterior
summaries of the hyperparameters; the funnel in (b_c, log sigma_b) and the traces of
sigma_b. Also checks that the seed's literal mu prior sd = 100**2 gives the same posterior.

    python examples/seed003_radon.py [path/to/radon.csv]     # 802 s on 2 cores beside other work (session 11)
"""

from __future__ import annotations

import os
import sys

import numpy as np
from common import elapsed, plt, save

from hnnjax import plots, radon

CSV = "/work/shared/data/radon.csv"
WARMUP, DRAWS = 1000, 4000  # seed 003: pm.sample(draws=5000, tune=1000, njobs=4)[1000:]


def main(path):
    data, names = radon.load_radon(path)
    print(f"radon data: {data.n_obs} houses, {data.n_counties} counties, "
          f"{int(data.floor.sum())} measured on the first floor")
    fits = {}
    print(f"\n{'fit':28s} {'div':>5s} {'r_hat max':>9s} {'sigma_b r_hat':>13s} {'sigma_b ess':>11s} "
          f"{'depth':>6s} {'run s':>6s}")
    totals = {"centered": 0, "noncentered": 0}
    for seed in (0, 1, 2):
        for par in ("centered", "noncentered"):
            fit = radon.fit_radon(data, par, chains=4, warmup=WARMUP, draws=DRAWS, seed=seed, county_names=names)
            s = fit.summary()
            fits[(par, seed)] = (fit, s)
            totals[par] += fit.divergences
            print(f"{par + ', seed ' + str(seed):28s} {fit.divergences:5d} {np.nanmax(s['r_hat']):9.4f} "
                  f"{s['r_hat'][3]:13.4f} {s['ess_bulk'][3]:11.0f} {fit.stats['tree_depth'].mean():6.2f} "
                  f"{fit.timing['run_s']:6.1f}")
    print(f"divergences over the three seeds: centered {totals['centered']}, non-centered {totals['noncentered']}")

    print("\nhyperparameters, seed 0 (mean, sd, 5%, 95%, ess_bulk, r_hat):")
    for par in ("centered", "noncentered"):
        _, s = fits[(par, 0)]
        print(f"  {par}:")
        for k, name in enumerate(radon.HYPER_NAMES):
            print(f"    {name:8s} {s['mean'][k]:7.3f} {s['sd'][k]:6.3f} {s['q5'][k]:7.3f} {s['q95'][k]:7.3f} "
                  f"{s['ess_bulk'][k]:7.0f} {s['r_hat'][k]:6.3f}")

    # The seed's literal prior sd 100**2 on mu_a, mu_b against ours (100): three independent
    # non-centered fits each (seeds 5-7 against 0-2), compared by Welch's t on the fit means,
    # which uses the seed-to-seed spread instead of trusting each fit's MCSE.
    # With three fits a side the Welch denominator is itself noisy, so the z from the fits'
    # own MCSEs (Vehtari et al. 2021) is printed beside it.
    ours_s = [fits[("noncentered", k)][1] for k in (0, 1, 2)]
    lit_s = [radon.fit_radon(data, "noncentered", chains=4, warmup=WARMUP, draws=DRAWS, seed=k,
                             prior=radon.RadonPrior.make(mu_sd=100.0**2)).summary() for k in (5, 6, 7)]
    ours, lit = (np.array([f["mean"][:5] for f in side]) for side in (ours_s, lit_s))
    mcse2 = sum(np.array([f["mcse_mean"][:5] for f in side]) ** 2 for side in (ours_s, lit_s)).sum(0) / 9
    t = (lit.mean(0) - ours.mean(0)) / np.sqrt(lit.var(0, ddof=1) / 3 + ours.var(0, ddof=1) / 3)
    z = (lit.mean(0) - ours.mean(0)) / np.sqrt(mcse2)
    print("\nmu prior sd 100**2 (the seed's, 3 fits) vs 100 (3 fits): mean of the fit means, Welch t, "
          "and z from the fits' MCSEs")
    for k, name in enumerate(radon.HYPER_NAMES):
        print(f"    {name:8s} {lit.mean(0)[k]:7.4f} vs {ours.mean(0)[k]:7.4f}   t = {t[k]:+.2f}   z = {z[k]:+.2f}")

    # Funnel: log sigma_b against the slope of a county with only two houses, which the
    # data barely inform: its b_c is pinned to mu_b when sigma_b is small.
    counts = np.bincount(data.county, minlength=data.n_counties)
    c = int(np.argmin(np.where(counts >= 2, counts, 10**6)))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, par in zip(axes, ("centered", "noncentered")):
        fit, _ = fits[(par, 1)]
        plots.pair_plot(fit.draws["b"][..., c], np.log(fit.draws["sigma_b"]), fit.stats["diverging"],
                        f"b[{names[c]}] ({counts[c]} houses)", "log sigma_b",
                        f"{par}, seed 1: {fit.divergences} divergent", ax=ax)
    fig.tight_layout()
    save(fig, "seed003_radon_funnel")
    fig, axes = plt.subplots(2, 1, figsize=(9, 4.5), sharex=True, sharey=True)
    for ax, par in zip(axes, ("centered", "noncentered")):
        fit, _ = fits[(par, 1)]
        for ch in range(fit.draws["sigma_b"].shape[0]):
            ax.plot(fit.draws["sigma_b"][ch], lw=0.5)
        ax.set_ylabel(f"sigma_b\n{par}")
    axes[-1].set_xlabel("draw")
    fig.tight_layout()
    save(fig, "seed003_radon_trace_sigma_b")
    print(f"\ndone in {elapsed()}")


if __name__ == "__main__":
    path = sys.argv[1] if len(sys.argv) > 1 else CSV
    if not os.path.exists(path):
        sys.exit(f"radon.csv not found at {path}; pass its path")
    main(path)
