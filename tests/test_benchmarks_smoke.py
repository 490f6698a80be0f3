"""The benchmark suite's code path on tiny settings, in-process, and its results schema.

No timing assertions: figures from tiny runs mean nothing. Samplers that cannot run here
(a peer not installed, hnnjax.sample not written yet) are skipped by the suite itself.
"""

import importlib.util
import json
from dataclasses import replace

import numpy as np
import pytest

from benchmarks import report, suites
from benchmarks.datasets import grid, synthetic
from benchmarks.metrics import useful_step_share
from benchmarks.run import run_suite, write_results
from benchmarks.runner import Settings

HAVE_BLACKJAX = importlib.util.find_spec("blackjax") is not None
HAVE_NUMPYRO = importlib.util.find_spec("numpyro") is not None


def _have_hnnjax_sample():
    import hnnjax

    return callable(getattr(hnnjax, "sample", None))


@pytest.mark.parametrize("parametrization", ["noncentered", "centered"])
def test_peer_density_is_hnnjax_density(parametrization):
    from benchmarks.peers import logdensity
    from hnnjax.model import Prior, logdensity as hnn_logdensity

    ds = synthetic(12, 2.0, 0)
    rng = np.random.default_rng(1)
    f = hnn_logdensity(parametrization)
    for _ in range(5):
        x = rng.normal(size=2 + ds.J) * 2
        ours = float(logdensity(x, ds.data.y, ds.data.sigma, parametrization))
        theirs = float(f(x, ds.data.padded(), Prior.default()))
        assert ours == pytest.approx(theirs, rel=1e-10, abs=1e-9)


def test_useful_step_share():
    assert useful_step_share(np.full((4, 10), 7)) == pytest.approx(1.0)
    # two lanes: one takes 1 step, the other 3; lock step pays 3 for both
    assert useful_step_share(np.array([[1, 1], [3, 3]])) == pytest.approx(4 / 6)
    with pytest.raises(ValueError):
        useful_step_share(np.ones(3))


def test_datasets_are_seeded_and_independent_of_the_grid():
    a = synthetic(64, 0.1, 3)
    b = next(d for d in grid((8, 64), (0.1, 2.0), per_cell=4) if d.name == a.name)
    np.testing.assert_array_equal(a.data.y, b.data.y)
    np.testing.assert_array_equal(a.data.sigma, b.data.sigma)
    assert 5.0 <= a.data.sigma.min() and a.data.sigma.max() <= 20.0
    assert len(grid((8, 64), (0.1, 2.0, 20.0), per_cell=2)) == 12
    assert synthetic(8, 2.0, 0).data.y.tolist() != synthetic(8, 2.0, 1).data.y.tolist()


def test_fresh_scripts_compile():
    from benchmarks.fresh import SCRIPTS, script

    for lib in SCRIPTS:
        compile(script(lib, chains=2, warmup=10, draws=10), f"<fresh {lib}>", "exec")


def _tiny_suite():
    tiny = Settings(chains=2, warmup=40, draws=40)
    return replace(
        suites.SMOKE,
        headline=tiny, grid=tiny, scale=tiny,
        headline_samplers=("hnnjax-nuts-nc", "blackjax-nuts-nc", "numpyro-nuts-nc", "exact"),
        grid_samplers=("hnnjax-nuts-nc", "blackjax-nuts-nc", "exact"),
        grid_J=(8,), grid_tau=(2.0,), grid_per_cell=1,
        scale_J=(8,), scale_J_samplers=("hnnjax-nuts-nc", "blackjax-nuts-nc"),
        scale_chains=(2,), scale_chains_samplers=("hnnjax-nuts-nc", "blackjax-nuts-nc"),
        lanes=(2,), lanes_samplers=("blackjax-nuts-nc", "hnnjax-nuts-nc"),
        fresh=False,
    )


def test_smoke_suite_in_process(tmp_path):
    results = run_suite(suite=_tiny_suite(), log=lambda m: None)
    assert report.validate(results) == []

    ran = set(results["headline"]["results"])
    skipped = set(results["samplers"]["skipped"])
    assert ran | skipped >= {"hnnjax-nuts-nc", "blackjax-nuts-nc", "numpyro-nuts-nc", "exact"}
    assert ("blackjax-nuts-nc" in ran) == HAVE_BLACKJAX
    assert ("numpyro-nuts-nc" in ran) == HAVE_NUMPYRO
    assert ("hnnjax-nuts-nc" in ran) == _have_hnnjax_sample()
    for name in ran:
        r = results["headline"]["results"][name]
        assert r["median"]["n_runs"] == 1
        run = r["runs"][0]
        assert run["chains"] == 2 and run["draws"] == 40
        assert run["min_ess_bulk"] is None or run["min_ess_bulk"] > 0
        if name != "exact":
            assert run["n_grad_evals"] is None or run["n_grad_evals"] > 0
    if "blackjax-nuts-nc" in ran:
        assert results["headline"]["results"]["blackjax-nuts-nc"]["compile"]["method"] == "aot"
        lane = [r for r in results["lanes"] if r["sampler"] == "blackjax-nuts-nc"][0]
        assert 0 < lane["useful_step_share"] <= 1 and 0 < lane["useful_step_share_warmup"] <= 1
    assert {r["sampler"] for r in results["grid"]["cells"]} == {
        r["sampler"] for r in results["grid"]["runs"]}

    out = tmp_path / "res.json"
    md = write_results(results, out)
    loaded = json.loads(out.read_text())
    assert report.validate(loaded) == []
    assert "Headline" in md and out.with_suffix(".md").exists()

    missing = dict(results)
    del missing["ratios"]
    assert report.validate(missing)


@pytest.mark.skipif(not HAVE_BLACKJAX, reason="BlackJAX is not installed")
@pytest.mark.slow
def test_fresh_process_blackjax():
    from benchmarks.fresh import run_fresh

    r = run_fresh("blackjax", chains=2, warmup=20, draws=20)
    assert r["ok"], r
    assert r["wall_s"] > r["import_s"] > 0


def test_fresh_rounds_ratio_is_the_median_of_paired_rounds():
    """The fresh-process ratio pairs hnnjax's cold run with BlackJAX's run of the same
    round and takes the median over rounds; a round with a side missing is left out, and a
    results file from before rounds (no `round` key) counts as one round."""
    from benchmarks.fresh import _round_order
    from benchmarks.report import headline_ratios

    def row(lib, rnd, run, wall, ok=True):
        return {"library": lib, "round": rnd, "run": run, "wall_s": wall, "ok": ok}

    fresh = [row("hnnjax", 1, 1, 2.0), row("hnnjax", 1, 2, 0.8), row("blackjax", 1, 1, 5.0),
             row("blackjax", 2, 1, 4.0), row("hnnjax", 2, 1, 3.0), row("hnnjax", 2, 2, 1.0),
             row("hnnjax", 3, 1, 2.5), row("blackjax", 3, 1, 5.0),
             row("hnnjax", 4, 1, 1.0), row("blackjax", 4, 1, 9.0, ok=False)]
    r = headline_ratios({"headline": None, "fresh": fresh})
    assert r["fresh_time_vs_blackjax_rounds"] == [[1, 0.4], [2, 0.75], [3, 0.5]]
    assert r["fresh_time_vs_blackjax"] == 0.5
    assert r["fresh_time_vs_blackjax_cached_rounds"] == [[1, 0.8 / 5.0], [2, 0.25]]
    assert r["fresh_time_vs_numpyro"] is None
    fresh[4]["cache_controlled"] = False  # round 2's cold run found a program: left out
    assert headline_ratios({"headline": None, "fresh": fresh})["fresh_time_vs_blackjax_rounds"] == [[1, 0.4], [3, 0.5]]
    old = [{k: v for k, v in x.items() if k != "round"} for x in fresh[:3]]
    assert headline_ratios({"headline": None, "fresh": old})["fresh_time_vs_blackjax"] == 0.4
    # the Markdown table keeps failed and skipped rows and labels the rounds' ratios
    rows = fresh[:3] + [{"library": "numpyro", "ok": False, "skipped": "numpyro is not installed"},
                        {"library": "blackjax", "round": 2, "run": 1, "ok": False, "error": "timed out"}]
    settings = {"chains": 4, "warmup": 10, "draws": 10, "target_accept": 0.8, "mass_matrix": "diagonal"}
    md = "\n".join(report._fresh_md({"fresh": rows, "settings": {"fresh": settings},
                                     "ratios": headline_ratios({"headline": None, "fresh": rows})}))
    assert "| numpyro |  | n/a | | | numpyro is not installed |" in md
    assert "| 2 | blackjax | 1 | n/a | | | timed out |" in md
    assert md.endswith("round 1 0.40 (median 0.40).")
    libs = ("hnnjax", "hnnjax", "blackjax", "numpyro")
    assert _round_order(libs, 0) == list(libs)
    assert _round_order(libs, 1) == ["blackjax", "numpyro", "hnnjax", "hnnjax"]
