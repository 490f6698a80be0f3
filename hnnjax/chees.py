"""ChEES-HMC adaptation: step size and trajectory length shared by the chains of one model.

Hoffman, Radul & Sountsov (2021), "An Adaptive-MCMC Scheme for Setting Trajectory Lengths
in Hamiltonian Monte Carlo" (AISTATS). Every chain of a model runs static HMC with the same
step size eps and the same number of leapfrog steps, so no chain waits for another. During
warmup, after each transition, the chains' proposals adapt two shared parameters:

Trajectory length T, by stochastic gradient ascent on the ChEES criterion (Change in the
Estimator of the Expected Square)

    ChEES(T) = 1/4 E[(||x' - E x||^2 - ||x - E x||^2)^2],

where x is the state before the transition and x' the proposal. At iteration t the proposal
integrates the jittered length u_t T, u_t = `halton(t)` in (0, 1] (van der Corput sequence
in base 2: quasi-random, more even than uniform draws, and the same for every chain). As
x' = x(u_t T), dx'/dT = u_t v' with v' = M^{-1} p' the velocity at the proposal. Replacing
E x by the cross-chain means (held fixed, i.e. no gradient through them), chain i
contributes

    g_i = (||x'_i - m'||^2 - ||x_i - m||^2) ((x'_i - m') . v'_i) u_t,

m the plain mean of the x_i and m' the mean of the x'_i weighted by the acceptance
probabilities a_i. The estimate of dChEES/dT is sum_i w_i g_i / sum_i w_i with w_i = a_i,
and w_i = 0 for a divergent chain or one with a non-finite proposal or gradient (such a
chain is dropped, it cannot put a NaN into the state); dChEES/dlog T = T dChEES/dT.
log T takes an Adam step (optax; learning rate 0.025 as in the paper, beta1 = 0 and
beta2 = 0.95 as in TensorFlow Probability's `GradientBasedTrajectoryLengthAdaptation`:
RMSProp with bias correction, no momentum) toward larger ChEES, the step clipped to
+-0.35 in log space (about log(2)/2, as TFP does, so T changes by at most ~42% per
iteration), and T is kept in [eps, max_steps eps]: below one step T has no effect, above
max_steps eps the step count would be capped anyway.

Norms (`whiten=True`, the default): the squared norms and the dot product are taken in the
preconditioned coordinates z_j = x_j / sqrt(m^{-1}_j), where HMC with M^{-1} = diag(inverse
mass) is HMC with a unit mass. This is the paper's setting (TFP runs ChEES on the
preconditioned, identity-mass state) and it keeps coordinates with a large posterior scale
from dominating the criterion. With a unit mass it is exactly the formula above; in general
||x - m||^2 becomes sum_j (x_j - m_j)^2 / m^{-1}_j and (x' - m') . v' becomes
(x' - m') . p'. `whiten=False` uses the plain Euclidean norm and v' = M^{-1} p'.

Step size eps, by dual averaging (`adaptation.dual_averaging_update`, Stan's constants)
toward `target_accept` for the harmonic mean of the chains' acceptance probabilities, as
in the paper: the harmonic mean is dominated by the worst chains, so one chain stuck on
rejections pulls eps down. Divergent chains are left out of the harmonic mean (as in
BlackJAX); if every chain diverged the statistic is 0, which shrinks eps.

After warmup the driver freezes eps and T at `final(state)`: the dual-averaging iterate
average of log eps (weights t^-0.75) and an iterate average of log T (weights t^-0.5, as
TFP), T clipped to [eps, max_steps eps].

Diagonal metric: the state also keeps an exponential moving average of the cross-chain
mean and variance of the chains' positions (the states before each transition). The
weight of iteration k is max(1/k, ema_rate): a plain average over the first 1/ema_rate
iterations, then an exponential forgetting of the early (burn-in) iterations. The
variance at each iteration is the unbiased variance across the C chains about their mean
at that iteration, so the drift of the mean during burn-in does not inflate it.
`inverse_mass(state)` returns that variance with Stan's regularization
(n/(n+5)) var + 1e-3 (5/(n+5)), n = C * min(k, 1/ema_rate), 0 on padded coordinates. This
is a simple version of the paper's cross-chain preconditioner estimate; the driver decides
when (if at all) to use it.

Everything here is for the C chains of ONE model: arrays (C, d) and (C,); no jit or vmap
(the driver vmaps over blocks of models). Float32 and float64 both work: the state takes
the dtype of the positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .adaptation import DualAveragingState, dual_averaging_init, dual_averaging_update

__all__ = [
    "ChEESState", "halton", "init", "num_steps", "steps_for", "step_size", "trajectory_length",
    "inverse_mass", "harmonic_mean", "chees_gradient", "update", "final",
    "LEARNING_RATE", "LOG_UPDATE_CLIP", "ADAM_B1", "ADAM_B2", "EMA_RATE",
]

LEARNING_RATE = 0.025  # the paper's Adam learning rate for log T
LOG_UPDATE_CLIP = 0.35  # max |change| of log T per iteration (TFP)
ADAM_B1 = 0.0  # no momentum (TFP)
ADAM_B2 = 0.95  # decay of the squared-gradient average (TFP)
ADAM_EPS = 1e-20  # only guards 0/0: the gradient's scale is model dependent
EMA_RATE = 0.05  # smallest weight of an iteration in the moment averages


class ChEESState(NamedTuple):
    """Adaptation state of one model (C chains).

    log_T: log of the trajectory length used during warmup.
    log_T_avg: iterate average of log_T (weights k^-0.5), used after warmup.
    adam: optax Adam state of log_T.
    dual: dual-averaging state of log eps (shared by the chains).
    var: moving average of the cross-chain variance, shape (d,).
    live: 1 on real coordinates, 0 on padding, shape (d,).
    count: number of updates so far (float scalar).
    num_chains: C, as a float scalar (for the variance regularization).
    """

    log_T: jax.Array
    log_T_avg: jax.Array
    adam: Any
    dual: DualAveragingState
    var: jax.Array
    live: jax.Array
    count: jax.Array
    num_chains: jax.Array


def _adam(learning_rate=LEARNING_RATE):
    import optax  # here, not at the top: `import hnnjax` then spares optax's 40 ms

    return optax.adam(learning_rate, b1=ADAM_B1, b2=ADAM_B2, eps=ADAM_EPS)


def halton(t, dtype=jnp.float32):
    """Van der Corput (base-2 Halton) value of t + 1, in (0, 1]: 1/2, 1/4, 3/4, 1/8, ...

    The bits of t + 1 (uint32) reversed into a binary fraction; t + 1 > 0 so the value is
    never 0 (in float32 a value within 2^-25 of 1 rounds to 1, which is allowed).
    """
    n = (jnp.asarray(t) + 1).astype(jnp.uint32)
    for shift, mask in ((1, 0x55555555), (2, 0x33333333), (4, 0x0F0F0F0F), (8, 0x00FF00FF)):
        m = np.uint32(mask)
        s = np.uint32(shift)
        n = ((n >> s) & m) | ((n & m) << s)
    n = (n >> np.uint32(16)) | (n << np.uint32(16))
    return n.astype(dtype) * jnp.asarray(2.0**-32, dtype)


def init(step_size, positions, live, trajectory_length=None) -> ChEESState:
    """Initial state for one model.

    step_size: initial eps (scalar, e.g. from the driver's step-size heuristic).
    positions: (C, d) initial positions (for shapes and dtype; C >= 2 for ChEES).
    live: (d,) 1 for real coordinates, 0 for padding.
    trajectory_length: initial T; default eps, i.e. one leapfrog step, as TFP and BlackJAX
        start (ChEES then grows T; starting short is safe, a long T wastes gradients).
    """
    positions = jnp.asarray(positions)
    dtype = positions.dtype
    eps = jnp.asarray(step_size, dtype)
    T = eps if trajectory_length is None else jnp.asarray(trajectory_length, dtype)
    log_T = jnp.log(T)
    d = positions.shape[-1]
    return ChEESState(
        log_T=log_T,
        log_T_avg=log_T,
        adam=_adam().init(log_T),
        dual=dual_averaging_init(eps),
        var=jnp.ones((d,), dtype),
        live=jnp.asarray(live, dtype),
        count=jnp.zeros((), dtype),
        num_chains=jnp.asarray(positions.shape[0], dtype),
    )


def step_size(state: ChEESState):
    """The step size of the next warmup transition."""
    return jnp.exp(state.dual.log_step_size)


def trajectory_length(state: ChEESState):
    """The (unjittered) trajectory length T of the next warmup transition."""
    return jnp.exp(state.log_T)


def _steps(T, eps, u, max_steps):
    n = jnp.ceil(u * T / eps)
    n = jnp.where(jnp.isfinite(n), n, 1.0)
    return jnp.clip(n, 1.0, float(max_steps)).astype(jnp.int32)


def num_steps(state: ChEESState, t, max_steps=1024):
    """Leapfrog steps of warmup iteration t: max(1, ceil(halton(t) T / eps)), <= max_steps.

    The same for every chain of the model. For the sampling phase use `final` and
    `steps_for(eps, T, t, max_steps)`.
    """
    return steps_for(step_size(state), trajectory_length(state), t, max_steps)


def steps_for(eps, T, t, max_steps=1024):
    """Leapfrog steps at iteration t for a given (eps, T), e.g. the frozen `final` values."""
    eps = jnp.asarray(eps)
    return _steps(jnp.asarray(T, eps.dtype), eps, halton(t, eps.dtype), max_steps)


def inverse_mass(state: ChEESState):
    """Regularized moving-average cross-chain variance (d,), 0 on padded coordinates."""
    n = state.num_chains * jnp.minimum(state.count, 1.0 / EMA_RATE)
    reg = (n / (n + 5.0)) * state.var + 1e-3 * (5.0 / (n + 5.0))
    return state.live * reg


def harmonic_mean(accept_prob, diverging):
    """Harmonic mean of the non-divergent chains' acceptance probabilities; 0 if none."""
    a = jnp.asarray(accept_prob)
    ok = ~jnp.asarray(diverging, bool) & jnp.isfinite(a)
    a = jnp.clip(jnp.where(ok, a, 1.0), 0.0, 1.0)
    inv = jnp.where(ok, 1.0 / a, 0.0)  # 1/0 = inf: one zero makes the mean 0
    n = jnp.sum(ok.astype(a.dtype))
    hm = n / jnp.sum(inv)
    return jnp.where((n > 0) & jnp.isfinite(hm), hm, 0.0).astype(a.dtype)


def chees_gradient(x_prev, x_prop, p_prop, accept_prob, diverging, inverse_mass, jitter,
                   live=None, whiten=True):
    """Estimate of dChEES / dT (the unjittered T) from one iteration of C chains.

    x_prev, x_prop, p_prop: (C, d) start positions, proposals and momenta at the proposal;
    accept_prob, diverging: (C,); inverse_mass: (d,) diagonal M^{-1}; jitter: u_t.
    Returns (gradient, total weight); the gradient is 0 where the total weight is 0.
    Multiply by T for the gradient with respect to log T.
    """
    x_prev = jnp.asarray(x_prev)
    dtype = x_prev.dtype
    a = jnp.asarray(accept_prob, dtype)
    live = (inverse_mass > 0).astype(dtype) if live is None else jnp.asarray(live, dtype)
    live = live * (inverse_mass > 0)
    ok = (
        ~jnp.asarray(diverging, bool)
        & jnp.isfinite(a)
        & jnp.all(jnp.isfinite(x_prop), axis=-1)
        & jnp.all(jnp.isfinite(p_prop), axis=-1)
    )
    x_prop = jnp.where(ok[:, None], x_prop, 0.0)
    p_prop = jnp.where(ok[:, None], p_prop, 0.0)
    w = jnp.where(ok, jnp.clip(a, 0.0, 1.0), 0.0)

    if whiten:
        # z = x / sqrt(m^-1): ||z||^2 = sum x^2 / m^-1 and dz/dt = p / sqrt(m^-1).
        metric = jnp.where(live > 0, live / jnp.where(live > 0, inverse_mass, 1.0), 0.0)
        direction = live * p_prop  # metric * (M^-1 p)
    else:
        metric = live
        direction = live * inverse_mass * p_prop

    m_prev = jnp.mean(x_prev, axis=0)
    m_prop = jnp.sum(w[:, None] * x_prop, axis=0) / (jnp.sum(w) + jnp.finfo(dtype).tiny)
    c_prev = x_prev - m_prev
    c_prop = x_prop - m_prop
    sq_prev = jnp.sum(metric * c_prev * c_prev, axis=-1)
    sq_prop = jnp.sum(metric * c_prop * c_prop, axis=-1)
    g = (sq_prop - sq_prev) * jnp.sum(c_prop * direction, axis=-1) * jnp.asarray(jitter, dtype)
    w = jnp.where(jnp.isfinite(g), w, 0.0)
    g = jnp.where(w > 0, g, 0.0)
    total = jnp.sum(w)
    grad = jnp.where(total > 0, jnp.sum(w * g) / jnp.where(total > 0, total, 1.0), 0.0)
    return grad, total


def update(
    state: ChEESState,
    t,
    x_prev,
    x_prop,
    p_prop,
    accept_prob,
    diverging,
    inverse_mass,
    target_accept,
    learning_rate=LEARNING_RATE,
    max_steps=1024,
) -> ChEESState:
    """Adapt after warmup iteration t (the one whose steps came from `num_steps(state, t)`).

    x_prev (C, d): positions before the transition; x_prop (C, d), p_prop (C, d): the
    trajectory's end point and momentum (the Metropolis proposal, accepted or not);
    accept_prob (C,): min(1, exp(H0 - H')); diverging (C,); inverse_mass (d,): the metric
    the transition used; target_accept: the harmonic-mean acceptance to reach.
    """
    x_prev = jnp.asarray(x_prev)
    dtype = x_prev.dtype
    count = state.count + 1.0

    # (2) step size: dual averaging on the harmonic-mean acceptance probability.
    hm = harmonic_mean(jnp.asarray(accept_prob, dtype), diverging)
    dual = dual_averaging_update(state.dual, hm, jnp.asarray(target_accept, dtype))
    dual_ok = jnp.isfinite(dual.log_step_size) & jnp.isfinite(dual.log_step_size_avg)
    dual = jax.tree.map(lambda new, old: jnp.where(dual_ok, new, old), dual, state.dual)
    eps = jnp.exp(dual.log_step_size)

    # (1) trajectory length: Adam ascent on ChEES in log T.
    u = halton(t, dtype)
    grad_T, total = chees_gradient(
        x_prev, x_prop, p_prop, accept_prob, diverging, jnp.asarray(inverse_mass, dtype), u,
        live=state.live,
    )
    T = jnp.exp(state.log_T)
    grad_log_T = (T * grad_T).astype(dtype)
    # optax minimizes: pass -dChEES/dlogT.
    updates, adam = _adam(learning_rate).update(-grad_log_T, state.adam, state.log_T)
    step = jnp.clip(updates, -LOG_UPDATE_CLIP, LOG_UPDATE_CLIP)
    log_T = state.log_T + step
    adam_finite = jnp.all(jnp.asarray([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(adam)
                                       if jnp.issubdtype(leaf.dtype, jnp.floating)]))
    good = (total > 0) & jnp.isfinite(log_T) & jnp.isfinite(grad_log_T) & adam_finite
    log_T = jnp.where(good, log_T, state.log_T)
    adam = jax.tree.map(lambda new, old: jnp.where(good, new, old), adam, state.adam)
    log_eps = jnp.log(eps)
    log_T = jnp.clip(log_T, log_eps, log_eps + jnp.log(jnp.asarray(max_steps, dtype)))
    w_avg = count ** jnp.asarray(-0.5, dtype)
    log_T_avg = w_avg * log_T + (1.0 - w_avg) * state.log_T_avg

    # Moving average of the cross-chain variance of the current states (about their mean).
    c = x_prev.shape[0]
    batch_var = jnp.sum((x_prev - jnp.mean(x_prev, axis=0)) ** 2, axis=0) / max(c - 1, 1)
    rho = jnp.maximum(1.0 / count, jnp.asarray(EMA_RATE, dtype))
    var = jnp.where(jnp.all(jnp.isfinite(batch_var)), (1.0 - rho) * state.var + rho * batch_var, state.var)

    return ChEESState(
        log_T=log_T.astype(dtype),
        log_T_avg=log_T_avg.astype(dtype),
        adam=adam,
        dual=dual,
        var=var.astype(dtype),
        live=state.live,
        count=count,
        num_chains=state.num_chains,
    )


def final(state: ChEESState, max_steps=1024):
    """Frozen (eps, T) for sampling: averaged step size, averaged T in [eps, max_steps eps]."""
    eps = jnp.exp(state.dual.log_step_size_avg)
    # Before any update the dual-averaging average is 0 (exp = 1): use the current eps.
    eps = jnp.where(state.count > 0, eps, jnp.exp(state.dual.log_step_size))
    log_eps = jnp.log(eps)
    log_T = jnp.clip(state.log_T_avg, log_eps, log_eps + jnp.log(jnp.asarray(max_steps, eps.dtype)))
    return eps, jnp.exp(log_T)


@dataclass(frozen=True)
class ChEES:
    """Static configuration of ChEES-HMC: jittered static-length HMC whose step size and
    trajectory length are shared by all chains of a model and adapted during warmup
    (Hoffman, Radul & Sountsov 2021). The driver runs a model's chains in lock step; they
    all take the same number of leapfrog steps, so none waits for another."""

    max_steps: int = 1024
    learning_rate: float = LEARNING_RATE
    max_delta: float = 1000.0

    name = "chees"
