"""Posterior queries of the eight-schools model, from MCMC draws and from the exact posterior.

The questions the seeds ask of the posterior (BDA3 section 5.5; seeds 002 and 004):

* P(theta_j > 0 | y) -- is coaching effective in school j?  P(mu > 0 | y) -- on average?
* P(theta_A > 28 | y) -- how plausible is school A's raw estimate as its true effect?
* P(theta_A > theta_j | y) for each j -- is A really the best school?
* E[B_j | y] with B_j = sigma_j^2 / (sigma_j^2 + tau^2) -- how far y_j is pulled towards mu,
  since E[theta_j | mu, tau, y] = (1 - B_j) y_j + B_j mu (BDA3 eq. 5.17).
* the posterior predictive of a new school, theta~ | mu, tau ~ N(mu, tau), and of a
  replicated estimate of school j, y~_j | theta_j ~ N(theta_j, sigma_j) (BDA3 section 6.3).

Every query takes a `source`: a `Fit`, a dict of draws ("mu", "tau" shaped (chains, draws)
or (draws,), "theta" shaped (chains, draws, J) or (draws, J)), or an `ExactPosterior`.
Each returns an `Estimate(value, mcse)`:

* from draws, value is the sample mean of the indicator (or of B_j), and mcse is
  `diagnostics.mcse_mean` of the same per-draw values: sd / sqrt(ESS_mean), the ESS of the
  indicator itself, so a probability's Monte Carlo error accounts for autocorrelation
  (Vehtari et al. 2021). When every draw gives the same value the MCSE is reported as 0.
* from the exact posterior, value comes from closed forms given tau integrated over the
  quadrature grid (`exact.py`), and mcse is 0.

Predictive probabilities from draws are Rao-Blackwellized: P(theta~ > c | y) is estimated by
the mean over draws of P(theta~ > c | mu, tau) = Phi((mu - c) / tau), which has the same
expectation as the indicator of a simulated theta~ and a smaller variance. Exactly, given
tau: theta~ | tau, y ~ N(mu_hat, sqrt(V_mu + tau^2)) and
y~_j | tau, y ~ N(E[theta_j | tau, y], sqrt(var(theta_j | tau, y) + sigma_j^2)).
`predictive_draws` simulates theta~ and y~ themselves, one per posterior draw.

`summary(source)` tabulates all of these; `compare(fit, exact_posterior)` puts the MCMC
estimates, their MCSEs, the exact values and the z-scores side by side.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import diagnostics
from .exact import ExactPosterior, _as_arrays, ndtr
from .table import Table

__all__ = [
    "Estimate", "as_draws", "prob", "prob_positive", "prob_greater", "shrinkage",
    "predictive_prob", "predictive_draws", "summary", "compare",
]


class Estimate(NamedTuple):
    """A posterior expectation and its Monte Carlo standard error (0 when exact)."""

    value: np.ndarray
    mcse: np.ndarray

    def z(self, truth) -> np.ndarray:
        """(value - truth) / mcse: the z-score of an MCMC estimate against an exact value."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return (np.asarray(self.value) - np.asarray(truth)) / np.asarray(self.mcse)


# ------------------------------------------------------------------------------- sources


def as_draws(source) -> dict:
    """Draws of mu, tau (chains, draws) and theta (chains, draws, J) from a Fit or a dict.

    1-D mu/tau (and 2-D theta) are taken as one chain. Other keys are dropped.
    """
    d = source.draws if hasattr(source, "draws") and not isinstance(source, dict) else source
    if not isinstance(d, dict) or not all(k in d for k in ("mu", "tau", "theta")):
        raise ValueError("source: expected a Fit, an ExactPosterior or a dict with 'mu', 'tau' and 'theta'")
    mu = np.asarray(d["mu"], dtype=np.float64)
    tau = np.asarray(d["tau"], dtype=np.float64)
    theta = np.asarray(d["theta"], dtype=np.float64)
    if mu.ndim == 1:
        mu, tau, theta = mu[None], tau[None], theta[None]
    if mu.ndim != 2 or tau.shape != mu.shape or theta.shape[:2] != mu.shape or theta.ndim != 3:
        raise ValueError(
            f"source: inconsistent draw shapes mu {mu.shape}, tau {tau.shape}, theta {theta.shape}; "
            "expected (chains, draws) and (chains, draws, J)"
        )
    return {"mu": mu, "tau": tau, "theta": theta}


def _sigma(source, data) -> np.ndarray:
    if data is not None:
        return _as_arrays(data)[1]
    if isinstance(source, ExactPosterior):
        return source.sigma
    fit_data = getattr(source, "data", None)
    if fit_data is not None and not isinstance(source, dict):
        return _as_arrays(fit_data)[1]
    raise ValueError("data: needed (for sigma) when the source is a dict of draws")


def _mean_and_mcse(values: np.ndarray) -> Estimate:
    """Mean over (chains, draws), the last two axes, with `diagnostics.mcse_mean`."""
    import jax.numpy as jnp

    values = np.asarray(values, dtype=np.float64)
    mean = values.mean(axis=(-2, -1))
    flat = values.reshape(values.shape[:-2] + (-1,))
    constant = np.all(flat == flat[..., :1], axis=-1)
    mcse = np.asarray(diagnostics.mcse_mean(jnp.asarray(values)), dtype=np.float64)
    # A constant indicator has no spread and an undefined ESS: its sample mean has no
    # Monte Carlo variance to report.
    mcse = np.where(constant, 0.0, mcse)
    return Estimate(mean if mean.ndim else float(mean), mcse if mcse.ndim else float(mcse))


def _theta_first(theta: np.ndarray) -> np.ndarray:
    """(chains, draws, J) -> (J, chains, draws), the layout the diagnostics reduce over."""
    return np.moveaxis(theta, -1, 0)


def _exact(value) -> Estimate:
    value = np.asarray(value, dtype=np.float64)
    return Estimate(value if value.ndim else float(value), np.zeros_like(value) if value.ndim else 0.0)


# ------------------------------------------------------------------------------- queries


def prob(source, name: str, threshold=0.0, upper: bool = True) -> Estimate:
    """P(name > threshold | y) (or <= if not `upper`) for "mu", "tau" or "theta" (all J).

    For "theta" the threshold broadcasts against (J,) and the result has shape (J,).
    """
    if name not in ("mu", "tau", "theta"):
        raise ValueError(f"name: expected 'mu', 'tau' or 'theta', got {name!r}")
    if isinstance(source, ExactPosterior):
        return _exact(source.prob(name, threshold, upper=upper))
    d = as_draws(source)
    x = _theta_first(d["theta"]) if name == "theta" else d[name]
    t = np.asarray(threshold, dtype=np.float64)
    if name == "theta":
        t = np.broadcast_to(t, (x.shape[0],))[:, None, None]
    hit = (x > t) if upper else (x <= t)
    return _mean_and_mcse(hit.astype(np.float64))


def prob_positive(source, name: str = "theta") -> Estimate:
    """P(theta_j > 0 | y) for every j (name="theta") or P(mu > 0 | y) (name="mu")."""
    return prob(source, name, 0.0, upper=True)


def prob_greater(source, i: int = 0) -> Estimate:
    """P(theta_i > theta_j | y) for every j, shape (J,); NaN at j = i (seed 002's table).

    Exactly: given tau, theta_i - theta_j is normal (`ExactPosterior.prob_greater`).
    """
    if isinstance(source, ExactPosterior):
        J = source.J
        i = _index(i, J)
        vals = np.array([np.nan if j == i else source.prob_greater(i, j) for j in range(J)])
        mcse = np.where(np.isnan(vals), np.nan, 0.0)
        return Estimate(vals, mcse)
    theta = as_draws(source)["theta"]
    J = theta.shape[-1]
    i = _index(i, J)
    hit = (theta[..., i:i + 1] > theta).astype(np.float64)
    est = _mean_and_mcse(_theta_first(hit))
    value, mcse = np.array(est.value, dtype=np.float64), np.array(est.mcse, dtype=np.float64)
    value[i], mcse[i] = np.nan, np.nan
    return Estimate(value, mcse)


def _index(i, J: int) -> int:
    i = int(i)
    if not -J <= i < J:
        raise ValueError(f"i: group index {i} out of range for {J} groups")
    return i % J


def shrinkage(source, data=None) -> Estimate:
    """E[B_j | y], B_j = sigma_j^2 / (sigma_j^2 + tau^2), for every group j (BDA3 eq. 5.17).

    From draws, the mean of B_j over the draws of tau with its MCSE; exactly, the grid
    expectation (as `pooling.shrinkage`).
    """
    sigma = _sigma(source, data)
    if isinstance(source, ExactPosterior):
        return _exact(source.weights @ source.shrink)
    tau = as_draws(source)["tau"]
    s2 = sigma[:, None, None] ** 2
    return _mean_and_mcse(s2 / (s2 + tau[None] ** 2))


def predictive_prob(source, which: str, threshold: float, j=None, upper: bool = True,
                    data=None, sigma_new: float | None = None) -> Estimate:
    """Posterior predictive P(. > threshold | y) (or <= if not `upper`).

    which="new_group": theta~ ~ N(mu, tau), the effect in a new school; with `sigma_new`,
        the estimate y~ ~ N(theta~, sigma_new) a new school would report.
    which="replicate": y~_j ~ N(theta_j, sigma_j), a new estimate for group j (an index;
        all groups, shape (J,), when j is None).

    Exact: mixtures over tau of normals (module docstring). From draws: Rao-Blackwellized
    means of Phi over the draws, with their MCSE.
    """
    if which not in ("new_group", "replicate"):
        raise ValueError(f"which: expected 'new_group' or 'replicate', got {which!r}")
    sign = 1.0 if upper else -1.0
    if which == "new_group":
        extra = 0.0 if sigma_new is None else float(sigma_new) ** 2
        if isinstance(source, ExactPosterior):
            sd = np.sqrt(source.mu_var + source.tau**2 + extra)
            return _exact(source.weights @ ndtr(sign * (source.mu_mean - threshold) / sd))
        d = as_draws(source)
        sd = np.sqrt(d["tau"] ** 2 + extra)
        return _mean_and_mcse(ndtr(sign * (d["mu"] - threshold) / sd))
    sigma = _sigma(source, data)
    if isinstance(source, ExactPosterior):
        sd = np.sqrt(source.theta_var + sigma**2)
        val = source.weights @ ndtr(sign * (source.theta_mean - threshold) / sd)
        return _exact(val if j is None else val[_index(j, sigma.size)])
    theta = _theta_first(as_draws(source)["theta"])
    est = _mean_and_mcse(ndtr(sign * (theta - threshold) / sigma[:, None, None]))
    return est if j is None else _pick(est, _index(j, sigma.size))


def predictive_draws(source, data=None, n: int = 10_000, seed=0, sigma_new: float | None = None) -> dict:
    """Simulated posterior predictive draws, one per posterior draw.

    Returns {"theta_new": theta~ ~ N(mu, tau), "y_new": theta~ + N(0, sigma_new) (only with
    `sigma_new`), "y_rep": y~_j ~ N(theta_j, sigma_j)} shaped like the draws: (chains,
    draws) and (chains, draws, J). An `ExactPosterior` is first sampled i.i.d. (n draws,
    one "chain").
    """
    sigma = _sigma(source, data)
    rng = np.random.default_rng(seed)
    if isinstance(source, ExactPosterior):
        d = as_draws(source.sample(int(n), seed=rng.integers(2**32)))
    else:
        d = as_draws(source)
    theta_new = d["mu"] + d["tau"] * rng.standard_normal(d["mu"].shape)
    out = {"theta_new": theta_new,
           "y_rep": d["theta"] + sigma * rng.standard_normal(d["theta"].shape)}
    if sigma_new is not None:
        out["y_new"] = theta_new + float(sigma_new) * rng.standard_normal(theta_new.shape)
    return out


# ------------------------------------------------------------------------------ summaries


def summary(source, data=None, i: int = 0, threshold: float = 28.0, names=None) -> Table:
    """All of the above in one table: rows are queries, columns value and mcse.

    Rows: P(mu > 0), P(theta_j > 0), P(theta_i > threshold), P(theta_i > theta_j), E[B_j],
    P(theta~ > 0) for a new school, P(y~_j > y_j) for a replicate of each group. From
    draws, all per-draw values are stacked and their MCSEs computed in one call.
    """
    sigma = _sigma(source, data)
    J = sigma.size
    if names is None:
        names = getattr(data, "names", None) or _names(source)
    names = list(names) if names is not None else [str(j) for j in range(J)]
    i = _index(i, J)
    if isinstance(source, ExactPosterior):
        y = source.y
    else:
        y = _as_arrays(data if data is not None else source.data)[0]
    labels = (["P(mu > 0)"] + [f"P(theta[{n}] > 0)" for n in names]
              + [f"P(theta[{names[i]}] > {threshold:g})"]
              + [f"P(theta[{names[i]}] > theta[{names[j]}])" for j in range(J) if j != i]
              + [f"E[B[{n}]]" for n in names] + ["P(theta_new > 0)"]
              + [f"P(y_rep[{n}] > y[{n}])" for n in names])
    others = [j for j in range(J) if j != i]
    if isinstance(source, ExactPosterior):
        ex = source
        rep = [predictive_prob(ex, "replicate", y[j], j=j).value for j in range(J)]
        vals = np.concatenate([
            [ex.prob("mu", 0.0)], ex.prob("theta", 0.0), [ex.prob("theta", threshold)[i]],
            [ex.prob_greater(i, j) for j in others], ex.weights @ ex.shrink,
            [predictive_prob(ex, "new_group", 0.0).value], rep,
        ]).astype(np.float64)
        return Table(labels, {"value": vals, "mcse": np.zeros_like(vals)}, index_name="query")
    d = as_draws(source)
    theta = _theta_first(d["theta"])  # (J, chains, draws)
    s2 = sigma[:, None, None] ** 2
    per_draw = np.concatenate([
        (d["mu"] > 0)[None], theta > 0, (theta[i] > threshold)[None],
        theta[i][None] > theta[others], s2 / (s2 + d["tau"][None] ** 2),
        ndtr(d["mu"] / d["tau"])[None], ndtr((theta - y[:, None, None]) / sigma[:, None, None]),
    ]).astype(np.float64)
    est = _mean_and_mcse(per_draw)
    return Table(labels, {"value": np.asarray(est.value), "mcse": np.asarray(est.mcse)}, index_name="query")


def _pick(est: Estimate, j: int) -> Estimate:
    return Estimate(float(np.asarray(est.value)[j]), float(np.asarray(est.mcse)[j]))


def compare(source, exact_posterior: ExactPosterior, **kwargs) -> Table:
    """`summary` from draws beside the exact values: columns mcmc, mcse, exact, z."""
    est = summary(source, **kwargs)
    ex = summary(exact_posterior, names=kwargs.get("names") or _names(source),
                 i=kwargs.get("i", 0), threshold=kwargs.get("threshold", 28.0))
    if ex.index != est.index:
        raise ValueError("exact_posterior: its groups do not match the draws'")
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (est["value"] - ex["value"]) / est["mcse"]
    return Table(est.index, {"mcmc": est["value"], "mcse": est["mcse"], "exact": ex["value"], "z": z},
                 index_name="query")


def _names(source):
    data = getattr(source, "data", None)
    return list(data.names) if data is not None and not isinstance(source, dict) else None
