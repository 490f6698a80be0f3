"""Stan-style warmup: windowed diagonal mass matrix and dual-averaging step size.

Schedule (Stan reference manual, "HMC algorithm parameters > Automatic parameter tuning"):
an initial fast interval (default 75 iterations) adapts only the step size; then slow
windows of doubling size (25, 50, 100, ...) accumulate Welford estimates of the posterior
variance, and at the end of each the inverse mass matrix is set to the regularized
variance and dual averaging restarts; a final fast interval (50) adapts the step size
only. Short warmups scale the three parts to 15% / 75% / 10%. The schedule is computed
ahead, in numpy, as per-iteration boolean arrays that the compiled loop indexes.

Step size: dual averaging of Nesterov (2009) as in Hoffman & Gelman (2014, section 3.2),
with Stan's constants gamma = 0.05, t0 = 10, kappa = 0.75 and mu = log(10 eps_0).

Regularization of the variance estimate (Stan): (n / (n + 5)) var + 1e-3 (5 / (n + 5)).

One difference from Stan: Stan re-runs its step-size heuristic after each slow window;
here dual averaging restarts from the window's averaged step size instead (as BlackJAX's
window adaptation does), which needs no extra leapfrog loop in the compiled program.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from .packing import pack_scalars

__all__ = [
    "Schedule", "warmup_schedule", "DualAveragingState", "dual_averaging_init",
    "dual_averaging_update", "WelfordState", "welford_init", "welford_update",
    "regularized_variance", "AdaptationState", "adaptation_init", "adaptation_update",
]


class Schedule(NamedTuple):
    """Per-warmup-iteration flags: `slow[t]` accumulate variance; `window_end[t]` update metric."""

    slow: np.ndarray
    window_end: np.ndarray


def warmup_schedule(
    num_warmup: int, init_buffer: int = 75, term_buffer: int = 50, base_window: int = 25
) -> Schedule:
    """Stan's windowed adaptation schedule as arrays of length `num_warmup`."""
    slow = np.zeros(num_warmup, bool)
    end = np.zeros(num_warmup, bool)
    if num_warmup < 20:
        # Too short for a metric: Stan adapts only the step size then.
        return Schedule(slow, end)
    if init_buffer + base_window + term_buffer > num_warmup:
        init_buffer = int(0.15 * num_warmup)
        term_buffer = int(0.1 * num_warmup)
        base_window = num_warmup - (init_buffer + term_buffer)
    last = num_warmup - term_buffer - 1  # last iteration of the last slow window
    size = base_window
    stop = init_buffer + size - 1
    start = init_buffer
    while True:
        slow[start : stop + 1] = True
        end[stop] = True
        if stop == last:
            break
        # Stan's compute_next_window: double the window; stretch it to the end of the
        # slow phase when the window after it would not fit.
        size *= 2
        start, stop = stop + 1, stop + size
        if stop != last and stop + 2 * size >= num_warmup - term_buffer:
            stop = last
    return Schedule(slow, end)


class DualAveragingState(NamedTuple):
    log_step_size: jnp.ndarray
    log_step_size_avg: jnp.ndarray
    h_bar: jnp.ndarray
    mu: jnp.ndarray
    count: jnp.ndarray


def dual_averaging_init(step_size) -> DualAveragingState:
    """Start at `step_size`, shrinking toward mu = log(10 step_size) (Stan)."""
    step_size = jnp.asarray(step_size)
    zero = jnp.zeros_like(step_size)
    return DualAveragingState(jnp.log(step_size), zero, zero, jnp.log(10.0 * step_size), zero)


def dual_averaging_update(
    state: DualAveragingState, accept_stat, target, gamma=0.05, t0=10.0, kappa=0.75
) -> DualAveragingState:
    """One dual-averaging step toward E[accept_stat] = target (Hoffman & Gelman 2014, eq. 6)."""
    t = state.count + 1.0
    eta = 1.0 / (t + t0)
    accept_stat = jnp.where(jnp.isfinite(accept_stat), accept_stat, 0.0)
    h_bar = (1.0 - eta) * state.h_bar + eta * (target - accept_stat)
    log_eps = state.mu - jnp.sqrt(t) / gamma * h_bar
    w = t ** (-kappa)
    log_eps_avg = w * log_eps + (1.0 - w) * state.log_step_size_avg
    return DualAveragingState(log_eps, log_eps_avg, h_bar, state.mu, t)


class WelfordState(NamedTuple):
    count: jnp.ndarray
    mean: jnp.ndarray
    m2: jnp.ndarray


def welford_init(dim_like) -> WelfordState:
    zeros = jnp.zeros_like(dim_like)
    return WelfordState(jnp.zeros((), dim_like.dtype), zeros, zeros)


def welford_update(state: WelfordState, x) -> WelfordState:
    """Welford's (1962) running mean and sum of squared deviations."""
    n = state.count + 1.0
    delta = x - state.mean
    mean = state.mean + delta / n
    return WelfordState(n, mean, state.m2 + delta * (x - mean))


def regularized_variance(state: WelfordState):
    """Stan's shrunk sample variance: (n/(n+5)) s^2 + 1e-3 (5/(n+5)), computed as
    (n s^2 + 5e-3) / (n + 5).

    Written so because XLA's classic CPU emitters (`sampler._compiler_options`) rounded
    Stan's form differently in the program whose restarts gather finished lanes
    (`_restart_slots` < lanes) than in the others: a model's draws then depended on
    the batch (`tests/test_sampler.py::test_restart_slots_change_no_draw`).
    """
    n = state.count
    var = state.m2 / jnp.maximum(n - 1.0, 1.0)
    return (n * var + 5e-3) / (n + 5.0)


# AdaptationState.scalars: the step size at 0, DualAveragingState's five fields in order
# at 1..5, the Welford count at 6.
_S_STEP, _S_COUNT = 0, 6


class AdaptationState(NamedTuple):
    """Per-chain warmup state, packed into two arrays. XLA on CPU runs a kernel for every
    array that a loop iteration rewrites and copies a loop-carried array that is read
    after its update (nuts module docstring, "Layout"); as ten arrays, the state took
    nine more kernels, seven of them copies, in every restart of the independent driver
    (its loop body: 68 kernels, 14 of them copies, against 59 and 7 packed). `step_size`
    is the one the next transition uses; the views index from the end, so they also work
    on a batch.
    """

    scalars: jnp.ndarray  # (7,): step size, DualAveragingState's five fields, Welford count
    vectors: jnp.ndarray  # (3, d): inverse mass, Welford mean, Welford m2

    step_size = property(lambda self: self.scalars[..., _S_STEP])
    inverse_mass = property(lambda self: self.vectors[..., 0, :])
    dual = property(lambda self: DualAveragingState(*(self.scalars[..., k] for k in range(1, 6))))
    welford = property(lambda self: WelfordState(self.scalars[..., _S_COUNT], self.vectors[..., 1, :], self.vectors[..., 2, :]))

    @classmethod
    def pack(cls, step_size, inverse_mass, dual: DualAveragingState, welford: WelfordState) -> "AdaptationState":
        scalars = pack_scalars([step_size, *dual, welford.count])
        return cls(scalars, jnp.stack([inverse_mass, welford.mean, welford.m2]))


def adaptation_init(step_size, inverse_mass) -> AdaptationState:
    step_size = jnp.asarray(step_size, jnp.result_type(inverse_mass))
    return AdaptationState.pack(step_size, inverse_mass, dual_averaging_init(step_size), welford_init(inverse_mass))


def adaptation_update(
    state: AdaptationState, t, position, accept_stat, target, schedule, live, num_warmup
) -> AdaptationState:
    """Adapt after warmup iteration `t` (a traced index); the identity for t < 0 (a chain
    before its first transition, `sampler._lane_start`) and once t >= num_warmup.

    `schedule` holds the arrays of `warmup_schedule` (as jnp arrays, padded by one False
    entry so that indexing with t = num_warmup is safe); `live` is 1 for real coordinates and 0
    for padding, whose inverse mass stays 0.
    """
    in_warmup = (t >= 0) & (t < num_warmup)
    tt = jnp.clip(t, 0, schedule.slow.shape[0] - 1)
    slow = schedule.slow[tt] & in_warmup
    window_end = schedule.window_end[tt] & in_warmup

    dual = dual_averaging_update(state.dual, accept_stat, target)
    welford = WelfordState(*(jnp.where(slow, a, b) for a, b in zip(welford_update(state.welford, position), state.welford)))
    step_size = jnp.exp(dual.log_step_size)

    new_inv_mass = live * regularized_variance(welford)
    inverse_mass = jnp.where(window_end, new_inv_mass, state.inverse_mass)
    step_size = jnp.where(window_end, jnp.exp(dual.log_step_size_avg), step_size)
    # Restart from the window's averaged iterate, less noisy than the last one (as
    # BlackJAX does); the new window then explores around it with mu = log(10 eps).
    restarted = dual_averaging_init(jnp.exp(dual.log_step_size_avg))
    dual = DualAveragingState(*(jnp.where(window_end, a, b) for a, b in zip(restarted, dual)))
    welford = WelfordState(*(jnp.where(window_end, a, b) for a, b in zip(welford_init(position), welford)))

    last = t == num_warmup - 1
    step_size = jnp.where(last, jnp.exp(dual.log_step_size_avg), step_size)
    new = AdaptationState.pack(step_size, inverse_mass, dual, welford)
    return AdaptationState(*(jnp.where(in_warmup, a, b) for a, b in zip(new, state)))
