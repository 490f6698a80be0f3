"""The driver: the one module that applies `vmap` and `jit`.

Every kernel (`nuts`, `hmc`) is a per-chain state machine with `init`, `advance` (one
leapfrog step) and `finish`. A *lane* is one chain of one model. Two drivers run lanes:

- `independent` (default): one `while_loop` in which every lane advances its own trajectory
  by one leapfrog step per iteration; a lane whose transition ends records its draw,
  applies its own warmup update at its own iteration count and starts its next transition
  in the same loop iteration. The batch costs about the mean lane's work instead of, at
  every transition, the longest trajectory among all lanes.
- `synchronized`: the classic vmapped kernel (as BlackJAX's): a scan over iterations whose
  body runs one whole transition per lane (a `while_loop` over leapfrog steps); lanes
  whose trajectory ended wait for the longest one.

Both draw the same random numbers for the same lane and iteration (the transition key is
`counter_rng.transition(lane key, iteration)`), so they produce the same draws; the tests check it.

ChEES-HMC adapts across the chains of a model, so its unit is a model (`_ModelSlot`: its
chains, its adaptation state): `_run_chees_pool` (independent) runs models in a pool of
slots at their own pace, `_run_chees` (synchronized) in lock step. `RunConfig.for_platform`
picks the pool on CPU and lock step on accelerators.

Keys, computed on the host (`model_keys`, `lane_inputs`): model key = Threefry-2x32 of
(model_id, 0) under the seed; lane key = Threefry-2x32 of (chain, 1) under the model key.
A model's draws therefore depend on its seed, its id and its padded size only.

Compiled programs are cached per (static configuration, devices, shapes, dtypes) in the
process, and on disk (unless HNNJAX_NO_PERSISTENT_CACHE is set; HNNJAX_CACHE_DIR, default
~/.cache/hnnjax/xla) as serialized executables (`_compiled_program`), so a new process
neither traces nor compiles it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import hashlib
import os
import pickle
import tempfile
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import serialize_executable

from . import adaptation, chees, counter_rng, hmc, model, nuts
from .data import Data
from .integrators import kinetic_energy, leapfrog, momentum_normals, sample_momentum, IntegratorState
from .model import Prior
from .nuts import ChainState, Info
from .packing import put_rows

__all__ = ["sample", "RunConfig", "run", "model_keys", "KERNELS", "resolve_kernel"]

KERNELS = {"nuts": nuts.NUTS, "hmc": hmc.HMC, "chees": chees.ChEES}
DRIVERS = ("independent", "synchronized")


def resolve_kernel(kernel) -> Any:
    """A kernel name ("nuts", "hmc", "chees") or a configured instance (hnnjax.NUTS(max_depth=8))."""
    if isinstance(kernel, str):
        if kernel not in KERNELS:
            raise ValueError(f"kernel: expected one of {tuple(KERNELS)} or a kernel instance, got {kernel!r}")
        return KERNELS[kernel]()
    if isinstance(kernel, tuple(KERNELS.values())):
        return kernel
    raise ValueError(f"kernel: expected one of {tuple(KERNELS)} or a kernel instance, got {kernel!r}")


def _kernel_module(kernel):
    return nuts if isinstance(kernel, nuts.NUTS) else hmc  # ChEES runs HMC transitions


@dataclass(frozen=True)
class RunConfig:
    """Static configuration: everything that changes the compiled program."""

    target: Any = model.NormalNormal()
    kernel: Any = nuts.NUTS()
    chains: int = 4
    warmup: int = 1000
    draws: int = 1000
    target_accept: float = 0.8
    driver: str | None = None  # None: `for_platform` picks (independent; ChEES in lock step off CPU)
    init_radius: float = 2.0
    max_lanes: int | None = None  # lanes of the independent driver's pool on each device (None: one per task)
    block_lanes: int | None = None  # lanes per block of ChEES's model-level work (None: `for_platform`)

    def __post_init__(self):
        if self.driver is not None and self.driver not in DRIVERS:
            raise ValueError(f"driver: expected one of {DRIVERS}, got {self.driver!r}")
        if self.block_lanes is not None and int(self.block_lanes) < 1:
            raise ValueError(f"block_lanes: must be >= 1, got {self.block_lanes}")
        if isinstance(self.kernel, chees.ChEES) and int(self.chains) < 2:
            raise ValueError(f"chains: ChEES adapts from the spread across chains, needs >= 2, got {self.chains}")
        for name in ("chains", "draws"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if int(self.warmup) < 0:
            raise ValueError(f"warmup: must be >= 0, got {self.warmup}")
        if int(self.warmup) + int(self.draws) >= 2**32 // counter_rng.TRANSITION_STREAMS - 1:
            raise ValueError("warmup + draws: must be below 2**29 - 1 (the transitions' random streams)")
        if not 0.0 < float(self.target_accept) < 1.0:
            raise ValueError(f"target_accept: must be in (0, 1), got {self.target_accept}")

    @classmethod
    def normal_normal(cls, parametrization="noncentered", kernel="nuts", chains=4, warmup=1000, draws=1000,
                      target_accept=0.8, **others) -> "RunConfig":
        """The configuration of the eight-schools model from `sample`'s arguments."""
        return cls(target=model.NormalNormal(parametrization), kernel=resolve_kernel(kernel), chains=int(chains),
                   warmup=int(warmup), draws=int(draws), target_accept=float(target_accept), **others)

    @property
    def parametrization(self) -> str:
        return self.target.parametrization

    @property
    def total(self) -> int:
        return self.warmup + self.draws

    def for_platform(self, platform: str) -> "RunConfig":
        """The settings left open, fixed for a device platform ("cpu", "gpu", ...).

        driver: "independent", except ChEES on any platform but the CPU (GPUs), which runs
        its models in lock step (H100, 1,000 eight-schools models x 4 chains, 500 + 500:
        111 s in the pool against 3.6 s in lock step; not profiled, but a loop trip there
        costs kernel launches whatever its width, and the pool gathers, adapts and
        restarts models at nearly every leapfrog step).
        block_lanes: 32 on CPU, 4096 elsewhere (one block a trip for up to 4096 / chains
        models, rather than a sequential loop of small ones); neither width was tuned by
        measurement.
        """
        cpu = platform == "cpu"
        driver = self.driver or ("independent" if cpu or not isinstance(self.kernel, chees.ChEES) else "synchronized")
        block = self.block_lanes if self.block_lanes is not None else (32 if cpu else 4096)
        return dataclasses.replace(self, driver=driver, block_lanes=block)


class Lane(NamedTuple):
    """Everything one chain carries through the loop."""

    key: jax.Array  # counter_rng key words of the lane
    target: jax.Array  # target acceptance statistic (a runtime value, not compiled in)
    chain: ChainState
    adapt: adaptation.AdaptationState
    trans: Any
    t: jax.Array
    # The momentum normals of transition t + 1 (stream 0 of its key; transition 0's come
    # from `_start`), drawn one restart ahead: XLA keeps them in the loop state, where
    # drawn in the restart that uses them, XLA compiled the Threefry rounds and the
    # inverse error function into each of the three kernels reading them.
    z: jax.Array


class Record(NamedTuple):
    """What a finished transition writes: the draw and Stan's sampler parameters."""

    position: jax.Array
    accept_stat: jax.Array
    diverging: jax.Array
    divergence_position: jax.Array
    tree_depth: jax.Array
    n_steps: jax.Array
    energy: jax.Array
    step_size: jax.Array


# --- per-lane math (one chain of one model) ------------------------------------------------


def _logdensity_and_grad(config: RunConfig, data, prior):
    return jax.value_and_grad(lambda x: config.target.logdensity(x, data, prior))


def _start(key, position, inverse_mass, ldg, max_iter=100) -> tuple[ChainState, jax.Array, jax.Array]:
    """The chain's starting state and Stan's init_stepsize heuristic, in one loop.

    The heuristic doubles or halves eps (from 1) until the one-step acceptance probability
    crosses 0.8 (Hoffman & Gelman 2014, Algorithm 4). Trip -1 is a leapfrog step of size 0
    with zero momentum: it leaves the position as it is and evaluates the log density and
    gradient there. Trip 0 draws a momentum and sets the direction from eps = 1; trips
    1..max_iter search. One gradient in the program instead of three (eight schools, fresh
    processes: XLA compile 1.73-1.85 s against 2.0 s with the three).
    Each trip draws the next trip's normals (as `Lane.z` does for transitions); the
    last draw, which no trip used, is returned as transition 0's momentum normals (a
    fresh draw of the chain's stream 3, so the program draws no normals outside loops).
    """
    dtype = position.dtype
    d = inverse_mass.shape[-1]
    log_target = jnp.log(jnp.asarray(0.8, dtype))

    def cond(c):
        i, *_, crossed = c
        return ~crossed & (i <= max_iter)

    def body(c):
        i, z, lp, grad, eps, direction, _ = c
        first = i < 0
        z_next = counter_rng.normal(key, (i + 1) * d + jnp.arange(d), 3, dtype)
        p = jnp.where(first, 0.0, sample_momentum(z, inverse_mass))
        h0 = -lp + kinetic_energy(p, inverse_mass)
        new = leapfrog(IntegratorState(position, p, lp, grad), jnp.where(first, 0.0, eps), inverse_mass, ldg)
        h = -new.logdensity + kinetic_energy(new.momentum, inverse_mass)
        la = jnp.where(jnp.isnan(h), -jnp.inf, h0 - h)
        direction = jnp.where(i == 0, jnp.where(la > log_target, 2.0, 0.5).astype(dtype), direction)
        crossed = (i > 0) & jnp.where(direction > 1, ~(la > log_target), ~(la < log_target))
        eps = jnp.where((i > 0) & ~crossed, eps * direction, eps)
        return (i + 1, z_next, jnp.where(first, new.logdensity, lp), jnp.where(first, new.grad, grad),
                eps, direction, crossed)

    zero = jnp.zeros((), dtype)
    init = (jnp.full((), -1, jnp.int32), jnp.zeros_like(position), zero, jnp.zeros_like(position),
            jnp.ones((), dtype), zero, jnp.zeros((), bool))
    _, z_unused, lp, grad, eps, _, _ = jax.lax.while_loop(cond, body, init)
    return ChainState(position, lp, grad), jnp.clip(eps, 1e-6, 1e3), z_unused


def _lane_start(words, target, data: Data, prior: Prior, config: RunConfig) -> Lane:
    """A chain before its first transition: uniform(-r, r) position (Stan), the step-size
    heuristic, and an ended transition (`kmod.idle`) at t = -1, so that the next restart
    begins transition 0 and applies no warmup update."""
    ldg = _logdensity_and_grad(config, data, prior)
    kmod = _kernel_module(config.kernel)
    live = config.target.live(data)
    dtype = live.dtype
    r = config.init_radius
    position = live * (2.0 * r * counter_rng.uniform(words, jnp.arange(live.shape[-1]), 4, dtype) - r)
    inverse_mass = live
    chain, step_size, z = _start(words, position, inverse_mass, ldg)
    adapt = adaptation.adaptation_init(step_size, inverse_mass)
    return Lane(words, target.astype(dtype), chain, adapt, kmod.idle(chain, config.kernel),
                jnp.full((), -1, jnp.int32), z)


def _lane_init(words, target, data: Data, prior: Prior, config: RunConfig) -> Lane:
    """A chain at the start of transition 0 (the synchronized driver's lanes)."""
    return _complete(_lane_start(words, target, data, prior, config), data, prior, config)[0]


def _transition_key(words, t):
    """Key of the lane's transition t: depends on the lane key and t only."""
    return counter_rng.transition(words, t)


def _schedule(config: RunConfig):
    s = adaptation.warmup_schedule(config.warmup)
    pad = np.zeros(1, bool)  # safe indexing at t == warmup
    return adaptation.Schedule(jnp.asarray(np.concatenate([s.slow, pad])), jnp.asarray(np.concatenate([s.window_end, pad])))


def _advance(lane: Lane, data, prior, config: RunConfig):
    ldg = _logdensity_and_grad(config, data, prior)
    kmod = _kernel_module(config.kernel)
    trans = kmod.advance(lane.trans, lane.adapt.step_size, lane.adapt.inverse_mass, ldg, config.kernel)
    return lane._replace(trans=trans)


def _finish(lane: Lane, config: RunConfig) -> tuple[ChainState, Info, Record]:
    """Read the finished transition: the new chain state and what gets recorded."""
    chain, info = _kernel_module(config.kernel).finish(lane.trans, lane.adapt.inverse_mass)
    record = Record(
        chain.position, info.accept_stat, info.diverging, info.divergence_position,
        info.tree_depth, info.n_steps, info.energy, lane.adapt.step_size,
    )
    return chain, info, record


def _restart(lane: Lane, chain: ChainState, info: Info, data, prior, config: RunConfig) -> Lane:
    """Apply the warmup update of iteration t (none at t = -1, before transition 0) and
    start transition t + 1."""
    live = config.target.live(data)
    adapt = adaptation.adaptation_update(
        lane.adapt, lane.t, chain.position, info.accept_stat, lane.target,
        _schedule(config), live, config.warmup,
    )
    t = lane.t + 1
    kmod = _kernel_module(config.kernel)
    trans = kmod.init(_transition_key(lane.key, t), chain, adapt.step_size, adapt.inverse_mass, config.kernel,
                      z=lane.z)
    if kmod is nuts:
        # No U-turn check reads a checkpoint row before a leaf of the same subtree wrote
        # it (nuts module docstring), so the finished tree's table serves the next one:
        # a restart neither writes zeros nor selects the table (same draws).
        trans = trans._replace(ckpt=lane.trans.ckpt)
    z = momentum_normals(_transition_key(lane.key, t + 1), lane.z.shape[-1], lane.z.dtype)
    return Lane(lane.key, lane.target, chain, adapt, trans, t, z)


def _complete(lane: Lane, data, prior, config: RunConfig) -> tuple[Lane, Record]:
    """Finish the transition, adapt, and start the next one."""
    chain, info, record = _finish(lane, config)
    return _restart(lane, chain, info, data, prior, config), record


def _select(pred, new, old):
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), new, old)


# --- drivers: vmap over lanes, loops -------------------------------------------------------


# Record fields kept per iteration as one float row, so a finished transition is written by
# two scatters, not eight (A/B, 256 lanes, 128 models x 4 chains, 500 + 500, float32: 6.9 s
# against 7.1 s, within this machine's noise; neutral at 4 lanes; the same draws). Exact
# as floats: depths and step counts are integers below 2^max_depth <= 2^24.
_STATS = ("accept_stat", "diverging", "tree_depth", "n_steps", "energy", "step_size")


def _empty_task_records(n_tasks: int, d: int, dtype, config: RunConfig):
    """The independent driver's output buffers: the draws and divergence points
    (n_tasks, draws, 2, d), and the per-iteration statistics (n_tasks, warmup + draws, 6)."""
    return (jnp.zeros((n_tasks, config.draws, 2, d), dtype), jnp.zeros((n_tasks, config.total, len(_STATS)), dtype))


def _write_tasks(buffers, record: Record, task, t, keep, config: RunConfig):
    """Store each lane's record at (task, t) where `keep` and t >= 0 (t = -1 is a lane's
    start, `_lane_start`); other writes go out of range and are dropped, so no buffer is
    ever copied or selected whole."""
    draws, stats = buffers
    n_tasks = stats.shape[0]
    row = jnp.where(keep & (t >= 0), task, n_tasks)
    t_draw = jnp.where(t >= config.warmup, t - config.warmup, config.draws)
    draws = put_rows(draws, (row, t_draw), jnp.stack([record.position, record.divergence_position], -2))
    row_stats = jnp.stack([getattr(record, name).astype(stats.dtype) for name in _STATS], -1)
    return draws, put_rows(stats, (row, t), row_stats)


_PACKED_KEYS = ("packed_draws", "packed_stats")


def unpack_output(out: dict) -> dict:
    """The program's output with the independent driver's packed buffers split into the
    `Record` fields. Done on the host (numpy views and small casts): inside the program
    the split would be a second copy of every buffer in device memory."""
    if _PACKED_KEYS[0] not in out:
        return out
    out = dict(out)
    draws, stats = (np.asarray(out.pop(k)) for k in _PACKED_KEYS)
    col = {name: stats[..., i] for i, name in enumerate(_STATS)}
    out.update(
        position=draws[:, :, 0], accept_stat=col["accept_stat"], diverging=col["diverging"] > 0.5,
        divergence_position=draws[:, :, 1], tree_depth=col["tree_depth"].astype(np.int32),
        n_steps=col["n_steps"].astype(np.int32), energy=col["energy"], step_size=col["step_size"],
    )
    return out


def _take(tree, idx):
    return jax.tree.map(lambda a: a[idx], tree)


def _restart_slots(n_lanes: int) -> int:
    """R: how many finished lanes one outer iteration of the independent driver restarts.

    Finishing, recording and restarting a transition (the step-size and metric update, a
    new momentum, the next tree) takes many more XLA kernels than a leapfrog step.
    Computed for every lane of a wide pool and then selected, it ran at nearly every
    leapfrog step, since some lane of a wide pool finishes at nearly every step. Only
    about one lane in the mean trajectory length finishes per step, so R slots gathered
    from the finished lanes do that work; a lane finished beyond the R-th waits (the
    leapfrog loop does not run until it has been restarted). Small pools restart every
    lane in place (no gather). Measured (one CPU device, 256 lanes, 128 eight-schools
    models x 4 chains, 500 + 500, float32, A/B in one process): 7.4 s with R = 32 against
    8.8 s restarting every lane. The ChEES pool (`_run_chees_pool`) applies the same rule
    to models in place of lanes.
    """
    return n_lanes if n_lanes <= 32 else max(32, n_lanes // 8)


def _gather_finished(finished, R: int, *trees):
    """The first R finished entries of a pool: (their indices, which of the R are real,
    each tree gathered at them). An entry restarted here is not finished next time."""
    slot = jnp.flatnonzero(finished, size=R, fill_value=0)
    valid = jnp.arange(R) < jnp.sum(finished)
    return slot, valid, tuple(_take(a, slot) for a in trees)


def _put_back(valid, slot, size: int, whole, part):
    """Scatter gathered entries back into the pool; the unreal ones fall out of range."""
    dest = jnp.where(valid, slot, size)
    return jax.tree.map(lambda w, q: w.at[dest].set(q, mode="drop"), whole, part)


def _next_in_queue(completed, current, next_id, n: int):
    """Hand every completed entry the next id of the queue, in order: (ids, the queue's
    new head, which entries start a new id below n)."""
    n_done = completed.astype(jnp.int32)
    ids = jnp.where(completed, next_id + jnp.cumsum(n_done, dtype=jnp.int32) - 1, current)
    return ids, next_id + jnp.sum(n_done, dtype=jnp.int32), completed & (ids < n)


def _run_independent(words, target, data, prior, n_lanes: int, config: RunConfig):
    """A pool of `n_lanes` lanes works through the tasks (one chain of one model each).

    Every loop iteration advances every busy lane by one leapfrog step (an inner loop that
    only advances, until some lane's transition ends). Then up to `_restart_slots` finished
    lanes are gathered: each records its draw, adapts at its own iteration count and
    starts its next transition; a lane whose task has all its draws takes the next task
    from the queue. No lane waits for another's longer trajectory, and with more tasks
    than lanes no lane idles until the queue is empty. A task's draws depend only on its
    key and data, not on the lane that runs it or on when it was restarted.

    The draw buffers are written outside the conditionals (scatters whose unkept writes
    fall out of range): as operands of `lax.cond` they would be copied every iteration.
    """
    n_tasks = words.shape[0]
    R = _restart_slots(n_lanes)
    # Without a queue (a lane per task: one model's chains, or a small batch) the
    # per-restart work drops the queue's bookkeeping and its conditional, whose
    # operands XLA copies: eight schools, 4 chains, 1000 + 1000, one core, 0.182 s
    # against 0.162 s a run.
    queue = n_tasks > n_lanes
    # Lanes start at t = -1 with an ended transition: the first loop trip starts
    # transition 0 in the restart code, which the program then holds once.
    init = jax.vmap(lambda w, a, d, p: _lane_start(w, a, d, p, config))
    advance = jax.vmap(lambda ln, d, p: _advance(ln, d, p, config))
    finish = jax.vmap(lambda ln: _finish(ln, config))
    restart = jax.vmap(lambda ln, ch, inf, dd, pp: _restart(ln, ch, inf, dd, pp, config))
    first = jnp.arange(n_lanes)
    lane_data, lane_prior = _take(data, first), _take(prior, first)
    lanes = init(words[:n_lanes], target[:n_lanes], lane_data, lane_prior)
    d = lanes.chain.position.shape[-1]
    dtype = lanes.chain.position.dtype
    buffers = _empty_task_records(n_tasks, d, dtype, config)
    # Adapted settings of completed tasks; without a queue, lane i ends holding task i's.
    final = (jnp.zeros((n_tasks,), dtype), jnp.zeros((n_tasks, d), dtype)) if queue else ()

    def take_next_tasks(args):
        sub, sub_data, sub_prior, new_task, starting = args
        idx = jnp.minimum(new_task, n_tasks - 1)
        nd, npr = _take(data, idx), _take(prior, idx)
        fresh = init(words[idx], target[idx], nd, npr)
        return (_select_lanes(starting, fresh, sub), _select_lanes(starting, nd, sub_data),
                _select_lanes(starting, npr, sub_prior))

    def cond(carry):
        return jnp.any(carry[3] < n_tasks)

    def advance_until_a_lane_finishes(lanes, lane_data, lane_prior, busy, n_iter):
        # The inner loop only advances: its body stays as small as `advance`, and the
        # finish / write / restart work below runs once per finished transition. It does
        # not start while a busy lane is done (one left over from the R slots). Idle lanes
        # (no task left) advance too: nothing reads them again, and not selecting the
        # busy ones spares a copy of every tree each step (A/B figures in README.md,
        # Performance).
        def cond(c):
            ln, _ = c
            return ~jnp.any(ln.trans.done & busy) & jnp.any(busy)

        def step(c):
            ln, n = c
            return advance(ln, lane_data, lane_prior), n + 1

        return jax.lax.while_loop(cond, step, (lanes, n_iter))

    def body(carry):
        lanes, lane_data, lane_prior, task, next_task, buffers, final, n_iter = carry
        busy = task < n_tasks
        lanes, n_iter = advance_until_a_lane_finishes(lanes, lane_data, lane_prior, busy, n_iter)
        finished = lanes.trans.done & busy
        if R == n_lanes:
            valid, sub, sub_data, sub_prior, sub_task = finished, lanes, lane_data, lane_prior, task
        else:
            slot, valid, (sub, sub_data, sub_prior, sub_task) = _gather_finished(
                finished, R, lanes, lane_data, lane_prior, task)
        chain, info, record = finish(sub)
        buffers = _write_tasks(buffers, record, sub_task, sub.t, valid, config)
        sub_next = restart(sub, chain, info, sub_data, sub_prior)
        # Slots that hold no finished lane are dropped when scattered back, so only a pool
        # restarted in place selects (then XLA need not gather the old trees: their
        # checkpoints are never read).
        sub = _select_lanes(valid, sub_next, sub) if R == n_lanes else sub_next
        # Tasks that just recorded their last draw: keep their adapted settings, then
        # hand their lanes the next tasks in queue order.
        completed = valid & (sub.t >= config.total)
        if not queue:  # lane i runs task i to the end: its settings are read after the loop
            new_task = jnp.where(completed, n_tasks, sub_task)
        else:
            row = jnp.where(completed, sub_task, n_tasks)
            final = (final[0].at[row].set(sub.adapt.step_size, mode="drop"),
                     final[1].at[row].set(sub.adapt.inverse_mass, mode="drop"))
            new_task, next_task, starting = _next_in_queue(completed, sub_task, next_task, n_tasks)
            sub, sub_data, sub_prior = jax.lax.cond(
                jnp.any(starting), take_next_tasks, lambda a: a[:3],
                (sub, sub_data, sub_prior, new_task, starting),
            )
        if R == n_lanes:
            lanes, lane_data, lane_prior, task = sub, sub_data, sub_prior, new_task
        else:
            lanes, lane_data, lane_prior, task = _put_back(
                valid, slot, n_lanes, (lanes, lane_data, lane_prior, task), (sub, sub_data, sub_prior, new_task))
        return lanes, lane_data, lane_prior, task, next_task, buffers, final, n_iter

    carry = (lanes, lane_data, lane_prior, first.astype(jnp.int32), jnp.asarray(n_lanes, jnp.int32),
             buffers, final, jnp.zeros((), jnp.int32))
    carry = jax.lax.while_loop(cond, body, carry)
    buffers, n_iter = carry[5], carry[7]
    step_size, inverse_mass = carry[6] if queue else (carry[0].adapt.step_size, carry[0].adapt.inverse_mass)
    return buffers, step_size, inverse_mass, n_iter


def _select_lanes(pred, new, old):
    return jax.vmap(_select)(pred, new, old)


def _run_synchronized(lanes: Lane, data: Data, prior: Prior, config: RunConfig):
    """Classic vmapped NUTS: a scan over iterations, one whole transition per lane each."""
    kmod = _kernel_module(config.kernel)

    def transition(ln: Lane, d, p):
        ldg = _logdensity_and_grad(config, d, p)
        trans = jax.lax.while_loop(
            lambda tr: ~tr.done,
            lambda tr: kmod.advance(tr, ln.adapt.step_size, ln.adapt.inverse_mass, ldg, config.kernel),
            ln.trans,
        )
        return _complete(ln._replace(trans=trans), d, p, config)

    step = jax.vmap(transition)

    def body(lanes, _):
        return step(lanes, data, prior)

    lanes, recs = jax.lax.scan(body, lanes, None, length=config.total)
    # The vmapped while loop runs each transition until the longest lane's tree ends.
    n_iter = jnp.sum(jnp.max(recs.n_steps, axis=1))
    # scan stacks on axis 0: (total, lanes, ...) -> (lanes, total, ...)
    recs = jax.tree.map(lambda a: jnp.moveaxis(a, 0, 1), recs)
    recs = recs._replace(
        position=recs.position[:, config.warmup :],
        divergence_position=recs.divergence_position[:, config.warmup :],
    )
    return lanes, recs, n_iter


def _run_chees(words, target, data, prior, config: RunConfig):
    """ChEES-HMC in lock step: a scan over iterations; at each one every model runs a whole
    transition (a `while_loop` over leapfrog steps that ends when the longest model's
    trajectory does), then the model-level work of `_run_chees_pool` (`_chees_complete`,
    `_chees_begin`, in blocks of `_chees_block` models).

    Warmup: every iteration runs jittered HMC with n_t = ceil(u_t T / eps) steps for all
    chains of a model, then `chees.update` adapts T (Adam on the ChEES criterion) and eps
    (dual averaging on the harmonic-mean acceptance) from all chains together; at the ends
    of Stan's slow windows the diagonal metric becomes the cross-chain variance estimate and
    dual averaging restarts. Sampling uses the averaged (eps, T) of `chees.final`.
    """
    C = config.chains
    n_tasks = words.shape[0]
    M = n_tasks // C
    by_model = lambda a: a.reshape((M, C) + a.shape[1:])  # noqa: E731
    words_m, target_m, data_m, prior_m = (jax.tree.map(by_model, x) for x in (words, target, data, prior))
    width = _chees_block(config)
    slots = _blockwise(lambda w, a, d, p: _chees_model_init(w, a, d, p, config), width,
                       words_m, target_m, data_m, prior_m)
    advance = jax.vmap(lambda sl, d, p: _chees_advance(sl, d, p, config))
    next_transition = lambda sl, w, a: _chees_next(sl, w, a, config)  # noqa: E731

    def body(carry, _):
        slots, n_iter = carry
        slots, n_iter = jax.lax.while_loop(
            lambda c: ~jnp.all(c[0].trans.done),
            lambda c: (advance(c[0], data_m, prior_m), c[1] + 1),
            (slots, n_iter))
        slots, record = _blockwise(next_transition, width, slots, words_m, target_m)
        return (slots, n_iter), jax.tree.map(lambda a: a.reshape((n_tasks,) + a.shape[2:]), record)

    (slots, n_iter), recs = jax.lax.scan(body, (slots, jnp.zeros((), jnp.int32)), None, length=config.total)
    recs = jax.tree.map(lambda a: jnp.moveaxis(a, 0, 1), recs)
    recs = recs._replace(position=recs.position[:, config.warmup:],
                         divergence_position=recs.divergence_position[:, config.warmup:])
    step_size = jnp.repeat(slots.frozen[0], C, axis=0)
    return recs, step_size, jnp.repeat(slots.inverse_mass, C, axis=0), n_iter


class _ModelSlot(NamedTuple):
    """One model's C chains in the ChEES pool: what a model carries through the loop."""

    chain: ChainState  # (C, ...) states before the running transition
    trans: Any  # (C, ...) hmc.Trajectory of the running transition
    eps: jax.Array  # () step size of the running transition
    state: chees.ChEESState
    inverse_mass: jax.Array  # (d,) the metric of the running transition
    frozen: tuple  # (eps, T) used after warmup
    t: jax.Array  # () int32 iteration of the running transition


def _chees_hmc(config: RunConfig) -> hmc.HMC:
    """The HMC kernel ChEES drives (its step count is set per transition)."""
    return hmc.HMC(num_steps=1, max_delta=config.kernel.max_delta)


def _chees_begin(slot: _ModelSlot, words, config: RunConfig) -> _ModelSlot:
    """Start transition slot.t of every chain of the model: n = ceil(u_t T / eps) steps."""
    kc = config.kernel
    t = slot.t
    in_warmup = t < config.warmup
    eps = jnp.where(in_warmup, chees.step_size(slot.state), slot.frozen[0])
    n = jnp.where(in_warmup, chees.num_steps(slot.state, t, kc.max_steps),
                  chees.steps_for(*slot.frozen, t, kc.max_steps))
    trans = jax.vmap(lambda w, ch: hmc.init(_transition_key(w, t), ch, eps, slot.inverse_mass, _chees_hmc(config),
                                            num_steps=n))(words, slot.chain)
    return slot._replace(trans=trans, eps=eps)


def _chees_model_init(words, target, data, prior, config: RunConfig) -> _ModelSlot:
    """A model's chains (the inputs are (C, ...)): Stan's initial points and step-size
    heuristic per chain, eps0 their geometric mean, T0 = eps0; then transition 0."""
    hmc_run = dataclasses.replace(config, kernel=_chees_hmc(config))
    lanes = jax.vmap(lambda w, a, d, p: _lane_start(w, a, d, p, hmc_run))(words, target, data, prior)
    live = config.target.live(jax.tree.map(lambda a: a[0], data))
    eps0 = jnp.exp(jnp.mean(jnp.log(lanes.adapt.step_size)))
    state = chees.init(eps0, lanes.chain.position, live)
    slot = _ModelSlot(lanes.chain, lanes.trans, eps0, state, live, chees.final(state, config.kernel.max_steps),
                      jnp.zeros((), jnp.int32))
    return _chees_begin(slot, words, config)


def _chees_advance(slot: _ModelSlot, data, prior, config: RunConfig) -> _ModelSlot:
    """One leapfrog step of every chain still integrating (a divergence ends a chain's
    trajectory early; it then waits, unchanged, for the model's other chains)."""
    def lane(tr, d, p):
        new = hmc.advance(tr, slot.eps, slot.inverse_mass, _logdensity_and_grad(config, d, p), _chees_hmc(config))
        return _select(tr.done, tr, new)

    return slot._replace(trans=jax.vmap(lane)(slot.trans, data, prior))


def _chees_complete(slot: _ModelSlot, target, config: RunConfig) -> tuple[_ModelSlot, Record]:
    """Metropolis step of every chain, then (in warmup) `chees.update` from all of them;
    at the end of a slow window the metric becomes the cross-chain variance estimate and
    dual averaging restarts; at the last warmup iteration (eps, T) freeze at `chees.final`."""
    kc = config.kernel
    new, info = jax.vmap(hmc.finish, (0, None))(slot.trans, slot.inverse_mass)
    t = slot.t
    in_warmup = t < config.warmup
    upd = chees.update(slot.state, t, slot.chain.position, slot.trans.state.position, slot.trans.state.momentum,
                       info.accept_stat, info.diverging, slot.inverse_mass, target[0], kc.learning_rate,
                       kc.max_steps)
    schedule = _schedule(config)
    window_end = schedule.window_end[jnp.minimum(t, schedule.window_end.shape[0] - 1)] & in_warmup
    inverse_mass = jnp.where(window_end, chees.inverse_mass(upd), slot.inverse_mass)
    restarted = adaptation.dual_averaging_init(chees.step_size(upd))
    upd = upd._replace(dual=_select(window_end, restarted, upd.dual))
    state = _select(in_warmup, upd, slot.state)
    frozen = _select(t == config.warmup - 1, chees.final(state, kc.max_steps), slot.frozen)
    record = Record(new.position, info.accept_stat, info.diverging, info.divergence_position, info.tree_depth,
                    info.n_steps, info.energy, jnp.broadcast_to(slot.eps, info.accept_stat.shape))
    return slot._replace(chain=new, state=state, inverse_mass=inverse_mass, frozen=frozen, t=t + 1), record


def _chees_next(slot: _ModelSlot, words, target, config: RunConfig) -> tuple[_ModelSlot, Record]:
    """Complete the model's transition and begin the next one."""
    slot, record = _chees_complete(slot, target, config)
    return _chees_begin(slot, words, config), record


def _chees_block(config: RunConfig) -> int:
    """Models per block of the ChEES model-level work (`_blockwise`): a function of the
    chain count and the platform only, never of how many models share the batch."""
    return max(1, config.block_lanes // config.chains)


def _blockwise(fn, width: int, *args):
    """`vmap(fn)` over the leading axis, computed `width` rows at a time in a loop.

    A model's adaptation arithmetic (reductions over its chains, exp, log, pow) vectorized
    over a batch of models rounds differently for different batch widths (measured on CPU,
    float32, one model's update repeated: widths 2, 4 and 8 agree with each other, 3 and 5
    with each other, 1 with neither, in the last bits of the Adam state). Computing
    it in blocks of a fixed width, behind optimization barriers so that XLA fuses nothing
    across a block's edge, keeps a model's draws independent of the other models in its
    batch. Rows past the end are copies of row 0 and are dropped.
    """
    n = jax.tree.leaves(args)[0].shape[0]
    n_blocks = -(-n // width)
    pad = jnp.zeros((n_blocks * width - n,), jnp.int32)
    blocks = jax.tree.map(lambda a: jnp.concatenate([a, a[pad]]).reshape((n_blocks, width) + a.shape[1:]), args)
    body = lambda b: jax.lax.optimization_barrier(jax.vmap(fn)(*jax.lax.optimization_barrier(b)))  # noqa: E731
    out = jax.lax.map(body, blocks)
    return jax.tree.map(lambda a: a.reshape((n_blocks * width,) + a.shape[2:])[:n], out)


def _chees_slots(n_tasks: int, config: RunConfig) -> int:
    """Models the ChEES pool holds at once: all of them, or max_lanes // chains."""
    n_models = n_tasks // config.chains
    if config.max_lanes is None:
        return n_models
    return max(1, min(n_models, config.max_lanes // config.chains))


def _run_chees_pool(words, target, data, prior, n_slots: int, config: RunConfig):
    """ChEES-HMC with models in a pool of `n_slots` slots, each running at its own pace.

    The chains of one model share eps and the jittered step count (`_run_chees`), so they
    stay in lock step with one another; models do not wait for each other. Every loop
    iteration advances every slot by one leapfrog step (an inner loop that only advances,
    until some model's transition ends); then up to `_restart_slots` finished models are
    gathered, record their draws, adapt at their own iteration count and start their next
    transition; a model with all its draws hands its slot to the next model in the queue.
    The loop thus costs about the mean model's total steps per slot instead of the sum over
    iterations of the longest trajectory. A model's arithmetic is that of `_run_chees`
    (same keys, same updates), so the two drivers take the same paths.
    """
    C = config.chains
    n_tasks = words.shape[0]
    M = n_tasks // C
    S = n_slots
    R = _restart_slots(S)
    by_model = lambda a: a.reshape((M, C) + a.shape[1:])  # noqa: E731
    words_m, target_m, data_m, prior_m = (jax.tree.map(by_model, x) for x in (words, target, data, prior))
    width = _chees_block(config)
    model_init = functools.partial(_blockwise, lambda w, a, d, p: _chees_model_init(w, a, d, p, config), width)
    advance = jax.vmap(lambda sl, d, p: _chees_advance(sl, d, p, config))
    complete = functools.partial(_blockwise, lambda sl, w, a: _chees_next(sl, w, a, config), width)
    first = jnp.arange(S)
    inputs = tuple(_take(a, first) for a in (words_m, target_m, data_m, prior_m))
    slots = model_init(*inputs)
    d = slots.chain.position.shape[-1]
    dtype = slots.chain.position.dtype
    buffers = _empty_task_records(n_tasks, d, dtype, config)
    final = (jnp.zeros((n_tasks,), dtype), jnp.zeros((n_tasks, d), dtype))
    chain_ids = jnp.arange(C, dtype=jnp.int32)
    flat = lambda a: a.reshape((-1,) + a.shape[2:])  # noqa: E731  (slots, C, ...) -> lanes

    def take_next_models(args):
        sub, sub_inputs, new_model, starting = args
        idx = jnp.minimum(new_model, M - 1)
        fresh_inputs = tuple(_take(a, idx) for a in (words_m, target_m, data_m, prior_m))
        fresh = model_init(*fresh_inputs)
        return _select_lanes(starting, fresh, sub), _select_lanes(starting, fresh_inputs, sub_inputs)

    def slot_done(sl):
        return jnp.all(sl.trans.done, axis=1)

    def advance_until_a_model_finishes(slots, inputs, busy, n_iter):
        def cond(c):
            sl, _ = c
            return ~jnp.any(slot_done(sl) & busy) & jnp.any(busy)

        def step(c):
            sl, n = c
            return advance(sl, inputs[2], inputs[3]), n + 1

        return jax.lax.while_loop(cond, step, (slots, n_iter))

    def body(carry):
        slots, inputs, model, next_model, buffers, final, n_iter = carry
        busy = model < M
        slots, n_iter = advance_until_a_model_finishes(slots, inputs, busy, n_iter)
        finished = slot_done(slots) & busy
        if R == S:
            valid, sub, sub_inputs, sub_model = finished, slots, inputs, model
        else:
            slot, valid, (sub, sub_inputs, sub_model) = _gather_finished(finished, R, slots, inputs, model)
        sub_next, record = complete(sub, sub_inputs[0], sub_inputs[1])
        task = sub_model[:, None] * C + chain_ids
        keep = jnp.broadcast_to(valid[:, None], task.shape)
        t_lane = jnp.broadcast_to(sub.t[:, None], task.shape)
        buffers = _write_tasks(buffers, jax.tree.map(flat, record), flat(task), flat(t_lane), flat(keep), config)
        completed = valid & (sub_next.t >= config.total)
        rows = flat(jnp.where(completed[:, None], task, n_tasks))
        final = (final[0].at[rows].set(flat(jnp.broadcast_to(sub_next.frozen[0][:, None], task.shape)), mode="drop"),
                 final[1].at[rows].set(flat(jnp.broadcast_to(sub_next.inverse_mass[:, None], task.shape + (d,))),
                                       mode="drop"))
        new_model, next_model, starting = _next_in_queue(completed, sub_model, next_model, M)
        sub_next, sub_inputs = jax.lax.cond(jnp.any(starting), take_next_models, lambda a: a[:2],
                                            (sub_next, sub_inputs, new_model, starting))
        if R == S:
            slots = _select_lanes(valid, sub_next, slots)
            inputs, model = sub_inputs, jnp.where(valid, new_model, model)
        else:
            slots, inputs, model = _put_back(valid, slot, S, (slots, inputs, model), (sub_next, sub_inputs, new_model))
        return slots, inputs, model, next_model, buffers, final, n_iter

    carry = (slots, inputs, first.astype(jnp.int32), jnp.asarray(S, jnp.int32), buffers, final,
             jnp.zeros((), jnp.int32))
    carry = jax.lax.while_loop(lambda c: jnp.any(c[2] < M), body, carry)
    buffers, (step_size, inverse_mass), n_iter = carry[4], carry[5], carry[6]
    return buffers, step_size, inverse_mass, n_iter


def _program(words, lane_target, lane_data: Data, lane_prior: Prior, config: RunConfig):
    """All tasks (model x chain, flattened outside; `words` are their counter_rng keys)
    -> per-task results.

    The program has no model axis: XLA specializes a size-1 model axis, which changes
    rounding, so flattening outside keeps a model's draws bitwise independent of how
    many other models share its batch.
    """
    n_tasks = words.shape[0]
    if config.driver is None or config.block_lanes is None:
        raise ValueError("config: fix the open settings first (RunConfig.for_platform)")
    if isinstance(config.kernel, chees.ChEES) and config.driver == "independent":
        recs, step_size, inverse_mass, n_iter = _run_chees_pool(
            words, lane_target, lane_data, lane_prior, _chees_slots(n_tasks, config), config)
    elif isinstance(config.kernel, chees.ChEES):
        recs, step_size, inverse_mass, n_iter = _run_chees(words, lane_target, lane_data, lane_prior, config)
    elif config.driver == "independent":
        recs, step_size, inverse_mass, n_iter = _run_independent(
            words, lane_target, lane_data, lane_prior, _pool_size(n_tasks, config), config)
    else:
        lanes = jax.vmap(lambda k, a, d, p: _lane_init(k, a, d, p, config))(words, lane_target, lane_data, lane_prior)
        lanes, recs, n_iter = _run_synchronized(lanes, lane_data, lane_prior, config)
        step_size, inverse_mass = lanes.adapt.step_size, lanes.adapt.inverse_mass
    if isinstance(recs, Record):
        out = {name: val for name, val in zip(Record._fields, recs)}
    else:  # the independent driver's packed buffers (`unpack_output`)
        out = dict(zip(_PACKED_KEYS, recs))
    out["final_step_size"] = step_size
    out["inverse_mass"] = inverse_mass
    return out, n_iter


# --- compilation cache and the public entry point -----------------------------------------

_COMPILED: dict = {}
TRACE_COUNT = {"program": 0}


def _traced_program(keys, target, data, prior, config):
    TRACE_COUNT["program"] += 1
    return _program(keys, target, data, prior, config)


def _cache_dir() -> str | None:
    """hnnjax's cache directory, or None when the cache on disk is off."""
    if os.environ.get("HNNJAX_NO_PERSISTENT_CACHE"):
        return None
    return os.environ.get("HNNJAX_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "hnnjax", "xla"))


_SOURCE_HASH: list = []


def _source_hash() -> str:
    """A hash of this package's source: a saved program is only reused by the same code."""
    if not _SOURCE_HASH:
        h = hashlib.sha256(f"{jax.__version__}".encode())
        root = os.path.dirname(os.path.abspath(__file__))
        for name in sorted(os.listdir(root)):
            if name.endswith(".py"):
                with open(os.path.join(root, name), "rb") as f:
                    h.update(name.encode() + f.read())
        _SOURCE_HASH.append(h.hexdigest())
    return _SOURCE_HASH[0]


def _machine_fingerprint(device) -> str:
    """What a compiled program depends on beyond its signature and hnnjax's source: the
    jaxlib and optax versions, JAX's 64-bit mode and XLA_FLAGS, the platform and its
    version, the device kind and, on CPU, the instruction set (XLA compiles for the
    host's CPU features, so a cache directory shared between machines must not mix
    programs)."""
    import importlib.metadata
    import platform as host

    import jaxlib

    optax_version = ""
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        optax_version = importlib.metadata.version("optax")
    parts = [jaxlib.__version__, optax_version, str(jax.config.jax_enable_x64),
             os.environ.get("XLA_FLAGS", ""), device.platform, str(getattr(device.client, "platform_version", "")),
             str(getattr(device, "device_kind", "")), host.machine()]
    if device.platform == "cpu":
        with contextlib.suppress(OSError):
            with open("/proc/cpuinfo") as f:
                parts += sorted({ln for ln in f if ln.startswith(("flags", "model name"))})
    return "\n".join(parts)


def _executable_path(signature: str, device) -> str | None:
    folder = _cache_dir()
    if folder is None:
        return None
    key = hashlib.sha256((signature + _source_hash() + _machine_fingerprint(device)).encode()).hexdigest()
    return os.path.join(folder, "programs", key + ".bin")


def _saved_programs(cache_dir: str) -> list[str]:
    """The compiled programs saved under the cache directory `cache_dir` (`_executable_path`)."""
    folder = os.path.join(cache_dir, "programs")
    names = os.listdir(folder) if os.path.isdir(folder) else []
    return [os.path.join(folder, n) for n in names if n.endswith(".bin")]


def _load_executable(path: str, devices):
    """The compiled program saved at `path`, or None.

    A saved program is a pickle, which can run code when loaded: only files owned by
    this user are read (the folder is created private, mode 0o700). A file whose
    checksum does not match (truncated, torn) is deleted and the program compiled again;
    one that fails to load for another reason (other devices) is left alone.
    """
    try:
        if os.stat(path).st_uid != os.getuid():
            return None
        with open(path, "rb") as f:
            blob = f.read()
    except (OSError, AttributeError):  # absent, unreadable; AttributeError: no os.getuid (Windows)
        return None
    digest, body = blob[:32], blob[32:]
    if hashlib.sha256(body).digest() != digest:
        with contextlib.suppress(OSError):
            os.remove(path)
        return None
    try:
        payload, in_tree, out_tree = pickle.loads(body)
        compiled = serialize_executable.deserialize_and_load(
            payload, in_tree, out_tree, backend=devices[0].client, execution_devices=devices)
    except Exception:
        return None
    with contextlib.suppress(OSError):
        os.utime(path)  # recently used: `_save_executable` evicts the least recent
    return compiled


# Programs kept on disk (about 1.3 MB each for eight schools); the least recently used
# beyond this are deleted, and temporary files an hour old (left by a crash).
MAX_SAVED_PROGRAMS = 64


def _save_executable(path: str, compiled):
    """Write the compiled program: sha256 of the pickle, then the pickle, through a
    temporary file renamed into place (a platform that cannot serialize it, or a
    read-only cache directory, only means the next process compiles again)."""
    folder = os.path.dirname(path)
    tmp = None
    try:
        payload, in_tree, out_tree = serialize_executable.serialize(compiled)
        body = pickle.dumps((payload, in_tree, out_tree))
        os.makedirs(folder, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(hashlib.sha256(body).digest() + body)
        os.replace(tmp, path)
        tmp = None
    except Exception:
        return
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.remove(tmp)
    saved = sorted(_saved_programs(os.path.dirname(folder)), key=_mtime)
    stale = [os.path.join(folder, n) for n in os.listdir(folder) if n.endswith(".tmp")
             and time.time() - _mtime(os.path.join(folder, n)) > 3600]
    for old in saved[:-MAX_SAVED_PROGRAMS] + stale:
        with contextlib.suppress(OSError):
            os.remove(old)


def _mtime(path: str) -> float:
    try:
        return os.path.getmtime(path)
    except OSError:
        return 0.0


def model_keys(seed: int, model_ids) -> np.ndarray:
    """Key words of each model, (M, 2) uint32: Threefry-2x32 of (id, 0) under the seed's
    key (the seed's high and low 32 bits). Computed on the host: nothing to compile."""
    seed = int(seed)
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed: must be in [0, 2**64), got {seed}")
    ids = np.asarray(model_ids, dtype=np.int64).reshape(-1)
    if ids.size and (ids.min() < 0 or ids.max() >= 2**32):
        raise ValueError("model ids: must be in [0, 2**32)")
    key = np.array([seed >> 32, seed & 0xFFFFFFFF], np.uint32)
    words = counter_rng.threefry2x32(key, ids.astype(np.uint32), np.zeros(ids.size, np.uint32))
    return np.stack(words, axis=-1)


def lane_inputs(keys, data, prior, chains: int):
    """Flatten (model, chain) into lanes: lane key words = Threefry-2x32 of (chain, 1) under
    the model's words; data and prior repeated. On the host, like `model_keys`."""
    keys = np.asarray(keys, np.uint32)
    model_words = np.repeat(keys, chains, axis=0).T  # (2, lanes)
    chain = np.tile(np.arange(chains, dtype=np.uint32), keys.shape[0])
    words = np.stack(counter_rng.threefry2x32(model_words, chain, np.ones_like(chain)), axis=-1)
    repeat = lambda a: np.repeat(np.asarray(a), chains, axis=0)  # noqa: E731
    return words, jax.tree.map(repeat, data), jax.tree.map(repeat, prior)


def _shard_plan(n_models: int, config: RunConfig, n_devices: int) -> tuple[int, int]:
    """(devices used, tasks per device) for n_models x chains tasks.

    Lanes never talk to each other (the independent and synchronized drivers), so tasks are
    dealt in contiguous blocks of at least two lanes: XLA specializes a size-1 axis, which
    would change rounding. ChEES adapts across the chains of a model, so there a block
    holds whole models, one at least: its model-level work runs in blocks of a fixed width
    (`_blockwise`) whatever the number of models.
    """
    unit = _task_unit(config)
    units = n_models * config.chains // unit
    least = 1 if isinstance(config.kernel, chees.ChEES) else 2
    used = max(1, min(n_devices, units // least))
    per_device = max(-(-units // used), least) * unit
    return used, per_device


def _task_unit(config: RunConfig) -> int:
    """Tasks that must stay together: a model's chains for ChEES, else one lane."""
    return config.chains if isinstance(config.kernel, chees.ChEES) else 1


def _pool_size(n_tasks: int, config: RunConfig) -> int:
    """Lanes of a device's program: the independent driver's pool, else one per task."""
    if isinstance(config.kernel, chees.ChEES):
        return _chees_slots(n_tasks, config) * config.chains if config.driver == "independent" else n_tasks
    if config.driver != "independent" or config.max_lanes is None:
        return n_tasks
    return max(2, min(n_tasks, config.max_lanes))


def local_devices(devices=None) -> list:
    """`devices` as a list, by default all local devices of JAX's default backend."""
    devices = list(jax.local_devices()) if devices is None else list(devices)
    if not devices:
        raise ValueError("devices: need at least one device")
    return devices


def _placement(devices):
    """The sharding of the program's inputs and outputs: one device, or blocks of tasks."""
    if len(devices) == 1:
        return jax.sharding.SingleDeviceSharding(devices[0])
    return jax.sharding.NamedSharding(jax.sharding.Mesh(np.array(devices), ("tasks",)), jax.sharding.PartitionSpec("tasks"))


def _compiler_options(platform: str, config: RunConfig | None = None) -> dict:
    """XLA options of hnnjax's programs (CPU only; programs are cached per options).

    - No YNNPACK fusions. XLA hands the U-turn checks' small reductions (lanes x levels x
      d, summed over d = 10) to YNNPACK; XLA's own fused loop does them faster. Measured
      (the A/B of `_restart_slots`): 7.4 s without YNNPACK fusions against 9.9 s with them
      at 256 lanes; the same at 4 lanes (eight schools, float64: 0.212 s either way).
    - NUTS: XLA's classic loop emitters, not the MLIR fusion emitters: the same run time,
      about 0.75 s less compile time for eight schools (XLA 1.15-1.22 s against
      1.89-2.01 s, fresh processes). Not for HMC and ChEES: with them, XLA did not
      finish compiling HMC's queued program (12 models on 4 lanes) in 100 s. Every NUTS
      program uses the same emitters, so a model's NUTS draws still do not depend on the
      batch (the emitters round differently from each other). A jaxlib that lacks an
      option is told nothing of it (`_compile`).
    """
    if platform != "cpu":
        return {}
    options = {"xla_cpu_experimental_ynn_fusion_type": ""}
    if config is not None and isinstance(config.kernel, nuts.NUTS):
        options["xla_cpu_use_fusion_emitters"] = False
    return options


def _compile(lowered, platform: str, config: RunConfig | None = None):
    """Compile with `_compiler_options`, dropping options this jaxlib does not know."""
    options = _compiler_options(platform, config)
    while True:
        try:
            return lowered.compile(options)
        except Exception as err:  # jaxlib raises JaxRuntimeError("No such compile option: 'name'")
            unknown = [k for k in options if f"No such compile option: '{k}'" in str(err)]
            if not unknown:
                raise
            options = {k: v for k, v in options.items() if k not in unknown}


def _compiled_program(config: RunConfig, args, devices):
    """The program for these shapes and devices, cached in-process and on disk; seconds
    spent compiling or loading it (0 if cached in-process). `args` must already be placed
    with `_placement`.

    On disk (`_cache_dir`) the compiled executable itself is saved, keyed by the
    signature, the package source and the machine (`_machine_fingerprint`): a new process
    loads it and neither traces, lowers nor compiles (eight schools, 2 CPU devices, fresh
    processes: 0.13-0.16 s to load against 1.6-1.8 s to trace, lower, compile and save).
    This is what JAX's persistent compilation cache stores too, but JAX's key is a hash of
    the lowered program, so reading its cache needs the program traced and lowered first
    (0.46-0.50 s here).
    """
    signature = repr((config, [str(d) for d in devices], jax.tree.map(lambda a: (a.shape, str(a.dtype)), args)))
    compiled = _COMPILED.get(signature)
    if compiled is not None:
        return compiled, 0.0
    t0 = time.perf_counter()
    path = _executable_path(signature, devices[0])
    compiled = _load_executable(path, devices) if path else None
    if compiled is None:
        with _collector_paused():
            compiled = _compile(_build(config, devices).lower(*args), devices[0].platform, config)
        if path:
            _save_executable(path, compiled)
    _COMPILED[signature] = compiled
    return compiled, time.perf_counter() - t0


@contextlib.contextmanager
def _collector_paused():
    """Python's cyclic garbage collector off while JAX traces, lowers and compiles the
    program, and back as it was after. Tracing allocates objects by the hundred thousand
    and leaves few cycles, yet the collector ran about 300 times during it (eight schools,
    fresh processes, `gc.callbacks`: 0.063-0.074 s of collections out of 1.8-2.0 s for
    `sample`; 0.007 s with the pause, the collections after it included)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _build(config: RunConfig, devices):
    """The jitted program: one device, or every device running it on its own block of
    tasks, with its own loop (no collectives: a device stops when its own tasks are done)."""
    if len(devices) == 1:
        return jax.jit(functools.partial(_traced_program, config=config))
    sharding = _placement(devices)

    def local(keys, target, data, prior):
        out, n_iter = _traced_program(keys, target, data, prior, config)
        return out, n_iter[None]

    return jax.jit(jax.shard_map(local, mesh=sharding.mesh, in_specs=sharding.spec, out_specs=sharding.spec,
                                 check_vma=False))


def run(keys, data, prior, config: RunConfig, devices=None):
    """Run the compiled program for a batch of models; returns (numpy results, timing).

    keys (M, 2) uint32 (`model_keys`), data arrays (M, J_pad), prior arrays (M,); results
    shaped (M, chains, ...).
    devices: where to run (default: all local devices of JAX's default backend). The
    model x chain tasks are dealt to them in contiguous blocks and every device runs the
    same program on its block; a task's draws do not depend on where it ran (see
    `_shard_plan`; `tests/test_devices.py`). On CPU, `hnnjax.use_cpu_cores` makes each
    core a device.
    timing holds `loop_iterations` (the trips through the leapfrog loop of the slowest
    device), `lanes` (all devices), `lane_iterations` (the lane-steps computed, summed over
    devices: the useful-step share is sum(n_steps) / lane_iterations) and `devices`.
    """
    devices = local_devices(devices)
    config = config.for_platform(devices[0].platform)
    n_models = int(keys.shape[0])
    lane_words, lane_data, lane_prior = lane_inputs(keys, data, prior, config.chains)
    n_lanes = n_models * config.chains
    # The target's float dtype: the first floating-point leaf of the data (a target may
    # hold integer arrays too, e.g. the radon regression's county index).
    float_leaves = [np.asarray(a) for a in jax.tree.leaves(lane_data) if np.asarray(a).dtype.kind == "f"]
    if not float_leaves:
        raise ValueError("data: a target's data needs at least one floating-point array")
    lane_target = np.full(n_lanes, config.target_accept, float_leaves[0].dtype)
    inputs = (lane_words, lane_target, lane_data, lane_prior)
    used, per_device = _shard_plan(n_models, config, len(devices))
    devices = devices[:used]
    n_padded = used * per_device
    if n_padded > n_lanes:  # padding repeats the last task (model, for ChEES); results dropped
        unit = _task_unit(config)
        last = np.arange(n_lanes - unit, n_lanes)
        idx = np.concatenate([np.arange(n_lanes), np.resize(last, n_padded - n_lanes)])
        inputs = jax.tree.map(lambda a: np.asarray(a)[idx], inputs)
    args = jax.device_put(inputs, _placement(devices))
    if config.max_lanes is not None and _pool_size(per_device, config) == per_device:
        config = dataclasses.replace(config, max_lanes=None)  # no pool in use: one program fewer
    # target_accept is a runtime argument: it must not split the compilation cache.
    compiled, compile_s = _compiled_program(dataclasses.replace(config, target_accept=0.5), args, devices)
    t0 = time.perf_counter()
    out, n_iter = jax.block_until_ready(compiled(*args))
    run_s = time.perf_counter() - t0
    out = unpack_output({k: np.asarray(v)[:n_lanes] for k, v in out.items()})
    out = {k: v.reshape((n_models, config.chains) + v.shape[1:]) for k, v in out.items()}
    iters = np.atleast_1d(np.asarray(n_iter)).astype(np.int64)
    pool = _pool_size(per_device, config)
    return out, {"compile_s": compile_s, "run_s": run_s, "loop_iterations": int(iters.max()),
                 "lanes": pool * used, "lane_iterations": int(iters.sum() * pool), "devices": used}


def _resolve_dtype(dtype):
    if dtype is None:
        return jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    dt = jnp.dtype(dtype)
    if dt not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.float64)):
        raise ValueError(f"dtype: expected float32 or float64, got {dtype!r}")
    if dt == jnp.float64 and not jax.config.jax_enable_x64:
        raise ValueError(
            "dtype: float64 needs JAX's 64-bit mode; call jax.config.update('jax_enable_x64', True) first"
        )
    return dt.type


def _as_group_data(data):
    from .data import GroupData

    if isinstance(data, GroupData):
        return data
    if isinstance(data, dict):
        return GroupData(data["y"], data["sigma"], data.get("names"))
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return GroupData(*data)
    raise ValueError("data: expected a hnnjax.GroupData, a (y, sigma) pair or a dict with 'y' and 'sigma'")


def sample(
    data,
    parametrization: str = "noncentered",
    kernel="nuts",
    chains: int = 4,
    warmup: int = 1000,
    draws: int = 1000,
    target_accept: float = 0.8,
    seed: int = 0,
    prior=None,
    *,
    model_id: int = 0,
    dtype=None,
    driver: str | None = None,
    devices=None,
):
    """Fit one model with NUTS (default), HMC or ChEES-HMC; all chains run in one compiled program.

    The model's key derives from (seed, model_id) (`model_keys`), so `sample(..., model_id=i)` gives
    the same draws as model i of `sample_batch` with the same seed. `driver` picks the
    lane-independent loop or the classic synchronized one (same distribution); the default
    (None) is the independent one, except ChEES on a GPU (`RunConfig.for_platform`).
    `devices` (default: all local devices) share the chains (`run`; on CPU see
    `hnnjax.use_cpu_cores`); the draws do not depend on them. Returns a `Fit`.
    """
    from .data import bucket_size, stack

    gd = _as_group_data(data)
    config = RunConfig.normal_normal(parametrization, kernel, chains, warmup, draws, target_accept, driver=driver)
    pr = model.as_prior(prior)
    dt = _resolve_dtype(dtype)
    batch = stack([gd], bucket_size(gd.J), dtype=dt)
    prior_b = model.stack_priors([pr], dt)
    out, timing = run(model_keys(seed, [model_id]), batch, prior_b, config, devices=devices)
    return _to_fit(out, 0, gd, pr, config, seed, timing)


def _to_fit(out: dict, m: int, gd, prior, config: RunConfig, seed, timing):
    """Slice model m's results out of the batch output and build a Fit."""
    from .fit import STAT_NAMES, Fit

    J = gd.J
    pos = out["position"][m][..., : 2 + J]
    mu, tau, theta = (np.asarray(a) for a in model.constrain(pos, config.parametrization))
    draws = {"mu": mu, "tau": tau, "theta": theta}
    if config.parametrization == "noncentered":
        draws["eta"] = pos[..., 2:]
    w = config.warmup
    stats = {k: out[k][m][:, w:] for k in STAT_NAMES}
    warmup_stats = {k: out[k][m][:, :w] for k in STAT_NAMES}
    return Fit(
        draws=draws,
        stats=stats,
        warmup_stats=warmup_stats,
        divergence_position=out["divergence_position"][m][..., : 2 + J],
        step_size=out["final_step_size"][m],
        inverse_mass_matrix=out["inverse_mass"][m][..., : 2 + J],
        data=gd,
        prior=prior,
        parametrization=config.parametrization,
        kernel=config.kernel,
        seed=seed,
        timing=timing,
        config=config,
    )
