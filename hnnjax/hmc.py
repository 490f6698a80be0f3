"""Static-trajectory HMC (Neal 2011) as a one-leapfrog-per-call state machine (one chain).

A transition draws p ~ N(0, M), integrates `num_steps` leapfrog steps and accepts the end
point with probability min(1, exp(H0 - H)) (Metropolis). The same `init` / `advance` /
`finish` interface as `nuts.py` lets every driver run either kernel. A trajectory whose
energy error exceeds `max_delta` is divergent: it stops there and is rejected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp

from . import counter_rng
from .integrators import IntegratorState, kinetic_energy, leapfrog, momentum_normals, sample_momentum
from .nuts import ChainState, Info

__all__ = ["HMC", "Trajectory", "init", "idle", "advance", "finish"]


@dataclass(frozen=True)
class HMC:
    """Static configuration of the HMC kernel: a fixed number of leapfrog steps."""

    num_steps: int = 16
    max_delta: float = 1000.0

    name = "hmc"


class Trajectory(NamedTuple):
    key: jax.Array
    energy0: jax.Array
    start: ChainState
    state: IntegratorState
    n_steps: jax.Array
    num_steps: jax.Array
    diverging: jax.Array
    divergence_position: jax.Array
    done: jax.Array


def init(key, chain: ChainState, step_size, inverse_mass, config: HMC, num_steps=None, z=None) -> Trajectory:
    """Start a trajectory; `key` is a `counter_rng` key (streams 0, momentum, and 1, accept);
    `num_steps` (traced) overrides the static count (used by ChEES); `z`: the momentum's
    normals, `momentum_normals(key, d, dtype)`, if the caller drew them."""
    del step_size
    z = momentum_normals(key, inverse_mass.shape[-1], chain.position.dtype) if z is None else z
    p0 = sample_momentum(z, inverse_mass)
    energy0 = -chain.logdensity + kinetic_energy(p0, inverse_mass)
    steps = jnp.asarray(config.num_steps if num_steps is None else num_steps, jnp.int32)
    return Trajectory(
        key=key,
        energy0=energy0,
        start=chain,
        state=IntegratorState(chain.position, p0, chain.logdensity, chain.grad),
        n_steps=jnp.zeros((), jnp.int32),
        num_steps=steps,
        diverging=jnp.zeros((), bool),
        divergence_position=jnp.zeros_like(chain.position),
        done=steps <= 0,
    )


def idle(chain: ChainState, config: HMC) -> Trajectory:
    """A trajectory of no steps with zero momentum: it has ended at its start, `chain`,
    which `finish` accepts. The drivers start their lanes from it (see `nuts.idle`)."""
    zero = jnp.zeros_like(chain.position)
    return init(jnp.zeros((3,), jnp.uint32), chain, None, jnp.ones_like(chain.position), config,
                num_steps=0, z=zero)


def advance(traj: Trajectory, step_size, inverse_mass, logdensity_and_grad, config: HMC) -> Trajectory:
    new = leapfrog(traj.state, step_size, inverse_mass, logdensity_and_grad)
    delta = -new.logdensity + kinetic_energy(new.momentum, inverse_mass) - traj.energy0
    diverging = ~(delta <= config.max_delta)  # NaN counts as divergent
    n_steps = traj.n_steps + 1
    return traj._replace(
        state=new,
        n_steps=n_steps,
        diverging=diverging,
        divergence_position=jnp.where(diverging, new.position, traj.divergence_position),
        done=diverging | (n_steps >= traj.num_steps),
    )


def finish(traj: Trajectory, inverse_mass) -> tuple[ChainState, Info]:
    """Metropolis accept/reject of the trajectory's end point."""
    end = traj.state
    energy = -end.logdensity + kinetic_energy(end.momentum, inverse_mass)
    log_ratio = jnp.where(traj.diverging | jnp.isnan(energy), -jnp.inf, traj.energy0 - energy)
    accept_prob = jnp.exp(jnp.minimum(log_ratio, 0.0))
    accept = counter_rng.uniform(traj.key, 0, 1, accept_prob.dtype) < accept_prob
    chain = jax.tree.map(
        lambda n, o: jnp.where(accept, n, o),
        ChainState(end.position, end.logdensity, end.grad),
        traj.start,
    )
    info = Info(
        accept_stat=accept_prob,
        diverging=traj.diverging,
        divergence_position=traj.divergence_position,
        tree_depth=jnp.zeros((), jnp.int32),
        n_steps=traj.n_steps,
        energy=jnp.where(accept, energy, traj.energy0),
    )
    return chain, info
