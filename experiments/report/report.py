"""REPORT.md: every claim's statistic, interval, rule and figure, written from results.json."""

from __future__ import annotations

import numpy as np

from experiments.analysis.value_probes import VALUE_TARGETS
from experiments.report.claims import _ci4 as _ci

CLAIM_TITLES = {
    "2": "A simulator holds characters; the current one is inferable from its residual stream",
    "3": "Later layers finish developing later than earlier ones",
    "4": "RL fine-tuning changes mostly later layers and reuses early concepts",
    "5": "More RL makes a larger fraction of the network do agentic processing",
    "6": "Multi-token prediction raises agentic processing",
}


def claims_section(results: dict) -> list[str]:
    lines = []
    for number, title in CLAIM_TITLES.items():
        c = results["claims"].get(number)
        if c is None:
            continue
        lines += [f"## Claim {number}: {title}", ""]
        lines.append(f"Verdict: **{c['verdict']}**." + (f" Figure: `{c['figure']}`." if c.get("figure") else ""))
        if "statistic" in c:
            v = c["value"]
            lines.append(f"Statistic: {c['statistic']} = {v['mean']:.3f} [{v['low']:.3f}, {v['high']:.3f}] "
                         "(95% bootstrap CI over seeds).")
        for key, val in c.items():
            if key in ("verdict", "figure", "statistic", "value"):
                continue
            if isinstance(val, dict) and {"mean", "low", "high"} <= set(val) and np.ndim(val["mean"]) == 0:
                lines.append(f"- {key.replace('_', ' ')}: {val['mean']:.3f} [{val['low']:.3f}, {val['high']:.3f}]")
            elif isinstance(val, (int, float, str)):
                lines.append(f"- {key.replace('_', ' ')}: {val}")
        lines.append("")
    if results["claims"].keys() - {"1"}:
        lines += ["Rule for claims 2–6: the per-seed statistic's 95% bootstrap CI wholly above the claim's "
                  "threshold (the smallest effect worth the name) gives 'supported', wholly below it "
                  "'contradicted', else 'inconclusive' (experiments/claims.py).", ""]
    return lines


def _fmt(ci: dict, i: int | None = None) -> str:
    m, lo, hi = (ci[k] if i is None else ci[k][i] for k in ("mean", "low", "high"))
    return f"{m:.3f} [{lo:.3f}, {hi:.3f}]"


def mlp_lines(results: dict) -> list[str]:
    """Claim 1 read by the nonlinear probe too: a value that a small MLP decodes but a linear
    probe does not would change what 'represented' means here, so it is reported beside it."""
    suites = results.get("analyses", {}).get("probe_suite", {})
    rows = []
    for regime, suite in suites.items():
        mlp = suite["targets"].get("value_mover", {}).get("mlp")
        if not mlp or "random_init" not in mlp:
            continue
        trained = np.asarray([r["score"] for r in mlp["trained"]], float)
        control = np.asarray([r["score"] for r in mlp["random_init"]], float)
        best = int(np.argmax(trained.mean(0)))
        rows.append(f"| {regime} | {best} | {_fmt(_ci(trained[:, best]))} | {_fmt(_ci(control[:, best]))} | "
                    f"{_fmt(_ci(trained[:, best] - control[:, best]))} |")
    if not rows:
        return []
    return ["", "The same question asked with a small MLP probe (64 ReLU units; value for the player to move; "
            "figure `figures/f2_probe_targets_controls.png`, second row), not used by the verdict:", "",
            "| regime | best layer | MLP R² | random-init control | emergence |", "| --- | --- | --- | --- | --- |",
            *rows]


def report(results: dict) -> str:
    regs = results["regimes"]
    c1 = results["claims"]["1"]
    lines = [
        "# agentsim reproduction report",
        "",
        f"Preset `{results['preset']}`; {len(next(iter(regs.values()))['probe']['expected_outcome']['per_seed']['trained'])} seeds per regime; "
        f"total {results['total_s']:.0f} s. Every number is recomputed from the run directories "
        "under `runs/` and listed in `results.json`. Intervals are 95% bootstrap CIs over seeds.",
        "",
        "## Claim 1: an agent represents its terminal goal; a simulator need not",
        "",
        f"Figure: `{results['figures'][0]}`. Verdict: **{c1['verdict']}**.",
        f"Rule: {c1['rule']}",
        "",
        "| regime | best layer | R² expected outcome (best layer) | random-init control | emergence | verdict |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for regime, v in c1["by_regime"].items():
        p = regs[regime]["probe"]["expected_outcome"]
        layer = v["layer"]
        lines.append(f"| {regime} | {layer} | {_fmt(p['r2_by_layer'], layer)} | "
                     f"{_fmt(p['random_init_by_layer'], layer)} | {_fmt(v['emergence'])} | {v['verdict']} |")
    lines += mlp_lines(results)
    lines += ["", "R² of the value probes by layer (0 = embeddings):", "",
              "| regime | target | " + " | ".join(f"layer {i}" for i in range(len(next(iter(regs.values()))['probe']['minimax']['r2_by_layer']['mean']))) + " |",
              "| --- | --- | " + " | ".join("---" for _ in next(iter(regs.values()))['probe']['minimax']['r2_by_layer']['mean']) + " |"]
    for regime, r in regs.items():
        for target in VALUE_TARGETS:
            ci = r["probe"][target]["r2_by_layer"]
            lines.append(f"| {regime} | {target} | " + " | ".join(_fmt(ci, i) for i in range(len(ci["mean"]))) + " |")
    lines += ["", "Shuffled-label control (labels permuted across games at the same move number, so "
              "only what the move number predicts survives), at each regime's best layer: " + ", ".join(
        f"{k} {regs[k]['probe']['expected_outcome']['shuffled_by_layer']['mean'][c1['by_regime'].get(k, {'layer': 0})['layer']]:.3f}"
        for k in regs if k in c1["by_regime"]) + ".", "",
        "## Behaviour", "",
        "| regime | loss vs random | loss vs greedy | loss vs perfect | draw vs perfect | simulator gap (nats/move) |",
        "| --- | --- | --- | --- | --- | --- |"]
    for regime, r in regs.items():
        m = r["matches"]
        gap = _ci(r["simulator"]["gap"])
        lines.append(f"| {regime} | {_fmt(m['random']['loss'])} | {_fmt(m['greedy']['loss'])} | "
                     f"{_fmt(m['perfect']['loss'])} | {_fmt(m['perfect']['draw'])} | {_fmt(gap)} |")
    lines += ["", "Loss rates are over games as X and as O (greedy arg-max play, 256 games per side "
              "per persona per seed). The simulator gap is the held-out next-move loss minus the "
              f"Bayes-optimal loss of the persona mixture ({regs[next(iter(regs))]['simulator']['bayes_optimal_loss']:.4f} nats/move).", "",
              ]
    lines += claims_section(results)
    lines += ["## Timings", "", "| stage | train s | probe s |", "| --- | --- | --- |"]
    for regime, t in results["timings"].items():
        lines.append(f"| {regime} | {t['train_s']} | {t['probe_s']} |")
    for name, secs in results.get("analyses", {}).get("seconds", {}).items():
        lines.append(f"| analysis: {name} | – | {secs} |")
    lines += ["", "Sizes: " + ", ".join(f"{k} {v}" for k, v in results["sizes"].items()) + ".",
              "", "## Figures", ""] + [f"- `{f}`" for f in results["figures"] if f.endswith(".png")]
    return "\n".join(lines) + "\n"
