"""hnnjax.devices and sampler.run over several devices: one CPU device per core.

JAX fixes its CPU device count when its backend starts, so the two-device runs happen in
a subprocess that calls `hnnjax.use_cpu_cores(2)` first. float64 there, float32 for HMC.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

import hnnjax
from hnnjax import devices, sampler


def test_available_cores_reads_the_affinity_mask(monkeypatch):
    """The cores this process may run on, not the machine's: cpu_count only without a mask."""
    monkeypatch.setattr(devices.os, "sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    monkeypatch.setattr(devices.os, "cpu_count", lambda: 64)
    assert devices.available_cores() == 3
    monkeypatch.delattr(devices.os, "sched_getaffinity")
    assert devices.available_cores() == 64


def test_use_cpu_cores_after_the_backend_started():
    """This process's backend is up: the same count is accepted, another one is refused, and
    XLA_FLAGS (read already) is not touched."""
    have = len(jax.devices("cpu"))
    flags = os.environ.get("XLA_FLAGS")
    assert hnnjax.use_cpu_cores(have) == have
    assert os.environ.get("XLA_FLAGS") == flags
    with pytest.raises(RuntimeError, match="use_cpu_cores"):
        hnnjax.use_cpu_cores(have + 1)
    with pytest.raises(ValueError, match="n: must be >= 1"):
        hnnjax.use_cpu_cores(0)


@pytest.mark.parametrize("n_models, chains, n_devices, kernel, expect", [
    (1, 4, 2, "nuts", (2, 2)),    # one model's chains split, two lanes a device
    (1, 1, 2, "nuts", (1, 2)),    # one lane: one device, padded to two lanes
    (1, 3, 2, "nuts", (1, 3)),    # three lanes: not two a device, so one device
    (5, 4, 2, "nuts", (2, 10)),
    (1, 4, 2, "chees", (1, 4)),   # ChEES keeps a model's chains together, and may run one model alone
    (3, 4, 2, "chees", (2, 8)),   # two models a device, the last padded
    (4, 4, 2, "chees", (2, 8)),
])
def test_shard_plan(n_models, chains, n_devices, kernel, expect):
    config = sampler.RunConfig(chains=chains, kernel=sampler.resolve_kernel(kernel))
    assert sampler._shard_plan(n_models, config, n_devices) == expect


def test_two_cpu_devices_give_the_same_draws(tmp_path):
    """One device and two give the same draws: both parametrizations with NUTS and HMC,
    batches with NUTS and ChEES, and the radon regression. The centered model and the radon
    regression used to differ (last bits at transition 0-5, then other chains): they
    divided by a scale exp(log s), which XLA's simplifier rewrote as a product with
    exp(-log s) in the one-device program but not everywhere in the shard_map one; the
    targets now multiply by exp(-log s) themselves (`model.logdensity_centered`,
    `radon._normal_logpdf`)."""
    script = tmp_path / "two_devices.py"
    script.write_text(textwrap.dedent("""
        import jax
        import hnnjax
        assert hnnjax.use_cpu_cores(2) == 2
        jax.config.update("jax_enable_x64", True)
        import numpy as np
        from hnnjax import radon, sampler
        from hnnjax.batch import sample_batch
        two = jax.devices()
        assert len(two) == 2
        es = hnnjax.datasets.eight_schools()
        for par in ("noncentered", "centered"):
            for kernel, dtype in (("nuts", np.float64), ("hmc", np.float32)):
                kw = dict(parametrization=par, kernel=kernel, chains=4, warmup=150, draws=100, seed=5, dtype=dtype)
                a = hnnjax.sample(es, **kw)
                b = hnnjax.sample(es, devices=two[:1], **kw)
                assert (a.timing["devices"], b.timing["devices"]) == (2, 1), (a.timing, b.timing)
                for k in a.draws:
                    np.testing.assert_array_equal(a.draws[k], b.draws[k], err_msg=f"{par} {kernel} {k}")
                assert a.n_grad_evals == b.n_grad_evals
        data, _ = radon.synthetic_radon(n_counties=12, seed=1)
        batch = radon.RadonData(*(np.asarray(x)[None] for x in data))
        prior = radon.RadonPrior(*(np.asarray(x, np.float64)[None] for x in radon.RadonPrior.make()))
        for par in ("centered", "noncentered"):
            config = sampler.RunConfig(target=radon.RadonRegression(par), kernel=sampler.resolve_kernel("nuts"),
                                       chains=4, warmup=100, draws=50)
            a, b = (sampler.run(sampler.model_keys(5, [0]), batch, prior, config, devices=d)[0]
                    for d in (two, two[:1]))
            for k in a:
                np.testing.assert_array_equal(a[k], b[k], err_msg=f"radon {par} {k}")
        data = [es, ([1.0, 2.0, 3.0], [1.0, 1.0, 2.0]), ([4.0], [2.0]), ([0.0, 1.0], [1.0, 3.0])]
        kw = dict(chains=4, warmup=100, draws=50, seed=3, chunk_size=3, max_lanes=4, progress=False)
        both = sample_batch(data, **kw)
        one = sample_batch(data, devices=two[:1], **kw)
        assert [(c["devices"], c["lanes"]) for c in both.chunks] == [(2, 8), (2, 8)]
        for i in range(4):
            for k in ("mu", "tau", "theta"):
                np.testing.assert_array_equal(both.fits[i].draws[k], one.fits[i].draws[k])
        # ChEES: whole models per device, each device with its own model pool
        kw = dict(kernel="chees", chains=4, warmup=100, draws=50, seed=3, chunk_size=3, progress=False)
        both = sample_batch(data, **kw)
        one = sample_batch(data, devices=two[:1], **kw)
        assert [c["devices"] for c in both.chunks] == [2, 2], both.chunks  # chunks padded to 3 models
        for i in range(4):
            for k in ("mu", "tau", "theta"):
                np.testing.assert_array_equal(both.fits[i].draws[k], one.fits[i].draws[k])
        print("ok", both.timing["devices"], [c["useful_step_share"] for c in both.chunks])
    """))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("ok")


_SMALL_LOOPS = """
import os, sys
import jax
import hnnjax
from hnnjax import sampler
assert hnnjax.use_cpu_cores(2) == 2
jax.config.update("jax_enable_x64", True)
import numpy as np
fit = hnnjax.sample(hnnjax.datasets.eight_schools(), chains=4, warmup=150, draws=100, seed=5)
hoisted = any("xla_cpu_small_call" in c.as_text() for c in sampler._COMPILED.values())
np.save(sys.argv[1], np.concatenate([fit.draws["mu"].ravel(), fit.draws["tau"].ravel()]))
print(os.environ["XLA_FLAGS"], hoisted)
"""


def test_use_cpu_cores_compiles_small_loops_into_kernels(tmp_path):
    """use_cpu_cores lets XLA compile the NUTS loop of eight schools into one kernel (the
    optimized program holds a hoisted `xla_cpu_small_call`), with the same draws bit for bit
    as with the hoisting off (threshold 0, loop unrolling off as ours); a user's other
    flags are kept after ours, and a user's own threshold is left as it is."""
    script = tmp_path / "small_loops.py"
    script.write_text(_SMALL_LOOPS)
    base = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    base["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    base["HNNJAX_NO_PERSISTENT_CACHE"] = "1"
    off = "--xla_backend_extra_options=xla_cpu_small_while_loop_byte_threshold=0,xla_cpu_disable_loop_unrolling=true"
    other = "--xla_cpu_enable_fast_math=false"
    runs = {"ours": (base, [devices.XLA_OPTIONS_FLAG, "True"]),
            "other": ({**base, "XLA_FLAGS": other}, [devices.XLA_OPTIONS_FLAG, other, "True"]),
            "off": ({**base, "XLA_FLAGS": off}, [off, "False"])}
    for name, (env, want) in runs.items():
        proc = subprocess.run([sys.executable, str(script), str(tmp_path / f"{name}.npy")],
                              capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        # [XLA_FLAGS as the backend saw them..., whether the program holds a hoisted loop]
        assert proc.stdout.split() == want, (
            name, proc.stdout, "did XLA rename an option (threshold, loop unrolling) or its small-call tag?")
    for name in ("ours", "other"):
        np.testing.assert_array_equal(np.load(tmp_path / f"{name}.npy"), np.load(tmp_path / "off.npy"))
