"""hnnjax's runners (NUTS and HMC, both parametrizations, the exact sampler) and the registry.

`make(name, settings)` builds any sampler of the suite by name:

    hnnjax-nuts-nc  hnnjax-nuts-c  hnnjax-hmc-nc  hnnjax-hmc-c   hnnjax.sample(...)
    hnnjax-nuts-nc-sync                                          ... driver="synchronized"
    exact                                                        hnnjax.exact (i.i.d. ceiling)
    blackjax-nuts-nc  blackjax-nuts-c  numpyro-nuts-nc  numpyro-nuts-c   (see peers.py)

A sampler that cannot run here (hnnjax.sample or hnnjax.exact not written yet, a peer not
installed) raises `Unavailable` from `check(name)`, and the suite skips it with the message.
"""

from __future__ import annotations

import time

import numpy as np

from .metrics import RunOutput
from .peers import PEERS
from .runner import Runner, Settings, Unavailable

__all__ = ["HnnjaxRunner", "ExactRunner", "SAMPLERS", "make", "check", "family"]


def _split_leading(a: np.ndarray, chains: int, draws: int) -> np.ndarray:
    """(n, ...) or (chains, draws, ...) -> (chains, draws, ...)."""
    a = np.asarray(a)
    if a.shape[:2] == (chains, draws):
        return a
    return a.reshape((chains, draws) + a.shape[1:])


class HnnjaxRunner(Runner):
    """`hnnjax.sample(data, parametrization, kernel, chains, warmup, draws, target_accept, seed)`."""

    family = "hnnjax"

    def __init__(self, settings: Settings, parametrization: str, kernel: str, driver: str | None = None):
        super().__init__(settings)
        self.parametrization = parametrization
        self.kernel = kernel
        self.driver = driver
        self.name = f"hnnjax-{kernel}-{'nc' if parametrization == 'noncentered' else 'c'}"
        if driver:
            self.name += f"-{driver[:4]}"

    @classmethod
    def check_available(cls):
        try:
            import hnnjax
        except ImportError as exc:  # pragma: no cover - the package is the repository
            raise Unavailable(f"hnnjax cannot be imported ({exc})") from None
        del hnnjax

    def shape_key(self, data):
        from hnnjax.data import bucket_size

        return bucket_size(data.J)

    def run(self, data, seed: int) -> RunOutput:
        import hnnjax

        s = self.settings
        t0 = time.perf_counter()
        kw = {"driver": self.driver} if self.driver else {}
        fit = hnnjax.sample(
            data, parametrization=self.parametrization, kernel=self.kernel, chains=s.chains,
            warmup=s.warmup, draws=s.draws, target_accept=s.target_accept, seed=seed, **kw,
        )
        draws = {k: np.asarray(fit.draws[k]) for k in ("mu", "tau", "theta")}
        wall = time.perf_counter() - t0
        stats = getattr(fit, "stats", {}) or {}
        wstats = getattr(fit, "warmup_stats", {}) or {}
        timing = getattr(fit, "timing", {}) or {}
        div = stats.get("diverging")
        extra = {}
        for k in ("compile_s", "run_s"):
            if k in timing:
                extra[f"hnnjax_{k}"] = float(timing[k])
        if "accept_stat" in stats:
            extra["mean_accept"] = float(np.mean(stats["accept_stat"]))
        if "tree_depth" in stats:
            extra["mean_tree_depth"] = float(np.mean(stats["tree_depth"]))
        steps = stats.get("n_steps")
        wsteps = wstats.get("n_steps")
        return RunOutput(
            draws=draws,
            n_grad_evals=getattr(fit, "n_grad_evals", None),
            divergences=None if div is None else int(np.sum(div)),
            wall_s=wall,
            # Hook for the lane-share figure: hnnjax's per-chain steps per iteration.
            steps=None if steps is None else np.asarray(steps),
            warmup_steps=None if wsteps is None else np.asarray(wsteps),
            extra=extra,
        )


class ExactRunner(Runner):
    """`hnnjax.exact.exact(data, prior).sample(n, seed)`: i.i.d. draws, the ESS/s ceiling.

    It draws chains * draws values, split into `chains` pseudo-chains for the estimators.
    """

    family = "exact"
    kernel = "exact"
    parametrization = "-"
    name = "exact"
    needs_gradients = False

    @classmethod
    def check_available(cls):
        HnnjaxRunner.check_available()

    def shape_key(self, data):
        from hnnjax.data import bucket_size

        return bucket_size(data.J)

    def run(self, data, seed: int) -> RunOutput:
        import importlib

        from hnnjax.model import Prior

        exact = importlib.import_module("hnnjax.exact").exact

        s = self.settings
        n = s.chains * s.draws
        t0 = time.perf_counter()
        out = exact(data, Prior.default()).sample(n, seed)
        out = {k: np.asarray(out[k]) for k in ("mu", "tau", "theta")}
        wall = time.perf_counter() - t0
        draws = {k: _split_leading(v, s.chains, s.draws) for k, v in out.items()}
        return RunOutput(draws=draws, n_grad_evals=0, divergences=0, wall_s=wall)


SAMPLERS = {
    "hnnjax-nuts-nc": lambda s: HnnjaxRunner(s, "noncentered", "nuts"),
    "hnnjax-nuts-c": lambda s: HnnjaxRunner(s, "centered", "nuts"),
    "hnnjax-hmc-nc": lambda s: HnnjaxRunner(s, "noncentered", "hmc"),
    "hnnjax-hmc-c": lambda s: HnnjaxRunner(s, "centered", "hmc"),
    # hnnjax's classic lock-step driver (as BlackJAX's vmapped NUTS), for the lanes figure
    "hnnjax-nuts-nc-sync": lambda s: HnnjaxRunner(s, "noncentered", "nuts", driver="synchronized"),
    "exact": lambda s: ExactRunner(s),
    **PEERS,
}

_CLASSES = {
    "hnnjax": HnnjaxRunner, "exact": ExactRunner,
}


def family(name: str) -> str:
    return name.split("-")[0]


def check(name: str) -> None:
    """Raise `Unavailable` (with the reason) if sampler `name` cannot run here."""
    if name not in SAMPLERS:
        raise ValueError(f"sampler: unknown {name!r}; known: {sorted(SAMPLERS)}")
    fam = family(name)
    if fam in _CLASSES:
        _CLASSES[fam].check_available()
    else:
        from .peers import BlackJAXNUTS, NumPyroNUTS

        {"blackjax": BlackJAXNUTS, "numpyro": NumPyroNUTS}[fam].check_available()


def make(name: str, settings: Settings) -> Runner:
    check(name)
    return SAMPLERS[name](settings)
