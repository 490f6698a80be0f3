"""Seed 000: the eight-schools model note, the restaurant-homework mapping, and divergences.

Reproduces (docs/seed000_eight_schools.md):
1. the restaurant homework's model: one eight-schools model per (restaurant, aspect), with
   y_j a review's mean sentence sentiment and sigma_j = s_j / sqrt(n_j) its standard error;
2. the eight-schools fits of the seed's PyMC notebook: non-centered NUTS with
   mu ~ N(0, 5), tau ~ HalfCauchy(5) (the seed: 2 chains x 10000 draws, 21 divergences,
   0.21%), the centered fit's divergences, and the check that raising the target
   acceptance (a smaller step) makes the non-centered divergences go away;
3. the pair plot of log tau against theta_1 with the divergent draws highlighted.

    python examples/seed000_eight_schools.py        # about a minute on 2 cores
"""

from __future__ import annotations

import numpy as np
from common import elapsed, plt, save

import hnnjax
from hnnjax import plots, queries, reviews

SCHOOLS = hnnjax.datasets.eight_schools()


def restaurant_note():
    print("== 1. The homework model: one eight-schools model per restaurant and aspect ==")
    df = reviews.synthetic_reviews(3, seed=0)
    ids, groups, report = reviews.to_models(df)
    k = int(np.argmax([g.J for g in groups]))
    g = groups[k]
    print(f"synthetic review table: {len(df)} (review, aspect) rows -> {len(groups)} models; "
          f"model {ids[k]!r} has J = {g.J} reviews")
    print("first reviews: y_j (mean sentiment), sigma_j = s_j / sqrt(n_j):")
    for j in range(min(6, g.J)):
        print(f"  review {g.names[j]:>6}: y = {g.y[j]:+.3f}  sigma = {g.sigma[j]:.3f}")
    fit = hnnjax.sample(g, "noncentered", target_accept=0.9, seed=1, chains=4, warmup=1000, draws=1000)
    th = fit.draws["theta"].reshape(-1, g.J)
    print(f"posterior: mu = {fit.draws['mu'].mean():.3f} (restaurant's aspect quality), "
          f"tau = {fit.draws['tau'].mean():.3f}; divergences {fit.divergences}")
    spread_y, spread_theta = np.std(g.y), np.std(th.mean(axis=0))
    print(f"shrinkage: sd of y_j = {spread_y:.3f} -> sd of posterior means = {spread_theta:.3f}")
    save(plots.shrinkage_plot(g, fit, title=f"restaurant-aspect {ids[k]}: reviews shrunk to mu"),
         "seed000_restaurant_shrinkage")


def divergences():
    print("\n== 2. Eight schools: divergences (mu ~ N(0, 5), tau ~ HalfCauchy(5)) ==")
    ex = hnnjax.exact(SCHOOLS)
    e_log_tau = float(ex.weights @ ex.log_tau)
    print(f"exact: E[mu] = {ex.mean['mu']:.3f}, E[tau] = {ex.mean['tau']:.3f}, E[log tau] = {e_log_tau:.3f}")
    print("seed 000 (PyMC, non-centered, 2 chains x 10000 draws): 21 divergences (0.210%)")
    print(f"{'fit':42s} {'div':>5s} {'%':>7s} {'E[log tau]':>10s} {'z':>6s} {'rhat_max':>8s}")
    fits = {}
    for par, ta in (("noncentered", 0.8), ("centered", 0.8), ("noncentered", 0.99), ("centered", 0.99)):
        fit = hnnjax.sample(SCHOOLS, par, target_accept=ta, seed=0, chains=2, warmup=1000, draws=10000)
        fits[(par, ta)] = fit
        n = fit.stats["diverging"].size
        lt = np.log(fit.draws["tau"])
        import jax.numpy as jnp

        mcse = float(hnnjax.diagnostics.mcse_mean(jnp.asarray(lt)))
        rhat = float(fit.summary()["r_hat"].max())
        print(f"{par + ', target_accept ' + str(ta) + ', 2 x 10000':42s} {fit.divergences:5d} "
              f"{100 * fit.divergences / n:7.3f} {lt.mean():10.3f} {(lt.mean() - e_log_tau) / mcse:6.2f} {rhat:8.4f}")
    c = fits[("centered", 0.8)]
    div = c.stats["diverging"].astype(bool)
    lt = np.log(c.draws["tau"])
    print(f"centered: median log tau of divergent draws {np.median(lt[div]):.2f} vs the others "
          f"{np.median(lt[~div]):.2f} (divergences sit in the funnel's neck)")
    print("\nposterior queries, non-centered (target 0.99) against the exact posterior:")
    print(queries.compare(fits[("noncentered", 0.99)], ex))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    plots.divergence_pair_plot(c, ax=axes[0], title=f"centered: {c.divergences} divergent of {div.size}")
    nc = fits[("noncentered", 0.8)]
    plots.divergence_pair_plot(nc, ax=axes[1], title=f"non-centered: {nc.divergences} divergent of {div.size}")
    for ax in axes:
        ax.axis([-20, 50, -6, 4])  # the seed's axes
    fig.tight_layout()
    save(fig, "seed000_pair_divergences")
    save(plots.trace_plot(c, thetas=(0,)), "seed000_trace_centered")


if __name__ == "__main__":
    restaurant_note()
    divergences()
    print(f"\ndone in {elapsed()}")
