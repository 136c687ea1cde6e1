"""`agentsim reproduce`: train every regime, evaluate, probe, and write figures, results and
a report whose verdicts follow from the numbers by a stated rule.

Layout of ``OUT``: ``runs/<regime>/`` (ordinary run directories), ``figures/``,
``results.json`` (every number in the figures, win rates, simulator gap) and ``REPORT.md``.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from experiments.config import ConfigError, load_config
from experiments.figures import value_probe_by_layer
from experiments.probe import VALUE_TARGETS, probe_run
from experiments.runs import RunError, read_status
from experiments.train import train
from models.probes import bootstrap_ci

# Each preset is a list of stages: (run name, overrides over the preset). A stage may refer to
# an earlier stage's run directory as {run:NAME}. Stages run in order.
STAGES = {
    # Every figure but F8 (no multi-token run) at reduced size, F6 for the simulator only, in about
    # five minutes on 2 cores (326 s measured from a fresh clone and a cold compile cache).
    "quick": [
        ("next_token", ["train.regime='next_token'", "train.steps=1000", "train.chunk=200",
                        "data.num_games=100000", "train.log_checkpoints=4"]),
        ("random_init", ["train.regime='random_init'"]),
        ("rl", ["train.regime='rl'", "train.steps=60", "train.chunk=20", "train.log_checkpoints=3",
                "ppo.num_envs=128"]),
        ("pretrain_rl", ["train.regime='pretrain_rl'", "train.steps=60", "train.chunk=20", "ppo.num_envs=128",
                         "train.log_checkpoints=4", "ppo.pretrained='{run:next_token}'"]),
    ],
    "paper": [
        ("next_token", ["train.regime='next_token'", "train.steps=1500", "train.chunk=100",
                        "data.num_games=100000", "train.log_checkpoints=6"]),
        ("random_init", ["train.regime='random_init'"]),
        ("rl", ["train.regime='rl'", "train.steps=100", "train.chunk=10", "train.log_checkpoints=6"]),
        ("pretrain_rl", ["train.regime='pretrain_rl'", "train.steps=100", "train.chunk=10",
                         "train.log_checkpoints=6", "ppo.pretrained='{run:next_token}'"]),
        ("continued_next_token", ["train.regime='next_token'", "train.steps=500", "train.chunk=250",
                                  "data.num_games=100000", "train.init_from='{run:next_token}'"]),
        ("next_token_mtp", ["train.regime='next_token'", "train.steps=1500", "train.chunk=250",
                            "data.num_games=100000", "model.mtp_heads=2"]),
        ("next_token_prompted", ["train.regime='next_token'", "train.steps=1500", "train.chunk=250",
                                 "data.num_games=100000", "data.persona_prompt=true"]),
        ("rl_shared_value", ["train.regime='rl'", "train.steps=100", "train.chunk=20", "model.value_head='shared'"]),
    ],
    # Every stage of the paper preset, so that tests run every analysis path.
    "tiny": [
        ("next_token", ["train.regime='next_token'", "train.log_checkpoints=2"]),
        ("random_init", ["train.regime='random_init'"]),
        ("rl", ["train.regime='rl'"]),
        ("pretrain_rl", ["train.regime='pretrain_rl'", "ppo.pretrained='{run:next_token}'"]),
        ("continued_next_token", ["train.regime='next_token'", "train.init_from='{run:next_token}'"]),
        ("next_token_mtp", ["train.regime='next_token'", "model.mtp_heads=2"]),
        ("next_token_prompted", ["train.regime='next_token'", "data.persona_prompt=true"]),
        ("rl_shared_value", ["train.regime='rl'", "model.value_head='shared'"]),
    ],
}
PRESET_SEEDS = {"quick": None, "tiny": None, "paper": [0, 1, 2, 3, 4]}
EMERGENCE_THRESHOLD = 0.05  # R² above the random-init control that counts as "represented"


@dataclass(frozen=True)
class AnalysisSizes:
    """How much held-out data and how large a grid each analysis gets: the figures' size."""

    probe_games: int = 2000
    """Held-out games for every probe (split by game 60/20/20)."""
    steer_alphas: tuple[float, ...] = (-8.0, -4.0, 0.0, 4.0, 8.0)
    """Steering strengths, in units of the residual's per-coordinate RMS."""
    steer_games_per_cell: int = 32
    """Games per opponent and side for each steering configuration."""
    steer_random: int = 2
    """Random directions per layer (the steering control)."""
    games_per_cell: int = 128
    """Games per opponent and side in layer reset and prompted play."""
    steer_runs: tuple[str, ...] = ("next_token", "pretrain_rl")
    """Stages whose runs are steered (F6, one figure each)."""


SIZES = {
    "tiny": AnalysisSizes(probe_games=300, steer_alphas=(-4.0, 0.0, 4.0), steer_games_per_cell=4, steer_random=1,
                          games_per_cell=8),
    "quick": AnalysisSizes(probe_games=600, steer_alphas=(-4.0, 0.0, 4.0), steer_games_per_cell=16, steer_random=1,
                           games_per_cell=32, steer_runs=("next_token",)),
    "paper": AnalysisSizes(),
}


def reproduce(preset: str, out: str | Path, *, force: bool = False, resume: bool = False,
              overrides: tuple[str, ...] = (), progress=None, on_message=print,
              probe_games: int | None = None, value_only: bool = False) -> dict:
    """Train every stage of the preset, then run every analysis at the preset's sizes
    (``value_only``: only the claim-1 value probes and figure)."""
    out = Path(out)
    if preset not in STAGES:
        raise ConfigError(f"unknown preset {preset!r}; known: {', '.join(STAGES)}")
    if probe_games is not None and probe_games < 50:
        raise ConfigError(f"probe_games must be at least 50, got {probe_games}")
    if out.exists() and any(out.iterdir()) and not (force or resume):
        raise RunError(f"{out} is not empty; pass --resume to finish it or --force to replace it")
    if force and out.exists() and not resume:
        shutil.rmtree(out)
    sizes = SIZES[preset] if probe_games is None else replace(SIZES[preset], probe_games=probe_games)
    base_preset = "quick" if preset == "paper" else preset
    seeds = PRESET_SEEDS[preset]
    started = time.time()
    timings, finals, probes, dirs = {}, {}, {}, {}
    for name, stage in STAGES[preset]:
        run_dir = out / "runs" / name
        dirs[name] = run_dir
        extra = [_resolve(o, out) for o in stage]
        if seeds:
            extra.append(f"train.seeds={seeds}")
        cfg = load_config(base_preset, overrides=extra + list(overrides))
        t0 = time.time()
        if read_status(run_dir).get("status") != "finished":
            train(cfg, run_dir, resume=(run_dir / "config.json").exists(), progress=progress,
                  on_message=on_message)
        t1 = time.time()
        probes[name] = probe_run(run_dir, num_games=sizes.probe_games)
        timings[name] = {"train_s": round(t1 - t0, 1), "probe_s": round(time.time() - t1, 1)}
        finals[name] = json.loads((run_dir / "final.json").read_text())
    figures = value_probe_by_layer(probes, out / "figures")
    results = summarise(probes, finals)
    if not value_only:
        from experiments.analyses import run_all

        t0 = time.time()
        extra_results, extra_figures = run_all(dirs, out / "figures", sizes, on_message)
        results["analyses"] = extra_results
        figures += extra_figures
        (out / "analyses.json").write_text(json.dumps(extra_results))  # kept even if judging fails
        timings["analyses"] = {"train_s": 0.0, "probe_s": round(time.time() - t0, 1)}
        from experiments.claims import judge_all

        results["claims"].update(judge_all(results))
    results.update(preset=preset, sizes=asdict(sizes), timings=timings, total_s=round(time.time() - started, 1),
                   figures=[str(p.relative_to(out)) for p in figures])
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "REPORT.md").write_text(report(results))
    return results


def _resolve(override: str, out: Path) -> str:
    while "{run:" in override:
        i = override.index("{run:")
        j = override.index("}", i)
        override = override[:i] + str(out / "runs" / override[i + 5:j]) + override[j + 1:]
    return override


def _ci(values) -> dict:
    c = bootstrap_ci(np.asarray(values, float))
    return {"mean": np.round(c.mean, 4).tolist(), "low": np.round(c.low, 4).tolist(),
            "high": np.round(c.high, 4).tolist()}


def summarise(probes: dict, finals: dict) -> dict:
    regimes = {}
    for regime, res in probes.items():
        entry = {"probe": {}, "matches": {}, "simulator": finals[regime]["simulator"]}
        for target, scores in res["targets"].items():
            trained = np.asarray(scores["trained"])
            emergence = trained - np.asarray(scores["random_init"])
            best = int(np.argmax(emergence.mean(0)))
            entry["probe"][target] = {
                "r2_by_layer": _ci(trained), "random_init_by_layer": _ci(scores["random_init"]),
                "shuffled_by_layer": _ci(scores["shuffled"]), "emergence_by_layer": _ci(emergence),
                "best_layer": best, "best_emergence": _ci(emergence[:, best]),
                "per_seed": scores,
            }
        m = finals[regime]["matches"]
        for persona in ("random", "greedy", "perfect", "center", "corner"):
            entry["matches"][persona] = {o: _ci(m[f"eval/{o}_vs_{persona}"]) if f"eval/{o}_vs_{persona}" in m
                                         else _ci(np.asarray(m[f"eval/{o}_vs_{persona}_as_x"]) * 0.5
                                                  + np.asarray(m[f"eval/{o}_vs_{persona}_as_o"]) * 0.5)
                                         for o in ("win", "draw", "loss")}
        regimes[regime] = entry
    return {"regimes": regimes, "claims": {"1": verdict_claim1(regimes)}}


def verdict(low: float, high: float, threshold: float = EMERGENCE_THRESHOLD) -> str:
    """supported if the whole CI is above the threshold, contradicted if wholly below, else
    inconclusive."""
    if low > threshold:
        return "supported"
    if high < threshold:
        return "contradicted"
    return "inconclusive"


def verdict_claim1(regimes: dict) -> dict:
    """Claim 1: an agent trained toward a terminal goal represents it (value decodable above the
    random-init control). Judged on the expected-outcome target at the agent's best layer."""
    out = {}
    for regime in ("rl", "pretrain_rl", "next_token", "rl_shared_value", "next_token_mtp"):
        if regime in regimes:
            e = regimes[regime]["probe"]["expected_outcome"]["best_emergence"]
            out[regime] = {"emergence": e, "layer": regimes[regime]["probe"]["expected_outcome"]["best_layer"],
                           "verdict": verdict(e["low"], e["high"])}
    agent = out.get("rl", {}).get("verdict", "inconclusive")
    return {"by_regime": out, "verdict": agent,
            "rule": (f"per regime: 'supported' if the 95% bootstrap CI (over seeds) of the best layer's "
                     f"R² above the random-init control lies wholly above {EMERGENCE_THRESHOLD}, "
                     f"'contradicted' if wholly below, else 'inconclusive'; the claim's verdict is "
                     f"the rl agent's.")}


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
