"""Seed 001: centered against non-centered eight schools, a simulated study, divergence rates.

Reproduces (docs/seed001_centered_noncentered.md):
1. the seed's fits of eight schools, mu ~ N(0, 5), tau ~ HalfCauchy(5): centered NUTS
   (target_accept 0.9, 4 chains x 5000 draws, 1000 tuning) and non-centered (0.95),
   summaries of mu, tau, theta beside the exact posterior, and the forest plot;
2. the simulated study K = 8, mu = 5, tau = 3.5, sigma = 12 (4 chains x 4000 draws,
   target_accept 0.9), both parametrizations against the exact posterior and the truth;
3. simulation study (a): divergence rates of both parametrizations against the true tau
   in {0.5, 1, 2, 3.5, 5, 10}, 10 datasets each (`simulate.divergence_study`).

    python examples/seed001_centered_noncentered.py     # a few minutes on 2 cores
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from common import elapsed, plt, save

import hnnjax
from hnnjax import diagnostics, plots, simulate

SCHOOLS = hnnjax.datasets.eight_schools()


def summary_vs_exact(fit, ex, names=("mu", "tau"), thetas=()):
    rows = [("mu", fit.draws["mu"], ex.mean["mu"]), ("tau", fit.draws["tau"], ex.mean["tau"])]
    rows = [r for r in rows if r[0] in names]
    rows += [(f"theta[{fit.data.names[j]}]", fit.draws["theta"][..., j], ex.mean["theta"][j]) for j in thetas]
    print(f"  {'param':10s} {'mean':>8s} {'sd':>7s} {'mcse':>6s} {'exact':>8s} {'z':>6s} {'ess_bulk':>8s} {'r_hat':>6s}")
    for name, x, truth in rows:
        s = diagnostics.summarize(jnp.asarray(x))
        m, sd, mcse = float(s["mean"]), float(s["sd"]), float(s["mcse_mean"])
        print(f"  {name:10s} {m:8.3f} {sd:7.3f} {mcse:6.3f} {truth:8.3f} {(m - truth) / mcse:6.2f} "
              f"{float(s['ess_bulk']):8.0f} {float(s['r_hat']):6.3f}")


def eight_schools():
    print("== 1. Eight schools, centered vs non-centered (mu ~ N(0, 5), tau ~ HalfCauchy(5)) ==")
    ex = hnnjax.exact(SCHOOLS)
    c = hnnjax.sample(SCHOOLS, "centered", target_accept=0.9, seed=1, chains=4, warmup=1000, draws=5000)
    print(f"centered, target_accept 0.9, 4 x 5000: {c.divergences} divergences "
          f"({100 * c.divergences / c.stats['diverging'].size:.2f}%)")
    summary_vs_exact(c, ex)
    nc = hnnjax.sample(SCHOOLS, "noncentered", target_accept=0.95, seed=1, chains=4, warmup=1000, draws=5000)
    print(f"non-centered, target_accept 0.95, 4 x 5000: {nc.divergences} divergences")
    summary_vs_exact(nc, ex, thetas=range(8))
    save(plots.forest_plot(nc, exact=ex, title="eight schools, non-centered NUTS vs exact (90%)"),
         "seed001_forest")
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    plots.divergence_pair_plot(c, ax=axes[0], title=f"centered (0.9): {c.divergences} divergent")
    plots.divergence_pair_plot(nc, ax=axes[1], title=f"non-centered (0.95): {nc.divergences} divergent")
    fig.tight_layout()
    save(fig, "seed001_pair_eight_schools")


def simulated_study():
    print("\n== 2. Simulated study: K = 8, mu = 5, tau = 3.5, sigma = 12 ==")
    data, theta_true = hnnjax.datasets.simulate(8, 5.0, 3.5, 12.0, seed=1)
    print("y      =", np.round(data.y, 2))
    print("theta  =", np.round(theta_true, 2))
    ex = hnnjax.exact(data)
    print(f"exact posterior: E[mu] = {ex.mean['mu']:.3f}, E[tau] = {ex.mean['tau']:.3f} "
          f"(truth mu = 5, tau = 3.5)")
    for par in ("centered", "noncentered"):
        fit = hnnjax.sample(data, par, target_accept=0.9, seed=2, chains=4, warmup=1000, draws=4000)
        print(f"{par}, target_accept 0.9, 4 x 4000: {fit.divergences} divergences")
        summary_vs_exact(fit, ex)
        if par == "centered":
            save(plots.divergence_pair_plot(fit, title=f"simulated study, centered: {fit.divergences} divergent"),
                 "seed001_pair_simulated")


def divergence_rates():
    print("\n== 3. Divergence rate against the true tau (10 datasets per tau, K = 8, mu = 5, sigma = 12) ==")
    table = simulate.divergence_study(taus=(0.5, 1.0, 2.0, 3.5, 5.0, 10.0), n_datasets=10, seed=0,
                                      chains=4, warmup=500, draws=500, target_accept=0.9)
    print(table)
    save(plots.divergence_rate_plot(table, title="divergences vs true tau (NUTS, target_accept 0.9)"),
         "seed001_divergence_rates")


if __name__ == "__main__":
    eight_schools()
    simulated_study()
    divergence_rates()
    print(f"\ndone in {elapsed()}")
