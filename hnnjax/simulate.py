"""Simulation studies: divergences against the true tau, interval coverage, and SBC.

Three studies, each fitting many simulated datasets in a few compiled batches through
`sampler.run` (one program per batch shape; a model's draws depend only on its seed, its
id and its padded size, never on the other models of its batch):

(a) `divergence_study`: datasets from fixed truths (seed 001's K = 8, mu = 5, sigma = 12)
    over a range of true tau, fitted by centered and non-centered NUTS. A small tau makes
    the centered posterior a funnel in (log tau, theta) whose neck no single step size can
    enter: divergences appear and E[log tau] is biased upward (Betancourt & Girolami 2015;
    Betancourt 2017, section 6.2). Each fit is also compared with the exact posterior.

(b) coverage and (c) simulation-based calibration (`sbc`), on datasets drawn from the
    prior itself: (mu, tau) ~ p(mu, tau), theta_j ~ N(mu, tau), y_j ~ N(theta_j, sigma_j).
    If the sampler is correct, the posterior averaged over the prior predictive is the
    prior, so (Talts, Betancourt, Simpson, Vehtari & Gelman 2018, "Validating Bayesian
    inference algorithms with simulation-based calibration", arXiv:1804.06788, Theorem 1):

    * the rank of the true value among L posterior draws, r = #{l : x_l < x_true}, is
      uniform on {0, ..., L} for every parameter, when the L draws are independent; MCMC
      draws are thinned (evenly spaced over the chains) to make them nearly so;
    * a central posterior interval of level a covers the true value with probability a
      (BDA3 section 6.3's calibration over the prior predictive).

    Uniformity is tested with a chi-square statistic over B bins of the L + 1 rank values
    (Talts et al. section 4.1), sum_b (O_b - E_b)^2 / E_b with B - 1 degrees of freedom.
    The datasets MUST come from exactly the prior the sampler uses, including its tails
    (HalfCauchy(5) has P(tau > 100) = 3%): `draw_prior` reads the same `Prior` arrays that
    the log density reads, so the two cannot drift apart.

Batching and cost. Some datasets need 2^10-step trajectories (a very large tau in the
non-centered parametrization, a very small one in the centered). The driver's lane pool
(`sampler.RunConfig.max_lanes`) keeps them from holding the others up: a lane whose chain
is done takes the next chain in the queue. Since a model's draws do not depend on its
batch or the pool, chunking and pool size change the run time only, never the results.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Sequence

import jax
import numpy as np
from scipy import stats

from . import diagnostics, model, sampler
from .data import GroupData, bucket_size, stack
from .datasets import EIGHT_SCHOOLS_SIGMA, simulate as simulate_fixed
from .exact import exact
from .model import as_prior
from .table import Table

__all__ = [
    "draw_prior", "datasets_from_prior", "fit_many", "BatchDraws", "thin_indices", "ranks",
    "chi_square_uniformity", "SBCResult", "sbc", "sbc_exact", "divergence_study",
    "parameter_names",
]


# ------------------------------------------------------------------ prior and data draws


def draw_prior(prior, n: int, n_groups: int, rng) -> dict:
    """n draws of (mu, tau, theta) from the hierarchical prior the sampler uses.

    mu ~ Normal(loc, scale); tau ~ HalfCauchy(s) = s |Cauchy(0, 1)| or HalfNormal(s) =
    s |Normal(0, 1)|; theta_j ~ Normal(mu, tau). A flat (improper) prior cannot be drawn
    from and raises ValueError. Returns mu (n,), tau (n,), theta (n, n_groups).
    """
    p = as_prior(prior)
    mk, tk = int(np.asarray(p.mu_kind)), int(np.asarray(p.tau_kind))
    if mk != model.MU_NORMAL or tk == model.TAU_FLAT:
        raise ValueError(f"prior: simulation needs a proper prior, got {p.describe()}")
    rng = np.random.default_rng(rng)
    mu = rng.normal(float(p.mu_loc), float(p.mu_scale), n)
    if tk == model.TAU_HALFCAUCHY:
        tau = float(p.tau_scale) * np.abs(rng.standard_cauchy(n))
    else:
        tau = float(p.tau_scale) * np.abs(rng.standard_normal(n))
    theta = mu[:, None] + tau[:, None] * rng.standard_normal((n, n_groups))
    return {"mu": mu, "tau": tau, "theta": theta}


def datasets_from_prior(n_datasets: int, sigma=EIGHT_SCHOOLS_SIGMA, prior=None, seed: int = 0):
    """(datasets, truth): y_j ~ N(theta_j, sigma_j) with (mu, tau, theta) from `draw_prior`.

    `sigma` (known standard errors, shape (J,)) is the same for every dataset; the default
    is eight schools'. truth holds mu (M,), tau (M,), theta (M, J).
    """
    sigma = np.asarray(sigma, dtype=np.float64)
    rng = np.random.default_rng(seed)
    truth = draw_prior(prior, int(n_datasets), sigma.size, rng)
    y = truth["theta"] + sigma * rng.standard_normal(truth["theta"].shape)
    return [GroupData(y[m], sigma) for m in range(int(n_datasets))], truth


def parameter_names(n_groups: int) -> list[str]:
    return ["mu", "tau"] + [f"theta[{j}]" for j in range(n_groups)]


def _stack_params(d: dict) -> np.ndarray:
    """mu (...), tau (...), theta (..., J) -> (..., 2 + J) in `parameter_names` order."""
    return np.concatenate([d["mu"][..., None], d["tau"][..., None], d["theta"]], axis=-1)


# --------------------------------------------------------------------------- batch fits


@dataclass
class BatchDraws:
    """Draws of M models: mu, tau (M, chains, draws), theta (M, chains, draws, J); diverging
    (M, chains, draws) after warmup; total_steps (M,): leapfrog steps of all chains, warmup
    included (the model's cost); timing."""

    mu: np.ndarray
    tau: np.ndarray
    theta: np.ndarray
    diverging: np.ndarray
    total_steps: np.ndarray
    timing: dict = field(default_factory=dict)

    @property
    def divergences(self) -> np.ndarray:
        """Divergent transitions after warmup per model, (M,)."""
        return self.diverging.sum(axis=(1, 2))

    def params(self) -> np.ndarray:
        """(M, chains, draws, 2 + J) in `parameter_names` order."""
        return _stack_params({"mu": self.mu, "tau": self.tau, "theta": self.theta})


def fit_many(datasets: Sequence[GroupData], parametrization: str = "noncentered", kernel="nuts",
             prior=None, chains: int = 4, warmup: int = 500, draws: int = 500,
             target_accept: float = 0.8, seed: int = 0, ids=None, chunk_size: int | None = None,
             max_lanes: int | None = None) -> BatchDraws:
    """Fit every dataset (all with the same number of groups) with `sampler.run`.

    Model m gets the key `sampler.model_keys(seed, ids[m])` (ids default 0..M-1), exactly as
    `hnnjax.sample(datasets[m], model_id=ids[m], seed=seed)` would, so any one fit can be
    reproduced alone. `prior` is one prior for all or a sequence of M priors. Models run in
    chunks of `chunk_size` (default: all at once) on a pool of `max_lanes` lanes per device
    (default `batch.default_max_lanes`; module docstring). Results come back in input
    order and do not depend on the chunking or the pool.
    """
    from .batch import default_max_lanes

    datasets = list(datasets)
    M = len(datasets)
    if M == 0:
        raise ValueError("datasets: empty")
    J = datasets[0].J
    if any(d.J != J for d in datasets):
        raise ValueError("datasets: all datasets must have the same number of groups")
    ids = np.arange(M) if ids is None else np.asarray(ids)
    if ids.shape != (M,):
        raise ValueError(f"ids: expected {M} ids, got shape {ids.shape}")
    priors = model.as_priors(prior, M)
    pool = default_max_lanes(jax.default_backend()) if max_lanes is None else int(max_lanes)
    config = sampler.RunConfig.normal_normal(parametrization, kernel, chains, warmup, draws, target_accept,
                                             max_lanes=pool)
    dtype = sampler._resolve_dtype(None)
    width = M if chunk_size is None else max(1, min(int(chunk_size), M))
    j_pad = bucket_size(J)
    position = diverging = None
    total_steps = np.zeros(M, np.int64)
    timing = {"compile_s": 0.0, "run_s": 0.0, "loop_iterations": 0, "chunks": 0}
    t0 = time.perf_counter()
    for start in range(0, M, width):
        members = np.arange(start, min(start + width, M))
        lanes = np.concatenate([members, np.repeat(members[:1], width - members.size)])  # one shape
        batch = stack([datasets[i] for i in lanes], j_pad, dtype=dtype)
        prior_b = model.stack_priors([priors[i] for i in lanes], dtype)
        res, t = sampler.run(sampler.model_keys(seed, ids[lanes]), batch, prior_b, config)
        n = members.size
        total_steps[members] = res["n_steps"][:n].sum(axis=(1, 2))
        if position is None:
            position = np.empty((M,) + res["position"].shape[1:], res["position"].dtype)
            diverging = np.empty((M, chains, draws), bool)
        position[members] = res["position"][:n]
        diverging[members] = res["diverging"][:n, :, config.warmup:]
        for k in ("compile_s", "run_s", "loop_iterations"):
            timing[k] += t[k]
        timing["chunks"] += 1
    timing["wall_s"] = time.perf_counter() - t0
    mu, tau, theta = (np.asarray(a) for a in model.constrain(position[..., : 2 + J], parametrization))
    return BatchDraws(mu, tau, theta, diverging, total_steps, timing)


# ------------------------------------------------------------------------- SBC machinery


def thin_indices(n_total: int, L: int) -> np.ndarray:
    """L indices evenly spaced over n_total draws: floor((l + 1/2) n_total / L).

    Applied to the chain-major flattening of (chains, draws), so that consecutive kept
    draws are n_total / L iterations apart (Talts et al. 2018, section 5: thin until the
    draws are nearly independent).
    """
    if L < 1 or n_total < L:
        raise ValueError(f"L: need 1 <= L <= number of draws ({n_total}), got {L}")
    return np.floor((np.arange(L) + 0.5) * n_total / L).astype(np.int64)


def ranks(truth: np.ndarray, draws: np.ndarray, L: int) -> np.ndarray:
    """SBC ranks #{l : x_l < x_true} among L thinned draws, in {0, ..., L}.

    truth (M, P); draws (M, chains, draws, P) or (M, n, P) -> ranks (M, P).
    """
    draws = np.asarray(draws)
    flat = draws.reshape(draws.shape[0], -1, draws.shape[-1])
    kept = flat[:, thin_indices(flat.shape[1], L)]
    return np.sum(kept < np.asarray(truth)[:, None, :], axis=1)


def chi_square_uniformity(r: np.ndarray, L: int, bins: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Chi-square test that ranks in {0..L} are uniform: (statistic, p-value) per column.

    Rank value k falls in bin floor(k * bins / (L + 1)); each bin's expected count is M
    times its share of the L + 1 values (equal shares when bins divides L + 1).
    """
    r = np.asarray(r)
    if r.ndim == 1:
        r = r[:, None]
    if np.any(r < 0) or np.any(r > L):
        raise ValueError(f"ranks: must lie in 0..{L}")
    which = (np.arange(L + 1) * bins) // (L + 1)
    expected_share = np.bincount(which, minlength=bins) / (L + 1)
    b = (r * bins) // (L + 1)
    counts = np.stack([np.bincount(b[:, p], minlength=bins) for p in range(r.shape[1])], axis=1)
    expected = r.shape[0] * expected_share[:, None]
    stat = np.sum((counts - expected) ** 2 / expected, axis=0)
    return stat, stats.chi2.sf(stat, bins - 1)


def _interval_hits(truth: np.ndarray, draws: np.ndarray, levels) -> dict:
    """Central posterior intervals of each level: does [q_(1-a)/2, q_(1+a)/2] hold the truth?"""
    flat = draws.reshape(draws.shape[0], -1, draws.shape[-1])
    hits = {}
    for a in levels:
        lo, hi = np.quantile(flat, [(1 - a) / 2, (1 + a) / 2], axis=1)
        hits[float(a)] = (lo <= truth) & (truth <= hi)
    return hits


@dataclass
class SBCResult:
    """Ranks and interval hits of a simulation study over datasets drawn from the prior.

    ranks: (M, P) in {0..L}, columns `names` (mu, tau, theta[0..J-1]).
    hits: level -> (M, P) bool, central posterior interval covers the truth.
    divergences: (M,) after warmup (0 for exact draws).
    """

    ranks: np.ndarray
    names: list
    L: int
    truth: dict
    hits: dict
    divergences: np.ndarray
    method: str
    n_draws: int
    timing: dict = field(default_factory=dict)
    total_steps: np.ndarray | None = None

    @property
    def n_datasets(self) -> int:
        return int(self.ranks.shape[0])

    def uniformity(self, bins: int = 20) -> Table:
        """Chi-square statistic and p-value per parameter (Talts et al. 2018, section 4.1)."""
        stat, p = chi_square_uniformity(self.ranks, self.L, bins)
        return Table(self.names, {"chi2": stat, "df": np.full(stat.shape, bins - 1), "p_value": p})

    def coverage(self) -> Table:
        """Share of datasets whose central interval covers the truth, per level and parameter,
        with the binomial standard error sqrt(a (1 - a) / M) of a calibrated sampler.
        theta_all pools the J thetas (correlated within a dataset)."""
        cols = {}
        M = self.n_datasets
        for a, h in self.hits.items():
            cov = np.append(h.mean(axis=0), h[:, 2:].mean())
            cols[f"cover_{a:g}"] = cov
            cols[f"z_{a:g}"] = (cov - a) / math.sqrt(a * (1 - a) / M)
        return Table(self.names + ["theta_all"], cols)

    def __str__(self) -> str:
        u = self.uniformity()
        return (f"SBC ({self.method}): {self.n_datasets} datasets, L = {self.L}, "
                f"{int(self.divergences.sum())} divergences; min p-value {u['p_value'].min():.3g}")


def sbc(n_datasets: int = 1000, parametrization: str = "noncentered", kernel="nuts", prior=None,
        sigma=EIGHT_SCHOOLS_SIGMA, L: int = 99, chains: int = 1, warmup: int = 500,
        draws: int = 1000, target_accept: float = 0.8, seed: int = 0, levels=(0.5, 0.9),
        chunk_size: int | None = None) -> SBCResult:
    """Simulation-based calibration of a sampler on the eight-schools model.

    Draws n_datasets (mu, tau, theta, y) from `prior` (the default prior if None) with the
    known `sigma`, fits all of them with `fit_many` (model ids 0..M-1, key seed), and
    computes the rank of each true parameter among L draws thinned evenly from the
    chains x draws posterior draws, plus central-interval coverage at `levels` from all
    draws. The datasets use numpy seed `seed` too.
    """
    if chains * draws < L:
        raise ValueError(f"L: {L} thinned draws need chains * draws >= L, got {chains * draws}")
    data, truth = datasets_from_prior(n_datasets, sigma, prior, seed)
    k = sampler.resolve_kernel(kernel)
    fits = fit_many(data, parametrization, k, prior, chains, warmup, draws, target_accept,
                    seed, chunk_size=chunk_size)
    post = fits.params()
    t = _stack_params(truth)
    name = getattr(k, "name", str(kernel))
    return SBCResult(ranks(t, post, L), parameter_names(len(sigma)), int(L), truth,
                     _interval_hits(t, post, levels), fits.divergences, f"{parametrization} {name}",
                     chains * draws, fits.timing, fits.total_steps)


def sbc_exact(n_datasets: int = 1000, prior=None, sigma=EIGHT_SCHOOLS_SIGMA, L: int = 99,
              n_draws: int = 1000, seed: int = 0, levels=(0.5, 0.9)) -> SBCResult:
    """SBC with i.i.d. draws from the exact posterior (`ExactPosterior.sample`) in place of
    MCMC: a check of the study's machinery (prior draws, ranks, test), whose ranks are
    uniform by construction, and the reference against which the samplers are read."""
    data, truth = datasets_from_prior(n_datasets, sigma, prior, seed)
    p = as_prior(prior)
    rng = np.random.default_rng([seed, 1])
    post = np.stack([_stack_params(exact(d, p).sample(n_draws, seed=rng.integers(2**63))) for d in data])
    t = _stack_params(truth)
    return SBCResult(ranks(t, post, L), parameter_names(len(sigma)), int(L), truth,
                     _interval_hits(t, post, levels), np.zeros(len(data), np.int64), "exact i.i.d.",
                     int(n_draws))


# -------------------------------------------------------------------- divergence study


def divergence_study(taus=(0.5, 1.0, 2.0, 3.5, 5.0, 10.0), n_datasets: int = 10, n_groups: int = 8,
                     mu: float = 5.0, sigma: float = 12.0,
                     parametrizations=("centered", "noncentered"), kernel="nuts", prior=None,
                     chains: int = 4, warmup: int = 500, draws: int = 500,
                     target_accept: float = 0.8, seed: int = 0, chunk_size: int | None = None) -> Table:
    """Divergences of each parametrization against the true tau (seed 001's design).

    For each tau, n_datasets datasets from `datasets.simulate(n_groups, mu, tau, sigma)`
    (the same datasets, and the same model keys, for every parametrization). Per
    (parametrization, tau) row:

    * div_rate: mean share of divergent transitions after warmup; any_div: share of fits
      with at least one;
    * log_tau_err: mean over datasets of (MCMC mean of log tau - exact E[log tau | y]) and
      its standard error over datasets (log_tau_err_se); a sampler that cannot enter the
      funnel's neck overestimates log tau (Betancourt 2017, section 6.2);
    * rhat_max: median over datasets of the largest R-hat among mu, tau and theta.
    """
    taus = [float(t) for t in taus]
    data, labels = [], []
    for k, tau in enumerate(taus):
        for i in range(n_datasets):
            s = int(np.random.SeedSequence([seed, k, i]).generate_state(1)[0])
            gd, _ = simulate_fixed(n_groups, mu, tau, sigma, seed=s)
            data.append(gd)
            labels.append(k)
    labels = np.asarray(labels)
    p = as_prior(prior)
    exact_log_tau = np.array([float(e.expect(np.log)) for e in (exact(d, p) for d in data)])
    rows, cols = [], {k: [] for k in ("parametrization", "tau", "div_rate", "any_div", "log_tau_err",
                                      "log_tau_err_se", "rhat_max")}
    for par in parametrizations:
        fits = fit_many(data, par, kernel, p, chains, warmup, draws, target_accept, seed, chunk_size=chunk_size)
        err = np.log(fits.tau).mean(axis=(1, 2)) - exact_log_tau
        rhat = np.asarray(diagnostics.rhat(np.moveaxis(fits.params(), -1, 1))).max(axis=1)
        rate = fits.diverging.mean(axis=(1, 2))
        for k, tau in enumerate(taus):
            sel = labels == k
            rows.append(f"{par} tau={tau:g}")
            cols["parametrization"].append(par)
            cols["tau"].append(tau)
            cols["div_rate"].append(rate[sel].mean())
            cols["any_div"].append((fits.divergences[sel] > 0).mean())
            cols["log_tau_err"].append(err[sel].mean())
            cols["log_tau_err_se"].append(err[sel].std(ddof=1) / math.sqrt(sel.sum()) if sel.sum() > 1 else np.nan)
            cols["rhat_max"].append(np.median(rhat[sel]))
    return Table(rows, {k: np.asarray(v) for k, v in cols.items()}, index_name="fit")
