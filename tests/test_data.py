"""GroupData validation, padding and loaders (float64 throughout)."""

import numpy as np
import pytest

import hnnjax
from hnnjax.data import GroupData, bucket_size, stack


@pytest.mark.parametrize(
    "y, sigma, field, index",
    [
        ([1.0, float("nan"), 2.0], [1.0, 1.0, 1.0], "y", 1),
        ([1.0, 2.0, float("inf")], [1.0, 1.0, 1.0], "y", 2),
        ([1.0, 2.0], [1.0, float("nan")], "sigma", 1),
        ([1.0, 2.0], [float("-inf"), 1.0], "sigma", 0),
        ([1.0, 2.0, 3.0], [1.0, 0.0, 1.0], "sigma", 1),
        ([1.0, 2.0, 3.0], [1.0, 1.0, -2.0], "sigma", 2),
        ([1.0, "a", 3.0], [1.0, 1.0, 1.0], "y", 1),
        ([1.0, 2.0], [1.0, None], "sigma", 1),
    ],
)
def test_bad_values_name_field_and_index(y, sigma, field, index):
    with pytest.raises(ValueError, match=rf"^{field}\[{index}\]"):
        GroupData(y, sigma)


def test_length_mismatch_names_sigma():
    with pytest.raises(ValueError, match=r"sigma: length mismatch"):
        GroupData([1.0, 2.0, 3.0], [1.0, 2.0])


def test_names_length_mismatch():
    with pytest.raises(ValueError, match=r"names: length mismatch"):
        GroupData([1.0, 2.0], [1.0, 2.0], names=["a"])


@pytest.mark.parametrize("y, sigma, field", [([], [], "y"), ([1.0], [], "sigma")])
def test_empty_input(y, sigma, field):
    with pytest.raises(ValueError, match=rf"^{field}: no groups"):
        GroupData(y, sigma)


def test_string_and_2d_inputs_rejected():
    with pytest.raises(ValueError, match="^y:"):
        GroupData("123", [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="^sigma:"):
        GroupData([1.0, 2.0], [[1.0, 2.0]])


def test_eight_schools_values():
    d = hnnjax.datasets.eight_schools()
    assert d.J == 8 and d.names == tuple("ABCDEFGH")
    np.testing.assert_array_equal(d.y, [28, 8, -3, 7, -1, 1, 18, 12])
    np.testing.assert_array_equal(d.sigma, [15, 10, 16, 11, 9, 11, 10, 18])


def test_padding_and_stack():
    d = GroupData([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    p = d.padded()
    assert p.y.shape == (8,)
    np.testing.assert_array_equal(p.mask, [1, 1, 1, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(p.sigma[3:], 1.0)  # padding stays finite
    batch = stack([d, hnnjax.datasets.eight_schools()], 12)
    assert batch.y.shape == (2, 12) and batch.mask.sum() == 11
    with pytest.raises(ValueError, match="^size"):
        hnnjax.datasets.eight_schools().padded(4)


def test_bucket_ladder_bounds_waste():
    sizes = [bucket_size(j) for j in range(1, 5000)]
    assert all(s >= j for j, s in zip(range(1, 5000), sizes))
    assert all(s < 1.5 * j for j, s in zip(range(1, 5000), sizes) if j > 8)
    assert len(set(sizes)) < 25  # few compiled shapes


def test_csv_and_dataframe(tmp_path):
    path = tmp_path / "schools.csv"
    path.write_text("school,y,sigma\nA,28,15\nB,8,10\n")
    d = GroupData.from_csv(path, names="school")
    assert d.names == ("A", "B") and d.y.tolist() == [28.0, 8.0]
    bad = tmp_path / "bad.csv"
    bad.write_text("y,sigma\n1,2\nx,3\n")
    with pytest.raises(ValueError, match=r"^y\[1\]"):
        GroupData.from_csv(bad)
    with pytest.raises(ValueError, match="^sigma: column 'se' not found"):
        GroupData.from_csv(path, sigma="se")
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"effect": [28.0, 8.0], "se": [15.0, -1.0]})
    with pytest.raises(ValueError, match=r"^sigma\[1\]"):
        GroupData.from_dataframe(df, y="effect", sigma="se")
