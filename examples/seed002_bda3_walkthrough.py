"""Seed 002: the BDA3 walkthrough of eight schools under the flat prior p(mu, tau) = 1.

Reproduces (docs/seed002_bda3.md), with the seed's values beside ours:
1. separate estimates and their 95% intervals; the pooled estimate 7.6856, variance 16.58;
2. the contour of log p(mu, log tau | y), its mode (seed: 7.926685, 1.841525) and the
   Laplace covariance (seed: [[22.32, 0.194], [0.194, 0.535]]);
3. posterior means and sds of theta_j (seed: from 5000 random-walk Metropolis draws);
4. the shrinkage factors E[B_j | y], P(theta_A > 28 | y) (seed: 0.0468) and
   P(theta_A > theta_j | y) -- exactly (quadrature) and from NUTS draws with their MCSE.

    python examples/seed002_bda3_walkthrough.py     # about a minute on 2 cores
"""

from __future__ import annotations

import numpy as np
from common import elapsed, save
from scipy.stats import norm

import hnnjax
from hnnjax import plots, pooling, queries

SCHOOLS = hnnjax.datasets.eight_schools()
FLAT = hnnjax.Prior.flat()
SEED_THETA = np.array([[11.226786, 8.510583], [7.812253, 6.185383], [6.078697, 7.993831],
                       [7.609353, 6.515474], [5.162853, 6.381664], [6.231208, 6.729192],
                       [10.340858, 6.990141], [8.490497, 8.045273]])
SEED_SHRINK = np.array([0.8328975, 0.7376910, 0.8458181, 0.7620532, 0.7096051, 0.7620532,
                        0.7376910, 0.8676774])
SEED_A_GT = np.array([np.nan, 0.6346, 0.6800, 0.6382, 0.7162, 0.6804, 0.5382, 0.5994])


def main():
    y, sigma, names = SCHOOLS.y, SCHOOLS.sigma, SCHOOLS.names
    print("== 1. Separate and pooled estimates ==")
    sep = pooling.no_pooling(SCHOOLS)
    print("school     y  sigma    q_025    q_975")
    for j in range(8):
        lo, hi = norm.ppf([0.025, 0.975], sep.mean[j], sep.sd[j])
        print(f"  {names[j]}   {y[j]:5.0f}  {sigma[j]:5.0f} {lo:8.4f} {hi:8.4f}")
    cp = pooling.complete_pooling(SCHOOLS)
    print(f"pooled: mean {cp.mean:.8f} (seed 7.68561672495604), variance {cp.var:.5f} (seed 16.58053)")

    print("\n== 2. Marginal posterior of (mu, log tau): mode and Laplace approximation ==")
    mode = pooling.marginal_mode(SCHOOLS, FLAT)
    print(f"mode      = ({mode.mode[0]:.6f}, {mode.mode[1]:.6f})   seed (R optim, Nelder-Mead): (7.926685, 1.841525)")
    print(f"covariance = [[{mode.cov[0, 0]:.4f}, {mode.cov[0, 1]:.4f}], [{mode.cov[1, 0]:.4f}, {mode.cov[1, 1]:.4f}]]"
          f"   seed: [[22.3233, 0.1935], [0.1935, 0.5353]]")
    print(f"mode of tau = exp({mode.mode[1]:.4f}) = {mode.tau:.3f}; gradient at the mode {mode.grad_norm:.1e}")
    fit = hnnjax.sample(SCHOOLS, "noncentered", target_accept=0.95, seed=3, prior=FLAT,
                        chains=4, warmup=1000, draws=2500)
    print(f"NUTS (non-centered, flat prior, 4 x 2500, target_accept 0.95): {fit.divergences} divergences")
    save(plots.marginal_contour(SCHOOLS, FLAT, mode=mode, draws=fit,
                                title="log p(mu, log tau | y), flat prior: mode, Laplace, NUTS draws"),
         "seed002_contour")

    print("\n== 3. Posterior of theta_j (flat prior) ==")
    ex = hnnjax.exact(SCHOOLS, FLAT)
    th = fit.draws["theta"].reshape(-1, 8)
    print("school  exact mean  exact sd   NUTS mean  NUTS sd   seed mean  seed sd")
    for j in range(8):
        print(f"  {names[j]}     {ex.mean['theta'][j]:8.3f}  {ex.sd['theta'][j]:8.3f}   "
              f"{th[:, j].mean():8.3f}  {th[:, j].std(ddof=1):7.3f}   {SEED_THETA[j, 0]:8.3f}  {SEED_THETA[j, 1]:7.3f}")
    print(f"E[mu] = {ex.mean['mu']:.3f}, median tau = {float(ex.quantile('tau', 0.5)):.3f} "
          f"(E[tau] = {ex.mean['tau']:.3f}: the flat prior's tau tail is heavy)")

    print("\n== 4. Shrinkage and probabilities ==")
    b_ex, b_mc = queries.shrinkage(ex), queries.shrinkage(fit)
    print("school  sigma  E[B_j] exact  NUTS (mcse)        seed   rank_B rank_sigma")
    rank_b = np.argsort(np.argsort(b_ex.value)) + 1
    rank_s = np.argsort(np.argsort(sigma, kind="stable"), kind="stable") + 1
    for j in range(8):
        print(f"  {names[j]}      {sigma[j]:3.0f}     {b_ex.value[j]:.4f}  {b_mc.value[j]:.4f} ({b_mc.mcse[j]:.4f})  "
              f"{SEED_SHRINK[j]:.4f}   {rank_b[j]}      {rank_s[j]}")
    p_ex, p_mc = queries.prob(ex, "theta", 28.0), queries.prob(fit, "theta", 28.0)
    print(f"P(theta_A > 28 | y): exact {p_ex.value[0]:.4f}, NUTS {p_mc.value[0]:.4f} ({p_mc.mcse[0]:.4f}), "
          f"seed 0.0468; separate estimates would say 0.5")
    g_ex, g_mc = queries.prob_greater(ex, 0), queries.prob_greater(fit, 0)
    print("P(theta_A > theta_j | y):")
    print("school   exact   NUTS (mcse)       seed")
    for j in range(1, 8):
        print(f"  {names[j]}    {g_ex.value[j]:.4f}  {g_mc.value[j]:.4f} ({g_mc.mcse[j]:.4f})  {SEED_A_GT[j]:.4f}")
    print("\nall queries, NUTS against exact (z = (NUTS - exact) / MCSE):")
    print(queries.compare(fit, ex))
    save(plots.shrinkage_plot(SCHOOLS, ex, title="flat prior: E[theta_j | y] against y_j"), "seed002_shrinkage")
    print(f"\ndone in {elapsed()}")


if __name__ == "__main__":
    main()
