"""The No-U-Turn Sampler as a one-leapfrog-per-call state machine (one chain).

A NUTS transition (Hoffman & Gelman 2014; Betancourt 2017, appendix A; Stan reference
manual) grows a trajectory by doubling: at depth k a subtree of 2^k leapfrog steps is
integrated forward or backward in time from the current edge. Here the subtree is built
iteratively, leaf by leaf, so that a transition is a sequence of calls to `advance`, each
doing exactly one leapfrog step. Nothing recurses, every array has a static shape, and a
driver can advance many chains in lock step (vmap) without any chain waiting for another
chain's trajectory to end: when `done` is set, the driver reads the draw with `finish` and
starts the next transition with `init` in the same loop iteration.

Details, all as in Stan:
- Multinomial sampling: within a subtree each new leaf replaces the subtree's proposal with
  probability w_leaf / W_subtree (progressive uniform sampling); a completed subtree's
  proposal replaces the trajectory's with probability min(1, W_subtree / W_old)
  (biased progressive sampling, Betancourt 2017 A.3.2). w = exp(H0 - H).
- Generalized U-turn criterion with p^# = M^{-1} p: a span with end momenta p_a, p_b and
  momentum sum rho continues while p_a^# . rho > 0 and p_b^# . rho > 0. It is checked on
  every complete sub-subtree (each node of the binary tree) and, as Stan does since 2.21,
  also across each merge: the left half plus the first state of the right half, and the
  right half plus the last state of the left half.
- A subtree that turns or diverges is discarded; the transition ends.
- Divergence: H - H0 > max_delta (default 1000) or a non-finite energy; the position where
  it happened is reported.
- Acceptance statistic for adaptation: mean of min(1, exp(H0 - H)) over every leapfrog
  state computed in the transition, including those of a discarded subtree.

Checkpoints (why the (max_depth+1, d) arrays): leaf i of a subtree closes the binary-tree
nodes of size 2^m with (i + 1) % 2^m == 0. For each level m the state keeps the momentum at
the start of the open node, the running momentum sum before it, and the momentum at the
end of the last closed node, which are exactly what the three criteria need when a node
closes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp

from . import counter_rng
from .integrators import IntegratorState, kinetic_energy, leapfrog, sample_momentum

__all__ = ["NUTS", "Proposal", "TreeState", "init", "advance", "finish", "Info"]


@dataclass(frozen=True)
class NUTS:
    """Static configuration of the NUTS kernel."""

    max_depth: int = 10
    max_delta: float = 1000.0

    name = "nuts"


class ChainState(NamedTuple):
    """The Markov chain's state between transitions."""

    position: jax.Array
    logdensity: jax.Array
    grad: jax.Array


class Info(NamedTuple):
    """Per-transition diagnostics (Stan's sampler parameters)."""

    accept_stat: jax.Array
    diverging: jax.Array
    divergence_position: jax.Array
    tree_depth: jax.Array
    n_steps: jax.Array
    energy: jax.Array


class Proposal(NamedTuple):
    position: jax.Array
    logdensity: jax.Array
    grad: jax.Array
    energy: jax.Array


class TreeState(NamedTuple):
    key: jax.Array  # two uint32 words for the per-leaf counter-based uniforms
    energy0: jax.Array
    left: IntegratorState
    right: IntegratorState
    proposal: Proposal
    log_weight: jax.Array
    rho: jax.Array
    directions: jax.Array  # +1/-1 for each depth, drawn at the start
    depth: jax.Array
    leaf: jax.Array
    p_near: jax.Array  # momentum at the trajectory's edge that the current subtree extends
    sub_proposal: Proposal
    sub_log_weight: jax.Array
    sub_rho: jax.Array
    ckpt_p_start: jax.Array
    ckpt_rho_before: jax.Array
    ckpt_p_end: jax.Array
    sum_accept: jax.Array
    n_steps: jax.Array
    diverging: jax.Array
    divergence_position: jax.Array
    done: jax.Array


def _continues(p_sharp_a, p_sharp_b, rho):
    """Generalized no-U-turn criterion (Betancourt 2017, eq. A.13): True while not turning."""
    return (jnp.sum(p_sharp_a * rho, -1) > 0) & (jnp.sum(p_sharp_b * rho, -1) > 0)


def init(key, chain: ChainState, step_size, inverse_mass, config: NUTS) -> TreeState:
    """Start a transition from `chain`: draw the momentum and the doubling directions.

    `key` is a `counter_rng` key (two uint32 words) for this transition.
    """
    del step_size
    dtype = chain.position.dtype
    z = counter_rng.normal(key, jnp.arange(inverse_mass.shape[-1]), 0, dtype)
    p0 = sample_momentum(z, inverse_mass)
    energy0 = -chain.logdensity + kinetic_energy(p0, inverse_mass)
    start = IntegratorState(chain.position, p0, chain.logdensity, chain.grad)
    dir_bits, _ = counter_rng.bits(key, jnp.arange(config.max_depth), 1)
    directions = jnp.where((dir_bits >> 31) == 1, 1, -1).astype(jnp.int32)
    levels = jnp.zeros((config.max_depth + 1,) + p0.shape, dtype)
    zero = jnp.zeros((), dtype)
    proposal = Proposal(chain.position, chain.logdensity, chain.grad, energy0)
    return TreeState(
        key=counter_rng.derive(key, 0, 2),
        energy0=energy0,
        left=start,
        right=start,
        proposal=proposal,
        log_weight=zero,
        rho=p0,
        directions=directions,
        depth=jnp.zeros((), jnp.int32),
        leaf=jnp.zeros((), jnp.int32),
        p_near=p0,
        sub_proposal=proposal,
        sub_log_weight=jnp.full((), -jnp.inf, dtype),
        sub_rho=jnp.zeros_like(p0),
        ckpt_p_start=levels,
        ckpt_rho_before=levels,
        ckpt_p_end=levels,
        sum_accept=zero,
        n_steps=jnp.zeros((), jnp.int32),
        diverging=jnp.zeros((), bool),
        divergence_position=jnp.zeros_like(chain.position),
        done=jnp.zeros((), bool),
    )


def advance(tree: TreeState, step_size, inverse_mass, logdensity_and_grad, config: NUTS) -> TreeState:
    """Integrate one leapfrog step of the current subtree and update the tree state.

    Must not be called once `tree.done` is set (drivers mask it out).
    """
    forward = tree.directions[tree.depth] > 0
    edge = jax.tree.map(lambda r, l: jnp.where(forward, r, l), tree.right, tree.left)
    new = leapfrog(edge, jnp.where(forward, step_size, -step_size), inverse_mass, logdensity_and_grad)
    p = new.momentum
    energy = -new.logdensity + kinetic_energy(p, inverse_mass)
    delta = energy - tree.energy0
    delta = jnp.where(jnp.isnan(delta), jnp.inf, delta)
    diverging = delta > config.max_delta
    log_w = -delta
    n_steps = tree.n_steps + 1
    sum_accept = tree.sum_accept + jnp.exp(jnp.minimum(log_w, 0.0))
    left = jax.tree.map(lambda n, o: jnp.where(forward, o, n), new, tree.left)
    right = jax.tree.map(lambda n, o: jnp.where(forward, n, o), new, tree.right)

    # Progressive uniform sampling of the subtree's proposal.
    u_leaf, u_merge = counter_rng.uniform(tree.key, jnp.stack([2 * n_steps, 2 * n_steps + 1]), 0, p.dtype)
    sub_log_weight = jnp.logaddexp(tree.sub_log_weight, log_w)
    take = jnp.log(u_leaf) < log_w - sub_log_weight
    leaf_prop = Proposal(new.position, new.logdensity, new.grad, energy)
    sub_proposal = jax.tree.map(lambda n, o: jnp.where(take, n, o), leaf_prop, tree.sub_proposal)

    # U-turn checks on every binary-tree node that this leaf closes.
    i, depth = tree.leaf, tree.depth
    levels = jnp.arange(config.max_depth + 1)
    size = jnp.left_shift(1, levels)
    in_tree = levels <= depth
    opens = ((i % size) == 0) & in_tree
    closes = (((i + 1) % size) == 0) & in_tree
    rho_sub = tree.sub_rho + p
    p_start = jnp.where(opens[:, None], p, tree.ckpt_p_start)
    rho_before = jnp.where(opens[:, None], tree.sub_rho, tree.ckpt_rho_before)
    sharp = lambda v: inverse_mass * v  # noqa: E731
    start_m, before_m = p_start[1:], rho_before[1:]
    start_h, before_h, end_h = p_start[:-1], rho_before[:-1], tree.ckpt_p_end[:-1]
    node_ok = (
        _continues(sharp(start_m), sharp(p), rho_sub - before_m)
        & _continues(sharp(start_m), sharp(start_h), before_h - before_m + start_h)
        & _continues(sharp(end_h), sharp(p), rho_sub - before_h + end_h)
    )
    turning = jnp.any(closes[1:] & ~node_ok)
    p_end = jnp.where(closes[:, None], p, tree.ckpt_p_end)

    invalid = diverging | turning
    subtree_done = (i + 1) == jnp.left_shift(1, depth)
    merge = subtree_done & ~invalid

    # Merge the finished subtree into the trajectory (biased progressive sampling).
    accept_sub = merge & (jnp.log(u_merge) < sub_log_weight - tree.log_weight)
    proposal = jax.tree.map(lambda n, o: jnp.where(accept_sub, n, o), sub_proposal, tree.proposal)
    log_weight = jnp.where(merge, jnp.logaddexp(tree.log_weight, sub_log_weight), tree.log_weight)
    rho = tree.rho + rho_sub
    p_first = p_start[depth]
    p_far = jnp.where(forward, tree.left.momentum, tree.right.momentum)
    top_ok = (
        _continues(sharp(p_far), sharp(p), rho)
        & _continues(sharp(p_far), sharp(p_first), tree.rho + p_first)
        & _continues(sharp(tree.p_near), sharp(p), rho_sub + tree.p_near)
    )
    new_depth = depth + merge.astype(jnp.int32)
    done = invalid | (merge & (~top_ok | (new_depth >= config.max_depth)))

    # Start the next subtree (harmless when done: the driver stops advancing this tree).
    next_forward = tree.directions[jnp.minimum(new_depth, config.max_depth - 1)] > 0
    p_near = jnp.where(next_forward, right.momentum, left.momentum)
    return TreeState(
        key=tree.key,
        energy0=tree.energy0,
        left=left,
        right=right,
        proposal=proposal,
        log_weight=log_weight,
        rho=jnp.where(merge, rho, tree.rho),
        directions=tree.directions,
        depth=new_depth,
        leaf=jnp.where(merge, 0, i + 1),
        p_near=jnp.where(merge, p_near, tree.p_near),
        sub_proposal=sub_proposal,
        sub_log_weight=jnp.where(merge, -jnp.inf, sub_log_weight),
        sub_rho=jnp.where(merge, jnp.zeros_like(rho_sub), rho_sub),
        ckpt_p_start=p_start,
        ckpt_rho_before=rho_before,
        ckpt_p_end=p_end,
        sum_accept=sum_accept,
        n_steps=n_steps,
        diverging=diverging,
        divergence_position=jnp.where(diverging, new.position, tree.divergence_position),
        done=done,
    )


def finish(tree: TreeState, inverse_mass=None) -> tuple[ChainState, Info]:
    """The draw and the diagnostics of a finished transition (`inverse_mass` is unused;
    it keeps the signature of `hmc.finish`)."""
    del inverse_mass
    prop = tree.proposal
    info = Info(
        accept_stat=tree.sum_accept / tree.n_steps.astype(tree.sum_accept.dtype),
        diverging=tree.diverging,
        divergence_position=tree.divergence_position,
        tree_depth=tree.depth,
        n_steps=tree.n_steps,
        energy=prop.energy,
    )
    return ChainState(prop.position, prop.logdensity, prop.grad), info
