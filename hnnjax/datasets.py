"""Built-in and synthetic datasets.

`eight_schools()` is the SAT coaching data of Rubin (1981), BDA3 table 5.2.
"""

from __future__ import annotations

import numpy as np

from .data import GroupData

__all__ = ["eight_schools", "simulate"]

EIGHT_SCHOOLS_Y = (28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0)
EIGHT_SCHOOLS_SIGMA = (15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0)


def eight_schools() -> GroupData:
    """The eight schools data: estimated coaching effects y and standard errors sigma, A-H."""
    return GroupData(EIGHT_SCHOOLS_Y, EIGHT_SCHOOLS_SIGMA, names=list("ABCDEFGH"))


def simulate(n_groups: int, mu: float, tau: float, sigma, seed: int = 0):
    """Data from fixed truths: theta_j ~ N(mu, tau), y_j ~ N(theta_j, sigma_j).

    `sigma` is a scalar or a length-`n_groups` array. Returns (GroupData, theta_true).
    Seed 001's study uses n_groups=8, mu=5, tau=3.5, sigma=12.
    """
    rng = np.random.default_rng(seed)
    sig = np.broadcast_to(np.asarray(sigma, dtype=np.float64), (n_groups,))
    theta = rng.normal(mu, tau, n_groups)
    y = rng.normal(theta, sig)
    return GroupData(y, sig), theta
