"""The runner interface every sampler implements, and the shared sampler settings.

A runner turns (GroupData, seed) into a `RunOutput` (draws of mu, tau, theta on the host,
gradient count, divergences, wall time). Runners keep their compiled programs between
calls, keyed by `shape_key(data)`, so the first call on a new shape is the cold call and
later calls are warm. A runner that can compile ahead of time (BlackJAX) says so with
`compile(data)` returning the seconds it took; the others return None and the measuring
code takes the compile time as first-call wall minus the median warm-call wall.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .metrics import RunOutput

__all__ = ["Settings", "Runner", "Unavailable", "RunOutput"]


@dataclass(frozen=True)
class Settings:
    """Sampler settings shared by every sampler of a run (the fairness contract)."""

    chains: int = 4
    warmup: int = 1000
    draws: int = 1000
    target_accept: float = 0.8
    max_tree_depth: int = 10          # BlackJAX and NumPyro default; hnnjax uses its own
    mass_matrix: str = "diagonal"

    def with_(self, **kw) -> "Settings":
        d = asdict(self)
        d.update(kw)
        return Settings(**d)

    def as_dict(self) -> dict:
        return asdict(self)


class Unavailable(Exception):
    """The sampler cannot run here (library missing, API not there yet); the message says why."""


class Runner:
    """Base class: subclasses set `name`, `family`, `parametrization`, `kernel`."""

    name = "runner"
    family = "?"
    parametrization = "noncentered"
    kernel = "nuts"
    needs_gradients = True

    def __init__(self, settings: Settings):
        self.settings = settings

    @classmethod
    def check_available(cls) -> None:
        """Raise `Unavailable` with a message if this runner cannot run in this process."""

    def shape_key(self, data) -> object:
        """Datasets with equal keys share one compiled program."""
        return int(data.J)

    def compile(self, data) -> float | None:
        """Compile ahead of time for data's shape; seconds taken, or None if not supported."""
        return None

    def run(self, data, seed: int) -> RunOutput:
        raise NotImplementedError

    def describe(self) -> dict:
        return {
            "name": self.name, "family": self.family, "parametrization": self.parametrization,
            "kernel": self.kernel,
        }
