"""hnnjax.integrators: the leapfrog map (diagonal metric) and momentum sampling.

Reversibility on non-Gaussian targets, second-order energy error, volume preservation,
inert (inverse mass 0) coordinates, and the covariance of `sample_momentum`.
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jax import lax

from hnnjax import Prior, datasets, model
from hnnjax.integrators import IntegratorState, kinetic_energy, leapfrog, new_state, sample_momentum

PRIOR = Prior.default()
DATA8 = datasets.eight_schools().padded()
DATA12 = datasets.eight_schools().padded(12)
SCALES = np.array([0.5, 1.0, 2.0, 3.0, 10.0])
Z_MAX = 4.0


def nc8(x):
    return jax.value_and_grad(lambda y: model.logdensity_noncentered(y, DATA8, PRIOR))(x)


def funnel(x):
    """Neal's funnel: v ~ N(0, 3^2), x_i | v ~ N(0, e^v), i = 1..4."""

    def lp(y):
        v, z = y[0], y[1:]
        return -v * v / 18.0 - 0.5 * jnp.sum(z * z) * jnp.exp(-v) - 0.5 * z.size * v

    return jax.value_and_grad(lp)(x)


def gauss(x):
    return -0.5 * jnp.sum((x / SCALES) ** 2), -x / SCALES**2


def _integrate(ldg, n_steps):
    """n leapfrog steps of size eps, momentum flipped, n more steps: jitted."""

    def run(x, p, eps, inv):
        s = new_state(x, p, ldg)
        step = lambda _, state: leapfrog(state, eps, inv, ldg)  # noqa: E731
        fwd = lax.fori_loop(0, n_steps, step, s)
        back = lax.fori_loop(0, n_steps, step, fwd._replace(momentum=-fwd.momentum))
        return fwd, back

    return jax.jit(run)


@pytest.mark.parametrize(
    "name, ldg, x0, eps",
    [
        ("eight_schools_noncentered", nc8, [3.0, 1.5, 0.3, -0.2, 1.0, -1.1, 0.4, 0.0, 0.8, -0.5], 0.08),
        ("funnel", funnel, [1.0, 0.7, -1.2, 0.4, 2.0], 0.05),
    ],
)
def test_leapfrog_is_reversible(name, ldg, x0, eps):
    """n steps forward, momentum negated, n steps forward: back at the start (momentum
    negated) to float64 rounding, on targets that are not Gaussian."""
    x0 = jnp.asarray(x0)
    rng = np.random.default_rng(3)
    p0 = jnp.asarray(rng.normal(size=x0.shape))
    inv = jnp.asarray(rng.uniform(0.5, 2.0, size=x0.shape))
    fwd, back = _integrate(ldg, 40)(x0, p0, eps, inv)
    moved = float(jnp.max(jnp.abs(fwd.position - x0)))
    assert moved > 0.3  # the trajectory went somewhere
    np.testing.assert_allclose(back.position, x0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(back.momentum, -p0, rtol=0, atol=1e-12)


def _max_energy_error(ldg, x0, p0, inv, eps, total_time):
    n = int(round(total_time / eps))

    def run(x, p):
        s = new_state(x, p, ldg)
        h0 = -s.logdensity + kinetic_energy(s.momentum, inv)

        def body(state, _):
            state = leapfrog(state, eps, inv, ldg)
            return state, -state.logdensity + kinetic_energy(state.momentum, inv) - h0

        _, dh = lax.scan(body, s, None, length=n)
        return jnp.max(jnp.abs(dh))

    return float(jax.jit(run)(x0, p0))


@pytest.mark.parametrize("target", ["gauss", "funnel"])
def test_energy_error_is_second_order(target):
    """max |H - H0| over a fixed integration time T scales as eps^2.

    For the leapfrog map the energy error is eps^2 C(x, p) + O(eps^4) along the whole
    trajectory (it conserves a modified Hamiltonian H + eps^2 H_2 + ...), so halving eps
    divides it by 4 (1 + O(eps^2)). With (eps * omega_max)^2 <= 0.04 for the largest
    frequency omega_max = 2 of the Gaussian, the O(eps^2) relative correction moves each
    log2 ratio by at most ~0.06, hence |slope - 2| < 0.15: a first-order integrator (slope 1)
    or a third-order one (slope 3) fails."""
    rng = np.random.default_rng(5)
    if target == "gauss":
        ldg, x0, epss = gauss, rng.normal(size=5) * SCALES, [0.1, 0.05, 0.025, 0.0125]
        inv = np.ones(5)
    else:
        ldg, x0, epss = funnel, np.array([0.5, 0.3, -0.8, 0.4, 1.0]), [0.04, 0.02, 0.01, 0.005]
        inv = np.ones(5)
    p0 = rng.normal(size=5)
    errs = np.array([_max_energy_error(ldg, jnp.asarray(x0), jnp.asarray(p0), jnp.asarray(inv), e, 4.0) for e in epss])
    slope = np.polyfit(np.log(epss), np.log(errs), 1)[0]
    ratios = errs[:-1] / errs[1:]
    print(target, errs, ratios, slope)
    assert errs[0] > 1e-6  # far above rounding
    assert abs(slope - 2.0) < 0.15
    assert np.all(np.abs(ratios - 4.0) < 0.6)


def test_leapfrog_preserves_volume():
    """The Jacobian of one leapfrog step (as a map of (x, p)) has determinant 1, and the
    map is symplectic: J^T Omega J = Omega."""
    inv = jnp.array([0.5, 1.0, 2.0, 1.5, 0.7])
    d = 5

    def flow(z):
        s = leapfrog(new_state(z[:d], z[d:], funnel), 0.1, inv, funnel)
        return jnp.concatenate([s.position, s.momentum])

    z0 = jnp.array([0.5, 0.3, -0.8, 0.4, 1.0, 0.2, -1.0, 0.5, 1.3, -0.4])
    jac = np.asarray(jax.jit(jax.jacfwd(flow))(z0))
    assert abs(np.linalg.det(jac) - 1.0) < 1e-12
    # Symplectic w.r.t. the form dx ^ dp (the mass only rescales p's velocity).
    omega = np.block([[np.zeros((d, d)), np.eye(d)], [-np.eye(d), np.zeros((d, d))]])
    np.testing.assert_allclose(jac.T @ omega @ jac, omega, atol=1e-12)


def test_inert_coordinates_follow_the_unpadded_model():
    """Eight schools padded to 12 groups with inverse mass 0 on the padding: the padded
    coordinates never move (whatever their momentum), add nothing to the kinetic energy, and
    the live coordinates follow exactly the trajectory of the unpadded model."""
    rng = np.random.default_rng(8)
    x8 = np.concatenate([[4.0, 1.0], rng.normal(size=8)])
    p8 = rng.normal(size=10)
    x12 = np.concatenate([x8, [5.0, -3.0, 0.5, 100.0]])
    p12 = np.concatenate([p8, [1.0, -2.0, 3.0, 1e6]])  # nonzero momentum on inert coordinates
    inv8 = rng.uniform(0.5, 2.0, size=10)
    inv12 = np.concatenate([inv8, np.zeros(4)])

    def nc12(x):
        return jax.value_and_grad(lambda y: model.logdensity_noncentered(y, DATA12, PRIOR))(x)

    def run(ldg, x, p, inv):
        s = new_state(x, p, ldg)

        def body(state, _):
            state = leapfrog(state, 0.1, inv, ldg)
            return state, (state.position, state.momentum, kinetic_energy(state.momentum, inv), state.logdensity)

        return lax.scan(body, s, None, length=30)[1]

    pos8, mom8, ke8, lp8 = jax.jit(run, static_argnums=0)(nc8, x8, p8, inv8)
    pos12, mom12, ke12, lp12 = jax.jit(run, static_argnums=0)(nc12, x12, p12, inv12)
    np.testing.assert_array_equal(np.asarray(pos12)[:, 10:], np.broadcast_to(x12[10:], (30, 4)))
    np.testing.assert_allclose(pos12[:, :10], pos8, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(mom12[:, :10], mom8, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(ke12, ke8, rtol=1e-13)
    np.testing.assert_allclose(lp12, lp8, rtol=1e-13)
    assert float(jnp.max(jnp.abs(pos8[-1] - x8))) > 0.1
    assert float(kinetic_energy(jnp.asarray(p12), jnp.asarray(inv12))) == pytest.approx(
        0.5 * float(np.sum(inv8 * p8**2)), rel=1e-14
    )


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_sample_momentum_scales_normals(dtype):
    """sample_momentum(z, inverse_mass) maps standard normals z to p ~ N(0, diag(1/inverse_mass)):
    p = z / sqrt(inverse_mass) to rounding, exactly 0 where the inverse mass is 0 (whatever z),
    in the dtype of the inputs. The float32 case builds float32 arrays.
    (The kernels' own normals are z-tested through nuts.init / hmc.init in their test files.)"""
    inv = jnp.asarray([0.25, 1.0, 4.0, 0.01, 0.0], dtype)
    n = 2000
    z = jnp.asarray(np.random.default_rng(17).standard_normal((n, 5)), dtype)
    p = jax.jit(jax.vmap(sample_momentum, in_axes=(0, None)))(z, inv)
    assert p.dtype == dtype and p.shape == (n, 5)
    p = np.asarray(p, np.float64)
    np.testing.assert_array_equal(p[:, 4], 0.0)
    live = p[:, :4]
    target_var = 1.0 / np.asarray(inv[:4], np.float64)
    rtol = 1e-6 if dtype == jnp.float32 else 1e-14
    # p = z / sqrt(inverse mass) exactly, so p ~ Normal(0, M) follows from z ~ Normal(0, I)
    np.testing.assert_allclose(live, np.asarray(z, np.float64)[:, :4] * np.sqrt(target_var), rtol=rtol)


@jax.jit
def _step_pair(x, p, eps, inv):
    fwd = leapfrog(new_state(x, p, nc8), eps, inv, nc8)
    return fwd, leapfrog(fwd, -eps, inv, nc8)

# Subnormals excluded: XLA on CPU flushes them to zero, which is not an integrator property.
_coord = st.floats(-3.0, 3.0, allow_nan=False, allow_infinity=False, allow_subnormal=False)


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    x=st.lists(_coord, min_size=10, max_size=10),
    p=st.lists(_coord, min_size=10, max_size=10),
    inv=st.lists(st.floats(0.0, 2.0, allow_subnormal=False), min_size=10, max_size=10),
    eps=st.floats(-0.3, 0.3).filter(lambda e: abs(e) > 1e-3),
)
def test_one_step_forward_then_backward_returns(x, p, inv, eps):
    """Leapfrog with step eps then -eps is the identity (to rounding), for any position,
    momentum, inverse mass (zeros included) and sign of the step: eight schools posterior."""
    x, p, inv = jnp.asarray(x), jnp.asarray(p), jnp.asarray(inv)
    fwd, back = _step_pair(x, p, eps, inv)
    scale_x = 1.0 + float(jnp.max(jnp.abs(fwd.position)))
    scale_p = 1.0 + float(jnp.max(jnp.abs(fwd.momentum))) + abs(eps) * float(jnp.max(jnp.abs(fwd.grad)))
    np.testing.assert_allclose(back.position, x, rtol=0, atol=1e-13 * scale_x)
    np.testing.assert_allclose(back.momentum, p, rtol=0, atol=1e-13 * scale_p)
    # Inert coordinates never move.
    dead = np.asarray(inv) == 0
    np.testing.assert_array_equal(np.asarray(fwd.position)[dead], np.asarray(x)[dead])
