"""Seed 004: no pooling, complete pooling and partial pooling of eight schools.

Reproduces (docs/seed004_pooling.md), with the lecture's values beside ours:
1. the three estimates side by side: theta_j = y_j (no pooling), the precision-weighted
   mean 7.685617 with variance 16.58 (complete pooling), and the hierarchical posterior
   means (partial pooling) under the flat prior of BDA3 and the default N(0, 5) /
   HalfCauchy(5) prior;
2. complete-pooling predictive P(y~_A >= 28) = 0.09560784 and P(y~_C <= -3) = 0.2587447,
   and the same predictive questions under the hierarchical model;
3. the lecture's questions P(theta_j > 0 | y), P(mu > 0 | y) and the posterior predictive
   of a new school P(theta~ > 0 | y); shrinkage factors;
4. empirical Bayes (type-II maximum likelihood of mu, tau) against the full posterior;
5. "the impact of tau": E[theta_j | tau, y] as tau runs from 0 (complete pooling) to large
   (no pooling), with p(tau | y) below it (BDA3 figures 5.5-5.6).

    python examples/seed004_pooling.py       # seconds: everything is closed form or quadrature
"""

from __future__ import annotations

import numpy as np
from common import elapsed, plt, save

import hnnjax
from hnnjax import plots, pooling, queries

SCHOOLS = hnnjax.datasets.eight_schools()


def main():
    y, sigma, names = SCHOOLS.y, SCHOOLS.sigma, SCHOOLS.names
    flat, default = hnnjax.exact(SCHOOLS, "flat"), hnnjax.exact(SCHOOLS)
    cp = pooling.complete_pooling(SCHOOLS)
    print("== 1. No, complete and partial pooling ==")
    print(f"complete pooling: mu = {cp.mean:.6f} (lecture 7.685617), var = {cp.var:.5f} (16.58053), sd = {cp.sd:.4f}")
    print("school    y  sigma | no pooling      | complete pooling | partial, flat prior | partial, N(0,5)/HC(5)")
    print("                   |  mean     sd    |  mean     sd     |  mean     sd        |  mean     sd")
    for j in range(8):
        print(f"  {names[j]}    {y[j]:4.0f}  {sigma[j]:4.0f}  | {y[j]:6.2f} {sigma[j]:6.2f}   | {cp.mean:6.2f} {cp.sd:6.2f}    "
              f"| {flat.mean['theta'][j]:6.2f} {flat.sd['theta'][j]:6.2f}       "
              f"| {default.mean['theta'][j]:6.2f} {default.sd['theta'][j]:6.2f}")

    print("\n== 2. Predictive probabilities ==")
    pa = pooling.complete_pooling_predictive(SCHOOLS, "A", 28.0)
    pc = pooling.complete_pooling_predictive(SCHOOLS, "C", -3.0, upper=False)
    print(f"complete pooling: P(y~_A >= 28) = {pa:.8f} (lecture 0.09560784), "
          f"P(y~_C <= -3) = {pc:.7f} (lecture 0.2587447)")
    for label, ex in (("flat prior", flat), ("N(0,5)/HC(5)", default)):
        a = queries.predictive_prob(ex, "replicate", 28.0, j=0).value
        c = queries.predictive_prob(ex, "replicate", -3.0, j=2, upper=False).value
        print(f"hierarchical ({label}): P(y~_A >= 28) = {a:.4f}, P(y~_C <= -3) = {c:.4f}")

    print("\n== 3. The lecture's questions (exact posterior) ==")
    for label, ex in (("flat prior", flat), ("N(0,5)/HC(5)", default)):
        pt = queries.prob_positive(ex).value
        print(f"{label}: P(mu > 0 | y) = {queries.prob_positive(ex, 'mu').value:.4f}, "
              f"P(theta~ > 0 | y) (new school) = {queries.predictive_prob(ex, 'new_group', 0.0).value:.4f}")
        print("  P(theta_j > 0 | y): " + ", ".join(f"{n} {p:.3f}" for n, p in zip(names, pt)))
        b = queries.shrinkage(ex).value
        print("  E[B_j | y]:         " + ", ".join(f"{n} {v:.3f}" for n, v in zip(names, b)))

    print("\n== 4. Empirical Bayes against the full posterior ==")
    eb = pooling.empirical_bayes(SCHOOLS)
    print(f"type-II ML: mu_hat = {eb.mu:.4f}, tau_hat = {eb.tau:.4f} (at the boundary: {eb.at_boundary}); "
          "the data vary less than their standard errors imply, so EB pools completely")
    print(f"full posterior (flat): E[tau | y] = {flat.mean['tau']:.3f}, median {float(flat.quantile('tau', 0.5)):.3f}, "
          f"90% interval ({float(flat.quantile('tau', 0.05)):.3f}, {float(flat.quantile('tau', 0.95)):.3f})")
    print("school  EB mean  EB sd (mu integrated)  | full posterior mean  sd")
    for j in range(8):
        print(f"  {names[j]}    {eb.theta_mean[j]:6.2f}  {eb.theta_sd_mu_integrated[j]:6.2f}               "
              f"| {flat.mean['theta'][j]:6.2f}  {flat.sd['theta'][j]:6.2f}")
    mode = pooling.marginal_mode(SCHOOLS, "flat")
    print(f"marginal posterior mode of (mu, log tau): ({mode.mode[0]:.4f}, {mode.mode[1]:.4f}), "
          f"Laplace sd ({mode.sd[0]:.3f}, {mode.sd[1]:.3f})")

    # BDA3 figure 5.6: conditional posterior means against tau, with p(tau | y) below.
    fig, axes = plt.subplots(2, 1, figsize=(7, 7), sharex=True, gridspec_kw={"height_ratios": [3, 1.2]})
    keep = (flat.tau > 0.05) & (flat.tau < 40)
    for j in range(8):
        axes[0].plot(flat.tau[keep], flat.theta_mean[keep, j], label=names[j])
    axes[0].axhline(cp.mean, color="k", lw=0.8, ls="--")
    axes[0].set_ylabel("E[theta_j | tau, y]")
    axes[0].legend(ncol=4, fontsize=8)
    axes[0].set_title("the impact of tau (flat prior): tau = 0 pools completely")
    dens = np.exp(flat.logpdf_log_tau(flat.log_tau)) / flat.tau  # p(tau | y) = p(log tau | y) / tau
    axes[1].plot(flat.tau[keep], dens[keep], color="k")
    axes[1].set_ylabel("p(tau | y)")
    axes[1].set_xlabel("tau")
    fig.tight_layout()
    save(fig, "seed004_impact_of_tau")
    save(plots.shrinkage_plot(SCHOOLS, default, title="partial pooling, N(0,5)/HalfCauchy(5) prior"),
         "seed004_shrinkage")
    print(f"\ndone in {elapsed()}")


if __name__ == "__main__":
    main()
