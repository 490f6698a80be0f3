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

Checkpoints, one row per leaf. Leaf i (0-based) of a subtree closes the binary-tree nodes
of levels m = 1..t(i), t(i) = the number of trailing one bits of i; the level-m node closing
at i starts at leaf s_m = i + 1 - 2^m, its right half at s_(m-1) (s_0 = i) and its left half
ends at leaf i - 2^(m-1). The three criteria on that node need the momentum at s_m and at
s_(m-1), the momentum sum before s_m and before s_(m-1), and the momentum at i - 2^(m-1).
- `ckpt[popcount(i)]` = (p_i, momentum sum before i, p_(i-1)), written by every leaf.
  popcount(s_m) = popcount(i) - m for m = 0..t(i), and no leaf between s_m and i writes that
  row (any leaf s_m < j <= i has popcount(j) = popcount(s_m) + popcount(j - s_m) >
  popcount(s_m)): the closing checks read rows popcount(i) - m (NumPyro's scheme, extended
  to Stan's extra checks). The end of the level-m node's left half is leaf s_(m-1) - 1, whose
  momentum is the third vector of row popcount(s_(m-1)) (leaf i - 1 is the edge that leaf i
  was integrated from).
So the level-m node reads only rows popcount(i) - m and popcount(i) - m + 1: adjacent rows,
which the checks take as two static slices of the table (no gather). A leaf writes one row
(a dynamic-update-slice, O(d); `packing.set_row`, so that a few vmapped lanes need no
scatter loop) instead of selecting over all levels, with the same values and arithmetic
as a per-level table (same draws, bit for bit in the benchmarks), and the
checks read the updated table, so XLA updates the loop-carried buffer in place. The checks
on the closing levels are computed either for all max_depth - 1 pairs of rows at once,
masked (d < LOOP_CHECKS_MIN_DIM), or in a loop over the closing levels only (O(d) per
closing level, one on average; large d, where the all-levels check cost several times the
gradient). (An earlier layout kept the left halves' ends in a second table indexed by
trailing ones and gathered the checked rows: XLA copied that table and materialized the
gather every step.)

Layout (why so few arrays): XLA on CPU turns every array that a loop iteration rewrites into
its own kernel (it does not fuse several outputs into one kernel), so the cost of an
iteration follows its number of kernels and the copying. (XLA runs a loop body's kernels
inline only if every buffer is <= 512 bytes, otherwise through a thread pool: `ThunkExecutor`
in openxla/xla, xla/backends/cpu/runtime/thunk_executor.h. Meeting that threshold does not
pay: a variant that kept the checkpoints by level, one small array per level read with static
indices, ran its loop body inline (XLA's log, TF_CPP_VMODULE=thunk_executor=2:
is_sequential=true at 2 lanes of d = 10 in float64) with the same draws bit for bit, but it
had ten more kernels and was no faster: eight schools on 2 CPU devices x 2 chains, float64,
median run 0.205 s against 0.185 s as packed; 256 lanes, 7.5 s against 7.7 s.) So the state is
packed: both trajectory edges (position, momentum, gradient) in one (2, 3, d) array, the
trajectory and subtree proposals in one (2, 2, d), the momentum sums and the near edge's
momentum in one (3, d) (the divergence position is the last moved edge), the scalars in one
float, one int and one bool vector; the float vector is built with `packing.pack_scalars`
(one kernel, where `jnp.stack` of its ten scalars took eleven). `TreeState` has read-only
views with the old names (`left`, `right`, `proposal`, `depth`, `n_steps`, `done`, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp

from . import counter_rng
from .packing import pack_scalars, set_row
from .integrators import IntegratorState, kinetic_energy, leapfrog, momentum_normals, sample_momentum

__all__ = ["NUTS", "Proposal", "TreeState", "init", "idle", "advance", "finish", "Info"]


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


# Index of each scalar in TreeState.floats.
_F_ENERGY0, _F_LOG_W, _F_SUB_LOG_W, _F_SUM_ACCEPT, _F_LP_LEFT, _F_LP_RIGHT = range(6)
_F_PROP_LP, _F_PROP_ENERGY, _F_SUB_LP, _F_SUB_ENERGY = range(6, 10)
# Rows of TreeState.vecs.
_V_RHO, _V_SUB_RHO, _V_P_NEAR = range(3)


class TreeState(NamedTuple):
    """The state of one transition, packed into few arrays (see the module docstring).

    Named views (`left`, `right`, `proposal`, `depth`, `done`, ...) read the packed fields;
    they index from the end, so they also work on a batch of trees (leading lane axis).
    """

    key: jax.Array  # (3,) uint32 counter_rng key of the per-leaf uniforms
    directions: jax.Array  # (max_depth,) +1/-1 for each depth, drawn at the start
    ints: jax.Array  # (3,) int32: depth, leaf (index in the current subtree), n_steps
    flags: jax.Array  # (2,) bool: diverging, done
    floats: jax.Array  # (10,) the scalars, indexed by the _F_* constants
    edges: jax.Array  # (2, 3, d): [left, right] x [position, momentum, grad]
    props: jax.Array  # (2, 2, d): [proposal, subtree proposal] x [position, grad]
    vecs: jax.Array  # (3, d): rho, sub_rho, p_near
    ckpt: jax.Array  # (max_depth, 3, d): [momentum, momentum sum before, previous leaf's momentum] by popcount

    # --- views ---------------------------------------------------------------------------
    depth = property(lambda self: self.ints[..., 0])
    n_steps = property(lambda self: self.ints[..., 2])
    diverging = property(lambda self: self.flags[..., 0])
    done = property(lambda self: self.flags[..., 1])
    energy0 = property(lambda self: self.floats[..., _F_ENERGY0])
    sum_accept = property(lambda self: self.floats[..., _F_SUM_ACCEPT])
    rho = property(lambda self: self.vecs[..., _V_RHO, :])
    sub_rho = property(lambda self: self.vecs[..., _V_SUB_RHO, :])
    p_near = property(lambda self: self.vecs[..., _V_P_NEAR, :])

    @property
    def divergence_position(self):
        # A divergent leaf ends the transition, so it is still the edge that moved last
        # (the direction of the current depth); zeros when the transition did not diverge.
        forward = jnp.take_along_axis(self.directions, self.depth[..., None], -1) > 0
        moved = jnp.where(forward, self.edges[..., 1, 0, :], self.edges[..., 0, 0, :])
        return jnp.where(self.diverging[..., None], moved, jnp.zeros_like(moved))

    def _edge(self, k, lp):
        e = self.edges
        return IntegratorState(e[..., k, 0, :], e[..., k, 1, :], self.floats[..., lp], e[..., k, 2, :])

    def _proposal(self, k, lp, energy):
        q = self.props
        return Proposal(q[..., k, 0, :], self.floats[..., lp], q[..., k, 1, :], self.floats[..., energy])

    left = property(lambda self: self._edge(0, _F_LP_LEFT))
    right = property(lambda self: self._edge(1, _F_LP_RIGHT))
    proposal = property(lambda self: self._proposal(0, _F_PROP_LP, _F_PROP_ENERGY))
    sub_proposal = property(lambda self: self._proposal(1, _F_SUB_LP, _F_SUB_ENERGY))


def _continues(p_sharp_a, p_sharp_b, rho):
    """Generalized no-U-turn criterion (Betancourt 2017, eq. A.13): True while not turning."""
    return (jnp.sum(p_sharp_a * rho, -1) > 0) & (jnp.sum(p_sharp_b * rho, -1) > 0)


# Dimension from which the U-turn checks loop over the closing levels instead of checking
# all levels at once (module docstring); read when `advance` is traced.
LOOP_CHECKS_MIN_DIM = 64


def init(key, chain: ChainState, step_size, inverse_mass, config: NUTS, z=None) -> TreeState:
    """Start a transition from `chain`: draw the momentum and the doubling directions.

    `key` is a `counter_rng` key for this transition (the driver's `counter_rng.transition`);
    it uses streams 0 (momentum), 1 (directions) and 2 (the leaves' uniforms). `z`: the
    momentum's normals, `momentum_normals(key, d, dtype)`, if the caller drew them.
    """
    del step_size
    z = momentum_normals(key, inverse_mass.shape[-1], chain.position.dtype) if z is None else z
    p0 = sample_momentum(z, inverse_mass)
    dir_bits, _ = counter_rng.bits(key, jnp.arange(config.max_depth), 1)
    directions = jnp.where((dir_bits >> 31) == 1, 1, -1).astype(jnp.int32)
    return _tree(counter_rng.substream(key, 2), directions, chain, p0,
                 -chain.logdensity + kinetic_energy(p0, inverse_mass), False, config)


def idle(chain: ChainState, config: NUTS) -> TreeState:
    """A transition that has already ended and proposes `chain` (zero momentum, no
    leapfrog step, no random number). The drivers start their lanes from it
    (`sampler._lane_start`), so that transition 0 begins in the restart code like every
    later one and the program holds one copy of `init`.
    """
    return _tree(jnp.zeros((3,), jnp.uint32), jnp.ones((config.max_depth,), jnp.int32), chain,
                 jnp.zeros_like(chain.position), -chain.logdensity, True, config)


def _tree(key, directions, chain: ChainState, p0, energy0, done: bool, config: NUTS) -> TreeState:
    """A tree of one state, `chain` with momentum `p0`, whose trajectory and subtree
    proposals are that state; `done` marks it ended."""
    dtype = chain.position.dtype
    zero = jnp.zeros((), dtype)
    lp = chain.logdensity.astype(dtype)
    energy0 = energy0.astype(dtype)
    floats = pack_scalars([energy0, zero, jnp.full((), -jnp.inf, dtype), zero, lp, lp, lp, energy0, lp, energy0])
    edge = jnp.stack([chain.position, p0, chain.grad])
    prop = jnp.stack([chain.position, chain.grad])
    return TreeState(
        key=key,
        directions=directions,
        ints=jnp.zeros((3,), jnp.int32),
        flags=jnp.array([False, done]),
        floats=floats,
        edges=jnp.stack([edge, edge]),
        props=jnp.stack([prop, prop]),
        vecs=jnp.stack([p0, jnp.zeros_like(p0), p0]),
        ckpt=jnp.zeros((config.max_depth, 3) + p0.shape, dtype),
    )


def _popcount(x):
    return jax.lax.population_count(x)


def _node_ok(start_m, before_m, start_h, before_h, end_h, p, rho_sub, sharp):
    """The three criteria on the level-m node closing at this leaf (h = m - 1, its halves):
    the whole node; the left half plus the first state of the right half; the right half
    plus the last state of the left half. Arrays may carry a leading level axis."""
    return (
        _continues(sharp(start_m), sharp(p), rho_sub - before_m)
        & _continues(sharp(start_m), sharp(start_h), before_h - before_m + start_h)
        & _continues(sharp(end_h), sharp(p), rho_sub - before_h + end_h)
    )


def _turning_vectorized(ckpt, pc, top, p, rho_sub, sharp):
    """Any node of levels 1..top turning: all levels at once, masked (small d). The
    level-m node closing here reads rows pc - m and pc - m + 1, so every pair of adjacent
    rows is checked (static slices, no gather) and the pairs r = pc - top .. pc - 1 kept."""
    K = ckpt.shape[0] - 1
    if K == 0:  # max_depth 1: no subtree has a node to close
        return jnp.zeros((), bool)
    lo, hi = ckpt[:-1], ckpt[1:]
    node_ok = _node_ok(lo[:, 0], lo[:, 1], hi[:, 0], hi[:, 1], hi[:, 2], p, rho_sub, sharp)
    r = jnp.arange(K)
    return jnp.any((r >= pc - top) & (r < pc) & ~node_ok)


def _turning_loop(ckpt, pc, top, p, rho_sub, sharp):
    """Any node of levels 1..top turning: a loop over the closing levels only (large d),
    O(d) per closing level instead of O(K d) per leaf; stops at the first turning node."""

    def cond(c):
        m, ok = c
        return ok & (m <= top)

    def body(c):
        m, _ = c
        row_m, row_h = ckpt[pc - m], ckpt[pc - m + 1]
        return m + 1, _node_ok(row_m[0], row_m[1], row_h[0], row_h[1], row_h[2], p, rho_sub, sharp)

    _, ok = jax.lax.while_loop(cond, body, (jnp.ones((), jnp.int32), jnp.ones((), bool)))
    return ~ok


def advance(tree: TreeState, step_size, inverse_mass, logdensity_and_grad, config: NUTS) -> TreeState:
    """Integrate one leapfrog step of the current subtree and update the tree state.

    Meaningless once `tree.done` is set: drivers do not read a finished tree after
    advancing it.
    """
    f = tree.floats
    depth, i, n_prev = tree.ints[0], tree.ints[1], tree.ints[2]
    forward = tree.directions[depth] > 0
    edge_arr = jnp.where(forward, tree.edges[1], tree.edges[0])
    edge = IntegratorState(edge_arr[0], edge_arr[1], jnp.where(forward, f[_F_LP_RIGHT], f[_F_LP_LEFT]), edge_arr[2])
    new = leapfrog(edge, jnp.where(forward, step_size, -step_size), inverse_mass, logdensity_and_grad)
    p = new.momentum
    energy = -new.logdensity + kinetic_energy(p, inverse_mass)
    delta = energy - f[_F_ENERGY0]
    delta = jnp.where(jnp.isnan(delta), jnp.inf, delta)
    diverging = delta > config.max_delta
    log_w = -delta
    n_steps = n_prev + 1
    sum_accept = f[_F_SUM_ACCEPT] + jnp.exp(jnp.minimum(log_w, 0.0))
    side = jnp.arange(2) == forward.astype(jnp.int32)  # the edge that moves: [left, right]
    edges = jnp.where(side[:, None, None], jnp.stack([new.position, p, new.grad])[None], tree.edges)
    lp_left = jnp.where(forward, f[_F_LP_LEFT], new.logdensity)
    lp_right = jnp.where(forward, new.logdensity, f[_F_LP_RIGHT])

    # Progressive uniform sampling of the subtree's proposal.
    # One log of both uniforms: XLA keeps its result (log is expensive), so the Threefry
    # rounds are compiled once; two logs, each of its element, compiled them twice.
    log_u_leaf, log_u_merge = jnp.log(counter_rng.uniform(tree.key, jnp.stack([2 * n_steps, 2 * n_steps + 1]), 0, p.dtype))
    sub_log_weight = jnp.logaddexp(f[_F_SUB_LOG_W], log_w)
    take = log_u_leaf < log_w - sub_log_weight
    sub_xg = jnp.where(take, jnp.stack([new.position, new.grad]), tree.props[1])
    sub_lp = jnp.where(take, new.logdensity, f[_F_SUB_LP])
    sub_energy = jnp.where(take, energy, f[_F_SUB_ENERGY])

    # U-turn checks on every binary-tree node that this leaf closes (module docstring):
    # leaf i stores (p, rho before it, the previous leaf's p) at row popcount(i).
    rho_old, sub_rho_old, p_near_old = tree.vecs[_V_RHO], tree.vecs[_V_SUB_RHO], tree.vecs[_V_P_NEAR]
    pc = _popcount(i)
    t1 = _popcount(i ^ (i + 1)) - 1  # trailing ones of i: the levels 1..t1 close here
    # Leaf i - 1 is the edge this step moved from (for i = 0 it goes to the third vector
    # of row 0, which no check reads: no left half ends before leaf 0). The checks read
    # the updated array, so XLA updates the loop-carried buffer in place.
    ckpt = set_row(tree.ckpt, pc, jnp.stack([p, sub_rho_old, edge.momentum]))
    rho_sub = sub_rho_old + p
    sharp = lambda v: inverse_mass * v  # noqa: E731
    if p.shape[-1] >= LOOP_CHECKS_MIN_DIM:
        turning = _turning_loop(ckpt, pc, jnp.minimum(t1, depth), p, rho_sub, sharp)
    else:
        turning = _turning_vectorized(ckpt, pc, jnp.minimum(t1, depth), p, rho_sub, sharp)

    invalid = diverging | turning
    subtree_done = (i + 1) == jnp.left_shift(1, depth)
    merge = subtree_done & ~invalid

    # Merge the finished subtree into the trajectory (biased progressive sampling).
    accept_sub = merge & (log_u_merge < sub_log_weight - f[_F_LOG_W])
    prop_xg = jnp.where(accept_sub, sub_xg, tree.props[0])
    prop_lp = jnp.where(accept_sub, sub_lp, f[_F_PROP_LP])
    prop_energy = jnp.where(accept_sub, sub_energy, f[_F_PROP_ENERGY])
    log_weight = jnp.where(merge, jnp.logaddexp(f[_F_LOG_W], sub_log_weight), f[_F_LOG_W])
    rho = rho_old + rho_sub
    p_first = ckpt[0, 0]  # leaf 0 of the subtree (popcount 0)
    p_far = jnp.where(forward, tree.edges[0, 1], tree.edges[1, 1])
    top_ok = (
        _continues(sharp(p_far), sharp(p), rho)
        & _continues(sharp(p_far), sharp(p_first), rho_old + p_first)
        & _continues(sharp(p_near_old), sharp(p), rho_sub + p_near_old)
    )
    new_depth = depth + merge.astype(jnp.int32)
    done = invalid | (merge & (~top_ok | (new_depth >= config.max_depth)))

    # Start the next subtree (when done, nothing reads the tree past `finish`).
    next_forward = tree.directions[jnp.minimum(new_depth, config.max_depth - 1)] > 0
    p_near = jnp.where(next_forward, edges[1, 1], edges[0, 1])
    vecs = jnp.stack([
        jnp.where(merge, rho, rho_old),
        jnp.where(merge, jnp.zeros_like(rho_sub), rho_sub),
        jnp.where(merge, p_near, p_near_old),
    ])
    floats = pack_scalars([
        f[_F_ENERGY0], log_weight, jnp.where(merge, -jnp.inf, sub_log_weight), sum_accept,
        lp_left, lp_right, prop_lp, prop_energy, sub_lp, sub_energy,
    ])
    return TreeState(
        key=tree.key,
        directions=tree.directions,
        ints=jnp.stack([new_depth, jnp.where(merge, 0, i + 1), n_steps]),
        flags=jnp.stack([diverging, done]),
        floats=floats,
        edges=edges,
        props=jnp.stack([prop_xg, sub_xg]),
        vecs=vecs,
        ckpt=ckpt,
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
