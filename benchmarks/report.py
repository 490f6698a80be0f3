"""The report: headline ratios, Markdown tables, the results-file schema check, plots.

The two figures the project is judged on come first:

- ESS/s ratio, hnnjax NUTS / BlackJAX NUTS, eight schools non-centered (target >= 2);
- fresh-process time to result, hnnjax / BlackJAX (target <= 0.5).
"""

from __future__ import annotations

import statistics
from pathlib import Path

from .grid import ratio

__all__ = ["SCHEMA", "headline_ratios", "to_markdown", "validate", "plots"]

SCHEMA = "hnnjax-bench/1"
TOP_KEYS = ("schema", "suite", "created_utc", "device", "precision", "machine", "versions",
            "jax_config", "estimator", "settings", "samplers", "headline", "grid", "scaling",
            "lanes", "fresh", "ratios", "targets", "notes", "elapsed_s")
RUN_KEYS = ("wall_s", "run_s", "compile_in_call_s", "min_ess_bulk", "min_ess_tail", "ess_per_s",
            "ess_per_s_user", "ess_per_grad", "grads_per_s", "n_grad_evals", "divergences",
            "max_rhat", "chains", "draws")
TARGETS = {"ess_per_s_vs_blackjax": (">=", 2.0), "fresh_time_vs_blackjax": ("<=", 0.5)}


def _med(headline, name, key):
    if not headline or name not in headline["results"]:
        return None
    return headline["results"][name]["median"].get(key)


def _fresh_walls(fresh, lib, run=1) -> dict:
    """{round: wall seconds} of `lib`'s successful runs numbered `run` (files written before
    rounds existed count as round 1)."""
    return {r.get("round", 1): r["wall_s"] for r in fresh or []
            if r.get("library") == lib and r.get("ok") and r.get("run", 1) == run}


def fresh_ratios(fresh, lib, run, peer) -> list:
    """[round, ratio] of `lib`'s run `run` to `peer`'s run 1, for the rounds where both ran
    and, for hnnjax, its cache was as the run needs it (`cache_controlled`)."""
    bad = {r.get("round", 1) for r in fresh or []
           if r.get("library") == lib and r.get("run", 1) == run and r.get("cache_controlled") is False}
    a, b = _fresh_walls(fresh, lib, run), _fresh_walls(fresh, peer)
    return [[k, a[k] / b[k]] for k in sorted(a) if k in b and b[k] > 0 and k not in bad]


def _rounds_note(rounds) -> str:
    return f", median of {len(rounds)} round{'s' if len(rounds) != 1 else ''}" if rounds else ""


def headline_ratios(results: dict) -> dict:
    h, f = results.get("headline"), results.get("fresh")
    out = {}
    for num, den in (("hnnjax-nuts-nc", "blackjax-nuts-nc"), ("hnnjax-nuts-nc", "numpyro-nuts-nc"),
                     ("hnnjax-nuts-c", "blackjax-nuts-c"), ("hnnjax-nuts-nc", "exact")):
        out[f"ess_per_s {num} / {den}"] = ratio(_med(h, num, "ess_per_s"), _med(h, den, "ess_per_s"))
    out["ess_per_s_vs_blackjax"] = out["ess_per_s hnnjax-nuts-nc / blackjax-nuts-nc"]
    out["ess_per_s_vs_numpyro"] = out["ess_per_s hnnjax-nuts-nc / numpyro-nuts-nc"]
    # Fresh processes: the median over rounds of the ratio within each round (the two sides
    # of a round ran back to back, under the same load).
    for key, run, peer in (("fresh_time_vs_blackjax", 1, "blackjax"), ("fresh_time_vs_blackjax_cached", 2, "blackjax"),
                           ("fresh_time_vs_numpyro", 1, "numpyro")):
        rounds = fresh_ratios(f, "hnnjax", run, peer)
        out[key] = statistics.median(x for _, x in rounds) if rounds else None
        out[key + "_rounds"] = rounds
    return out


def _f(v, fmt="{:.3g}"):
    if v is None:
        return "n/a"
    if isinstance(v, str):
        return v
    return fmt.format(v)


def _verdict(name, value):
    op, target = TARGETS[name]
    if value is None:
        return "n/a (a side is missing)"
    ok = value >= target if op == ">=" else value <= target
    return f"{value:.2f} (target {op} {target:g}: {'met' if ok else 'NOT met'})"


def _settings_line(s: dict) -> str:
    return (f"{s['chains']} chains x ({s['warmup']} warmup + {s['draws']} draws), "
            f"target_accept {s['target_accept']}, {s['mass_matrix']} mass matrix")


def _headline_md(results) -> list[str]:
    h = results["headline"]
    lines = [f"## Headline: eight schools, {_settings_line(results['settings']['headline'])}, "
             f"{results['device']}, {results['precision']}",
             "",
             f"Median of {h['repeats']} warm runs (different seeds). ESS/s = min bulk ESS over mu, tau, "
             "theta_j / run time after compilation; 'wall' is the user-visible warm call.",
             "",
             "| sampler | compile s | run s | wall s | min bulk ESS | min tail ESS | ESS/s | ESS/grad "
             "| grads/s | div | max R-hat |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in h["results"].items():
        m, c = r["median"], r["compile"]
        lines.append(
            f"| {name} | {_f(c.get('compile_s'), '{:.2f}')} | {_f(m.get('run_s'), '{:.3f}')} | "
            f"{_f(m.get('wall_s'), '{:.3f}')} | {_f(m.get('min_ess_bulk'), '{:.0f}')} | "
            f"{_f(m.get('min_ess_tail'), '{:.0f}')} | {_f(m.get('ess_per_s'), '{:.0f}')} | "
            f"{_f(m.get('ess_per_grad'), '{:.4f}')} | {_f(m.get('grads_per_s'), '{:.3g}')} | "
            f"{_f(m.get('divergences_total'), '{:d}')} | {_f(m.get('max_rhat'), '{:.3f}')} |")
    return lines


def _grid_md(results) -> list[str]:
    g = results["grid"]
    lines = [f"## Grid: synthetic datasets, {_settings_line(results['settings']['grid'])}",
             "", "Per-cell medians over datasets. Ratios are ESS/s hnnjax / peer.", "",
             "| cell | sampler | n | compile s | run s | min bulk ESS | ESS/s | ESS/grad | div | max R-hat |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in g["cells"]:
        lines.append(
            f"| {c['cell']} | {c['sampler']} | {c['n_runs']} | {_f(c.get('compile_s'), '{:.2f}')} | "
            f"{_f(c.get('run_s'), '{:.3f}')} | {_f(c.get('min_ess_bulk'), '{:.0f}')} | "
            f"{_f(c.get('ess_per_s'), '{:.0f}')} | {_f(c.get('ess_per_grad'), '{:.4f}')} | "
            f"{_f(c.get('divergences_total'), '{:d}')} | {_f(c.get('max_rhat'), '{:.3f}')} |")
    if g["ratios"]:
        lines += ["", "| cell | ratio | ESS/s ratio | ESS/grad ratio |", "|---|---|---:|---:|"]
        for r in g["ratios"]:
            lines.append(f"| {r['cell']} | {r['numerator']} / {r['denominator']} | "
                         f"{_f(r['ess_per_s_ratio'], '{:.2f}')} | {_f(r['ess_per_grad_ratio'], '{:.2f}')} |")
    return lines


def _scaling_md(results) -> list[str]:
    s = results["scaling"]
    lines = []
    if s.get("J"):
        lines += [f"## Scaling in J (true tau {s['J'][0]['tau_true']:g}), "
                  f"{_settings_line(results['settings']['scale'])}", "",
                  "| J | sampler | compile s | run s | min bulk ESS | ESS/s | ESS/grad | grads/s |",
                  "|---:|---|---:|---:|---:|---:|---:|---:|"]
        for r in s["J"]:
            lines.append(f"| {r['J']} | {r['sampler']} | {_f(r['compile_s'], '{:.2f}')} | "
                         f"{_f(r['run_s'], '{:.3f}')} | {_f(r['min_ess_bulk'], '{:.0f}')} | "
                         f"{_f(r['ess_per_s'], '{:.0f}')} | {_f(r['ess_per_grad'], '{:.4f}')} | "
                         f"{_f(r['grads_per_s'], '{:.3g}')} |")
        lines.append("")
    if s.get("chains"):
        lines += ["## Scaling in chains (eight schools, non-centered)", "",
                  "| chains | sampler | compile s | run s | min bulk ESS | ESS/s | grads/s | useful step share |",
                  "|---:|---|---:|---:|---:|---:|---:|---:|"]
        for r in s["chains"]:
            lines.append(f"| {r['chains_requested']} | {r['sampler']} | {_f(r['compile_s'], '{:.2f}')} | "
                         f"{_f(r['run_s'], '{:.3f}')} | {_f(r['min_ess_bulk'], '{:.0f}')} | "
                         f"{_f(r['ess_per_s'], '{:.0f}')} | {_f(r['grads_per_s'], '{:.3g}')} | "
                         f"{_f(r.get('useful_step_share'), '{:.3f}')} |")
    return lines


def _fresh_md(results) -> list[str]:
    lines = ["## Time to result from a fresh process (eight schools, non-centered, "
             f"{_settings_line(results['settings']['fresh'])})", "",
             "| round | library | run | wall s | import s | compile+sample s | note |",
             "|---:|---|---:|---:|---:|---:|---|"]
    for r in results["fresh"]:
        if not r.get("ok"):
            lines.append(f"| {r.get('round', '')} | {r['library']} | {r.get('run', '')} | n/a | | | "
                         f"{r.get('skipped') or r.get('error', '')} |")
            continue
        note = ""
        if r["library"] == "hnnjax":
            note = ("persistent cache: " + ("fresh temp dir" if r.get("cache_controlled")
                                            else f"NOT controlled ({r.get('hnnjax_cache_dir')})"))
            note += f", {r.get('cache_files_after', 0)} saved programs after"
        lines.append(f"| {r.get('round', 1)} | {r['library']} | {r.get('run', 1)} | {r['wall_s']:.2f} "
                     f"| {_f(r.get('import_s'), '{:.2f}')} | {_f(r.get('sample_s'), '{:.2f}')} | {note} |")
    rounds = results["ratios"].get("fresh_time_vs_blackjax_rounds") or []
    if rounds:
        lines += ["", "hnnjax (cold) / BlackJAX within each round: "
                  + ", ".join(f"round {k} {x:.2f}" for k, x in rounds)
                  + f" (median {results['ratios']['fresh_time_vs_blackjax']:.2f})."]
    return lines


def to_markdown(results: dict) -> str:
    rt = results["ratios"]
    lines = [f"# hnnjax benchmark: suite {results['suite']}, {results['device']} "
             f"({', '.join(results['machine']['jax_devices'])}), {results['created_utc']}", "",
             f"- **ESS/s, hnnjax NUTS / BlackJAX NUTS (eight schools, non-centered): "
             f"{_verdict('ess_per_s_vs_blackjax', rt.get('ess_per_s_vs_blackjax'))}**",
             f"- **Fresh-process time to result, hnnjax / BlackJAX: "
             f"{_verdict('fresh_time_vs_blackjax', rt.get('fresh_time_vs_blackjax'))}"
             f"{_rounds_note(rt.get('fresh_time_vs_blackjax_rounds'))}** "
             f"(hnnjax's second run, persistent cache warm: {_f(rt.get('fresh_time_vs_blackjax_cached'), '{:.2f}')})",
             f"- ESS/s, hnnjax NUTS / NumPyro NUTS: {_f(rt.get('ess_per_s_vs_numpyro'), '{:.2f}')}",
             ""]
    if results.get("headline"):
        lines += _headline_md(results) + [""]
    if results.get("fresh"):
        lines += _fresh_md(results) + [""]
    if results.get("grid"):
        lines += _grid_md(results) + [""]
    if results.get("scaling"):
        lines += _scaling_md(results) + [""]
    if results.get("lanes"):
        from .lanes import format_table

        lines += ["## Useful-step share of lock-step (vmapped) NUTS, eight schools non-centered", "",
                  format_table(results["lanes"]), ""]
    skipped = results["samplers"].get("skipped") or {}
    notes = list(results.get("notes") or []) + [f"skipped {k}: {v}" for k, v in skipped.items()]
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    v = results["versions"]
    lines.append("Versions: " + ", ".join(f"{k} {v[k]}" for k in v if v[k]) +
                 f". ESS/R-hat estimator: {results['estimator']}. Load average start/end: "
                 f"{results['machine'].get('load_average_start')} / {results['machine'].get('load_average_end')}.")
    return "\n".join(lines)


def validate(results: dict) -> list[str]:
    """Problems with a results dict's schema (empty list: valid)."""
    errs = []
    for k in TOP_KEYS:
        if k not in results:
            errs.append(f"missing top-level key {k!r}")
    if errs:
        return errs
    if results["schema"] != SCHEMA:
        errs.append(f"schema: expected {SCHEMA!r}, got {results['schema']!r}")
    for k in ("platform", "cpu_count", "jax_devices"):
        if k not in results["machine"]:
            errs.append(f"machine: missing {k!r}")
    for k in ("jax", "numpy"):
        if not results["versions"].get(k):
            errs.append(f"versions: missing {k!r}")
    for sec in ("headline", "grid", "scale", "fresh"):
        if sec not in results["settings"]:
            errs.append(f"settings: missing {sec!r}")
    h = results["headline"]
    if h is not None:
        for name, r in h["results"].items():
            for k in ("sampler", "compile", "runs", "median"):
                if k not in r:
                    errs.append(f"headline.results.{name}: missing {k!r}")
            for i, run in enumerate(r.get("runs", [])):
                for k in RUN_KEYS:
                    if k not in run:
                        errs.append(f"headline.results.{name}.runs[{i}]: missing {k!r}")
    g = results["grid"]
    if g is not None:
        for k in ("datasets", "runs", "cells", "ratios"):
            if k not in g:
                errs.append(f"grid: missing {k!r}")
        for i, run in enumerate(g.get("runs", [])):
            for k in ("dataset", "cell", "J", "tau_true", "sampler") + RUN_KEYS:
                if k not in run:
                    errs.append(f"grid.runs[{i}]: missing {k!r}")
    for k in TARGETS:
        if k not in results["ratios"]:
            errs.append(f"ratios: missing {k!r}")
    return errs


def plots(results: dict, out_stem: Path) -> list[Path]:
    """ESS/s against J (one panel per true tau) and against tau (one panel per J), log scales."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = results.get("grid")
    if not g or not g["cells"]:
        return []
    cells = [c for c in g["cells"] if c.get("ess_per_s")]
    samplers = list(dict.fromkeys(c["sampler"] for c in cells))
    Js = sorted({c["J"] for c in cells})
    taus = sorted({c["tau_true"] for c in cells})
    paths = []
    for xkey, xs, pkey, panels, label in (("J", Js, "tau_true", taus, "J"),
                                          ("tau_true", taus, "J", Js, "true tau")):
        fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False,
                                 sharey=True)
        for ax, pv in zip(axes[0], panels):
            for s in samplers:
                pts = sorted((c[xkey], c["ess_per_s"]) for c in cells if c["sampler"] == s and c[pkey] == pv)
                if pts:
                    ax.plot(*zip(*pts), marker="o", label=s)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel(label)
            ax.set_title(f"{'tau' if pkey == 'tau_true' else 'J'} = {pv:g}")
            ax.grid(True, which="both", alpha=0.3)
        axes[0][0].set_ylabel("min bulk ESS / s")
        axes[0][-1].legend(fontsize=7)
        fig.suptitle(f"ESS/s, suite {results['suite']}, {results['device']}")
        fig.tight_layout()
        path = out_stem.with_name(out_stem.name + f"-ess_per_s_vs_{'J' if xkey == 'J' else 'tau'}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
