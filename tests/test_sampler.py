"""hnnjax.sample against the exact posterior, divergences, drivers, compilation.

Correctness is measured with z-scores: (sampled mean - exact mean) / MCSE, where the MCSE
comes from the bulk-ESS estimate of the same draws. With ~10 parameters per fit and a few
fits, |z| < 4 fails by chance with probability ~1e-3. `test_z_test_has_power` shows the
same check rejecting a wrong posterior (another prior on tau, 0.87 posterior sd away in
E[tau]); a bias of a few MCSE would pass a single fit.
"""

import gc
import hashlib
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hnnjax
from hnnjax import counter_rng, diagnostics, nuts, sampler
from hnnjax.integrators import momentum_normals

SCHOOLS = hnnjax.datasets.eight_schools()
EXACT = hnnjax.exact(SCHOOLS)


def _z_scores(fit, exact):
    """z of each scalar's posterior mean (mu, tau, theta_j) against the exact value."""
    x = np.concatenate([fit.draws["mu"][None], fit.draws["tau"][None], np.moveaxis(fit.draws["theta"], -1, 0)])
    truth = np.r_[exact.mean["mu"], exact.mean["tau"], exact.mean["theta"]]
    mcse = np.asarray(diagnostics.mcse_mean(jnp.asarray(x)))
    return (x.mean(axis=(1, 2)) - truth) / mcse


def _z_scores_sd(fit, exact):
    x = np.concatenate([fit.draws["mu"][None], fit.draws["tau"][None], np.moveaxis(fit.draws["theta"], -1, 0)])
    truth = np.r_[exact.sd["mu"], exact.sd["tau"], exact.sd["theta"]]
    mcse = np.asarray(diagnostics.mcse_sd(jnp.asarray(x)))
    return (x.reshape(x.shape[0], -1).std(axis=1, ddof=1) - truth) / mcse


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_noncentered_nuts_matches_exact(seed, dtype):
    fit = hnnjax.sample(SCHOOLS, chains=4, warmup=1000, draws=1000, target_accept=0.9, seed=seed, dtype=dtype)
    assert fit.draws["mu"].dtype == np.dtype(dtype)
    z = _z_scores(fit, EXACT)
    assert np.all(np.abs(z) < 4), z
    # sds too (tau's sd is driven by its heavy right tail, so its MCSE is wide but honest)
    zs = _z_scores_sd(fit, EXACT)
    assert np.all(np.abs(zs) < 4), zs
    assert fit.stats["diverging"].mean() <= 0.01
    assert fit.summary()["r_hat"].max() < 1.01


def test_z_test_has_power():
    """The same check rejects the exact posterior of a different prior (HalfNormal(1) on tau)."""
    fit = hnnjax.sample(SCHOOLS, target_accept=0.9, seed=0)
    wrong = hnnjax.exact(SCHOOLS, hnnjax.Prior.make(tau=hnnjax.HalfNormal(1.0)))
    assert np.max(np.abs(_z_scores(fit, wrong))) > 4


def test_hmc_matches_exact():
    # Fixed-length HMC mixes tau more slowly than NUTS (bulk ESS of tau ~ 300 per 1000
    # draws): four times the draws for the same R-hat bar.
    fit = hnnjax.sample(SCHOOLS, kernel=hnnjax.HMC(num_steps=12), target_accept=0.9, seed=3, draws=4000)
    z = _z_scores(fit, EXACT)
    assert np.all(np.abs(z) < 4), z
    assert fit.summary()["r_hat"].max() < 1.01
    assert np.all(fit.stats["tree_depth"] == 0) and np.all(fit.stats["n_steps"] <= 12)


def test_flat_prior_bda3_fit():
    """BDA3's flat prior: the sampler reproduces the exact posterior (theta_A about 11.4)."""
    flat = hnnjax.Prior.flat()
    fit = hnnjax.sample(SCHOOLS, prior=flat, target_accept=0.95, seed=4)
    ex = hnnjax.exact(SCHOOLS, flat)
    z = _z_scores(fit, ex)
    assert np.all(np.abs(z) < 4), z


def test_centered_diverges_in_the_neck():
    fit = hnnjax.sample(SCHOOLS, parametrization="centered", target_accept=0.8, seed=0)
    div = fit.stats["diverging"].astype(bool)
    assert fit.divergences > 0 and fit.divergences == div.sum()
    log_tau = np.log(fit.draws["tau"])
    assert np.median(log_tau[div]) < np.median(log_tau[~div])
    # Where the trajectories diverged is reported too. The energy error often passes the
    # threshold only after the trajectory has left the neck, far past every draw (27-49%
    # of the points, seeds 0-3, float64); the points at or below the largest
    # non-divergent log tau sit in the neck (their median log tau -0.45 to -0.09 against
    # the other draws' 1.02 to 1.21).
    where = fit.divergent_points()
    assert where["log_tau"].shape == (fit.divergences,)
    assert np.all(np.isfinite(where["log_tau"]))
    # The 0.5 margin is half the smallest gap measured (1.1); a location check, not a moment.
    inside = where["log_tau"] <= log_tau[~div].max()
    assert inside.sum() >= 10
    assert np.median(where["log_tau"][inside]) < np.median(log_tau[~div]) - 0.5


SMALL = dict(chains=4, warmup=100, draws=50)  # one compiled program for the quick tests


def test_drivers_take_identical_paths():
    """Lane-independent and synchronized drivers use the same keys and arithmetic: their
    trajectories agree until rounding differences between the two programs (different
    XLA fusions) grow chaotically, which takes a few dozen transitions."""
    a = hnnjax.sample(SCHOOLS, driver="independent", seed=5, **SMALL)
    b = hnnjax.sample(SCHOOLS, driver="synchronized", seed=5, **SMALL)
    np.testing.assert_array_equal(a.warmup_stats["n_steps"][:, :20], b.warmup_stats["n_steps"][:, :20])
    np.testing.assert_allclose(a.warmup_stats["accept_stat"][:, :20], b.warmup_stats["accept_stat"][:, :20], rtol=1e-6)


def test_vmap_over_chains_equals_loop_over_chains():
    """Each lane of the vmapped program equals the same lane run alone (same key), bit for bit."""
    config = sampler.RunConfig(chains=1, warmup=100, draws=50)
    prior = jax.tree.map(lambda a: np.asarray(a)[None], hnnjax.Prior.default())
    keys = sampler.model_keys(11, [0, 1, 2])
    batched, _ = sampler.run(keys, hnnjax.data.stack([SCHOOLS] * 3, 8),
                             jax.tree.map(lambda a: np.repeat(a, 3, 0), prior), config)
    for i in range(3):
        alone, _ = sampler.run(keys[i:i + 1], hnnjax.data.stack([SCHOOLS], 8), prior, config)
        for name in ("n_steps", "position", "accept_stat", "inverse_mass"):
            np.testing.assert_array_equal(alone[name][0], batched[name][i])


def test_same_seed_same_draws_and_seeds_differ():
    a = hnnjax.sample(SCHOOLS, seed=7, **SMALL)
    b = hnnjax.sample(SCHOOLS, seed=7, **SMALL)
    c = hnnjax.sample(SCHOOLS, seed=8, **SMALL)
    np.testing.assert_array_equal(a.draws["theta"], b.draws["theta"])
    assert not np.allclose(a.draws["mu"], c.draws["mu"])


def test_second_call_does_not_recompile():
    kw = SMALL
    hnnjax.sample(SCHOOLS, **kw)
    before = sampler.TRACE_COUNT["program"]
    fit = hnnjax.sample(SCHOOLS, seed=3, **kw)
    # other data of the same padded shape and another prior reuse the compiled program
    other = hnnjax.GroupData([1.0, 2.0, 3.0], [1.0, 1.0, 2.0])
    hnnjax.sample(other, prior=hnnjax.Prior.make(tau=hnnjax.HalfNormal(2.0)), **kw)
    assert sampler.TRACE_COUNT["program"] == before
    assert fit.timing["compile_s"] == 0.0
    hnnjax.sample(SCHOOLS, **{**kw, "draws": 11})  # a static setting changed: compiles
    assert sampler.TRACE_COUNT["program"] == before + 1


def test_collector_paused_while_compiling_and_restored(monkeypatch):
    """The garbage collector is off while the program is traced, lowered and compiled, and
    afterwards as it was before: on, or off if the caller had turned it off."""
    seen = []
    compile_, trace = sampler._compile, sampler._traced_program
    monkeypatch.setattr(sampler, "_compile", lambda *a: (seen.append(gc.isenabled()), compile_(*a))[1])
    monkeypatch.setattr(sampler, "_traced_program", lambda *a, **k: (seen.append(gc.isenabled()), trace(*a, **k))[1])
    monkeypatch.setenv("HNNJAX_NO_PERSISTENT_CACHE", "1")
    assert gc.isenabled()
    hnnjax.sample(SCHOOLS, **{**SMALL, "draws": 13})
    assert seen == [False, False] and gc.isenabled()
    gc.disable()
    try:
        hnnjax.sample(SCHOOLS, **{**SMALL, "draws": 14})
        assert seen == [False] * 4 and not gc.isenabled()
    finally:
        gc.enable()


def test_ragged_small_model_and_stats_shapes():
    gd = hnnjax.GroupData([3.0, -1.0, 8.0], [4.0, 5.0, 6.0], names=["x", "y", "z"])
    fit = hnnjax.sample(gd, seed=1, **SMALL)
    assert fit.draws["theta"].shape == (4, 50, 3) and fit.draws["eta"].shape == (4, 50, 3)
    for k in ("diverging", "tree_depth", "n_steps", "accept_stat", "energy", "step_size"):
        assert fit.stats[k].shape == (4, 50)
        assert fit.warmup_stats[k].shape == (4, 100)
    assert fit.inverse_mass_matrix.shape == (4, 5)
    table = fit.summary()
    assert table.index == ["mu", "tau", "theta[x]", "theta[y]", "theta[z]"]
    assert fit.n_grad_evals == fit.stats["n_steps"].sum() + fit.warmup_stats["n_steps"].sum()


def test_bad_arguments():
    with pytest.raises(ValueError, match="parametrization"):
        hnnjax.sample(SCHOOLS, parametrization="funnel")
    with pytest.raises(ValueError, match="kernel"):
        hnnjax.sample(SCHOOLS, kernel="mala")
    with pytest.raises(ValueError, match="target_accept"):
        hnnjax.sample(SCHOOLS, target_accept=1.5)
    with pytest.raises(ValueError, match="chains"):
        hnnjax.sample(SCHOOLS, chains=0)
    with pytest.raises(ValueError, match=r"sigma\[0\]"):
        hnnjax.sample(([1.0], [0.0]))


def test_task_queue_pool_changes_nothing_but_waste():
    """A pool of fewer lanes than tasks gives bit-identical draws, and wastes fewer steps."""
    other = hnnjax.GroupData([1.0, 50.0, -20.0], [3.0, 2.0, 8.0])
    data = hnnjax.data.stack([other, SCHOOLS, other, SCHOOLS, other, SCHOOLS], 8)
    prior = jax.tree.map(lambda a: np.repeat(np.asarray(a)[None], 6, 0), hnnjax.Prior.default())
    keys = sampler.model_keys(0, range(6))
    runs = {}
    for pool in (None, 3, 7):
        config = sampler.RunConfig(chains=4, warmup=100, draws=50, max_lanes=pool)
        runs[pool] = sampler.run(keys, data, prior, config)
    for pool in (3, 7):
        assert runs[pool][1]["lanes"] == pool
        for name in runs[None][0]:
            np.testing.assert_array_equal(runs[pool][0][name], runs[None][0][name])
    share = {p: runs[p][0]["n_steps"].sum() / (runs[p][1]["loop_iterations"] * runs[p][1]["lanes"]) for p in runs}
    assert share[3] > share[None]
    # and model 3 of the batch is what sample(model_id=3) draws
    fit = hnnjax.sample(SCHOOLS, model_id=3, seed=0, chains=4, warmup=100, draws=50)
    np.testing.assert_array_equal(fit.stats["n_steps"], runs[3][0]["n_steps"][3][:, 100:])


def test_restart_slots_change_no_draw(monkeypatch):
    """A wide pool restarts at most R finished lanes per loop trip (`_restart_slots`); lanes
    finished beyond those wait a trip. Same draws as a narrow pool that restarts every lane,
    with the real R (32 of 48 lanes) and with R = 3, so that lanes wait (checked below)."""
    other = hnnjax.GroupData([1.0, 50.0, -20.0], [3.0, 2.0, 8.0])
    n = 12
    data = hnnjax.data.stack([other, SCHOOLS] * (n // 2), 8)
    prior = jax.tree.map(lambda a: np.repeat(np.asarray(a)[None], n, 0), hnnjax.Prior.default())
    keys = sampler.model_keys(5, range(n))
    config = lambda pool: sampler.RunConfig(chains=4, warmup=60, draws=30, max_lanes=pool)  # noqa: E731
    assert sampler._restart_slots(48) == 32 and sampler._restart_slots(5) == 5
    narrow = sampler.run(keys, data, prior, config(5))
    wide = sampler.run(keys, data, prior, config(None))
    # R is not in the programs' cache keys (it is a function of the shape): compile afresh
    monkeypatch.setattr(sampler, "_COMPILED", {})
    monkeypatch.setenv("HNNJAX_NO_PERSISTENT_CACHE", "1")
    monkeypatch.setattr(sampler, "_restart_slots", lambda lanes: lanes if lanes <= 5 else 3)
    waiting = sampler.run(keys, data, prior, config(None))
    for run in (wide, waiting):
        assert run[1]["lanes"] == 48
        for name in narrow[0]:
            np.testing.assert_array_equal(run[0][name], narrow[0][name])
    # every lane whose first transition is one leapfrog step finishes at the first step:
    # more of them than R = 3 slots, so some wait
    assert (narrow[0]["n_steps"][..., 0] == 1).sum() > 3
    # waiting costs loop trips that advance no lane, so no counted leapfrog iteration
    assert waiting[1]["loop_iterations"] == wide[1]["loop_iterations"]


def test_chees_matches_exact_and_wastes_no_step():
    """ChEES-HMC: all chains of a model share eps and the jittered length, so the lanes of a
    model never wait for each other (useful-step share 1 for one model)."""
    fit = hnnjax.sample(SCHOOLS, kernel="chees", chains=16, warmup=500, draws=500, seed=2)
    z = _z_scores(fit, EXACT)
    assert np.all(np.abs(z) < 4), z
    assert fit.summary()["r_hat"].max() < 1.01
    # the loop's trips equal each chain's steps, and no lane runs a padding copy
    assert fit.timing["lanes"] == fit.chains
    assert fit.n_grad_evals / fit.timing["lane_iterations"] > 0.999
    assert np.all(fit.stats["n_steps"] == fit.stats["n_steps"][:1])  # lock step within the model
    assert np.unique(fit.step_size).size == 1


def test_chees_batch_models_adapt_their_own_length():
    other = hnnjax.GroupData([30.0, -25.0, 10.0, 45.0], [2.0, 3.0, 2.5, 4.0])  # large tau
    # three models: an odd batch width, which once changed the rounding of a model's update
    data = hnnjax.data.stack([SCHOOLS, other, other], 8)
    prior = jax.tree.map(lambda a: np.repeat(np.asarray(a)[None], 3, 0), hnnjax.Prior.default())
    config = sampler.RunConfig(kernel=hnnjax.ChEES(), chains=16, warmup=500, draws=500)
    out, timing = sampler.run(sampler.model_keys(0, [0, 1, 2]), data, prior, config)
    # each model adapts its own step size and length: model 0 draws exactly what it draws
    # alone (its batch-mates change nothing), and the models' settings differ
    assert not np.array_equal(out["step_size"][0, 0], out["step_size"][1, 0])
    alone = hnnjax.sample(SCHOOLS, kernel=hnnjax.ChEES(), chains=16, warmup=500, draws=500, seed=0)
    np.testing.assert_array_equal(alone.stats["n_steps"], out["n_steps"][0][:, 500:])
    mu, tau, theta = (np.asarray(a) for a in hnnjax.model.constrain(out["position"][0][..., :10], "noncentered"))
    np.testing.assert_array_equal(alone.draws["mu"], mu)
    np.testing.assert_array_equal(alone.draws["theta"], theta)
    # the models ran in a pool, each at its own pace: the loop's trips are the longest
    # model's steps, not the sum over iterations of the longest trajectory
    longest_chain = out["n_steps"].max(axis=1)  # (models, iterations): a divergence ends a chain early
    assert timing["loop_iterations"] == longest_chain.sum(axis=-1).max() < longest_chain.max(axis=0).sum()
    pos = out["position"][0][..., :10]
    mu, tau, theta = (np.asarray(a) for a in hnnjax.model.constrain(pos, "noncentered"))
    x = np.concatenate([mu[None], tau[None], np.moveaxis(theta, -1, 0)])
    truth = np.r_[EXACT.mean["mu"], EXACT.mean["tau"], EXACT.mean["theta"]]
    z = (x.mean(axis=(1, 2)) - truth) / np.asarray(diagnostics.mcse_mean(jnp.asarray(x)))
    assert np.all(np.abs(z) < 4), z


def test_to_arviz_round_trip():
    az = pytest.importorskip("arviz")
    fit = hnnjax.sample(SCHOOLS, seed=9, **SMALL)
    idata = fit.to_arviz()
    assert isinstance(idata, az.InferenceData)
    np.testing.assert_array_equal(idata.posterior["theta"].values, fit.draws["theta"])
    assert list(idata.posterior["theta"].coords["school"].values) == list("ABCDEFGH")
    assert int(idata.sample_stats["diverging"].values.sum()) == fit.divergences
    # ArviZ's own diagnostics on our draws agree with ours
    np.testing.assert_allclose(az.rhat(idata, var_names=["mu"])["mu"].values,
                               fit.summary().row("mu")["r_hat"], rtol=1e-6)


def test_a_new_process_reuses_the_saved_program(tmp_path):
    """The second process loads the saved program: it traces nothing, draws the same."""
    script = textwrap.dedent("""
        import numpy as np
        import hnnjax
        from hnnjax import sampler
        fit = hnnjax.sample(hnnjax.datasets.eight_schools(), chains=2, warmup=60, draws=40, seed=4)
        np.save(sys.argv[1], fit.draws["theta"])
        print("traces", sampler.TRACE_COUNT["program"])
    """)
    env = {**os.environ, "HNNJAX_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.pop("HNNJAX_NO_PERSISTENT_CACHE", None)
    traces = []
    for run in (1, 2):
        proc = subprocess.run([sys.executable, "-c", "import sys\n" + script, str(tmp_path / f"{run}.npy")],
                              capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        traces.append(int(proc.stdout.split("traces")[1]))
    assert traces == [1, 0]
    assert len(sampler._saved_programs(str(tmp_path / "cache"))) == 1
    np.testing.assert_array_equal(np.load(tmp_path / "1.npy"), np.load(tmp_path / "2.npy"))


def test_chees_pool_queue_and_lock_step_agree(monkeypatch):
    """The ChEES model pool with fewer slots than models (a queue), the pool with every
    model in a slot and the lock-step driver draw the same, bit for bit: a model's
    model-level work runs in blocks of a fixed width in all three (`_blockwise`). 40 models
    of 2 chains: with 40 and 34 slots a loop trip adapts and restarts at most R = 32
    finished models (`_restart_slots`), gathered, and the others wait; with R = 3
    (patched in) many wait."""
    other = hnnjax.GroupData([1.0, 50.0, -20.0], [3.0, 2.0, 8.0])
    n = 40
    data = hnnjax.data.stack([other, SCHOOLS] * (n // 2), 8)
    prior = jax.tree.map(lambda a: np.repeat(np.asarray(a)[None], n, 0), hnnjax.Prior.default())
    keys = sampler.model_keys(3, range(n))
    config = lambda **kw: sampler.RunConfig(kernel=hnnjax.ChEES(), chains=2, warmup=60, draws=30,  # noqa: E731
                                            **{"driver": "independent", **kw})
    pool, t_pool = sampler.run(keys, data, prior, config())
    queue, t_queue = sampler.run(keys, data, prior, config(max_lanes=68))
    lock, t_lock = sampler.run(keys, data, prior, config(driver="synchronized"))
    monkeypatch.setattr(sampler, "_COMPILED", {})
    monkeypatch.setenv("HNNJAX_NO_PERSISTENT_CACHE", "1")
    monkeypatch.setattr(sampler, "_restart_slots", lambda slots: slots if slots <= 5 else 3)
    waiting, _ = sampler.run(keys, data, prior, config(max_lanes=68))
    assert t_queue["lanes"] == 68 and t_pool["lanes"] == t_lock["lanes"] == 80
    for name in pool:
        for other_run in (queue, lock, waiting):
            np.testing.assert_array_equal(other_run[name], pool[name])
    # lock step pays the longest model's trajectory at every iteration, the pool does not
    assert t_pool["loop_iterations"] < t_lock["loop_iterations"]


@pytest.mark.parametrize("n, width", [(1, 1), (1, 4), (5, 2), (8, 8), (9, 4)])
def test_blockwise_equals_vmap(n, width):
    x = jnp.arange(n * 3, dtype=jnp.float32).reshape(n, 3)
    fn = lambda a, b: (jnp.sum(jnp.exp(-a)), a * b)  # noqa: E731
    got = sampler._blockwise(fn, width, x, 2 * x)
    want = jax.vmap(fn)(x, 2 * x)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-6)
    # a row's result does not depend on how many rows share the call
    alone = sampler._blockwise(fn, width, x[:1], 2 * x[:1])
    for g, a in zip(got, alone):
        np.testing.assert_array_equal(g[:1], a)


def test_unknown_compiler_options_are_dropped(monkeypatch):
    """A jaxlib that does not know one of `_compiler_options` (XLA renames them) still
    compiles, without it."""
    known = sampler._compiler_options("cpu", sampler.RunConfig())
    assert known["xla_cpu_use_fusion_emitters"] is False
    assert "xla_cpu_use_fusion_emitters" not in sampler._compiler_options("cpu", sampler.RunConfig(kernel=hnnjax.HMC()))
    monkeypatch.setattr(sampler, "_compiler_options",
                        lambda platform, config=None: {**known, "xla_no_such_option_hnnjax": True})
    lowered = jax.jit(lambda x: 2.0 * x).lower(jnp.ones(3))
    np.testing.assert_array_equal(sampler._compile(lowered, "cpu")(jnp.ones(3)), 2.0 * np.ones(3))


def test_saved_programs_are_keyed_by_signature_and_machine(tmp_path, monkeypatch):
    monkeypatch.setenv("HNNJAX_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("HNNJAX_NO_PERSISTENT_CACHE", raising=False)
    device = jax.devices()[0]
    a, b = sampler._executable_path("a", device), sampler._executable_path("b", device)
    assert a != b and a == sampler._executable_path("a", device) and a.startswith(str(tmp_path))
    monkeypatch.setattr(sampler, "_machine_fingerprint", lambda device: "another machine")
    assert sampler._executable_path("a", device) != a
    monkeypatch.setenv("HNNJAX_NO_PERSISTENT_CACHE", "1")
    assert sampler._executable_path("a", device) is None


def test_unusable_saved_program_is_replaced(tmp_path, monkeypatch):
    """A saved program whose checksum holds but which cannot be loaded here (another
    jaxlib's, say) is compiled afresh and written over; the draws are those of a normal
    run. (A torn file, whose checksum fails: `test_torn_saved_program_is_compiled_again`.)"""
    monkeypatch.setenv("HNNJAX_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("HNNJAX_NO_PERSISTENT_CACHE", raising=False)
    monkeypatch.setattr(sampler, "_COMPILED", {})
    ref = hnnjax.sample(SCHOOLS, seed=5, **SMALL)
    (saved,) = map(Path, sampler._saved_programs(str(tmp_path)))
    body = pickle.dumps((b"not an executable", None, None))
    saved.write_bytes(hashlib.sha256(body).digest() + body)
    assert sampler._load_executable(str(saved), jax.devices()[:1]) is None and saved.exists()
    monkeypatch.setattr(sampler, "_COMPILED", {})
    traces = sampler.TRACE_COUNT["program"]
    fit = hnnjax.sample(SCHOOLS, seed=5, **SMALL)
    assert sampler.TRACE_COUNT["program"] == traces + 1
    np.testing.assert_array_equal(fit.draws["theta"], ref.draws["theta"])
    # written again: the next compilation reads it and traces nothing
    monkeypatch.setattr(sampler, "_COMPILED", {})
    again = hnnjax.sample(SCHOOLS, seed=5, **SMALL)
    assert sampler.TRACE_COUNT["program"] == traces + 1
    np.testing.assert_array_equal(again.draws["theta"], ref.draws["theta"])


def test_for_platform_fills_only_what_is_open():
    chees_cfg = sampler.RunConfig(kernel=hnnjax.ChEES())
    nuts_cfg = sampler.RunConfig()
    assert (chees_cfg.for_platform("cpu").driver, chees_cfg.for_platform("cpu").block_lanes) == ("independent", 32)
    assert (chees_cfg.for_platform("gpu").driver, chees_cfg.for_platform("gpu").block_lanes) == ("synchronized", 4096)
    assert nuts_cfg.for_platform("gpu").driver == "independent"
    explicit = sampler.RunConfig(kernel=hnnjax.ChEES(), driver="independent", block_lanes=8)
    assert explicit.for_platform("gpu") == explicit
    with pytest.raises(ValueError, match="driver"):
        sampler.RunConfig(driver="lockstep")
    with pytest.raises(ValueError, match="block_lanes"):
        sampler.RunConfig(block_lanes=0)
    with pytest.raises(ValueError, match="chains: ChEES"):
        sampler.RunConfig(kernel=hnnjax.ChEES(), chains=1)


@pytest.mark.parametrize("kernel", [hnnjax.NUTS(), hnnjax.HMC()])
def test_idle_transition_proposes_its_chain(kernel):
    """A lane starts from an ended transition whose draw is its starting state (also
    with lp = -inf for HMC, whose idle trajectory is accepted)."""
    kmod = sampler._kernel_module(kernel)
    x = jnp.linspace(-1.0, 1.0, 5)
    for lp in (-3.5, -jnp.inf):
        chain = nuts.ChainState(x, jnp.asarray(lp), 2.0 * x)
        tree = kmod.idle(chain, kernel)
        assert bool(tree.done)
        got, info = kmod.finish(tree, jnp.ones(5))
        for g, w in zip(got, chain):
            np.testing.assert_array_equal(g, w)
        assert not bool(info.diverging)


def test_first_restart_starts_transition_zero_without_adapting():
    """`_lane_start` then `_complete`: the warmup state is untouched, transition 0 is
    `init` with the transition-0 key and `_start`'s unused normals, and the next momentum
    is drawn for transition 1."""
    config = sampler.RunConfig(chains=1, warmup=10, draws=5)
    gd = hnnjax.data.stack([SCHOOLS], 8)
    data = jax.tree.map(lambda a: jnp.asarray(a)[0], gd)
    prior = hnnjax.Prior.default()
    words = jnp.asarray(sampler.lane_inputs(sampler.model_keys(3, [0]), gd, prior, 1)[0][0])
    lane = sampler._lane_start(words, jnp.asarray(0.8), data, prior, config)
    assert int(lane.t) == -1
    after, _ = sampler._complete(lane, data, prior, config)
    assert int(after.t) == 0
    for a, b in zip(after.adapt, lane.adapt):
        np.testing.assert_array_equal(a, b)
    want = nuts.init(counter_rng.transition(words, 0), lane.chain, lane.adapt.step_size, lane.adapt.inverse_mass,
                     config.kernel, z=lane.z)
    for a, b in zip(after.trans, want):
        np.testing.assert_array_equal(a, b)
    d = lane.z.shape[-1]
    np.testing.assert_array_equal(after.z, momentum_normals(counter_rng.transition(words, 1), d, lane.z.dtype))


def test_torn_saved_program_is_compiled_again(tmp_path, monkeypatch):
    """A saved program cut short fails its checksum: it is deleted, the program compiled
    and written again; older programs beyond `MAX_SAVED_PROGRAMS` are evicted."""
    monkeypatch.setenv("HNNJAX_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("HNNJAX_NO_PERSISTENT_CACHE", raising=False)
    monkeypatch.setattr(sampler, "_COMPILED", {})
    ref = hnnjax.sample(SCHOOLS, seed=5, **SMALL)
    (saved,) = map(Path, sampler._saved_programs(str(tmp_path)))
    saved.write_bytes(saved.read_bytes()[: saved.stat().st_size // 2])
    monkeypatch.setattr(sampler, "_COMPILED", {})
    traces = sampler.TRACE_COUNT["program"]
    fit = hnnjax.sample(SCHOOLS, seed=5, **SMALL)
    assert sampler.TRACE_COUNT["program"] == traces + 1
    np.testing.assert_array_equal(fit.draws["theta"], ref.draws["theta"])
    assert sampler._load_executable(str(saved), jax.devices()[:1]) is not None
    # eviction: keep the newest one
    monkeypatch.setattr(sampler, "MAX_SAVED_PROGRAMS", 1)
    monkeypatch.setattr(sampler, "_COMPILED", {})
    hnnjax.sample(SCHOOLS, seed=5, **{**SMALL, "draws": SMALL["draws"] + 1})
    (left,) = map(Path, sampler._saved_programs(str(tmp_path)))
    assert left != saved
