"""Closed-form and optimization-based analyses of the eight-schools model (BDA3 ch. 5).

* `no_pooling`, `complete_pooling`, `complete_pooling_predictive`: the two extremes of
  BDA3 section 5.5 (and seed 004's lecture notes), tau = infinity and tau = 0.
* `shrinkage`: posterior means of the factors B_j = sigma_j^2 / (sigma_j^2 + tau^2), by
  which E[theta_j | mu, tau, y] = (1 - B_j) y_j + B_j mu pulls y_j towards mu (BDA3
  section 5.4).
* `marginal_mode`: the mode of p(mu, log tau | y) and its Laplace covariance (BDA3 section
  4.1; seed 002's `optim` call).
* `empirical_bayes`: type-II maximum likelihood of (mu, tau) (BDA3 section 5.2's
  "estimate the hyperparameters, then plug in").

The optimizations run in float64 whatever jax's global x64 flag is, under a local
`jax.enable_x64(True)`: optax L-BFGS directions far from the optimum, Newton directions
(`jax.hessian`) near it, a backtracking step search, all in one `lax.while_loop`. No jit
or vmap here: these are 2-D problems.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .exact import (
    ExactPosterior, _as_arrays, _conditionals, _log_lik_mu_tau, _log_marginal, _prior_params,
    _PriorParams, ndtr,
)

__all__ = [
    "NoPooling", "CompletePooling", "Mode", "EmpiricalBayes", "no_pooling",
    "complete_pooling", "complete_pooling_predictive", "shrinkage", "marginal_mode",
    "empirical_bayes",
]


# ------------------------------------------------------------------ the pooling extremes


class NoPooling(NamedTuple):
    """theta_j | y ~ Normal(y_j, sigma_j): separate flat-prior analyses (tau = infinity)."""

    mean: np.ndarray
    sd: np.ndarray


class CompletePooling(NamedTuple):
    """theta_j = mu for all j, mu | y ~ Normal(mean, sqrt(var)) under a flat prior (tau = 0)."""

    mean: float
    var: float
    sd: float


def no_pooling(data) -> NoPooling:
    """Separate estimates: the posterior of theta_j under a flat prior is Normal(y_j, sigma_j)."""
    y, sigma = _as_arrays(data)
    return NoPooling(y.copy(), sigma.copy())


def complete_pooling(data) -> CompletePooling:
    """The precision-weighted mean of y and its variance 1 / sum_j sigma_j^-2 (BDA3 section 5.5)."""
    y, sigma = _as_arrays(data)
    prec = 1.0 / sigma**2
    var = 1.0 / prec.sum()
    mean = float((prec * y).sum() * var)
    return CompletePooling(mean, float(var), math.sqrt(var))


def _group_index(data, j) -> int:
    names = getattr(data, "names", None)
    n = _as_arrays(data)[0].size
    if isinstance(j, str):
        if names is None or j not in names:
            raise ValueError(f"j: unknown group name {j!r} (names are {names})")
        return list(names).index(j)
    idx = int(j)
    if not -n <= idx < n:
        raise ValueError(f"j: group index {j} out of range for {n} groups")
    return idx % n


def complete_pooling_predictive(data, j, threshold: float, upper: bool = True) -> float:
    """P(y~_j >= threshold | y) (or <= if not `upper`) for a replicated estimate of group j.

    Under complete pooling with a flat prior on mu, y~_j = mu + eps_j with mu | y from
    `complete_pooling` and eps_j ~ Normal(0, sigma_j) independent, so
    y~_j | y ~ Normal(mean, sqrt(var + sigma_j^2)) (seed 004's slide). `j` is an index or a
    group name.
    """
    _, sigma = _as_arrays(data)
    idx = _group_index(data, j)
    pooled = complete_pooling(data)
    z = (threshold - pooled.mean) / math.sqrt(pooled.var + sigma[idx] ** 2)
    return float(ndtr(-z) if upper else ndtr(z))


def shrinkage(source, data=None) -> np.ndarray:
    """Posterior mean of B_j = sigma_j^2 / (sigma_j^2 + tau^2) for each group j.

    `source` is an `ExactPosterior` (the grid expectation, `data` optional) or draws of
    tau: an array of any shape, or a dict with a "tau" entry such as `ExactPosterior.sample`
    returns (`data` then required, for sigma). Larger sigma_j means more shrinkage towards mu
    (seed 002's table ranks B_j exactly as sigma_j).
    """
    if isinstance(source, ExactPosterior):
        if data is not None:
            _, sigma = _as_arrays(data)
            if sigma.shape != source.sigma.shape or not np.allclose(sigma, source.sigma):
                raise ValueError("data: sigma does not match the ExactPosterior's data")
        return source.weights @ source.shrink
    if data is None:
        raise ValueError("data: needed (for sigma) when shrinkage is computed from tau draws")
    _, sigma = _as_arrays(data)
    tau = source["tau"] if isinstance(source, dict) else source
    tau = np.asarray(tau, dtype=np.float64).ravel()
    if tau.size == 0 or np.any(~np.isfinite(tau)) or np.any(tau < 0):
        raise ValueError("source: tau draws must be a non-empty array of finite values >= 0")
    s2 = sigma**2
    return (s2 / (s2 + tau[:, None] ** 2)).mean(axis=0)


# ------------------------------------------------------------------------ optimization


@functools.lru_cache(maxsize=None)
def _objective(kind: str, mu_normal: bool = False, tau_kind: int = 0) -> Callable:
    """f(x, args) with x = [mu, log tau], args = (y, sigma, mu_loc, mu_scale, tau_scale).

    "posterior": -log p(mu, log tau, y) (`exact.log_marginal_mu_logtau`); "likelihood":
    -sum_j log Normal(y_j | mu, sqrt(sigma_j^2 + tau^2)). Cached per prior family, so that
    the traced optimizer loop below is too and each shape compiles once per process.
    """
    if kind == "likelihood":
        def f(x, args):
            y, sigma = args[0], args[1]
            return -_log_lik_mu_tau(x[0], x[1], y, sigma, xp=jnp)
    else:
        def f(x, args):
            y, sigma, mu_loc, mu_scale, tau_scale = args
            pp = _PriorParams(mu_normal, mu_loc, mu_scale, tau_kind, tau_scale)
            return -_log_marginal(x[0], x[1], y, sigma, pp, xp=jnp)
    return f


@functools.lru_cache(maxsize=None)
def _optimizer_loop(fun: Callable, gtol: float, max_iter: int):
    """cond and body of the minimization loop for `fun(x, args)` (see `_minimize`)."""
    value_and_grad = jax.value_and_grad(fun)
    hessian = jax.hessian(fun)
    lbfgs = optax.scale_by_lbfgs()

    def line_search(x, val, direction, slope, args):
        # Backtracking from the full step until the Armijo condition holds.
        def cond(c):
            _, ok, k = c
            return (~ok) & (k < 60)

        def body(c):
            step, _, k = c
            step = jnp.where(k == 0, step, 0.5 * step)
            val_new = fun(x - step * direction, args)
            ok = jnp.isfinite(val_new) & (val_new <= val - 1e-4 * step * slope)
            return step, ok, k + 1

        init = (jnp.asarray(1.0, x.dtype), jnp.asarray(False), jnp.asarray(0))
        step, ok, _ = jax.lax.while_loop(cond, body, init)
        return step, ok

    def cond(c):
        return ~c["done"]

    def body(c):
        x, args = c["x"], c["args"]
        val, grad = value_and_grad(x, args)
        hess = hessian(x, args)
        gmax = jnp.max(jnp.abs(grad))
        converged = gmax <= gtol * jnp.maximum(1.0, jnp.abs(val))
        d_lbfgs, state = lbfgs.update(grad, c["state"], x)
        # Newton once the gradient is small and the Hessian positive definite (Cholesky
        # gives NaNs otherwise); L-BFGS before; the gradient if neither descends.
        chol = jnp.linalg.cholesky(hess)
        pd = jnp.all(jnp.isfinite(chol))
        d_newton = jax.scipy.linalg.cho_solve((chol, True), grad)
        direction = jnp.where(pd & (gmax < 1e-3), d_newton, d_lbfgs)
        slope = jnp.vdot(grad, direction)
        descent = jnp.isfinite(slope) & (slope > 0)
        direction = jnp.where(descent, direction, grad)
        slope = jnp.where(descent, slope, jnp.vdot(grad, grad))
        step, ok = line_search(x, val, direction, slope, args)
        move = ok & ~converged
        return {
            "x": jnp.where(move, x - step * direction, x), "args": args, "state": state,
            "val": val, "grad": grad, "hess": hess, "it": c["it"] + 1,
            "done": ~move | (c["it"] + 1 >= max_iter),
        }

    return cond, body, lbfgs


def _minimize(fun: Callable, args: tuple, x0, gtol: float = 1e-10, max_iter: int = 500):
    """Minimize fun(x, args) over a small vector x in float64.

    Far from the optimum the direction is optax's L-BFGS direction; once the gradient is
    small and the Hessian (jax.hessian) positive definite it is the Newton direction, which
    converges quadratically. A backtracking (Armijo) search picks the step. The iteration
    is one `lax.while_loop` built from cached functions, so it compiles once per shape
    instead of dispatching every primitive eagerly (optax's zoom line search, run eagerly,
    re-traces a lax loop at every step). Stops when max|grad| <= gtol * max(1, |f|), when
    no step decreases f, or after `max_iter` iterations.

    Returns (x, f, gradient, Hessian, iterations); f, gradient and Hessian are evaluated
    at x except when the loop hit `max_iter` (then at the point before the last step).
    """
    cond, body, lbfgs = _optimizer_loop(fun, float(gtol), int(max_iter))
    with jax.enable_x64(True):
        x0 = jnp.asarray(x0, dtype=jnp.float64)
        dim = x0.shape[0]
        init = {
            "x": x0, "args": tuple(jnp.asarray(a, dtype=jnp.float64) for a in args),
            "state": lbfgs.init(x0), "val": jnp.asarray(jnp.inf, jnp.float64),
            "grad": jnp.zeros(dim, jnp.float64), "hess": jnp.zeros((dim, dim), jnp.float64),
            "it": jnp.asarray(0), "done": jnp.asarray(False),
        }
        out = jax.lax.while_loop(cond, body, init)
        return (np.asarray(out["x"], np.float64), float(out["val"]),
                np.asarray(out["grad"], np.float64), np.asarray(out["hess"], np.float64),
                int(out["it"]))


class Mode(NamedTuple):
    """The mode of p(mu, log tau | y) and the Laplace approximation around it."""

    mode: np.ndarray  # [mu, log tau]
    cov: np.ndarray  # inverse of the negative Hessian of the log density at the mode
    log_density: float  # log p(mu, log tau, y) at the mode (as `log_marginal_mu_logtau`)
    grad_norm: float  # max |gradient| at the returned point
    n_iter: int

    @property
    def mu(self) -> float:
        return float(self.mode[0])

    @property
    def tau(self) -> float:
        return float(math.exp(self.mode[1]))

    @property
    def sd(self) -> np.ndarray:
        return np.sqrt(np.diag(self.cov))


def _profile_start(y, sigma, mu_of_u: Callable, log_f: Callable):
    """Best point of a scan over u = log tau with mu set to its conditional optimum mu(u).

    Returns ([mu, u] at the best point, its index, the scanned profile values).
    """
    lo = math.log(sigma.min()) - 20.0
    hi = math.log(max(sigma.max(), np.ptp(y), 1e-300)) + 10.0
    u = np.arange(lo, hi, 0.05)
    mu = mu_of_u(u)
    vals = log_f(mu, u)
    i = int(np.nanargmax(vals))
    return np.array([mu[i], u[i]]), i, vals


def marginal_mode(data, prior=None, *, gtol: float = 1e-10) -> Mode:
    """Mode and Laplace covariance of p(mu, log tau | y), theta integrated out.

    The log density is `exact.log_marginal_mu_logtau` (with the Jacobian log tau, as in
    seed 002's `logpost`, BDA3 section 5.5), written once for numpy and jax.numpy. Given u,
    the optimal mu is mu_hat(tau) of BDA3 eq. 5.20, so a 1-D scan over u gives a starting
    point; optax L-BFGS, then Newton steps, converge from there (`_minimize`). The
    covariance is the inverse of the negative Hessian (jax.hessian) at the mode (BDA3
    section 4.1).

    For the flat prior on eight schools seed 002 reports mode (7.926685, 1.841525) from R's
    Nelder-Mead, whose default relative tolerance 1e-8 on the log density leaves the mode
    uncertain at the 1e-3 level; the exact mode is about (7.92441, 1.84140).
    """
    y, sigma = _as_arrays(data)
    pp = _prior_params(prior)

    def mu_of_u(u):
        return _conditionals(u, y, sigma, pp).mu_mean

    def log_f_np(mu, u):
        return _log_marginal(mu, u, y, sigma, pp)

    start, _, _ = _profile_start(y, sigma, mu_of_u, log_f_np)
    fun = _objective("posterior", pp.mu_normal, pp.tau_kind)
    args = (y, sigma, pp.mu_loc, pp.mu_scale, pp.tau_scale)
    x, val, grad, hess, n_iter = _minimize(fun, args, start, gtol=gtol)
    if not np.all(np.linalg.eigvalsh(hess) > 0):
        raise RuntimeError(
            f"marginal_mode: the Hessian at {x} is not negative definite; the marginal "
            "posterior of (mu, log tau) may have no mode (improper prior with few groups?)"
        )
    cov = np.linalg.inv(hess)
    return Mode(x, 0.5 * (cov + cov.T), -val, float(np.max(np.abs(grad))), n_iter)


class EmpiricalBayes(NamedTuple):
    """Type-II maximum likelihood of (mu, tau) and the plug-in posterior of theta.

    theta_mean and theta_sd are those of theta_j | mu_hat, tau_hat, y (BDA3 section 5.4);
    theta_sd_mu_integrated adds mu's uncertainty given tau_hat (flat prior on mu,
    var(theta_j | tau_hat, y) = V_j + B_j^2 mu_se^2), which at tau_hat = 0 is the complete
    pooling sd. At the boundary (`at_boundary`, tau_hat = 0) every theta_j equals mu_hat,
    the complete-pooling mean.
    """

    mu: float
    tau: float
    log_lik: float  # sum_j log Normal(y_j | mu, sqrt(sigma_j^2 + tau^2)) at the optimum
    at_boundary: bool
    mu_se: float  # (sum_j 1 / (sigma_j^2 + tau_hat^2))^(-1/2)
    theta_mean: np.ndarray
    theta_sd: np.ndarray
    theta_sd_mu_integrated: np.ndarray


def _eb_result(y, sigma, mu: float, tau: float, boundary: bool) -> EmpiricalBayes:
    s2, t2 = sigma**2, tau * tau
    v = s2 + t2
    shrink = s2 / v
    mu_var = 1.0 / np.sum(1.0 / v)
    cond_var = s2 * t2 / v
    theta_mean = (t2 / v) * y + shrink * mu
    log_lik = float(_log_lik_mu_tau(mu, math.log(tau) if tau > 0 else -np.inf, y, sigma))
    return EmpiricalBayes(
        float(mu), float(tau), log_lik, boundary, math.sqrt(mu_var), theta_mean,
        np.sqrt(cond_var), np.sqrt(cond_var + shrink**2 * mu_var),
    )


def empirical_bayes(data) -> EmpiricalBayes:
    """Maximize the marginal likelihood prod_j Normal(y_j | mu, sqrt(sigma_j^2 + tau^2)).

    For fixed tau the optimal mu is the weighted mean mu_hat(tau) with weights
    1 / (sigma_j^2 + tau^2), so the profile likelihood over u = log tau decides first
    whether the maximum is interior. When the profile keeps increasing as tau -> 0 (as for
    eight schools, whose estimates vary less than their standard errors imply: BDA3
    section 5.5) the MLE is the boundary tau_hat = 0, where mu_hat is the complete-pooling
    mean; optimizing in log tau would only drift towards -infinity. Otherwise optax L-BFGS
    and Newton steps maximize over (mu, log tau) jointly from the best scan point.
    """
    y, sigma = _as_arrays(data)
    flat = _prior_params("flat")

    def mu_of_u(u):
        return _conditionals(u, y, sigma, flat).mu_mean

    def log_lik_np(mu, u):
        return _log_lik_mu_tau(mu, u, y, sigma)

    pooled = complete_pooling(data)
    boundary_ll = float(_log_lik_mu_tau(pooled.mean, -np.inf, y, sigma))
    # d log-likelihood / d tau^2 at tau = 0 (mu at its optimum): the boundary is a local
    # maximum iff this is <= 0.
    w0 = 1.0 / sigma**2
    score0 = 0.5 * float(np.sum(w0**2 * (y - pooled.mean) ** 2 - w0))
    start, i_best, vals = _profile_start(y, sigma, mu_of_u, log_lik_np)
    # Near tau = 0 the profile is flat to rounding, so only a clear gain counts as another
    # maximum.
    gain = vals[i_best] - boundary_ll
    if score0 <= 0 and not gain > 1e-10 * (1.0 + abs(boundary_ll)):
        return _eb_result(y, sigma, pooled.mean, 0.0, True)
    x, val, _, _, _ = _minimize(_objective("likelihood"), (y, sigma), start)
    if -val <= boundary_ll:
        return _eb_result(y, sigma, pooled.mean, 0.0, True)
    return _eb_result(y, sigma, float(x[0]), float(math.exp(x[1])), False)
