"""MCMC convergence diagnostics written with ``jax.numpy``, batched over leading axes.

Every function takes draws ``x`` of shape ``(..., chains, draws)`` and reduces the last two
axes, so one call covers many parameters and many models.  Nothing here calls ``jax.jit`` or
``jax.vmap`` (the project applies those in its driver module only); all array shapes are
static and all control flow is expressed with masks and cumulative scans, so every function
traces under ``jax.jit``.  Computations follow the input floating dtype (float32 or float64);
integer or boolean input is promoted to JAX's default float type.

Definitions follow

* Vehtari, Gelman, Simpson, Carpenter & Bürkner (2021), "Rank-normalization, folding, and
  localization: an improved R-hat for assessing convergence of MCMC", Bayesian Analysis
  16(2), 667-718 -- split chains, rank normalisation, folding, bulk/tail ESS;
* Geyer (1992), "Practical Markov chain Monte Carlo", Statistical Science 7(4) -- initial
  positive and initial monotone sequence estimators of the autocorrelation time;
* Betancourt (2016), "Diagnosing suboptimal cotangent disintegrations in Hamiltonian Monte
  Carlo", arXiv:1604.00695 -- E-BFMI;
* Margossian, Hoffman, Sountsov, Riou-Durand, Vehtari & Gelman (2024), "Nested R-hat:
  assessing the convergence of Markov chain Monte Carlo when running many short chains",
  Bayesian Analysis, doi:10.1214/24-BA1453 (arXiv:2110.13017) -- nested R-hat.

The numerical conventions (padding of the FFT, Blom offsets, type-7 quantiles, the handling
of odd draw counts, the cap ``ESS <= S log10 S``, NaN for too-short input) are chosen so the
results agree with ArviZ 0.23 (``arviz.rhat``, ``arviz.ess``, ``arviz.mcse``, ``arviz.bfmi``)
to floating-point rounding.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from jax import lax
from jax.scipy.special import ndtri

__all__ = [
    "rhat",
    "ess_bulk",
    "ess_tail",
    "ess_mean",
    "mcse_mean",
    "mcse_sd",
    "ebfmi",
    "summarize",
    "nested_rhat",
]

# ArviZ declares too-short input (fewer than 4 draws per chain) unusable and returns NaN.
_MIN_DRAWS = 4
# A split-chain array whose range is below this is treated as constant: its ESS is the
# number of draws.  ArviZ uses float64's resolution whatever the input dtype; so do we.
_CONSTANT_RESOLUTION = 1e-15
# Blom (1958) offset used by the rank back-transformation of Vehtari et al. (2021).
_BLOM_C = 3.0 / 8.0


# ----------------------------------------------------------------------------- helpers


def _as_float(x):
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    return x


def _check_shape(x, name="x"):
    if x.ndim < 2:
        raise ValueError(f"{name} must have shape (..., chains, draws); got {x.shape}")


def _nan_like(x, shape):
    return jnp.full(shape, jnp.nan, dtype=x.dtype)


def _mask_nan_input(x, value):
    """NaN anywhere in one slice's draws makes that slice's diagnostic NaN."""
    bad = jnp.any(jnp.isnan(x), axis=(-2, -1))
    return jnp.where(bad, jnp.nan, value)


def _flatten_draws(x):
    return x.reshape(x.shape[:-2] + (x.shape[-2] * x.shape[-1],))


def _split_chains(x):
    """Halve every chain and treat the halves as separate chains.

    ``(..., C, N) -> (..., 2C, N // 2)``: first halves of all chains, then second halves.
    With N odd the middle draw belongs to neither half, so both halves have equal length.
    """
    n = x.shape[-1]
    half = n // 2
    return jnp.concatenate([x[..., :half], x[..., n - half :]], axis=-2)


def _sort_and_rank(v):
    """Sort the last axis and return ``(sorted values, 1-based average ranks)``.

    Ranks are in input order; a tie group occupying sorted positions ``s..e`` (0-based)
    gets rank ``(s + e) / 2 + 1``, the mean of the positions it spans.  Group boundaries
    come from comparing sorted neighbours, then a running max (running min from the right)
    spreads each group's first (last) position over its members.  The order among tied
    values is irrelevant to the result, so an unstable sort suffices, and the ranks are
    scattered back through the permutation rather than sorted back (sorting dominates the
    cost of rank normalisation on CPU).
    """
    axis = v.ndim - 1
    n = v.shape[-1]
    idx = lax.broadcasted_iota(jnp.int32, v.shape, axis)
    srt, perm = lax.sort((v, idx), dimension=axis, num_keys=1, is_stable=False)
    differs = srt[..., 1:] != srt[..., :-1]
    edge = jnp.ones(v.shape[:-1] + (1,), dtype=bool)
    starts_group = jnp.concatenate([edge, differs], axis=-1)
    ends_group = jnp.concatenate([differs, edge], axis=-1)
    first = lax.cummax(jnp.where(starts_group, idx, 0), axis=axis)
    last = lax.cummin(jnp.where(ends_group, idx, n - 1), axis=axis, reverse=True)
    ranks_sorted = (first + last).astype(v.dtype) / 2 + 1
    batch = math.prod(v.shape[:-1])
    rows = jnp.arange(batch)[:, None]
    ranks = jnp.zeros((batch, n), v.dtype).at[rows, perm.reshape(batch, n)].set(
        ranks_sorted.reshape(batch, n), unique_indices=True
    )
    return srt, ranks.reshape(v.shape)


def _z_scale(x):
    """Rank-normalise all draws of each slice jointly (Vehtari et al. 2021).

    ``z = Phi^{-1}((r - 3/8) / (S + 1/4))`` where ``r`` is the average rank among the
    ``S = chains * draws`` values of the slice.  Returns ``(z, sorted flattened draws)``;
    the sorted draws are handed on so callers need not sort again for medians/quantiles.
    """
    size = x.shape[-2] * x.shape[-1]
    srt, ranks = _sort_and_rank(_flatten_draws(x))
    z = ndtri((ranks - _BLOM_C) / (size - 2 * _BLOM_C + 1))
    return z.reshape(x.shape), srt


def _median_sorted(srt):
    """Median of sorted values (mean of the two middle values for even counts)."""
    size = srt.shape[-1]
    mid = size // 2
    if size % 2:
        return srt[..., mid]
    return (srt[..., mid - 1] + srt[..., mid]) / 2


def _quantile_linear(srt, prob):
    """numpy's default (``method="linear"``) quantile of sorted values."""
    n = srt.shape[-1]
    h = (n - 1) * prob
    lo = int(math.floor(h))
    hi = min(lo + 1, n - 1)
    g = h - lo
    a, b = srt[..., lo], srt[..., hi]
    # Same two-sided form as numpy, which interpolates from the nearer end point.
    return a + (b - a) * g if g < 0.5 else b - (b - a) * (1.0 - g)


def _quantile_type7(sorted_flat, prob):
    """Hyndman-Fan type-7 quantile of sorted values, in the algebraic form of
    ``scipy.stats.mstats.mquantiles(alphap=1, betap=1)``.

    The position arithmetic is done in Python float64 (shapes are static) and the
    interpolation as ``(1 - g) x[k-1] + g x[k]``: keeping that exact form matters because
    the tail ESS compares every draw with the result, and with tied draws a rewritten
    interpolation can land one ulp to the other side of the tied value.
    """
    n = sorted_flat.shape[-1]
    if n == 1:
        return sorted_flat[..., 0]
    m = 1.0 + prob * (1.0 - 1.0 - 1.0)
    aleph = n * prob + m
    k = int(math.floor(min(max(aleph, 1), n - 1)))
    gamma = min(max(aleph - k, 0.0), 1.0)
    return (1.0 - gamma) * sorted_flat[..., k - 1] + gamma * sorted_flat[..., k]


def _next_regular(target):
    """Smallest integer >= target whose only prime factors are 2, 3 and 5."""

    def smooth(n):
        for p in (2, 3, 5):
            while n % p == 0:
                n //= p
        return n == 1

    n = max(int(target), 1)
    while not smooth(n):
        n += 1
    return n


def _autocov(x):
    """Biased autocovariance ``c_t = (1/N) sum_i (x_i - xbar)(x_{i+t} - xbar)`` of each
    chain for lags ``0..N-1``, via the Wiener-Khinchin theorem.

    Zero padding to a 5-smooth length >= 2N removes circular wrap-around; that length is
    the one ArviZ uses, which keeps rounding comparable.
    """
    n = x.shape[-1]
    m = _next_regular(2 * n)
    centred = x - jnp.mean(x, axis=-1, keepdims=True)
    spec = jnp.fft.rfft(centred, n=m, axis=-1)
    acov = jnp.fft.irfft(spec * jnp.conj(spec), n=m, axis=-1)[..., :n]
    return (acov / n).astype(x.dtype)


def _rhat_basic(x):
    """Classic potential scale reduction for chains ``(..., C, N)`` (Gelman et al., BDA3, 11.4).

    ``sqrt(((N-1)/N W + B/N) / W)`` with ``B/N`` the variance of chain means and ``W`` the
    mean within-chain variance, both with ``ddof=1``.
    """
    n = x.shape[-1]
    chain_mean = jnp.mean(x, axis=-1)
    within = jnp.mean(jnp.var(x, axis=-1, ddof=1), axis=-1)
    between = n * jnp.var(chain_mean, axis=-1, ddof=1)
    return jnp.sqrt((between / within + n - 1) / n)


def _ess_chains(x):
    """Multi-chain ESS of chains ``(..., C, N)`` (Vehtari et al. 2021; Geyer 1992).

    With ``c_t`` the per-chain autocovariance, ``W = mean_c c_0 N/(N-1)`` and
    ``var+ = (N-1)/N W + var(chain means)``, the combined autocorrelation is
    ``rho_t = 1 - (W - mean_c c_t) / var+`` (``rho_0 = 1``).  Geyer's (1992) initial
    positive sequence sums pairs ``P_k = rho_{2k} + rho_{2k+1}`` while they stay positive;
    the initial monotone sequence replaces each ``P_k`` by the running minimum.  Then
    ``tau = -1 + 2 sum_{k<K} P_k + rho_{2K}``, where the even lag of the stopping pair
    ``K`` counts only if that pair is non-negative or the lag itself is positive; finally
    ``tau >= 1/log10(S)`` and ``ESS = S / tau`` with ``S = C N``.

    The truncation index ``K`` is found with a cumulative product of ``P_k > 0`` instead of
    a loop: ``K = min(k_max, number of leading positive pairs)`` where ``k_max`` is the last
    pair the scan may reach (``2k - 1 < N - 3``).
    """
    n_chain, n_draw = x.shape[-2], x.shape[-1]
    size = n_chain * n_draw
    acov = _autocov(x)
    mean_var = jnp.mean(acov[..., 0], axis=-1) * n_draw / (n_draw - 1.0)
    var_plus = mean_var * (n_draw - 1.0) / n_draw
    if n_chain > 1:
        var_plus = var_plus + jnp.var(jnp.mean(x, axis=-1), axis=-1, ddof=1)
    rho = 1.0 - (mean_var[..., None] - jnp.mean(acov, axis=-2)) / var_plus[..., None]
    rho = rho.at[..., 0].set(1.0)

    k_max = max((n_draw - 3) // 2, 0)
    pairs = rho[..., : 2 * k_max + 2].reshape(rho.shape[:-1] + (k_max + 1, 2))
    pair_sum = pairs[..., 0] + pairs[..., 1]
    leading_positive = jnp.sum(jnp.cumprod(pair_sum > 0, axis=-1), axis=-1)
    stop = jnp.minimum(leading_positive, k_max)

    monotone = lax.cummin(pair_sum, axis=pair_sum.ndim - 1)
    k = jnp.arange(k_max + 1)
    head = jnp.sum(jnp.where(k < stop[..., None], monotone, 0.0), axis=-1)

    even_last = jnp.take_along_axis(pairs[..., 0], stop[..., None], axis=-1)[..., 0]
    pair_last = jnp.take_along_axis(pair_sum, stop[..., None], axis=-1)[..., 0]
    # A negative stopping pair is dropped, but its even lag is still used if it is positive.
    tail = jnp.where((pair_last >= 0) | (even_last > 0), even_last, 0.0)

    tau = -1.0 + 2.0 * head + tail
    tau = jnp.where(tau < 1.0 / math.log10(size), 1.0 / math.log10(size), tau)
    ess = size / tau
    ess = jnp.where(jnp.isnan(rho[..., 1]) | jnp.isnan(tau), jnp.nan, ess)

    spread = jnp.max(x, axis=(-2, -1)) - jnp.min(x, axis=(-2, -1))
    return jnp.where(spread < _CONSTANT_RESOLUTION, jnp.asarray(size, x.dtype), ess)


def _prepare(x):
    x = _as_float(x)
    _check_shape(x)
    return x


def _too_short(x):
    return x.shape[-1] < _MIN_DRAWS


def _rank_rhat(split, z_bulk, srt_split):
    """max(bulk, tail) R-hat from the split draws and their rank-normalised values."""
    bulk = _rhat_basic(z_bulk)
    folded = jnp.abs(split - _median_sorted(srt_split)[..., None, None])
    tail = _rhat_basic(_z_scale(folded)[0])
    # Ordered comparison rather than jnp.maximum: a NaN tail R-hat (e.g. constant folded
    # draws) falls back to the bulk value, as ArviZ's Python max() does.
    return jnp.where(tail > bulk, tail, bulk)


def _tail_indicators(x, srt):
    """Split-chain indicators I[x <= q05], I[x <= q95], stacked on a new leading axis;
    ``srt`` holds the sorted draws of each slice."""
    quantiles = jnp.stack([_quantile_type7(srt, p) for p in (0.05, 0.95)])
    return _split_chains((x <= quantiles[..., None, None]).astype(x.dtype))


def _min_tail(ess_low, ess_high):
    # Ordered comparison keeps ArviZ's min() semantics when one side is NaN.
    return jnp.where(ess_high < ess_low, ess_high, ess_low)


def _sorted_draws(x, srt_split=None):
    """All draws of each slice, sorted.  For an even draw count the split chains hold
    exactly the same draws, so their sorted values can be reused instead of sorting again."""
    if srt_split is not None and x.shape[-1] % 2 == 0:
        return srt_split
    return jnp.sort(_flatten_draws(x), axis=-1)


def _mcse_mean(x, ess):
    return jnp.std(_flatten_draws(x), axis=-1, ddof=1) / jnp.sqrt(ess)


# ----------------------------------------------------------------------------- public API


def rhat(x):
    """Rank-normalised split R-hat (Vehtari et al. 2021), ``(..., C, N) -> (...)``.

    Chains are split in half (the middle draw of an odd-length chain is dropped).  Bulk
    R-hat is the classic R-hat of the rank-normalised split draws ``z``; tail R-hat is the
    same for the rank-normalised folded draws ``|x - median(x)|`` (median of the split draws).
    The result is ``max(bulk, tail)``; NaN for fewer than 2 chains or 4 draws, or if any
    draw is NaN.  Agrees with ``arviz.rhat(x, method="rank")``.
    """
    x = _prepare(x)
    if x.shape[-2] < 2 or _too_short(x):
        return _nan_like(x, x.shape[:-2])
    split = _split_chains(x)
    z_bulk, srt_split = _z_scale(split)
    return _mask_nan_input(x, _rank_rhat(split, z_bulk, srt_split))


def ess_bulk(x):
    """Bulk effective sample size (Vehtari et al. 2021), ``(..., C, N) -> (...)``.

    Multi-chain ESS (Geyer initial monotone sequence) of the rank-normalised split chains.
    NaN for fewer than 4 draws or NaN input.  Agrees with ``arviz.ess(x, method="bulk")``.
    """
    x = _prepare(x)
    if _too_short(x):
        return _nan_like(x, x.shape[:-2])
    z_bulk, _ = _z_scale(_split_chains(x))
    return _mask_nan_input(x, _ess_chains(z_bulk))


def ess_tail(x):
    """Tail effective sample size (Vehtari et al. 2021), ``(..., C, N) -> (...)``.

    ``min(ESS(I[x <= q_0.05]), ESS(I[x <= q_0.95]))``: split-chain ESS of the indicators of
    the 5% and 95% type-7 quantiles of all draws.  NaN for fewer than 4 draws or NaN input.
    Agrees with ``arviz.ess(x, method="tail")``.
    """
    x = _prepare(x)
    if _too_short(x):
        return _nan_like(x, x.shape[:-2])
    ess_low, ess_high = _ess_chains(_tail_indicators(x, _sorted_draws(x)))
    return _mask_nan_input(x, _min_tail(ess_low, ess_high))


def ess_mean(x):
    """Split-chain ESS of the mean (no rank normalisation), ``(..., C, N) -> (...)``.

    Agrees with ``arviz.ess(x, method="mean")``.
    """
    x = _prepare(x)
    if _too_short(x):
        return _nan_like(x, x.shape[:-2])
    return _mask_nan_input(x, _ess_chains(_split_chains(x)))


def mcse_mean(x):
    """Monte Carlo standard error of the mean, ``sd(x) / sqrt(ess_mean(x))``.

    ``sd`` pools all chains and draws with ``ddof=1``.  ``(..., C, N) -> (...)``; agrees with
    ``arviz.mcse(x, method="mean")``.
    """
    x = _prepare(x)
    if x.shape[-1] < _MIN_DRAWS:
        return _nan_like(x, x.shape[:-2])
    return _mcse_mean(x, ess_mean(x))


def mcse_sd(x):
    """Monte Carlo standard error of the standard deviation (Vehtari et al. 2021).

    With ``d = (x - mean)^2``, ``v = mean(d)`` and ``Var[v] ~ (mean(d^2) - v^2) / ESS_mean(d)``,
    the delta method gives ``mcse_sd = sqrt(Var[v] / (4 v))``.  ``(..., C, N) -> (...)``;
    agrees with ``arviz.mcse(x, method="sd")``.
    """
    x = _prepare(x)
    if x.shape[-1] < _MIN_DRAWS:
        return _nan_like(x, x.shape[:-2])
    sq_dev = (x - jnp.mean(x, axis=(-2, -1), keepdims=True)) ** 2
    ess = ess_mean(sq_dev)
    evar = jnp.mean(sq_dev, axis=(-2, -1))
    varvar = (jnp.mean(sq_dev**2, axis=(-2, -1)) - evar**2) / ess
    return jnp.sqrt(varvar / evar / 4)


def ebfmi(energy):
    """Energy Bayesian fraction of missing information per chain (Betancourt 2016).

    ``E-BFMI = mean_n (E_n - E_{n-1})^2 / var(E)`` with the variance taken with ``ddof=1``
    along each chain.  ``energy``: ``(..., chains, draws) -> (..., chains)``; a 1-D input is
    one chain.  Agrees with ``arviz.bfmi``.  Values below about 0.3 suggest the momentum
    resampling explores the energy distribution poorly.
    """
    e = _as_float(energy)
    if e.ndim == 1:
        e = e[None, :]
    num = jnp.mean(jnp.diff(e, axis=-1) ** 2, axis=-1)
    return num / jnp.var(e, axis=-1, ddof=1)


def summarize(x):
    """Posterior summary over the leading axes of ``x`` (``(..., C, N)``).

    Returns a dict of ``(...)``-shaped arrays: ``mean``; ``sd`` (``ddof=1``, all draws pooled);
    ``q5``, ``q50``, ``q95`` (linear interpolation between order statistics, numpy's default);
    ``mcse_mean``, ``ess_bulk``, ``ess_tail`` and ``r_hat`` exactly as the functions of those
    names.  Sorting is shared between the quantities, so this is cheaper than calling them
    one by one.
    """
    x = _prepare(x)
    flat = _flatten_draws(x)
    out = {"mean": jnp.mean(flat, axis=-1), "sd": jnp.std(flat, axis=-1, ddof=1)}
    if _too_short(x):
        srt = jnp.sort(flat, axis=-1)
        nan = _nan_like(x, x.shape[:-2])
        diag = {"mcse_mean": nan, "ess_bulk": nan, "ess_tail": nan, "r_hat": nan}
    else:
        split = _split_chains(x)
        z_bulk, srt_split = _z_scale(split)
        srt = _sorted_draws(x, srt_split)
        if x.shape[-2] < 2:
            r_hat = _nan_like(x, x.shape[:-2])
        else:
            r_hat = _rank_rhat(split, z_bulk, srt_split)
        # One stacked ESS evaluation instead of four keeps the traced program small.
        stacked = jnp.concatenate([jnp.stack([split, z_bulk]), _tail_indicators(x, srt)])
        ess_mean_, ess_bulk_, ess_low, ess_high = _ess_chains(stacked)
        diag = {
            "mcse_mean": _mcse_mean(x, ess_mean_),
            "ess_bulk": ess_bulk_,
            "ess_tail": _min_tail(ess_low, ess_high),
            "r_hat": r_hat,
        }
        diag = {key: _mask_nan_input(x, val) for key, val in diag.items()}
    for name, prob in (("q5", 0.05), ("q50", 0.5), ("q95", 0.95)):
        # NaNs sort last, so a NaN draw would not show up in the quantiles by itself.
        out[name] = _mask_nan_input(x, _quantile_linear(srt, prob))
    out.update(diag)
    return out


def nested_rhat(x, n_superchains):
    """Nested R-hat of Margossian et al. (2024), ``(..., C, N) -> (...)``.

    Reference followed: Margossian, Hoffman, Sountsov, Riou-Durand, Vehtari & Gelman,
    "Nested R-hat: assessing the convergence of Markov chain Monte Carlo when running many
    short chains", Bayesian Analysis (2024), eqs. 6-8 (arXiv:2110.13017), cross-checked with
    the reference R implementation (``rhat_nested`` in the ``posterior`` package).

    The ``C`` chains form ``K = n_superchains`` consecutive groups of ``M = C / K`` chains
    (chains of one superchain share a starting point).  With chain means ``xbar_{mk}``,
    superchain means ``xbar_k = mean_m xbar_{mk}``:

    * ``B_nu = 1/(K-1) sum_k (xbar_k - mean_k xbar_k)^2``               (between superchains)
    * ``B_k = 1/(M-1) sum_m (xbar_{mk} - xbar_k)^2``, ``0`` when ``M = 1``
    * ``W_k = 1/M sum_m 1/(N-1) sum_n (x_{nmk} - xbar_{mk})^2``, ``0`` when ``N = 1``
    * ``W_nu = 1/K sum_k (B_k + W_k)``                                   (within superchains)
    * ``nR = sqrt(1 + B_nu / W_nu)``.

    It is bounded below by 1 (unlike classic R-hat, which has a ``(N-1)/N`` factor), chains are
    not split and draws are not rank-normalised.  With one draw per chain (``N = 1``) only the
    spread of chains inside superchains estimates ``W_nu``, so ``M >= 2`` is then required.

    Raises ``ValueError`` when ``C`` is not a multiple of ``K``, ``K < 2``, or ``M = N = 1``.
    """
    x = _prepare(x)
    n_chain, n_draw = x.shape[-2:]
    k = int(n_superchains)
    if k < 2:
        raise ValueError("nested R-hat needs at least 2 superchains")
    if n_chain % k:
        raise ValueError(f"{n_chain} chains cannot form {k} superchains of equal size")
    m = n_chain // k
    if m == 1 and n_draw == 1:
        raise ValueError("nested R-hat needs >= 2 chains per superchain or >= 2 draws per chain")

    grouped = x.reshape(x.shape[:-2] + (k, m, n_draw))
    chain_mean = jnp.mean(grouped, axis=-1)
    super_mean = jnp.mean(chain_mean, axis=-1)
    between_super = jnp.var(super_mean, axis=-1, ddof=1)
    zeros = jnp.zeros(super_mean.shape, dtype=x.dtype)
    between_chain = jnp.var(chain_mean, axis=-1, ddof=1) if m > 1 else zeros
    within_chain = jnp.mean(jnp.var(grouped, axis=-1, ddof=1), axis=-1) if n_draw > 1 else zeros
    within_super = jnp.mean(between_chain + within_chain, axis=-1)
    return jnp.sqrt(1.0 + between_super / within_super)
