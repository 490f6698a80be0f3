"""Command line: `hnnjax eight-schools` (the main job) and `hnnjax restaurants` (batch fits)."""

from __future__ import annotations

import argparse
import sys
import time


def _fmt(values, digits):
    return "[" + ", ".join(f"{float(v):.{digits}f}" for v in values) + "]"


def _eight_schools(args) -> int:
    import numpy as np

    from . import datasets, exact, sample
    from .model import Prior

    if args.float64:
        import jax

        jax.config.update("jax_enable_x64", True)
    data = datasets.eight_schools()
    prior = Prior.flat() if args.prior == "flat" else Prior.default()
    ex = exact(data, prior)
    truth = np.r_[ex.mean["mu"], ex.mean["tau"], ex.mean["theta"]]
    print(f"Eight schools (BDA3 5.5), {prior.describe()}; {args.chains} chains x "
          f"({args.warmup} warmup + {args.draws} draws), NUTS, target acceptance {args.target_accept}\n")
    for param in ("noncentered", "centered"):
        t0 = time.perf_counter()
        fit = sample(data, parametrization=param, chains=args.chains, warmup=args.warmup,
                     draws=args.draws, target_accept=args.target_accept, seed=args.seed, prior=prior)
        wall = time.perf_counter() - t0
        table = fit.summary()
        table.columns["exact_mean"] = truth
        table.columns["z"] = (table["mean"] - truth) / table["mcse_mean"]
        n = fit.chains * fit.num_draws
        print(f"== {param} ==  ({wall:.1f} s: compile {fit.timing['compile_s']:.1f} s, "
              f"run {fit.timing['run_s']:.2f} s)")
        print(table)
        print(f"divergences: {fit.divergences} of {n} ({100 * fit.divergences / n:.1f}%)"
              f"   E-BFMI: {_fmt(fit.ebfmi(), 2)}   step sizes: {_fmt(fit.step_size, 3)}")
        if fit.divergences:
            log_tau = np.log(fit.draws["tau"])
            div = fit.stats["diverging"].astype(bool)
            a, b = np.median(log_tau[div]), np.median(log_tau[~div])
            where = "below: they sit in the funnel's neck" if a < b else "not below: no sign of the funnel"
            print(f"median log tau of divergent draws {a:.2f} vs others {b:.2f} ({where})")
        print()
    print("z = (sampled mean - exact mean) / MCSE; the exact posterior is 1-D quadrature over tau (hnnjax.exact).")
    return 0


def _restaurant_prior(name: str):
    from .model import Prior
    from .restaurants import SENTIMENT_PRIOR

    return {"sentiment": SENTIMENT_PRIOR, "default": Prior.default(), "flat": Prior.flat()}[name]


def _restaurants(args) -> int:
    """Fit every restaurant-aspect of a review table; write the three output tables."""
    if args.float64:
        import jax

        jax.config.update("jax_enable_x64", True)
    import numpy as np

    from . import reviews
    from .restaurants import DEFAULT_TARGET_ACCEPT, fit_restaurants

    prior = _restaurant_prior(args.prior)
    target_accept = DEFAULT_TARGET_ACCEPT if args.target_accept is None else args.target_accept

    if (args.reviews is None) == (args.synthetic is None):
        print("hnnjax restaurants: give a review file or --synthetic N (not both)", file=sys.stderr)
        return 2
    if args.synthetic is not None:
        table = reviews.synthetic_reviews(args.synthetic, seed=args.seed)
        source = f"synthetic_reviews({args.synthetic}, seed={args.seed})"
    else:
        table = reviews.read_reviews(args.reviews)
        source = str(args.reviews)
    res = fit_restaurants(
        table, chains=args.chains, warmup=args.warmup, draws=args.draws, seed=args.seed,
        top_k=args.top_k, rule=args.rule, progress=not args.no_progress,
        dtype=np.float64 if args.float64 else np.float32, chunk_size=args.chunk_size,
        out=args.checkpoint, max_lanes=args.max_lanes, target_accept=target_accept, prior=prior,
    )
    paths = res.write(args.out)
    print(f"Restaurants from {source}: {args.chains} chains x ({args.warmup} warmup + "
          f"{args.draws} draws), NUTS, non-centered, target acceptance {target_accept}, "
          f"{prior.describe()}")
    print(res.report())
    print("wrote " + ", ".join(str(paths[k]) for k in ("aspects", "reviews", "ranking")))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="hnnjax", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("eight-schools", help="fit both parametrizations of eight schools and compare with the exact posterior")
    p.add_argument("--chains", type=int, default=4)
    p.add_argument("--warmup", type=int, default=1000)
    p.add_argument("--draws", type=int, default=1000)
    p.add_argument("--target-accept", type=float, default=0.8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prior", choices=("default", "flat"), default="default",
                   help="default: mu ~ N(0, 5), tau ~ HalfCauchy(5); flat: BDA3's p(mu, tau) = 1")
    p.add_argument("--float64", action="store_true", help="sample in float64 (default float32)")
    p.set_defaults(func=_eight_schools)
    r = sub.add_parser("restaurants",
                       help="fit one model per restaurant-aspect of a review table and rank them")
    r.add_argument("reviews", nargs="?", default=None,
                   help="review table (.csv, .csv.gz, .parquet; schema in hnnjax.reviews)")
    r.add_argument("--out", required=True,
                   help="per restaurant-aspect table (.parquet or .csv); "
                        "*_reviews and *_ranking are written beside it")
    r.add_argument("--synthetic", type=int, default=None, metavar="N",
                   help="fit synthetic_reviews(N, seed=--seed) instead of a file")
    r.add_argument("--chains", type=int, default=4)
    r.add_argument("--warmup", type=int, default=1000)
    r.add_argument("--draws", type=int, default=1000)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--top-k", type=int, default=10, help="k of P(rank <= k)")
    r.add_argument("--target-accept", type=float, default=None,
                   help="NUTS target acceptance (default restaurants.DEFAULT_TARGET_ACCEPT, 0.95: "
                        "models with few reviews have funnels)")
    r.add_argument("--prior", choices=("sentiment", "default", "flat"), default="sentiment",
                   help="sentiment: mu ~ N(0, 1), tau ~ HalfNormal(0.5), for sentiment on [-1, 1]; "
                        "default: eight schools' mu ~ N(0, 5), tau ~ HalfCauchy(5); flat: p(mu, tau) = 1")
    r.add_argument("--rule", choices=("pooled", "floor", "drop"), default="pooled",
                   help="variance rule for unusable review variances (hnnjax.reviews)")
    r.add_argument("--chunk-size", type=int, default=None,
                   help="models per compiled batch (default: from a memory budget)")
    r.add_argument("--max-lanes", type=int, default=None,
                   help="lane pool of the sampler on each device (default: hnnjax.batch.default_max_lanes)")
    r.add_argument("--checkpoint", default=None, metavar="DIR",
                   help="write finished chunks here; a rerun with the same arguments resumes")
    r.add_argument("--float64", action="store_true", help="sample in float64 (default float32)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.set_defaults(func=_restaurants)
    for cmd in (p, r):
        cmd.add_argument("--cores", type=int, default=None,
                         help="CPU cores to sample on, one JAX device each (default: all this process may use)")
    args = parser.parse_args(argv)
    _use_cores(args.cores)
    return args.func(args)


def _use_cores(n) -> None:
    from .devices import use_cpu_cores

    try:
        use_cpu_cores(n)
    except RuntimeError as exc:  # JAX already started in this process (e.g. called from Python)
        print(f"note: {exc}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
