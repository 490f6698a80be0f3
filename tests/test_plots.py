"""Figures (hnnjax.plots): each runs on the Agg backend, returns a Figure and saves a PNG."""

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

import hnnjax  # noqa: E402
from hnnjax import plots, pooling, simulate  # noqa: E402

SETTINGS = dict(chains=4, warmup=500, draws=500)  # shared with the other seed-analysis tests
SCHOOLS = hnnjax.datasets.eight_schools()


@pytest.fixture(scope="module")
def fits():
    nc = hnnjax.sample(SCHOOLS, "noncentered", target_accept=0.9, seed=11, **SETTINGS)
    c = hnnjax.sample(SCHOOLS, "centered", target_accept=0.8, seed=0, **SETTINGS)
    return nc, c


def _saved(fig, tmp_path, name):
    from matplotlib.figure import Figure

    assert isinstance(fig, Figure)
    path = tmp_path / f"{name}.png"
    fig.savefig(path, dpi=50)
    assert path.stat().st_size > 1000
    with open(path, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    matplotlib.pyplot.close(fig)


def test_divergence_pair_plot(fits, tmp_path):
    _, centered = fits
    assert centered.divergences > 0  # the plot's point: divergences in the funnel's neck
    fig = plots.divergence_pair_plot(centered)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any("divergent" in t for t in labels)
    _saved(fig, tmp_path, "pair")


def test_trace_and_forest(fits, tmp_path):
    nc, _ = fits
    _saved(plots.trace_plot(nc, thetas=(0, 2)), tmp_path, "trace")
    _saved(plots.forest_plot(nc, exact=hnnjax.exact(SCHOOLS)), tmp_path, "forest")
    _saved(plots.forest_plot(nc.draws, names=list("ABCDEFGH")), tmp_path, "forest_dict")


def test_shrinkage_plot(fits, tmp_path):
    nc, _ = fits
    _saved(plots.shrinkage_plot(SCHOOLS, nc), tmp_path, "shrink_mcmc")
    _saved(plots.shrinkage_plot(SCHOOLS, hnnjax.exact(SCHOOLS, "flat")), tmp_path, "shrink_exact")


def test_marginal_contour(fits, tmp_path):
    nc, _ = fits
    mode = pooling.marginal_mode(SCHOOLS, "flat")
    fig = plots.marginal_contour(SCHOOLS, "flat", mode=mode, draws=nc, n_grid=60)
    _saved(fig, tmp_path, "contour")


def test_rank_histogram_and_divergence_rates(tmp_path):
    rng = np.random.default_rng(0)
    ranks = rng.integers(0, 100, size=(200, 10))
    _saved(plots.rank_histogram(ranks, L=99, names=simulate.parameter_names(8)), tmp_path, "ranks")
    with pytest.raises(ValueError, match="L"):
        plots.rank_histogram(ranks)
    table = hnnjax.Table(["a", "b", "c", "d"], {
        "parametrization": np.array(["centered", "centered", "noncentered", "noncentered"]),
        "tau": np.array([0.5, 5.0, 0.5, 5.0]), "div_rate": np.array([0.05, 0.01, 0.0, 0.0]),
    })
    _saved(plots.divergence_rate_plot(table), tmp_path, "rates")
