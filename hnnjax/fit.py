"""The result of `hnnjax.sample`: draws, sampler statistics, adapted settings, summaries."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import diagnostics
from .data import GroupData
from .model import Prior
from .table import Table

__all__ = ["Fit", "summary_table"]

STAT_NAMES = ("diverging", "tree_depth", "n_steps", "accept_stat", "energy", "step_size")


def _scalar_parameters(draws: dict, names: tuple[str, ...]):
    """(labels, array (P, chains, draws)) for mu, tau and each theta_j."""
    labels, rows = ["mu", "tau"], [draws["mu"], draws["tau"]]
    theta = draws["theta"]
    for j in range(theta.shape[-1]):
        labels.append(f"theta[{names[j]}]")
        rows.append(theta[..., j])
    return labels, np.stack(rows)


def summary_table(draws: dict, names: tuple[str, ...]) -> Table:
    """Mean, sd, 5/50/95% quantiles, MCSE of the mean, bulk/tail ESS and R-hat per scalar."""
    import jax.numpy as jnp

    labels, x = _scalar_parameters(draws, names)
    stats = diagnostics.summarize(jnp.asarray(x))
    order = ("mean", "sd", "q5", "q50", "q95", "mcse_mean", "ess_bulk", "ess_tail", "r_hat")
    return Table(labels, {k: np.asarray(stats[k]) for k in order})


@dataclass
class Fit:
    """Draws and diagnostics of one model's fit.

    draws: "mu", "tau" (chains, draws); "theta" (chains, draws, J); "eta" (non-centered).
    stats: Stan's sampler parameters after warmup, each (chains, draws):
        "diverging", "tree_depth", "n_steps", "accept_stat", "energy", "step_size".
    warmup_stats: the same during warmup, (chains, warmup).
    divergence_position: (chains, draws, 2 + J) unconstrained position [mu, log tau, z]
        where each divergent transition's trajectory diverged (zeros elsewhere).
    """

    draws: dict
    stats: dict
    warmup_stats: dict
    divergence_position: np.ndarray
    step_size: np.ndarray
    inverse_mass_matrix: np.ndarray
    data: GroupData
    prior: Prior
    parametrization: str
    kernel: Any
    seed: int
    timing: dict
    config: Any = field(repr=False, default=None)

    @property
    def chains(self) -> int:
        return self.draws["mu"].shape[0]

    @property
    def num_draws(self) -> int:
        return self.draws["mu"].shape[1]

    @property
    def divergences(self) -> int:
        """Number of divergent transitions after warmup."""
        return int(self.stats["diverging"].sum())

    @property
    def n_grad_evals(self) -> int:
        """Gradient evaluations of warmup and sampling, all chains (heuristic steps excluded)."""
        return int(self.stats["n_steps"].sum() + self.warmup_stats["n_steps"].sum())

    def summary(self) -> Table:
        return summary_table(self.draws, self.data.names)

    def ebfmi(self) -> np.ndarray:
        """E-BFMI per chain (Betancourt 2016); values below 0.3 flag poor energy exploration."""
        import jax.numpy as jnp

        return np.asarray(diagnostics.ebfmi(jnp.asarray(self.stats["energy"])))

    def divergent_points(self) -> dict:
        """Where the divergent trajectories diverged: mu, log_tau and z (theta or eta)."""
        mask = self.stats["diverging"].astype(bool)
        pos = self.divergence_position[mask]
        return {"mu": pos[:, 0], "log_tau": pos[:, 1], "z": pos[:, 2:]}

    def to_arviz(self):
        """An `arviz.InferenceData` with posterior and sample_stats (needs the arviz extra)."""
        import arviz as az

        posterior = {k: v for k, v in self.draws.items()}
        stats = {k: v for k, v in self.stats.items()}
        stats["diverging"] = stats["diverging"].astype(bool)
        dims = {"theta": ["school"], "eta": ["school"]}
        return az.from_dict(
            posterior=posterior,
            sample_stats=stats,
            coords={"school": list(self.data.names)},
            dims=dims,
        )

    def __str__(self) -> str:
        head = (
            f"hnnjax fit: {self.parametrization} {getattr(self.kernel, 'name', self.kernel)}, "
            f"{self.chains} chains x {self.num_draws} draws, J={self.data.J}, {self.prior.describe()}\n"
            f"divergences: {self.divergences}, step size: {np.round(self.step_size, 3).tolist()}\n"
        )
        return head + str(self.summary())
