"""hnnjax.nuts: the one-leapfrog-per-call NUTS state machine against an independent
recursive reference of Stan's tree building, plus sampling checks.

The reference (`RefNUTS` below) is a plain numpy transcription of the algorithm of Stan's
`base_nuts.hpp` (`transition` and `build_tree`, Stan >= 2.21): doubling in a direction per
depth, the generalized U-turn criterion with p# = M^{-1} p checked on every merged subtree,
Stan's two extra checks across every merge (left half + first state of the right half, right
half + last state of the left half, inside subtrees and at the top level), divergence when
H - H0 > max_delta or H is NaN (the subtree is discarded), and max depth. Termination does
not depend on the multinomial draws, so driving hnnjax with the same starting point,
momentum, step size and direction sequence must give exactly the same tree depth, number of
leapfrog steps, divergence flag and trajectory end points.

Monte Carlo checks use independent chains started from exact draws of the target, so the
chain means are i.i.d. and their spread gives an exact standard error (no autocorrelation
estimate needed); a separate lag-1 autocorrelation check rules out a chain that is stuck
(which would otherwise trivially preserve a stationary start).
"""

from __future__ import annotations

import functools
from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from scipy import stats

from hnnjax import Prior, datasets, model, nuts

# ------------------------------------------------------------------------------ targets

SCALES = np.array([0.5, 1.0, 2.0, 3.0, 10.0])
N_CASES = 128  # batch size of every vmapped run here (one compilation per target)
Z_MAX = 4.0


def gauss_ldg(x):
    """N(0, diag(SCALES^2)) in the dtype of x."""
    s = jnp.asarray(SCALES, x.dtype)
    return -0.5 * jnp.sum((x / s) ** 2), -x / s**2


def gauss_np(x):
    return -0.5 * float(np.sum((x / SCALES) ** 2)), -x / SCALES**2


# The eight schools posteriors (default prior), padded to 12 groups: the 4 padded
# coordinates get inverse mass 0 (inert) and random positions that must never move.
DATA12 = datasets.eight_schools().padded(12)
PRIOR = Prior.default()
LIVE12 = np.concatenate([np.ones(2 + 8), np.zeros(4)])


def _eight(f):
    return lambda x: jax.value_and_grad(lambda y: f(y, DATA12, PRIOR))(x)


nc_ldg = _eight(model.logdensity_noncentered)
ce_ldg = _eight(model.logdensity_centered)


def _np_of(ldg):
    """A numpy (value, grad) evaluator of the same log density for the reference."""
    f = jax.jit(ldg)

    def g(x):
        lp, grad = f(jnp.asarray(x))
        return float(lp), np.asarray(grad)

    return g


# ------------------------------------------------------------------------------ reference


class _Subtree:
    __slots__ = ("valid", "rho", "p_beg", "p_end", "log_w", "leaves")

    def __init__(self, valid, rho=None, p_beg=None, p_end=None, log_w=None, leaves=None):
        self.valid, self.rho, self.p_beg, self.p_end = valid, rho, p_beg, p_end
        self.log_w, self.leaves = log_w, leaves


class RefNUTS:
    """Recursive NUTS transition (Stan's base_nuts), numpy, one chain.

    `run(x0, p0, directions)` returns the tree depth, the number of leapfrog steps, the
    divergence flag and point, the termination reason, both trajectory ends (the last state
    integrated in each direction), every visited state, and the exact probability of each
    state being the draw under Stan's sampling (multinomial within a subtree, biased
    progressive sampling across the top-level merges).
    """

    def __init__(self, ldg, inv_mass, step_size, max_depth=10, max_delta=1000.0, extra_checks=True):
        self.ldg = ldg
        self.inv = np.asarray(inv_mass, np.float64)
        self.eps = float(step_size)
        self.max_depth, self.max_delta, self.extra_checks = max_depth, max_delta, extra_checks

    def hamiltonian(self, lp, p):
        return -lp + 0.5 * float(np.sum(self.inv * p * p))

    def criterion(self, p_a, p_b, rho):
        return float(np.dot(self.inv * p_a, rho)) > 0 and float(np.dot(self.inv * p_b, rho)) > 0

    def leapfrog(self, z, eps):
        x, p, _, g = z
        p_half = p + 0.5 * eps * g
        x_new = x + eps * self.inv * p_half
        lp_new, g_new = self.ldg(x_new)
        return (x_new, p_half + 0.5 * eps * g_new, lp_new, np.asarray(g_new))

    def build_tree(self, depth, sign):
        if depth == 0:
            z = self.leapfrog(self.z, sign * self.eps)
            self.z = z
            self.n_steps += 1
            h = self.hamiltonian(z[2], z[1])
            if np.isnan(h):
                h = np.inf
            self.sum_accept += 1.0 if self.H0 - h > 0 else np.exp(self.H0 - h)
            self.visited.append(z)
            if h - self.H0 > self.max_delta:
                self.divergent, self.divergence_position, self.reason = True, z[0], "divergence"
                return _Subtree(False)
            return _Subtree(True, z[1].copy(), z[1], z[1], self.H0 - h, [(z, self.H0 - h)])
        first = self.build_tree(depth - 1, sign)
        if not first.valid:
            return first
        last = self.build_tree(depth - 1, sign)
        if not last.valid:
            return last
        rho = first.rho + last.rho
        if not self.criterion(first.p_beg, last.p_end, rho):
            self.reason = "subtree_uturn"
            return _Subtree(False)
        if self.extra_checks and not (
            self.criterion(first.p_beg, last.p_beg, first.rho + last.p_beg)
            and self.criterion(first.p_end, last.p_end, last.rho + first.p_end)
        ):
            self.reason = "subtree_extra"
            return _Subtree(False)
        return _Subtree(True, rho, first.p_beg, last.p_end, np.logaddexp(first.log_w, last.log_w),
                        first.leaves + last.leaves)

    def run(self, x0, p0, directions):
        x0 = np.asarray(x0, np.float64)
        p0 = np.asarray(p0, np.float64)
        lp0, g0 = self.ldg(x0)
        z0 = (x0, p0, lp0, np.asarray(g0))
        self.H0 = self.hamiltonian(lp0, p0)
        self.n_steps, self.sum_accept, self.visited = 0, 0.0, []
        self.divergent, self.divergence_position, self.reason = False, None, None
        z_bck = z_fwd = z0
        rho, p_bck, p_fwd = p0.copy(), p0, p0
        log_w_traj = 0.0
        probs = [(z0, 1.0)]
        depth = 0
        while depth < self.max_depth:
            sign = int(directions[depth])
            self.z = z_fwd if sign > 0 else z_bck
            sub = self.build_tree(depth, sign)
            if sign > 0:
                z_fwd = self.z
            else:
                z_bck = self.z
            if not sub.valid:
                break
            depth += 1
            accept = min(1.0, float(np.exp(sub.log_w - log_w_traj)))
            probs = [(z, q * (1.0 - accept)) for z, q in probs] + [
                (z, accept * float(np.exp(lw - sub.log_w))) for z, lw in sub.leaves
            ]
            log_w_traj = np.logaddexp(log_w_traj, sub.log_w)
            # bb/bf: backward/forward end of the backward part; fb/ff: of the forward part.
            if sign > 0:
                rho_b, rho_f, p_bb, p_bf, p_fb, p_ff = rho, sub.rho, p_bck, p_fwd, sub.p_beg, sub.p_end
                p_fwd = sub.p_end
            else:
                rho_b, rho_f, p_bb, p_bf, p_fb, p_ff = sub.rho, rho, sub.p_end, sub.p_beg, p_bck, p_fwd
                p_bck = sub.p_end
            rho = rho_b + rho_f
            if not self.criterion(p_bb, p_ff, rho):
                self.reason = "top_uturn"
                break
            if self.extra_checks and not (
                self.criterion(p_bb, p_fb, rho_b + p_fb) and self.criterion(p_bf, p_ff, rho_f + p_bf)
            ):
                self.reason = "top_extra"
                break
        if self.reason is None:
            self.reason = "max_depth"
        return dict(
            depth=depth, n_steps=self.n_steps, divergent=self.divergent,
            divergence_position=self.divergence_position, reason=self.reason,
            left=z_bck, right=z_fwd, visited=self.visited, probs=probs,
            accept_stat=self.sum_accept / self.n_steps,
        )


# ------------------------------------------------------------------------------ drivers


@functools.lru_cache(maxsize=None)
def _init_fn(max_depth):
    """Vmapped, jitted nuts.init from chain arrays (does not depend on the target)."""
    config = nuts.NUTS(max_depth=max_depth)

    def one(key, x, lp, grad, step_size, inv):
        return nuts.init(key, nuts.ChainState(x, lp, grad), step_size, inv, config)

    return jax.jit(jax.vmap(one, in_axes=(0, 0, 0, 0, 0, None)))


def _make_run_fn(ldg, max_depth):
    """Vmapped, jitted: advance until done, then finish (traced with nuts' current settings)."""
    config = nuts.NUTS(max_depth=max_depth)

    def one(tree, step_size, inv):
        tree = lax.while_loop(
            lambda t: ~t.done, lambda t: nuts.advance(t, step_size, inv, ldg, config), tree
        )
        chain, info = nuts.finish(tree)
        return tree, chain, info

    return jax.jit(jax.vmap(one, in_axes=(0, 0, None)))


_run_fn = functools.lru_cache(maxsize=None)(_make_run_fn)


@functools.lru_cache(maxsize=None)
def _ldg_batch(ldg):
    return jax.jit(jax.vmap(ldg))


def start_trees(ldg, max_depth, keys, x, step_size, inv):
    lp, grad = _ldg_batch(ldg)(x)
    return _init_fn(max_depth)(keys, x, lp, grad, step_size, inv)


def run_trees(ldg, max_depth, trees, step_size, inv):
    return _run_fn(ldg, max_depth)(trees, step_size, inv)


def key_words(seed, n):
    """n transition keys: counter_rng keys are two uint32 words."""
    return jnp.asarray(np.random.default_rng(seed).integers(0, 2**32, (n, 2), dtype=np.uint32))


def _row(tree_like, i):
    return jax.tree.map(lambda a: np.asarray(a[i]), tree_like)


# ------------------------------------------------------------------------------ cases


def _cases(name):
    """Fixed-seed starting points, step sizes and inverse masses for each target."""
    rng = np.random.default_rng({"gauss": 11, "gauss_md4": 12, "nc": 13, "ce": 14}[name])
    n = N_CASES
    if name == "gauss":  # unequal scales, non-identity diagonal inverse mass
        x = rng.normal(size=(n, 5)) * SCALES
        return gauss_ldg, gauss_np, 10, x, rng.uniform(0.05, 0.9, n), np.array([0.3, 1.0, 2.0, 5.0, 50.0])
    if name == "gauss_md4":  # small steps: most transitions hit max_depth = 4
        x = rng.normal(size=(n, 5)) * SCALES
        return gauss_ldg, gauss_np, 4, x, rng.uniform(0.01, 0.5, n), np.ones(5)
    pad = rng.normal(size=(n, 4)) * 3.0  # inert coordinates, arbitrary values
    if name == "nc":
        x = np.concatenate([rng.normal(4, 3, (n, 1)), rng.normal(1, 1, (n, 1)), rng.normal(size=(n, 8)), pad], 1)
        return nc_ldg, _np_of(nc_ldg), 10, x, rng.uniform(0.05, 1.0, n), LIVE12
    if name == "ce":  # big steps: many divergences
        x = np.concatenate([rng.normal(4, 3, (n, 1)), rng.normal(1.5, 1, (n, 1)), rng.normal(5, 6, (n, 8)), pad], 1)
        inv = np.concatenate([[10.0, 1.0], np.full(8, 30.0), np.zeros(4)])
        return ce_ldg, _np_of(ce_ldg), 10, x, rng.uniform(0.05, 1.5, n), inv
    raise KeyError(name)


TARGETS = ("gauss", "gauss_md4", "nc", "ce")


@functools.lru_cache(maxsize=None)
def comparison(name):
    """Run hnnjax and the reference on the same N_CASES starting states of one target."""
    ldg, np_ldg, max_depth, x, eps, inv = _cases(name)
    keys = key_words(1000 + TARGETS.index(name), N_CASES)
    x, eps_j, inv_j = jnp.asarray(x), jnp.asarray(eps), jnp.asarray(inv)
    trees0 = start_trees(ldg, max_depth, keys, x, eps_j, inv_j)
    trees, chains, infos = jax.device_get(run_trees(ldg, max_depth, trees0, eps_j, inv_j))
    refs = []
    for i in range(N_CASES):
        ref = RefNUTS(np_ldg, inv, eps[i], max_depth=max_depth)
        refs.append(ref.run(np.asarray(x[i]), np.asarray(trees0.left.momentum[i]), np.asarray(trees0.directions[i])))
    return dict(ldg=ldg, np_ldg=np_ldg, max_depth=max_depth, x=np.asarray(x), eps=eps, inv=inv, keys=keys,
                trees0=jax.device_get(trees0), trees=trees, chains=chains, infos=infos, refs=refs)


def _close(a, b, rtol=1e-10):
    """Equal to rounding (relative), NaN matching NaN (a trajectory may overflow)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    with np.errstate(invalid="ignore"):
        ok = (np.abs(a - b) <= rtol * (1.0 + np.abs(a))) | (a == b) | (np.isnan(a) & np.isnan(b))
    return bool(np.all(ok))


# ------------------------------------------------------------------------------ 1. tree logic


@pytest.mark.parametrize("name", TARGETS)
def test_tree_building_matches_reference(name):
    """Depth, leapfrog count, divergence flag, both trajectory ends and the acceptance
    statistic agree with the recursive reference for every case."""
    c = comparison(name)
    mismatches = _mismatches(c, c["trees"], c["infos"])
    assert not mismatches, f"{len(mismatches)} of {N_CASES} cases differ, first: {mismatches[:3]}"


def _mismatches(c, trees, infos):
    mismatches = []
    for i, ref in enumerate(c["refs"]):
        tree, info = _row(trees, i), _row(infos, i)
        got = (int(info.tree_depth), int(info.n_steps), bool(info.diverging))
        want = (ref["depth"], ref["n_steps"], ref["divergent"])
        ends_ok = all(
            _close(ref[side][0], getattr(tree, side).position) and _close(ref[side][1], getattr(tree, side).momentum)
            for side in ("left", "right")
        )
        if got != want or not ends_ok or not _close(ref["accept_stat"], info.accept_stat):
            mismatches.append((i, ref["reason"], want, got, ends_ok, ref["accept_stat"], float(info.accept_stat)))
    return mismatches


@pytest.mark.parametrize("name", TARGETS)
def test_loop_over_closing_levels_matches_reference(name, monkeypatch):
    """The other implementation of the subtree checks (a loop over the closing levels, used
    from nuts.LOOP_CHECKS_MIN_DIM coordinates on) builds the same trees as the reference and
    gives the same draws as the vectorized checks used above."""
    c = comparison(name)
    monkeypatch.setattr(nuts, "LOOP_CHECKS_MIN_DIM", 1)
    run = _make_run_fn(c["ldg"], c["max_depth"])
    trees, chains, infos = jax.device_get(run(c["trees0"], jnp.asarray(c["eps"]), jnp.asarray(c["inv"])))
    mismatches = _mismatches(c, trees, infos)
    assert not mismatches, f"{len(mismatches)} of {N_CASES} cases differ, first: {mismatches[:3]}"
    for a, b in zip(jax.tree.leaves((c["chains"], c["infos"])), jax.tree.leaves((chains, infos))):
        assert _close(a, b), (a, b)


@pytest.mark.parametrize("max_depth", [1, 2])
def test_shallow_max_depth_matches_reference(max_depth):
    """The smallest trees (max_depth 1: a single leaf, no node to check; 2: one level)
    match the reference, and max_depth bounds the depth."""
    rng = np.random.default_rng(21 + max_depth)
    n = 16
    x, eps, inv = rng.normal(size=(n, 5)) * SCALES, rng.uniform(0.01, 0.9, n), np.array([0.3, 1.0, 2.0, 5.0, 50.0])
    trees0 = start_trees(gauss_ldg, max_depth, key_words(77, n), jnp.asarray(x), jnp.asarray(eps), jnp.asarray(inv))
    trees, _, infos = jax.device_get(run_trees(gauss_ldg, max_depth, trees0, jnp.asarray(eps), jnp.asarray(inv)))
    refs = [RefNUTS(gauss_np, inv, eps[i], max_depth=max_depth).run(
        x[i], np.asarray(trees0.left.momentum[i]), np.asarray(trees0.directions[i])) for i in range(n)]
    assert not _mismatches(dict(refs=refs), trees, infos)
    assert np.all(infos.tree_depth <= max_depth)
    assert np.all(infos.n_steps <= 2**max_depth - 1)


def test_cases_cover_every_termination_reason():
    """The fixed-seed cases above exercise every way a transition can end."""
    reasons = {name: Counter(r["reason"] for r in comparison(name)["refs"]) for name in TARGETS}
    print(reasons)
    total = sum(reasons.values(), Counter())
    for reason in ("subtree_uturn", "top_uturn", "subtree_extra", "top_extra", "divergence", "max_depth"):
        assert total[reason] > 0, (reason, reasons)
    assert reasons["ce"]["divergence"] > 0
    assert reasons["gauss_md4"]["max_depth"] > 0
    assert reasons["nc"]["top_uturn"] + reasons["nc"]["subtree_uturn"] > 0


@pytest.mark.parametrize("kind", ["subtree_extra", "top_extra"])
def test_extra_checks_decide_some_transitions(kind):
    """Cases where only one of Stan's extra checks across a merge stops the trajectory: the
    reference without the extra checks goes on (more leapfrog steps), and hnnjax stops
    exactly where the reference with the extra checks stops."""
    found = 0
    for name in TARGETS:
        c = comparison(name)
        for i, ref in enumerate(c["refs"]):
            if ref["reason"] != kind or ref["depth"] == c["max_depth"]:
                continue  # (at max depth the plain criterion stops at the same point)
            plain = RefNUTS(c["np_ldg"], c["inv"], c["eps"][i], max_depth=c["max_depth"], extra_checks=False).run(
                c["x"][i], c["trees0"].left.momentum[i], c["trees0"].directions[i]
            )
            assert plain["n_steps"] >= ref["n_steps"], (name, i)
            assert (plain["depth"], plain["n_steps"]) != (ref["depth"], ref["n_steps"]), (name, i)
            assert int(c["infos"].n_steps[i]) == ref["n_steps"]
            assert int(c["infos"].tree_depth[i]) == ref["depth"]
            found += 1
    assert found > 0


# Hand-made cases on the 5-d Gaussian (unit inverse mass, max_depth 4): start at the mode,
# momentum in two or three coordinates, step 0.25, every doubling forward. Found by a scan
# over momenta; what makes them extra-check cases is asserted below.
CONSTRUCTED = {
    "top_extra": ([-3.0, -1.5, 0.0, 0.0, 0.0], 3, 7),  # (p0, depth, n_steps)
    "subtree_extra": ([-2.0, 0.0, 1.0, 0.0, 0.0], 3, 11),
}


@jax.jit
def _with_momentum(trees, p0, inv):
    """Replace the initial momentum of fresh (batched) TreeStates: every field that depends on
    it (the packed fields: both edges' momenta, rho, p_near, and the energies H0 of the
    start, of the proposal and of the subtree proposal)."""
    energy0 = -trees.left.logdensity + 0.5 * jnp.sum(inv * p0 * p0, axis=-1)
    floats = trees.floats
    for k in (nuts._F_ENERGY0, nuts._F_PROP_ENERGY, nuts._F_SUB_ENERGY):
        floats = floats.at[:, k].set(energy0)
    return trees._replace(
        floats=floats,
        edges=trees.edges.at[:, :, 1, :].set(p0[:, None, :]),
        vecs=trees.vecs.at[:, nuts._V_RHO].set(p0).at[:, nuts._V_P_NEAR].set(p0),
    )


def _check_fresh_tree(trees, x0, p0, energy0):
    """The views of a fresh tree: both edges at (x0, p0), proposals at x0 with energy H0."""
    for edge in (trees.left, trees.right):
        np.testing.assert_array_equal(np.asarray(edge.position), x0)
        np.testing.assert_array_equal(np.asarray(edge.momentum), p0)
    for arr in (trees.rho, trees.p_near):
        np.testing.assert_array_equal(np.asarray(arr), p0)
    np.testing.assert_array_equal(np.asarray(trees.sub_rho), 0.0)
    for prop in (trees.proposal, trees.sub_proposal):
        np.testing.assert_array_equal(np.asarray(prop.position), x0)
        np.testing.assert_allclose(np.asarray(prop.energy), energy0, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(trees.energy0), energy0, rtol=1e-12)
    assert not np.any(np.asarray(trees.done)) and np.all(np.asarray(trees.n_steps) == 0)


@pytest.mark.parametrize("kind", sorted(CONSTRUCTED))
def test_extra_check_constructed_case(kind):
    """The plain criterion would continue (the reference without the extra checks takes more
    steps) but one extra check stops the trajectory; hnnjax stops where Stan does."""
    p0, depth, n_steps = CONSTRUCTED[kind]
    p0 = np.array(p0)
    x0, dirs, inv, eps = np.zeros(5), np.ones(4, int), np.ones(5), 0.25
    full = RefNUTS(gauss_np, inv, eps, max_depth=4).run(x0, p0, dirs)
    plain = RefNUTS(gauss_np, inv, eps, max_depth=4, extra_checks=False).run(x0, p0, dirs)
    assert (full["reason"], full["depth"], full["n_steps"]) == (kind, depth, n_steps)
    assert plain["n_steps"] > full["n_steps"] and plain["reason"] not in ("top_extra", "subtree_extra")
    keys = key_words(5, N_CASES)
    x = jnp.zeros((N_CASES, 5))
    eps_j = jnp.full(N_CASES, eps)
    trees = start_trees(gauss_ldg, 4, keys, x, eps_j, jnp.asarray(inv))
    trees = _with_momentum(trees, np.broadcast_to(p0, (N_CASES, 5)), inv)
    _check_fresh_tree(trees, np.zeros((N_CASES, 5)), np.broadcast_to(p0, (N_CASES, 5)), 0.5 * np.sum(p0 * p0))
    trees = trees._replace(directions=np.ones(trees.directions.shape, np.int32))
    out, chains, infos = run_trees(gauss_ldg, 4, trees, eps_j, jnp.asarray(inv))
    assert np.all(np.asarray(infos.n_steps) == n_steps)
    assert np.all(np.asarray(infos.tree_depth) == depth)
    assert not np.any(np.asarray(infos.diverging))
    for i in range(N_CASES):  # same trajectory, different multinomial draws
        assert _close(full["right"][0], out.right.position[i]) and _close(full["right"][1], out.right.momentum[i])
        np.testing.assert_array_equal(np.asarray(out.left.position[i]), x0)
        j, err = _state_index(full, np.asarray(chains.position[i]))
        assert err < 1e-10 and full["probs"][j][1] > 0


# ------------------------------------------------------------------------------ 3. invariants


@pytest.mark.parametrize("name", TARGETS)
def test_transition_invariants(name):
    c = comparison(name)
    infos = c["infos"]
    depth = np.asarray(infos.tree_depth)
    n = np.asarray(infos.n_steps)
    assert np.all(depth >= 0) and np.all(depth <= c["max_depth"])
    assert np.all(n >= 2**depth - 1) and np.all(n <= 2 ** (depth + 1) - 1)
    acc = np.asarray(infos.accept_stat)
    assert np.all((acc >= 0) & (acc <= 1))
    for i, ref in enumerate(c["refs"]):
        if ref["reason"] in ("top_uturn", "top_extra", "max_depth"):
            assert n[i] == 2 ** depth[i] - 1, (i, ref["reason"])
        else:  # ended inside a subtree that was discarded
            assert n[i] > 2 ** depth[i] - 1, (i, ref["reason"])
        if ref["divergent"]:
            pos = np.asarray(infos.divergence_position[i])
            assert np.all(np.isfinite(pos))
            assert _close(ref["divergence_position"], pos)
        if ref["reason"] == "max_depth":
            assert depth[i] == c["max_depth"]


def test_inert_coordinates_never_move():
    """Coordinates with inverse mass 0 keep their starting values in every visited state."""
    for name in ("nc", "ce"):
        c = comparison(name)
        dead = c["inv"] == 0
        for i in range(N_CASES):
            for arr in (c["trees"].left.position[i], c["trees"].right.position[i], c["chains"].position[i]):
                np.testing.assert_array_equal(np.asarray(arr)[dead], c["x"][i][dead])
            np.testing.assert_array_equal(np.asarray(c["trees0"].left.momentum[i])[dead], 0.0)


def test_same_key_same_output_and_different_keys_different_directions():
    c = comparison("gauss")
    ldg, md, eps, inv = c["ldg"], c["max_depth"], jnp.asarray(c["eps"]), jnp.asarray(c["inv"])
    trees0 = start_trees(ldg, md, c["keys"], jnp.asarray(c["x"]), eps, inv)
    again = jax.device_get(run_trees(ldg, md, trees0, eps, inv))
    for a, b in zip(jax.tree.leaves((c["trees"], c["chains"], c["infos"])), jax.tree.leaves(again)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    other = start_trees(ldg, md, key_words(999, N_CASES), jnp.asarray(c["x"]), eps, inv)
    d0, d1 = np.asarray(c["trees0"].directions), np.asarray(other.directions)
    assert set(np.unique(d0)) == {-1, 1}
    # P(two independent direction sequences of length 10 agree) = 2^-10.
    assert np.mean(np.all(d0 == d1, axis=1)) < 0.05
    assert not np.array_equal(np.asarray(c["trees0"].left.momentum), np.asarray(other.left.momentum))
    # Directions are fair coins: z-test on the fraction of forward doublings.
    frac = np.mean(np.concatenate([d0, d1]) > 0)
    assert abs(frac - 0.5) / np.sqrt(0.25 / (2 * d0.size)) < Z_MAX


def _z_test_normal_momenta(p, inv):
    """p (n, d) should be N(0, diag(1/inv)): z-tests of means, variances (standard error from
    the sample fourth moment) and correlations (standard error 1/sqrt(n))."""
    p = np.asarray(p, np.float64)
    n = p.shape[0]
    var = 1.0 / np.asarray(inv, np.float64)
    z_mean = p.mean(0) / np.sqrt(var / n)
    sq = p**2
    z_var = (sq.mean(0) - var) / (sq.std(0, ddof=1) / np.sqrt(n))
    corr = np.corrcoef(p.T)[np.triu_indices(p.shape[1], 1)]
    print("z mean", z_mean, "z var", z_var)
    assert np.all(np.abs(z_mean) < Z_MAX) and np.all(np.abs(z_var) < Z_MAX)
    assert np.all(np.abs(corr) * np.sqrt(n) < Z_MAX)


def test_init_momentum_is_normal_with_the_metric_covariance():
    """The initial momentum drawn by nuts.init from its key is N(0, M) = N(0, diag(1/inverse_mass))."""
    inv = np.array([0.3, 1.0, 2.0, 5.0, 50.0])
    x = jnp.zeros((N_CASES, 5))
    eps = jnp.full(N_CASES, 0.1)
    p = [np.asarray(start_trees(gauss_ldg, 10, key_words(50_000 + b, N_CASES), x, eps, jnp.asarray(inv)).left.momentum)
         for b in range(40)]
    _z_test_normal_momenta(np.concatenate(p), inv)


# ------------------------------------------------------------------------------ 4. the draw


def _state_index(ref, x):
    errs = [np.max(np.abs(z[0] - x) / (1 + np.abs(z[0]))) for z, _ in ref["probs"]]
    j = int(np.argmin(errs))
    return j, errs[j]


@pytest.mark.parametrize("name", TARGETS)
def test_draw_is_a_state_of_the_kept_trajectory(name):
    """The finished draw (position, log density, gradient, energy) is one of the states of
    the trajectory, never a state of a discarded subtree (probability 0 in the reference)."""
    c = comparison(name)
    for i, ref in enumerate(c["refs"]):
        chain, info = _row(c["chains"], i), _row(c["infos"], i)
        j, err = _state_index(ref, chain.position)
        assert err < 1e-10, (i, err)
        z, q = ref["probs"][j]
        assert q > 0, (i, ref["reason"])
        assert _close(z[2], chain.logdensity) and _close(z[3], chain.grad)
        energy = -z[2] + 0.5 * np.sum(c["inv"] * z[1] ** 2)
        assert _close(energy, info.energy)


def _pick(refs, reason, max_steps):
    """The case ending by `reason` whose draw distribution has the most states of
    probability >= 1% (the most informative chi-square test)."""
    best, best_bins = None, 0
    for i, r in enumerate(refs):
        if r["reason"] == reason and r["n_steps"] <= max_steps:
            bins = sum(q >= 0.01 for _, q in r["probs"])
            if bins > best_bins:
                best, best_bins = i, bins
    assert best is not None, f"no {reason} case"
    return best


@pytest.mark.parametrize("reason", ["top_uturn", "subtree_uturn"])
def test_draw_distribution_matches_biased_progressive_sampling(reason):
    """With the trajectory fixed (same start, momentum, directions) and only the per-leaf
    uniforms varied (the counter key), the draw's distribution over the trajectory's states is
    Stan's: multinomial within each subtree, min(1, W_new / W_old) at each top-level merge,
    probability 0 for the states of a discarded subtree. Chi-square test, 4096 draws."""
    c = comparison("gauss")
    i = _pick(c["refs"], reason, 63)
    ref = c["refs"][i]
    one = jax.tree.map(lambda a: jnp.broadcast_to(a[i], (N_CASES,) + a.shape[1:]), c["trees0"])
    eps = jnp.full(N_CASES, c["eps"][i])
    counts = np.zeros(len(ref["probs"]))
    batches = 32
    words = key_words(7, batches * N_CASES).reshape(batches, N_CASES, 2)
    for b in range(batches):
        _, chains, _ = run_trees(c["ldg"], c["max_depth"], one._replace(key=words[b]), eps, jnp.asarray(c["inv"]))
        for x in np.asarray(chains.position):
            j, err = _state_index(ref, x)
            assert err < 1e-10
            counts[j] += 1
    probs = np.array([q for _, q in ref["probs"]])
    assert np.all(counts[probs == 0] == 0)
    total = batches * N_CASES
    expected = total * probs
    big = expected >= 5
    obs = np.append(counts[big], counts[~big].sum())
    exp = np.append(expected[big], expected[~big].sum())
    keep = exp > 0
    chi2 = float(np.sum((obs[keep] - exp[keep]) ** 2 / exp[keep]))
    dof = int(keep.sum()) - 1
    assert dof >= 3
    print(reason, i, ref["n_steps"], "chi2", chi2, "dof", dof)
    assert chi2 < stats.chi2.ppf(1 - 1e-5, dof)


# ------------------------------------------------------------------------------ 2. moments


def _sample(ldg, dtype, inv, step_size, n_transitions, seed):
    """N_CASES independent chains started from exact draws of N(0, diag(SCALES^2))."""
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(N_CASES, 5)) * SCALES, dtype)
    inv = jnp.asarray(inv, dtype)
    eps = jnp.full(N_CASES, step_size, dtype)
    draws, depths = [], []
    for t in range(n_transitions):
        trees = start_trees(ldg, 10, key_words(seed * 100_000 + t, N_CASES), x, eps, inv)
        _, chain, info = run_trees(ldg, 10, trees, eps, inv)
        x = chain.position
        draws.append(np.asarray(x))
        depths.append(np.asarray(info.tree_depth))
    assert chain.position.dtype == dtype and info.energy.dtype == dtype
    return np.stack(draws, 1), np.stack(depths, 1)  # (chains, draws, 5)


def _check_moments(draws):
    """z-tests of E[x] = 0 and E[x^2] = s^2 per coordinate; the chains are independent and
    start at stationarity, so the standard error is the spread of the chain means."""
    x = draws.astype(np.float64)
    n_chains = x.shape[0]
    for stat, truth in ((x, np.zeros(5)), (x**2, SCALES**2)):
        chain_means = stat.mean(axis=1)
        est = chain_means.mean(axis=0)
        se = chain_means.std(axis=0, ddof=1) / np.sqrt(n_chains)
        z = (est - truth) / se
        print("estimate", est, "z", z)
        assert np.all(np.abs(z) < Z_MAX), z
    # Mixing: lag-1 autocorrelation pooled over chains (a stuck chain gives 1).
    c = x - x.mean(axis=(0, 1))
    rho1 = np.sum(c[:, 1:] * c[:, :-1], axis=(0, 1)) / np.sum(c * c, axis=(0, 1))
    print("lag-1 autocorrelation", rho1)
    assert np.all(rho1 < 0.9), rho1  # observed <= 0.75 (the scale-10 coordinate, unit mass)


def test_moments_unit_inverse_mass():
    draws, depth = _sample(gauss_ldg, jnp.float64, np.ones(5), 0.3, 100, seed=21)
    _check_moments(draws)


def test_moments_diagonal_inverse_mass():
    inv = 0.7 * SCALES**2 * np.array([1.3, 0.8, 1.0, 1.5, 0.6])
    draws, depth = _sample(gauss_ldg, jnp.float64, inv, 0.6, 100, seed=22)
    _check_moments(draws)
    assert np.mean(depth) < 5  # a fitting metric keeps trajectories short


def test_moments_float32():
    """float32 end to end: positions, momenta and energies stay float32."""
    draws, _ = _sample(gauss_ldg, jnp.float32, np.ones(5), 0.3, 100, seed=23)
    assert draws.dtype == np.float32
    _check_moments(draws)


@pytest.mark.parametrize("lanes, scatters", [(4, False), (16, True)])
def test_vmapped_step_writes_checkpoints_without_scatter(lanes, scatters):
    """A leapfrog step writes its checkpoint row with packing.set_row: with a few vmapped lanes
    the step has no scatter (XLA's CPU emitters would loop over the lanes), with many it does."""
    from hnnjax.packing import UNROLL_MAX

    assert 4 <= UNROLL_MAX < 16
    config = nuts.NUTS(max_depth=6)
    ldg = jax.value_and_grad(lambda x: -0.5 * jnp.sum(x**2))
    d = 3
    inv = jnp.ones(d)

    def step(x):
        lp, g = ldg(x)
        tree = nuts.init(jnp.zeros(3, jnp.uint32), nuts.ChainState(x, lp, g), 0.5, inv, config)
        return nuts.advance(tree, 0.5, inv, ldg, config)

    text = jax.jit(jax.vmap(step)).lower(jnp.zeros((lanes, d))).as_text()
    assert ("scatter" in text) == scatters
