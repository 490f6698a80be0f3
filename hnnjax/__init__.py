"""hnnjax: a JAX sampling engine for hierarchical normal-normal models."""

from . import datasets, diagnostics
from .data import Data, GroupData, bucket_size
from .devices import use_cpu_cores
from .exact import exact
from .fit import Fit
from .chees import ChEES
from .hmc import HMC
from .model import Flat, HalfCauchy, HalfNormal, Normal, Prior
from .nuts import NUTS
from .sampler import sample
from .table import Table

__all__ = [
    "sample", "exact", "Fit", "Table", "NUTS", "HMC", "ChEES", "use_cpu_cores",
    "Data", "GroupData", "bucket_size", "datasets", "diagnostics",
    "Prior", "Normal", "Flat", "HalfCauchy", "HalfNormal",
]
__version__ = "0.1.0"
