"""REPORT.md from results.json: per claim the statistic, its interval (with its seed and game
parts), the ceiling where there is one, the rule, the verdict and the figure that shows it; the
subjects' quality bars; the value tables of claim 1; timings."""

from __future__ import annotations

import math

from agentsim.experiments.report.claims import TITLES, bars_for
from agentsim.experiments.statistics import RULE_TEXT

NETWORK_NAMES = {"policy": "agent: policy trunk", "critic": "agent: critic trunk", "value_head": "agent: value head",
                 "simulator": "next_token simulator", "random_init": "random init (policy trunk)",
                 "random_init_critic": "random init (critic trunk)"}
DATASETS = {"own_games": "the agent's own games, at its decisions", "persona_games": "persona games, every move"}


def _bar_texts(bars) -> list[str]:
    return [f"{m.replace('_', ' ')} {'≤' if way == 'at_most' else '≥'} {v}" for m, way, v in bars]


def iv(d: dict | None, digits: int = 3) -> str:
    """'mean [low, high]' of an Interval dict (or '–')."""
    if not d or d.get("mean") is None or not math.isfinite(d["mean"]):
        return "–"
    if not math.isfinite(d.get("low", float("nan"))):
        return f"{d['mean']:.{digits}f}"
    return f"{d['mean']:.{digits}f} [{d['low']:.{digits}f}, {d['high']:.{digits}f}]"


def _claim_lines(number: str, c: dict) -> list[str]:
    i = c["interval"]
    lines = [f"## Claim {number}: {TITLES[number]}", "", f"**Verdict: {c['verdict']}.**"
             + (f" Figure: `{c['figure']}`." if c["figure"] else "")]
    if c["note"]:
        lines.append(f"Not judged: {c['note']}.")
    if c["statistic"]:
        lines.append(f"Statistic: {c['statistic']}.")
        lines.append(f"Value: {iv(i)} over {i['n_seeds']} seeds (95% t-interval; half-width from the seeds "
                     f"{i['seed_half']:.3f}, from the held-out games {i['game_half']:.3f}); smallest effect worth "
                     f"the name δ = {c['smallest_effect']}.")
        if c["rule_gives"] != c["verdict"]:
            lines.append(f"The interval alone would give '{c['rule_gives']}', but a verdict needs at least 5 seeds.")
    for flag in c.get("flags", []):
        lines.append(f"⚠ {flag}: the claim is about a subject that does not yet deserve its name.")
    simple = {k: v for k, v in c["evidence"].items() if not (isinstance(v, dict) and "ceiling" in v)}
    if simple:
        lines.append("")
        for k, v in simple.items():
            lines.append(f"- {k}: {iv(v) if isinstance(v, dict) else v}")
    lines.append("")
    return lines


def value_tables(claim1: dict) -> list[str]:
    """Claim 1's tables: per agent and dataset, every network on each target."""
    lines = []
    for key, table in claim1["evidence"].items():
        if not (isinstance(table, dict) and "ceiling" in table):
            continue
        regime, rest = key.split(": ", 1)
        dataset, target = rest.split(" / ")
        unseen = "ceiling_unseen" in table
        lines += [f"**{regime}, {DATASETS.get(dataset, dataset)}; target `{target}`** (ceiling "
                  f"{iv(table['ceiling'])}" + (f"; on never-seen positions {iv(table['ceiling_unseen'])}" if unseen else "")
                  + "):", "",
                  "| network | R² (chosen layer) | R² never-seen positions | random-init R² | emergence | emergence within "
                  "move | fraction of gap | fraction of gap within move | residual (rms) | layers |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for net, row in table.items():
            if net.startswith("ceiling"):
                continue
            lines.append(f"| {NETWORK_NAMES.get(net, net)} | {iv(row['r2'])} | {iv(row.get('r2_unseen'))} | "
                         f"{iv(row.get('control_r2'))} | "
                         f"{iv(row.get('emergence'))} | {iv(row.get('emergence_within_move'))} | "
                         f"{iv(row.get('fraction_of_gap'))} | {iv(row.get('fraction_of_gap_within_move'))} | "
                         f"{iv(row.get('residual_rms'))} | {row['layers']} |")
        lines.append("")
    return lines


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
                parts.append(f"V^π by {labels['method']} ({labels['rollouts']} games per history): label "
                             f"standard error (rms over rows) {sum(labels['label_se_rms']) / len(labels['label_se_rms']):.3f}"
                             + (f" beside the policy probe's residual (rms) {sum(resid) / len(resid):.3f}" if resid else ""))
            elif labels:
                parts.append(f"V^π {labels['method']}")
            if d.get("test_rows_unseen") is not None:
                parts.append(f"{sum(d['test_rows_unseen']):,} of {sum(d['test_rows']):,} test positions never seen in "
                             "training")
            if parts:
                lines.append(f"- {regime}, {DATASETS.get(name, name)}: " + "; ".join(parts) + ".")
    return lines + ([""] if lines else [])


def report(results: dict) -> str:
    claims, q = results["claims"], results["quality"]
    seeds = {len(f["seeds"]) for f in results["finals"].values()}
    lines = ["# agentsim reproduction report", ""]
    if results.get("game"):
        lines += [game_line(results["game"]), ""]
    lines += [f"Preset `{results['preset']}`; {'/'.join(map(str, sorted(seeds)))} seeds per run; total "
             f"{results['total_s']:.0f} s. Every number is recomputed from the run directories under `runs/` and "
             "listed in `results.json`.", "",
             "| claim | verdict | statistic (95% interval) | figure |", "| --- | --- | --- | --- |"]
    for number, c in claims.items():
        lines.append(f"| {number}. {TITLES[number]} | **{c['verdict']}** | {iv(c['interval'])} | `{c['figure']}` |")
    lines += ["", f"Rule for every claim: {RULE_TEXT} Layers are chosen on validation games among layers 1…L "
              "(the embeddings are reported, never chosen); scores are read on test games.", ""]

    lines += ["## The subjects", "", "| run | loss vs random | win vs random | loss vs greedy | loss vs perfect | "
              "simulator gap (nats/move) | gap on never-seen positions | bars | meets them |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for regime, row in q.items():
        bars = row.get("bars", [])
        lines.append(f"| {regime} | {iv(row.get('loss_vs_random'))} | {iv(row.get('win_vs_random'))} | "
                     f"{iv(row.get('loss_vs_greedy'))} | {iv(row.get('loss_vs_perfect'))} | "
                     f"{iv(row.get('simulator_gap'))} | {iv(row.get('simulator_gap_unseen'))} | "
                     + (f"{'; '.join(b['text'] for b in bars)} | {'yes' if all(b['meets'] for b in bars) else '**no**'} |"
                        if bars else "– | – |"))
    for name, ref in results.get("references", {}).items():
        lines.append(f"| *{name} (exact)* | {ref['loss_vs_random']:.3f} | {ref['win_vs_random']:.3f} | "
                     f"{ref['loss_vs_greedy']:.3f} | {ref['loss_vs_perfect']:.3f} | – | – | – | – |")
    game = (results.get("game") or {}).get("name", "tictactoe")
    lines += ["", "Loss and win rates: greedy (arg-max) play as X and as O against each persona; the simulator gap is "
              "the held-out next-move loss minus the Bayes-optimal loss of the persona mixture, on every held-out "
              "position and on the positions (boards) that never occur in the run's training games. The exact rows "
              "are the references from the solver's table, on the same terms: the perfect persona (uniform over "
              "value-optimal moves, which does not try to exploit a weak opponent) and the best possible player "
              "(each column's own optimum, a best response to that persona). Bars: "
              + ", ".join(f"{k} {'; '.join(bar_text for bar_text in _bar_texts(v))}" for k, v in bars_for(game).items())
              + ".", ""]

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

    lines += ["## Timings", "", "| stage | seconds |", "| --- | --- |"]
    for stage, secs in results["timings"].items():
        lines.append(f"| {stage} | {secs} |")
    for name, secs in results.get("analyses", {}).get("seconds", {}).items():
        lines.append(f"| analysis: {name} | {secs} |")
    lines += ["", "Sizes: " + ", ".join(f"{k} {v}" for k, v in results["sizes"].items()) + ".", "",
              "## Figures", ""] + [f"- `{f}`" for f in results["figures"] if f.endswith(".png")]
    return "\n".join(lines) + "\n"
