"""Verdicts on the six claims of DESIGN.md, derived from numbers by rules stated here.

Every rule reads a per-seed statistic, takes its 95% bootstrap CI over seeds, and compares it
with a smallest effect worth calling one (the claim's threshold): 'supported' when the whole CI
lies above it, 'contradicted' when the whole CI lies below it (the effect is reliably smaller
than that, or reversed), 'inconclusive' otherwise. Nothing here is written by hand.
"""

from __future__ import annotations

import numpy as np

from experiments.statistics import bootstrap_ci

EMERGENCE_THRESHOLD = 0.05  # R² above the random-init control that counts as "represented"


def _ci(values) -> dict:
    c = bootstrap_ci(np.asarray(values, float))
    return {k: np.asarray(v, float).tolist() for k, v in zip(("mean", "low", "high"), c)}


def three_way(ci: dict, above: float, below: float | None = None) -> str:
    below = above if below is None else below
    if ci["low"] > above:
        return "supported"
    if ci["high"] < below:
        return "contradicted"
    return "inconclusive"


def _scores(per_seed) -> np.ndarray:
    return np.asarray([r["score"] for r in per_seed], float)


def claim2(results: dict) -> dict:
    """A simulator's current character is inferable from its residual stream."""
    suite = results["analyses"]["probe_suite"]["next_token"]
    entry = suite["targets"]["persona_mover"]
    trained, ctrl, task = _scores(entry["trained"]), _scores(entry["random_init"]), _scores(entry["control_task"])
    best = int(np.argmax(trained.mean(0)))
    stat = _ci(trained[:, best] - ctrl[:, best])
    ceiling = float(np.mean(suite["bayes_ceiling"]["x"] + suite["bayes_ceiling"]["o"]))
    out = {"statistic": "persona-probe accuracy above the random-init control at the best layer (next_token)",
           "value": stat, "layer": best, "accuracy": _ci(trained[:, best]),
           "selectivity_vs_control_task": _ci(trained[:, best] - task[:, best]),
           "bayes_ceiling_mean_over_moves": ceiling, "threshold": 0.02,
           "verdict": three_way(stat, 0.02), "figure": "figures/f3_persona_probe_by_move.png"}
    # Behavioural evidence beside the probe: a persona-prompted simulator plays each character.
    for run in results["analyses"].get("behaviour", {}).get("runs", {}).values():
        if isinstance(run.get("prompted_strength"), dict):
            for persona, vs in run["prompted_strength"].items():
                out[f"prompted_as_{persona}_loss_vs_perfect"] = _ci(vs["perfect"]["loss"])
                out[f"prompted_as_{persona}_win_vs_random"] = _ci(vs["random"]["win"])
            break
    return out


def _t90(steps: np.ndarray, curve: np.ndarray) -> float:
    """log10 of the first step at which a score has made 90% of its total change."""
    start, end = curve[0], curve[-1]
    if abs(end - start) < 1e-9:
        return float("nan")
    reached = np.flatnonzero((curve - start) / (end - start) >= 0.9)
    return float(np.log10(max(steps[reached[0]], 1)))


def claim3(results: dict, stage: str = "next_token", target: str = "board_mover") -> dict:
    """Later layers finish developing later than earlier ones."""
    tl = results["analyses"]["timeline"][stage]
    data = np.asarray(tl["targets"][target], float)  # [ckpt, seed, layer]
    steps = np.asarray(tl["steps"])
    t90 = np.array([[_t90(steps, data[:, s, layer]) for layer in range(data.shape[2])]
                    for s in range(data.shape[1])])
    diff = t90[:, -1] - t90[:, 1]  # last block vs first block, in log10 steps
    diff = diff[np.isfinite(diff)]
    stat = _ci(diff) if len(diff) else {"mean": float("nan"), "low": float("nan"), "high": float("nan")}
    verdict = three_way(stat, 0.1) if len(diff) else "inconclusive"
    return {"threshold": 0.1, "statistic": f"log10 step at which the last block's {target} probe reached 90% of its change "
                         f"minus the first block's ({stage}); > 0 means later layers finish later",
            "value": stat, "t90_log10_by_layer": _ci(t90) if len(diff) else None,
            "checkpoints": steps.tolist(), "verdict": verdict,
            "figure": "figures/f1_value_probe_layer_by_checkpoint.png"}


def claim4(results: dict) -> dict:
    """RL fine-tuning changes mostly later layers and reuses early concepts."""
    ch = results["analyses"]["change"]
    tuned = np.asarray(ch["comparisons"]["tuned"]["cka"], float)  # [seed, resid layer]
    stat = _ci(tuned[:, 1] - tuned[:, -1])  # CKA drop at the last block minus at the first block
    out = {"statistic": "representation change (1 − CKA to the pretrained model) at the last block minus "
                        "at the first block, RL-tuned (> 0: later layers change more)",
           "value": stat, "threshold": 0.05, "verdict": three_way(stat, 0.05),
           "weight_change_last_minus_first_block": _ci(
               np.asarray(ch["comparisons"]["tuned"]["weight_change"], float)[:, -2]
               - np.asarray(ch["comparisons"]["tuned"]["weight_change"], float)[:, 1]),
           "first_block_cka_minus_seed_floor": _ci(tuned[:, 1] - np.mean(np.asarray(ch["seed_floor"]["cka"], float)[:, 1])),
           "figure": "figures/f4_where_rl_changes.png"}
    if "control" in ch["comparisons"]:
        control = np.asarray(ch["comparisons"]["control"]["cka"], float)
        out["last_block_cka_drop_rl_minus_continued_pretraining"] = _ci(control[:, -1] - tuned[:, -1])
    reset = results["analyses"].get("layer_reset")
    if reset:
        out["note"] = "layer-reset effects are in figures/f5_layer_reset.png and results.json"
    return out


def claim5(results: dict) -> dict:
    """More RL makes a larger fraction of the network do agentic processing."""
    amount = results["analyses"]["rl_amount"]
    r2 = np.asarray(amount["value_r2"], float)  # [ckpt, seed, layer]
    gain = r2[:, :, 1:] - r2[:1, :, 1:]  # blocks only, relative to the pretrained start
    stat = _ci(gain[-1].mean(-1) - gain[1].mean(-1))
    frac = (gain > 0.02).mean(-1)  # [ckpt, seed]
    return {"statistic": "mean over blocks of the value-probe R² gain over the pretrained model, at the last "
                         "RL checkpoint minus at the first (> 0: value spreads with more RL)",
            "value": stat, "threshold": 0.02, "verdict": three_way(stat, 0.02),
            "fraction_of_blocks_gaining_first": _ci(frac[1]), "fraction_of_blocks_gaining_last": _ci(frac[-1]),
            "checkpoints": amount["steps"], "figure": "figures/f7_rl_amount.png"}


def claim6(results: dict) -> dict:
    """Multi-token prediction raises agentic processing (value emergence) over next-token."""
    suites = results["analyses"]["probe_suite"]
    if "next_token_mtp" not in suites:
        return {"verdict": "inconclusive", "note": "no next_token_mtp run in this preset"}
    emergence = {}
    for k in ("next_token", "next_token_mtp"):
        e = suites[k]["targets"]["value_mover"]
        emergence[k] = (_scores(e["trained"]) - _scores(e["random_init"])).max(1)  # best layer per seed
    diff = emergence["next_token_mtp"] - emergence["next_token"]
    stat = _ci(diff)
    regs = results["regimes"]
    loss = {k: regs[k]["matches"]["perfect"]["loss"] for k in ("next_token", "next_token_mtp") if k in regs}
    return {"statistic": "value-probe emergence (best layer, over random init): MTP minus NTP, paired by seed",
            "value": stat, "threshold": 0.02, "loss_vs_perfect": loss, "verdict": three_way(stat, 0.02),
            "figure": "figures/f8_mtp_vs_ntp.png"}


def judge_all(results: dict) -> dict:
    out = {}
    for number, fn in (("2", claim2), ("3", claim3), ("4", claim4), ("5", claim5), ("6", claim6)):
        try:
            out[number] = fn(results)
        except KeyError as e:  # an analysis this preset did not run
            out[number] = {"verdict": "inconclusive", "note": f"missing analysis {e}"}
        except (ValueError, IndexError) as e:  # too few checkpoints/seeds for the statistic
            out[number] = {"verdict": "inconclusive", "note": f"statistic not computable: {e}"}
    return out


def _ci4(values) -> dict:
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
                "r2_by_layer": _ci4(trained), "random_init_by_layer": _ci4(scores["random_init"]),
                "shuffled_by_layer": _ci4(scores["shuffled"]), "emergence_by_layer": _ci4(emergence),
                "best_layer": best, "best_emergence": _ci4(emergence[:, best]),
                "per_seed": scores,
            }
        m = finals[regime]["matches"]
        for persona in ("random", "greedy", "perfect", "center", "corner"):
            entry["matches"][persona] = {o: _ci4(m[f"eval/{o}_vs_{persona}"]) if f"eval/{o}_vs_{persona}" in m
                                         else _ci4(np.asarray(m[f"eval/{o}_vs_{persona}_as_x"]) * 0.5
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
