"""Figures of the seeds' analyses (matplotlib is an optional extra: `pip install hnnjax[plots]`).

Every function imports matplotlib when called, draws one figure and returns the
`matplotlib.figure.Figure` (save it with `fig.savefig(path)`); nothing is shown. For use
without a display call `matplotlib.use("Agg")` first (the tests and examples do).

* `divergence_pair_plot`: log tau against theta_1 with divergent transitions highlighted,
  the funnel picture of seeds 000 and 001 (Betancourt & Girolami 2015; Betancourt 2017,
  section 6.2).
* `trace_plot`: chains of mu, log tau and chosen theta_j, one line per chain.
* `forest_plot`: central posterior intervals of each theta_j from MCMC beside the exact
  ones (seed 001's forest plot, with the quadrature reference of `hnnjax.exact`).
* `shrinkage_plot`: posterior mean of theta_j against the observed y_j, with the no-pooling
  diagonal and the complete-pooling line (BDA3 section 5.5, seed 004's "MLE vs posterior mean").
* `marginal_contour`: contours of log p(mu, log tau | y) with its mode and Laplace ellipses
  (BDA3 section 4.1; seed 002's contour plot).
* `rank_histogram`: SBC rank histograms with the 99% band of a uniform histogram
  (Talts et al. 2018, section 4).
* `divergence_rate_plot`: divergence rate against the true tau (`simulate.divergence_study`).
* `pair_plot`: the scatter behind `divergence_pair_plot`, for any two coordinates (radon).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "pair_plot", "divergence_pair_plot", "trace_plot", "forest_plot", "shrinkage_plot",
    "marginal_contour", "rank_histogram", "divergence_rate_plot",
]


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("hnnjax.plots needs matplotlib: pip install 'hnnjax[plots]'") from exc
    return plt


def _axes(ax, figsize):
    plt = _pyplot()
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


def _draws(source) -> dict:
    from .queries import as_draws

    return as_draws(source)


def _diverging(source, shape) -> np.ndarray:
    stats = getattr(source, "stats", None)
    if stats is None and isinstance(source, dict):
        div = source.get("diverging")
    else:
        div = None if stats is None else stats.get("diverging")
    if div is None:
        return np.zeros(shape, bool)
    div = np.asarray(div).astype(bool)
    return div[None] if div.ndim == 1 else div


def pair_plot(x, y, diverging=None, xlabel="x", ylabel="y", title=None, ax=None):
    """Scatter of y against x, divergent draws on top in a contrasting colour."""
    fig, ax = _axes(ax, (7, 4.5))
    x, y = np.ravel(x), np.ravel(y)
    div = np.zeros(x.shape, bool) if diverging is None else np.ravel(diverging).astype(bool)
    ax.plot(x[~div], y[~div], "o", ms=2.5, alpha=0.25, color="C0", label="draws", rasterized=True)
    if div.any():
        ax.plot(x[div], y[div], "o", ms=4.5, alpha=0.9, color="C3", label=f"divergent ({div.sum()})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(loc="lower right", fontsize=8)
    if title:
        ax.set_title(title)
    return fig


def divergence_pair_plot(source, j: int = 0, ax=None, title=None):
    """log tau against theta_j (default theta_1, index 0) with divergent draws highlighted.

    The centered posterior is a funnel: as log tau falls the theta_j are squeezed towards
    mu, and the divergent transitions (Fit.stats["diverging"]) cluster at the neck
    (seeds 000 and 001's pair plot; Betancourt 2017, section 6.2).
    """
    d = _draws(source)
    div = _diverging(source, d["mu"].shape)
    names = getattr(getattr(source, "data", None), "names", None)
    label = f"theta[{names[j]}]" if names else f"theta[{j}]"
    if title is None:
        par = getattr(source, "parametrization", "")
        title = f"{par} fit: {int(div.sum())} divergent of {div.size} draws".strip()
    return pair_plot(d["theta"][..., j], np.log(d["tau"]), div, label, "log tau", title, ax)


def trace_plot(source, thetas=(0,), figsize=None):
    """Trace of mu, log tau and theta_j for j in `thetas`, one line per chain."""
    plt = _pyplot()
    d = _draws(source)
    series = [("mu", d["mu"]), ("log tau", np.log(d["tau"]))]
    series += [(f"theta[{j}]", d["theta"][..., j]) for j in thetas]
    fig, axes = plt.subplots(len(series), 1, figsize=figsize or (8, 1.8 * len(series)), sharex=True)
    axes = np.atleast_1d(axes)
    for ax, (name, x) in zip(axes, series):
        for c in range(x.shape[0]):
            ax.plot(x[c], lw=0.5, alpha=0.8, label=f"chain {c}")
        ax.set_ylabel(name)
    axes[-1].set_xlabel("draw")
    fig.tight_layout()
    return fig


def _central(x, prob):
    return np.quantile(x, [(1 - prob) / 2, 0.5, (1 + prob) / 2], axis=0)


def forest_plot(source, exact=None, prob: float = 0.9, names=None, ax=None, title=None):
    """Central `prob` intervals and medians of each theta_j (and mu), MCMC beside exact.

    `source` is a Fit or a dict of draws; `exact` an `ExactPosterior` (its quantiles).
    """
    d = _draws(source)
    J = d["theta"].shape[-1]
    if names is None:
        names = getattr(getattr(source, "data", None), "names", None) or [str(j) for j in range(J)]
    labels = ["mu"] + [f"theta[{n}]" for n in names]
    flat = np.concatenate([d["mu"].reshape(-1, 1), d["theta"].reshape(-1, J)], axis=1)
    lo, med, hi = _central(flat, prob)
    fig, ax = _axes(ax, (6.5, 0.45 * (J + 1) + 1.2))
    pos = np.arange(J + 1)[::-1].astype(float)
    off = 0.15 if exact is not None else 0.0
    ax.hlines(pos + off, lo, hi, color="C0", lw=2, label=f"MCMC {prob:.0%}")
    ax.plot(med, pos + off, "o", color="C0", ms=4)
    if exact is not None:
        qs = [(1 - prob) / 2, 0.5, (1 + prob) / 2]
        e_mu = np.asarray(exact.quantile("mu", np.array(qs)))
        e_th = np.asarray(exact.quantile("theta", np.array(qs)))
        e = np.concatenate([e_mu[:, None], e_th], axis=1)
        ax.hlines(pos - off, e[0], e[2], color="C1", lw=2, label=f"exact {prob:.0%}")
        ax.plot(e[1], pos - off, "s", color="C1", ms=4)
    ax.set_yticks(pos)
    ax.set_yticklabels(labels)
    ax.axvline(0.0, color="0.7", lw=0.8, zorder=0)
    ax.set_ylim(-1.3, J + 0.6)  # room for the legend below the last row
    ax.legend(fontsize=8, loc="lower right", ncol=2)
    ax.set_title(title or "posterior intervals")
    fig.tight_layout()
    return fig


def shrinkage_plot(data, source, ax=None, title=None):
    """Posterior mean of each theta_j against the observed y_j (BDA3 section 5.5).

    The diagonal is no pooling (theta_j = y_j), the horizontal line complete pooling
    (every theta_j = the precision-weighted mean of y); partial pooling lies between.
    Vertical bars: +- 1 posterior sd. `source`: a Fit, a dict of draws or an ExactPosterior.
    """
    from .exact import ExactPosterior, _as_arrays
    from .pooling import complete_pooling

    y, sigma = _as_arrays(data)
    if isinstance(source, ExactPosterior):
        mean, sd = source.mean["theta"], source.sd["theta"]
    else:
        th = _draws(source)["theta"].reshape(-1, y.size)
        mean, sd = th.mean(axis=0), th.std(axis=0, ddof=1)
    pooled = complete_pooling(data).mean
    fig, ax = _axes(ax, (5.5, 5))
    lim = [min(y.min(), mean.min()) - 5, max(y.max(), mean.max()) + 5]
    ax.plot(lim, lim, "--", color="0.5", lw=1, label="no pooling: y_j")
    ax.axhline(pooled, color="C2", lw=1.2, label=f"complete pooling: {pooled:.2f}")
    ax.errorbar(y, mean, yerr=sd, fmt="o", color="C0", ms=5, capsize=2, label="partial pooling: E[theta_j | y]")
    names = getattr(data, "names", None)
    if names:
        for xi, yi, n in zip(y, mean, names):
            ax.annotate(n, (xi, yi), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlabel("observed y_j")
    ax.set_ylabel("posterior mean of theta_j")
    ax.set_xlim(lim)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(title or "shrinkage towards the pooled mean")
    fig.tight_layout()
    return fig


def marginal_contour(data, prior=None, mode=None, draws=None, mu_range=(-18.0, 37.0),
                     log_tau_range=(-6.0, 4.1), n_grid: int = 200, n_levels: int = 40,
                     ellipse_probs=(0.5, 0.9), ax=None, title=None):
    """Contours of log p(mu, log tau | y) (`exact.log_marginal_mu_logtau`), theta integrated out.

    The grid matches seed 002's (mu in [-18, 37], log tau in [-6, 4.1], 40 levels).
    `mode` (a `pooling.Mode`, computed if None) is marked with its Laplace ellipses: the
    normal approximation N(mode, cov) contains the ellipse
    (x - mode)' cov^-1 (x - mode) <= chi2_2^-1(p) = -2 log(1 - p) with probability p.
    `draws` (a Fit or dict) overlays sampled (mu, log tau).
    """
    from .exact import log_marginal_mu_logtau
    from .pooling import marginal_mode

    mu = np.linspace(*mu_range, n_grid)
    lt = np.linspace(*log_tau_range, n_grid)
    M, T = np.meshgrid(mu, lt)
    z = log_marginal_mu_logtau(M, T, data, prior)
    fig, ax = _axes(ax, (6.5, 5))
    ax.contour(M, T, z, levels=n_levels, colors="C0", linewidths=0.6, linestyles="solid")
    if draws is not None:
        d = _draws(draws)
        ax.plot(d["mu"].ravel(), np.log(d["tau"]).ravel(), ".", ms=1.5, alpha=0.15, color="C3",
                rasterized=True, label="MCMC draws")
    if mode is None:
        mode = marginal_mode(data, prior)
    ax.plot(*mode.mode, "x", color="k", ms=9, mew=2, label=f"mode ({mode.mode[0]:.2f}, {mode.mode[1]:.2f})")
    vals, vecs = np.linalg.eigh(mode.cov)
    t = np.linspace(0, 2 * math.pi, 200)
    circle = np.stack([np.cos(t), np.sin(t)])
    for p, style in zip(ellipse_probs, ("-", "--", ":")):
        r = math.sqrt(-2.0 * math.log(1.0 - p))
        pts = mode.mode[:, None] + vecs @ (r * np.sqrt(vals)[:, None] * circle)
        ax.plot(pts[0], pts[1], style, color="k", lw=1.2, label=f"Laplace {p:.0%}")
    ax.set_xlim(mu_range)
    ax.set_ylim(log_tau_range)
    ax.set_xlabel("mu")
    ax.set_ylabel("log tau")
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title(title or "marginal posterior of (mu, log tau)")
    fig.tight_layout()
    return fig


def rank_histogram(result, bins: int = 20, names=None, L=None, ncols: int = 5, title=None, band: float = 0.99):
    """SBC rank histograms, one panel per parameter (Talts et al. 2018, figure 3).

    `result` is a `simulate.SBCResult` or an (M, P) array of ranks (then give L). The grey
    band is the central `band` interval of each bin's count under uniformity,
    Binomial(M, share of the bin), as in Talts et al.
    """
    from scipy import stats

    plt = _pyplot()
    if hasattr(result, "ranks"):
        r, L, names = result.ranks, result.L, names or result.names
        title = title or f"SBC ranks, {result.method}: {result.n_datasets} datasets, L = {L}"
    else:
        r = np.asarray(result)
        if L is None:
            raise ValueError("L: needed with an array of ranks")
        names = names or [str(p) for p in range(r.shape[1])]
    M, P = r.shape
    share = np.bincount((np.arange(L + 1) * bins) // (L + 1), minlength=bins) / (L + 1)
    lo = stats.binom.ppf((1 - band) / 2, M, share)
    hi = stats.binom.ppf((1 + band) / 2, M, share)
    nrows = -(-P // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.6 * ncols, 2.0 * nrows), sharey=True, squeeze=False)
    edges = np.arange(bins + 1)
    for p, ax in enumerate(axes.ravel()):
        if p >= P:
            ax.axis("off")
            continue
        counts = np.bincount((r[:, p] * bins) // (L + 1), minlength=bins)
        ax.fill_between(edges, np.r_[lo, lo[-1]], np.r_[hi, hi[-1]], step="post", color="0.85", lw=0)
        ax.stairs(counts, edges, fill=True, color="C0", alpha=0.8)
        ax.axhline(M * share.mean(), color="0.4", lw=0.8)
        ax.set_title(names[p], fontsize=9)
        ax.set_xticks([])
    fig.suptitle(title or "SBC rank histograms", fontsize=10)
    fig.tight_layout()
    return fig


def divergence_rate_plot(table, title=None):
    """Divergence rate against the true tau per parametrization (`simulate.divergence_study`);
    with a second panel of the error of E[log tau | y] against the exact posterior (mean
    over datasets, +- 2 standard errors) when the table has it."""
    plt = _pyplot()
    has_err = "log_tau_err" in table.columns
    fig, axes = plt.subplots(1, 2 if has_err else 1, figsize=(11 if has_err else 6, 4), squeeze=False)
    axes = axes[0]
    par = np.asarray(table["parametrization"])
    for k, p in enumerate(dict.fromkeys(par)):
        sel = par == p
        axes[0].plot(table["tau"][sel], 100 * table["div_rate"][sel], "o-", color=f"C{k}", label=p)
        if has_err:
            axes[1].errorbar(table["tau"][sel], table["log_tau_err"][sel], yerr=2 * table["log_tau_err_se"][sel],
                             fmt="o-", color=f"C{k}", capsize=3, label=p)
    axes[0].set_ylabel("divergent transitions (%)")
    axes[0].set_title(title or "divergences against the true tau")
    if has_err:
        axes[1].axhline(0.0, color="0.5", lw=0.8)
        axes[1].set_ylabel("MCMC E[log tau] - exact E[log tau]")
        axes[1].set_title("bias of log tau (mean over datasets, +- 2 se)")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("true tau")
        ax.legend()
    fig.tight_layout()
    return fig
