"""Tests for hnnjax.diagnostics against ArviZ and against a plain-numpy nested R-hat.

Float64 is on for the whole suite (tests/conftest.py); float32 tests build float32 arrays
explicitly and say so.  To keep the file fast, each diagnostic is evaluated through one
jitted function per input shape: all fixed-seed test cases share the shape (4 chains, 200
draws) and are stacked into one (3, 5, 4, 200) batch, which doubles as the batching test.

Tolerances: float64 results must agree with ArviZ to 1e-6 relative (observed: ~1e-15).
Float32 results are compared with ArviZ fed the *same* float32 arrays (ArviZ then works
in float64, except that it folds around the median in float32 as we do) with 2e-5
relative tolerance: float32 FFTs and inverse-normal transforms carry ~1e-6 relative error,
which the ESS ratios amplify by a small factor (observed: <= 2e-6).
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hnnjax import diagnostics as diag

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # ArviZ announces its refactor with a FutureWarning
    import arviz as az

RTOL64 = 1e-6
RTOL32 = 2e-5

N_CHAINS, N_DRAWS = 4, 200


# ---------------------------------------------------------------------------- fixtures


def _ar1(rng, rho, shape):
    eps = rng.normal(size=shape)
    out = np.empty(shape)
    out[..., 0] = eps[..., 0]
    scale = np.sqrt(1.0 - rho**2)
    for t in range(1, shape[-1]):
        out[..., t] = rho * out[..., t - 1] + scale * eps[..., t]
    return out


def _sticky(rng, shape, p_stay):
    """NUTS-like draws: each step repeats the previous value with probability p_stay."""
    fresh = rng.normal(size=shape)
    out = fresh.copy()
    stay = rng.random(size=shape) < p_stay
    for t in range(1, shape[-1]):
        out[..., t] = np.where(stay[..., t], out[..., t - 1], fresh[..., t])
    return out


def _make_cases():
    rng = np.random.default_rng(20240611)
    shape = (N_CHAINS, N_DRAWS)
    with_nan = rng.normal(size=shape)
    with_nan[2, 17] = np.nan
    cases = {
        "iid_normal": rng.normal(size=shape),
        "iid_shifted_scaled": 1e3 + 40.0 * rng.normal(size=shape),
        "ar1_0.5": _ar1(rng, 0.5, shape),
        "ar1_0.9": _ar1(rng, 0.9, shape),
        "ar1_0.99": _ar1(rng, 0.99, shape),
        "ar1_antithetic": _ar1(rng, -0.7, shape),
        "student_t3": rng.standard_t(3, size=shape),
        "ties_rounded": np.round(rng.normal(size=shape), 1),
        "ties_repeated": np.repeat(rng.normal(size=(N_CHAINS, N_DRAWS // 4)), 4, axis=1),
        "ties_sticky": _sticky(rng, shape, 0.6),
        "ties_poisson": rng.poisson(0.3, size=shape).astype(float),
        "bad_means": rng.normal(size=shape) + np.arange(N_CHAINS)[:, None],
        "bad_scales": rng.normal(size=shape) * np.array([1.0, 1.0, 1.0, 6.0])[:, None],
        "constant": np.full(shape, 1.5),
        "with_nan": with_nan,
    }
    return cases


CASES = _make_cases()
CASE_NAMES = list(CASES)
BATCH = np.stack([CASES[k] for k in CASE_NAMES]).reshape(3, 5, N_CHAINS, N_DRAWS)


def _all_diagnostics(x):
    out = dict(diag.summarize(x))
    out["ess_mean"] = diag.ess_mean(x)
    out["mcse_sd"] = diag.mcse_sd(x)
    out["ebfmi"] = diag.ebfmi(x)
    return out


# Jitting here (not in the module) is the project's convention; it also proves that every
# function traces under jit.
_all_jit = jax.jit(_all_diagnostics)

ARVIZ = {
    "r_hat": lambda a: az.rhat(a, method="rank"),
    "ess_bulk": lambda a: az.ess(a, method="bulk"),
    "ess_tail": lambda a: az.ess(a, method="tail"),
    "ess_mean": lambda a: az.ess(a, method="mean"),
    "mcse_mean": lambda a: az.mcse(a, method="mean"),
    "mcse_sd": lambda a: az.mcse(a, method="sd"),
    "ebfmi": az.bfmi,
}
NUMPY = {
    "mean": lambda a: np.mean(a),
    "sd": lambda a: np.std(a, ddof=1),
    "q5": lambda a: np.quantile(a, 0.05),
    "q50": lambda a: np.quantile(a, 0.5),
    "q95": lambda a: np.quantile(a, 0.95),
}


def _reference(name, draws):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        func = ARVIZ.get(name) or NUMPY[name]
        return np.asarray(func(draws), dtype=np.float64)


@pytest.fixture(scope="module")
def batch_result():
    return jax.tree.map(np.asarray, _all_jit(jnp.asarray(BATCH)))


def _assert_close(actual, expected, rtol, label):
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=0, equal_nan=True, err_msg=label)


# ---------------------------------------------------------------------------- vs ArviZ


@pytest.mark.parametrize("name", list(ARVIZ) + list(NUMPY))
def test_batch_matches_reference_per_slice(batch_result, name):
    """(3, 5, 4, 200) batch: each of the 15 slices is one fixed-seed case (i.i.d., AR(1),
    Student-t, several kinds of exact ties, bad mixing, constant, NaN) and must equal the
    ArviZ / numpy value computed on that slice alone."""
    got = batch_result[name]
    expected_tail = (N_CHAINS,) if name == "ebfmi" else ()
    assert got.shape == (3, 5) + expected_tail
    assert got.dtype == np.float64
    for flat_index, case in enumerate(CASE_NAMES):
        i, j = divmod(flat_index, 5)
        expected = _reference(name, BATCH[i, j])
        _assert_close(got[i, j], expected, RTOL64, f"{name} / {case}")


def test_batch_sanity(batch_result):
    """The reference comparison above is only meaningful if the cases behave as intended."""
    r_hat = dict(zip(CASE_NAMES, batch_result["r_hat"].ravel()))
    ess_b = dict(zip(CASE_NAMES, batch_result["ess_bulk"].ravel()))
    assert r_hat["iid_normal"] < 1.01
    assert r_hat["bad_means"] > 1.5
    assert r_hat["bad_scales"] > 1.05  # caught by the folded (tail) R-hat
    assert np.isnan(r_hat["with_nan"]) and np.isnan(r_hat["constant"])
    assert ess_b["ar1_0.9"] < 0.2 * ess_b["iid_normal"]
    assert ess_b["ar1_antithetic"] > N_CHAINS * N_DRAWS  # anti-correlated: super-efficient
    assert ess_b["constant"] == N_CHAINS * N_DRAWS


def _single_shape_check(draws, rtol, dtype):
    got = jax.tree.map(np.asarray, _all_jit(jnp.asarray(draws, dtype=dtype)))
    for name in list(ARVIZ) + list(NUMPY):
        assert got[name].dtype == dtype, name
        _assert_close(got[name], _reference(name, draws), rtol, name)
    return got


def test_odd_number_of_draws():
    """Odd draw count: split chains drop the middle draw, as ArviZ does."""
    draws = _ar1(np.random.default_rng(7), 0.6, (4, 201))
    _single_shape_check(draws, RTOL64, np.float64)


def test_one_chain():
    """One chain: ESS and MCSE are defined (two split halves); R-hat is NaN as in ArviZ."""
    draws = _ar1(np.random.default_rng(8), 0.8, (1, 200))
    got = _single_shape_check(draws, RTOL64, np.float64)
    assert np.isnan(got["r_hat"])


def test_too_few_draws_gives_nan():
    draws = np.random.default_rng(9).normal(size=(2, 3))
    got = jax.tree.map(np.asarray, _all_jit(jnp.asarray(draws)))
    for name in ("r_hat", "ess_bulk", "ess_tail", "ess_mean", "mcse_mean", "mcse_sd"):
        assert np.isnan(got[name]), name
        assert np.isnan(_reference(name, draws)), name


def test_float32_batch_matches_arviz():
    """float32 input (passed explicitly) stays float32 and matches ArviZ run on the same
    float32 draws to RTOL32 (see module docstring)."""
    draws32 = BATCH.astype(np.float32)
    got = jax.tree.map(np.asarray, _all_jit(jnp.asarray(draws32)))
    for name in list(ARVIZ) + list(NUMPY):
        assert got[name].dtype == np.float32, name
        for flat_index, case in enumerate(CASE_NAMES):
            i, j = divmod(flat_index, 5)
            expected = _reference(name, draws32[i, j])
            _assert_close(got[name][i, j], expected, RTOL32, f"float32 {name} / {case}")


def test_summary_matches_arviz_summary(batch_result):
    """End-to-end check against az.summary on a multi-dimensional variable (even draws,
    where az.summary's R-hat coincides with az.rhat)."""
    keep = [0, 3, 7, 10]  # iid, AR(0.9), rounded ties, bad means
    draws = BATCH.reshape(15, N_CHAINS, N_DRAWS)[keep]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = az.summary(
            {"v": np.moveaxis(draws, 0, -1)}, round_to="none", kind="all", stat_focus="mean"
        )
    ours = {k: v.reshape(15)[keep] for k, v in batch_result.items() if v.ndim == 2}
    for key in ("mean", "sd", "mcse_mean", "ess_bulk", "ess_tail", "r_hat"):
        _assert_close(ours[key], table[key].to_numpy(), RTOL64, key)


# ---------------------------------------------------------------------------- jit / eager


def test_eager_nested_rhat_equals_jit():
    draws = jnp.asarray(_ar1(np.random.default_rng(10), 0.7, (2, 6, 24)))
    np.testing.assert_allclose(diag.nested_rhat(draws, 3), _nested_jit(draws, 3), rtol=1e-12)


@pytest.mark.slow
def test_eager_equals_jit():
    """Without jit (op by op) the diagnostics give the same numbers.  Marked slow: eager
    dispatch compiles every primitive separately, several CPU-seconds for the lot."""
    draws = jnp.asarray(_ar1(np.random.default_rng(10), 0.7, (2, 6, 24)))
    eager = _all_diagnostics(draws)
    jitted = _all_jit(draws)
    for key in eager:
        np.testing.assert_allclose(eager[key], jitted[key], rtol=1e-12, err_msg=key)


def test_next_regular_matches_scipy():
    from scipy.fftpack import next_fast_len

    for n in [1, 2, 5, 7, 11, 97, 199, 400, 401, 1001, 4097]:
        assert diag._next_regular(n) == next_fast_len(n)


# ---------------------------------------------------------------------------- properties


def _variants(x, log2_scale, shift, perm):
    """15 transformed copies of x, shaped like BATCH so the already-compiled batch
    function evaluates them all in one call."""
    scaled = (2.0**log2_scale) * x
    out = [
        x,
        np.exp(x),  # strictly increasing transforms ...
        x**3 + x,
        np.sinh(x),
        1.0 / (1.0 + np.exp(-x)),
        np.arctan(x),
        scaled,  # ... exact positive rescaling ...
        x[perm],  # ... relabelled chains ...
        scaled[perm],
        x + shift,  # ... and a shift (not exact in floating point)
    ]
    out += [x] * (15 - len(out))
    return np.stack(out).reshape(BATCH.shape)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    rho=st.floats(-0.5, 0.95),
    log2_scale=st.integers(-6, 6),
    shift=st.floats(-8.0, 8.0),
    perm_seed=st.integers(0, 1000),
)
def test_invariances(seed, rho, log2_scale, shift, perm_seed):
    """Properties of the rank-based diagnostics (Vehtari et al. 2021):

    * bulk and tail ESS depend on the draws only through their ranks and through which
      draws fall at or below the 5%/95% quantiles, so strictly increasing transforms leave
      them unchanged exactly;
    * R-hat is not invariant to nonlinear transforms (its folded part measures distances
      from the median) but is to relabelling chains and to x -> 2^k x (exact arithmetic);
    * a shift x -> x + b moves R-hat slightly (observed ~1e-5; tested to 1e-3): the two
      central split draws fold to exactly equal distances from their midpoint (a tied pair
      of ranks) only while the arithmetic is exact, and rounding after a shift can break
      that tie (ArviZ behaves the same way).
    """
    x = _ar1(np.random.default_rng(seed), rho, (N_CHAINS, N_DRAWS))
    perm = np.random.default_rng(perm_seed).permutation(N_CHAINS)
    res = _all_jit(jnp.asarray(_variants(x, log2_scale, shift, perm)))
    res = {k: np.asarray(v).reshape(15, *v.shape[2:]) for k, v in res.items()}
    for key in ("ess_bulk", "ess_tail"):
        np.testing.assert_allclose(res[key][:9], res[key][0], rtol=1e-12, err_msg=key)
        np.testing.assert_allclose(res[key][9], res[key][0], rtol=1e-12, err_msg=key)
    np.testing.assert_allclose(res["r_hat"][6:9], res["r_hat"][0], rtol=1e-12)
    np.testing.assert_allclose(res["r_hat"][9], res["r_hat"][0], rtol=1e-3)
    # relabelled chains: every diagnostic except the per-chain E-BFMI order is unchanged
    for key in ("ess_mean", "mcse_mean", "mcse_sd", "mean", "sd", "q5", "q50", "q95"):
        np.testing.assert_allclose(res[key][7], res[key][0], rtol=1e-12, err_msg=key)
    np.testing.assert_allclose(res["ebfmi"][7], res["ebfmi"][0][perm], rtol=1e-12)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), scale=st.floats(0.01, 100.0), shift=st.floats(-1e3, 1e3))
def test_ebfmi_invariant_to_affine_maps(seed, scale, shift):
    energy = _ar1(np.random.default_rng(seed), 0.3, (3, 50))
    before = np.asarray(diag.ebfmi(energy))
    after = np.asarray(diag.ebfmi(scale * energy + shift))
    np.testing.assert_allclose(after, before, rtol=1e-7)


# ---------------------------------------------------------------------------- nested R-hat


# jitted per shape: cheaper than eager dispatch, which compiles every primitive separately
_nested_jit = jax.jit(diag.nested_rhat, static_argnums=1)


def _nested_rhat_reference(draws, n_superchains):
    """Loop-by-loop transcription of Margossian et al. (2024), eqs. 6-8, for one
    parameter: draws[chain, draw], chains grouped consecutively into superchains."""
    n_chain, n_draw = draws.shape
    k_count = n_superchains
    m_count = n_chain // k_count
    chain_means = np.zeros((k_count, m_count))
    chain_vars = np.zeros((k_count, m_count))
    for k in range(k_count):
        for m in range(m_count):
            chain = draws[k * m_count + m]
            chain_means[k, m] = sum(chain) / n_draw
            if n_draw > 1:
                chain_vars[k, m] = sum((v - chain_means[k, m]) ** 2 for v in chain) / (n_draw - 1)
    super_means = [sum(chain_means[k]) / m_count for k in range(k_count)]
    grand_mean = sum(super_means) / k_count
    b_nu = sum((s - grand_mean) ** 2 for s in super_means) / (k_count - 1)
    w_nu = 0.0
    for k in range(k_count):
        b_k = 0.0
        if m_count > 1:
            b_k = sum((c - super_means[k]) ** 2 for c in chain_means[k]) / (m_count - 1)
        w_k = sum(chain_vars[k]) / m_count  # zero when n_draw == 1
        w_nu += (b_k + w_k) / k_count
    return np.sqrt(1.0 + b_nu / w_nu)


@pytest.mark.parametrize(
    "n_super, per_super, n_draw",
    [(4, 8, 10), (2, 3, 7), (5, 4, 1), (3, 1, 12), (8, 16, 2)],
)
def test_nested_rhat_matches_numpy_transcription(n_super, per_super, n_draw):
    rng = np.random.default_rng(n_super * 100 + per_super * 10 + n_draw)
    # superchain offsets of varying size so the values are not all ~1
    offsets = rng.normal(scale=0.5, size=(3, n_super, 1, 1))
    draws = rng.normal(size=(3, n_super, per_super, n_draw)) + offsets
    draws = draws.reshape(3, n_super * per_super, n_draw)
    got = np.asarray(_nested_jit(draws, n_super))
    assert got.shape == (3,)
    expected = [_nested_rhat_reference(d, n_super) for d in draws]
    np.testing.assert_allclose(got, expected, rtol=1e-10)


def test_nested_rhat_properties():
    rng = np.random.default_rng(11)
    # i.i.d. draws from the target: nested R-hat ~ 1 (one draw per chain included)
    iid = rng.normal(size=(16 * 32, 10))
    assert 1.0 <= float(_nested_jit(iid, 16)) < 1.02
    iid_one_draw = rng.normal(size=(16 * 64, 1))
    assert 1.0 <= float(_nested_jit(iid_one_draw, 16)) < 1.05
    # superchains still stuck near different initial points: clearly > 1
    starts = rng.normal(scale=3.0, size=(16, 1, 1))
    stuck = (starts + 0.5 * rng.normal(size=(16, 32, 10))).reshape(16 * 32, 10)
    assert float(_nested_jit(stuck, 16)) > 2.0
    # one chain per superchain: nR^2 = R^2 + 1/N with R the classic (non-split) R-hat,
    # the "lower bounded by 1" difference noted by Margossian et al.
    draws = _ar1(rng, 0.5, (6, 40))
    n = draws.shape[1]
    within = draws.var(axis=1, ddof=1).mean()
    classic = np.sqrt(((n - 1) / n * within + draws.mean(axis=1).var(ddof=1)) / within)
    nested = float(_nested_jit(draws, 6))
    np.testing.assert_allclose(nested**2, classic**2 + 1 / 40, rtol=1e-12)
    # never below one; invariant to reordering chains inside a superchain
    assert nested >= 1.0
    grouped = draws.reshape(3, 2, 40)
    swapped = grouped[:, ::-1].reshape(6, 40)
    np.testing.assert_allclose(_nested_jit(swapped, 3), _nested_jit(draws, 3))


def test_nested_rhat_float32_and_errors():
    draws32 = np.random.default_rng(12).normal(size=(2, 12, 5)).astype(np.float32)
    got = _nested_jit(draws32, 4)  # float32 passed explicitly
    assert got.dtype == jnp.float32 and got.shape == (2,)
    expected = [_nested_rhat_reference(d.astype(np.float64), 4) for d in draws32]
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    with pytest.raises(ValueError):
        _nested_jit(draws32, 5)  # 12 chains are not 5 equal superchains
    with pytest.raises(ValueError):
        _nested_jit(draws32, 1)
    with pytest.raises(ValueError):
        _nested_jit(draws32[..., :1], 12)  # one chain of one draw per superchain


def test_input_validation():
    with pytest.raises(ValueError):
        diag.rhat(np.zeros(10))
    # integer input is promoted to a float type
    ints = np.random.default_rng(13).integers(0, 5, size=(2, 20))
    assert jnp.issubdtype(jax.jit(diag.ess_mean)(ints).dtype, jnp.floating)

