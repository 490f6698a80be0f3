"""The restaurant pipeline: review table -> sample_batch -> shrinkage, mu intervals, rankings.

Synthetic tables use max_reviews=8, so every model has padded size 8 and the fits share
tests/test_batch.py's compiled program (4 chains, 100 + 50 iterations, 2 models a chunk).
"""

import functools

import numpy as np
import pandas as pd
import pytest

from hnnjax import cli, reviews
from hnnjax.restaurants import fit_restaurants, output_paths, rank_probabilities

SMALL = dict(chains=4, warmup=100, draws=50, chunk_size=2, progress=False)


@pytest.fixture(scope="module")
def table():
    return reviews.synthetic_reviews(30, seed=5, max_reviews=8)


@pytest.fixture(scope="module")
def res(table):
    return fit_restaurants(table, top_k=10, seed=1, **SMALL)


def test_end_to_end_tables(res, table):
    ids, groups, report = reviews.to_models(table)
    a = res.aspects
    assert list(a["model"]) == ids and len(a) == len(groups) > 50
    assert set(a["aspect"]) == {"food", "service"}
    assert (a["n_reviews"].to_numpy() == [g.J for g in groups]).all()
    assert (a["mu_q5"] <= a["mu_q50"]).all() and (a["mu_q50"] <= a["mu_q95"]).all()
    assert set(a["status"]) <= {"ok", "unconverged"}
    # one shrinkage row per review-aspect row, every one fitted
    r = res.reviews
    assert len(r) == len(table)
    assert r[["theta_mean", "theta_sd", "mu_mean"]].notna().all().all()
    np.testing.assert_array_equal(r["y"], table["mean"])
    row = r.iloc[0]
    g = res.batch.groups.to_pandas().loc[row["model"]]
    assert row["theta_mean"] == g.loc[g["group"] == str(row["review_id"]), "mean"].item()
    assert res.models_report.n_touched == report.n_touched > 0


def test_ranking_probabilities_sum_to_k(res):
    rk = res.ranking
    for aspect, part in rk.groupby("aspect"):
        n = len(part)
        assert part["p_top_k"].sum() == pytest.approx(min(10, n))
        assert part["expected_rank"].sum() == pytest.approx(n * (n + 1) / 2)
        assert list(part["rank"]) == list(range(1, n + 1))
        assert part["expected_rank"].is_monotonic_increasing
    # the aspect table carries the same figures
    merged = res.aspects.set_index("model").loc[rk["model"]]
    np.testing.assert_array_equal(merged["p_top_k"], rk["p_top_k"])


def test_ranking_uses_the_joint_draws(res):
    mu = res.batch.draws["mu"]
    food = res.ranking[res.ranking["topic"] == 0]
    d = np.stack([mu[m].reshape(-1) for m in food["model"]])
    p, e = rank_probabilities(d, 10)
    np.testing.assert_allclose(p, food["p_top_k"])
    np.testing.assert_allclose(e, food["expected_rank"])
    # by hand: the rank of each restaurant at every joint draw (1 = largest mu)
    ranks = 1 + (d[None, :, :] > d[:, None, :]).sum(axis=1)
    np.testing.assert_allclose(p, (ranks <= 10).mean(axis=1))
    np.testing.assert_allclose(e, ranks.mean(axis=1))


def test_rank_probabilities_exact_cases():
    sure = np.array([[3.0, 3.1], [2.0, 2.1], [1.0, 1.1]])
    p, e = rank_probabilities(sure, 2)
    np.testing.assert_array_equal(p, [1, 1, 0])
    np.testing.assert_array_equal(e, [1, 2, 3])
    coin = np.array([[1.0, 0.0], [0.0, 1.0]])
    p, e = rank_probabilities(coin, 1)
    np.testing.assert_array_equal(p, [0.5, 0.5])
    np.testing.assert_array_equal(e, [1.5, 1.5])
    p, _ = rank_probabilities(sure, 10)  # fewer restaurants than k: all are in the top k
    np.testing.assert_array_equal(p, [1, 1, 1])
    with pytest.raises(ValueError, match="k"):
        rank_probabilities(sure, 0)


def test_report_and_write(res, tmp_path):
    text = res.report()
    assert "share with R-hat > 1.01" in text and "variance rule" in text
    paths = res.write(tmp_path / "out.parquet")
    assert paths == output_paths(tmp_path / "out.parquet")
    assert paths["reviews"].name == "out_reviews.parquet" and paths["ranking"].name == "out_ranking.parquet"
    back = pd.read_parquet(paths["ranking"])
    assert len(back) == len(res.ranking)


def test_cli_writes_its_files(tmp_path, capsys, monkeypatch):
    src = tmp_path / "reviews.csv"
    reviews.synthetic_reviews(6, seed=2, max_reviews=8).to_csv(src, index=False)
    out = tmp_path / "res.parquet"
    args = ["restaurants", str(src), "--out", str(out), "--chains", "4", "--warmup", "100", "--draws", "50",
            "--chunk-size", "2", "--float64", "--no-progress", "--top-k", "3"]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert "share with R-hat > 1.01" in printed and "rows touched by the variance rule" in printed
    for p in output_paths(out).values():
        assert p.exists()
    ranking = pd.read_parquet(output_paths(out)["ranking"])
    assert ranking.groupby("aspect")["p_top_k"].sum().round(9).tolist() == [3.0, 3.0]
    # --synthetic N draws the table instead of reading one
    monkeypatch.setattr(reviews, "synthetic_reviews", functools.partial(reviews.synthetic_reviews, max_reviews=8))
    args_syn = ["restaurants", "--synthetic", "5"] + args[2:]
    assert cli.main(args_syn) == 0
    assert "synthetic_reviews(5" in capsys.readouterr().out
    assert cli.main(["restaurants", "--out", str(out)]) == 2  # neither a file nor --synthetic


class _Captured(Exception):
    pass


def test_sentiment_scale_defaults_reach_sample_batch(table, monkeypatch):
    """The pipeline's defaults (module docstring): the sentiment-scale prior and target
    acceptance 0.95; explicit arguments and the CLI's --prior / --target-accept override them."""
    from hnnjax import HalfNormal, Normal, Prior, restaurants

    seen = []

    def capture(groups, ids, **kw):
        seen.append(kw)
        raise _Captured

    monkeypatch.setattr(restaurants, "sample_batch", capture)
    with pytest.raises(_Captured):
        fit_restaurants(table, progress=False)
    assert seen[-1]["target_accept"] == 0.95
    assert seen[-1]["prior"] == Prior.make(mu=Normal(0.0, 1.0), tau=HalfNormal(0.5))
    with pytest.raises(_Captured):
        fit_restaurants(table, progress=False, prior=Prior.flat(), target_accept=0.8)
    assert seen[-1]["prior"] == Prior.flat() and seen[-1]["target_accept"] == 0.8
    with pytest.raises(_Captured):
        cli.main(["restaurants", "--synthetic", "3", "--out", "unused.parquet", "--prior", "default",
                  "--target-accept", "0.9", "--no-progress"])
    assert seen[-1]["prior"] == Prior.default() and seen[-1]["target_accept"] == 0.9
