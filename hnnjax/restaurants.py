"""The restaurant pipeline: review table -> one model per (restaurant, aspect) -> rankings.

Steps (`fit_restaurants`):

1. `reviews.to_models` turns the review table into one `GroupData` per restaurant-aspect
   (y_j = review j's mean sentence sentiment, sigma_j its standard error after the
   variance rule; see `hnnjax.reviews`).
2. `batch.sample_batch` fits them all, keeping the draws of mu only, with the prior and
   target acceptance below.
3. Outputs, as pandas DataFrames:

   * ``aspects``: one row per restaurant-aspect: the posterior of mu (mean, sd and the
     90% central interval q5..q95), of tau, the convergence status, and the ranking
     figures below;
   * ``reviews``: the shrinkage table, one row per review-aspect: observed y and sigma
     next to the posterior mean and sd of that review's theta_j and of its restaurant's
     mu (partial pooling moves theta_j from y_j toward mu, the more so the larger sigma_j
     is relative to tau; BDA3 section 5.5);
   * ``ranking``: per aspect, the restaurants ordered by expected rank, with
     P(rank <= k).

Prior and sampler settings
--------------------------
Sentiment lives on [-1, 1], not on the SAT-score scale of eight schools, so the default
prior is scaled to it: mu ~ Normal(0, 1) (the restaurant-aspect's mean sentiment; the
whole scale within one sd) and tau ~ HalfNormal(0.5) (the spread of review-level opinions
of one restaurant-aspect; P(tau > 1) = 4.6%). Half of the restaurant-aspects have few
reviews, so tau is barely identified and its posterior is close to its prior: under
eight schools' tau ~ HalfCauchy(5) that posterior reaches far beyond the scale (over the
models of one or two reviews, the median of tau's posterior mean is 1.5) and NUTS meets a
funnel there. With
the sentiment-scale prior and a target acceptance of 0.95 (smaller steps for those
funnels), 150 synthetic restaurants (295 models, 4 chains x (1000 + 1000)) went from
30.8% of models with R-hat > 1.01 (eight schools' prior, 0.8) to 2.7%; the prior alone
gives 8.1%, the target acceptance alone 18.3%; the centered parametrization does worse
(40%, with the sentiment prior at 0.8). Both settings are arguments (`prior=`, `target_accept=`).

Ranking under uncertainty
-------------------------
Ranking posterior means ignores that a restaurant with two reviews is far less certain
than one with two hundred. Instead, for each aspect, take the joint posterior of the
restaurants' mu: the models are fitted independently, so draws with the same index s
from different models are a draw from the product of their posteriors. At every draw s,
rank the restaurants by mu^(s) (rank 1 = best), then

    P(rank_r <= k | y) ~= (1/S) sum_s 1[rank_r^(s) <= k],   E[rank_r | y] ~= (1/S) sum_s rank_r^(s)

(the posterior of ranks, as in BDA3 section 2.8's cancer-rate maps and Laird & Louis
1989, "Empirical Bayes ranking methods", J. Educ. Stat. 14(1)). At each draw exactly
min(k, R) of R restaurants rank in the top k, so the probabilities of an aspect sum to
min(k, R). Invalid models have no draws and are left out of the ranking; unconverged
ones are kept and marked in ``status``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import reviews as rv
from .batch import BatchResult, sample_batch
from .model import HalfNormal, Normal, Prior

__all__ = ["fit_restaurants", "RestaurantResults", "rank_probabilities", "output_paths",
           "SENTIMENT_PRIOR", "DEFAULT_TARGET_ACCEPT"]

# The pipeline's defaults (module docstring, "Prior and sampler settings").
SENTIMENT_PRIOR = Prior.make(mu=Normal(0.0, 1.0), tau=HalfNormal(0.5))
DEFAULT_TARGET_ACCEPT = 0.95

_RANK_BLOCK_ELEMENTS = 1 << 22  # restaurants x draws ranked at once: bounds the memory


def rank_probabilities(draws: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """P(rank <= k) and E[rank] of each row of `draws` (R, S): draws of R quantities.

    Rank 1 is the largest value at a draw; ties (probability zero for continuous draws)
    are broken by row order.
    """
    draws = np.asarray(draws, dtype=np.float64)
    if draws.ndim != 2:
        raise ValueError(f"draws: expected (restaurants, draws), got shape {draws.shape}")
    if int(k) < 1:
        raise ValueError(f"k: must be >= 1, got {k}")
    n_rows, n_draws = draws.shape
    top = np.zeros(n_rows)
    rank_sum = np.zeros(n_rows)
    block = max(1, _RANK_BLOCK_ELEMENTS // max(n_rows, 1))
    for start in range(0, n_draws, block):
        cols = draws[:, start:start + block]
        order = np.argsort(-cols, axis=0, kind="stable")
        ranks = np.empty_like(order)
        np.put_along_axis(ranks, order, np.arange(1, n_rows + 1)[:, None], axis=0)
        top += (ranks <= k).sum(axis=1)
        rank_sum += ranks.sum(axis=1)
    return top / n_draws, rank_sum / n_draws


@dataclass
class RestaurantResults:
    """Outputs of `fit_restaurants` (see the module docstring for the tables)."""

    aspects: "pd.DataFrame"  # noqa: F821 - pandas is imported lazily
    reviews: "pd.DataFrame"  # noqa: F821
    ranking: "pd.DataFrame"  # noqa: F821
    models_report: rv.ModelsReport
    batch: BatchResult
    top_k: int
    wall_s: float

    def share_rhat_above(self, threshold: float = 1.01) -> float:
        """Share of fitted models whose largest R-hat exceeds `threshold` (NaN counts)."""
        fitted = self.aspects["status"] != "invalid"
        r = self.aspects.loc[fitted, "r_hat_max"].to_numpy()
        return float(np.mean(~(r <= threshold))) if r.size else float("nan")

    def report(self) -> str:
        """A few lines for the console."""
        st = self.aspects["status"].value_counts()
        rep = self.models_report
        lines = [
            f"restaurant-aspect models: {len(self.aspects)} fitted of {rep.n_restaurant_aspects} "
            f"({rep.n_dropped_models} dropped by to_models); {rep.n_rows} review rows",
            f"wall time {self.wall_s:.1f} s (compile {self.batch.timing['compile_s']:.1f} s, "
            f"sampling {self.batch.timing['run_s']:.1f} s), {self.batch.timing['models_per_s']:.1f} models/s",
            f"status: ok {int(st.get('ok', 0))}, unconverged {int(st.get('unconverged', 0))}, "
            f"invalid {int(st.get('invalid', 0))}",
            f"share with R-hat > 1.01: {self.share_rhat_above(1.01):.1%}",
            f"rows touched by the variance rule ({rep.rule!r}): {rep.n_touched} of {rep.n_rows}",
            f"ranking: P(top {self.top_k}) and expected rank per aspect over "
            f"{len(self.ranking)} restaurant-aspects",
        ]
        return "\n".join(lines)

    def write(self, path) -> dict[str, Path]:
        """Write aspects to `path` and reviews / ranking beside it (`output_paths`)."""
        paths = output_paths(path)
        paths["aspects"].parent.mkdir(parents=True, exist_ok=True)
        for name, frame in (("aspects", self.aspects), ("reviews", self.reviews), ("ranking", self.ranking)):
            _write_frame(frame, paths[name])
        return paths


def output_paths(path) -> dict[str, Path]:
    """results.parquet -> itself, results_reviews.parquet and results_ranking.parquet."""
    p = Path(path)
    return {"aspects": p, "reviews": p.with_name(f"{p.stem}_reviews{p.suffix}"),
            "ranking": p.with_name(f"{p.stem}_ranking{p.suffix}")}


def _write_frame(frame, path: Path) -> None:
    if path.suffix.lower() == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix.lower() in (".parquet", ".pq"):
        frame.to_parquet(path, index=False)
    else:
        raise ValueError(f"out: unknown file type {path.suffix!r}; expected .parquet, .pq or .csv")


def fit_restaurants(
    reviews,
    *,
    rule: str = "pooled",
    min_reviews: int = 1,
    floor: float = rv.DEFAULT_SIGMA_FLOOR,
    ddof: int = 1,
    top_k: int = 10,
    chains: int = 4,
    warmup: int = 1000,
    draws: int = 1000,
    seed: int = 0,
    prior: Prior | None = None,
    target_accept: float = DEFAULT_TARGET_ACCEPT,
    progress: bool = True,
    **batch_options,
) -> RestaurantResults:
    """Fit one hierarchical model per restaurant-aspect of a review table and rank them.

    reviews: a review table (`hnnjax.reviews` schema) or a path to a CSV / Parquet file.
    rule, min_reviews, floor, ddof: passed to `reviews.to_models`.
    top_k: the k of P(rank <= k).
    prior: default `SENTIMENT_PRIOR`; target_accept: default 0.95 (module docstring).
    Other keyword arguments go to `sample_batch` (dtype, chunk_size, out, ...).
    """
    if int(top_k) < 1:
        raise ValueError(f"top_k: must be >= 1, got {top_k}")
    t0 = time.perf_counter()
    table = rv.read_reviews(reviews) if isinstance(reviews, (str, Path)) else reviews
    ids, groups, report = rv.to_models(table, rule=rule, min_reviews=min_reviews, floor=floor, ddof=ddof)
    batch = sample_batch(groups, ids, chains=chains, warmup=warmup, draws=draws, seed=seed,
                         prior=SENTIMENT_PRIOR if prior is None else prior, target_accept=target_accept,
                         progress=progress, keep_draws=("mu",), **batch_options)
    se = report.standard_errors
    aspects = _aspect_table(batch, se.table)
    ranking = _ranking(aspects, batch, int(top_k))
    aspects = aspects.merge(ranking[["model", "p_top_k", "expected_rank"]], on="model", how="left")
    shrinkage = _review_table(se.table, batch, aspects)
    return RestaurantResults(aspects, shrinkage, ranking, report, batch, int(top_k), time.perf_counter() - t0)


def _pair_of_model(table) -> dict:
    """model id -> (rid as in the table, topic)."""
    pairs = table[["rid", "topic"]].drop_duplicates()
    return {rv.model_id(r, t): (r, int(t)) for r, t in zip(pairs["rid"], pairs["topic"])}


def _aspect_table(batch: BatchResult, table):
    import pandas as pd

    m = batch.models.to_pandas().reset_index()
    pair = _pair_of_model(table)
    cols = ["model", "status", "reason", "J", "mu_mean", "mu_sd", "mu_q5", "mu_q50", "mu_q95",
            "tau_mean", "tau_q5", "tau_q95", "r_hat_max", "ess_bulk_min", "divergences"]
    out = m[cols].rename(columns={"J": "n_reviews"})
    out.insert(1, "rid", pd.Series([pair[mid][0] for mid in out["model"]], dtype=object))
    out.insert(2, "topic", np.array([pair[mid][1] for mid in out["model"]], np.int64))
    out.insert(3, "aspect", [rv.ASPECTS[t] for t in out["topic"]])
    return out


def _ranking(aspects, batch: BatchResult, k: int):
    """Per aspect: P(rank <= k) and expected rank from the joint draws of mu."""
    import pandas as pd

    mu = batch.draws["mu"]
    parts = []
    for topic, part in aspects.groupby("topic", sort=True):
        part = part[part["model"].isin(list(mu.keys()))]
        if part.empty:
            continue
        d = np.stack([np.asarray(mu[mid]).reshape(-1) for mid in part["model"]])
        p_top, e_rank = rank_probabilities(d, k)
        frame = part[["model", "rid", "topic", "aspect", "n_reviews", "mu_mean", "mu_q5", "mu_q95", "status"]].copy()
        frame["p_top_k"] = p_top
        frame["expected_rank"] = e_rank
        frame = frame.sort_values(["expected_rank", "model"], kind="stable")
        frame.insert(0, "rank", np.arange(1, len(frame) + 1))
        parts.append(frame)
    if not parts:
        return pd.DataFrame(columns=["rank", "model", "rid", "topic", "aspect", "n_reviews", "mu_mean",
                                     "mu_q5", "mu_q95", "status", "p_top_k", "expected_rank"])
    return pd.concat(parts, ignore_index=True)


def _review_table(se_table, batch: BatchResult, aspects):
    """Observed y, sigma next to the posterior of theta_j and of the restaurant's mu."""
    g = batch.groups.to_pandas().reset_index()
    g = g.rename(columns={"group": "review_key", "mean": "theta_mean", "sd": "theta_sd",
                          "q5": "theta_q5", "q95": "theta_q95"})
    t = se_table.reset_index(drop=True)
    left = t[["rid", "topic", "review_id", "count", "y", "sigma", "sigma_source"]].copy()
    left.insert(0, "model", [rv.model_id(r, tp) for r, tp in zip(t["rid"], t["topic"])])
    left["review_key"] = t["review_id"].astype(str).to_numpy()
    out = left.merge(g[["model", "review_key", "theta_mean", "theta_sd", "theta_q5", "theta_q95"]],
                     on=["model", "review_key"], how="left")
    out = out.merge(aspects[["model", "mu_mean"]], on="model", how="left")
    return out.drop(columns=["review_key"])
