"""A small column table: named numpy columns over labelled rows.

Summaries are tables; pandas is an optional extra, so the core returns this and
`to_pandas()` converts when pandas is installed.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["Table"]


class Table:
    """Rows labelled by `index`, columns of equal length. `t["mean"]`, `t.row("mu")`."""

    def __init__(self, index: Sequence[str], columns: dict[str, np.ndarray], index_name: str = "parameter"):
        self.index = [str(i) for i in index]
        self.index_name = index_name
        self.columns = {k: np.asarray(v) for k, v in columns.items()}
        for k, v in self.columns.items():
            if v.shape[:1] != (len(self.index),):
                raise ValueError(f"column {k!r} has {v.shape[:1]} rows, index has {len(self.index)}")

    def __getitem__(self, column: str) -> np.ndarray:
        return self.columns[column]

    def __len__(self) -> int:
        return len(self.index)

    def row(self, label: str) -> dict:
        i = self.index.index(label)
        return {k: v[i].item() if v.ndim == 1 else v[i] for k, v in self.columns.items()}

    def to_pandas(self):
        import pandas as pd

        return pd.DataFrame(self.columns, index=pd.Index(self.index, name=self.index_name))

    def to_dict(self) -> dict:
        return {label: self.row(label) for label in self.index}

    def __str__(self) -> str:
        def fmt(v):
            if isinstance(v, (float, np.floating)):
                if not np.isfinite(v):
                    return str(v)
                return f"{v:.3f}" if abs(v) < 1e5 else f"{v:.3g}"
            return str(v)

        header = [self.index_name] + list(self.columns)
        rows = [[label] + [fmt(self.columns[c][i]) for c in self.columns] for i, label in enumerate(self.index)]
        widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
        lines = ["  ".join(h.rjust(w) if j else h.ljust(w) for j, (h, w) in enumerate(zip(header, widths)))]
        for r in rows:
            lines.append("  ".join(x.rjust(w) if j else x.ljust(w) for j, (x, w) in enumerate(zip(r, widths))))
        return "\n".join(lines)

    __repr__ = __str__
