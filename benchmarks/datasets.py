"""The benchmark datasets: a seeded synthetic grid over (J, true tau), plus eight schools.

Each synthetic dataset is drawn from the model itself with fixed truths:

    sigma_j ~ LogUniform(SIGMA_LOW, SIGMA_HIGH)   (5 to 20, the spread of the eight schools'
                                                    standard errors, 9 to 18, widened a little)
    theta_j ~ Normal(MU_TRUE, tau)                 MU_TRUE = 5
    y_j     ~ Normal(theta_j, sigma_j)

The grid's true tau values are 0.1 (almost complete pooling: the funnel, where the
non-centered parametrization wins), 2 (the eight schools regime: tau well below the
sigma_j) and 20 (weak pooling: the data identify every theta_j and the centered
parametrization wins). J is 8, 64 or 512.

Every dataset has its own seed, derived from (base seed, J, tau index, replicate), so a
dataset does not change when the grid around it does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hnnjax.data import GroupData
from hnnjax.datasets import eight_schools

__all__ = [
    "MU_TRUE", "SIGMA_LOW", "SIGMA_HIGH", "Dataset", "synthetic", "grid", "eight_schools_dataset",
]

MU_TRUE = 5.0
SIGMA_LOW, SIGMA_HIGH = 5.0, 20.0
GRID_J = (8, 64, 512)
GRID_TAU = (0.1, 2.0, 20.0)


@dataclass(frozen=True)
class Dataset:
    """One benchmark dataset: a name, its grid cell, the data, and the truths (if synthetic)."""

    name: str
    cell: str
    data: GroupData
    J: int
    tau_true: float | None = None
    mu_true: float | None = None
    seed: int | None = None
    theta_true: np.ndarray | None = field(default=None, repr=False, compare=False)

    def describe(self) -> dict:
        return {
            "name": self.name, "cell": self.cell, "J": self.J, "tau_true": self.tau_true,
            "mu_true": self.mu_true, "seed": self.seed,
        }


def cell_name(J: int, tau: float) -> str:
    return f"J={J},tau={tau:g}"


def synthetic(J: int, tau: float, replicate: int = 0, seed: int = 2024,
              mu: float = MU_TRUE) -> Dataset:
    """One synthetic dataset from the grid's generator (see the module docstring)."""
    tau_index = int(round(np.log10(tau) * 1000))  # a stable integer for any tau > 0
    ss = np.random.SeedSequence([seed, J, tau_index & 0xFFFFFFFF, replicate])
    rng = np.random.default_rng(ss)
    sigma = np.exp(rng.uniform(np.log(SIGMA_LOW), np.log(SIGMA_HIGH), J))
    theta = rng.normal(mu, tau, J)
    y = rng.normal(theta, sigma)
    ds_seed = int(ss.generate_state(1)[0])
    return Dataset(
        name=f"{cell_name(J, tau)}#{replicate}", cell=cell_name(J, tau), data=GroupData(y, sigma),
        J=J, tau_true=float(tau), mu_true=float(mu), seed=ds_seed, theta_true=theta,
    )


def grid(J_values=GRID_J, tau_values=GRID_TAU, per_cell: int = 20, seed: int = 2024) -> list[Dataset]:
    """All datasets of the grid, cell by cell (J outer, tau inner), `per_cell` in each."""
    return [
        synthetic(J, tau, r, seed)
        for J in J_values for tau in tau_values for r in range(per_cell)
    ]


def eight_schools_dataset() -> Dataset:
    return Dataset(name="eight_schools", cell="eight_schools", data=eight_schools(), J=8)
