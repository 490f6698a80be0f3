"""Group-level data for the normal-normal model: validation, padding, loaders.

One model's data is J pairs (y_j, sigma_j): an estimate and its known standard error
(BDA3 section 5.5). `GroupData` is the validated host-side container; `Data` is the
array triple (y, sigma, mask) padded to a bucket size that the samplers take as a jit
argument, so one compiled program serves every dataset of the same padded shape.

Validation happens here, outside jit, and raises `ValueError` naming the field and the
index of the first offending entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np

__all__ = ["GroupData", "Data", "bucket_size", "stack"]


class Data(NamedTuple):
    """Padded arrays for one model (shape (J_pad,)) or a batch of models (shape (M, J_pad)).

    Padded entries have y = 0, sigma = 1 and mask = 0; the log densities multiply every
    per-group term by the mask, so padding contributes nothing (and no NaN).
    """

    y: np.ndarray
    sigma: np.ndarray
    mask: np.ndarray


def bucket_size(n_groups: int) -> int:
    """The padded group count used for a model with `n_groups` groups.

    A ladder of 8, 12, 16, 24, 32, 48, ... (powers of two and 1.5 times powers of two)
    bounds both the padding (the padded size is below 1.5 J for J > 8) and the number
    of compiled shapes.
    It depends on J alone, so a model's padded shape, and therefore its draws, never
    depend on which other models share its batch.
    """
    if n_groups < 1:
        raise ValueError(f"n_groups must be >= 1, got {n_groups}")
    size = 8
    while size < n_groups:
        # 2^k -> 1.5 * 2^k -> 2^(k+1)
        size = size + size // 2 if (size & (size - 1)) == 0 else size + size // 3
    return size


def _as_float_array(values, field: str) -> np.ndarray:
    if isinstance(values, (str, bytes)):
        raise ValueError(f"{field}: expected a sequence of numbers, got a string")
    try:
        arr = np.asarray(values)
    except Exception as exc:  # ragged nested input and the like
        raise ValueError(f"{field}: could not be read as a 1-D array of numbers ({exc})") from exc
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ValueError(f"{field}: expected a 1-D sequence, got shape {arr.shape}")
    if arr.dtype.kind in "iuf":
        return arr.astype(np.float64)
    # Mixed input: numpy would turn [1.0, "a"] into strings, so inspect the original items.
    items = list(values) if not isinstance(values, np.ndarray) else arr.tolist()
    out = np.empty(len(items), np.float64)
    for i, v in enumerate(items):
        if v is None or isinstance(v, (str, bytes, bool, np.bool_)):
            raise ValueError(f"{field}[{i}]: non-numeric value {v!r}")
        try:
            out[i] = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"{field}[{i}]: non-numeric value {v!r}") from None
    return out


def _check_finite(arr: np.ndarray, field: str) -> None:
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        i = int(bad[0])
        kind = "NaN" if np.isnan(arr[i]) else "inf"
        raise ValueError(f"{field}[{i}]: {kind} is not allowed (all values must be finite)")


@dataclass(frozen=True)
class GroupData:
    """One model's data: estimates `y`, known standard errors `sigma`, optional `names`.

    >>> GroupData([28, 8, -3], [15, 10, 16], names=["A", "B", "C"]).J
    3
    """

    y: np.ndarray
    sigma: np.ndarray
    names: tuple[str, ...]

    def __init__(self, y, sigma, names: Sequence[str] | None = None):
        y_arr = _as_float_array(y, "y")
        s_arr = _as_float_array(sigma, "sigma")
        if y_arr.size == 0:
            raise ValueError("y: no groups (empty input); at least one group is needed")
        if s_arr.size == 0:
            raise ValueError("sigma: no groups (empty input); at least one group is needed")
        if y_arr.shape != s_arr.shape:
            raise ValueError(
                f"sigma: length mismatch, y has {y_arr.size} entries but sigma has {s_arr.size}"
            )
        _check_finite(y_arr, "y")
        _check_finite(s_arr, "sigma")
        nonpos = np.flatnonzero(s_arr <= 0)
        if nonpos.size:
            i = int(nonpos[0])
            raise ValueError(f"sigma[{i}]: must be > 0, got {s_arr[i]!r}")
        if names is None:
            names_t = tuple(str(j) for j in range(y_arr.size))
        else:
            names_t = tuple(str(n) for n in names)
            if len(names_t) != y_arr.size:
                raise ValueError(
                    f"names: length mismatch, y has {y_arr.size} entries but names has {len(names_t)}"
                )
        y_arr.setflags(write=False)
        s_arr.setflags(write=False)
        object.__setattr__(self, "y", y_arr)
        object.__setattr__(self, "sigma", s_arr)
        object.__setattr__(self, "names", names_t)

    @property
    def J(self) -> int:
        """Number of groups."""
        return int(self.y.size)

    def padded(self, size: int | None = None, dtype=np.float64) -> Data:
        """Arrays padded to `size` groups (default `bucket_size(J)`), as numpy arrays."""
        size = bucket_size(self.J) if size is None else int(size)
        if size < self.J:
            raise ValueError(f"size: {size} is smaller than the number of groups {self.J}")
        y = np.zeros(size, dtype)
        s = np.ones(size, dtype)
        m = np.zeros(size, dtype)
        y[: self.J] = self.y
        s[: self.J] = self.sigma
        m[: self.J] = 1.0
        return Data(y, s, m)

    @classmethod
    def from_dataframe(cls, df, y: str = "y", sigma: str = "sigma", names: str | None = None):
        """Build from a pandas DataFrame with columns `y` and `sigma` (and optional `names`)."""
        for field, col in (("y", y), ("sigma", sigma), ("names", names)):
            if col is not None and col not in df.columns:
                raise ValueError(f"{field}: column {col!r} not found (columns are {list(df.columns)})")
        nm = df[names].tolist() if names else [str(i) for i in df.index]
        return cls(df[y].to_numpy(), df[sigma].to_numpy(), names=nm)

    @classmethod
    def from_csv(cls, path, y: str = "y", sigma: str = "sigma", names: str | None = None):
        """Read a CSV file with a header row naming the `y` and `sigma` columns.

        Uses only the standard library, so pandas is not needed for this path.
        """
        import csv

        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None:
                raise ValueError(f"{path}: empty file, expected a header row")
            for field, col in (("y", y), ("sigma", sigma), ("names", names)):
                if col is not None and col not in reader.fieldnames:
                    raise ValueError(
                        f"{field}: column {col!r} not found in {path} (columns are {reader.fieldnames})"
                    )
            rows = list(reader)
        ys, ss, nm = [], [], []
        for i, row in enumerate(rows):
            for field, col, out in (("y", y, ys), ("sigma", sigma, ss)):
                try:
                    out.append(float(row[col]))
                except (TypeError, ValueError):
                    raise ValueError(f"{field}[{i}]: non-numeric value {row[col]!r}") from None
            nm.append(row[names] if names else str(i))
        return cls(ys, ss, names=nm)

    def to_dict(self) -> dict:
        return {"y": self.y.tolist(), "sigma": self.sigma.tolist(), "names": list(self.names)}


def stack(datasets: Sequence[GroupData], size: int, dtype=np.float64) -> Data:
    """Pad each dataset to `size` groups and stack them into (M, size) arrays."""
    padded = [d.padded(size, dtype) for d in datasets]
    return Data(*(np.stack(field) for field in zip(*padded)))
