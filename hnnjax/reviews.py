"""Restaurant reviews as hierarchical normal-normal models, one per (restaurant, aspect).

The homework that goes with the eight-schools notes (shared seed 000) fits a separate
eight-schools model to every restaurant and every aspect (food, service). Fix a
restaurant k and an aspect a: each review j that talks about a is a "school", its
sentences about a are the "students", and

    y_j       = mean of the sentiment of review j's n_j sentences about aspect a,
    sigma_j^2 = s_j^2 / n_j,

the squared standard error of that mean (BDA3 section 5.5: y_j is a sample mean of
n_j draws with variance s_j^2, and the model treats its variance as known). The
hierarchy theta_j ~ N(mu, tau) then pools the reviews: mu is "how good is this
restaurant's food", tau is how much reviewers disagree beyond sentence noise.

Table schema (one row per (review, aspect) mention)
---------------------------------------------------

============  ===========  ==============================================================
column        type         meaning
============  ===========  ==============================================================
review_id     str or int   opaque review identifier; (review_id, topic) is unique
rid           str or int   restaurant identifier
topic         int          aspect: 0 = food, 1 = service
count         int >= 1     number of sentences of this review about this aspect
mean          float        mean sentiment of those sentences, on the scale [-1, 1]
var           float >= 0   their *sample* variance (ddof=1, pandas' default); 0 when
                           count == 1 (undefined there; the value is ignored anyway)
stars         int 1..5     the review's star rating (optional; not used by the model)
============  ===========  ==============================================================

A review that mentions only food has no service row, so a restaurant-aspect can have
fewer reviews than its restaurant. Extra columns are carried along and ignored. A real
export (CSV or Parquet) with these columns can be read with `read_reviews`; if its
`var` is a population variance (ddof=0), pass `ddof=0` to `review_standard_errors` /
`to_models`. The sentiment scale only matters for the default sigma floor, which is
sized for [-1, 1]; rescale `floor` for another scale.

The variance rule
-----------------
A one-sentence review carries information about its mean but none about its own noise:
its variance is undefined. A review with count > 1 and var == 0 (all its sentences got
the same score, common when scores live on a coarse grid) would give sigma = 0, that is
infinite precision: the likelihood would pin theta_j to y_j, which the model (and its
samplers) cannot take. `review_standard_errors` handles these "unusable" rows with:

* ``"pooled"`` (default): replace the unusable within-review variance by the pooled
  within-review variance of the same restaurant-aspect,

      s2_pool = sum_i (n_i - 1) s_i^2 / sum_i (n_i - 1)   over usable reviews i,

  the usual pooled-variance estimate under a common sentence-level variance (the
  assumption of BDA3 section 5.5, sigma_j^2 = sigma^2 / n_j). A restaurant-aspect with no
  usable review falls back to the same pool over the whole aspect (all restaurants),
  and an aspect with no usable review at all falls back to the floor. Reviews with
  var == 0 and count > 1 are left out of the pool: including their zero sums of squares
  would shrink every imputed variance and make the pool least reliable exactly where
  scores are coarsest, so leaving them out errs on the side of wider sigma.
* ``"floor"``: keep the data as is and rely on the floor only (one-sentence reviews get
  sigma = floor, which makes them the most precise reviews in the model; kept for
  comparison, not recommended).
* ``"drop"``: drop the unusable rows.

Every rule then applies sigma = max(sqrt(var / count), floor): the floor (default 0.01,
half a percent of the width of [-1, 1]) is a numerical guard, not a model of noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .data import GroupData

if TYPE_CHECKING:  # pandas is an optional extra ("tables"); imported lazily below
    import pandas as pd

__all__ = [
    "ASPECTS", "REQUIRED_COLUMNS", "DEFAULT_SIGMA_FLOOR", "RULES",
    "synthetic_reviews", "validate_reviews", "read_reviews",
    "review_standard_errors", "StandardErrors", "to_models", "ModelsReport", "model_id",
]

ASPECTS = {0: "food", 1: "service"}
REQUIRED_COLUMNS = ("review_id", "rid", "topic", "count", "mean", "var")
_NUMERIC_COLUMNS = ("topic", "count", "mean", "var")
DEFAULT_SIGMA_FLOOR = 0.01
RULES = ("pooled", "floor", "drop")


def _pandas():
    try:
        import pandas as pd
    except ImportError as exc:  # keep `import hnnjax` free of pandas
        raise ImportError(
            "hnnjax.reviews needs pandas: pip install 'hnnjax[tables]'"
        ) from exc
    return pd


# --------------------------------------------------------------------------------------
# Synthetic data
# --------------------------------------------------------------------------------------


def synthetic_reviews(
    n_restaurants: int,
    seed: int = 0,
    *,
    max_reviews: int = 200,
    median_reviews: float = 12.0,
    reviews_log_sd: float = 1.2,
    mention_probs: tuple[float, float, float] = (0.35, 0.15, 0.50),
    p_one_sentence: float = 0.45,
    max_sentences: int = 30,
    aspect_means: tuple[float, float] = (0.35, 0.15),
    quality_sd: float = 0.25,
    tau: float = 0.2,
    sentence_sd: float = 0.35,
    p_neutral: float = 0.1,
    resolution: float = 0.1,
    with_truth: bool = False,
) -> "pd.DataFrame":
    """A review-level table in the module's schema, fully determined by `seed`.

    Generative story (sentiment on [-1, 1]; a = 0 food, 1 service):

    * reviews per restaurant: round(LogNormal(log median_reviews, reviews_log_sd)),
      clipped to [1, max_reviews]; heavy-tailed like real review counts;
    * restaurant quality q[k, a] ~ N(aspect_means[a], quality_sd);
    * review-level opinion theta[j, a] ~ N(q[k, a], tau) (tau of the hierarchical model);
    * each review mentions food only, service only or both (`mention_probs`);
    * sentences per mention ~ Geometric(p_one_sentence) (so P(count = 1) = p_one_sentence),
      capped at `max_sentences`;
    * sentence score = theta + N(0, sentence_sd), rounded to a grid of step `resolution`
      and clipped to [-1, 1]; with probability `p_neutral` a sentence scores exactly 0
      (neutral sentences, as sentiment analyzers report them). The grid and the neutral
      mass make ties, hence var == 0 with count > 1;
    * stars = round(3 + 2.5 * mean_a theta[j, a] + N(0, 0.6)), clipped to 1..5.

    `var` is the sample variance (ddof=1) of the sentence scores, 0 for count == 1; it is
    computed in integer grid units so that ties give exactly 0. `review_id` is the string
    "r{rid}-{k}" (k-th review of restaurant rid); `rid` is an int. With `with_truth`,
    the columns `quality` (q) and `theta` are added; note that they are latent locations:
    neutral sentences and clipping pull the expected observed mean toward 0.
    """
    pd = _pandas()
    _check_synthetic_args(n_restaurants, max_reviews, mention_probs, resolution)
    rng = np.random.default_rng(seed)
    grid = int(round(1.0 / resolution))

    n_rev = np.exp(rng.normal(math.log(median_reviews), reviews_log_sd, n_restaurants))
    n_rev = np.clip(np.rint(n_rev), 1, max_reviews).astype(np.int64)
    review_rid = np.repeat(np.arange(n_restaurants), n_rev)
    review_k = np.arange(review_rid.size) - np.repeat(np.cumsum(n_rev) - n_rev, n_rev)

    quality = rng.normal(aspect_means, quality_sd, (n_restaurants, 2))
    theta = quality[review_rid] + tau * rng.normal(size=(review_rid.size, 2))
    kind = rng.choice(3, size=review_rid.size, p=mention_probs)
    mentions = np.stack([kind != 1, kind != 0], axis=1)  # kind 0 food, 1 service, 2 both
    stars = np.clip(np.rint(3.0 + 2.5 * theta.mean(axis=1) + rng.normal(0, 0.6, review_rid.size)), 1, 5)

    flat = np.flatnonzero(mentions.ravel())  # row-major: review by review, food first
    row_review, row_topic = flat // 2, flat % 2
    row_theta = theta[row_review, row_topic]
    count = np.minimum(rng.geometric(p_one_sentence, flat.size), max_sentences)
    mean, var = _sentence_moments(rng, row_theta, count, sentence_sd, p_neutral, grid)

    rid = review_rid[row_review]
    frame = pd.DataFrame({
        "review_id": [f"r{r}-{k}" for r, k in zip(rid, review_k[row_review])],
        "rid": rid.astype(np.int64),
        "topic": row_topic.astype(np.int64),
        "count": count.astype(np.int64),
        "mean": mean,
        "var": var,
        "stars": stars[row_review].astype(np.int64),
    })
    if with_truth:
        frame["quality"] = quality[rid, row_topic]
        frame["theta"] = row_theta
    return frame


def _check_synthetic_args(n_restaurants, max_reviews, mention_probs, resolution) -> None:
    if int(n_restaurants) != n_restaurants or n_restaurants < 1:
        raise ValueError(f"n_restaurants: must be an integer >= 1, got {n_restaurants!r}")
    if int(max_reviews) != max_reviews or max_reviews < 1:
        raise ValueError(f"max_reviews: must be an integer >= 1, got {max_reviews!r}")
    if len(mention_probs) != 3 or not math.isclose(sum(mention_probs), 1.0):
        raise ValueError(f"mention_probs: need 3 probabilities summing to 1, got {mention_probs!r}")
    # the grid must land on -1, 0 and 1 so that clipping and neutral scores are grid points
    if not (0 < resolution <= 1) or not math.isclose(round(1 / resolution) * resolution, 1.0):
        raise ValueError(f"resolution: must divide 1 (e.g. 0.1, 0.05), got {resolution!r}")


def _sentence_moments(rng, row_theta, count, sentence_sd, p_neutral, grid):
    """Mean and sample variance of each row's sentence scores, scores on a 1/grid grid."""
    owner = np.repeat(np.arange(count.size), count)
    latent = row_theta[owner] + sentence_sd * rng.normal(size=owner.size)
    units = np.clip(np.rint(latent * grid), -grid, grid)
    units[rng.random(owner.size) < p_neutral] = 0.0
    # Sums of small integers are exact in float64, so n * sum(u^2) - sum(u)^2 is exactly
    # 0 for tied scores; a two-pass variance in float would leave ~1e-34 instead.
    s1 = np.bincount(owner, units, minlength=count.size)
    s2 = np.bincount(owner, units * units, minlength=count.size)
    n = count.astype(np.float64)
    mean = s1 / (n * grid)
    var = np.zeros_like(n)
    many = count > 1
    var[many] = (n[many] * s2[many] - s1[many] ** 2) / (n[many] * (n[many] - 1) * grid**2)
    return mean, var


# --------------------------------------------------------------------------------------
# Validation and reading
# --------------------------------------------------------------------------------------


def validate_reviews(df: "pd.DataFrame") -> "pd.DataFrame":
    """Check a review table against the schema; return a normalized copy.

    Raises ValueError naming the column and the row (the index label) of the first
    offending entry, for: missing required columns, an empty table, missing review_id or
    rid, non-numeric topic/count/mean/var (or stars, if present), NaN or inf in
    count/mean/var, count < 1 or not a whole number, var < 0, topic not in {0, 1}, and
    duplicated (review_id, topic) pairs. `var` is not checked when count == 1 (it is
    undefined there and ignored). The copy has int64 topic and count, float64 mean and var.
    """
    pd = _pandas()
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"reviews: expected a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(
            f"{missing[0]}: required column missing (missing {missing}; columns are {list(df.columns)})"
        )
    if len(df) == 0:
        raise ValueError("reviews: empty table (0 rows); at least one review is needed")
    out = df.copy()
    for col in ("review_id", "rid"):
        _check_present(out[col], col)
    for col in _NUMERIC_COLUMNS + (("stars",) if "stars" in out.columns else ()):
        out[col] = _numeric_column(out[col], col)
    for col in ("count", "mean", "var"):
        _check_finite_column(out[col], col)
    _first_bad(out["count"], out["count"] < 1, "count", "must be >= 1")
    _first_bad(out["count"], out["count"] % 1 != 0, "count", "must be a whole number of sentences")
    _first_bad(out["var"], out["var"] < 0, "var", "must be >= 0")
    _first_bad(out["topic"], ~out["topic"].isin(list(ASPECTS)), "topic", "must be 0 (food) or 1 (service)")
    _check_unique_pairs(out)
    out["topic"] = out["topic"].astype(np.int64)
    out["count"] = out["count"].astype(np.int64)
    return out


def _plain(value):
    # numpy 2 reprs read np.int64(3); messages should show 3
    return value.item() if isinstance(value, np.generic) else value


def _row(series, position: int) -> str:
    return f"row {_plain(series.index[position])!r}"


def _first_bad(series, bad, col: str, why: str) -> None:
    hits = np.flatnonzero(np.asarray(bad, dtype=bool))
    if hits.size:
        i = int(hits[0])
        raise ValueError(f"{col}[{_row(series, i)}]: {why}, got {_plain(series.iloc[i])!r}")


def _check_present(series, col: str) -> None:
    # a missing rid would silently vanish from a groupby; a missing review_id has no name
    _first_bad(series, series.isna().to_numpy(), col, "missing value")


def _numeric_column(series, col: str):
    pd = _pandas()
    if pd.api.types.is_bool_dtype(series.dtype):
        raise ValueError(f"{col}[{_row(series, 0)}]: expected numbers, got booleans")
    if pd.api.types.is_numeric_dtype(series.dtype):
        return series.astype(np.float64)
    # object / string columns: numbers stored as text ("3") are rejected too, as GroupData does
    values = []
    for i, v in enumerate(series.tolist()):
        if pd.api.types.is_scalar(v) and pd.isna(v):
            values.append(math.nan)  # missing: reported by the finiteness / range checks
        elif isinstance(v, (str, bytes, bool, np.bool_)) or not _is_number(v):
            raise ValueError(f"{col}[{_row(series, i)}]: non-numeric value {v!r}")
        else:
            values.append(float(v))
    return pd.Series(values, index=series.index, dtype=np.float64)


def _is_number(v: Any) -> bool:
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return True


def _check_finite_column(series, col: str) -> None:
    values = series.to_numpy(dtype=np.float64)
    hits = np.flatnonzero(~np.isfinite(values))
    if hits.size:
        i = int(hits[0])
        kind = "NaN" if np.isnan(values[i]) else "inf"
        hint = " (write 0 for one-sentence reviews)" if col == "var" else ""
        raise ValueError(f"{col}[{_row(series, i)}]: {kind} is not allowed{hint}")


def _check_unique_pairs(df) -> None:
    dup = df.duplicated(["review_id", "topic"], keep=False).to_numpy()
    later = df.duplicated(["review_id", "topic"], keep="first").to_numpy()
    if later.any():
        i = int(np.flatnonzero(later)[0])
        key = (df["review_id"].iloc[i], df["topic"].iloc[i])
        same = np.flatnonzero(dup & (df["review_id"] == key[0]).to_numpy() & (df["topic"] == key[1]).to_numpy())
        raise ValueError(
            f"review_id, topic[{_row(df, i)}]: duplicated pair ({key[0]!r}, {int(key[1])}), "
            f"first seen at {_row(df, int(same[0]))}"
        )


def read_reviews(path) -> "pd.DataFrame":
    """Read a review table from CSV (``.csv``, ``.csv.gz``) or Parquet (``.parquet``,
    ``.pq``), chosen by suffix, and validate it (see `validate_reviews`).

    CSV ids are read as strings so that identifiers such as "007" survive; model ids are
    strings either way (`model_id`), so this does not change them.
    """
    pd = _pandas()
    path = Path(path)
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes[-1:] == [".csv"] or suffixes[-2:] == [".csv", ".gz"]:
        df = pd.read_csv(path, dtype={"review_id": str, "rid": str})
    elif suffixes[-1:] in ([".parquet"], [".pq"]):
        df = pd.read_parquet(path)
    else:
        raise ValueError(f"{path}: unknown file type {path.suffix!r}; expected .csv, .csv.gz, .parquet or .pq")
    return validate_reviews(df)


# --------------------------------------------------------------------------------------
# Standard errors: the variance rule
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StandardErrors:
    """Per-row y and sigma after the variance rule.

    `table` holds the kept rows (all rows unless rule == "drop") with the input columns
    plus ``y`` (= mean), ``sigma`` and ``sigma_source``, one of "observed" (sqrt(var /
    count) as given), "restaurant_pool", "aspect_pool" (variance imputed from the
    restaurant-aspect's or the aspect's pool) or "floor" (sigma raised to the floor).
    `n_touched` counts input rows whose sigma is not the plain sqrt(var / count):
    imputed, floored or dropped.
    """

    table: "pd.DataFrame"
    rule: str
    floor: float
    n_touched: int
    n_dropped: int

    @property
    def y(self) -> np.ndarray:
        return self.table["y"].to_numpy(dtype=np.float64)

    @property
    def sigma(self) -> np.ndarray:
        return self.table["sigma"].to_numpy(dtype=np.float64)

    def sources(self) -> dict[str, int]:
        """How many kept rows got their sigma from each source."""
        counts = self.table["sigma_source"].value_counts()
        return {k: int(counts.get(k, 0)) for k in ("observed", "restaurant_pool", "aspect_pool", "floor")}


def review_standard_errors(
    df: "pd.DataFrame", rule: str = "pooled", floor: float = DEFAULT_SIGMA_FLOOR, ddof: int = 1
) -> StandardErrors:
    """y_j = mean_j and sigma_j = max(sqrt(s_j^2 / n_j), floor) for every row.

    A row is *usable* when count >= 2 and var > 0; the others get `rule` (see the module
    docstring): "pooled" imputes s_j^2 from the pooled variance
    sum_i (n_i - 1) s_i^2 / sum_i (n_i - 1) over the usable reviews of the same
    restaurant-aspect, else of the same aspect, else leaves the floor; "floor" relies
    on the floor; "drop" drops the row. `ddof` says how the table's `var` was computed:
    1 (sample variance, the schema's convention) or 0 (population variance, converted
    with s^2 = var * n / (n - 1)). The standard error of a mean is s / sqrt(n)
    (BDA3 section 5.5, sigma_j^2 = sigma^2 / n_j).
    """
    _check_rule_args(rule, floor, ddof)
    return _standard_errors(validate_reviews(df), rule, float(floor), ddof)


def _check_rule_args(rule: str, floor: float, ddof: int) -> None:
    if rule not in RULES:
        raise ValueError(f"rule: must be one of {RULES}, got {rule!r}")
    try:
        ok = math.isfinite(float(floor)) and float(floor) > 0 and not isinstance(floor, (bool, str))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"floor: must be a finite number > 0, got {floor!r}")
    if ddof not in (0, 1) or isinstance(ddof, bool):
        raise ValueError(f"ddof: must be 0 or 1, got {ddof!r}")


def _standard_errors(table, rule: str, floor: float, ddof: int) -> StandardErrors:
    """`review_standard_errors` on an already validated table."""
    pd = _pandas()
    n = table["count"].to_numpy(dtype=np.float64)
    s2 = _sample_variance(table["var"].to_numpy(dtype=np.float64), n, ddof)
    usable = (n >= 2) & (s2 > 0)
    source = np.where(usable, "observed", "floor").astype(object)

    if rule == "pooled":
        s2, source = _impute_pooled(table, n, s2, usable, source)
    elif rule == "floor":
        s2 = np.where(usable, s2, 0.0)  # a one-sentence "variance" is not data
    else:
        table, n, s2, source = table[usable], n[usable], s2[usable], source[usable]

    raw_sigma = np.sqrt(s2 / n)
    source[raw_sigma < floor] = "floor"
    table = table.assign(
        y=table["mean"].to_numpy(dtype=np.float64),
        sigma=np.maximum(raw_sigma, floor),
        sigma_source=pd.Series(source, index=table.index, dtype=object),
    )
    n_dropped = int((~usable).sum()) if rule == "drop" else 0
    n_touched = int((source != "observed").sum()) + n_dropped
    return StandardErrors(table, rule, floor, n_touched, n_dropped)


def _sample_variance(var: np.ndarray, n: np.ndarray, ddof: int) -> np.ndarray:
    if ddof == 1:
        return var
    # Bessel's correction; count == 1 rows are unusable either way
    return np.where(n >= 2, var * n / np.maximum(n - 1, 1), 0.0)


def _impute_pooled(table, n, s2, usable, source):
    """Replace unusable variances by the restaurant-aspect pool, else the aspect pool."""
    dof = np.where(usable, n - 1, 0.0)
    ss = np.where(usable, dof * s2, 0.0)
    keys = table[["rid", "topic"]]
    local_ss = _group_sum(ss, [keys["rid"], keys["topic"]])
    local_dof = _group_sum(dof, [keys["rid"], keys["topic"]])
    aspect_ss = _group_sum(ss, [keys["topic"]])
    aspect_dof = _group_sum(dof, [keys["topic"]])

    with np.errstate(divide="ignore", invalid="ignore"):
        local = np.where(local_dof > 0, local_ss / local_dof, np.nan)
        aspect = np.where(aspect_dof > 0, aspect_ss / aspect_dof, np.nan)
    use_local = ~usable & (local_dof > 0)
    use_aspect = ~usable & ~use_local & (aspect_dof > 0)
    out = np.where(usable, s2, 0.0)  # 0 -> sigma 0 -> the floor, when no pool exists
    out = np.where(use_local, local, out)
    out = np.where(use_aspect, aspect, out)
    source = source.copy()
    source[use_local] = "restaurant_pool"
    source[use_aspect] = "aspect_pool"
    return out, source


def _group_sum(values: np.ndarray, by) -> np.ndarray:
    pd = _pandas()
    return pd.Series(values).groupby([np.asarray(b) for b in by], sort=False).transform("sum").to_numpy()


# --------------------------------------------------------------------------------------
# One model per restaurant-aspect
# --------------------------------------------------------------------------------------


def model_id(rid, topic: int) -> str:
    """The model id of a restaurant-aspect: f"{rid}:{topic}", e.g. "17:0" (food of 17).

    Strings, so that they serve as dict keys, file names and JSON keys, and do not depend
    on whether rid was read as int or str. Parse with ``mid.rsplit(":", 1)``.
    """
    return f"{rid}:{int(topic)}"


@dataclass
class ModelsReport:
    """What `to_models` did.

    n_rows: input rows; n_touched: rows touched by the variance rule (imputed, floored or
    dropped); n_dropped_rows: rows dropped by rule "drop"; sigma_sources: kept rows per
    sigma source (see `StandardErrors`); n_restaurant_aspects: distinct (rid, topic) in
    the input; n_models: models returned; dropped_models: model id -> reason;
    standard_errors: the per-review `StandardErrors` the models were built from.
    """

    rule: str
    floor: float
    min_reviews: int
    n_rows: int
    n_touched: int
    n_dropped_rows: int
    sigma_sources: dict[str, int]
    n_restaurant_aspects: int
    n_models: int
    dropped_models: dict[str, str] = field(default_factory=dict, repr=False)
    standard_errors: Any = field(default=None, repr=False)

    @property
    def n_dropped_models(self) -> int:
        return len(self.dropped_models)

    def summary(self) -> str:
        """A few lines for logs: counts, and the drop reasons with how often each occurs."""
        reasons: dict[str, int] = {}
        for why in self.dropped_models.values():
            reasons[why] = reasons.get(why, 0) + 1
        lines = [
            f"{self.n_models} of {self.n_restaurant_aspects} restaurant-aspects kept "
            f"({self.n_dropped_models} dropped); {self.n_rows} rows",
            f"variance rule {self.rule!r} (floor {self.floor:g}) touched {self.n_touched} rows "
            f"(dropped {self.n_dropped_rows}); sigma sources {self.sigma_sources}",
        ]
        lines += [f"  dropped, {why}: {k}" for why, k in sorted(reasons.items())]
        return "\n".join(lines)


def to_models(
    df: "pd.DataFrame",
    rule: str = "pooled",
    min_reviews: int = 1,
    floor: float = DEFAULT_SIGMA_FLOOR,
    ddof: int = 1,
) -> tuple[list[str], list[GroupData], ModelsReport]:
    """One `GroupData` per (restaurant, aspect): y = review means, sigma from the rule.

    Returns (model_ids, groups, report). Model ids are `model_id(rid, topic)` strings;
    models come in order of each restaurant's first row in the table, food before
    service; within a model, reviews keep their table order and `names` are the
    review_ids as strings. A restaurant-aspect with fewer than `min_reviews` reviews
    left after the rule is dropped and listed in `report.dropped_models` with the reason.
    """
    if int(min_reviews) != min_reviews or min_reviews < 1:
        raise ValueError(f"min_reviews: must be an integer >= 1, got {min_reviews!r}")
    _check_rule_args(rule, floor, ddof)
    table = validate_reviews(df)
    se = _standard_errors(table, rule, float(floor), ddof)
    all_keys = _ordered_keys(table)
    by_pair = dict(iter(se.table.groupby(["rid", "topic"], sort=False)))

    ids, groups, dropped = [], [], {}
    seen: dict[str, Any] = {}
    for rid, topic in all_keys:
        mid = model_id(rid, topic)
        if mid in seen:  # (rid, topic) pairs are distinct, so the rids differ
            raise ValueError(
                f"rid: restaurants {_plain(seen[mid])!r} and {_plain(rid)!r} give the same model id {mid!r}"
            )
        seen[mid] = rid
        part = by_pair.get((rid, topic))
        n_left = 0 if part is None else len(part)
        if n_left < min_reviews:
            dropped[mid] = _drop_reason(n_left, min_reviews, rule)
            continue
        ids.append(mid)
        groups.append(GroupData(part["y"].to_numpy(), part["sigma"].to_numpy(),
                                names=[str(r) for r in part["review_id"]]))
    report = ModelsReport(
        rule=rule, floor=se.floor, min_reviews=int(min_reviews), n_rows=len(df),
        n_touched=se.n_touched, n_dropped_rows=se.n_dropped, sigma_sources=se.sources(),
        n_restaurant_aspects=len(all_keys), n_models=len(ids), dropped_models=dropped,
        standard_errors=se,
    )
    return ids, groups, report


def _ordered_keys(table) -> list[tuple[Any, int]]:
    """(rid, topic) pairs: restaurants by first appearance, then topic ascending.

    First appearance rather than sorting keeps the order defined for rids of mixed types.
    """
    pd = _pandas()
    codes, uniques = pd.factorize(table["rid"])
    pairs = pd.DataFrame({"code": codes, "topic": table["topic"].to_numpy()}).drop_duplicates()
    pairs = pairs.sort_values(["code", "topic"], kind="stable")
    return [(uniques[c], int(t)) for c, t in zip(pairs["code"], pairs["topic"])]


def _drop_reason(n_left: int, min_reviews: int, rule: str) -> str:
    if n_left == 0:
        return f"no reviews left after rule {rule!r}"
    return f"{n_left} review(s) < min_reviews={min_reviews}"
