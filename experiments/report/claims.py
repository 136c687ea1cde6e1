"""Verdicts on the six claims (README, "The claims"), each from one per-seed statistic by one stated rule.

Every claim reads a statistic per seed, oriented so that > 0 is what the claim predicts, puts a
95% t-interval over seeds around its mean (``statistics.seed_interval``: held-out games are
resampled by game, and shared games add their sampling variance), and applies the four-way
rule of ``statistics.verdict`` with the claim's smallest effect worth the name. Layers are
chosen on validation data among layers 1…L, never on test and never the embeddings. Nothing
here knows which answer is expected: the same functions give every verdict in the tests.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import numpy as np

from agentsim.experiments.presets import depth_stage
from agentsim.experiments.report.numbers import sig3
from agentsim.experiments.statistics import RULE_TEXT, Interval, chosen_layer, seed_interval, verdict

# Quality bars per game: a claim about an agent or a simulator is flagged when its subject
# misses any of them. A bar is (measure, "at_most" | "at_least", value).
_C4_AGENT = (("loss_vs_perfect", "at_most", 0.05), ("win_vs_random", "at_least", 0.95))
BARS = {
    "tictactoe": {"rl": (("loss_vs_perfect", "at_most", 0.02),), "pretrain_rl": (("loss_vs_perfect", "at_most", 0.01),),
                  "rl_shared_value": (("loss_vs_perfect", "at_most", 0.02),),
                  "next_token": (("simulator_gap", "at_most", 0.02),),
                  "next_token_mtp": (("simulator_gap", "at_most", 0.02),),
                  # the simulator of the rl agent: its gap to the Bayes-optimal loss of the agent's games
                  "next_token_of_rl": (("simulator_gap", "at_most", 0.02),)},
    "connect_four": {"rl": _C4_AGENT, "pretrain_rl": _C4_AGENT, "rl_shared_value": _C4_AGENT,
                     "next_token": (("simulator_gap", "at_most", 0.05),),
                     "next_token_mtp": (("simulator_gap", "at_most", 0.05),),
                     "next_token_of_rl": (("simulator_gap", "at_most", 0.05),)},
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
    "D": "The layer claims hold more in deeper networks",
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
    return seed_interval(values_S, quiet_nanvar(reps_SxB, axis=1), shared_games=False)


def shared_games_interval(values_S, reps_SxB) -> Interval:
    """Every seed measured on the same games: add the sampling variance of the seed mean."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a score measured on no rows: nan, said in the report
        game_mean = np.nanmean(reps_SxB, axis=0)
    return seed_interval(values_S, quiet_nanvar(game_mean), shared_games=True)


def quiet_nanvar(x, axis=None):
    """``np.nanvar`` that returns nan without a warning where no replicate is finite (a score on
    positions a game does not have, such as never-seen ones)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanvar(np.asarray(x, float), axis=axis)


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
    controls = {"policy": "random_init", "simulator": "random_init", "critic": "random_init_critic",
                "simulator_of_agent": "random_init"}
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
        if "simulator_of_agent" in nets:
            # A next_token run on this agent's own games: > 0 here means the objective, not the data,
            # puts V^π in the policy trunk; the simulator of the agent minus the persona simulator
            # says whether the agent's data alone does. Each by the claim's rule, neither judged.
            for name, a, b in (("policy trunk minus simulator of the agent", "policy", "simulator_of_agent"),
                               ("simulator of the agent minus simulator", "simulator_of_agent", "simulator")):
                iv_ = paired(nets[a], nets[b])
                evidence[f"{regime}: {name}"] = iv_
                evidence[f"{regime}: {name}, rule gives"] = verdict(iv_, smallest)["verdict"]
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


def change_statistic(change: dict) -> tuple[np.ndarray, np.ndarray]:
    """Claim 4's statistic per seed: representation change (1 − CKA to the pretrained model) at
    the last block minus at the first, i.e. first-block CKA minus last-block CKA; and its
    game-bootstrap replicates [seed, B]."""
    tuned = change["comparisons"]["tuned"]
    cka = np.asarray(tuned["cka"], float)  # [seed, resid layer]
    boot = np.asarray(tuned["boot_cka"], float)  # [seed, B, resid layer]
    return cka[:, 1] - cka[:, -1], boot[:, :, 1] - boot[:, :, -1]


def claim4(results: dict, smallest: float = 0.05) -> Claim:
    """Representation change (1 − CKA to the pretrained model) at the last block minus the first."""
    ch = results["analyses"].get("change")
    if ch is None:
        return not_judged("4", "no pretrain_rl run to compare with its pretrained start")
    tuned = ch["comparisons"]["tuned"]
    if np.shape(tuned["cka"])[1] < 3:  # the embeddings and one block: the first block is the last
        return not_judged("4", "one block: no first-to-last difference")
    cka = np.asarray(tuned["cka"], float)  # [seed, resid layer]
    stat, reps = change_statistic(ch)
    w = np.asarray(tuned["weight_change"], float)
    evidence = {"weight change, last block minus first": seed_interval(w[:, -2] - w[:, 1]),
                "first block CKA minus the seed floor": seed_interval(
                    cka[:, 1] - np.mean(np.asarray(ch["seed_floor"]["cka"], float)[:, 1]))}
    if "control" in ch["comparisons"]:
        control = np.asarray(ch["comparisons"]["control"]["cka"], float)
        evidence["last-block CKA drop, RL minus continued pretraining"] = seed_interval(control[:, -1] - cka[:, -1])
    evidence.update(three_ways_evidence(ch, smallest))  # the claim read by weights and by patching too
    return judged("4", "representation change after RL (1 − linear CKA to the pretrained model on held-out games) "
                       "at the last block minus at the first block", shared_games_interval(stat, reps), smallest,
                  "figures/f4_where_rl_changes.png", ("pretrain_rl",), evidence)


# ---------------------------------------------------------------------------------- claim 4, three ways


class Way(NamedTuple):
    """One measure of claim 4 read as 'mostly later layers': a per-seed statistic (last block minus
    first block, > 0 = later layers changed more), its interval and the four-way rule's outcome."""

    name: str
    statistic: str
    interval: Interval
    verdict: str
    rule_gives: str

    @property
    def later_layers(self) -> bool:
        """Whether this measure points to 'mostly later layers': its verdict is 'supported'."""
        return self.verdict == "supported"


def _way(name: str, statistic: str, interval: Interval, smallest: float) -> Way:
    v = verdict(interval, smallest)
    return Way(name, statistic, interval, v["verdict"], v["rule_gives"])


SATURATED = 0.99
"""An updated fraction this close to 1 in both compared blocks (seed mean) says every parameter
moved beyond the tolerance: their difference is 0 by saturation, not a finding, so the measure
reads 'saturated' and does not count in the agreement (the larger tolerances are listed beside)."""


def three_ways(change: dict, smallest: float = 0.05) -> dict[str, Way]:
    """Claim 4 measured three ways, each as (last block − first block) per seed, oriented so that > 0
    means "the later layers changed more", judged by ``statistics.verdict`` with the claim's
    smallest effect:

    - ``representation``: 1 − linear CKA to the pretrained model (the claim's own statistic);
    - ``weights``: the share of the block's parameters updated by more than
      ``layers.UPDATE_TOLERANCE`` × their tensor's RMS (seeds only: no games involved);
    - ``patching``: the mean total variation of the tuned model's move distribution when its
      residual after the block is replaced by the pretrained model's (held-out games shared by
      the seeds: their bootstrap variance added).

    Beside them, not one of the three: ``patching_play``, the mean over opponents of |Δ(win −
    loss rate)| of greedy play under the same patch (each seed plays its own games), and the
    weights at the other tolerances. A patch at block ℓ undoes every change up to ℓ, so the
    patching statistic is what the changes of blocks 2…L add to the first block's: ~0 when RL
    changed only the first block, > 0 when the later blocks' changes matter. Measures the result
    lacks (an older change.json, play left out) are left out."""
    ways: dict[str, Way] = {}
    cka, cka_reps = change_statistic(change)
    ways["representation"] = _way("representation", "1 − linear CKA to the pretrained model",
                                  shared_games_interval(cka, cka_reps), smallest)
    tuned = change["comparisons"]["tuned"]
    primary = f"{change.get('update_tolerance', 0):g}"
    for tol, frac in tuned.get("updated_fraction", {}).items():
        frac = np.asarray(frac, float)  # [seed, (emb, block1…blockL, head)]
        key = "weights" if tol == primary else f"weights at tolerance {tol}"
        ways[key] = _way(key, f"share of the block's parameters with |ΔW| > {tol} × RMS(W_pre)",
                         seed_interval(frac[:, -2] - frac[:, 1]), smallest)
        if min(frac[:, -2].mean(), frac[:, 1].mean()) >= SATURATED:
            ways[key] = ways[key]._replace(verdict="saturated", rule_gives="saturated")
    patch = change.get("patching")
    if patch:
        tv = np.asarray(patch["distribution"]["tv"]["pretrained"], float)  # [seed, resid layer]
        boot = np.asarray(patch["distribution"]["boot_tv"]["pretrained"], float)  # [seed, B, resid layer]
        ways["patching"] = _way("patching", "mean total variation of the move distribution, pretrained residual "
                                "patched in after the block", shared_games_interval(tv[:, -1] - tv[:, 1],
                                                                                  boot[:, :, -1] - boot[:, :, 1]),
                                smallest)
        if "play" in patch:
            ch = np.asarray(patch["play"]["behaviour_change"]["pretrained"], float)
            boot = np.asarray(patch["play"]["boot_behaviour_change"]["pretrained"], float)
            ways["patching_play"] = _way("patching (play)", "mean over opponents of |Δ(win − loss rate)| of greedy "
                                         "play, pretrained residual patched in after the block",
                                         own_games_interval(ch[:, -1] - ch[:, 1], boot[:, :, -1] - boot[:, :, 1]),
                                         smallest)
    return ways


THREE = ("representation", "weights", "patching")


def agreement(ways: dict[str, Way]) -> str:
    """One line: each of the three measures' verdict on "mostly later layers", and whether they agree
    (the same verdict from all three; "none decides" when all three are inconclusive); with fewer
    seeds than a verdict needs, what the intervals alone give."""
    have = [ways[k] for k in THREE if k in ways]
    if len(have) < len(THREE):
        return (f"{len(have)} of the three measures present ({', '.join(w.name for w in have)}): "
                "no agreement to read")
    def agree(outcomes: set[str]) -> str:
        if outcomes == {"inconclusive"}:
            return "none decides"
        return "they agree" if len(outcomes) == 1 else "they disagree"

    n = sum(w.later_layers for w in have)
    counted = [w for w in have if w.verdict != "saturated"]  # a saturated measure cannot say where
    line = (f"{n} of 3 point to mostly later layers ({'; '.join(f'{w.name}: {w.verdict}' for w in have)}): "
            + (agree({w.verdict for w in counted}) if len(counted) > 1 else "too few measures to agree"))
    if len(counted) < len(have):
        line += f" among the {len(counted)} that are not saturated"
    if any(w.rule_gives != w.verdict for w in counted):
        line += (f"; the intervals alone give {'; '.join(f'{w.name}: {w.rule_gives}' for w in counted)} ("
                 + agree({w.rule_gives for w in counted}) + ")")
    return line


def three_ways_evidence(change: dict, smallest: float = 0.05) -> dict:
    """Claim 4's evidence lines for the three measures, their controls and their agreement."""
    ways = three_ways(change, smallest)
    out: dict = {f"three ways, {w.name} ({w.verdict}): {w.statistic}, last block minus first": w.interval
                 for w in ways.values()}
    comps = change["comparisons"]
    if "control" in comps and "updated_fraction" in comps["control"] and "update_tolerance" in change:
        tol = f"{change['update_tolerance']:g}"
        frac = np.asarray(comps["control"]["updated_fraction"][tol], float)
        name = (f"three ways, weights of the continued-pretraining control (AdamW's weight decay moves every "
                f"parameter): share updated by > {tol} × RMS, last block minus first")
        out[name] = seed_interval(frac[:, -2] - frac[:, 1])
    patch = change.get("patching")
    if patch:  # < 0: the pretrained residual stands in for the tuned one far better than a matched random one
        tv = {k: np.asarray(v, float) for k, v in patch["distribution"]["tv"].items()}
        boot = {k: np.asarray(v, float) for k, v in patch["distribution"]["boot_tv"].items()}
        out["three ways, patching the first block: TV of the pretrained patch minus the matched random patch"] = \
            shared_games_interval(tv["pretrained"][:, 1] - tv["random_init"][:, 1],
                                  boot["pretrained"][:, :, 1] - boot["random_init"][:, :, 1])
    out["three ways: agreement"] = agreement(ways)
    return out


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


# ---------------------------------------------------------------------------------- depth


def depth_slope(depths, values_by_depth, reps_by_depth) -> tuple[np.ndarray, np.ndarray]:
    """Per seed, the least-squares slope of a per-seed statistic against log2(depth) (its change
    per doubling of depth), and the same slope of its replicates. The slope is linear in the
    statistics, so replicates that resample the same games at every depth give its game part."""
    x = np.log2(np.asarray(depths, float))
    w = (x - x.mean()) / np.sum((x - x.mean()) ** 2)
    values = sum(wi * np.asarray(v, float) for wi, v in zip(w, values_by_depth))
    reps = sum(wi * np.asarray(r, float) for wi, r in zip(w, reps_by_depth))
    return values, reps


def judge_depth(results: dict) -> dict[str, Claim]:
    """The claims the depth preset repeats, on one depth's analyses."""
    measures = results["analyses"].get("value", {}).get("agents", {})
    return {"1": claim1(measures), "3": claim3(results), "4": claim4(results), "5": claim5(results)}


def claim_depth(changes: dict[int, dict], claims_by_depth: dict[int, dict] | None = None,
                smallest: float = 0.05) -> Claim:
    """"The layer claims hold more in deeper networks", judged on claim 4 (RL changes later layers
    more than early ones): the per-seed slope of claim 4's statistic against log2(depth), so > 0
    means the later-minus-earlier representation change grows with each doubling of depth.
    Seed s at every depth is read on the same held-out games (the depths share one data config
    and the game bootstrap's draws), so the per-depth replicates combine into the slope's.
    ``claims_by_depth``: each depth's judged claims (dicts), listed as evidence. With depths evenly
    spaced in log2 (2, 4, 8) the least-squares slope weighs the ends only: (value at 8 − value at
    2) / 2; the middle depth is shown beside it, not in it."""
    changes = {int(d): c for d, c in changes.items()}  # keys read back from JSON are text
    claims_by_depth = {int(d): c for d, c in (claims_by_depth or {}).items()}
    depths = sorted(d for d in changes if d >= 2)  # one block has no first-to-last difference
    if len(depths) < 2:
        return not_judged("D", f"claim 4 measured at {len(depths)} depth(s) of 2 or more layers: a slope needs two")
    per_depth = [change_statistic(changes[d]) for d in depths]
    seeds = {len(v) for v, _ in per_depth}
    if len(seeds) != 1:
        return not_judged("D", "the depths hold different numbers of seeds")
    slope, reps = depth_slope(depths, [v for v, _ in per_depth], [r for _, r in per_depth])
    evidence: dict = {f"claim 4 statistic at {d} layers": shared_games_interval(v, r)
                      for d, (v, r) in zip(depths, per_depth)}
    for d in depths:
        for number, c in (claims_by_depth or {}).get(d, {}).items():
            if number != "4":
                evidence[f"claim {number} at {d} layers ({c['verdict']})"] = c["interval"]
    return judged("D", "slope of claim 4's statistic (representation change after RL at the last block minus the "
                       f"first) against log2(number of layers), over depths {', '.join(map(str, depths))} (> 0: RL's "
                       "change concentrates more in later layers as the network deepens; per doubling of depth)",
                  shared_games_interval(slope, reps), smallest, "figures/fd_claims_by_depth.png",
                  tuple(depth_stage(d, s) for d in depths for s in ("pretrain_rl", "next_token")), evidence)


# ---------------------------------------------------------------------------------- look-ahead (not judged)


def lookahead_scores(per_seed: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Per seed: a look-ahead probe's test accuracy at its own validation-chosen layer, and its
    game-bootstrap replicates ([S], [S, B])."""
    return (np.asarray([n["test_acc"][n["layer"]] for n in per_seed], float),
            np.asarray([np.asarray(n["boot_acc"], float)[:, n["layer"]] for n in per_seed]))


def lookahead_paired(a: list[dict], b: list[dict]) -> Interval:
    """Network a minus network b on the same rows of each seed's own games, each at its own
    validation-chosen layer (as ``paired``: the seed spread holds the game noise)."""
    (ra, ba), (rb, bb) = lookahead_scores(a), lookahead_scores(b)
    return own_games_interval(ra - rb, ba - bb)


def _ceiling_interval(ceilings: list[dict], kind: str, interval) -> Interval:
    return interval(np.asarray([c[kind] for c in ceilings], float), np.asarray([c[f"boot_{kind}"] for c in ceilings]))


def lookahead_evidence(lookahead: dict | None) -> dict:
    """The look-ahead probes (``analysis.lookahead``), not judged: per agent and target on its own
    games, the agent minus the simulator (paired, same tokens and seeds), each network's accuracy at
    its validation-chosen layer and the two ceilings; on persona games (one set shared by every
    seed) the simulator's and the random init's accuracy and the ceilings."""
    if not lookahead:
        return {}
    out: dict = {}
    for agent, m in lookahead.get("agents", {}).items():
        for target, e in m["targets"].items():
            head = f"{agent}, own games / {target}"
            nets = e["networks"]
            out[f"{head}: agent minus simulator"] = lookahead_paired(nets["agent"], nets["simulator"])
            if "random_init" in nets:  # what training added over untrained features, for each of the two
                out[f"{head}: agent minus random init"] = lookahead_paired(nets["agent"], nets["random_init"])
                out[f"{head}: simulator minus random init"] = lookahead_paired(nets["simulator"], nets["random_init"])
            for net, per_seed in nets.items():
                out[f"{head}: {net} accuracy"] = own_games_interval(*lookahead_scores(per_seed))
            for kind in ("majority", "bayes"):
                out[f"{head}: {kind} ceiling accuracy"] = _ceiling_interval(e["ceiling"], kind, own_games_interval)
            out[f"{head}: layers (agent; simulator)"] = (f"{[n['layer'] for n in nets['agent']]}; "
                                                         f"{[n['layer'] for n in nets['simulator']]}")
    for target, e in lookahead.get("persona_games", {}).get("targets", {}).items():
        head = f"simulator, persona games / {target}"
        nets = e["networks"]
        values, reps = (np.subtract(x, y) for x, y in zip(lookahead_scores(nets["simulator"]),
                                                           lookahead_scores(nets["random_init"])))
        out[f"{head}: simulator minus random init"] = shared_games_interval(values, reps)
        for net, per_seed in nets.items():
            out[f"{head}: {net} accuracy"] = shared_games_interval(*lookahead_scores(per_seed))
        for kind in ("majority", "bayes"):
            out[f"{head}: {kind} ceiling accuracy"] = _ceiling_interval(e["ceiling"], kind, shared_games_interval)
    return plain(out)


# ---------------------------------------------------------------------------------- subjects


def quality(finals: dict[str, dict], game: str = "tictactoe") -> dict:
    """Each run's quality numbers (loss against random, greedy and perfect, win against random,
    simulator gap, also on positions never seen in training) as intervals over seeds, and whether
    it meets each of its game's bars."""
    bars = bars_for(game)
    out = {}
    for regime, final in finals.items():  # a depth preset's "L4/rl" has the bars of "rl"
        m = final["matches"]
        row = {k: seed_interval(m[f"eval/{k}"]).as_dict() for k in
               ("loss_vs_random", "loss_vs_perfect", "loss_vs_greedy", "win_vs_random") if f"eval/{k}" in m}
        row["simulator_gap"] = seed_interval(final["simulator"]["gap"]).as_dict()
        if final["simulator"].get("gap_unseen") is not None:
            row["simulator_gap_unseen"] = seed_interval(final["simulator"]["gap_unseen"]).as_dict()
        reference = final["simulator"].get("no_inference_gap")
        if reference:  # the share of what inferring the personas is worth that the network has learnt
            row["no_inference_gap"] = reference
            gap = np.asarray(final["simulator"]["gap"], float)
            row["inference_learnt"] = seed_interval(1 - gap / reference).as_dict()
        row["bars"] = []
        for key, way, value in bars.get(regime.rsplit("/", 1)[-1], ()):
            mean = row[key]["mean"] if key in row else float("nan")
            meets = bool(mean <= value) if way == "at_most" else bool(mean >= value)
            row["bars"].append({"measure": key, way: value, "mean": mean, "meets": meets,
                                "text": bar_text(key, way, value)})
        out[regime] = row
    return out


def targets_met(targets: dict | None, quality_: dict, total_s: float | None, carried: tuple[str, ...] = ()) -> dict:
    """A preset's targets (``presets.TARGETS``) against its subjects table and wall time: each bar
    with the measured seed mean and whether it is met (a run or measure the reproduction lacks is
    missed, with a nan mean), and the wall time against its limit. ``carried``: stages trained (in
    part or whole) before this invocation of ``reproduce``; their time is not in ``total_s``, so
    the wall is then not measured (``meets`` None) rather than met by a resumed run, unless this
    invocation alone already took longer than the limit (a lower bound that misses it)."""
    if not targets:
        return {}
    rows = []
    for run, bars in targets["runs"].items():
        for key, way, value in bars:
            cell = quality_.get(run, {}).get(key)
            mean = float(cell["mean"]) if cell else float("nan")
            meets = bool(mean <= value) if way == "at_most" else bool(mean >= value)  # nan meets nothing
            rows.append({"run": run, "measure": key, way: value, "mean": mean, "meets": meets,
                         "text": bar_text(key, way, value)})
    wall = {"minutes": None if total_s is None else total_s / 60, "limit_minutes": targets["wall_minutes"],
            "carried": list(carried)}
    within = wall["minutes"] is not None and wall["minutes"] <= wall["limit_minutes"]
    wall["meets"] = None if carried and (within or wall["minutes"] is None) else within
    return {"bars": rows, "wall": wall}


def flags(claim: Claim, quality_: dict) -> list[str]:
    """The subjects of a claim that miss a quality bar, as sentences for the report."""
    out = []
    for subject in claim.subjects:
        for bar in quality_.get(subject, {}).get("bars", ()):
            if not bar["meets"]:
                out.append(f"`{subject}` misses its bar: {bar['measure'].replace('_', ' ')} {sig3(bar['mean'])}, "
                           f"wanted {bar['text']}")
    return out
