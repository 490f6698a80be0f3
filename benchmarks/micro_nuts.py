"""Micro-benchmark of hnnjax's NUTS state machine on CPU (``python -m benchmarks.micro_nuts``).

Three measurements, each the median of several interleaved repeats in one process, each
as wall seconds (perf_counter) and CPU seconds of the process (process_time, summed over
its threads: on a shared machine the CPU time is the steadier figure):

1. the *advance loop*: T transitions of the synchronized structure (a scan over
   transitions whose body is a vmapped ``while_loop(~done, nuts.advance)``), at the step
   size and inverse mass adapted by a first ``hnnjax.sample`` run; reported per loop
   iteration (one leapfrog step of every lane);
2. the full ``hnnjax.sample`` program (independent driver, 1000 warmup + 1000 draws)
   per loop iteration and in total;
3. BlackJAX's eight-schools program (``benchmarks.peers.blackjax_program``, 4 chains,
   1000 + 1000, float32) as the reference.

Cases: eight schools (non-centered, 4 chains) in float32 and float64, and a synthetic
J = 512 dataset (d = 514) in float32.

``--baseline PATH`` loads another version of ``hnnjax/nuts.py`` (e.g. a copy of the
previous one) as a second NUTS module and times both in the same process, interleaved,
and checks that both give the same draws (max abs difference printed).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from hnnjax import model, nuts, sampler
from hnnjax.data import bucket_size, stack
from hnnjax.datasets import eight_schools
from hnnjax.model import Prior

__all__ = ["load_nuts_variant", "SampleProgram", "AdvanceLoop", "main"]


def load_nuts_variant(path: str, name: str = "hnnjax._nuts_variant"):
    """Import another nuts.py as a module of the hnnjax package (its relative imports work).

    Its NUTS, ChainState and Info classes are replaced by hnnjax.nuts's so that the
    sampler treats a `hnnjax.NUTS()` configuration as belonging to it and the pytrees of
    both versions have the same types.
    """
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    mod.__package__ = "hnnjax"
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    mod.NUTS, mod.ChainState, mod.Info = nuts.NUTS, nuts.ChainState, nuts.Info
    return mod


class _using:
    """Context manager: trace the sampler with another nuts module."""

    def __init__(self, mod):
        self.mod = mod

    def __enter__(self):
        self.saved = sampler.nuts
        sampler.nuts = self.mod

    def __exit__(self, *exc):
        sampler.nuts = self.saved


def _x64(flag: bool):
    jax.config.update("jax_enable_x64", bool(flag))


class SampleProgram:
    """The compiled program of `hnnjax.sample(data, chains=4, dtype=...)` for one nuts module."""

    def __init__(self, mod, data, dtype, chains=4, warmup=1000, draws=1000, seed=0, driver="independent"):
        _x64(dtype == np.float64)
        config = sampler.RunConfig(
            target=model.NormalNormal("noncentered"), kernel=nuts.NUTS(), chains=chains,
            warmup=warmup, draws=draws, target_accept=0.5, driver=driver,
        ).for_platform(jax.default_backend())
        pr = Prior.default()
        batch = stack([data], bucket_size(data.J), dtype=dtype)
        prior_b = model.stack_priors([pr], dtype)
        keys, lane_data, lane_prior = sampler.lane_inputs(sampler.model_keys(seed, [0]), batch, prior_b, chains)
        target = np.full(chains, 0.8, dtype)
        self.args = jax.tree.map(jnp.asarray, (keys, target, lane_data, lane_prior))
        with _using(mod):
            fn = jax.jit(sampler._program, static_argnames=("config",))
            t0 = time.perf_counter()
            self.compiled = fn.lower(*self.args, config=config).compile()
            self.compile_s = time.perf_counter() - t0
        self.config = config

    def __call__(self):
        out, n_iter = jax.block_until_ready(self.compiled(*self.args))
        return sampler.unpack_output(jax.device_get(out)), int(n_iter)


class AdvanceLoop:
    """T transitions of the synchronized structure at fixed (adapted) step size and metric."""

    def __init__(self, mod, data, dtype, step_size, inverse_mass, x0, transitions=400, max_depth=10):
        _x64(dtype == np.float64)
        cfg = nuts.NUTS(max_depth=max_depth)
        size = bucket_size(data.J)
        d = data.padded(size, dtype)
        from hnnjax.data import Data

        dat = Data(*(jnp.asarray(a) for a in d))
        prior = jax.tree.map(lambda a: jnp.asarray(a[0]), model.stack_priors([Prior.default()], dtype))
        target = model.NormalNormal("noncentered")
        ldg = jax.value_and_grad(lambda x: target.logdensity(x, dat, prior))

        def one_transition(key, chain, eps, inv):
            tree = mod.init(key, chain, eps, inv, cfg)
            tree = jax.lax.while_loop(lambda t: ~t.done, lambda t: mod.advance(t, eps, inv, ldg, cfg), tree)
            new, info = mod.finish(tree)
            return new, info.n_steps

        step = jax.vmap(one_transition)

        def program(words, x, eps, inv):
            lp, grad = jax.vmap(ldg)(x)
            chain = nuts.ChainState(x, lp, grad)

            def body(chain, t):
                k = jax.vmap(lambda w: sampler._transition_key(w, t))(words)
                chain, n = step(k, chain, eps, inv)
                return chain, jnp.max(n)

            chain, n = jax.lax.scan(body, chain, jnp.arange(transitions))
            return chain.position, jnp.sum(n)

        lanes = x0.shape[0]
        words = jnp.asarray(np.random.default_rng(1).integers(0, 2**32, (lanes, 2), dtype=np.uint32))
        self.args = (words, jnp.asarray(x0, dtype), jnp.asarray(step_size, dtype), jnp.asarray(inverse_mass, dtype))
        t0 = time.perf_counter()
        self.compiled = jax.jit(program).lower(*self.args).compile()
        self.compile_s = time.perf_counter() - t0

    def __call__(self):
        pos, n_iter = jax.block_until_ready(self.compiled(*self.args))
        return np.asarray(pos), int(n_iter)


class BlackJAX:
    def __init__(self, data, chains=4):
        from benchmarks.peers import blackjax_program
        from benchmarks.runner import Settings

        _x64(False)
        self.args = (jax.random.key(0), jnp.asarray(data.y, jnp.float32), jnp.asarray(data.sigma, jnp.float32))
        prog = blackjax_program("noncentered", Settings(chains=chains))
        t0 = time.perf_counter()
        self.compiled = jax.jit(prog).lower(*self.args).compile()
        self.compile_s = time.perf_counter() - t0

    def __call__(self):
        out = jax.device_get(jax.block_until_ready(self.compiled(*self.args)))
        n_iter = int(np.sum(np.max(out["n_steps"], 0)) + np.sum(np.max(out["warmup_n_steps"], 0)))
        return out, n_iter


def _time(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    out, n_iter = fn()
    return time.perf_counter() - w0, time.process_time() - c0, n_iter, out


def _max_diff(a, b):
    return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", help="another nuts.py to compare with, interleaved")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--cases", default="es32,es64,j512", help="comma list of es32, es64, j512")
    ap.add_argument("--no-blackjax", action="store_true")
    ap.add_argument("--no-sample", action="store_true", help="only the advance loop")
    args = ap.parse_args(argv)

    variants = {"current": nuts}
    if args.baseline:
        variants = {"baseline": load_nuts_variant(args.baseline), "current": nuts}

    from benchmarks.datasets import synthetic

    datasets = {
        "es32": (eight_schools(), np.float32, 400),
        "es64": (eight_schools(), np.float64, 400),
        "j512": (synthetic(512, 2.0).data, np.float32, 100),
    }
    jobs = []  # (label, variant, callable)
    print(f"jax {jax.__version__}, {jax.devices()[0].platform}, reps {args.reps}", flush=True)
    for case in args.cases.split(","):
        data, dtype, transitions = datasets[case]
        adapted = None
        for vname, mod in variants.items():
            prog = SampleProgram(mod, data, dtype)
            print(f"compiled sample   {case:5s} {vname:8s} {prog.compile_s:6.1f} s", flush=True)
            if adapted is None:
                out, _ = prog()
                adapted = (out["final_step_size"], out["inverse_mass"], out["position"][:, -1])
            if not args.no_sample:
                jobs.append((f"sample  {case}", vname, prog))
            loop = AdvanceLoop(mod, data, dtype, *adapted, transitions=transitions)
            print(f"compiled advance  {case:5s} {vname:8s} {loop.compile_s:6.1f} s", flush=True)
            jobs.append((f"advance {case}", vname, loop))
    if not args.no_blackjax and "es32" in args.cases.split(","):
        bj = BlackJAX(eight_schools())
        print(f"compiled blackjax es32 {bj.compile_s:6.1f} s", flush=True)
        jobs.append(("blackjax es32", "peer", bj))

    results = {(label, v): [] for label, v, _ in jobs}
    outputs = {}
    for label, v, fn in jobs:  # warm-up run (and the outputs to compare)
        outputs[(label, v)] = fn()[0]
    for _ in range(args.reps):
        for label, v, fn in jobs:
            wall, cpu, n_iter, _ = _time(fn)
            results[(label, v)].append((wall, cpu, n_iter))

    print(f"\n{'program':16s} {'variant':9s} {'iters':>7s} {'wall s':>8s} {'cpu s':>8s} "
          f"{'us/it wall':>10s} {'us/it cpu':>10s}")
    for (label, v), rows in results.items():
        wall = statistics.median(r[0] for r in rows)
        cpu = statistics.median(r[1] for r in rows)
        n = rows[0][2]
        print(f"{label:16s} {v:9s} {n:7d} {wall:8.3f} {cpu:8.3f} {1e6 * wall / n:10.2f} {1e6 * cpu / n:10.2f}")
    if args.baseline:
        print()
        for label, v, _ in jobs:
            if v == "current" and (label, "baseline") in outputs:
                print(f"{label:16s} max |current - baseline| = "
                      f"{_max_diff(outputs[(label, 'current')], outputs[(label, 'baseline')]):.3g}")


if __name__ == "__main__":
    main()
