"""REPORT.md from results.json: per claim the statistic, its interval (with its seed and game
parts), the ceiling where there is one, the rule, the verdict and the figure that shows it; the
subjects' quality bars; the value tables of claim 1; timings."""

from __future__ import annotations

from agentsim.experiments.report.claims import TITLES, bar_text, bars_for
from agentsim.experiments.report.numbers import CLIPPED_MARK, CLIPPED_NOTE, interval_text, rate_text, sig3
from agentsim.experiments.report.tables import markdown_table
from agentsim.experiments.statistics import RULE_TEXT

NETWORK_NAMES = {"policy": "agent: policy trunk", "critic": "agent: critic trunk", "value_head": "agent: value head",
                 "simulator": "next_token simulator", "random_init": "random init (policy trunk)",
                 "random_init_critic": "random init (critic trunk)",
                 "simulator_of_agent": "next_token simulator of the agent (trained on its games)"}
DATASETS = {"own_games": "the agent's own games, at its decisions", "persona_games": "persona games, every move"}


RATES = ("loss_vs_random", "win_vs_random", "loss_vs_greedy", "loss_vs_perfect")  # the subjects table's rates


def is_rate(evidence_name: str) -> bool:
    """Whether a claim's evidence is a rate: a probe's accuracy or a loss or win rate."""
    return evidence_name in ("accuracy", "random_init") or " loss vs " in f" {evidence_name}" or \
        " win vs " in f" {evidence_name}"


def _claim_lines(number: str, c: dict) -> list[str]:
    i = c["interval"]
    lines = [f"## Claim {number}: {TITLES[number]}", "", f"**Verdict: {c['verdict']}.**"
             + (f" Figure: `{c['figure']}`." if c["figure"] not in ("", "–") else "")]
    if c["note"]:
        lines.append(f"Not judged: {c['note']}.")
    if c["statistic"]:
        lines.append(f"Statistic: {c['statistic']}.")
        lines.append(f"Value: {interval_text(i)} over {i['n_seeds']} seeds (95% t-interval; half-width from the "
                     f"seeds' spread beyond the game noise {sig3(i['seed_half'])}, from the held-out games alone "
                     f"{sig3(i['game_half'])}); smallest "
                     f"effect worth the name δ = {c['smallest_effect']}.")
        if c["rule_gives"] != c["verdict"]:
            lines.append(f"The interval alone would give '{c['rule_gives']}', but a verdict needs at least 5 seeds.")
    for flag in c.get("flags", []):
        lines.append(f"⚠ {flag}: the claim is about a subject that does not yet deserve its name.")
    simple = {k: v for k, v in c["evidence"].items() if not (isinstance(v, dict) and "ceiling" in v)}
    if simple:
        lines.append("")
        for k, v in simple.items():
            lines.append(f"- {k}: {_evidence_text(k, v)}")
        if any(CLIPPED_MARK in line for line in lines):
            lines += ["", CLIPPED_NOTE]
    lines.append("")
    return lines


def _evidence_text(name: str, value) -> str:
    if isinstance(value, dict):
        return rate_text(value) if is_rate(name) else interval_text(value)
    if isinstance(value, float):
        return sig3(value)
    return str(value)


VALUE_COLUMNS = {"r2": "R² (chosen layer)", "r2_unseen": "R² never-seen positions", "control_r2": "random-init R²",
                 "emergence": "emergence", "emergence_within_move": "emergence within move",
                 "fraction_of_gap": "fraction of gap", "fraction_of_gap_within_move": "fraction of gap within move",
                 "residual_rms": "residual (rms)"}


def value_tables(claim1: dict) -> list[str]:
    """Claim 1's tables: per agent and dataset, every network on each target."""
    lines = []
    for key, table in claim1["evidence"].items():
        if not (isinstance(table, dict) and "ceiling" in table):
            continue
        regime, rest = key.split(": ", 1)
        dataset, target = rest.split(" / ")
        unseen = "ceiling_unseen" in table
        ceiling = interval_text(table["ceiling"]) + (
            f"; on never-seen positions {interval_text(table['ceiling_unseen'])}" if unseen else "")
        lines += [f"**{regime}, {DATASETS.get(dataset, dataset)}; target `{target}`** (ceiling {ceiling}):", ""]
        rows = [[NETWORK_NAMES.get(net, net), *(interval_text(row.get(k)) for k in VALUE_COLUMNS), str(row["layers"])]
                for net, row in table.items() if not net.startswith("ceiling")]
        lines += markdown_table(["network", *VALUE_COLUMNS.values(), "layers"], rows) + [""]
    return lines


def depth_lines(by_depth: dict) -> list[str]:
    """The depth preset's table: each layer claim at each depth (statistic, interval, verdict and
    what the interval alone gives), then the subjects each depth's claims are flagged for."""
    depths = sorted(by_depth, key=int)
    numbers = [n for n in ("1", "3", "4", "5") if any(n in by_depth[d]["claims"] for d in depths)]

    def cell(c: dict | None) -> str:
        if c is None:
            return "–"
        gives = f" (interval alone: {c['rule_gives']})" if c["rule_gives"] != c["verdict"] else ""
        return f"{interval_text(c['interval'])}: **{c['verdict']}**{gives}"

    rows = [[f"{n}. {TITLES[n]}", *(cell(by_depth[d]["claims"].get(n)) for d in depths)] for n in numbers]
    lines = ["## The layer claims at each depth", "",
             "The same runs as the quick preset (width 64, its seeds and training) at each number of layers; each "
             "claim's statistic and rule as in its section above. With fewer than 5 seeds every verdict is "
             "'inconclusive' by the rule; the cell says what the interval alone gives.", ""]
    lines += markdown_table(["claim", *(f"{d} layers" for d in depths)], rows) + [""]
    for d in depths:
        for n, c in by_depth[d]["claims"].items():
            lines += [f"- ⚠ {d} layers, claim {n}: {flag}" for flag in c.get("flags", [])]
    return lines + [""]


def game_line(game: dict) -> str:
    """The game and board, its size and the networks' size, for the top of the report."""
    line = f"**Game: {game['title']}**"
    if game.get("positions"):
        line += (f"; {game['positions']:,} positions reachable by legal play"
                 + (f", {game['perfect_play']} with perfect play" if game.get("perfect_play") else ""))
    if game.get("parameters"):
        line += f"; networks of {game['parameters']:,} parameters per seed (policy trunk, heads and critic)"
    return line + "."


def label_lines(results: dict) -> list[str]:
    """How V^π was labelled for each agent, its noise beside the probes' residuals, and how many
    test positions were never seen in training."""
    agents = results.get("analyses", {}).get("value", {}).get("agents", {})
    lines = []
    for regime, m in agents.items():
        for name, d in m["datasets"].items():
            parts = []
            labels = d.get("labels")
            if labels and labels.get("rollouts"):
                nets = d["targets"]["agent_value"]["networks"]
                resid = [n["test_rmse"][n["layer"]] for n in nets["policy"]] if nets["policy"][0].get("test_rmse") else []
                label_se = sum(labels["label_se_rms"]) / len(labels["label_se_rms"])
                parts.append(f"V^π by {labels['method']} ({labels['rollouts']} games per history): label "
                             f"standard error (rms over rows) {sig3(label_se)}"
                             + (f" beside the policy probe's residual (rms) {sig3(sum(resid) / len(resid))}" if resid else ""))
            elif labels:
                parts.append(f"V^π {labels['method']}")
            if d.get("test_rows_unseen") is not None:
                parts.append(f"{sum(d['test_rows_unseen']):,} of {sum(d['test_rows']):,} test positions never seen in "
                             "training")
            if parts:
                lines.append(f"- {regime}, {DATASETS.get(name, name)}: " + "; ".join(parts) + ".")
    return lines + ([""] if lines else [])


def subject_rows(results: dict) -> list[list[str]]:
    """The subjects table's cells: each run's rates (clipped to [0, 1]), simulator gaps and bars,
    then the exact references."""
    rows = []
    for regime, row in results["quality"].items():
        bars = row.get("bars", [])
        rows.append([regime, *(rate_text(row.get(k)) for k in RATES), interval_text(row.get("simulator_gap")),
                     interval_text(row.get("simulator_gap_unseen")),
                     "; ".join(b["text"] for b in bars) or "–",
                     ("yes" if all(b["meets"] for b in bars) else "**no**") if bars else "–"])
    for name, ref in results.get("references", {}).items():
        rows.append([f"*{name} (exact)*", *(sig3(ref[k]) for k in RATES), "–", "–", "–", "–"])
    return rows


def inference_lines(quality_: dict, bars: dict) -> list[str]:
    """How much of the persona inference each simulator (a run with a gap bar) has learnt: its gap
    against that of a predictor that knows the position but never infers who is playing."""
    rows = [(name, q) for name, q in quality_.items() if "inference_learnt" in q
            and any(b[0] == "simulator_gap" for b in bars.get(name.rsplit("/", 1)[-1], ()))]
    if not rows:
        return []
    ref = rows[0][1]["no_inference_gap"]
    return ["Persona inference: a predictor that knows the position but never infers who is playing (the personas "
            f"mixed at their prior weights) has a gap of {sig3(ref)} nats/move. Share of that gap each simulator "
            "has closed (1 − gap / that gap; 0: it predicts by position alone, 1: Bayes-optimal): "
            + "; ".join(f"`{name}` {interval_text(q['inference_learnt'])}" for name, q in rows) + ".", ""]


def target_lines(targets: dict | None, machine: dict | None, preset: str) -> list[str]:
    """The preset's own targets (``presets.TARGETS``): each bar met or missed, and the wall time on
    the machine that measured it."""
    if not targets:
        return []

    def met(ok: bool | None) -> str:
        return "not measured" if ok is None else "yes" if ok else "**no**"

    rows = [[f"`{b['run']}`", b["text"], sig3(b["mean"]), met(b["meets"])] for b in targets["bars"]]
    wall = targets["wall"]
    carried = wall.get("carried") or []
    took = "–" if wall["minutes"] is None else f"{sig3(wall['minutes'])} min"
    if carried:
        took += " (resumed: " + ", ".join(f"`{c}`" for c in carried) + " trained before, not counted)"
    rows.append(["reproduce", f"wall ≤ {wall['limit_minutes']} min", took, met(wall["meets"])])
    lines = [f"## The `{preset}` preset's targets", ""]
    lines += markdown_table(["run", "target", "measured (seed mean)", "met"], rows)
    if machine:
        device = machine["backend"] + ("" if machine["device"] == machine["backend"] else f", {machine['device']}")
        lines += ["", f"Measured on {machine['cpus']} × {machine['cpu']} ({device}, JAX {machine['jax']}); load "
                  f"average {machine['load_average_start']} at the start, "
                  f"{machine['load_average_end']} at the end. The wall time is `reproduce`'s own (training, evaluation "
                  "and analyses; not the install)" + ("; resumed, so a lower bound on the whole" if carried else "")
                  + ". A missed target is a fact about these subjects, not a reason to "
                  "measure them less."]
    return lines + [""]


def lookahead_lines(evidence: dict) -> list[str]:
    """The look-ahead probes (not judged; ``claims.lookahead_evidence``): one line per number."""
    if not evidence:
        return []
    lines = ["## Look-ahead probes (not judged)", "",
             "Can a softmax probe on the residual at a decision read the move its player makes two plies on (after "
             "the opponent's actual reply)? `next_move`: on an agent's own games its greedy move there, on persona "
             "games the persona's actual move; `best_move`: the solver's optimal move there, on the positions where "
             "it is unique. Accuracy on test games at each network's validation-chosen layer (figure "
             "`figures/f10_lookahead.png`); agent minus simulator is paired on the same tokens and seeds. Ceilings: "
             "the train split's most frequent move (majority) and the exact expected accuracy of the Bayes predictor "
             "given the history (below 1: the reply is not known at the decision). Intervals: 95% t-interval over "
             "seeds, held-out games resampled by game.", ""]
    for name, value in evidence.items():
        if isinstance(value, dict):
            text = rate_text(value) if name.endswith("accuracy") else interval_text(value)
        else:
            text = str(value)
        lines.append(f"- {name}: {text}")
    return lines + [""]


def report(results: dict) -> str:
    claims = results["claims"]
    seeds = {len(f["seeds"]) for f in results["finals"].values()}
    lines = ["# agentsim reproduction report", ""]
    if results.get("game"):
        lines += [game_line(results["game"]), ""]
    resumed = " (this invocation; stages trained before it are not counted)" if results.get("carried") else ""
    lines += [f"Preset `{results['preset']}`; {'/'.join(map(str, sorted(seeds)))} seeds per run; total "
              f"{sig3(results['total_s'])} s{resumed}. Every number is recomputed from the run directories under "
              "`runs/` and listed in `results.json`; numbers are rounded to 3 significant digits.", ""]
    lines += markdown_table(["claim", "verdict", "statistic (95% interval)", "figure"],
                            [[f"{number}. {TITLES[number]}", f"**{c['verdict']}**", interval_text(c["interval"]),
                              f"`{c['figure']}`" if c["figure"] not in ("", "–") else "–"]
                             for number, c in claims.items()])
    lines += ["", f"Rule for every claim: {RULE_TEXT} Layers are chosen on validation games among layers 1…L "
              "(the embeddings are reported, never chosen); scores are read on test games.", ""]

    subjects = subject_rows(results)
    lines += ["## The subjects", ""] + markdown_table(
        ["run", "loss vs random", "win vs random", "loss vs greedy", "loss vs perfect", "simulator gap (nats/move)",
         "gap on never-seen positions (nats/move)", "bars", "meets them"], subjects)
    if any(CLIPPED_MARK in cell for row in subjects for cell in row):
        lines += ["", CLIPPED_NOTE]
    game = (results.get("game") or {}).get("name", "tictactoe")
    lines += ["", "Loss and win rates: greedy (arg-max) play as X and as O against each persona, as a fraction of "
              "games, mean and 95% t-interval over seeds; the simulator gap is "
              "the held-out next-move loss minus the Bayes-optimal loss of the persona mixture, on every held-out "
              "position and on the positions (boards) that never occur in the run's training games. The exact rows "
              "are the references from the solver's table, on the same terms: the perfect persona (uniform over "
              "value-optimal moves, which does not try to exploit a weak opponent) and the best possible player "
              "(each column's own optimum, a best response to that persona). Bars: "
              + ", ".join(f"{k} {'; '.join(bar_text(*bar) for bar in bars)}" for k, bars in bars_for(game).items())
              + ".", ""]
    lines += inference_lines(results["quality"], bars_for(game))
    lines += target_lines(results.get("targets"), results.get("machine"), results["preset"])

    for number, c in claims.items():
        lines += _claim_lines(number, c)
        if number == "1":
            lines += value_tables(c)
            lines += ["Emergence = R² − the same probe on the random-init network at the same layer; fraction of "
                      "gap = emergence / (ceiling − random-init R²), overall and within move number (R² around each "
                      "move number's mean; when the ceiling is 1 the two fractions are equal by construction, both "
                      "being 1 − SS_res(network) / SS_res(random init)). Ceiling: the best R² any predictor of the move history can reach "
                      "(1 for a target that is a function of the history; for the hidden-pair target, its Bayes "
                      "predictor's R²). Own games are each agent seed's own rollouts (sampled as in training, "
                      "against its opponent pool); the simulator and random init read the same tokens. R² on "
                      "never-seen positions: the same probes on the test positions whose board never occurs in the "
                      "simulator's training games (computing rather than recalling); residual: the probe's root mean "
                      "squared error on test rows.", ""]
            lines += label_lines(results)

    if results.get("depth"):
        lines += depth_lines(results["depth"])
    lines += lookahead_lines(results.get("lookahead") or {})

    timings = [[stage, sig3(secs)] for stage, secs in results["timings"].items()]
    analysis_seconds = results.get("analyses", {}).get("seconds", {})
    timings += [[f"analysis: {name}", sig3(secs)] for name, secs in analysis_seconds.items()]
    lines += ["## Timings", ""] + markdown_table(["stage", "seconds"], timings)
    if results.get("carried"):
        lines += ["", "Resumed: " + ", ".join(f"`{c}`" for c in results["carried"]) + " trained (in part) before "
                  "this invocation of `reproduce`, whose time is not in these seconds."]
    lines += ["", "Sizes: " + ", ".join(f"{k} {v}" for k, v in results["sizes"].items()) + ".", "",
              "## Figures", ""] + [f"- `{f}`" for f in results["figures"] if f.endswith(".png")]
    return "\n".join(lines) + "\n"
