"""ESS and R-hat from ONE estimator for every sampler, and the figures of one run.

The estimator is `hnnjax.diagnostics` (rank-normalized bulk/tail ESS and R-hat, Vehtari et
al. 2021) when that module exists; until then ArviZ's implementation of the same
estimators stands in. `estimator_name()` says which one a results file used; every sampler
of a run goes through the same one, so the comparison is fair either way.

Parameters compared: mu, tau and every theta_j (the J real groups, never padding).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "RunOutput", "estimator_name", "ess_bulk", "ess_tail", "rhat", "param_matrix",
    "run_figures", "useful_step_share",
]


@dataclass
class RunOutput:
    """What a runner hands back from one warm or cold call.

    draws: "mu", "tau" -> (chains, draws); "theta" -> (chains, draws, J); numpy.
    n_grad_evals: gradient evaluations over warmup + sampling, all chains (None if unknown;
        0 for the exact sampler).
    divergences: divergent transitions in the sampling phase, all chains.
    wall_s: wall time of the call as the user sees it, to draws on the host.
    steps / warmup_steps: integration steps per iteration, (chains, iterations), if known.
    extra: runner-specific figures (e.g. hnnjax's own timing).
    """

    draws: dict
    n_grad_evals: int | None
    divergences: int | None
    wall_s: float
    steps: np.ndarray | None = None
    warmup_steps: np.ndarray | None = None
    extra: dict = field(default_factory=dict)


def _hnnjax_diagnostics():
    try:
        from hnnjax import diagnostics  # noqa: WPS433
    except ImportError:
        return None
    if all(hasattr(diagnostics, n) for n in ("ess_bulk", "ess_tail", "rhat")):
        return diagnostics
    return None


def estimator_name() -> str:
    return "hnnjax.diagnostics" if _hnnjax_diagnostics() is not None else "arviz"


def _arviz(x: np.ndarray, kind: str) -> np.ndarray:
    import arviz as az

    x = np.asarray(x, dtype=np.float64)
    lead = x.shape[:-2]
    flat = x.reshape((-1,) + x.shape[-2:])            # (P, C, D)
    arr = np.moveaxis(flat, 0, -1)                    # (C, D, P)
    ds = az.convert_to_dataset({"x": arr})
    if kind == "rhat":
        out = az.rhat(ds, method="rank")["x"].values
    else:
        out = az.ess(ds, method=kind)["x"].values
    return np.asarray(out, dtype=np.float64).reshape(lead)


def ess_bulk(x) -> np.ndarray:
    """Bulk ESS of x shaped (..., chains, draws); returns (...)."""
    d = _hnnjax_diagnostics()
    return np.asarray(d.ess_bulk(np.asarray(x))) if d else _arviz(x, "bulk")


def ess_tail(x) -> np.ndarray:
    d = _hnnjax_diagnostics()
    return np.asarray(d.ess_tail(np.asarray(x))) if d else _arviz(x, "tail")


def rhat(x) -> np.ndarray:
    d = _hnnjax_diagnostics()
    return np.asarray(d.rhat(np.asarray(x))) if d else _arviz(x, "rhat")


def param_matrix(draws: dict) -> tuple[np.ndarray, list[str]]:
    """Stack mu, tau, theta_1..theta_J into (P, chains, draws) with their names."""
    mu = np.asarray(draws["mu"], dtype=np.float64)
    tau = np.asarray(draws["tau"], dtype=np.float64)
    theta = np.asarray(draws["theta"], dtype=np.float64)
    if mu.ndim != 2 or theta.ndim != 3 or theta.shape[:2] != mu.shape or tau.shape != mu.shape:
        raise ValueError(
            f"draws: expected mu, tau (chains, draws) and theta (chains, draws, J); got "
            f"{mu.shape}, {tau.shape}, {theta.shape}"
        )
    x = np.concatenate([mu[None], tau[None], np.moveaxis(theta, -1, 0)], axis=0)
    names = ["mu", "tau"] + [f"theta[{j}]" for j in range(theta.shape[-1])]
    return x, names


def _num(v):
    """A JSON-friendly float: None for NaN/inf."""
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def run_figures(out: RunOutput) -> dict:
    """The per-run figures: ESS, R-hat, ESS/s, ESS per gradient, gradients/s, divergences."""
    x, names = param_matrix(out.draws)
    bulk, tail, rh = ess_bulk(x), ess_tail(x), rhat(x)
    i_min = int(np.nanargmin(bulk)) if np.isfinite(bulk).any() else 0
    min_bulk = float(np.nanmin(bulk)) if np.isfinite(bulk).any() else float("nan")
    min_tail = float(np.nanmin(tail)) if np.isfinite(tail).any() else float("nan")
    max_rhat = float(np.nanmax(rh)) if np.isfinite(rh).any() else float("nan")
    g = out.n_grad_evals
    fig = {
        "wall_s": _num(out.wall_s),
        "min_ess_bulk": _num(min_bulk),
        "min_ess_tail": _num(min_tail),
        "min_ess_bulk_param": names[i_min],
        "ess_bulk_mu": _num(bulk[0]),
        "ess_bulk_tau": _num(bulk[1]),
        "max_rhat": _num(max_rhat),
        "ess_per_s": _num(min_bulk / out.wall_s) if out.wall_s > 0 else None,
        "n_grad_evals": None if g is None else int(g),
        "ess_per_grad": _num(min_bulk / g) if g else None,
        "grads_per_s": _num(g / out.wall_s) if g and out.wall_s > 0 else None,
        "divergences": None if out.divergences is None else int(out.divergences),
        "chains": int(x.shape[1]),
        "draws": int(x.shape[2]),
    }
    for label, st in (("", out.steps), ("_warmup", out.warmup_steps)):
        if st is not None and np.ndim(st) == 2 and np.size(st):
            st = np.asarray(st, dtype=np.float64)
            fig[f"useful_step_share{label}"] = _num(useful_step_share(st))
            fig[f"mean_steps{label}"] = _num(st.mean())
            fig[f"mean_max_steps{label}"] = _num(st.max(axis=0).mean())
    for k, v in out.extra.items():
        fig[k] = _num(v) if isinstance(v, (int, float, np.floating, np.integer)) else v
    return fig


def useful_step_share(steps) -> float:
    """Share of lock-step leapfrog work that some lane needed.

    steps: (lanes, iterations) integration steps of each lane at each iteration. With the
    lanes vmapped, every iteration costs max over lanes of the steps, for every lane:

        sum_{lanes, iterations} steps / (iterations * lanes * mean_t max_lanes steps_t)
      = sum steps / sum_t (lanes * max_l steps[l, t])
    """
    s = np.asarray(steps, dtype=np.float64)
    if s.ndim != 2 or s.size == 0:
        raise ValueError(f"steps: expected (lanes, iterations), got shape {s.shape}")
    denom = s.shape[0] * s.max(axis=0).sum()
    return float(s.sum() / denom) if denom > 0 else float("nan")
