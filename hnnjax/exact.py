"""The exact posterior of the normal-normal model by one-dimensional quadrature over tau.

Given tau every other unknown is Gaussian (BDA3 section 5.4), so the posterior is a
continuous mixture over tau of Gaussians. With v_j = sigma_j^2 + tau^2 and w_j = 1 / v_j:

* Integrating theta out, y_j | mu, tau ~ Normal(mu, sqrt(v_j)) independently (BDA3 section 5.4),
  which gives `log_marginal_mu_logtau`, the density of (mu, log tau).
* mu | tau, y ~ Normal(mu_hat, sqrt(V_mu)) with precision P = p0 + sum_j w_j and
  mu_hat = (p0 m0 + sum_j w_j y_j) / P, where p0 = 1 / s0^2 and m0 are the precision and
  mean of a Normal(m0, s0) prior on mu, and p0 = 0 for the flat prior (BDA3 eq. 5.20).
* The marginal likelihood of tau is the integral of the Gaussian in mu. Writing
  Q(mu) = sum_j w_j (y_j - mu)^2 + p0 (mu - m0)^2 = Q(mu_hat) + P (mu - mu_hat)^2,

      p(y | tau) = [p0 / 2 pi]^(1/2) (2 pi / P)^(1/2) prod_j (2 pi v_j)^(-1/2) exp(-Q(mu_hat) / 2)

  (the bracket is dropped for the flat prior), so p(tau | y) is proportional to
  p(tau) V_mu^(1/2) prod_j v_j^(-1/2) exp(-Q(mu_hat) / 2). With p0 = 0 this is BDA3 eq. 5.21.
* theta_j | tau, y ~ Normal((1 - B_j) y_j + B_j mu_hat, V_j + B_j^2 V_mu) with the shrinkage
  factor B_j = sigma_j^2 / v_j and V_j = sigma_j^2 tau^2 / v_j (BDA3 section 5.4).

Quadrature runs over u = log tau, where the density is smooth (analytic in a strip around
the real axis) and decays exponentially in both directions: like e^u as u -> -inf (p(tau)
is finite at 0) and like e^{(1 - a) u} as u -> +inf, where p(tau | y) ~ tau^(-a) with

    a = J - 1 + [mu prior is Normal] + {0 flat, 2 HalfCauchy, inf HalfNormal}[tau prior].

The posterior is proper iff a > 1; E[tau^k] is finite iff a > k + 1, and so is the second
moment of mu under a flat mu prior (V_mu grows like tau^2 / J). Moments that do not exist
are reported as inf rather than as whatever a truncated grid would give. The moments of
theta always exist (its conditional mean and variance are bounded in tau).

The grid is composite Gauss-Legendre: equal panels over the u-range where the log density
(and, where they are finite, the log integrands of E[tau] and E[tau^2]) lie within 40 nats
of their maxima. Within a panel the normalized density is represented by its degree-7
Legendre interpolant at the 8 nodes, which the Gauss rule integrates exactly; its
antiderivative gives the tau CDF inside panels, used for tau quantiles and for sampling.

Everything is numpy float64 (plus scipy.special, a dependency of jax) and independent of
jax's x64 flag: this module is the reference the samplers are tested against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from numpy.polynomial import legendre as _leg

from .model import MU_NORMAL, TAU_FLAT, TAU_HALFCAUCHY, TAU_HALFNORMAL, Prior, as_prior

__all__ = ["ExactPosterior", "exact", "log_marginal_mu_logtau", "tail_exponent"]


def ndtr(x):
    """Standard normal cdf (scipy.special, imported on first use: it costs ~0.1 s to import)."""
    from scipy.special import ndtr as f

    return f(x)


def ndtri(p):
    """Standard normal quantile (scipy.special, imported on first use)."""
    from scipy.special import ndtri as f

    return f(p)


_LOG_2PI = math.log(2.0 * math.pi)
_NODES_PER_PANEL = 8
_GL_X, _GL_W = _leg.leggauss(_NODES_PER_PANEL)
# Coefficients-from-values map of the Legendre interpolant at the Gauss nodes.
_GL_INV_VANDER = np.linalg.inv(_leg.legvander(_GL_X, _NODES_PER_PANEL - 1))
_DROP_NATS = 40.0  # e^-40 ~ 4e-18: truncating the tails is invisible in float64
_MAX_ABS_U = 340.0  # exp(2u) must stay finite


# ----------------------------------------------------------------------------- priors


@dataclass(frozen=True)
class _PriorParams:
    """A single model's prior: the kinds as Python values (they select code paths), the
    parameters as floats (or, inside pooling's optimizer loop, traced scalars)."""

    mu_normal: bool
    mu_loc: float
    mu_scale: float
    tau_kind: int
    tau_scale: float

    @property
    def mu_precision(self) -> float:
        return 1.0 / self.mu_scale**2 if self.mu_normal else 0.0


def _prior_params(prior) -> _PriorParams:
    p = as_prior(prior)
    arrays = [np.asarray(a) for a in p]
    if any(a.ndim != 0 for a in arrays):
        raise ValueError(
            "prior: expected a single model's prior (scalar fields), got a batch "
            f"with shapes {[a.shape for a in arrays]}"
        )
    mk, ml, ms, tk, ts = (a.item() for a in arrays)
    tk = int(tk)
    if tk not in (TAU_FLAT, TAU_HALFCAUCHY, TAU_HALFNORMAL):
        raise ValueError(f"prior.tau_kind: unknown code {tk}")
    return _PriorParams(int(mk) == MU_NORMAL, float(ml), float(ms), tk, float(ts))


def _log_prior_tau(tau, pp: _PriorParams, xp=np):
    """log p(tau) with its normalizing constant (0 for the flat prior)."""
    if pp.tau_kind == TAU_HALFCAUCHY:
        r = tau / pp.tau_scale
        return math.log(2.0 / math.pi) - xp.log(pp.tau_scale) - xp.log1p(r * r)
    if pp.tau_kind == TAU_HALFNORMAL:
        r = tau / pp.tau_scale
        return math.log(2.0) - 0.5 * _LOG_2PI - xp.log(pp.tau_scale) - 0.5 * r * r
    return 0.0 * tau


def _log_prior_mu(mu, pp: _PriorParams, xp=np):
    if not pp.mu_normal:
        return 0.0 * mu
    z = (mu - pp.mu_loc) / pp.mu_scale
    return -0.5 * z * z - xp.log(pp.mu_scale) - 0.5 * _LOG_2PI


def tail_exponent(n_groups: int, prior=None) -> float:
    """The a in p(tau | y) ~ tau^(-a) as tau -> infinity (inf for a HalfNormal tau prior).

    Each group contributes tau^-1 through its Normal(y_j | mu, sqrt(sigma_j^2 + tau^2))
    factor; integrating mu over a flat prior gives back one power (V_mu ~ tau^2 / J), a
    Normal prior on mu does not; a HalfCauchy prior contributes tau^-2.
    """
    pp = _prior_params(prior)
    if pp.tau_kind == TAU_HALFNORMAL:
        return math.inf
    a = n_groups - 1 + (1 if pp.mu_normal else 0)
    return float(a + (2 if pp.tau_kind == TAU_HALFCAUCHY else 0))


def _check_proper(n_groups: int, prior) -> float:
    a = tail_exponent(n_groups, prior)
    if a <= 1:
        pp = _prior_params(prior)
        mu_desc = "a Normal prior on mu" if pp.mu_normal else "a flat prior on mu"
        raise ValueError(
            f"prior: the posterior is improper for J = {n_groups} group(s) with a flat prior "
            f"on tau and {mu_desc}: p(tau | y) decays only like tau^(-{a:g}) as tau -> "
            "infinity, which is not integrable (BDA3 section 5.4 needs J >= 3 for the "
            "flat prior). Use a proper prior on tau (HalfCauchy or HalfNormal)"
            + ("" if pp.mu_normal else " or a Normal prior on mu")
            + ", or more groups."
        )
    return a


# ------------------------------------------------------------------- data and densities


def _as_arrays(data) -> tuple[np.ndarray, np.ndarray]:
    """(y, sigma) float64 arrays from a GroupData, a padded Data (mask applied) or similar."""
    try:
        y = np.array(data.y, dtype=np.float64)
        sigma = np.array(data.sigma, dtype=np.float64)
    except AttributeError:
        raise ValueError(
            f"data: expected an object with .y and .sigma arrays, got {type(data).__name__}"
        ) from None
    mask = getattr(data, "mask", None)
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != y.shape:
            raise ValueError(f"data.mask: shape {mask.shape} does not match y {y.shape}")
        keep = mask > 0
        y, sigma = y[keep], sigma[keep]
    if y.ndim != 1 or y.shape != sigma.shape or y.size == 0:
        raise ValueError(
            f"data: expected one model's 1-D y and sigma of equal length, got shapes "
            f"{y.shape} and {sigma.shape}"
        )
    if not (np.all(np.isfinite(y)) and np.all(np.isfinite(sigma)) and np.all(sigma > 0)):
        raise ValueError("data: y must be finite and sigma finite and > 0")
    y.setflags(write=False)
    sigma.setflags(write=False)
    return y, sigma


def _log_lik_mu_tau(mu, log_tau, y, sigma, xp=np):
    """sum_j log Normal(y_j | mu, sqrt(sigma_j^2 + tau^2)): theta integrated out (BDA3 section 5.4).

    `mu` and `log_tau` broadcast together; the group axis is appended last.
    """
    mu = xp.asarray(mu)[..., None]
    v = sigma**2 + xp.exp(2.0 * xp.asarray(log_tau))[..., None]
    r = y - mu
    return xp.sum(-0.5 * (_LOG_2PI + xp.log(v)) - 0.5 * r * r / v, axis=-1)


def _log_marginal(mu, log_tau, y, sigma, pp: _PriorParams, xp=np):
    """`log_marginal_mu_logtau` on arrays, for numpy (xp=np) or jax.numpy (xp=jnp)."""
    lp = _log_prior_mu(mu, pp, xp) + _log_prior_tau(xp.exp(log_tau), pp, xp) + log_tau
    return lp + _log_lik_mu_tau(mu, log_tau, y, sigma, xp)


def log_marginal_mu_logtau(mu, log_tau, data, prior=None) -> np.ndarray:
    """log p(mu, log tau, y): the marginal posterior of (mu, log tau) up to the evidence.

        log p(mu) + log p(tau) + log tau + sum_j log Normal(y_j | mu, sqrt(sigma_j^2 + tau^2))

    theta is integrated out (BDA3 sections 5.4-5.5); `log tau` is the Jacobian of
    tau = exp(log tau). Normalizing constants of the likelihood and of proper priors are
    kept, so under `Prior.flat()` this is seed 002's `logpost` minus (J/2) log(2 pi).
    `mu` and `log_tau` are arrays that broadcast together; the result has their shape.
    """
    y, sigma = _as_arrays(data)
    pp = _prior_params(prior)
    mu = np.asarray(mu, dtype=np.float64)
    log_tau = np.asarray(log_tau, dtype=np.float64)
    return _log_marginal(mu, log_tau, y, sigma, pp)


@dataclass(frozen=True)
class _Conditionals:
    """Per-node Gaussian conditionals given tau, shapes (N,) and (N, J)."""

    log_density: np.ndarray  # log p(u, y) for u = log tau, constants included
    mu_mean: np.ndarray  # mu_hat(tau)
    mu_var: np.ndarray  # V_mu(tau) = 1 / P
    shrink: np.ndarray  # B_j = sigma_j^2 / (sigma_j^2 + tau^2)
    theta_mean: np.ndarray  # (1 - B_j) y_j + B_j mu_hat
    theta_var: np.ndarray  # V_j + B_j^2 V_mu
    theta_cond_var: np.ndarray  # V_j = var(theta_j | mu, tau, y)


def _conditionals(u: np.ndarray, y, sigma, pp: _PriorParams) -> _Conditionals:
    """The closed-form pieces of the posterior given tau = exp(u) (module docstring)."""
    u = np.asarray(u, dtype=np.float64)
    tau2 = np.exp(2.0 * u)[:, None]
    s2 = sigma**2
    v = s2 + tau2
    w = 1.0 / v
    p0 = pp.mu_precision
    prec = w.sum(axis=1) + p0
    mu_hat = ((w * y).sum(axis=1) + p0 * pp.mu_loc) / prec
    resid = y - mu_hat[:, None]
    q = (w * resid * resid).sum(axis=1) + p0 * (mu_hat - pp.mu_loc) ** 2
    log_ml = -0.5 * (_LOG_2PI + np.log(v)).sum(axis=1) + 0.5 * (_LOG_2PI - np.log(prec)) - 0.5 * q
    if pp.mu_normal:
        log_ml = log_ml + 0.5 * (np.log(p0) - _LOG_2PI)
    log_density = log_ml + _log_prior_tau(np.exp(u), pp) + u
    shrink = s2 * w
    # (1 - B_j) written as tau^2 w_j: no cancellation when tau << sigma_j.
    theta_mean = tau2 * w * y + shrink * mu_hat[:, None]
    cond_var = s2 * tau2 * w
    mu_var = 1.0 / prec
    theta_var = cond_var + shrink**2 * mu_var[:, None]
    return _Conditionals(log_density, mu_hat, mu_var, shrink, theta_mean, theta_var, cond_var)


# ----------------------------------------------------------------------- grid selection


def _log_density_u(u: np.ndarray, y, sigma, pp: _PriorParams) -> np.ndarray:
    """log p(u, y), in row chunks so that a long scan with many groups stays small in memory."""
    rows = max(1, 2_000_000 // y.size)
    return np.concatenate([_conditionals(u[i:i + rows], y, sigma, pp).log_density
                           for i in range(0, u.size, rows)])


def _moment_powers(a: float) -> tuple[int, ...]:
    """Powers k of tau whose integrands tau^k p(u) are finite, so the grid must resolve them.

    k = 2 also covers E[V_mu] (about tau^2 / J) in sd(mu) under a flat mu prior.
    """
    ks = [0]
    if a > 2:
        ks.append(1)
    if a > 3:
        ks.append(2)
    return tuple(ks)


def _above_threshold(u: np.ndarray, log_p: np.ndarray, ks) -> tuple[float, float, bool, bool]:
    """Outermost u where any tau^k p(u) is within `_DROP_NATS` of its maximum.

    Also says whether the lowest / highest u is itself still above a looser threshold,
    meaning the scan must be extended on that side.
    """
    lo, hi = np.inf, -np.inf
    extend_lo = extend_hi = False
    for k in ks:
        g = log_p + k * u
        top = g.max()
        idx = np.flatnonzero(g > top - _DROP_NATS)
        lo, hi = min(lo, u[idx[0]]), max(hi, u[idx[-1]])
        extend_lo |= bool(g[0] > top - _DROP_NATS - 5.0)
        extend_hi |= bool(g[-1] > top - _DROP_NATS - 5.0)
    return lo, hi, extend_lo, extend_hi


def _support(y, sigma, pp: _PriorParams, ks) -> tuple[float, float]:
    """A u-interval outside which every resolved integrand is below e^-40 of its peak.

    A scan with a step small enough not to step over the peak (the Fisher information for
    u is at most 2J, so the posterior sd of u is at least about 1 / sqrt(2J)), extended in
    chunks of 20 until the outermost points are well below the peak. In the tails the log
    density is asymptotically linear in u, so the extension terminates.
    """
    step = min(0.05, 0.5 / math.sqrt(2.0 * y.size))
    centre = math.log(math.sqrt(np.mean(sigma**2)))
    lo, hi = centre - 20.0, centre + 20.0
    for _ in range(40):
        u = np.arange(lo, hi + step / 2, step)
        log_p = _log_density_u(u, y, sigma, pp)
        a_lo, a_hi, ext_lo, ext_hi = _above_threshold(u, log_p, ks)
        if not (ext_lo or ext_hi):
            return a_lo - step, a_hi + step
        if ext_lo:
            lo = max(lo - 20.0, -_MAX_ABS_U)
        if ext_hi:
            hi = min(hi + 20.0, _MAX_ABS_U)
    raise RuntimeError("exact: could not bracket the posterior of log tau")  # pragma: no cover


def _panels(lo: float, hi: float, n_panels: int):
    edges = np.linspace(lo, hi, n_panels + 1)
    half = 0.5 * (hi - lo) / n_panels
    nodes = (edges[:-1, None] + half * (_GL_X + 1.0)).ravel()
    qweights = np.tile(_GL_W * half, n_panels)
    return edges, nodes, qweights


# ------------------------------------------------------------------ the posterior object


def _mixture_cdf(x, means, sds, weights, upper: bool = False, chunk: int = 2048):
    """sum_n weights_n Phi((x - means_n) / sds_n) for x of shape (T,).

    Components have shape (N, T) or (N, 1); x is processed in chunks to bound memory.
    """
    x = np.asarray(x, dtype=np.float64)
    if means.shape[1] != 1 or x.size <= chunk:
        z = (x - means) / sds
        return weights @ ndtr(-z if upper else z)
    return np.concatenate([_mixture_cdf(x[i:i + chunk], means, sds, weights, upper)
                           for i in range(0, x.size, chunk)])


def _bisect(f: Callable, lo: np.ndarray, hi: np.ndarray, target: np.ndarray, rtol: float):
    """Vectorized bisection for f(x) = target with f increasing and f(lo) <= target <= f(hi)."""
    for _ in range(400):
        width = hi - lo
        if np.all(width <= rtol * np.maximum(1.0, np.maximum(np.abs(lo), np.abs(hi)))):
            break
        mid = 0.5 * (lo + hi)
        below = f(mid) < target
        lo = np.where(below, mid, lo)
        hi = np.where(below, hi, mid)
    return 0.5 * (lo + hi)


@dataclass(frozen=True, eq=False)
class ExactPosterior:
    """The exact posterior of (mu, tau, theta) as a quadrature grid over u = log tau.

    Attributes
    ----------
    y, sigma : the data (J,).
    prior : the `Prior` used.
    log_tau : (N,) quadrature nodes in u = log tau.
    weights : (N,) normalized weights: E[g(tau)] = sum(weights * g(exp(log_tau))).
    edges : (n_panels + 1,) panel boundaries in u; `cdf_edges` the tau CDF there.
    mu_mean, mu_var : (N,) mean and variance of mu | tau, y at the nodes.
    theta_mean, theta_var : (N, J) mean and variance of theta_j | tau, y at the nodes.
    shrink : (N, J) shrinkage factors B_j = sigma_j^2 / (sigma_j^2 + tau^2).
    theta_cond_var : (N, J) var(theta_j | mu, tau, y) = sigma_j^2 tau^2 / (sigma_j^2 + tau^2).
    log_evidence : log of the integral of p(mu, tau, theta, y) (constants included; for an
        improper prior it is relative to the unnormalized flat density 1).
    tail_exponent : a with p(tau | y) ~ tau^(-a) for large tau (inf for HalfNormal).
    mean, sd : dicts with keys "mu", "tau" (floats) and "theta" ((J,) arrays). Moments that
        do not exist are inf (E[tau] needs a > 2; sd(tau), and sd(mu) under a flat mu
        prior, need a > 3).
    """

    y: np.ndarray
    sigma: np.ndarray
    prior: Prior
    log_tau: np.ndarray
    weights: np.ndarray
    edges: np.ndarray
    cdf_edges: np.ndarray
    mu_mean: np.ndarray
    mu_var: np.ndarray
    theta_mean: np.ndarray
    theta_var: np.ndarray
    shrink: np.ndarray
    theta_cond_var: np.ndarray
    log_evidence: float
    tail_exponent: float
    _cdf_coef: np.ndarray = field(repr=False)  # (9, n_panels) Legendre antiderivatives
    mean: dict = field(default_factory=dict)
    sd: dict = field(default_factory=dict)

    @property
    def J(self) -> int:
        return int(self.y.size)

    @property
    def tau(self) -> np.ndarray:
        return np.exp(self.log_tau)

    def logpdf_log_tau(self, u) -> np.ndarray:
        """log p(log tau = u | y), normalized (evaluated directly, not interpolated)."""
        u = np.asarray(u, dtype=np.float64)
        c = _conditionals(u.ravel(), self.y, self.sigma, _prior_params(self.prior))
        return (c.log_density - self.log_evidence).reshape(u.shape)

    def expect(self, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """E[fn(tau) | y] for a vectorized fn mapping (N,) taus to (N, ...) values."""
        vals = np.asarray(fn(self.tau), dtype=np.float64)
        return np.tensordot(self.weights, vals, axes=(0, 0))

    # --- CDFs and quantiles

    def _components(self, name: str):
        if name == "mu":
            return self.mu_mean[:, None], np.sqrt(self.mu_var)[:, None]
        if name == "theta":
            return self.theta_mean, np.sqrt(self.theta_var)
        raise ValueError(f"name: expected 'mu', 'tau' or 'theta', got {name!r}")

    def _tau_cdf_u(self, u: np.ndarray) -> np.ndarray:
        """P(log tau <= u | y) from the panel interpolants (exact at panel edges)."""
        u = np.asarray(u, dtype=np.float64)
        n_panels = self.edges.size - 1
        h = (self.edges[-1] - self.edges[0]) / n_panels
        i = np.clip(np.floor((u - self.edges[0]) / h).astype(np.int64), 0, n_panels - 1)
        s = np.clip(2.0 * (u - self.edges[i]) / h - 1.0, -1.0, 1.0)
        out = self.cdf_edges[i] + _leg.legval(s, self._cdf_coef[:, i], tensor=False)
        out = np.where(u <= self.edges[0], 0.0, np.where(u >= self.edges[-1], 1.0, out))
        return np.clip(out, 0.0, 1.0)

    def _tau_quantile_u(self, q: np.ndarray) -> np.ndarray:
        """Inverse of `_tau_cdf_u`: locate the panel, then bisect within it."""
        q = np.asarray(q, dtype=np.float64)
        n_panels = self.edges.size - 1
        h = (self.edges[-1] - self.edges[0]) / n_panels
        i = np.clip(np.searchsorted(self.cdf_edges, q, side="right") - 1, 0, n_panels - 1)
        target = q - self.cdf_edges[i]
        coef = self._cdf_coef[:, i]
        s = _bisect(
            lambda s: _leg.legval(s, coef, tensor=False),
            -np.ones_like(q), np.ones_like(q), target, rtol=1e-15,
        )
        return self.edges[i] + (s + 1.0) * 0.5 * h

    def _mixture(self, name: str, x, upper: bool) -> np.ndarray:
        """sum_n w_n Phi(+-(x - m_n) / s_n) for mu (any shape of x) or theta (x against (J,))."""
        means, sds = self._components(name)
        x = np.asarray(x, dtype=np.float64)
        if name == "mu":
            return _mixture_cdf(x.ravel(), means, sds, self.weights, upper).reshape(x.shape)
        xb = np.broadcast_to(x, np.broadcast_shapes(x.shape, (self.J,)))
        flat = xb.reshape(-1, self.J)
        cols = [_mixture_cdf(flat[:, j], means[:, j:j + 1], sds[:, j:j + 1], self.weights, upper)
                for j in range(self.J)]
        return np.stack(cols, axis=-1).reshape(xb.shape)

    def cdf(self, name: str, x) -> np.ndarray:
        """P(name <= x | y); for "theta", x broadcasts against (J,) and the result does too."""
        if name == "tau":
            x = np.asarray(x, dtype=np.float64)
            with np.errstate(divide="ignore"):
                u = np.log(np.where(x > 0, x, 1.0))
            return np.where(x > 0, self._tau_cdf_u(u), 0.0)
        return self._mixture(name, x, upper=False)

    def prob(self, name: str, threshold, upper: bool = True) -> np.ndarray:
        """P(name > threshold | y) if `upper` else P(name <= threshold | y).

        For mu and theta the upper tail is summed directly (sum_n w_n Phi((m_n - t) / s_n)),
        which keeps relative accuracy for small tail probabilities.
        """
        if name == "tau":
            c = self.cdf(name, threshold)
            return 1.0 - c if upper else c
        return self._mixture(name, threshold, upper=upper)

    def prob_greater(self, i: int, j: int) -> float:
        """P(theta_i > theta_j | y).

        Given tau, theta_i - theta_j is Normal with mean (1-B_i) y_i - (1-B_j) y_j +
        (B_i - B_j) mu_hat and variance V_i + V_j + (B_i - B_j)^2 V_mu: theta_i and theta_j
        are independent given mu, and integrating mu out leaves their common-mu covariance.
        """
        if i == j:
            return 0.0
        b = self.shrink
        mean = self.theta_mean[:, i] - self.theta_mean[:, j]
        var = (self.theta_cond_var[:, i] + self.theta_cond_var[:, j]
               + (b[:, i] - b[:, j]) ** 2 * self.mu_var)
        return float(self.weights @ ndtr(mean / np.sqrt(var)))

    def quantile(self, name: str, q) -> np.ndarray:
        """Posterior quantiles of "mu", "tau" or "theta" (the latter with a trailing J axis).

        mu and theta: the mixture CDF sum_n w_n Phi((x - m_n) / s_n) inverted by bisection
        to 1e-10 (relative above 1, absolute below). tau: the panel interpolant of the CDF
        of log tau inverted to machine precision. q = 0 and q = 1 give the support's ends.
        """
        q = np.asarray(q, dtype=np.float64)
        if np.any(~((q >= 0) & (q <= 1))):
            raise ValueError("q: quantile levels must lie in [0, 1]")
        if name == "tau":
            inner = np.clip(q, 1e-300, 1.0 - 1e-16)
            tau = np.exp(self._tau_quantile_u(inner.ravel())).reshape(q.shape)
            return np.where(q == 0, 0.0, np.where(q == 1, np.inf, tau))
        means, sds = self._components(name)
        # Nodes this far below the peak weight cannot move a quantile at the 1e-10 level.
        live = self.weights > 1e-25 * self.weights.max()
        w, means, sds = self.weights[live], means[live], sds[live]
        k = means.shape[1]
        qt = np.repeat(np.clip(q.ravel(), 1e-300, 1.0 - 1e-16), k)  # targets, k fastest
        col = np.tile(np.arange(k), q.size)
        m, s = means[:, col], sds[:, col]
        z = ndtri(qt)
        # Every component's own quantile brackets the mixture's quantile.
        lo = np.min(m + s * z, axis=0) - 1.0
        hi = np.max(m + s * z, axis=0) + 1.0
        x = _bisect(lambda x: _mixture_cdf(x, m, s, w), lo, hi, qt, rtol=1e-10)
        x = np.where(np.repeat(q.ravel(), k) == 0, -np.inf, x)
        x = np.where(np.repeat(q.ravel(), k) == 1, np.inf, x)
        out = x.reshape(q.shape + (k,))
        return out[..., 0] if name == "mu" else out

    # --- simulation

    def sample(self, n: int, seed=0) -> dict:
        """n i.i.d. posterior draws: dict(mu=(n,), tau=(n,), theta=(n, J)).

        tau by inverting its CDF (interpolated within panels), then mu | tau and
        theta | mu, tau from their Gaussian conditionals (BDA3 section 5.4's order).
        """
        rng = np.random.default_rng(seed)
        u = self._tau_quantile_u(rng.uniform(size=n))
        pp = _prior_params(self.prior)
        c = _conditionals(u, self.y, self.sigma, pp)
        mu = c.mu_mean + np.sqrt(c.mu_var) * rng.standard_normal(n)
        tau2 = np.exp(2.0 * u)[:, None]
        cond_mean = tau2 / (self.sigma**2 + tau2) * self.y + c.shrink * mu[:, None]
        theta = cond_mean + np.sqrt(c.theta_cond_var) * rng.standard_normal((n, self.J))
        return {"mu": mu, "tau": np.exp(u), "theta": theta}


def _moments(c: _Conditionals, u, weights, a: float, mu_normal: bool):
    tau = np.exp(u)
    mean, sd = {}, {}
    mean["mu"] = float(weights @ c.mu_mean)
    if mu_normal or a > 3:
        sd["mu"] = math.sqrt(weights @ (c.mu_var + (c.mu_mean - mean["mu"]) ** 2))
    else:
        sd["mu"] = math.inf
    mean["tau"] = float(weights @ tau) if a > 2 else math.inf
    sd["tau"] = math.sqrt(weights @ (tau - mean["tau"]) ** 2) if a > 3 else math.inf
    mean["theta"] = weights @ c.theta_mean
    sd["theta"] = np.sqrt(weights @ (c.theta_var + (c.theta_mean - mean["theta"]) ** 2))
    return mean, sd


def exact(data, prior=None, n_grid: int = 2048) -> ExactPosterior:
    """The exact posterior of the eight-schools model by quadrature over log tau.

    Parameters
    ----------
    data : a `GroupData` (or `Data` with a mask, or anything with .y and .sigma).
    prior : as `model.as_prior` accepts: None (Normal(0, 5), HalfCauchy(5)), a `Prior`,
        or "flat" (BDA3's p(mu, tau) proportional to 1).
    n_grid : number of quadrature nodes (rounded up to a multiple of 8, the Gauss-Legendre
        order per panel). Doubling it changes the moments at the level of rounding error.

    Raises ValueError naming `prior` when the posterior is improper (flat tau prior with
    J < 3 groups under a flat mu prior, or J < 2 under a Normal mu prior).
    """
    y, sigma = _as_arrays(data)
    prior = as_prior(prior)
    pp = _prior_params(prior)
    a = _check_proper(y.size, prior)
    if int(n_grid) < 2 * _NODES_PER_PANEL:
        raise ValueError(f"n_grid: need at least {2 * _NODES_PER_PANEL} nodes, got {n_grid}")
    n_panels = -(-int(n_grid) // _NODES_PER_PANEL)
    ks = _moment_powers(a)

    lo, hi = _support(y, sigma, pp, ks)
    # Second pass: trim the range using the fine nodes (the scan may straddle a sharp peak).
    _, nodes, _ = _panels(lo, hi, n_panels)
    log_p = _log_density_u(nodes, y, sigma, pp)
    lo2, hi2, _, _ = _above_threshold(nodes, log_p, ks)
    pad = (hi - lo) / n_panels
    lo, hi = max(lo, lo2 - pad), min(hi, hi2 + pad)

    edges, nodes, qweights = _panels(lo, hi, n_panels)
    c = _conditionals(nodes, y, sigma, pp)
    top = c.log_density.max()
    dens = np.exp(c.log_density - top)
    z_rel = float(qweights @ dens)
    weights = qweights * dens / z_rel
    log_evidence = top + math.log(z_rel)

    # CDF of u: panel masses at the edges, Legendre interpolants of the density inside.
    panel_mass = weights.reshape(n_panels, _NODES_PER_PANEL).sum(axis=1)
    cdf_edges = np.concatenate([[0.0], np.cumsum(panel_mass)])
    cdf_edges /= cdf_edges[-1]
    half = 0.5 * (hi - lo) / n_panels
    vals = (dens / z_rel).reshape(n_panels, _NODES_PER_PANEL).T
    coef = _leg.legint(_GL_INV_VANDER @ vals, lbnd=-1, scl=half, axis=0)

    mean, sd = _moments(c, nodes, weights, a, pp.mu_normal)
    return ExactPosterior(
        y=y, sigma=sigma, prior=prior, log_tau=nodes, weights=weights, edges=edges,
        cdf_edges=cdf_edges, mu_mean=c.mu_mean, mu_var=c.mu_var, theta_mean=c.theta_mean,
        theta_var=c.theta_var, shrink=c.shrink, theta_cond_var=c.theta_cond_var,
        log_evidence=log_evidence, tail_exponent=a, _cdf_coef=coef, mean=mean, sd=sd,
    )
