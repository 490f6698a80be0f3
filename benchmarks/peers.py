"""The peers: BlackJAX NUTS and NumPyro NUTS on exactly the model hnnjax samples.

Model (both parametrizations, default prior of `hnnjax.Prior.default()`):

    mu ~ Normal(0, 5),  tau ~ HalfCauchy(5),  theta_j ~ Normal(mu, tau),  y_j ~ Normal(theta_j, sigma_j)

on the unconstrained position [mu, log tau, z] with z = eta (non-centered, theta = mu + tau
* eta) or z = theta (centered); `logdensity` below is the same formula as
`hnnjax.model.logdensity_*` (checked in tests/test_benchmarks_smoke.py), written here
without hnnjax so that the fresh-process runs of the peers never import hnnjax (nothing of
hnnjax's, such as its already-loaded modules, then helps the peers).

Both peers: diagonal mass matrix, Stan-style windowed adaptation of step size and mass
matrix per chain, target acceptance as set, max tree depth 10, initial positions uniform in
(-2, 2) on the unconstrained space, chains vectorized in one compiled program.

- BlackJAX: `blackjax.window_adaptation(blackjax.nuts, ...)` and a `lax.scan` of
  `blackjax.nuts(...).step`, vmapped over chains, the whole of it inside one `jax.jit`,
  compiled ahead of time (`jax.jit(f).lower(...).compile()`), so its compile time is
  measured directly and its wall time contains no compilation.
- NumPyro: `MCMC(NUTS(model), chain_method="vectorized", jit_model_args=True)`, one
  `mcmc.run()` per fit, told (through MCMC's private `_set_collection_params`) to collect
  the warmup iterations too, so that their integration steps are counted; the warmup draws
  are dropped afterwards. Its compile time is the JAX compile seconds of the first call.

Data are arguments of the compiled programs (not constants), so one program serves every
dataset of the same J, as hnnjax's does.
"""

from __future__ import annotations

import math
import time
from functools import partial

import numpy as np

from .metrics import RunOutput
from .runner import Runner, Settings, Unavailable

__all__ = [
    "logdensity", "BlackJAXNUTS", "NumPyroNUTS", "blackjax_program", "numpyro_model",
]

PRIOR_MU_LOC, PRIOR_MU_SCALE, PRIOR_TAU_SCALE = 0.0, 5.0, 5.0
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def logdensity(position, y, sigma, parametrization: str = "noncentered"):
    """log p(mu, log tau, z | y) for the default prior, with normalizing constants."""
    import jax.numpy as jnp

    mu, log_tau, z = position[0], position[1], position[2:]
    tau = jnp.exp(log_tau)
    zm = (mu - PRIOR_MU_LOC) / PRIOR_MU_SCALE
    lp = -0.5 * zm * zm - math.log(PRIOR_MU_SCALE) - _HALF_LOG_2PI
    r = tau / PRIOR_TAU_SCALE
    lp = lp + math.log(2.0 / math.pi) - math.log(PRIOR_TAU_SCALE) - jnp.log1p(r * r) + log_tau
    if parametrization == "noncentered":
        theta = mu + tau * z
        lp = lp + jnp.sum(-0.5 * z * z - _HALF_LOG_2PI)
    elif parametrization == "centered":
        theta = z
        u = (z - mu) / tau
        lp = lp + jnp.sum(-0.5 * u * u - log_tau - _HALF_LOG_2PI)
    else:
        raise ValueError(f"parametrization: expected noncentered or centered, got {parametrization!r}")
    w = (y - theta) / sigma
    return lp + jnp.sum(-0.5 * w * w - jnp.log(sigma) - _HALF_LOG_2PI)


def _constrain(position, parametrization):
    import jax.numpy as jnp

    mu, tau, z = position[..., 0], jnp.exp(position[..., 1]), position[..., 2:]
    theta = mu[..., None] + tau[..., None] * z if parametrization == "noncentered" else z
    return mu, tau, theta


# --------------------------------------------------------------------------- BlackJAX


def blackjax_program(parametrization: str, settings: Settings, warmup_info: bool = True):
    """program(key, y, sigma) -> dict of per-chain outputs; chains vmapped; jit it yourself.

    Outputs: mu, tau (chains, draws), theta (chains, draws, J), diverging, n_steps,
    accept (chains, draws) and warmup_n_steps (chains, warmup) when `warmup_info`.
    """
    import blackjax
    import jax
    from blackjax.adaptation.base import get_filter_adapt_info_fn

    s = settings
    keep = {"num_integration_steps"} if warmup_info else set()

    def one_chain(key, y, sigma):
        logdensity_fn = partial(logdensity, y=y, sigma=sigma, parametrization=parametrization)
        k_init, k_warm, k_draw = jax.random.split(key, 3)
        x0 = jax.random.uniform(k_init, (2 + y.shape[0],), y.dtype, minval=-2.0, maxval=2.0)
        adapt = blackjax.window_adaptation(
            blackjax.nuts, logdensity_fn, is_mass_matrix_diagonal=True,
            target_acceptance_rate=s.target_accept,
            adaptation_info_fn=get_filter_adapt_info_fn(info_keys=keep),
            max_num_doublings=s.max_tree_depth,
        )
        (state, params), winfo = adapt.run(k_warm, x0, num_steps=s.warmup)
        params = dict(params)
        params.setdefault("max_num_doublings", s.max_tree_depth)
        nuts = blackjax.nuts(logdensity_fn, **params)

        def step(st, k):
            st, info = nuts.step(k, st)
            return st, (st.position, info.is_divergent, info.num_integration_steps,
                        info.acceptance_rate)

        _, (pos, div, nsteps, acc) = jax.lax.scan(step, state, jax.random.split(k_draw, s.draws))
        mu, tau, theta = _constrain(pos, parametrization)
        out = {"mu": mu, "tau": tau, "theta": theta, "diverging": div, "n_steps": nsteps,
               "accept": acc}
        if warmup_info:
            out["warmup_n_steps"] = winfo.info.num_integration_steps
        return out

    def program(key, y, sigma):
        keys = jax.random.split(key, s.chains)
        return jax.vmap(one_chain, in_axes=(0, None, None))(keys, y, sigma)

    return program


class _PeerNUTS(Runner):
    """A peer library's NUTS: its name, its availability check and its data arrays."""

    family = ""  # the library's module name
    library = ""  # as printed
    kernel = "nuts"

    def __init__(self, settings: Settings, parametrization: str = "noncentered"):
        super().__init__(settings)
        self.parametrization = parametrization
        self.name = f"{self.family}-nuts-{'nc' if parametrization == 'noncentered' else 'c'}"
        self._compiled = {}  # per data shape: the compiled program (BlackJAX) or MCMC object (NumPyro)

    @classmethod
    def check_available(cls):
        import importlib

        try:
            importlib.import_module(cls.family)
        except ImportError as exc:
            raise Unavailable(f"{cls.library} is not installed ({exc}); skipping the {cls.library} peer") from None

    def _args(self, data):
        import jax
        import jax.numpy as jnp

        dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
        return jnp.asarray(data.y, dtype), jnp.asarray(data.sigma, dtype)


class BlackJAXNUTS(_PeerNUTS):
    family = "blackjax"
    library = "BlackJAX"

    def compile(self, data) -> float:
        import jax

        key = self.shape_key(data)
        y, sigma = self._args(data)
        t0 = time.perf_counter()
        prog = blackjax_program(self.parametrization, self.settings)
        compiled = jax.jit(prog).lower(jax.random.key(0), y, sigma).compile()
        dt = time.perf_counter() - t0
        self._compiled[key] = compiled
        return dt

    def run(self, data, seed: int) -> RunOutput:
        import jax

        key = self.shape_key(data)
        if key not in self._compiled:
            self.compile(data)
        y, sigma = self._args(data)
        rng = jax.random.key(seed)
        t0 = time.perf_counter()
        out = self._compiled[key](rng, y, sigma)
        out = jax.device_get(jax.block_until_ready(out))
        wall = time.perf_counter() - t0
        out = {k: np.asarray(v) for k, v in out.items()}
        steps, wsteps = out["n_steps"], out["warmup_n_steps"]
        return RunOutput(
            draws={"mu": out["mu"], "tau": out["tau"], "theta": out["theta"]},
            n_grad_evals=int(steps.sum() + wsteps.sum()),
            divergences=int(out["diverging"].sum()),
            wall_s=wall, steps=steps, warmup_steps=wsteps,
            extra={"mean_accept": float(out["accept"].mean())},
        )


# --------------------------------------------------------------------------- NumPyro


def numpyro_model(parametrization: str):
    """The eight-schools model in NumPyro, same prior as hnnjax's default."""
    import numpyro
    import numpyro.distributions as dist

    def noncentered(sigma, y=None):
        mu = numpyro.sample("mu", dist.Normal(PRIOR_MU_LOC, PRIOR_MU_SCALE))
        tau = numpyro.sample("tau", dist.HalfCauchy(PRIOR_TAU_SCALE))
        with numpyro.plate("J", sigma.shape[0]):
            eta = numpyro.sample("eta", dist.Normal(0.0, 1.0))
            theta = numpyro.deterministic("theta", mu + tau * eta)
            numpyro.sample("obs", dist.Normal(theta, sigma), obs=y)

    def centered(sigma, y=None):
        mu = numpyro.sample("mu", dist.Normal(PRIOR_MU_LOC, PRIOR_MU_SCALE))
        tau = numpyro.sample("tau", dist.HalfCauchy(PRIOR_TAU_SCALE))
        with numpyro.plate("J", sigma.shape[0]):
            theta = numpyro.sample("theta", dist.Normal(mu, tau))
            numpyro.sample("obs", dist.Normal(theta, sigma), obs=y)

    if parametrization == "noncentered":
        return noncentered
    if parametrization == "centered":
        return centered
    raise ValueError(f"parametrization: expected noncentered or centered, got {parametrization!r}")


class NumPyroNUTS(_PeerNUTS):
    family = "numpyro"
    library = "NumPyro"

    def _get(self, key):
        from numpyro.infer import MCMC, NUTS

        if key not in self._compiled:
            s = self.settings
            kernel = NUTS(numpyro_model(self.parametrization), target_accept_prob=s.target_accept,
                          dense_mass=False, max_tree_depth=s.max_tree_depth)
            self._compiled[key] = MCMC(kernel, num_warmup=s.warmup, num_samples=s.draws,
                                   num_chains=s.chains, chain_method="vectorized",
                                   progress_bar=False, jit_model_args=True)
        return self._compiled[key]

    def run(self, data, seed: int) -> RunOutput:
        import jax

        y, sigma = self._args(data)
        mcmc = self._get(self.shape_key(data))
        s = self.settings
        W, D = s.warmup, s.draws
        fields = ("num_steps", "accept_prob")
        t0 = time.perf_counter()
        if hasattr(mcmc, "_set_collection_params"):
            # One MCMC.run (one compiled loop, as a user's call), collecting the warmup
            # iterations too so that their integration steps are counted.
            mcmc._set_collection_params(0, W + D, W + D, "warmup+sample")
            mcmc.run(jax.random.PRNGKey(seed), sigma, y=y, extra_fields=fields)
        else:  # pragma: no cover - NumPyro without the private hook: two calls
            k_warm, k_draw = jax.random.split(jax.random.PRNGKey(seed))
            mcmc.warmup(k_warm, sigma, y=y, collect_warmup=True, extra_fields=fields)
            w_extra = mcmc.get_extra_fields(group_by_chain=True)
            w_samples = mcmc.get_samples(group_by_chain=True)
            mcmc.run(k_draw, sigma, y=y, extra_fields=fields)
        samples = mcmc.get_samples(group_by_chain=True)
        extra = mcmc.get_extra_fields(group_by_chain=True)
        samples, extra = jax.device_get(jax.block_until_ready((samples, extra)))
        wall = time.perf_counter() - t0
        samples = {k: np.asarray(samples[k]) for k in ("mu", "tau", "theta")}
        extra = {k: np.asarray(v) for k, v in extra.items()}
        if samples["mu"].shape[1] == W + D:
            wsteps = extra["num_steps"][:, :W]
            samples = {k: v[:, W:] for k, v in samples.items()}
            extra = {k: v[:, W:] for k, v in extra.items()}
        else:  # pragma: no cover
            wsteps = np.asarray(jax.device_get(w_extra["num_steps"]))
        steps = extra["num_steps"]
        return RunOutput(
            draws=samples,
            n_grad_evals=int(steps.sum() + wsteps.sum()),
            divergences=int(extra["diverging"].sum()),
            wall_s=wall, steps=steps, warmup_steps=wsteps,
            extra={"mean_accept": float(extra["accept_prob"].mean())},
        )


PEERS = {
    "blackjax-nuts-nc": partial(BlackJAXNUTS, parametrization="noncentered"),
    "blackjax-nuts-c": partial(BlackJAXNUTS, parametrization="centered"),
    "numpyro-nuts-nc": partial(NumPyroNUTS, parametrization="noncentered"),
    "numpyro-nuts-c": partial(NumPyroNUTS, parametrization="centered"),
}
