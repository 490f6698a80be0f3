"""Fit thousands of hierarchical normal-normal models in one call (`sample_batch`).

Every model m is fitted exactly as `hnnjax.sample(data_m, model_id=key_m, seed=seed)`
would fit it: its key is `sampler.model_keys(seed, key_m)`, its data are padded to
`bucket_size(J_m)`, and the driver's lanes are bitwise independent of the other lanes of
their batch (`sampler._program`). So batching is purely a question of throughput:

* **Buckets.** Models are grouped by padded size `bucket_size(J)`; a compiled program
  exists per (padded size, chunk width), so a handful of programs serve any number of
  models.
* **Chunks.** A bucket, ordered by J, is cut into chunks of `chunk_size` models (or as
  many as fit in `memory_budget_mb`, see `bytes_per_model`). The last chunk of a bucket
  is padded with copies of one of its models, whose results are discarded, so that all
  chunks of a bucket have one shape and share one compiled program.
* **Lanes.** A chunk's chains run on a pool of at most `max_lanes` lanes (the driver's
  `RunConfig.max_lanes`): a lane whose chain is done takes the next one, so a slow chain
  does not keep finished lanes idle until the chunk ends. Models with few groups take the
  longest trajectories (their tau is barely identified); ordering a bucket by J puts
  them together, so that they do not set the pace of every chunk.
* **Summaries.** mean, sd, 5/50/95% quantiles, bulk/tail ESS and R-hat of mu, tau and
  every theta_j come from `diagnostics.summarize`, applied in blocks of a fixed shape
  (`summarize_blocks`) so that its operations compile once, not once per bucket.
* **Devices.** Every chunk runs on all the given devices at once (default: all local
  devices; on CPU see `hnnjax.use_cpu_cores`): `sampler.run` deals its chains to them in
  contiguous blocks, each device with its own lane pool of `max_lanes`. Results do not
  depend on the devices.
* **Failure isolation.** Each dataset is validated on its own (`GroupData`): an invalid
  one is reported with status "invalid" and the validation message, the others are fit.
  A fit whose diagnostics fail the thresholds is reported as "unconverged" with reasons.
* **Checkpoints.** With `out=directory`, each finished chunk is written to Parquet
  (model rows and group rows; draws as .npz when they are kept) and recorded in
  `manifest.json`; a rerun with the same arguments reads the finished chunks back
  instead of refitting them, and gives the same tables as an uninterrupted run.

Model ids and keys
------------------
`ids` default to 0..M-1. An integer id i (0 <= i < 2**32) is used as the key as is, so
model i of `sample_batch(..., seed=s)` equals `sample(data_i, model_id=i, seed=s)` bit
for bit. Any other id is turned into a string and hashed with CRC-32 (`zlib.crc32` of
its UTF-8 bytes, ISO 3309), a stable 32-bit key: `sample(data, model_id=id_key("17:0"))`
reproduces model "17:0". Note the string "3" and the integer 3 get different keys.
Two distinct string ids can collide (about one pair among 100,000 random ids, by the
birthday bound n^2 / 2^33); such models then share their random numbers, which leaves
each fit valid but their Monte Carlo errors correlated; a warning names them.

Convergence checks (Vehtari et al. 2021, "Rank-normalization, folding, and localization",
Bayesian Analysis 16(2)): a model is "unconverged" when the largest rank-normalized split
R-hat over mu, tau and the theta_j exceeds `rhat_max` (default 1.01, their recommendation),
when the smallest bulk ESS is below `ess_min` (default 100 per chain, their
recommendation), or when the share of divergent transitions after warmup exceeds
`max_divergence_rate` (default 0: any divergence signals a region the sampler could not
explore, Betancourt 2017, "A conceptual introduction to Hamiltonian Monte Carlo", 6.2).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from . import diagnostics, model, sampler
from .data import GroupData, bucket_size, stack
from .table import Table

__all__ = [
    "sample_batch", "BatchResult", "id_key", "bytes_per_model", "default_max_lanes", "summarize_blocks",
    "DRAW_NAMES",
]

DRAW_NAMES = ("mu", "tau", "theta")
MANIFEST = "manifest.json"
_FORMAT = 1  # bump when the chunk files change meaning
_STATS = ("mean", "sd", "q5", "q50", "q95")
_MODEL_FLOATS = tuple(f"{p}_{s}" for p in ("mu", "tau") for s in _STATS) + (
    "r_hat_max", "ess_bulk_min", "ess_tail_min", "divergence_rate", "step_size",
)
_MODEL_INTS = ("divergences", "n_steps")
_MODEL_COLUMNS = tuple(f"{p}_{s}" for p in ("mu", "tau") for s in _STATS) + (
    "r_hat_max", "ess_bulk_min", "ess_tail_min", "divergences", "divergence_rate", "step_size", "n_steps",
)  # the order of the summary table
_GROUP_FLOATS = _STATS


# --------------------------------------------------------------------------------------
# Ids, inputs, validation
# --------------------------------------------------------------------------------------


def id_key(model_id) -> int:
    """The 32-bit key of a model id: an integer in [0, 2**32) as is, else CRC-32 of str(id)."""
    if isinstance(model_id, (bool, np.bool_)):
        raise ValueError(f"ids: a boolean is not a model id, got {model_id!r}")
    if isinstance(model_id, (int, np.integer)):
        i = int(model_id)
        if not 0 <= i < 2**32:
            raise ValueError(f"ids: integer ids must be in [0, 2**32), got {i}")
        return i
    return zlib.crc32(str(model_id).encode("utf-8"))


def _from_frame(df, id_col, y_col, sigma_col, name_col):
    """(ids, entries) from a long table: one row per group, `id_col` says the model."""
    for field_, col in (("id_col", id_col), ("y", y_col), ("sigma", sigma_col)):
        if col not in df.columns:
            raise ValueError(f"{field_}: column {col!r} not found (columns are {list(df.columns)})")
    names = name_col if name_col is not None and name_col in df.columns else None
    ids, entries = [], []
    for mid, part in df.groupby(id_col, sort=False, dropna=False):
        ids.append(mid.item() if isinstance(mid, np.generic) else mid)
        nm = part[names].astype(str).tolist() if names else None
        entries.append({"y": part[y_col].to_numpy(), "sigma": part[sigma_col].to_numpy(), "names": nm})
    return ids, entries


def _is_frame(obj) -> bool:
    return type(obj).__name__ == "DataFrame" and hasattr(obj, "groupby")


def _validate(entry) -> tuple[GroupData | None, str | None]:
    """Build one model's GroupData; the validation message instead when it is invalid."""
    try:
        return sampler._as_group_data(entry), None
    except (ValueError, TypeError) as exc:
        return None, str(exc)


def _entry_size(entry) -> int:
    """The group count of an entry as far as it can be told (for invalid rows)."""
    y = entry.get("y") if isinstance(entry, dict) else entry[0] if isinstance(entry, (tuple, list)) else None
    try:
        return int(np.size(y)) if y is not None else 0
    except Exception:  # noqa: BLE001 - a best-effort count for a report row
        return 0


def _resolve_ids(ids, n: int) -> list:
    ids = list(range(n)) if ids is None else list(ids)
    if len(ids) != n:
        raise ValueError(f"ids: length mismatch, {n} datasets but {len(ids)} ids")
    seen = {}
    for i, mid in enumerate(ids):
        if mid in seen:
            raise ValueError(f"ids[{i}]: duplicate model id {mid!r} (also ids[{seen[mid]}])")
        seen[mid] = i
    return ids


def _warn_collisions(ids, keys) -> None:
    first: dict[int, Any] = {}
    pairs = []
    for mid, k in zip(ids, keys):
        if k in first:
            pairs.append((first[k], mid))
        first.setdefault(k, mid)
    if pairs:
        warnings.warn(
            f"ids: {len(pairs)} pair(s) of ids share a 32-bit key and therefore their random "
            f"numbers (each fit stays valid), e.g. {pairs[0]!r}", stacklevel=3,
        )


# --------------------------------------------------------------------------------------
# Chunk plan
# --------------------------------------------------------------------------------------


def bytes_per_model(j_pad: int, chains: int, warmup: int, draws: int, itemsize: int = 8) -> int:
    """Bytes of sampler output one model holds, on the device and again on the host.

    The driver's buffers per chain (`sampler._empty_task_records`) are two (draws, J_pad + 2)
    position arrays (draws and divergence points) and six per-iteration scalars over
    warmup + draws iterations; the host copy doubles that:

        2 * chains * (2 * draws * (J_pad + 2) + 6 * (warmup + draws)) * itemsize
    """
    per_chain = 2 * draws * (j_pad + 2) + 6 * (warmup + draws)
    return 2 * chains * per_chain * itemsize


@dataclass(frozen=True)
class Chunk:
    """Models `members` (indices into the input) fitted together at padded size `j_pad`;
    `width` >= len(members) is the compiled batch size (the rest are discarded copies)."""

    index: int
    j_pad: int
    members: tuple[int, ...]
    width: int


def _plan(groups, valid, chunk_size, memory_budget_mb, config, itemsize) -> list[Chunk]:
    buckets: dict[int, list[int]] = {}
    for i in valid:
        buckets.setdefault(bucket_size(groups[i].J), []).append(i)
    chunks = []
    for j_pad in sorted(buckets):
        # a chunk's loop runs as long as its slowest lane, and models with fewer groups
        # (a poorly identified tau) take the longest trajectories: chunk similar J together
        members = sorted(buckets[j_pad], key=lambda i: groups[i].J)
        width = _chunk_width(j_pad, len(members), chunk_size, memory_budget_mb, config, itemsize)
        for start in range(0, len(members), width):
            chunks.append(Chunk(len(chunks), j_pad, tuple(members[start:start + width]), width))
    return chunks


def default_max_lanes(platform: str) -> int:
    """The driver's lane pool on each device when `max_lanes` is not given.

    Measured on a 2-core CPU (1000 eight-schools models, 4 chains, 500 + 500 iterations,
    float32, one pool per core; benchmarks/results/batch_20261122T0952*-0955*): 64, 128,
    256, 512 and 1024 lanes per core gave 23.5, 30.9, 36.0, 33.7 and 24.1 models per
    second, with useful-step shares of 0.98, 0.95, 0.90, 0.81 and 0.68: a wider pool
    pays less loop overhead per lane-step but leaves more lanes idle at the end of the
    queue. An accelerator needs thousands of lanes to be busy.
    """
    return 256 if platform == "cpu" else 8192


def _chunk_width(j_pad, n, chunk_size, memory_budget_mb, config, itemsize) -> int:
    if chunk_size is not None:
        if int(chunk_size) < 1:
            raise ValueError(f"chunk_size: must be >= 1, got {chunk_size}")
        return min(int(chunk_size), n)
    per = bytes_per_model(j_pad, config.chains, config.warmup, config.draws, itemsize)
    return max(1, min(n, int(memory_budget_mb * 2**20 // per)))


# --------------------------------------------------------------------------------------
# Fitting a chunk and summarizing it
# --------------------------------------------------------------------------------------


@dataclass
class _Setup:
    """Everything a chunk needs besides its members: fixed for one call."""

    config: sampler.RunConfig
    dtype: Any
    seed: int
    groups: list
    priors: list
    keys: list
    draws_mode: Any  # True, False or a tuple of DRAW_NAMES
    max_lanes: int | None = None


def _chunk_inputs(chunk: Chunk, s: _Setup):
    lanes = list(chunk.members) + [chunk.members[0]] * (chunk.width - len(chunk.members))
    data = stack([s.groups[i] for i in lanes], chunk.j_pad, dtype=s.dtype)
    prior = model.stack_priors([s.priors[i] for i in lanes], s.dtype)
    keys = sampler.model_keys(s.seed, [s.keys[i] for i in lanes])
    return keys, data, prior


def _run_chunk(chunk: Chunk, s: _Setup, devices):
    keys, data, prior = _chunk_inputs(chunk, s)
    # a device with no more chains than max_lanes runs one lane each, the very program
    # `hnnjax.sample` compiles for that lane count (`sampler.run` decides)
    return sampler.run(keys, data, prior, dataclasses.replace(s.config, max_lanes=s.max_lanes), devices=devices)


def _constrained(out: dict, chunk: Chunk, s: _Setup) -> dict:
    """mu, tau and theta draws of the chunk's real models (computed once per chunk)."""
    n = len(chunk.members)
    mu, tau, theta = (np.asarray(a)[:n] for a in model.constrain(out["position"][:n], s.config.parametrization))
    return {"mu": mu, "tau": tau, "theta": theta}


def _summaries(out: dict, named: dict, chunk: Chunk, s: _Setup) -> tuple[dict, dict]:
    """Per-model and per-group summaries of a fitted chunk's real models.

    The live scalars (mu, tau and each real theta_j of each model) are summarized in
    blocks of a fixed size (`summarize_blocks`), so every chunk and bucket reuses the same
    compiled diagnostics instead of compiling them for its own shape.
    """
    cfg, n = s.config, len(chunk.members)
    mu, tau, theta = named["mu"], named["tau"], named["theta"]
    sizes = np.array([s.groups[i].J for i in chunk.members])
    gi, gj = np.nonzero(np.arange(chunk.j_pad)[None, :] < sizes[:, None])  # real groups, model-major
    # (P, chains, draws): mu of every model, tau of every model, then every real theta_j
    x = np.concatenate([mu, tau, theta[gi, :, :, gj]], axis=0)
    st = summarize_blocks(x)
    starts = np.r_[0, np.cumsum(sizes)[:-1]]
    r_hat = _per_model(st["r_hat"], n, starts, np.maximum)
    ess = _per_model(st["ess_bulk"], n, starts, np.minimum)
    ess_tail = _per_model(st["ess_tail"], n, starts, np.minimum)
    divergences = out["diverging"][:n, :, cfg.warmup:].sum(axis=(1, 2)).astype(np.int64)
    rows = {"index": np.asarray(chunk.members, np.int64)}
    for p, offset in (("mu", 0), ("tau", n)):
        for k in _STATS:
            rows[f"{p}_{k}"] = st[k][offset:offset + n]
    rows.update(
        r_hat_max=r_hat, ess_bulk_min=ess, ess_tail_min=ess_tail,
        divergences=divergences, divergence_rate=divergences / (cfg.chains * cfg.draws),
        step_size=out["final_step_size"][:n].mean(axis=1).astype(np.float64),
        n_steps=out["n_steps"][:n].sum(axis=(1, 2)).astype(np.int64),
    )
    groups = {"index": np.asarray(chunk.members, np.int64)[gi], "j": gj.astype(np.int64)}
    for k in _STATS:
        groups[k] = st[k][2 * n:]
    return rows, groups


def _per_model(values, n, starts, reduce):
    """Reduce a diagnostic over each model's mu, tau and theta_j (ordered as in
    `_summaries`; model m's theta_j start at `starts[m]`). np.maximum / np.minimum
    propagate NaN (too few draws, NaN draws): a NaN diagnostic flags its model."""
    return reduce(reduce(values[:n], values[n:2 * n]), reduce.reduceat(values[2 * n:], starts))


_BLOCK = 256  # scalars per diagnostics call: one compiled shape per (chains, draws, dtype)


def summarize_blocks(x: np.ndarray) -> dict:
    """`diagnostics.summarize` of x (P, chains, draws) as float64 arrays (P,).

    Runs on blocks of `_BLOCK` scalars (the last one zero-padded): JAX compiles each
    eager operation per input shape, so a fixed block shape compiles them once per
    (chains, draws, dtype) instead of once per chunk shape. Keys: mean, sd, q5, q50, q95,
    ess_bulk, ess_tail, r_hat.
    """
    import jax.numpy as jnp

    names = _STATS + ("ess_bulk", "ess_tail", "r_hat")
    out = {k: np.empty(x.shape[0], np.float64) for k in names}
    for start in range(0, x.shape[0], _BLOCK):
        block = x[start:start + _BLOCK]
        m = block.shape[0]
        if m < _BLOCK:  # zero padding is constant draws: finite diagnostics, discarded
            block = np.concatenate([block, np.zeros((_BLOCK - m,) + block.shape[1:], block.dtype)])
        st = diagnostics.summarize(jnp.asarray(block))
        for k in names:
            out[k][start:start + m] = np.asarray(st[k])[:m]
    return out


def _kept_draws(out: dict, named: dict, chunk: Chunk, s: _Setup) -> dict:
    """What a chunk keeps of its draws: the raw sampler output (for Fits) or named draws."""
    n = len(chunk.members)
    if s.draws_mode is True:
        return {k: np.asarray(v)[:n] for k, v in out.items()}
    if not s.draws_mode:
        return {}
    return {k: named[k] for k in s.draws_mode}


@dataclass
class _ChunkResult:
    chunk: Chunk
    rows: dict
    groups: dict
    draws: dict
    info: dict


def _chunk_info(chunk, timing, steps, source) -> dict:
    lane_iters = int(timing["lane_iterations"])
    return {
        "chunk": chunk.index, "j_pad": chunk.j_pad, "models": len(chunk.members),
        "width": chunk.width, "devices": int(timing["devices"]), "source": source,
        "compile_s": float(timing["compile_s"]), "run_s": float(timing["run_s"]),
        "loop_iterations": int(timing["loop_iterations"]), "lanes": int(timing["lanes"]),
        "useful_steps": int(steps), "lane_iterations": lane_iters,
        "useful_step_share": float(steps / lane_iters) if lane_iters else float("nan"),
    }


def _finish_chunk(chunk: Chunk, s: _Setup, out: dict, timing: dict) -> _ChunkResult:
    named = _constrained(out, chunk, s)
    rows, groups = _summaries(out, named, chunk, s)
    # the useful-step share counts the real models' steps only: padding copies are waste
    info = _chunk_info(chunk, timing, rows["n_steps"].sum(), "fit")
    return _ChunkResult(chunk, rows, groups, _kept_draws(out, named, chunk, s), info)


# --------------------------------------------------------------------------------------
# Checkpoint directory
# --------------------------------------------------------------------------------------


class _Store:
    """Chunk files and `manifest.json` in `out`; writes are atomic (write, then rename)."""

    def __init__(self, path, fingerprint: str):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.fingerprint = fingerprint
        manifest = self._read_manifest()
        if manifest is not None and manifest.get("fingerprint") != fingerprint:
            raise ValueError(
                f"out: {self.path} holds results of other data or settings (its manifest's "
                "fingerprint differs); use a new directory or delete this one"
            )
        self.chunks = {} if manifest is None else manifest["chunks"]

    def _read_manifest(self):
        p = self.path / MANIFEST
        if not p.exists():
            return None
        with open(p) as fh:
            return json.load(fh)

    def _atomic(self, name: str, write: Callable[[Path], None]) -> None:
        tmp = self.path / f".{name}.tmp"
        write(tmp)
        os.replace(tmp, self.path / name)

    def _write_manifest(self) -> None:
        body = {"format": _FORMAT, "fingerprint": self.fingerprint, "chunks": self.chunks}

        def write(p):
            with open(p, "w") as fh:
                json.dump(body, fh, indent=1)

        self._atomic(MANIFEST, write)

    def has(self, chunk: Chunk, draws_mode) -> bool:
        entry = self.chunks.get(str(chunk.index))
        if entry is None:
            return False
        return _draws_tag(draws_mode) in (None, entry.get("draws"))

    def save(self, res: _ChunkResult, s: _Setup, ids) -> None:
        stem = f"chunk-{res.chunk.index:05d}"
        labels = [str(ids[i]) for i in res.rows["index"]]
        rows = {"model": labels, **res.rows}
        groups = {"model": [str(ids[i]) for i in res.groups["index"]],
                  "group": [s.groups[i].names[j] for i, j in zip(res.groups["index"], res.groups["j"])],
                  **res.groups}
        self._atomic(f"{stem}.models.parquet", lambda p: _write_parquet(rows, p))
        self._atomic(f"{stem}.groups.parquet", lambda p: _write_parquet(groups, p))
        tag = None
        if res.draws:
            self._atomic(f"{stem}.draws.npz", lambda p: _write_npz(res.draws, p))
            tag = _draws_tag(s.draws_mode)
        self.chunks[str(res.chunk.index)] = {"stem": stem, "draws": tag, "info": res.info}
        self._write_manifest()

    def load(self, chunk: Chunk, s: _Setup) -> _ChunkResult:
        entry = self.chunks[str(chunk.index)]
        stem = entry["stem"]
        rows = _read_parquet(self.path / f"{stem}.models.parquet", ("index",) + _MODEL_FLOATS + _MODEL_INTS)
        groups = _read_parquet(self.path / f"{stem}.groups.parquet", ("index", "j") + _GROUP_FLOATS)
        draws = {}
        if s.draws_mode:
            with np.load(self.path / f"{stem}.draws.npz") as z:
                draws = {k: z[k] for k in z.files}
        info = {**entry["info"], "source": "disk", "compile_s": 0.0, "run_s": 0.0}
        return _ChunkResult(chunk, rows, groups, draws, info)

    def write_tables(self, result: "BatchResult") -> None:
        for name, table in (("models", result.models), ("groups", result.groups)):
            cols = {table.index_name: table.index, **table.columns}
            self._atomic(f"{name}.parquet", lambda p, c=cols: _write_parquet(c, p))


def _draws_tag(draws_mode):
    if draws_mode is True:
        return "all"
    if not draws_mode:
        return None
    return ",".join(draws_mode)


def _write_parquet(columns: dict, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({k: pa.array(list(v) if isinstance(v, list) else np.asarray(v))
                             for k, v in columns.items()}), path)


def _read_parquet(path: Path, names) -> dict:
    import pyarrow.parquet as pq

    t = pq.read_table(path, columns=list(names))
    return {k: t.column(k).to_numpy() for k in names}


def _write_npz(arrays: dict, path: Path) -> None:
    with open(path, "wb") as fh:  # a file object keeps numpy from appending ".npz"
        np.savez(fh, **arrays)


def _fingerprint(s: _Setup, ids, errors, plan) -> str:
    """SHA-256 of everything that determines the chunk files: settings, data, plan."""
    h = hashlib.sha256()
    h.update(repr((_FORMAT, s.config, np.dtype(s.dtype).name, s.seed)).encode())
    for i, mid in enumerate(ids):
        h.update(repr((mid, s.keys[i], errors.get(i))).encode())
        gd = s.groups[i]
        if gd is not None:
            h.update(gd.y.tobytes() + gd.sigma.tobytes() + repr(gd.names).encode())
            h.update(repr(tuple(np.asarray(f).item() for f in s.priors[i])).encode())
    h.update(repr([(c.j_pad, c.members, c.width) for c in plan]).encode())
    return h.hexdigest()


# --------------------------------------------------------------------------------------
# Running the plan
# --------------------------------------------------------------------------------------


def _fitted(todo: list[Chunk], s: _Setup, devices):
    """Yield _ChunkResult of each chunk in `todo` as it finishes."""
    for c in todo:
        out, timing = _run_chunk(c, s, devices)
        yield _finish_chunk(c, s, out, timing)


# --------------------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------------------


@dataclass
class BatchResult:
    """What `sample_batch` returns.

    models: one row per model (index: the model id as a string), in input order, with
        key, J, J_pad, status ("ok", "unconverged", "invalid"), reason, mean/sd/q5/q50/q95
        of mu and tau, r_hat_max, ess_bulk_min and ess_tail_min over mu, tau and the theta_j,
        divergences (after warmup) and divergence_rate, step_size (adapted, mean over
        chains), n_steps (leapfrog steps, warmup included, all chains), chunk.
        Statistics of invalid models are NaN, their counts 0.
    groups: one row per group of every fitted model (index: model id), with group (its
        name), j (its position), and mean, sd, q5, q50, q95 of theta_j.
    fits: model id -> `Fit` when keep_draws is True; else empty.
    draws: name -> {model id -> array} for the names in keep_draws ("mu", "tau":
        (chains, draws); "theta": (chains, draws, J)); else empty.
    timing: compile_s and run_s summed over chunks fitted in this call, wall_s, models
        fitted per second of wall time, useful_step_share overall (sum over lanes and
        iterations of n_steps / the lane-steps computed), devices.
    chunks: per-chunk records (padded size, models, width, devices, lanes (all devices),
        source "fit" or "disk", compile_s, run_s, loop_iterations (of the slowest device),
        lane_iterations, useful_step_share).
    """

    models: Table
    groups: Table
    fits: dict
    draws: dict
    timing: dict
    chunks: list
    ids: list
    config: Any = field(repr=False, default=None)

    def to_pandas(self):
        """The per-model table as a pandas DataFrame."""
        return self.models.to_pandas()

    def status_counts(self) -> dict[str, int]:
        st = self.models["status"]
        return {k: int(np.sum(st == k)) for k in ("ok", "unconverged", "invalid")}

    def __len__(self) -> int:
        return len(self.ids)

    def __str__(self) -> str:
        t = self.timing
        return (
            f"hnnjax batch: {len(self)} models {self.status_counts()}, {len(self.chunks)} chunks, "
            f"wall {t['wall_s']:.1f} s (compile {t['compile_s']:.1f} s, run {t['run_s']:.1f} s), "
            f"{t['models_per_s']:.1f} models/s, useful-step share {t['useful_step_share']:.2f}"
        )

    __repr__ = __str__


def _status(rows_all: dict, errors: dict, n: int, rhat_max, ess_min, max_div):
    """("ok" | "unconverged" | "invalid", reason) per model from its diagnostics."""
    status = np.full(n, "ok", dtype=object)
    reason = np.full(n, "", dtype=object)
    for i in range(n):
        if i in errors:
            status[i], reason[i] = "invalid", errors[i]
            continue
        why = _unconverged_reasons(rows_all["r_hat_max"][i], rows_all["ess_bulk_min"][i],
                                   rows_all["divergence_rate"][i], rhat_max, ess_min, max_div)
        if why:
            status[i], reason[i] = "unconverged", "; ".join(why)
    return status.astype(str), reason.astype(str)


def _unconverged_reasons(r_hat, ess, div_rate, rhat_max, ess_min, max_div) -> list[str]:
    why = []
    if not r_hat <= rhat_max:  # NaN fails too
        why.append(f"r_hat {r_hat:.3f} > {rhat_max:g}")
    if not ess >= ess_min:
        why.append(f"ess_bulk {ess:.0f} < {ess_min:g}")
    if div_rate > max_div:
        why.append(f"divergence rate {div_rate:.3g} > {max_div:g}")
    return why


def _assemble(results: list[_ChunkResult], ids, s: _Setup, errors, sizes, thresholds, timing) -> BatchResult:
    """The tables in input order from the chunks' rows; statuses from the thresholds."""
    n = len(ids)
    rows_all = {k: np.full(n, np.nan) for k in _MODEL_FLOATS}
    rows_all.update({k: np.zeros(n, np.int64) for k in _MODEL_INTS})
    j_pad = np.zeros(n, np.int64)
    chunk_of = np.full(n, -1, np.int64)
    group_parts = []
    for res in results:
        idx = res.rows["index"]
        for k in _MODEL_FLOATS + _MODEL_INTS:
            rows_all[k][idx] = res.rows[k]
        j_pad[idx] = res.chunk.j_pad
        chunk_of[idx] = res.chunk.index
        group_parts.append(res.groups)
    status, reason = _status(rows_all, errors, n, *thresholds)
    columns = {
        "key": np.asarray(s.keys, np.int64), "J": np.asarray(sizes, np.int64), "J_pad": j_pad,
        "status": status, "reason": reason, **{k: rows_all[k] for k in _MODEL_COLUMNS}, "chunk": chunk_of,
    }
    models = Table([str(i) for i in ids], columns, index_name="model")
    groups = _group_table(group_parts, ids, s)
    fits, draws = _draw_outputs(results, ids, s)
    return BatchResult(models, groups, fits, draws, timing, [r.info for r in results], list(ids), s.config)


def _group_table(parts, ids, s: _Setup) -> Table:
    if parts:
        cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    else:
        cat = {k: np.zeros(0, np.int64 if k in ("index", "j") else np.float64)
               for k in ("index", "j") + _GROUP_FLOATS}
    order = np.lexsort((cat["j"], cat["index"]))
    cat = {k: v[order] for k, v in cat.items()}
    names = np.array([s.groups[i].names[j] for i, j in zip(cat["index"], cat["j"])], dtype=str)
    cols = {"group": names, "j": cat["j"], **{k: cat[k] for k in _GROUP_FLOATS}}
    return Table([str(ids[i]) for i in cat["index"]], cols, index_name="model")


def _draw_outputs(results, ids, s: _Setup) -> tuple[dict, dict]:
    """Fits (keep_draws=True) or named draws, keyed by model id in input order."""
    fits: dict = {}
    draws: dict = {k: {} for k in (s.draws_mode if isinstance(s.draws_mode, tuple) else ())}
    where = {i: (res, r) for res in results for r, i in enumerate(res.chunk.members)}
    for i in sorted(where):
        res, r = where[i]
        gd = s.groups[i]
        if s.draws_mode is True:
            chunk_timing = {k: res.info[k] for k in ("compile_s", "run_s", "loop_iterations", "lanes",
                                                     "lane_iterations", "devices")}
            fits[ids[i]] = sampler._to_fit(res.draws, r, gd, s.priors[i], s.config, s.seed, chunk_timing)
        for k in draws:
            a = res.draws[k][r]
            draws[k][ids[i]] = a[..., : gd.J] if k == "theta" else a
    return fits, draws


# --------------------------------------------------------------------------------------
# The entry point
# --------------------------------------------------------------------------------------


def _draws_mode(keep_draws):
    if keep_draws is True or keep_draws is False:
        return keep_draws
    if isinstance(keep_draws, str):
        keep_draws = (keep_draws,)
    names = tuple(keep_draws)
    bad = [k for k in names if k not in DRAW_NAMES]
    if bad or not names:
        raise ValueError(f"keep_draws: expected True, False or names from {DRAW_NAMES}, got {keep_draws!r}")
    return names


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is an optional extra; no bar without it
        return None
    return tqdm(total=total, unit="model", desc="hnnjax batch", dynamic_ncols=True)


def sample_batch(
    datasets,
    ids=None,
    *,
    parametrization: str = "noncentered",
    kernel="nuts",
    chains: int = 4,
    warmup: int = 1000,
    draws: int = 1000,
    target_accept: float = 0.8,
    seed: int = 0,
    prior=None,
    dtype=None,
    chunk_size: int | None = None,
    memory_budget_mb: float = 512.0,
    max_lanes: int | None = None,
    keep_draws: bool | Sequence[str] = True,
    progress: bool = True,
    out=None,
    rhat_max: float = 1.01,
    ess_min: float | None = None,
    max_divergence_rate: float = 0.0,
    id_col: str = "model",
    y_col: str = "y",
    sigma_col: str = "sigma",
    name_col: str | None = "name",
    devices=None,
    on_chunk: Callable[[dict], None] | None = None,
) -> BatchResult:
    """Fit one hierarchical normal-normal model per dataset; see the module docstring.

    datasets: a sequence of `GroupData`, (y, sigma) pairs or {"y", "sigma"[, "names"]}
        dicts; or a pandas DataFrame in long form, one row per group, with columns
        `id_col` (the model), `y_col`, `sigma_col` and optionally `name_col` (then `ids`
        come from `id_col`, in order of first appearance).
    ids: model ids (default 0..M-1): integers in [0, 2**32) are the models' keys as is,
        other ids are hashed (`id_key`).
    parametrization, kernel, chains, warmup, draws, target_accept, seed, prior, dtype: as
        in `hnnjax.sample`; `prior` may also be a sequence with one prior per model.
    chunk_size: models per compiled batch; default: as many as fit in `memory_budget_mb`
        (`bytes_per_model`), at most the bucket's size.
    max_lanes: the driver's lane pool on each device (`sampler.RunConfig.max_lanes`;
        default `default_max_lanes`: 256 on CPU); a device with fewer chains runs one
        lane per chain. Draws do not depend on it.
    keep_draws: True keeps a `Fit` per model; False keeps summaries only; a tuple of names
        from ("mu", "tau", "theta") keeps those draws only (`BatchResult.draws`).
    progress: a tqdm bar over models (if tqdm is installed); False prints nothing.
    out: a directory for checkpoints (Parquet per chunk + manifest.json, and the final
        models.parquet / groups.parquet); a rerun with the same arguments resumes.
    rhat_max, ess_min (default 100 * chains), max_divergence_rate: the thresholds below
        which a fitted model is "ok", else "unconverged" with the reasons.
    devices: the devices each chunk is spread over (default all local devices).
    on_chunk: called with each chunk's record after it is finished (and written).
    """
    t_start = time.perf_counter()
    ids, entries = _inputs(datasets, ids, id_col, y_col, sigma_col, name_col)
    config = sampler.RunConfig.normal_normal(parametrization, kernel, chains, warmup, draws, target_accept)
    checked = [_validate(e) for e in entries]
    groups = [g for g, _ in checked]
    errors = {i: msg for i, (_, msg) in enumerate(checked) if msg is not None}
    s = _Setup(config, sampler._resolve_dtype(dtype), int(seed), groups,
               model.as_priors(prior, len(entries)), [id_key(i) for i in ids], _draws_mode(keep_draws))
    _warn_collisions(ids, s.keys)
    devs = sampler.local_devices(devices)
    # settings left open depend on the platform: fixed here, so a checkpoint's fingerprint holds them
    s.config = config = config.for_platform(getattr(devs[0], "platform", "cpu"))
    s.max_lanes = int(max_lanes) if max_lanes is not None else default_max_lanes(getattr(devs[0], "platform", "cpu"))
    valid = [i for i in range(len(entries)) if i not in errors]
    plan = _plan(groups, valid, chunk_size, memory_budget_mb, config, np.dtype(s.dtype).itemsize)
    store = _Store(out, _fingerprint(s, ids, errors, plan)) if out is not None else None
    results = _run_plan(plan, s, ids, devs, store, progress, on_chunk)
    timing = _timing(results, time.perf_counter() - t_start, devs)
    sizes = [_entry_size(e) if g is None else g.J for e, g in zip(entries, groups)]
    ess_min = 100.0 * config.chains if ess_min is None else float(ess_min)
    result = _assemble(results, ids, s, errors, sizes, (rhat_max, ess_min, max_divergence_rate), timing)
    if store is not None:
        store.write_tables(result)
    return result


def _inputs(datasets, ids, id_col, y_col, sigma_col, name_col) -> tuple[list, list]:
    """(ids, entries): one entry per model, from a sequence or a long DataFrame."""
    if _is_frame(datasets):
        if ids is not None:
            raise ValueError("ids: a DataFrame's model ids come from its id_col; pass ids=None")
        ids, entries = _from_frame(datasets, id_col, y_col, sigma_col, name_col)
    else:
        entries = list(datasets)
    return _resolve_ids(ids, len(entries)), entries


def _run_plan(plan, s: _Setup, ids, devs, store, progress, on_chunk) -> list[_ChunkResult]:
    """Read the chunks already in `store`, fit the others; results in plan order."""
    results, todo = [], []
    for c in plan:
        if store is not None and store.has(c, s.draws_mode):
            results.append(store.load(c, s))
        else:
            todo.append(c)
    bar = _progress_bar(sum(len(c.members) for c in plan), progress)
    fitted = _fitted(todo, s, devs)
    try:
        if bar is not None:
            bar.update(sum(len(r.chunk.members) for r in results))
        for res in fitted:
            if store is not None:
                store.save(res, s, ids)
            results.append(res)
            if bar is not None:
                bar.update(len(res.chunk.members))
                bar.set_postfix(useful=f"{res.info['useful_step_share']:.2f}")
            if on_chunk is not None:
                on_chunk(dict(res.info))
    finally:
        fitted.close()
        if bar is not None:
            bar.close()
    return sorted(results, key=lambda r: r.chunk.index)


def _timing(results, wall, devices) -> dict:
    fitted = [r.info for r in results if r.info["source"] == "fit"]
    steps = sum(r.info["useful_steps"] for r in results)
    lane_iters = sum(r.info["lane_iterations"] for r in results)
    return {
        "compile_s": float(sum(i["compile_s"] for i in fitted)),
        "run_s": float(sum(i["run_s"] for i in fitted)),
        "wall_s": float(wall),
        "models_fitted": int(sum(i["models"] for i in fitted)),
        "models_per_s": float(sum(i["models"] for i in fitted) / wall) if wall > 0 else math.nan,
        "useful_step_share": float(steps / lane_iters) if lane_iters else math.nan,
        "chunks_fitted": len(fitted),
        "chunks_from_disk": len(results) - len(fitted),
        "devices": [str(d) for d in devices],
    }
