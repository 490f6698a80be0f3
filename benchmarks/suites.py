"""The settings of the smoke, quick and full suites.

Within a section every sampler runs with the same `Settings` (chains, warmup, draws,
target acceptance, diagonal mass matrix); sections may differ from one another, and each
section's settings are written into the results file next to its figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .runner import Settings

__all__ = ["Suite", "SUITES", "HEADLINE_SAMPLERS", "get"]

HNNJAX_ALL = ("hnnjax-nuts-nc", "hnnjax-nuts-c", "hnnjax-hmc-nc", "hnnjax-hmc-c")
HEADLINE_SAMPLERS = HNNJAX_ALL + ("blackjax-nuts-nc", "blackjax-nuts-c", "numpyro-nuts-nc", "exact")
# The sampler pairs whose ESS/s ratio each report states (hnnjax first).
RATIO_PAIRS = (
    ("hnnjax-nuts-nc", "blackjax-nuts-nc"),
    ("hnnjax-nuts-nc", "numpyro-nuts-nc"),
    ("hnnjax-nuts-c", "blackjax-nuts-c"),
    ("hnnjax-nuts-c", "numpyro-nuts-c"),
)


@dataclass(frozen=True)
class Suite:
    name: str
    # headline: eight schools with every sampler, `repeats` warm runs each (different seeds)
    headline: Settings = Settings()
    headline_repeats: int = 3
    headline_samplers: tuple = HEADLINE_SAMPLERS
    # grid: synthetic datasets, one warm run per dataset; cell figure = median over datasets
    grid: Settings = Settings()
    grid_J: tuple = (8, 64, 512)
    grid_tau: tuple = (0.1, 2.0, 20.0)
    grid_per_cell: int = 20
    grid_samplers: tuple = ("hnnjax-nuts-nc", "hnnjax-nuts-c", "blackjax-nuts-nc",
                            "blackjax-nuts-c", "numpyro-nuts-nc", "numpyro-nuts-c", "exact")
    # scaling in J (one synthetic dataset per J, true tau `scale_tau`) and in chains (eight schools)
    scale: Settings = Settings()
    scale_J: tuple = (8, 64, 512, 4096)
    scale_tau: float = 2.0
    scale_J_samplers: tuple = ("hnnjax-nuts-nc", "blackjax-nuts-nc", "numpyro-nuts-nc", "exact")
    scale_chains: tuple = (1, 4, 16, 64, 256, 1024)
    scale_chains_samplers: tuple = ("hnnjax-nuts-nc", "blackjax-nuts-nc", "numpyro-nuts-nc")
    # useful-step share of vmapped NUTS (BlackJAX lanes; hnnjax through its n_steps hook)
    lanes: tuple = (4, 64, 1024)
    lanes_samplers: tuple = ("blackjax-nuts-nc", "hnnjax-nuts-nc")
    # time to result from a fresh process
    fresh: bool = True
    fresh_samplers: tuple = ("hnnjax", "hnnjax", "blackjax", "numpyro")
    fresh_rounds: int = 5  # rounds of those processes; the report takes the median ratio
    sections: tuple = ("headline", "grid", "scaling", "lanes", "fresh")
    notes: tuple = field(default_factory=tuple)


FULL = Suite(name="full", headline_repeats=5,
             headline_samplers=HEADLINE_SAMPLERS + ("numpyro-nuts-c",),
             lanes_samplers=("blackjax-nuts-nc", "hnnjax-nuts-nc", "hnnjax-nuts-nc-sync"))

QUICK = Suite(
    name="quick",
    headline_repeats=5,  # hnnjax's runs last ~0.05 s: 5 runs damp the machine's outliers
    headline_samplers=HNNJAX_ALL + ("blackjax-nuts-nc", "numpyro-nuts-nc", "exact"),
    grid=Settings(chains=4, warmup=500, draws=500),
    grid_per_cell=1,
    grid_samplers=("hnnjax-nuts-nc", "blackjax-nuts-nc", "exact"),
    # scaling in J = the grid's tau = 2 cells (same settings, same datasets: reused, not re-run)
    scale=Settings(chains=4, warmup=500, draws=500),
    scale_J=(8, 64, 512),
    scale_J_samplers=("hnnjax-nuts-nc", "blackjax-nuts-nc", "exact"),
    scale_chains=(4, 64),
    scale_chains_samplers=("hnnjax-nuts-nc", "blackjax-nuts-nc"),
    lanes=(4, 64),
    fresh_samplers=("hnnjax", "hnnjax", "blackjax"),
    fresh_rounds=3,
    notes=("quick suite: grid, scaling and lanes run 4 chains x (500 + 500) (the headline runs "
           "1000 + 1000), 1 dataset per grid cell, non-centered samplers only in the grid, J up to "
           "512 and chains 4 and 64 only, no NumPyro fresh-process run; the full suite has the rest",),
)

SMOKE = Suite(
    name="smoke",
    headline=Settings(chains=2, warmup=100, draws=100),
    headline_repeats=1,
    headline_samplers=("hnnjax-nuts-nc", "blackjax-nuts-nc", "numpyro-nuts-nc", "exact"),
    grid=Settings(chains=2, warmup=100, draws=100),
    grid_J=(8,),
    grid_tau=(2.0,),
    grid_per_cell=1,
    grid_samplers=("hnnjax-nuts-nc", "blackjax-nuts-nc", "exact"),
    scale=Settings(chains=2, warmup=100, draws=100),
    scale_J=(8,),
    scale_J_samplers=("hnnjax-nuts-nc", "blackjax-nuts-nc"),
    scale_chains=(2,),
    scale_chains_samplers=("hnnjax-nuts-nc", "blackjax-nuts-nc"),
    lanes=(2,),
    fresh=False,
    notes=("smoke suite: tiny settings to exercise the code paths; its figures mean nothing",),
)

SUITES = {"full": FULL, "quick": QUICK, "smoke": SMOKE}


def get(name: str) -> Suite:
    if name not in SUITES:
        raise ValueError(f"suite: expected one of {sorted(SUITES)}, got {name!r}")
    return SUITES[name]
