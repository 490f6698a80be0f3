"""The radon hierarchical linear regression of seed 003, centered and non-centered.

Gelman & Hill (2007, "Data Analysis Using Regression and Multilevel/Hierarchical Models",
chapters 12-13) model the log radon level of house i in Minnesota county c[i] with a
county intercept and a county slope on the floor of the measurement (0 = basement,
1 = first floor); seed 003 (Wiecki 2017, "Why hierarchical models are awesome, tricky, and
Bayesian") fits it with independent priors on intercepts and slopes:

    log_radon_i ~ Normal(a[c_i] + b[c_i] * floor_i, eps)
    a_c ~ Normal(mu_a, sigma_a),  b_c ~ Normal(mu_b, sigma_b)        c = 1..85
    mu_a, mu_b ~ Normal(0, 100)
    sigma_a, sigma_b, eps ~ HalfCauchy(5)

Prior on mu_a, mu_b: the seed writes `pm.Normal('mu_a', mu=0., sd=100**2)`, a standard
deviation of 10^4. We use sd = 100 (`RadonPrior.make(mu_sd=100)`, the default), what
the brief's model statement says; both are flat on the scale of log radon (about 0 to 4),
so the posterior is the same to Monte Carlo error:
the data (919 houses) determine mu_a and mu_b to about +-0.05. `RadonPrior.make(mu_sd=1e4)`
reproduces the seed's literal choice.

Both parametrizations sample the unconstrained vector

    x = [mu_a, log sigma_a, mu_b, log sigma_b, log eps, z_a (C), z_b (C)]

with the Jacobian log sigma of each scale's exp transform, and z = (a, b) (centered) or
z = (a_raw, b_raw) with a = mu_a + sigma_a * a_raw, b = mu_b + sigma_b * b_raw
(non-centered). Densities keep their normalizing constants, so that

    log p_centered(mu, log sigma, a, b) = log p_noncentered(mu, log sigma, a_raw, b_raw)
                                          - C (log sigma_a + log sigma_b)

(the Jacobian of a = mu_a + sigma_a a_raw and its b twin). Few houses per county leave
sigma_b weakly identified: as sigma_b -> 0 the b_c are pinned to mu_b, the centered
posterior of (log sigma_b, b) is a funnel, and the centered sampler diverges there
(seed 003; Betancourt & Girolami 2015), while the non-centered one does not.

`RadonRegression` is a sampling target for `sampler.run` like `model.NormalNormal`: a
frozen dataclass with `logdensity(position, data, prior)` for one chain and
`live(data)`; padded houses (mask 0) and padded counties (county_mask 0) contribute
nothing and never move.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from . import diagnostics, sampler
from .model import PARAMETRIZATIONS
from .table import Table

__all__ = [
    "RadonData", "RadonPrior", "RadonRegression", "RadonFit", "load_radon", "synthetic_radon",
    "fit_radon", "constrain", "HYPER_NAMES", "N_HYPER",
]

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_LOG_2_OVER_PI = math.log(2.0 / math.pi)
HYPER_NAMES = ("mu_a", "sigma_a", "mu_b", "sigma_b", "eps")
N_HYPER = len(HYPER_NAMES)


class RadonData(NamedTuple):
    """Arrays of one radon dataset (a float array first: `sampler.run` reads the dtype of
    the first leaf for its runtime arguments).

    log_radon, floor, mask: (N,) floats; county: (N,) int32 indices into 0..C-1;
    county_mask: (C,) floats, 1 for counties in the model (0 for padding).
    """

    log_radon: np.ndarray
    floor: np.ndarray
    county: np.ndarray
    mask: np.ndarray
    county_mask: np.ndarray

    @property
    def n_counties(self) -> int:
        return int(np.asarray(self.county_mask).shape[-1])

    @property
    def n_obs(self) -> int:
        return int(np.asarray(self.mask).sum())


class RadonPrior(NamedTuple):
    """mu_a, mu_b ~ Normal(0, mu_sd); sigma_a, sigma_b, eps ~ HalfCauchy(scale)."""

    mu_sd: np.ndarray
    scale: np.ndarray

    @classmethod
    def make(cls, mu_sd: float = 100.0, scale: float = 5.0) -> "RadonPrior":
        if not (mu_sd > 0 and scale > 0 and math.isfinite(mu_sd) and math.isfinite(scale)):
            raise ValueError(f"prior: mu_sd and scale must be finite and > 0, got {mu_sd}, {scale}")
        return cls(np.float64(mu_sd), np.float64(scale))


def _make_data(log_radon, floor, county, n_counties: int, dtype=np.float64) -> RadonData:
    log_radon = np.asarray(log_radon, dtype)
    floor = np.asarray(floor, dtype)
    county = np.asarray(county, np.int32)
    if not (log_radon.shape == floor.shape == county.shape) or log_radon.ndim != 1:
        raise ValueError("data: log_radon, floor and county must be 1-D arrays of equal length")
    if not np.all(np.isfinite(log_radon)) or not np.all(np.isfinite(floor)):
        raise ValueError("data: log_radon and floor must be finite")
    if county.size and (county.min() < 0 or county.max() >= n_counties):
        raise ValueError(f"data.county: indices must lie in 0..{n_counties - 1}")
    return RadonData(log_radon, floor, county, np.ones(log_radon.shape, dtype), np.ones(n_counties, dtype))


def load_radon(path) -> tuple[RadonData, list[str]]:
    """Read seed 003's radon.csv (columns county, floor, log_radon; 919 houses, 85 counties).

    Counties are numbered in order of first appearance (the seed's `county_code`). Returns
    (data, county names). Uses only the standard library.
    """
    import csv

    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"county", "floor", "log_radon"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing column(s) {sorted(missing)}")
        rows = list(reader)
    names: dict[str, int] = {}
    county = [names.setdefault(r["county"].strip(), len(names)) for r in rows]
    try:
        floor = [float(r["floor"]) for r in rows]
        y = [float(r["log_radon"]) for r in rows]
    except ValueError as exc:
        raise ValueError(f"{path}: non-numeric floor or log_radon ({exc})") from None
    return _make_data(y, floor, county, len(names)), list(names)


def synthetic_radon(n_counties: int = 85, seed: int = 0, mu_a: float = 1.5, sigma_a: float = 0.35,
                    mu_b: float = -0.65, sigma_b: float = 0.3, eps: float = 0.75,
                    p_first_floor: float = 0.17) -> tuple[RadonData, dict]:
    """Radon-like data from known values (defaults near Gelman & Hill's estimates).

    County sizes are lognormal like Minnesota's (median about 5 houses, a long right
    tail), each house is on the first floor with probability `p_first_floor` (153 of 919
    in the real data). Returns (data, truth) with truth holding the hyperparameters and
    the county a, b.
    """
    rng = np.random.default_rng(seed)
    sizes = np.maximum(1, np.round(rng.lognormal(1.6, 1.0, n_counties))).astype(int)
    county = np.repeat(np.arange(n_counties), sizes)
    floor = (rng.uniform(size=county.size) < p_first_floor).astype(float)
    a = rng.normal(mu_a, sigma_a, n_counties)
    b = rng.normal(mu_b, sigma_b, n_counties)
    y = rng.normal(a[county] + b[county] * floor, eps)
    truth = {"mu_a": mu_a, "sigma_a": sigma_a, "mu_b": mu_b, "sigma_b": sigma_b, "eps": eps, "a": a, "b": b}
    return _make_data(y, floor, county, n_counties), truth


# ------------------------------------------------------------------------ the target


def _normal_logpdf(x, loc, inv_scale, log_scale):
    """log Normal(x | loc, scale) from 1/scale and log scale."""
    # Times 1/scale, never divided by a scale exp(log s): XLA rewrites a / exp(b) as
    # a * exp(-b) only where its simplifier sees the pattern, which depends on the program
    # around it (one device, or shard_map over several), so the draws depended on the
    # device split (model.logdensity_centered, tests/test_devices.py).
    z = (x - loc) * inv_scale
    return -0.5 * z * z - log_scale - _HALF_LOG_2PI


def _half_cauchy_log_scale(log_s, scale):
    """log HalfCauchy(exp(log_s) | scale) + log_s: the density of log s (Jacobian included)."""
    r = jnp.exp(log_s) / scale
    return _LOG_2_OVER_PI - jnp.log(scale) - jnp.log1p(r * r) + log_s


def _split(position, n_counties: int):
    h = position[:N_HYPER]
    za = position[N_HYPER:N_HYPER + n_counties]
    zb = position[N_HYPER + n_counties:N_HYPER + 2 * n_counties]
    return h, za, zb


def logdensity(position, data: RadonData, prior: RadonPrior, parametrization: str):
    """log p(x, y) of the unconstrained position x (module docstring), constants included."""
    C = data.county_mask.shape[-1]
    h, za, zb = _split(position, C)
    mu_a, ls_a, mu_b, ls_b, ls_e = h[0], h[1], h[2], h[3], h[4]
    # Used by the non-centered branch only; computed here all the same, since moving them
    # into it changes XLA's fusions and so the draws' last bits (measured in session 11).
    s_a, s_b = jnp.exp(ls_a), jnp.exp(ls_b)
    log_mu_sd = jnp.log(prior.mu_sd)
    inv_mu_sd = 1.0 / prior.mu_sd
    lp = _normal_logpdf(mu_a, 0.0, inv_mu_sd, log_mu_sd) + _normal_logpdf(mu_b, 0.0, inv_mu_sd, log_mu_sd)
    lp = lp + sum(_half_cauchy_log_scale(ls, prior.scale) for ls in (ls_a, ls_b, ls_e))
    cm = data.county_mask
    if parametrization == "centered":
        a, b = za, zb
        lp = lp + jnp.sum(cm * (_normal_logpdf(a, mu_a, jnp.exp(-ls_a), ls_a)
                                + _normal_logpdf(b, mu_b, jnp.exp(-ls_b), ls_b)))
    elif parametrization == "noncentered":
        a, b = mu_a + s_a * za, mu_b + s_b * zb
        lp = lp + jnp.sum(cm * (_normal_logpdf(za, 0.0, 1.0, 0.0) + _normal_logpdf(zb, 0.0, 1.0, 0.0)))
    else:
        raise ValueError(f"parametrization: expected one of {PARAMETRIZATIONS}, got {parametrization!r}")
    mean = a[data.county] + b[data.county] * data.floor
    return lp + jnp.sum(data.mask * _normal_logpdf(data.log_radon, mean, jnp.exp(-ls_e), ls_e))


@dataclass(frozen=True)
class RadonRegression:
    """Sampling target of the radon regression in one parametrization (see module docstring)."""

    parametrization: str = "noncentered"

    def __post_init__(self):
        if self.parametrization not in PARAMETRIZATIONS:
            raise ValueError(f"parametrization: expected one of {PARAMETRIZATIONS}, got {self.parametrization!r}")

    def logdensity(self, position, data, prior):
        return logdensity(position, data, prior, self.parametrization)

    def live(self, data):
        cm = data.county_mask
        return jnp.concatenate([jnp.ones(cm.shape[:-1] + (N_HYPER,), cm.dtype), cm, cm], axis=-1)


def constrain(position, parametrization: str, n_counties: int) -> dict:
    """Positions (..., 5 + 2C) -> dict of mu_a, sigma_a, mu_b, sigma_b, eps (...), a, b (..., C)."""
    position = np.asarray(position)
    h = position[..., :N_HYPER]
    za = position[..., N_HYPER:N_HYPER + n_counties]
    zb = position[..., N_HYPER + n_counties:N_HYPER + 2 * n_counties]
    out = {"mu_a": h[..., 0], "sigma_a": np.exp(h[..., 1]), "mu_b": h[..., 2],
           "sigma_b": np.exp(h[..., 3]), "eps": np.exp(h[..., 4])}
    if parametrization == "centered":
        out["a"], out["b"] = za, zb
    else:
        out["a"] = out["mu_a"][..., None] + out["sigma_a"][..., None] * za
        out["b"] = out["mu_b"][..., None] + out["sigma_b"][..., None] * zb
    return out


def unconstrain(values: dict, parametrization: str) -> np.ndarray:
    """Inverse of `constrain` for one point (or a batch along leading axes)."""
    h = np.stack([np.asarray(values["mu_a"]), np.log(values["sigma_a"]), np.asarray(values["mu_b"]),
                  np.log(values["sigma_b"]), np.log(values["eps"])], axis=-1)
    a, b = np.asarray(values["a"]), np.asarray(values["b"])
    if parametrization == "noncentered":
        a = (a - np.asarray(values["mu_a"])[..., None]) / np.asarray(values["sigma_a"])[..., None]
        b = (b - np.asarray(values["mu_b"])[..., None]) / np.asarray(values["sigma_b"])[..., None]
    return np.concatenate([h, a, b], axis=-1)


# ------------------------------------------------------------------------------- fits


@dataclass
class RadonFit:
    """Draws (chains, draws) of the hyperparameters and (chains, draws, C) of a and b,
    sampler statistics after warmup (diverging, tree_depth, n_steps, accept_stat, step_size)
    and the divergence positions (unconstrained, (chains, draws, 5 + 2C))."""

    draws: dict
    stats: dict
    divergence_position: np.ndarray
    step_size: np.ndarray
    parametrization: str
    timing: dict
    county_names: list = field(default_factory=list)

    @property
    def divergences(self) -> int:
        return int(self.stats["diverging"].sum())

    def scalars(self) -> tuple[list[str], np.ndarray]:
        """(labels, (P, chains, draws)): the five hyperparameters, then a[c] and b[c]."""
        C = self.draws["a"].shape[-1]
        names = self.county_names or [str(c) for c in range(C)]
        labels = list(HYPER_NAMES) + [f"a[{n}]" for n in names] + [f"b[{n}]" for n in names]
        x = np.concatenate([np.stack([self.draws[k] for k in HYPER_NAMES]),
                            np.moveaxis(self.draws["a"], -1, 0), np.moveaxis(self.draws["b"], -1, 0)])
        return labels, x

    def summary(self) -> Table:
        """mean, sd, q5/q50/q95, mcse_mean, ess_bulk, ess_tail, r_hat of every scalar."""
        labels, x = self.scalars()
        s = diagnostics.summarize(jnp.asarray(x))
        cols = ("mean", "sd", "q5", "q50", "q95", "mcse_mean", "ess_bulk", "ess_tail", "r_hat")
        return Table(labels, {k: np.asarray(s[k]) for k in cols})


def fit_radon(data: RadonData, parametrization: str = "noncentered", kernel="nuts", chains: int = 4,
              warmup: int = 1000, draws: int = 1000, target_accept: float = 0.8, seed: int = 0,
              prior: RadonPrior | None = None, county_names=None) -> RadonFit:
    """Fit the radon regression with `sampler.run` (one model, `chains` chains, model id 0)."""
    prior = RadonPrior.make() if prior is None else prior
    dtype = np.asarray(data.log_radon).dtype
    config = sampler.RunConfig(
        target=RadonRegression(parametrization), kernel=sampler.resolve_kernel(kernel),
        chains=int(chains), warmup=int(warmup), draws=int(draws), target_accept=float(target_accept),
    )
    batch = RadonData(*(np.asarray(a)[None] for a in data))
    prior_b = RadonPrior(*(np.asarray(a, dtype)[None] for a in prior))
    out, timing = sampler.run(sampler.model_keys(seed, [0]), batch, prior_b, config)
    C = data.n_counties
    w = config.warmup
    stats = {k: out[k][0][:, w:] for k in ("diverging", "tree_depth", "n_steps", "accept_stat", "step_size")}
    return RadonFit(
        draws=constrain(out["position"][0], parametrization, C), stats=stats,
        divergence_position=out["divergence_position"][0], step_size=out["final_step_size"][0],
        parametrization=parametrization, timing=timing, county_names=list(county_names or []),
    )
