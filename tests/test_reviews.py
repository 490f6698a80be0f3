"""Tests for hnnjax.reviews: synthetic tables, validation, the variance rule, to_models."""

import math
import subprocess
import sys

import numpy as np
import pytest

pd = pytest.importorskip("pandas")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from hnnjax.data import GroupData  # noqa: E402
from hnnjax.reviews import (  # noqa: E402
    DEFAULT_SIGMA_FLOOR,
    REQUIRED_COLUMNS,
    RULES,
    model_id,
    read_reviews,
    review_standard_errors,
    synthetic_reviews,
    to_models,
    validate_reviews,
)


@pytest.fixture(scope="module")
def synth():
    return synthetic_reviews(300, seed=0)


# ---------------------------------------------------------------- synthetic_reviews


def test_synthetic_schema(synth):
    assert list(synth.columns) == list(REQUIRED_COLUMNS) + ["stars"]
    for col in ("rid", "topic", "count", "stars"):
        assert synth[col].dtype == np.int64, col
    assert set(synth["topic"]) == {0, 1}
    assert (synth["count"] >= 1).all()
    assert synth["mean"].between(-1, 1).all()
    assert (synth["var"] >= 0).all()
    assert (synth.loc[synth["count"] == 1, "var"] == 0).all()
    assert synth["stars"].between(1, 5).all()
    assert not synth.duplicated(["review_id", "topic"]).any()
    validate_reviews(synth)  # passes its own schema


def test_synthetic_deterministic():
    a = synthetic_reviews(40, seed=7)
    pd.testing.assert_frame_equal(a, synthetic_reviews(40, seed=7))
    b = synthetic_reviews(40, seed=8)
    assert len(a) != len(b) or not a.equals(b)


def test_synthetic_realism(synth):
    per_restaurant = synth.groupby("rid")["review_id"].nunique()
    assert per_restaurant.min() >= 1 and per_restaurant.max() <= 200
    assert per_restaurant.index.size == 300  # every restaurant has at least one review
    assert (per_restaurant == 1).any() and per_restaurant.max() > 50  # heavy tail
    one = (synth["count"] == 1).mean()
    assert 0.3 < one < 0.6  # a good share of one-sentence mentions
    assert ((synth["count"] > 1) & (synth["var"] == 0)).any()  # exact ties
    aspects_per_review = synth.groupby("review_id")["topic"].nunique()
    assert (aspects_per_review == 1).any() and (aspects_per_review == 2).any()
    assert synth[["mean", "stars"]].corr().iloc[0, 1] > 0.2


def test_synthetic_truth_and_bounds():
    df = synthetic_reviews(20, seed=3, max_reviews=5, with_truth=True)
    assert {"quality", "theta"} <= set(df.columns)
    assert df.groupby("rid")["review_id"].nunique().max() <= 5
    with pytest.raises(ValueError, match="n_restaurants"):
        synthetic_reviews(0)
    with pytest.raises(ValueError, match="resolution"):
        synthetic_reviews(3, resolution=0.3)


# ---------------------------------------------------------------- validate_reviews


def _table(index=None):
    df = pd.DataFrame({
        "review_id": ["a", "b", "c", "d"],
        "rid": [1, 1, 2, 2],
        "topic": [0, 1, 0, 0],
        "count": [3, 1, 2, 4],
        "mean": [0.2, -0.1, 0.5, 0.0],
        "var": [0.04, 0.0, 0.02, 0.0],
        "stars": [4, 3, 5, 3],
    })
    if index is not None:
        df.index = index
    return df


def _with(col, row, value):
    """The table with df.loc[row, col] = value; index labels 100..103 so that a label
    (not a position) must appear in the message."""
    df = _table(index=[100, 101, 102, 103])
    df[col] = df[col].astype(object)
    df.loc[row, col] = value
    return df


@pytest.mark.parametrize(
    "df, col, row",
    [
        (_with("mean", 102, "good"), "mean", 102),
        (_with("count", 101, "3"), "count", 101),
        (_with("topic", 103, "food"), "topic", 103),
        (_with("stars", 100, "five"), "stars", 100),
        (_with("count", 102, np.nan), "count", 102),
        (_with("mean", 101, np.inf), "mean", 101),
        (_with("var", 103, np.nan), "var", 103),
        (_with("var", 100, -np.inf), "var", 100),
        (_with("count", 103, 0), "count", 103),
        (_with("count", 100, 1.5), "count", 100),
        (_with("var", 102, -0.01), "var", 102),
        (_with("topic", 101, 2), "topic", 101),
        (_with("topic", 101, None), "topic", 101),
        (_with("rid", 102, None), "rid", 102),
        (_with("review_id", 100, None), "review_id", 100),
        (_with("review_id", 103, "c"), "review_id, topic", 103),
    ],
)
def test_validation_names_column_and_row(df, col, row):
    with pytest.raises(ValueError) as info:
        validate_reviews(df)
    msg = str(info.value)
    assert msg.startswith(f"{col}[row {row}]"), msg


def test_duplicate_reports_first_occurrence():
    with pytest.raises(ValueError, match=r"first seen at row 102"):
        validate_reviews(_with("review_id", 103, "c"))


@pytest.mark.parametrize("col", REQUIRED_COLUMNS)
def test_missing_column(col):
    with pytest.raises(ValueError, match=rf"^{col}: required column missing"):
        validate_reviews(_table().drop(columns=[col]))


def test_empty_table_and_wrong_type():
    with pytest.raises(ValueError, match="empty table"):
        validate_reviews(_table().iloc[:0])
    with pytest.raises(TypeError):
        validate_reviews({"review_id": [1]})


def test_booleans_rejected():
    df = _table()
    df["topic"] = [False, True, False, False]
    with pytest.raises(ValueError, match=r"^topic\[row 0\]: expected numbers"):
        validate_reviews(df)


def test_validate_normalizes_and_copies():
    df = _table()
    df["count"] = df["count"].astype(float)
    out = validate_reviews(df)
    assert out["count"].dtype == np.int64 and df["count"].dtype == np.float64
    assert out is not df
    # count == 1 rows may carry any (ignored) var, but not a negative one
    validate_reviews(_with("var", 101, 0.3))


# ---------------------------------------------------------------- the variance rule


def _hand_table():
    """Hand-made table; pooled variances worked out below.

    A:food usable reviews a1 (n=3, s2=0.04, dof 2), a2 (n=5, s2=0.09, dof 4):
        pool = (2*0.04 + 4*0.09) / 6 = 0.44 / 6.
    food over all restaurants adds c1 (n=2, s2=0.5, dof 1): pool = 0.94 / 7.
    service has no usable review anywhere: floor.
    t1 is usable but sqrt(1e-6 / 100) = 1e-4 < floor: floored.
    """
    return pd.DataFrame({
        "review_id": ["a1", "a2", "a3", "a4", "b1", "c1", "t1", "a1"],
        "rid": ["A", "A", "A", "A", "B", "C", "C", "A"],
        "topic": [0, 0, 0, 0, 0, 0, 0, 1],
        "count": [3, 5, 1, 4, 1, 2, 100, 1],
        "mean": [0.1, 0.3, 0.9, -0.2, 0.4, 0.0, 0.5, 0.7],
        "var": [0.04, 0.09, 0.0, 0.0, 0.0, 0.5, 1e-6, 0.0],
    })


LOCAL = 0.44 / 6
ASPECT = (0.44 + 1e-6 * 99 + 0.5) / (6 + 1 + 99)  # t1 (n=100) is usable and pooled too


def test_pooled_arithmetic():
    se = review_standard_errors(_hand_table(), rule="pooled")
    t = se.table
    expected = [
        math.sqrt(0.04 / 3), math.sqrt(0.09 / 5),  # observed
        math.sqrt(LOCAL / 1), math.sqrt(LOCAL / 4),  # A:food pool
        math.sqrt(ASPECT / 1),  # B:food has no usable review -> food pool
        math.sqrt(0.5 / 2),  # observed
        DEFAULT_SIGMA_FLOOR,  # 1e-4 floored
        DEFAULT_SIGMA_FLOOR,  # no usable service review at all
    ]
    np.testing.assert_allclose(se.sigma, expected, rtol=1e-12)
    np.testing.assert_array_equal(se.y, _hand_table()["mean"])
    assert list(t["sigma_source"]) == [
        "observed", "observed", "restaurant_pool", "restaurant_pool",
        "aspect_pool", "observed", "floor", "floor",
    ]
    assert se.n_touched == 5 and se.n_dropped == 0
    assert se.sources() == {"observed": 3, "restaurant_pool": 2, "aspect_pool": 1, "floor": 2}


def test_floor_and_drop_rules():
    floor = review_standard_errors(_hand_table(), rule="floor", floor=0.05)
    np.testing.assert_allclose(
        floor.sigma, [math.sqrt(0.04 / 3), math.sqrt(0.09 / 5), 0.05, 0.05, 0.05, 0.5, 0.05, 0.05]
    )
    assert floor.n_touched == 5

    drop = review_standard_errors(_hand_table(), rule="drop")
    assert list(drop.table["review_id"]) == ["a1", "a2", "c1", "t1"]
    assert drop.n_dropped == 4 and drop.n_touched == 5  # 4 dropped + t1 floored


def test_population_variance_is_converted():
    df = _hand_table()
    df["var"] = df["var"] * (df["count"] - 1) / df["count"]  # what ddof=0 would have written
    pop = review_standard_errors(df, ddof=0)
    np.testing.assert_allclose(pop.sigma, review_standard_errors(_hand_table()).sigma, rtol=1e-12)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"rule": "mean"}, "rule"), ({"floor": 0.0}, "floor"), ({"floor": math.nan}, "floor"),
     ({"floor": "x"}, "floor"), ({"ddof": 2}, "ddof")],
)
def test_rule_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        review_standard_errors(_hand_table(), **kwargs)


# ---------------------------------------------------------------- to_models


def test_to_models_hand_table():
    ids, groups, report = to_models(_hand_table())
    assert ids == ["A:0", "A:1", "B:0", "C:0"]
    assert [g.J for g in groups] == [4, 1, 1, 2]
    assert all(isinstance(g, GroupData) for g in groups)
    assert groups[0].names == ("a1", "a2", "a3", "a4")
    np.testing.assert_allclose(groups[0].y, [0.1, 0.3, 0.9, -0.2])
    np.testing.assert_allclose(groups[0].sigma[2], math.sqrt(LOCAL))
    assert report.n_restaurant_aspects == 4 and report.n_models == 4
    assert report.n_touched == 5 and report.n_rows == 8 and report.dropped_models == {}


def test_to_models_drops_and_reasons():
    ids, groups, report = to_models(_hand_table(), rule="drop", min_reviews=2)
    assert ids == ["A:0", "C:0"]
    assert [g.names for g in groups] == [("a1", "a2"), ("c1", "t1")]
    assert report.dropped_models == {
        "A:1": "no reviews left after rule 'drop'",
        "B:0": "no reviews left after rule 'drop'",
    }
    assert report.n_dropped_models == 2 and report.n_dropped_rows == 4
    _, _, report = to_models(_hand_table(), min_reviews=3)
    assert report.dropped_models == {
        "A:1": "1 review(s) < min_reviews=3",
        "B:0": "1 review(s) < min_reviews=3",
        "C:0": "2 review(s) < min_reviews=3",
    }
    assert "dropped" in report.summary()
    with pytest.raises(ValueError, match="min_reviews"):
        to_models(_hand_table(), min_reviews=0)


def test_to_models_synthetic(synth):
    ids, groups, report = to_models(synth)
    pairs = synth[["rid", "topic"]].drop_duplicates()
    assert len(ids) == len(groups) == len(pairs) == report.n_restaurant_aspects
    assert len(set(ids)) == len(ids)
    assert set(ids) == {model_id(r, t) for r, t in pairs.itertuples(index=False)}
    assert sum(g.J for g in groups) == len(synth)
    sizes = dict(zip(ids, (g.J for g in groups)))
    counted = synth.groupby(["rid", "topic"]).size()
    assert all(sizes[model_id(r, t)] == n for (r, t), n in counted.items())
    assert report.n_touched == ((synth["count"] == 1) | (synth["var"] == 0)).sum()


def test_model_id():
    assert model_id(17, 0) == "17:0"
    assert model_id("x:y", np.int64(1)).rsplit(":", 1) == ["x:y", "1"]


# ---------------------------------------------------------------- reading


def test_read_roundtrip(tmp_path):
    df = _table()
    df["rid"] = ["007", "007", "8", "8"]
    df.to_csv(tmp_path / "r.csv", index=False)
    got = read_reviews(tmp_path / "r.csv")
    assert list(got["rid"]) == ["007", "007", "8", "8"]
    np.testing.assert_allclose(got["var"], df["var"])
    df.to_parquet(tmp_path / "r.parquet", index=False)
    assert to_models(read_reviews(tmp_path / "r.parquet"))[0] == ["007:0", "007:1", "8:0"]
    with pytest.raises(ValueError, match="unknown file type"):
        read_reviews(tmp_path / "r.json")
    _with("count", 102, 0).to_csv(tmp_path / "bad.csv")  # index written as a column
    with pytest.raises(ValueError, match=r"^count\[row 2\]"):
        read_reviews(tmp_path / "bad.csv")


def test_module_imports_without_pandas():
    code = (
        "import sys; sys.modules['pandas'] = None\n"
        "import hnnjax.reviews as r\n"
        "try:\n    r.synthetic_reviews(2)\nexcept ImportError as e:\n    print('tables' in str(e))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"


# ---------------------------------------------------------------- property tests


_row = st.tuples(
    st.sampled_from(["p", "q", "r"]),  # rid
    st.sampled_from([0, 1]),  # topic
    st.integers(1, 6),  # count
    st.floats(-1, 1),  # mean
    st.one_of(st.just(0.0), st.floats(0, 2), st.floats(0, 1e-12)),  # var
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(_row, min_size=1, max_size=25), rule=st.sampled_from(RULES),
       floor=st.floats(1e-6, 0.5))
def test_every_model_has_positive_finite_sigma(rows, rule, floor):
    df = pd.DataFrame(rows, columns=["rid", "topic", "count", "mean", "var"])
    df.insert(0, "review_id", range(len(df)))
    ids, groups, report = to_models(df, rule=rule, floor=floor)
    for g in groups:
        assert np.all(np.isfinite(g.sigma)) and np.all(g.sigma >= floor)
    assert len(ids) + report.n_dropped_models == report.n_restaurant_aspects
    assert sum(g.J for g in groups) + report.n_dropped_rows == len(df)
    assert report.n_touched >= report.n_dropped_rows


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_synthetic_models_valid_for_any_seed(seed):
    df = synthetic_reviews(5, seed=seed, max_reviews=40)
    ids, groups, _ = to_models(df)
    assert all(np.all(np.isfinite(g.sigma)) and np.all(g.sigma > 0) for g in groups)
    assert all(np.all(np.abs(g.y) <= 1) for g in groups)


def test_model_ids_must_be_unique():
    df = _hand_table()
    df["rid"] = df["rid"].astype(object)
    df.loc[4, "rid"] = 1
    df.loc[5, "rid"] = "1"
    with pytest.raises(ValueError, match=r"^rid: restaurants 1 and '1' give the same model id '1:0'"):
        to_models(df)
