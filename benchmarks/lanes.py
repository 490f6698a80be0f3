"""Useful-step share of NUTS vmapped over L lanes (chains of eight schools, non-centered).

Vmapped NUTS runs every lane in lock step: at each iteration every lane pays for the
longest trajectory of any lane. The share of that work some lane actually needed is

    sum_{lanes l, iterations t} n_steps[l, t] / sum_t (L * max_l n_steps[l, t])

(1 means no waste). BlackJAX's per-lane `num_integration_steps` gives it for sampling and,
from the per-step info of `window_adaptation`, for warmup. hnnjax's figure comes from
`fit.stats["n_steps"]` / `fit.warmup_stats["n_steps"]` through the same function; for a
lane-independent kernel it states what lock-step execution *would* waste, not what it pays.

    python -m benchmarks.lanes [--lanes 4,64,1024] [--warmup 1000] [--draws 1000]
"""

from __future__ import annotations

import argparse
import sys

from .datasets import eight_schools_dataset
from .measure import Bench
from .runner import Settings

__all__ = ["lane_shares", "format_table", "main"]

LANE_FIELDS = ("useful_step_share_warmup", "useful_step_share", "mean_steps", "mean_max_steps",
               "mean_steps_warmup", "mean_max_steps_warmup", "run_s")


def lane_shares(bench: Bench, samplers, lanes, settings: Settings, seed: int = 0,
                reuse: list[dict] | None = None) -> list[dict]:
    """One row per (sampler, L). `reuse`: rows from the chains-scaling section (same
    settings) whose runs serve here instead of new ones."""
    data = eight_schools_dataset().data
    rows = []
    for L in lanes:
        st = settings.with_(chains=L)
        for runner in bench.runners(samplers, st):
            prev = [r for r in (reuse or []) if r.get("sampler") == runner.name
                    and r.get("chains_requested") == L and r.get("settings") == st.as_dict()]
            if prev:
                fig = prev[0]
            else:
                bench.log(f"lanes: {runner.name} L={L}")
                bench.ensure_compiled(runner, data)
                fig = bench.run(runner, data, seed + L)
            rows.append({"sampler": runner.name, "lanes": L,
                         **{k: fig.get(k) for k in LANE_FIELDS}})
    return rows


def _f(v, fmt="{:.3f}"):
    return "n/a" if v is None else fmt.format(v)


def format_table(rows: list[dict]) -> str:
    lines = [
        "| sampler | lanes | useful share (warmup) | useful share (sampling) | mean steps | mean max steps |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['sampler']} | {r['lanes']} | {_f(r.get('useful_step_share_warmup'))} | "
            f"{_f(r.get('useful_step_share'))} | {_f(r.get('mean_steps'), '{:.1f}')} | "
            f"{_f(r.get('mean_max_steps'), '{:.1f}')} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.lanes", description=__doc__.split("\n\n")[0])
    p.add_argument("--lanes", default="4,64,1024", help="comma-separated lane counts")
    p.add_argument("--warmup", type=int, default=1000)
    p.add_argument("--draws", type=int, default=1000)
    p.add_argument("--target-accept", type=float, default=0.8)
    p.add_argument("--samplers", default="blackjax-nuts-nc,hnnjax-nuts-nc,hnnjax-nuts-nc-sync")
    p.add_argument("--precision", choices=("float64", "float32"), default="float64")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    import jax

    jax.config.update("jax_enable_x64", a.precision == "float64")
    settings = Settings(warmup=a.warmup, draws=a.draws, target_accept=a.target_accept)
    bench = Bench(log=lambda m: print(m, file=sys.stderr))
    rows = lane_shares(bench, a.samplers.split(","), [int(x) for x in a.lanes.split(",")],
                       settings, a.seed)
    print(f"eight schools, non-centered, warmup {a.warmup}, draws {a.draws}, "
          f"target_accept {a.target_accept}, {a.precision}")
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
