"""Leapfrog integration of Hamiltonian dynamics with a diagonal Euclidean metric.

H(x, p) = -log pi(x) + K(p),  K(p) = 1/2 p^T M^{-1} p,  M^{-1} = diag(inverse_mass).

The leapfrog (Stormer-Verlet) map is symplectic and time-reversible, with local energy
error O(eps^3) and global error O(eps^2) (Leimkuhler & Reich 2004; Neal 2011, section 5.2).

Padding: a coordinate whose inverse mass is 0 has zero velocity, so it never moves and it
adds nothing to the kinetic energy or to p^# = M^{-1} p (and so nothing to the U-turn
criterion). The samplers set the inverse mass of padded groups to 0, which makes a padded
model follow exactly the trajectory of the unpadded one.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from . import counter_rng

__all__ = ["IntegratorState", "kinetic_energy", "leapfrog", "momentum_normals", "sample_momentum", "new_state"]


class IntegratorState(NamedTuple):
    """A point in phase space with its log density and gradient (one chain)."""

    position: jax.Array
    momentum: jax.Array
    logdensity: jax.Array
    grad: jax.Array


LogDensityAndGrad = Callable[[jax.Array], tuple[jax.Array, jax.Array]]


def kinetic_energy(momentum, inverse_mass):
    """K(p) = 1/2 sum_i m^{-1}_i p_i^2."""
    return 0.5 * jnp.sum(inverse_mass * momentum * momentum)


def momentum_normals(key, d: int, dtype):
    """The d standard normals of a transition's momentum: stream 0 of its `counter_rng`
    key. The kernels draw them in `init`, or take them from the driver, which draws them
    one transition ahead (`sampler.Lane.z`)."""
    return counter_rng.normal(key, jnp.arange(d), 0, dtype)


def sample_momentum(z, inverse_mass):
    """p ~ Normal(0, M) from standard normals z: p_i = z_i / sqrt(m^{-1}_i), 0 where m^{-1}_i = 0."""
    live = inverse_mass > 0
    return jnp.where(live, z * jax.lax.rsqrt(jnp.where(live, inverse_mass, 1.0)), 0.0)


def new_state(position, momentum, logdensity_and_grad: LogDensityAndGrad) -> IntegratorState:
    lp, grad = logdensity_and_grad(position)
    return IntegratorState(position, momentum, lp, grad)


def leapfrog(
    state: IntegratorState, step_size, inverse_mass, logdensity_and_grad: LogDensityAndGrad
) -> IntegratorState:
    """One leapfrog step of size `step_size` (negative to integrate backward in time).

    p_{1/2} = p + eps/2 grad log pi(x);  x' = x + eps M^{-1} p_{1/2};  p' = p_{1/2} + eps/2 grad log pi(x').
    """
    half = 0.5 * step_size
    p_half = state.momentum + half * state.grad
    position = state.position + step_size * inverse_mass * p_half
    lp, grad = logdensity_and_grad(position)
    momentum = p_half + half * grad
    return IntegratorState(position, momentum, lp, grad)
