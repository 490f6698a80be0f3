"""hnnjax: a JAX sampling engine for hierarchical normal-normal models."""

from . import datasets
from .data import Data, GroupData, bucket_size
from .model import Flat, HalfCauchy, HalfNormal, Normal, Prior

__all__ = [
    "Data", "GroupData", "bucket_size", "datasets",
    "Prior", "Normal", "Flat", "HalfCauchy", "HalfNormal",
]
__version__ = "0.1.0"
