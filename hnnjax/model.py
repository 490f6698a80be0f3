"""The hierarchical normal-normal model: priors, log densities, constraining map.

    y_j ~ Normal(theta_j, sigma_j),  sigma_j known          (j = 1..J)
    theta_j ~ Normal(mu, tau)
    mu ~ Normal(loc, scale) or flat;  tau ~ HalfCauchy(s), HalfNormal(s) or flat

(BDA3 section 5.4-5.5.) Both parametrizations live on one flat unconstrained position

    x = [mu, log tau, z_1, ..., z_Jpad]

with z = theta (centered) or z = eta, theta = mu + tau * eta (non-centered). The change of
variables tau = exp(log tau) adds the Jacobian term log tau. Densities include their
normalizing constants, so that log p_centered(mu, log tau, theta) = log p_noncentered(mu,
log tau, eta) - J log tau exactly (the Jacobian of theta = mu + tau * eta).

Everything here is for one chain of one model; `sampler.py` applies vmap and jit. Priors
are arrays (the prior *kind* is an integer code, not a Python branch), so one compiled
program serves every prior as well as every dataset of the same padded shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from .data import Data

__all__ = [
    "Normal", "Flat", "HalfCauchy", "HalfNormal", "Prior", "PARAMETRIZATIONS",
    "logdensity", "logdensity_centered", "logdensity_noncentered", "constrain",
    "unconstrain", "position_mask", "NormalNormal", "as_prior", "as_priors", "stack_priors",
]

PARAMETRIZATIONS = ("noncentered", "centered")
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)

# Integer codes of the prior families (kept in arrays so priors are jit arguments).
MU_FLAT, MU_NORMAL = 0, 1
TAU_FLAT, TAU_HALFCAUCHY, TAU_HALFNORMAL = 0, 1, 2


@dataclass(frozen=True)
class Normal:
    """mu ~ Normal(loc, scale)."""

    loc: float = 0.0
    scale: float = 5.0


@dataclass(frozen=True)
class Flat:
    """An improper uniform prior (BDA3's p(mu, tau) proportional to 1)."""


@dataclass(frozen=True)
class HalfCauchy:
    """tau ~ HalfCauchy(scale): density 2 / (pi * scale * (1 + (tau/scale)^2)) on tau > 0."""

    scale: float = 5.0


@dataclass(frozen=True)
class HalfNormal:
    """tau ~ HalfNormal(scale): density 2 * Normal(tau | 0, scale) on tau > 0."""

    scale: float = 5.0


class Prior(NamedTuple):
    """Prior on (mu, tau) as arrays: scalars for one model, shape (M,) for a batch.

    Build with `Prior.make(mu=Normal(0, 5), tau=HalfCauchy(5))` (the default),
    `Prior.make(mu=Flat(), tau=Flat())` (BDA3), or `Prior.make(tau=HalfNormal(2))`.
    """

    mu_kind: np.ndarray
    mu_loc: np.ndarray
    mu_scale: np.ndarray
    tau_kind: np.ndarray
    tau_scale: np.ndarray

    @classmethod
    def make(cls, mu=None, tau=None) -> "Prior":
        mu = Normal() if mu is None else mu
        tau = HalfCauchy() if tau is None else tau
        if isinstance(mu, Normal):
            if not (math.isfinite(mu.loc) and math.isfinite(mu.scale)):
                raise ValueError(f"prior.mu: loc and scale must be finite, got {mu}")
            if mu.scale <= 0:
                raise ValueError(f"prior.mu.scale: must be > 0, got {mu.scale}")
            mk, ml, ms = MU_NORMAL, float(mu.loc), float(mu.scale)
        elif isinstance(mu, Flat):
            mk, ml, ms = MU_FLAT, 0.0, 1.0
        else:
            raise ValueError(f"prior.mu: expected Normal(loc, scale) or Flat(), got {mu!r}")
        if isinstance(tau, (HalfCauchy, HalfNormal)):
            if not (math.isfinite(tau.scale) and tau.scale > 0):
                raise ValueError(f"prior.tau.scale: must be finite and > 0, got {tau.scale}")
            tk = TAU_HALFCAUCHY if isinstance(tau, HalfCauchy) else TAU_HALFNORMAL
            ts = float(tau.scale)
        elif isinstance(tau, Flat):
            tk, ts = TAU_FLAT, 1.0
        else:
            raise ValueError(
                f"prior.tau: expected HalfCauchy(scale), HalfNormal(scale) or Flat(), got {tau!r}"
            )
        return cls(np.int32(mk), np.float64(ml), np.float64(ms), np.int32(tk), np.float64(ts))

    @classmethod
    def default(cls) -> "Prior":
        """mu ~ Normal(0, 5), tau ~ HalfCauchy(5)."""
        return cls.make()

    @classmethod
    def flat(cls) -> "Prior":
        """BDA3's p(mu, tau) proportional to 1."""
        return cls.make(mu=Flat(), tau=Flat())

    def describe(self) -> str:
        mk, tk = int(np.asarray(self.mu_kind)), int(np.asarray(self.tau_kind))
        mu = "flat" if mk == MU_FLAT else f"Normal({float(self.mu_loc):g}, {float(self.mu_scale):g})"
        tau = {TAU_FLAT: "flat", TAU_HALFCAUCHY: "HalfCauchy", TAU_HALFNORMAL: "HalfNormal"}[tk]
        if tk != TAU_FLAT:
            tau += f"({float(self.tau_scale):g})"
        return f"mu ~ {mu}, tau ~ {tau}"


def as_prior(prior) -> Prior:
    """Accept None (the default prior), a `Prior`, or the string "flat"."""
    if prior is None:
        return Prior.default()
    if isinstance(prior, Prior):
        return prior
    if prior == "flat":
        return Prior.flat()
    raise ValueError(f"prior: expected a hnnjax.Prior, None or 'flat', got {prior!r}")


def as_priors(prior, n: int) -> list[Prior]:
    """One prior per model: a sequence of n priors, or one prior (`as_prior`) for all n."""
    if isinstance(prior, (list, tuple)) and not isinstance(prior, Prior):
        if len(prior) != n:
            raise ValueError(f"prior: length mismatch, {n} datasets but {len(prior)} priors")
        return [as_prior(p) for p in prior]
    return [as_prior(prior)] * n


def stack_priors(priors, dtype) -> Prior:
    """One `Prior` with a leading model axis: the float fields in `dtype`, the kinds int32."""
    def field(values):
        a = np.stack([np.asarray(v) for v in values])
        return a.astype(dtype if a.dtype.kind == "f" else np.int32)

    return Prior(*(field(values) for values in zip(*priors)))


def _log_prior_mu(mu, prior: Prior):
    z = (mu - prior.mu_loc) / prior.mu_scale
    normal = -0.5 * z * z - jnp.log(prior.mu_scale) - _HALF_LOG_2PI
    return jnp.where(prior.mu_kind == MU_NORMAL, normal, jnp.zeros_like(mu))


def _log_prior_tau(tau, prior: Prior):
    r = tau / prior.tau_scale
    log_scale = jnp.log(prior.tau_scale)
    half_cauchy = math.log(2.0 / math.pi) - log_scale - jnp.log1p(r * r)
    half_normal = math.log(2.0) - _HALF_LOG_2PI - log_scale - 0.5 * r * r
    lp = jnp.where(prior.tau_kind == TAU_HALFCAUCHY, half_cauchy, jnp.zeros_like(tau))
    return jnp.where(prior.tau_kind == TAU_HALFNORMAL, half_normal, lp)


def _log_likelihood(theta, data: Data):
    z = (data.y - theta) / data.sigma
    return jnp.sum(data.mask * (-0.5 * z * z - jnp.log(data.sigma) - _HALF_LOG_2PI))


def logdensity_noncentered(position, data: Data, prior: Prior):
    """log p(mu, log tau, eta | y) up to the evidence, with theta = mu + tau * eta."""
    mu, log_tau, eta = position[0], position[1], position[2:]
    tau = jnp.exp(log_tau)
    lp = _log_prior_mu(mu, prior) + _log_prior_tau(tau, prior) + log_tau
    lp = lp + jnp.sum(data.mask * (-0.5 * eta * eta - _HALF_LOG_2PI))
    return lp + _log_likelihood(mu + tau * eta, data)


def logdensity_centered(position, data: Data, prior: Prior):
    """log p(mu, log tau, theta | y) up to the evidence."""
    mu, log_tau, theta = position[0], position[1], position[2:]
    tau = jnp.exp(log_tau)
    lp = _log_prior_mu(mu, prior) + _log_prior_tau(tau, prior) + log_tau
    # Times exp(-log tau), not divided by tau: XLA rewrites a / exp(b) as a * exp(-b) where
    # its simplifier sees the pattern, and whether it sees it depends on the program around
    # (one device, or shard_map over several), so a division made the draws depend on the
    # device split (tests/test_devices.py). A product leaves nothing to rewrite.
    z = (theta - mu) * jnp.exp(-log_tau)
    lp = lp + jnp.sum(data.mask * (-0.5 * z * z - log_tau - _HALF_LOG_2PI))
    return lp + _log_likelihood(theta, data)


def logdensity(parametrization: str):
    """The log density function `f(position, data, prior)` of a parametrization."""
    if parametrization == "noncentered":
        return logdensity_noncentered
    if parametrization == "centered":
        return logdensity_centered
    raise ValueError(
        f"parametrization: expected one of {PARAMETRIZATIONS}, got {parametrization!r}"
    )


def constrain(position, parametrization: str):
    """Map positions (..., 2 + J) to (mu, tau, theta) with shapes (...), (...), (..., J).

    Host only (numpy in and out, not traceable): a fresh process would otherwise compile
    a small program for each of its operations (about 25 ms each).
    """
    position = np.asarray(position)
    mu, log_tau, z = position[..., 0], position[..., 1], position[..., 2:]
    tau = np.exp(log_tau)
    if parametrization == "noncentered":
        theta = mu[..., None] + tau[..., None] * z
    elif parametrization == "centered":
        theta = z
    else:
        raise ValueError(f"parametrization: expected one of {PARAMETRIZATIONS}, got {parametrization!r}")
    return mu, tau, theta


def unconstrain(mu, tau, theta, parametrization: str):
    """Inverse of `constrain`: positions [mu, log tau, theta or eta]."""
    mu = jnp.asarray(mu)
    tau = jnp.asarray(tau)
    theta = jnp.asarray(theta)
    z = theta if parametrization == "centered" else (theta - mu[..., None]) / tau[..., None]
    return jnp.concatenate([mu[..., None], jnp.log(tau)[..., None], z], axis=-1)


@dataclass(frozen=True)
class NormalNormal:
    """The sampling target for the driver: this model in one parametrization.

    A target is a hashable static object with `logdensity(position, data, prior)` and
    `live(data)` (1 for coordinates that move, 0 for padding); `sampler.py` runs any target.
    """

    parametrization: str = "noncentered"

    def __post_init__(self):
        logdensity(self.parametrization)  # validates the name

    def logdensity(self, position, data, prior):
        return logdensity(self.parametrization)(position, data, prior)

    def live(self, data):
        return position_mask(data)


def position_mask(data: Data):
    """1 for the live coordinates of the position (mu, log tau and real groups), 0 for padding."""
    ones = jnp.ones(data.mask.shape[:-1] + (2,), data.mask.dtype)
    return jnp.concatenate([ones, data.mask], axis=-1)
