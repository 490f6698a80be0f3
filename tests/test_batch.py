"""hnnjax.batch.sample_batch: equality with sample(), batch invariance, failure isolation,
convergence flags, checkpoints and resume, ids, draws modes, lane pool, progress, devices.

Every fit uses the static settings of tests/test_sampler.py's SMALL and padded size 8, so
the whole file compiles three programs (4 lanes: one model or chunk_size=1; 8 lanes:
chunk_size=2; 16 chains on a pool of 4 lanes) and one diagnostics block.
"""

import json
import zlib

import jax
import numpy as np
import pytest

import hnnjax
from hnnjax import batch, sampler
from hnnjax.batch import sample_batch

SMALL = dict(chains=4, warmup=100, draws=50)
SCHOOLS = hnnjax.datasets.eight_schools()
VALID = [
    SCHOOLS,
    ([1.0, 2.0, 3.0], [1.0, 1.0, 2.0]),
    hnnjax.GroupData([0.5, -1.0, 2.0, 0.0, 1.5], [1.0, 2.0, 1.5, 1.0, 3.0], names=list("abcde")),
    ([4.0], [2.0]),
]
DATA = VALID + [([1.0, float("nan")], [1.0, 1.0])]  # model 4 is invalid
LOOSE = dict(rhat_max=10.0, ess_min=0.0, max_divergence_rate=1.0)  # tiny runs: judge nothing
FIELDS = ("position", "n_steps", "accept_stat", "diverging", "step_size", "inverse_mass")


def _fit(data=DATA, **kw):
    opts = dict(SMALL, seed=3, chunk_size=2, progress=False, **LOOSE)
    opts.update(kw)
    return sample_batch(data, **opts)


@pytest.fixture(scope="module")
def result():
    return _fit()


def _same_fit(a, b):
    for k in a.draws:
        np.testing.assert_array_equal(a.draws[k], b.draws[k], err_msg=k)
    for k in a.stats:
        np.testing.assert_array_equal(a.stats[k], b.stats[k], err_msg=k)
    np.testing.assert_array_equal(a.step_size, b.step_size)
    np.testing.assert_array_equal(a.inverse_mass_matrix, b.inverse_mass_matrix)


def _frames_equal(a, b):
    import pandas.testing as pdt

    pdt.assert_frame_equal(a.models.to_pandas(), b.models.to_pandas(), check_exact=True)
    pdt.assert_frame_equal(a.groups.to_pandas(), b.groups.to_pandas(), check_exact=True)


# --- equality with sample() and batch invariance --------------------------------------


def test_model_i_equals_sample_bit_for_bit(result):
    for i in (1, 3):
        alone = hnnjax.sample(DATA[i], model_id=i, seed=3, **SMALL)
        _same_fit(alone, result.fits[i])


def test_draws_do_not_depend_on_batch_composition_or_chunk_size(result):
    # chunk_size 1 (another program), other members and order, and a padded last chunk
    one = _fit(VALID, chunk_size=1)
    mixed = _fit([VALID[3], VALID[0], VALID[2]], ids=[3, 0, 2])
    assert [c["width"] for c in mixed.chunks] == [2, 2]  # 3 models: last chunk padded
    assert [c["models"] for c in mixed.chunks] == [2, 1]
    for i in (0, 2, 3):
        _same_fit(result.fits[i], one.fits[i])
        _same_fit(result.fits[i], mixed.fits[i])


def test_lane_pool_gives_the_same_draws(result):
    """sampler's lane pool (max_lanes): 16 chains on 4 lanes, one chunk, same draws."""
    pooled = _fit(VALID, chunk_size=None, max_lanes=4)
    assert [(c["width"], c["lanes"]) for c in pooled.chunks] == [(4, 4)]
    assert [c["lanes"] for c in result.chunks] == [8, 8]  # 8 chains <= 256 lanes: no pool
    assert batch.default_max_lanes("cpu") == 256
    steps = sum(f.n_grad_evals for f in pooled.fits.values())
    assert pooled.chunks[0]["useful_step_share"] == pytest.approx(steps / (pooled.chunks[0]["loop_iterations"] * 4))
    for i in range(4):
        _same_fit(pooled.fits[i], result.fits[i])


def test_summary_tables(result):
    m = result.models
    assert m.index == ["0", "1", "2", "3", "4"]
    np.testing.assert_array_equal(m["J"], [8, 3, 5, 1, 2])
    np.testing.assert_array_equal(m["J_pad"], [8, 8, 8, 8, 0])
    fit = result.fits[2]
    np.testing.assert_allclose(m.row("2")["mu_mean"], fit.draws["mu"].mean(), rtol=1e-12)
    np.testing.assert_allclose(m.row("2")["tau_q50"], np.median(fit.draws["tau"]), rtol=1e-12)
    # per-scalar diagnostics are diagnostics.summarize's (tested there); here: their reduction
    x = np.concatenate([fit.draws["mu"][None], fit.draws["tau"][None], np.moveaxis(fit.draws["theta"], -1, 0)])
    diag = batch.summarize_blocks(x)
    assert m.row("2")["r_hat_max"] == np.max(diag["r_hat"])
    assert m.row("2")["ess_bulk_min"] == np.min(diag["ess_bulk"])
    assert m.row("2")["ess_tail_min"] == np.min(diag["ess_tail"])
    assert m.row("2")["divergences"] == fit.divergences
    assert m.row("2")["step_size"] == pytest.approx(fit.step_size.mean())
    g = result.groups.to_pandas()
    assert len(g) == 8 + 3 + 5 + 1
    assert list(g.loc["2", "group"]) == list("abcde")
    np.testing.assert_allclose(g.loc["2", "mean"], fit.draws["theta"].mean(axis=(0, 1)), rtol=1e-12)
    df = result.to_pandas()
    assert df.index.name == "model" and df.loc["4", "status"] == "invalid"


def test_useful_step_share(result):
    for c in result.chunks:
        members = [i for i in range(4) if result.models["chunk"][i] == c["chunk"]]
        steps = sum(result.fits[i].n_grad_evals for i in members)
        assert c["useful_step_share"] == pytest.approx(steps / (c["loop_iterations"] * c["width"] * 4))
    t = result.timing
    assert 0 < t["useful_step_share"] <= 1
    assert t["models_fitted"] == 4 and t["models_per_s"] > 0


# --- failure isolation and convergence flags -------------------------------------------


def test_invalid_models_are_reported_and_the_others_fit():
    data = [([1.0, float("nan")], [1.0, 1.0]), ([1.0, 2.0], [1.0, 0.0]), ([], []),
            VALID[1], ([1.0, "x"], [1.0, 1.0]), None]
    res = _fit(data, chunk_size=1)
    st = dict(zip(res.models.index, res.models["status"]))
    why = dict(zip(res.models.index, res.models["reason"]))
    assert st == {"0": "invalid", "1": "invalid", "2": "invalid", "3": "ok", "4": "invalid", "5": "invalid"}
    assert why["0"].startswith("y[1]: NaN")
    assert why["1"].startswith("sigma[1]: must be > 0")
    assert "empty" in why["2"]
    assert why["4"].startswith("y[1]: non-numeric")
    assert np.isnan(res.models.row("0")["mu_mean"]) and np.isfinite(res.models.row("3")["mu_mean"])
    assert list(res.fits) == [3]
    _same_fit(res.fits[3], hnnjax.sample(VALID[1], model_id=3, seed=3, **SMALL))


def test_unconverged_models_are_flagged(result):
    strict = batch._status(
        {k: result.models[k] for k in ("r_hat_max", "ess_bulk_min", "divergence_rate")},
        {4: "bad"}, 5, 1.0, 1e9, -1.0,
    )
    assert list(strict[0]) == ["unconverged"] * 4 + ["invalid"]
    assert all(("r_hat" in r and "ess_bulk" in r and "divergence rate" in r) for r in strict[1][:4])
    assert batch._unconverged_reasons(1.005, 500.0, 0.0, 1.01, 400, 0.0) == []
    assert batch._unconverged_reasons(1.05, 500.0, 0.0, 1.01, 400, 0.0) == ["r_hat 1.050 > 1.01"]
    assert batch._unconverged_reasons(float("nan"), 500.0, 0.0, 1.01, 400, 0.0) == ["r_hat nan > 1.01"]
    assert batch._unconverged_reasons(1.0, 80.0, 0.01, 1.01, 400, 0.0) == [
        "ess_bulk 80 < 400", "divergence rate 0.01 > 0"]
    # the default thresholds (ESS >= 100 per chain) flag 200 draws per model
    default = _fit(VALID[:2], rhat_max=1.01, ess_min=None, max_divergence_rate=0.0)
    assert set(default.models["status"]) == {"unconverged"}
    assert all("ess_bulk" in r and "< 400" in r for r in default.models["reason"])


# --- checkpoints and resume -------------------------------------------------------------


class Interrupt(Exception):
    pass


def test_resume_after_interruption_gives_identical_tables(result, tmp_path):
    def stop_after_first(info):
        raise Interrupt

    with pytest.raises(Interrupt):
        _fit(out=tmp_path, on_chunk=stop_after_first)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert list(manifest["chunks"]) == ["0"]
    seen = []
    resumed = _fit(out=tmp_path, on_chunk=seen.append)
    assert [c["source"] for c in resumed.chunks] == ["disk", "fit"]
    assert [s["chunk"] for s in seen] == [1]  # chunk 0 was read back, not refitted
    _frames_equal(resumed, result)
    for i in range(4):
        _same_fit(resumed.fits[i], result.fits[i])
    # a third run reads everything; the final tables are on disk too
    again = _fit(out=tmp_path)
    assert again.timing["chunks_from_disk"] == 2 and again.timing["chunks_fitted"] == 0
    _frames_equal(again, result)
    import pandas as pd

    assert len(pd.read_parquet(tmp_path / "models.parquet")) == 5
    assert len(pd.read_parquet(tmp_path / "chunk-00000.groups.parquet")) == 1 + 3  # models 3 and 1


def test_out_directory_of_other_arguments_is_refused(tmp_path):
    _fit(VALID[1:2], out=tmp_path, keep_draws=False)
    with pytest.raises(ValueError, match="out: .* other data or settings"):
        _fit(VALID[1:2], out=tmp_path, seed=4, keep_draws=False)
    # asking for draws that were not stored refits those chunks (same results)
    res = _fit(VALID[1:2], out=tmp_path, keep_draws=("mu",))
    assert res.timing["chunks_fitted"] == 1 and res.draws["mu"][0].shape == (4, 50)


# --- ids, inputs, draw modes, progress -------------------------------------------------


def test_string_ids_hash_with_crc32():
    res = _fit(VALID[1:3], ids=["restaurant-7:0", "b"], chunk_size=1)
    key = zlib.crc32(b"restaurant-7:0")
    assert res.models.row("restaurant-7:0")["key"] == key == batch.id_key("restaurant-7:0")
    _same_fit(res.fits["restaurant-7:0"], hnnjax.sample(VALID[1], model_id=key, seed=3, **SMALL))
    assert batch.id_key(7) == 7 and batch.id_key(np.int64(7)) == 7
    with pytest.raises(ValueError, match="ids"):
        batch.id_key(-1)
    with pytest.raises(ValueError, match="duplicate model id"):
        _fit(VALID[1:3], ids=["a", "a"])


def test_one_prior_per_model(result):
    flat = hnnjax.Prior.flat()
    res = _fit(VALID[:2], prior=[hnnjax.Prior.default(), flat])
    _same_fit(res.fits[0], result.fits[0])
    _same_fit(res.fits[1], hnnjax.sample(VALID[1], model_id=1, seed=3, prior=flat, **SMALL))
    with pytest.raises(ValueError, match="prior: length mismatch"):
        _fit(VALID[:2], prior=[flat])


def test_long_table_input(result):
    import pandas as pd

    rows = []
    for mid, gd in ((2, VALID[2]), (0, SCHOOLS)):
        rows += [{"model": mid, "y": y, "sigma": s, "name": n} for y, s, n in zip(gd.y, gd.sigma, gd.names)]
    res = _fit(pd.DataFrame(rows), chunk_size=1)
    assert res.ids == [2, 0]
    _same_fit(res.fits[2], result.fits[2])
    assert list(res.groups.to_pandas().loc["0", "group"]) == list(SCHOOLS.names)


def test_summaries_only_and_named_draws(result):
    lean = _fit(keep_draws=False)
    assert lean.fits == {} and lean.draws == {}
    _frames_equal(lean, result)
    named = _fit(keep_draws=("mu", "theta"))
    assert named.fits == {} and set(named.draws) == {"mu", "theta"}
    np.testing.assert_array_equal(named.draws["mu"][1], result.fits[1].draws["mu"])
    np.testing.assert_array_equal(named.draws["theta"][1], result.fits[1].draws["theta"])
    assert named.draws["theta"][1].shape == (4, 50, 3)
    with pytest.raises(ValueError, match="keep_draws"):
        _fit(keep_draws=("eta",))


def test_progress_off_prints_nothing(capfd):
    _fit(VALID[1:3], chunk_size=1, progress=False)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_progress_bar_counts_models(capfd):
    pytest.importorskip("tqdm")
    _fit(VALID[1:3], chunk_size=1, progress=True)
    _, err = capfd.readouterr()
    assert "2/2" in err


# --- chunk plan -------------------------------------------------------------------------


def test_chunk_plan_from_memory_budget():
    config = sampler.RunConfig(chains=4, warmup=1000, draws=1000)
    per = batch.bytes_per_model(8, 4, 1000, 1000, 8)
    assert per == 2 * 4 * (2 * 1000 * 10 + 6 * 2000) * 8
    groups = [hnnjax.GroupData(np.zeros(j), np.ones(j)) for j in [3] * 10 + [20] * 3]
    plan = batch._plan(groups, range(13), None, 4 * per / 2**20, config, 8)
    assert [(c.j_pad, c.width, len(c.members)) for c in plan] == [
        (8, 4, 4), (8, 4, 4), (8, 4, 2), (24, 2, 2), (24, 2, 1)]
    assert [c.members for c in plan[:3]] == [(0, 1, 2, 3), (4, 5, 6, 7), (8, 9)]
    plan = batch._plan(groups, range(13), 100, 512, config, 8)
    assert [(c.j_pad, c.width) for c in plan] == [(8, 10), (24, 3)]
    # within a bucket, chunks hold models of similar J (the slowest lane sets a chunk's pace)
    groups = [hnnjax.GroupData(np.zeros(j), np.ones(j)) for j in (5, 1, 8, 3)]
    assert [c.members for c in batch._plan(groups, range(4), 2, 512, config, 8)] == [(1, 3), (0, 2)]


# --- devices ----------------------------------------------------------------------------


def test_chunks_run_on_the_given_devices(result, monkeypatch):
    """Every chunk goes to sampler.run with all the devices (two-device runs: test_devices)."""
    original = sampler.run
    used = []

    def run(keys, data, prior, config, devices=None):
        used.append(devices)
        return original(keys, data, prior, config, devices=devices[:1])

    monkeypatch.setattr(sampler, "run", run)
    cpu = jax.devices()[0]
    res = _fit(devices=[cpu, cpu])
    assert used == [[cpu, cpu], [cpu, cpu]]
    assert res.timing["devices"] == [str(cpu)] * 2
    _frames_equal(res, result)
    for i in range(4):
        _same_fit(res.fits[i], result.fits[i])
