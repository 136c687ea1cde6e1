"""Verdicts on the six claims (README, "The claims"), each from one per-seed statistic by one stated rule.

Every claim reads a statistic per seed, oriented so that > 0 is what the claim predicts, puts a
95% t-interval over seeds around its mean (``statistics.seed_interval``: held-out games are
resampled by game, and shared games add their sampling variance), and applies the four-way
rule of ``statistics.verdict`` with the claim's smallest effect worth the name. Layers are
chosen on validation data among layers 1…L, never on test and never the embeddings. Nothing
here knows which answer is expected: the same functions give every verdict in the tests.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from agentsim.experiments.report.numbers import sig3
from agentsim.experiments.statistics import RULE_TEXT, Interval, chosen_layer, seed_interval, verdict

# Quality bars per game: a claim about an agent or a simulator is flagged when its subject
# misses any of them. A bar is (measure, "at_most" | "at_least", value).
_C4_AGENT = (("loss_vs_perfect", "at_most", 0.05), ("win_vs_random", "at_least", 0.95))
BARS = {
    "tictactoe": {"rl": (("loss_vs_perfect", "at_most", 0.02),), "pretrain_rl": (("loss_vs_perfect", "at_most", 0.01),),
                  "rl_shared_value": (("loss_vs_perfect", "at_most", 0.02),),
                  "next_token": (("simulator_gap", "at_most", 0.02),),
                  "next_token_mtp": (("simulator_gap", "at_most", 0.02),)},
    "connect_four": {"rl": _C4_AGENT, "pretrain_rl": _C4_AGENT, "rl_shared_value": _C4_AGENT,
                     "next_token": (("simulator_gap", "at_most", 0.05),),
                     "next_token_mtp": (("simulator_gap", "at_most", 0.05),)},
}


def bars_for(game: str) -> dict[str, tuple]:
    """The quality bars of a game (``connect_four:5x4`` has connect-four's)."""
    return BARS[game.partition(":")[0]]


def bar_text(measure: str, way: str, value: float) -> str:
    return f"{measure.replace('_', ' ')} {'≤' if way == 'at_most' else '≥'} {value}"
TITLES = {
    "1": "An agent represents its terminal goal (its value); a simulator need not",
    "2": "A simulator holds characters; the current one is inferable from its residual stream",
    "3": "Later layers finish developing later than earlier ones",
    "4": "RL fine-tuning changes mostly later layers and reuses early concepts",
    "5": "More RL makes a larger fraction of the network do agentic processing",
    "6": "Multi-token prediction raises agentic processing",
}


@dataclass(frozen=True)
class Claim:
    """A judged claim: the statistic, its interval, the rule's outcome, and what backs it."""

    number: str
    statistic: str
    interval: dict  # statistics.Interval
    smallest_effect: float
    verdict: str
    rule_gives: str
    figure: str
    subjects: tuple[str, ...] = ()  # the runs the claim is about (their quality bars are checked)
    evidence: dict = field(default_factory=dict)  # name -> Interval dict, number or text
    note: str = ""

    @property
    def title(self) -> str:
        return TITLES[self.number]

    def as_dict(self) -> dict:
        return plain({**asdict(self), "evidence": self.evidence, "title": self.title, "rule": RULE_TEXT})


def judged(number: str, statistic: str, interval: Interval, smallest: float, figure: str,
           subjects=(), evidence=None, note: str = "") -> Claim:
    v = verdict(interval, smallest)
    return Claim(number, statistic, interval.as_dict(), smallest, v["verdict"], v["rule_gives"], figure,
                 tuple(subjects), evidence or {}, note)


def not_judged(number: str, why: str, figure: str = "–") -> Claim:
    nan = Interval(float("nan"), float("nan"), float("nan"), 0, float("nan"), float("nan"))
    return Claim(number, "", nan.as_dict(), float("nan"), "inconclusive", "inconclusive", figure, note=why)


# ---------------------------------------------------------------------------------- per-seed reading


def emergence(net: list[dict], control: list[dict], within: bool = False, ceiling: list[dict] | None = None):
    """Per seed, at the network's own validation-chosen layer: (score − control score) and its
    game-bootstrap replicates; with ``ceiling`` the fraction of the achievable gap instead,
    (score − control) / (ceiling − control)."""
    key, boot = ("within_r2", "boot_within_r2") if within else ("test_r2", "boot_r2")
    values, reps = [], []
    for s, (n, c) in enumerate(zip(net, control)):
        layer = n["layer"]
        e = n[key][layer] - c[key][layer]
        e_b = np.asarray(n[boot])[:, layer] - np.asarray(c[boot])[:, layer]
        if ceiling is not None:
            top, top_b = ceiling[s][key][0], np.asarray(ceiling[s][boot])[:, 0]
            e, e_b = e / (top - c[key][layer]), e_b / (top_b - np.asarray(c[boot])[:, layer])
        values.append(e)
        reps.append(e_b)
    return np.asarray(values), np.asarray(reps)  # [S], [S, B]


def score(net: list[dict], within: bool = False, unseen: bool = False):
    """Per seed: the score at the chosen layer and its replicates (for a network or a head);
    ``unseen``: on the test positions never seen in training."""
    key, boot = ("within_r2", "boot_within_r2") if within else ("unseen_r2", "boot_unseen_r2") if unseen else \
        ("test_r2", "boot_r2")
    return (np.asarray([n[key][n["layer"]] for n in net], float),
            np.asarray([np.asarray(n[boot], float)[:, n["layer"]] for n in net]))


def has_unseen(net: list[dict]) -> bool:
    """Whether scores on never-seen positions were measured (every seed has some)."""
    return all(n.get("unseen_r2") is not None for n in net)


def own_games_interval(values_S, reps_SxB) -> Interval:
    """Each seed measured on its own games: the seed spread holds the game noise."""
    return seed_interval(values_S, np.nanvar(reps_SxB, axis=1), shared_games=False)


def shared_games_interval(values_S, reps_SxB) -> Interval:
    """Every seed measured on the same games: add the sampling variance of the seed mean."""
    return seed_interval(values_S, np.nanvar(np.nanmean(reps_SxB, axis=0)), shared_games=True)


def plain(obj):
    """JSON-able copy: Intervals become dicts."""
    if isinstance(obj, Interval):
        return obj.as_dict()
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    return obj


# ---------------------------------------------------------------------------------- claim 1


def value_table(measure: dict, dataset: str, target: str) -> dict:
    """Each network's numbers on one dataset and target: R², emergence over its random-init
    control, fraction of the achievable gap (overall and within move number), layers."""
    entry = measure["datasets"][dataset]["targets"][target]
    nets, ceil = entry["networks"], entry["ceiling"]
    controls = {"policy": "random_init", "simulator": "random_init", "critic": "random_init_critic"}
    out = {"ceiling": own_games_interval(*score(ceil))}
    if has_unseen(ceil):
        out["ceiling_unseen"] = own_games_interval(*score(ceil, unseen=True))
    for name, per_seed in nets.items():
        row = {"r2": own_games_interval(*score(per_seed)), "layers": [n["layer"] for n in per_seed]}
        if has_unseen(per_seed):
            row["r2_unseen"] = own_games_interval(*score(per_seed, unseen=True))
        if per_seed[0].get("test_rmse") is not None:
            row["residual_rms"] = seed_interval([n["test_rmse"][n["layer"]] for n in per_seed])
        if name in controls and controls[name] in nets:
            ctrl = nets[controls[name]]
            row["control_r2"] = own_games_interval(*score([{**c, "layer": n["layer"]} for c, n in zip(ctrl, per_seed)]))
            row["emergence"] = own_games_interval(*emergence(per_seed, ctrl))
            row["fraction_of_gap"] = own_games_interval(*emergence(per_seed, ctrl, ceiling=ceil))
            row["emergence_within_move"] = own_games_interval(*emergence(per_seed, ctrl, within=True))
            row["fraction_of_gap_within_move"] = own_games_interval(*emergence(per_seed, ctrl, True, ceil))
        out[name] = row
    return out


def paired(a: list[dict], b: list[dict], unseen: bool = False) -> Interval:
    """Network a minus network b on the same tokens and seeds: held-out R² each at its own
    validation-chosen layer (the random-init control is the same network for both, so it is not
    subtracted: at different layers it would add a difference of controls to the statistic).
    ``unseen``: on the test positions never seen in training."""
    (ra, ba), (rb, bb) = score(a, unseen=unseen), score(b, unseen=unseen)
    return own_games_interval(ra - rb, ba - bb)


def claim1(measures: dict[str, dict], agent: str = "rl", smallest: float = 0.05) -> Claim:
    """On each agent seed's own games at its decisions, with its own V^π as the target: the agent's
    policy trunk minus the simulator of the same seed (held-out R² at each one's
    validation-chosen layer). The policy trunk is the agent's own processing: with the default
    separate critic the value loss never reaches it, so a value there is the policy's own; the
    critic, trained to regress the value, is reported beside it, not judged."""
    if agent not in measures:
        return not_judged("1", f"no {agent} run in this preset")
    evidence: dict = {}
    for regime, m in measures.items():
        own = m["datasets"]["own_games"]
        nets = own["targets"]["agent_value"]["networks"]
        if regime != agent:
            iv_ = paired(nets["policy"], nets["simulator"])
            evidence[f"{regime}: policy trunk minus simulator"] = iv_
            evidence[f"{regime}: rule gives"] = verdict(iv_, smallest)["verdict"]
        if has_unseen(nets["policy"]) and has_unseen(nets["simulator"]):
            evidence[f"{regime}: policy trunk minus simulator, on positions never seen in training"] = \
                paired(nets["policy"], nets["simulator"], unseen=True)
        labels = own.get("labels") or {}
        if labels.get("rollouts"):
            evidence[f"{regime}: V^π label"] = (f"{labels['method']}, {labels['rollouts']} games per history; "
                                                f"standard error (rms) {sig3(np.mean(labels['label_se_rms']))}")
        if "critic" in nets:
            evidence[f"{regime}: critic trunk minus simulator (not judged: the critic is trained on the value)"] = \
                paired(nets["critic"], nets["simulator"])
        for ds, d in m["datasets"].items():
            for t in d["targets"]:
                evidence[f"{regime}: {ds} / {t}"] = value_table(m, ds, t)
    nets = measures[agent]["datasets"]["own_games"]["targets"]["agent_value"]["networks"]
    return judged("1", f"held-out R² of a value probe for the agent's own V^π, on the `{agent}` agent's own games at "
                       "its decisions: its policy trunk minus the next_token simulator of the same seed on the same "
                       "tokens, each at its validation-chosen layer (> 0: the agent's own processing represents "
                       "its value more than a simulator's does)", paired(nets["policy"], nets["simulator"]),
                  smallest, "figures/f0_value_where_it_lives.png", (agent, "next_token"), evidence)


# ---------------------------------------------------------------------------------- claims 2-6


def _suite_scores(per_seed: list[dict], layer_by_seed=None, boot: bool = False):
    layers = layer_by_seed if layer_by_seed is not None else [chosen_layer(r["val_score"]) for r in per_seed]
    values = np.asarray([r["score"][l] for r, l in zip(per_seed, layers)])
    if not boot:
        return values, layers
    return values, np.asarray([np.asarray(r["boot_score"])[:, l] for r, l in zip(per_seed, layers)]), layers


def claim2(results: dict, smallest: float = 0.02) -> Claim:
    """The simulator's persona probe (the persona to move) above the same probe at random init."""
    suites = results["analyses"].get("probe_suite", {})
    if "next_token" not in suites:
        return not_judged("2", "no probe suite on a next_token run")
    suite = suites["next_token"]
    entry = suite["targets"]["persona_mover"]
    acc, acc_b, layers = _suite_scores(entry["trained"], boot=True)
    ctrl, ctrl_b, _ = _suite_scores(entry["random_init"], layers, boot=True)
    task, _ = _suite_scores(entry["control_task"], layers)
    ceiling = float(suite["bayes_ceiling"]["mover_test"])
    evidence = {"accuracy": shared_games_interval(acc, acc_b), "random_init": shared_games_interval(ctrl, ctrl_b),
                "bayes_ceiling": ceiling, "layers": layers,
                "fraction_of_gap": shared_games_interval((acc - ctrl) / (ceiling - ctrl), (acc_b - ctrl_b) / (ceiling - ctrl_b)),
                # Each task against its own ceiling: the persona to move is only partly knowable from the
                # moves (its Bayes ceiling), the control task's labels are a function of what the network
                # sees (ceiling 1), so raw accuracies are not on one scale.
                f"selectivity vs the control task, each as a fraction of its own ceiling (persona "
                f"{sig3(ceiling)}, control task 1)": seed_interval(acc / ceiling - task)}
    if all(r.get("unseen_score") is not None for r in entry["trained"] + entry["random_init"]):
        unseen = [np.asarray([r["unseen_score"][l] for r, l in zip(entry[k], layers)], float)
                  for k in ("trained", "random_init")]
        evidence["minus random init, on positions never seen in training"] = seed_interval(unseen[0] - unseen[1])
        if suite.get("seen"):
            evidence["test positions never seen in training"] = (f"{suite['seen']['test_rows_unseen']} of "
                                                                 f"{suite['seen']['test_rows']}")
    for run in results["analyses"].get("behaviour", {}).get("runs", {}).values():
        if isinstance(run.get("prompted_strength"), dict):  # behaviour beside the probe
            for persona, vs in run["prompted_strength"].items():
                evidence[f"prompted as {persona}: loss vs perfect"] = seed_interval(vs["perfect"]["loss"])
            break
    return judged("2", "persona-probe accuracy (persona to move, next_token) minus the same probe at random init, "
                       "at the validation-chosen layer", shared_games_interval(acc - ctrl, acc_b - ctrl_b),
                  smallest, "figures/f3_persona_probe_by_move.png", ("next_token",), evidence)


MIN_CHANGE = 0.02  # a probe score that moves less than this over training has not developed


def t90(steps: np.ndarray, curve: np.ndarray, min_change: float = MIN_CHANGE) -> float:
    """log10 of the step from which a score stays within 10% of its final value ("finished
    developing": a settling time, so a passing bump is not read as early development), linearly
    interpolated in log10(step) at the last crossing; nan if the score moved less than
    ``min_change`` in all (nothing developed to time)."""
    start, end = curve[0], curve[-1]
    if not np.isfinite(end - start) or abs(end - start) < min_change:
        return float("nan")
    frac = (curve - start) / (end - start)
    logs = np.log10(np.maximum(steps, 1))
    outside = np.flatnonzero(np.abs(frac - 1.0) > 0.1)
    if len(outside) == 0:
        return float(logs[0])
    i = int(outside[-1]) + 1  # first index of the final stretch within 10% of the final value
    edge = 0.9 if frac[i - 1] < 0.9 else 1.1  # entered the band from below or from above
    w = (edge - frac[i - 1]) / (frac[i] - frac[i - 1])
    return float(logs[i - 1] + w * (logs[i] - logs[i - 1]))


def claim3(results: dict, stage: str = "next_token", target: str = "board_mover", smallest: float = 0.1) -> Claim:
    """log10 step of 90% development: last block minus first block (> 0: later layers later)."""
    tl = results["analyses"].get("timeline", {}).get(stage)
    if tl is None:
        return not_judged("3", f"no timeline of a {stage} run")
    data = np.asarray(tl["targets"][target], float)  # [ckpt, seed, layer]
    steps = np.asarray(tl["steps"])
    if len(steps) < 12:
        return not_judged("3", f"{len(steps)} checkpoints: the statistic needs at least 12 log-spaced ones")
    boot = np.asarray(tl["boot"][target], float)  # [B, ckpt, seed, layer]
    diff = np.array([t90(steps, data[:, s, -1]) - t90(steps, data[:, s, 1]) for s in range(data.shape[1])])
    reps = np.array([[t90(steps, b[:, s, -1]) - t90(steps, b[:, s, 1]) for s in range(data.shape[1])] for b in boot])
    t90s = np.array([[t90(steps, data[:, s, l]) for l in range(data.shape[2])] for s in range(data.shape[1])])
    evidence = {f"t90 layer {l} (log10 step)": seed_interval(t90s[:, l]).as_dict() for l in range(data.shape[2])}
    evidence["checkpoints"] = steps.tolist()
    return judged("3", f"log10 training step at which the last block's {target} probe makes 90% of its change, "
                       f"minus the first block's ({stage}; interpolated between {len(steps)} checkpoints)",
                  shared_games_interval(diff, reps.T), smallest, "figures/f1_probe_layer_by_checkpoint.png",
                  (stage,), evidence)


def claim4(results: dict, smallest: float = 0.05) -> Claim:
    """Representation change (1 − CKA to the pretrained model) at the last block minus the first."""
    ch = results["analyses"].get("change")
    if ch is None:
        return not_judged("4", "no pretrain_rl run to compare with its pretrained start")
    tuned = ch["comparisons"]["tuned"]
    cka = np.asarray(tuned["cka"], float)  # [seed, resid layer]
    boot = np.asarray(tuned["boot_cka"], float)  # [seed, B, resid layer]
    stat = cka[:, 1] - cka[:, -1]
    reps = boot[:, :, 1] - boot[:, :, -1]
    w = np.asarray(tuned["weight_change"], float)
    evidence = {"weight change, last block minus first": seed_interval(w[:, -2] - w[:, 1]),
                "first block CKA minus the seed floor": seed_interval(
                    cka[:, 1] - np.mean(np.asarray(ch["seed_floor"]["cka"], float)[:, 1]))}
    if "control" in ch["comparisons"]:
        control = np.asarray(ch["comparisons"]["control"]["cka"], float)
        evidence["last-block CKA drop, RL minus continued pretraining"] = seed_interval(control[:, -1] - cka[:, -1])
    return judged("4", "representation change after RL (1 − linear CKA to the pretrained model on held-out games) "
                       "at the last block minus at the first block", shared_games_interval(stat, reps), smallest,
                  "figures/f4_where_rl_changes.png", ("pretrain_rl",), evidence)


def claim5(results: dict, smallest: float = 0.05) -> Claim:
    """The claim-1 measure over RL checkpoints: mean over blocks of the policy trunk's fraction of
    the achievable gap for its own V^π, at the last checkpoint minus at the first (the start)."""
    amount = results["analyses"].get("rl_amount", {}).get("value")
    if not amount or len(amount["steps"]) < 2:
        return not_judged("5", "no value measure at two or more RL checkpoints")
    frac = np.asarray(amount["fraction_of_gap_by_block"], float)  # [ckpt, seed, block]
    boot = np.asarray(amount["boot_fraction_of_gap_by_block"], float)  # [ckpt, seed, B, block]
    stat = frac[-1].mean(-1) - frac[0].mean(-1)
    reps = boot[-1].mean(-1) - boot[0].mean(-1)  # [seed, B]
    evidence = {f"step {st}: mean fraction of gap over blocks": own_games_interval(frac[i].mean(-1), boot[i].mean(-1))
                for i, st in enumerate(amount["steps"])}
    return judged("5", "mean over blocks of the policy trunk's value-probe fraction of the achievable gap (its own "
                       "V^π on its own games), last RL checkpoint minus the first", own_games_interval(stat, reps),
                  smallest, "figures/f7_rl_amount.png", ("pretrain_rl",), evidence)


def claim6(results: dict, smallest: float = 0.05) -> Claim:
    """MTP minus NTP simulator: value-probe emergence for the simulator's own value on persona
    games (paired: same seeds, same games)."""
    sims = results["analyses"].get("value", {}).get("simulators", {})
    if "next_token_mtp" not in sims or "next_token" not in sims:
        return not_judged("6", "no next_token_mtp run in this preset")
    nets = {k: sims[k]["datasets"]["persona_games"]["targets"]["mixture_value"]["networks"]
            for k in ("next_token", "next_token_mtp")}
    evidence = {f"{k}: emergence over random init": own_games_interval(*emergence(n["simulator"], n["random_init"]))
                for k, n in nets.items()}
    return judged("6", "held-out R² of a value probe for the simulator's own value (persona games, each at its "
                       "validation-chosen layer): multi-token minus next-token simulator, same seeds and games",
                  paired(nets["next_token_mtp"]["simulator"], nets["next_token"]["simulator"]),
                  smallest, "figures/f8_mtp_vs_ntp.png", ("next_token", "next_token_mtp"), evidence)


def judge_all(results: dict) -> dict[str, Claim]:
    measures = results["analyses"].get("value", {}).get("agents", {})
    out = {"1": claim1(measures)}
    for number, fn in (("2", claim2), ("3", claim3), ("4", claim4), ("5", claim5), ("6", claim6)):
        out[number] = fn(results)
    return out


# ---------------------------------------------------------------------------------- subjects


def quality(finals: dict[str, dict], game: str = "tictactoe") -> dict:
    """Each run's quality numbers (loss against random, greedy and perfect, win against random,
    simulator gap, also on positions never seen in training) as intervals over seeds, and whether
    it meets each of its game's bars."""
    bars = bars_for(game)
    out = {}
    for regime, final in finals.items():
        m = final["matches"]
        row = {k: seed_interval(m[f"eval/{k}"]).as_dict() for k in
               ("loss_vs_random", "loss_vs_perfect", "loss_vs_greedy", "win_vs_random") if f"eval/{k}" in m}
        row["simulator_gap"] = seed_interval(final["simulator"]["gap"]).as_dict()
        if final["simulator"].get("gap_unseen") is not None:
            row["simulator_gap_unseen"] = seed_interval(final["simulator"]["gap_unseen"]).as_dict()
        row["bars"] = []
        for key, way, value in bars.get(regime, ()):
            mean = row[key]["mean"] if key in row else float("nan")
            meets = bool(mean <= value) if way == "at_most" else bool(mean >= value)
            row["bars"].append({"measure": key, way: value, "mean": mean, "meets": meets,
                                "text": bar_text(key, way, value)})
        out[regime] = row
    return out


def flags(claim: Claim, quality_: dict) -> list[str]:
    """The subjects of a claim that miss a quality bar, as sentences for the report."""
    out = []
    for subject in claim.subjects:
        for bar in quality_.get(subject, {}).get("bars", ()):
            if not bar["meets"]:
                out.append(f"`{subject}` misses its bar: {bar['measure'].replace('_', ' ')} {sig3(bar['mean'])}, "
                           f"wanted {bar['text']}")
    return out
