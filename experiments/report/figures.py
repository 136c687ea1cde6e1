"""Every figure, each drawn only from numbers in results dictionaries (never from live models).

F1 timeline, F2 probe grid, F3 persona by move, F4 change (F4b: claim 4 three ways), F5 layer reset, F6 steering,
F7 RL amount, F8 MTP vs NTP, F9 behaviour, F10 look-ahead probes, the claim-1 value figure and `compare`'s curves.
Lines and bars are means over seeds; bands and error bars are the 95 % t-interval of that mean
over seeds (``statistics.seed_interval``, the interval the claims use), and every figure says
so in its legend, which sits below the panels so that it never covers data. Every axis with
numbers on it names its unit; layer axes have integer ticks.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from agentsim.experiments.statistics import CI, chosen_layer, seed_interval  # noqa: E402

REGIME_COLORS = {"next_token": "tab:blue", "rl": "tab:red", "pretrain_rl": "tab:purple",
                 "random_init": "tab:gray"}
R2_LABEL = "held-out R² [unitless]"
LAYER_LABEL = "layer [0 = embeddings]"


def seed_band(values_over_seeds) -> CI:
    """Mean and 95 % t-interval over seeds (axis 0) of every entry of [S, ...] (no interval from
    one seed)."""
    v = np.asarray(values_over_seeds, float)
    intervals = [seed_interval(column) for column in v.reshape(v.shape[0], -1).T]
    return CI(*(np.array([getattr(i, k) for i in intervals]).reshape(v.shape[1:]) for k in ("mean", "low", "high")))


def seed_note(seed_counts, mark: str = "line") -> str:
    """What a figure's lines (or bars) and bands (or error bars) are, for its legend's title."""
    counts = sorted({int(n) for n in ([seed_counts] if isinstance(seed_counts, (int, np.integer)) else seed_counts)})
    spread = "band" if mark == "line" else "error bar"
    return (f"{mark}: mean over {' or '.join(map(str, counts))} seeds; {spread}: 95 % t-interval of that mean "
            "(df = seeds − 1)")


def band(ax, x, values, color, label, style="-"):
    ci = seed_band(values)  # values: [seeds, x]
    ax.plot(x, ci.mean, style, color=color, label=label, marker="o" if style == "-" else None, ms=3)
    ax.fill_between(x, ci.low, ci.high, color=color, alpha=0.18, lw=0)


def layer_axis(ax, label: str = LAYER_LABEL) -> None:
    """Layers are counted: integer ticks only."""
    ax.set_xlabel(label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def legend_below(fig, title: str, extra=()) -> None:
    """One legend for the whole figure, outside and below its panels so that it covers no data,
    titled with what its lines and bands are; each label once, however many panels draw it.
    The figure needs ``layout="constrained"``, which makes room for it."""
    entries: dict = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    for handle in extra:
        entries.setdefault(handle.get_label(), handle)
    fig.legend(list(entries.values()), list(entries), loc="outside lower center", ncols=max(1, min(len(entries), 4)),
               fontsize=7, title=title, title_fontsize=7)


NETWORK_STYLE = {  # claim-1 networks: colour, line style, label
    "policy": ("tab:red", "-", "agent: policy trunk"),
    "critic": ("tab:orange", "-", "agent: separate critic trunk"),
    "simulator": ("tab:blue", "-", "next_token simulator (same seed)"),
    "simulator_of_agent": ("tab:purple", "-", "next_token simulator of the agent (its games, same seed)"),
    "random_init": ("black", "--", "random init"),
    "random_init_critic": ("gray", ":", "random init (critic)"),
}


def value_where_it_lives(measures: dict[str, dict], out_dir: Path, name: str = "f0_value_where_it_lives") -> list[Path]:
    """F0 (claim 1): held-out R² of a linear value probe by layer, per agent (rows): on the
    agent's own games against its own V^π, and on persona games against V^π (agent networks)
    and the simulator's own value; the value head's output as a dashed line, the ceiling (the
    best any predictor of the history can do) dotted, each network's validation-chosen layer
    ringed. Mean and 95% band over seeds."""
    panels = [("own_games", "agent_value", "own games: its own V^π"),
              ("persona_games", "agent_value", "persona games: V^π (transfer)"),
              ("persona_games", "mixture_value", "persona games: the simulator's value")]
    fig, axes = plt.subplots(len(measures), len(panels), figsize=(5.0 * len(panels), 3.6 * len(measures) + 1.2),
                             squeeze=False, layout="constrained")
    seeds = set()
    for row, (regime, m) in enumerate(measures.items()):
        for ax, (dataset, target, title) in zip(axes[row], panels):
            entry = m["datasets"].get(dataset, {}).get("targets", {}).get(target)
            if entry is None:
                ax.set_visible(False)
                continue
            for net, per_seed in entry["networks"].items():
                seeds.add(len(per_seed))
                if net == "value_head":
                    ax.axhline(np.mean([r["test_r2"][0] for r in per_seed]), color="tab:orange", ls="--", lw=1,
                               label="agent: value head output (seed mean)")
                    continue
                color, style, label = NETWORK_STYLE[net]
                r2 = np.asarray([r["test_r2"] for r in per_seed])
                x = np.arange(r2.shape[1])
                band(ax, x, r2, color, label, style)
                chosen = [r["layer"] for r in per_seed]
                layer = int(np.bincount(chosen).argmax())
                ax.plot([layer], [r2[:, layer].mean()], "o", mfc="none", mec=color, ms=10)
            ceiling = np.mean([c["test_r2"][0] for c in entry["ceiling"]])
            ax.axhline(ceiling, color="green", ls=":", lw=1.2, label="ceiling: the best R² any predictor of the "
                                                                     "history reaches (seed mean)")
            ax.set_title(f"{regime}: {title} (ceiling {ceiling:.2f})", fontsize=9)
            layer_axis(ax)
            ax.set_ylabel(R2_LABEL)
            ax.grid(alpha=0.3)
    ringed = Line2D([], [], ls="none", marker="o", mfc="none", mec="black", ms=10,
                    label="ring: the layer most seeds chose on validation games (among layers 1…L)")
    legend_below(fig, seed_note(seeds), [ringed])
    return save_figure(fig, out_dir, name)


def save_figure(fig, out_dir: Path, name: str) -> list[Path]:
    """Every figure goes out as PNG (to look at) and PDF (for the paper)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.pdf"]
    if fig.get_layout_engine() is None:  # the figures here lay themselves out (constrained), with their legends
        fig.tight_layout()
    for p in paths:
        fig.savefig(p, dpi=140)
    plt.close(fig)
    return paths


def timeline(timelines: dict[str, dict], out_dir: Path, target: str = "value_mover",
             name: str = "f1_value_probe_layer_by_checkpoint") -> list[Path]:
    """F1: probe score by layer (colour) against training step, one panel per regime."""
    fig, axes = plt.subplots(1, len(timelines), figsize=(4.2 * len(timelines), 4.6), squeeze=False,
                             layout="constrained")
    seeds = set()
    for ax, (stage, tl) in zip(axes[0], timelines.items()):
        data = np.asarray(tl["targets"][target], float)  # [ckpt, seed, layer]
        seeds.add(data.shape[1])
        steps = np.maximum(np.asarray(tl["steps"]), 1)
        cmap = plt.get_cmap("viridis", data.shape[2])
        for layer in range(data.shape[2]):
            ci = seed_band(data[:, :, layer].T)
            ax.plot(steps, ci.mean, marker="o", ms=3, color=cmap(layer),
                    label="layer 0 (embeddings)" if layer == 0 else f"layer {layer}")
            ax.fill_between(steps, ci.low, ci.high, color=cmap(layer), alpha=0.15, lw=0)
        ax.set_xscale("log")
        ax.set_title(f"{stage}: {target}")
        ax.set_xlabel("training step [updates, log scale; step 0 at 1]")
        ax.set_ylabel("held-out probe score (R² or accuracy) [unitless]")
        ax.grid(alpha=0.3)
    legend_below(fig, seed_note(seeds))
    return save_figure(fig, out_dir, name)


def probe_grid(suites: dict[str, dict], out_dir: Path, name: str = "f2_probe_targets_controls") -> list[Path]:
    """F2: probe type (rows: linear, small MLP) × target and label frame (bars) per regime
    (columns): each seed's score at the layer its trained linear probe chose on validation games
    (``statistics.chosen_layer``; never on test, never layer 0), beside each control at that same
    layer. The MLP rows are read at the linear probe's layer too: the suite records no MLP
    validation score, and one layer per seed keeps the two probe types comparable."""
    targets = list(next(iter(suites.values()))["targets"])
    types = [("linear", lambda e: e)]
    if any("mlp" in e for e in next(iter(suites.values()))["targets"].values()):
        types.append(("MLP", lambda e: e.get("mlp")))
    fig, axes = plt.subplots(len(types), len(suites), figsize=(4.6 * len(suites), 4.2 * len(types) + 1.0),
                             squeeze=False, layout="constrained")
    kinds = ("trained", "random_init", "shuffled", "control_task")
    colors = {"trained": "tab:blue", "random_init": "tab:gray", "shuffled": "black", "control_task": "tab:orange"}
    seeds = set()
    for row, (type_name, pick) in enumerate(types):
        for ax, (stage, suite) in zip(axes[row], suites.items()):
            shown = [t for t in targets if pick(suite["targets"][t])]
            y = np.arange(len(shown))
            for j, kind in enumerate(kinds):
                means, errs = [], []
                for t in shown:
                    entry = pick(suite["targets"][t])
                    if not entry.get(kind):
                        means.append(np.nan)
                        errs.append(0)
                        continue
                    layers = [chosen_layer(r["val_score"]) for r in suite["targets"][t]["trained"]]
                    ci = seed_band([r["score"][layer] for r, layer in zip(entry[kind], layers, strict=True)])
                    seeds.add(len(entry[kind]))
                    means.append(ci.mean)
                    errs.append(ci.high - ci.mean)
                ax.barh(y + (j - 1.5) * 0.2, means, 0.2, xerr=errs, color=colors[kind], label=kind)
            ax.set_yticks(y, shown, fontsize=7)
            ax.set_title(f"{stage}: {type_name} probe")
            ax.set_xlabel("score at each seed's validation-chosen layer (R² or accuracy) [unitless]", fontsize=8)
            ax.grid(alpha=0.3, axis="x")
    legend_below(fig, seed_note(seeds, "bar"))
    return save_figure(fig, out_dir, name)


def persona_by_move(suites: dict[str, dict], out_dir: Path, name: str = "f3_persona_probe_by_move") -> list[Path]:
    """F3: persona-probe accuracy by move number for each layer, with the exact Bayes ceiling."""
    fig, axes = plt.subplots(1, len(suites), figsize=(4.4 * len(suites), 4.6), squeeze=False, layout="constrained")
    seeds = set()
    for ax, (stage, suite) in zip(axes[0], suites.items()):
        entry = suite["targets"]["persona_mover"]
        by_move = np.asarray([r["by_move"] for r in entry["trained"]], float)  # [seed, layer, move]
        seeds.add(by_move.shape[0])
        cmap = plt.get_cmap("viridis", by_move.shape[1])
        moves = np.arange(by_move.shape[2])
        for layer in range(by_move.shape[1]):
            ci = seed_band(by_move[:, layer])
            ax.plot(moves, ci.mean, color=cmap(layer), label="layer 0 (embeddings)" if layer == 0 else f"layer {layer}")
            ax.fill_between(moves, ci.low, ci.high, color=cmap(layer), alpha=0.15, lw=0)
        ax.plot(moves, suite["bayes_ceiling"]["mover"], "k--", label="Bayes ceiling (exact)")
        ctrl = np.asarray([r["by_move"] for r in entry["random_init"]], float).mean(0).max(0)
        ax.plot(moves, ctrl, ":", color="gray", label="random init (best layer, seed mean)")
        ax.set_title(f"{stage}: the persona to move")
        ax.set_xlabel("move number [plies from the start]")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("accuracy [fraction of positions]")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    legend_below(fig, seed_note(seeds))
    return save_figure(fig, out_dir, name)


def rl_amount(amount: dict, out_dir: Path, name: str = "f7_rl_amount") -> list[Path]:
    """F7 (claim 5): with more RL, how much each layer's weights move from the pretrained model,
    and how much of the achievable gap the policy trunk's probe closes for its own V^π, per block
    (the claim-1 measure, repeated at several RL checkpoints)."""
    steps = np.maximum(np.asarray(amount["steps"]), 1)
    dw = np.asarray(amount["weight_change"], float)  # [ckpt, seed, layer]
    names = amount["layer_names"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), layout="constrained")
    cmap = plt.get_cmap("viridis", dw.shape[2])
    for layer in range(dw.shape[2]):
        ci = seed_band(dw[:, :, layer].T)
        axes[0].plot(steps, ci.mean, marker="o", ms=3, color=cmap(layer), label=names[layer])
        axes[0].fill_between(steps, ci.low, ci.high, color=cmap(layer), alpha=0.15, lw=0)
    value = amount.get("value")
    if value:
        frac = np.asarray(value["fraction_of_gap_by_block"], float)  # [ckpt, seed, block]
        vsteps = np.maximum(np.asarray(value["steps"]), 1)
        for block in range(frac.shape[2]):
            ci = seed_band(frac[:, :, block].T)
            color = cmap(block + 1)  # block b is layer b: the same colour and name in both panels
            axes[1].plot(vsteps, ci.mean, marker="o", ms=3, color=color, label=names[block + 1])
            axes[1].fill_between(vsteps, ci.low, ci.high, color=color, alpha=0.15, lw=0)
        axes[1].axhline(0, color="gray", lw=0.5)
    axes[0].set_title("weights: change from the pretrained model", fontsize=9)
    axes[1].set_title("policy trunk: value probe for its own V^π", fontsize=9)
    axes[0].set_ylabel("‖ΔW‖/‖W_pre‖ [ratio]")
    axes[1].set_ylabel("fraction of the achievable gap [unitless]")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("RL iterations [PPO updates, log scale; step 0 at 1]")
        ax.grid(alpha=0.3)
    legend_below(fig, seed_note(dw.shape[1]))
    return save_figure(fig, out_dir, name)


def mtp_vs_ntp(simulators: dict[str, dict], out_dir: Path, name: str = "f8_mtp_vs_ntp") -> list[Path]:
    """F8 (claim 6): value-probe R² by layer for each simulator's own value on persona games
    (and minimax), next-token vs multi-token, beside the random-init network and the ceiling."""
    targets = ("mixture_value", "minimax")
    fig, axes = plt.subplots(1, len(targets), figsize=(5 * len(targets), 4.4), squeeze=False, layout="constrained")
    colors = {"next_token": "tab:blue", "next_token_mtp": "tab:green"}
    seeds = set()
    for ax, target in zip(axes[0], targets):
        for stage, m in simulators.items():
            entry = m["datasets"]["persona_games"]["targets"][target]
            r2 = np.asarray([r["test_r2"] for r in entry["networks"]["simulator"]])
            seeds.add(r2.shape[0])
            band(ax, np.arange(r2.shape[1]), r2, colors.get(stage), stage)
        ctrl = np.asarray([r["test_r2"] for r in entry["networks"]["random_init"]])
        band(ax, np.arange(ctrl.shape[1]), ctrl, "black", "random init", "--")
        ax.axhline(np.mean([c["test_r2"][0] for c in entry["ceiling"]]), color="green", ls=":",
                   label="ceiling (seed mean)")
        ax.set_title(f"persona games: {target.replace('_', ' ')}")
        layer_axis(ax)
        ax.set_ylabel(R2_LABEL)
        ax.grid(alpha=0.3)
    legend_below(fig, seed_note(seeds))
    return save_figure(fig, out_dir, name)


LOOKAHEAD_STYLE = {  # look-ahead networks: colour, line style, label
    "agent": ("tab:red", "-", "agent: policy trunk"),
    "simulator": ("tab:blue", "-", "next_token simulator (same seed)"),
    "random_init": ("black", "--", "random init"),
}
LOOKAHEAD_TITLES = {"next_move": "the player's own move 2 plies on",
                    "best_move": "solver's unique best move 2 plies on"}


def lookahead(result: dict, out_dir: Path, name: str = "f10_lookahead") -> list[Path]:
    """F10: look-ahead probes (``analysis.lookahead``): softmax-probe accuracy by layer for the move
    two plies on (columns: the player's own next move, the solver's unique best move), on each
    agent's own games (rows; agent, simulator and random init on the same tokens) and on persona
    games (the simulator); the train-majority rate dashed and the exact Bayes ceiling given the
    history dotted, seed means; each network's validation-chosen layer ringed."""
    sets = [(f"{agent}, own games", m["targets"]) for agent, m in result.get("agents", {}).items()]
    if result.get("persona_games"):
        sets.append(("persona games", result["persona_games"]["targets"]))
    targets = ("next_move", "best_move")
    fig, axes = plt.subplots(len(sets), len(targets), figsize=(5.0 * len(targets), 3.4 * len(sets) + 1.2),
                             squeeze=False, layout="constrained")
    seeds = set()
    for row, (title, by_target) in enumerate(sets):
        for ax, target in zip(axes[row], targets):
            entry = by_target.get(target)
            if entry is None:
                ax.set_visible(False)
                continue
            for net, per_seed in entry["networks"].items():
                color, style, label = LOOKAHEAD_STYLE[net]
                acc = np.asarray([r["test_acc"] for r in per_seed], float)
                seeds.add(len(per_seed))
                band(ax, np.arange(acc.shape[1]), acc, color, label, style)
                layer = int(np.bincount([r["layer"] for r in per_seed]).argmax())
                ax.plot([layer], [acc[:, layer].mean()], "o", mfc="none", mec=color, ms=10)
            ceilings = entry["ceiling"]
            ax.axhline(np.mean([c["majority"] for c in ceilings]), color="gray", ls="--", lw=1,
                       label="majority: train split's commonest move")
            bayes = np.mean([c["bayes"] for c in ceilings])
            ax.axhline(bayes, color="green", ls=":", lw=1.2,
                       label="ceiling: Bayes predictor given the history")
            ax.set_title(f"{title}: {LOOKAHEAD_TITLES[target]} (ceiling {bayes:.2f})", fontsize=9)
            layer_axis(ax)
            ax.set_ylabel("test accuracy [fraction of positions]")
            ax.set_ylim(0, 1)
            ax.grid(alpha=0.3)
    ringed = Line2D([], [], ls="none", marker="o", mfc="none", mec="black", ms=10,
                    label="ring: layer chosen on validation (most seeds)")
    legend_below(fig, seed_note(seeds) + "; ceilings: seed means", [ringed])
    return save_figure(fig, out_dir, name)


def plot_comparison(comparison, out_prefix: Path) -> list[Path]:
    """`agentsim compare`: each config group's metric against steps and wall time, with seed bands.

    ``comparison``: a ``runs.store.Comparison``. Line: the mean over a group's seeds; band (or bar,
    for a final.json metric's single point): the 95% t-interval of that mean at each step."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    seed_counts = set()
    for g in comparison.groups:
        n = min(len(c.values) for c in g.curves)
        values = np.stack([c.values[:n] for c in g.curves])
        steps = g.curves[0].steps[:n]
        walls_SxN = np.stack([c.walls[:n] for c in g.curves])
        known = ~np.isnan(walls_SxN)  # a run without timing.jsonl has no wall times
        walls = np.where(known.any(0), np.where(known, walls_SxN, 0).sum(0) / np.maximum(known.sum(0), 1), np.nan)
        seed_counts.add(len(values))
        band = seed_band(values)
        for ax, x in zip(axes, (steps, walls)):
            line, = ax.plot(x, band.mean, marker="o" if n == 1 else None,
                            label=f"{g.label} ({len(values)} seeds)")
            if len(values) < 2:
                continue
            if n == 1:
                ax.errorbar(x, band.mean, yerr=[band.mean - band.low, band.high - band.mean],
                            color=line.get_color(), capsize=4)
            else:
                ax.fill_between(x, band.low, band.high, color=line.get_color(), alpha=0.2, lw=0)
    axes[0].set_xlabel("training step (gradient updates; PPO iterations for agents)")
    axes[1].set_xlabel("wall time (s)")
    axes[0].set_title("against training steps", fontsize=10)
    axes[1].set_title("against wall time", fontsize=10)
    for ax in axes:
        ax.set_ylabel(comparison.metric)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{comparison.metric}: {comparison.quantity}")
    seeds = " or ".join(str(s) for s in sorted(seed_counts))
    fig.text(0.5, 0.01, f"line: mean over seeds; band (a bar at a single point): 95 % t-interval of the mean over "
             f"{seeds} seeds (df = seeds − 1; none with one seed)", ha="center", fontsize=8)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    paths = [out_prefix.with_name(out_prefix.name + ".png"), out_prefix.with_name(out_prefix.name + ".pdf")]
    for p in paths:
        fig.savefig(p, dpi=130)
    plt.close(fig)
    return paths


CHANGE_COLORS = {"tuned": "tab:purple", "control": "tab:blue"}


def plot_change(result: dict, out_dir, target: str = "mixture_value",
                name: str = "f4_where_rl_changes") -> list[Path]:
    """F4: ΔW/W, CKA to the pretrained model (seed floor dashed) and Δ probe R², by layer; with
    the updated fractions or the patching in ``result``, F4b beside it (``plot_change_three_ways``)."""

    labels = {"tuned": f"RL-tuned ({result['regimes']['tuned']})",
              "control": "continued pretraining (control)"}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8), layout="constrained")
    x_w, x_r = np.arange(len(result["layers"])), np.arange(len(result["resid_layers"]))
    for kind, comp in result["comparisons"].items():
        band(axes[0], x_w, comp["weight_change"], CHANGE_COLORS[kind], labels[kind])
        band(axes[1], x_r, comp["cka"], CHANGE_COLORS[kind], labels[kind])
        band(axes[2], x_r, comp["delta_probe_r2"][target], CHANGE_COLORS[kind], labels[kind])
    floor = np.asarray(result["seed_floor"]["cka"], float)
    if len(floor):
        axes[1].plot(x_r, floor.mean(0), "--", color="black", label="seed floor (pretrained seed i vs j, mean)")
    titles = ("relative weight change", "linear CKA to the pretrained model",
              f"Δ value-probe R² ({target.replace('_', ' ')})")
    ylabels = ("‖ΔW‖/‖W_pre‖ [ratio]", "linear CKA [unitless; 1 = same representation]", "Δ held-out R² [unitless]")
    ticks = (result["layers"], result["resid_layers"], result["resid_layers"])
    for ax, x, names, title, ylabel in zip(axes, (x_w, x_r, x_r), ticks, titles, ylabels):
        ax.set_xticks(x, names)
        ax.set_xlabel("layer")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[2].axhline(0, color="gray", lw=0.5)
    axes[1].set_ylim(top=1.02)
    fig.suptitle("Where fine-tuning changes the network")
    legend_below(fig, seed_note(len(result["seeds"])))
    paths = save_figure(fig, out_dir, name)
    if "patching" in result or any("updated_fraction" in c for c in result["comparisons"].values()):
        paths += plot_change_three_ways(result, out_dir)
    return paths


TOLERANCE_STYLES = ("-", "--", ":", "-.")
PATCH_STYLE = {"pretrained": ("tab:purple", "-", "pretrained residual patched in"),
               "random_init": ("tab:gray", "--", "matched random residual patched in (control: random-init "
                                             "network, rescaled to the pretrained norm)")}


def plot_change_three_ways(result: dict, out_dir, name: str = "f4b_claim4_three_ways") -> list[Path]:
    """F4b (claim 4 measured three ways), by layer: representation change (1 − CKA to the
    pretrained model), the share of each layer's parameters updated beyond each tolerance (× the
    RMS of its pretrained tensor), and cross-model patching of the RL model with the pretrained
    model's residual after each layer (beside a matched random residual): the change of its move
    distribution on held-out positions and of its greedy play. 'Later layers changed more' reads
    as curves rising to the right in every panel."""
    labels = {"tuned": f"RL-tuned ({result['regimes']['tuned']})", "control": "continued pretraining (control)"}
    patch = result.get("patching")
    panels = ["cka", "weights"] + (["tv"] if patch else []) + (["play"] if patch and "play" in patch else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.6), squeeze=False, layout="constrained")
    axes = dict(zip(panels, axes[0]))
    x_w, x_r = np.arange(len(result["layers"])), np.arange(len(result["resid_layers"]))
    for kind, comp in result["comparisons"].items():
        band(axes["cka"], x_r, 1 - np.asarray(comp["cka"], float), CHANGE_COLORS[kind], labels[kind])
        for style, (tol, frac) in zip(TOLERANCE_STYLES, comp.get("updated_fraction", {}).items()):
            band(axes["weights"], x_w, frac, CHANGE_COLORS[kind], f"{labels[kind]}: |ΔW| > {tol} × RMS(W_pre)", style)
    for panel, key in (("tv", "distribution"), ("play", "play")):
        if panel not in axes:
            continue
        values = patch[key]["tv" if key == "distribution" else "behaviour_change"]
        for source, (color, style, label) in PATCH_STYLE.items():
            band(axes[panel], x_r, values[source], color, label, style)
    text = {"cka": ("representation: 1 − linear CKA to the pretrained model", "1 − CKA [unitless; 0 = same]"),
            "weights": ("weights: share of parameters updated", "updated share [fraction of the layer's parameters]"),
            "tv": ("patching: the RL model's move distribution", "mean total variation [probability]"),
            "play": ("patching: the RL model's greedy play", "mean |Δ(win − loss rate)| [fraction of games]")}
    if "play" in axes:
        text["play"] = (f"{text['play'][0]} (vs {', '.join(patch['play']['opponents'])})", text["play"][1])
    for panel, ax in axes.items():
        names = result["layers"] if panel == "weights" else result["resid_layers"]
        ax.set_xticks(x_w if panel == "weights" else x_r, names)
        ax.set_xlabel("layer (patch: the residual after it)" if panel in ("tv", "play") else "layer")
        ax.set_title(text[panel][0], fontsize=9)
        ax.set_ylabel(text[panel][1])
        ax.axhline(0, color="gray", lw=0.5)
        ax.grid(alpha=0.3)
    fig.suptitle("Claim 4 three ways: does RL change mostly the later layers?")
    legend_below(fig, seed_note(len(result["seeds"])))
    return save_figure(fig, out_dir, name)


VARIANT_STYLE = {"pretrained": ("tab:green", "layer reset to pretrained"),
                 "init": ("tab:red", "layer reset to random init"),
                 "perturb": ("tab:gray", "random perturbation, same norm (control)")}
PANELS = (("loss_vs_random", "loss rate vs random [fraction of games]"),
          ("loss_vs_perfect", "loss rate vs perfect [fraction of games]"),
          ("probe_r2_last/mixture_value", "last-layer value-probe R² (mixture value) [unitless]"))


def plot_layer_reset(result: dict, out_dir, name: str = "f5_layer_reset") -> list[Path]:
    """F5: each metric after resetting one layer of the tuned model, by layer, with seed bands;
    the unmodified tuned and pretrained models as horizontal lines."""

    fig, axes = plt.subplots(1, len(PANELS), figsize=(5 * len(PANELS), 4.6), layout="constrained")
    x = np.arange(len(result["layers"]))
    for ax, (metric, ylabel) in zip(axes, PANELS):
        for variant, (color, label) in VARIANT_STYLE.items():
            values = np.array([result["reset"][variant][l][metric] for l in result["layers"]]).T  # [S, layers]
            band(ax, x, values, color, label)
        for base, style in (("tuned", "-"), ("pretrained", "--")):
            ax.axhline(np.mean(result["baseline"][base][metric]), ls=style, color="black", lw=1,
                       label=f"{base} model, no reset (seed mean)")
        ax.set_xticks(x, result["layers"])
        ax.set_xlabel("layer reset")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    fig.suptitle(f"Layer reset of the {result['regime']} model")
    legend_below(fig, seed_note(len(result["seeds"])))
    return save_figure(fig, out_dir, name)


def plot_steering(result: dict, out_dir: str | Path, name: str = "f6_steering") -> list[Path]:
    """F6: per layer (columns), against alpha: Δ(win − loss) vs random and Δ loss vs perfect under
    value steering, and Δ log-likelihood of the steered-to persona; probe directions beside the
    random-direction and random-init-probe controls, seed means with 95% t-interval bands."""

    alphas = np.asarray(result["alphas"])
    zero = int(np.argmin(np.abs(alphas)))
    layers = result["layers"]
    play, ll = result["play"], result["persona_loglik"]
    dirs = play["directions"]
    score = np.asarray(play["win"]) - np.asarray(play["loss"])
    score = score - score[:, :, :, zero:zero + 1]
    loss = np.asarray(play["loss"]) - np.asarray(play["loss"])[:, :, :, zero:zero + 1]
    rand = [i for i, d in enumerate(dirs) if d.startswith("random_")]
    # A random-init control takes its probe's colour, dash-dotted, so that each is told apart
    # from the other controls (random directions: gray dashed; other personas: cyan dotted).
    styles = {"value": ("tab:red", "-", "value probe"), "persona_perfect": ("tab:purple", "-", "'perfect' persona probe"),
              "init_value": ("tab:red", "-.", "value probe @ random init"),
              "init_persona_perfect": ("tab:purple", "-.", "'perfect' persona probe @ random init")}
    fig, axes = plt.subplots(3, len(layers), figsize=(4.2 * len(layers), 10.5), squeeze=False, layout="constrained")
    for li, layer in enumerate(layers):
        for row, (vals, opp, ylabel) in enumerate(((score, 0, "Δ(win − loss) vs random [fraction of games]"),
                                                   (loss, 1, "Δ loss rate vs perfect [fraction of games]"))):
            ax = axes[row, li]
            for d, (color, style, label) in styles.items():
                if d in dirs:
                    band(ax, alphas, vals[:, li, dirs.index(d), :, opp], color, label, style)
            band(ax, alphas, vals[:, li, rand, :, opp].mean(1), "tab:gray", "random directions", "--")
            ax.set(ylabel=ylabel, title=f"steer after layer {layer}" if row == 0 else None)
        ax = axes[2, li]
        band(ax, alphas, np.asarray(ll["target"]["probe"])[:, li], "tab:blue", "toward persona p (probe)")
        band(ax, alphas, np.asarray(ll["off_target"]["probe"])[:, li], "tab:cyan", "other personas (probe)", ":")
        band(ax, alphas, np.asarray(ll["target"]["init_probe"])[:, li], "tab:blue",
             "toward persona p (probe @ random init)", "-.")
        band(ax, alphas, np.asarray(ll["target"]["random"])[:, li], "tab:gray", "random directions", "--")
        ax.set(ylabel="Δ mean log-lik of persona's moves [nats]")
        for ax in axes[:, li]:
            ax.set_xlabel("alpha [× residual RMS]")
            ax.axhline(0, color="gray", lw=0.5)
            ax.grid(alpha=0.3)
    fig.suptitle(f"steering {result.get('run', '')} ({result['regime']})", fontsize=9)
    legend_below(fig, seed_note(len(result["seeds"])))
    return save_figure(fig, Path(out_dir), name)


def plot_behaviour(result: dict, out_dir: str | Path, name: str = "f9_behaviour") -> list[Path]:
    """F9: per regime, KL to each persona, mass on persona vs optimal moves, top-k shift, and
    win/draw/loss against every persona; bars are seed means with 95% t-intervals."""

    runs = result["runs"]
    names = list(runs)
    prompted = [n for n in names if isinstance(runs[n]["prompted_strength"], dict)]
    panels = ["kl", "mass", "topk", "final"] + (["prompted"] if prompted else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.6), squeeze=False, layout="constrained")
    axes = dict(zip(panels, axes[0]))
    width = 0.8 / max(len(names), 1)
    seeds = set()

    def bars(ax, x, per_seed_list, offset, color, label, **kw):
        ci = [seed_band(np.asarray(v, float)) for v in per_seed_list]
        seeds.update(len(v) for v in per_seed_list)
        mean = np.array([c.mean for c in ci])
        err = np.array([[c.mean - c.low for c in ci], [c.high - c.mean for c in ci]])
        ax.bar(np.asarray(x) + offset, mean, width, yerr=err, color=color, label=label, capsize=2, **kw)

    for i, n in enumerate(names):
        r, off = runs[n], (i - (len(names) - 1) / 2) * width
        color = REGIME_COLORS.get(r["regime"])
        cons = r["consistency"]["by_persona"]
        personas = list(cons)
        bars(axes["kl"], np.arange(len(personas)), [cons[p]["kl"] for p in personas], off, color, n)
        bars(axes["mass"], np.arange(len(personas)), [cons[p]["mass_on_persona"] for p in personas], off, color, n)
        axes["mass"].scatter(np.arange(len(personas)) + off,
                             [np.mean(cons[p]["mass_on_optimal"]) for p in personas], marker="_", s=120,
                             color="black", zorder=3, label="mass on optimal moves (seed mean)" if i == 0 else None)
        if isinstance(r.get("topk_shift"), dict):
            ks = list(r["topk_shift"])
            bars(axes["topk"], np.arange(len(ks)), [r["topk_shift"][k] for k in ks], off, color, n)
            axes["topk"].set_xticks(np.arange(len(ks)), [f"outside top-{k[3:]}" for k in ks])
        if r["final"]:
            ps = list(r["final"])
            score = [np.asarray(r["final"][p]["win"]) - np.asarray(r["final"][p]["loss"]) for p in ps]
            bars(axes["final"], np.arange(len(ps)), score, off, color, n)
            axes["final"].set_xticks(np.arange(len(ps)), ps, rotation=30)
        if n in prompted:
            ps = list(r["prompted_strength"])
            score = [np.asarray(r["prompted_strength"][p]["perfect"]["loss"]) for p in ps]
            bars(axes["prompted"], np.arange(len(ps)), score, off, color, n)
            axes["prompted"].set_xticks(np.arange(len(ps)), ps, rotation=30)
    first = runs[names[0]]["consistency"]
    for key in ("kl", "mass"):
        ps = list(first["by_persona"])
        axes[key].set_xticks(np.arange(len(ps)), ps, rotation=30)
    ps = list(first["bayes_simulator"])
    axes["kl"].scatter(np.arange(len(ps)), [first["bayes_simulator"][p]["kl"] for p in ps], marker="*",
                       color="black", zorder=3, label="Bayes-optimal simulator")
    axes["kl"].set(ylabel="KL(persona ‖ model) [nats]", title="(a) consistency with the persona to move")
    axes["mass"].set(ylabel="model mass on the persona's top moves [probability]",
                     title="(a) persona's moves vs optimal (—)")
    axes["topk"].set(ylabel="share of positions [fraction]", title="(c) top move outside pretrained top-k")
    axes["final"].set(ylabel="win − loss rate [fraction of games]", title="(d) result vs each persona (greedy)")
    if prompted:
        axes["prompted"].set(ylabel="loss rate vs perfect [fraction of games]", title="(b) prompted as persona")
    for ax in axes.values():
        ax.grid(alpha=0.3, axis="y")
    legend_below(fig, seed_note(seeds, "bar"))
    return save_figure(fig, Path(out_dir), name)


DEPTH_UNITS = {"1": "agent minus simulator [R²]", "3": "last minus first block [log10 steps]",
               "4": "last minus first block [1 − CKA]", "5": "last minus first checkpoint [fraction of gap]"}


def claims_by_depth(results: dict, out_dir: Path, name: str = "fd_claims_by_depth") -> list[Path]:
    """FD (the depth preset): each layer claim's statistic against the number of layers, with its
    95 % interval (the claim's own: over seeds, held-out games resampled) and its verdict at that
    depth; the claim-4 panel carries claim D's slope over log2(depth)."""
    by_depth = {int(d): v for d, v in results["depth"].items()}
    depths = sorted(by_depth)
    numbers = [n for n in ("1", "3", "4", "5") if any(n in by_depth[d]["claims"] for d in depths)]
    fig, axes = plt.subplots(1, len(numbers), figsize=(3.6 * len(numbers), 3.6), squeeze=False, layout="constrained")
    seeds = set()
    for ax, number in zip(axes[0], numbers):
        claims = [by_depth[d]["claims"].get(number) for d in depths]
        iv = [c["interval"] if c else {} for c in claims]
        mean = np.array([i.get("mean", np.nan) for i in iv], float)
        low = np.array([i.get("low", np.nan) for i in iv], float)
        high = np.array([i.get("high", np.nan) for i in iv], float)
        seeds |= {int(i["n_seeds"]) for i in iv if i.get("n_seeds")}
        x = np.log2(depths)  # evenly spaced doublings; a log axis fails on a panel with no finite value
        ax.errorbar(x, mean, yerr=[mean - low, high - mean], fmt="o-", color="tab:purple", capsize=3,
                    label="claim statistic at that depth")
        for xi, m, c in zip(x, mean, claims):
            if c and np.isfinite(m):
                ax.annotate(c["verdict"], (xi, m), textcoords="offset points", xytext=(4, 4), fontsize=6)
            elif c:
                ax.annotate("not judged", (xi, 0), textcoords="offset points", xytext=(4, 4), fontsize=6)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(x, [str(d) for d in depths])
        ax.set_xlim(x[0] - 0.5, x[-1] + 0.5)
        ax.set_xlabel("layers [count, log scale]")
        ax.set_ylabel(DEPTH_UNITS[number] + "; > 0 as predicted")
        title = f"claim {number}"
        if number == "4" and "D" in results.get("claims", {}):
            d_iv = results["claims"]["D"]["interval"]
            title += (f"\nclaim D: slope per doubling {d_iv['mean']:.3g}\n[{d_iv['low']:.3g}, {d_iv['high']:.3g}], "
                      f"{results['claims']['D']['verdict']}")
        ax.set_title(title, fontsize=8)
        ax.grid(alpha=0.3)
    legend_below(fig, seed_note(seeds or {0}, mark="point"))
    return save_figure(fig, out_dir, name)


def scaling(points, reach: dict[str, dict], measure: str, out_dir: Path, name: str = "fs_scaling") -> list[Path]:
    """FS (``agentsim scaling``): a measure against training compute per seed, log-log, one colour
    per series (setting): each run's validation curve (thin), its final seed mean with the seed
    range (points), the series' power law over its finals extended to the bar (dashed) and the
    bar (dotted)."""
    fig, ax = plt.subplots(figsize=(5.4, 3.8), layout="constrained")
    higher = measure.startswith("win")
    several = len(reach) > 1
    short_names = len({Path(q.run).name for q in points}) == len(points)  # label runs by folder name if unique
    for j, (series, series_reach) in enumerate(reach.items()):
        members = [p for p in points if p.series == series]
        fit = series_reach.get("fit")
        series_label = f"{series} (exponent {fit['slope']:.2f})" if fit else series
        series_color = plt.cm.tab10(j % 10) if several else "k"  # one series: a colour per run, a black fit
        for i, p in enumerate(members):
            color = series_color if several else plt.cm.viridis(i / max(len(members) - 1, 1))
            if p.curve:
                x, y = np.array(p.curve).T
                ok = (x > 0) & (y > 0)
                ax.plot(x[ok], y[ok], color=color, lw=0.8, alpha=0.6)
            lo, hi = min(p.values), max(p.values)
            label = (series_label if i == 0 else None) if several else (Path(p.run).name if short_names else p.run)
            ax.errorbar([p.flops], [p.mean], yerr=[[p.mean - lo], [hi - p.mean]], fmt="o", color=color, capsize=3,
                        label=label)
        if fit and not higher:
            x_end = max(series_reach["largest_flops"], series_reach.get("needed_flops") or 0)
            x = np.geomspace(min(p.flops for p in members), x_end, 50)
            ax.plot(x, np.exp(fit["intercept"] + fit["slope"] * np.log(x)), "--", lw=1, color=series_color,
                    label=None if several else f"power law fit (exponent {fit['slope']:.2f})")
    target = next(iter(reach.values()))["target"]
    ax.axhline(target, color="tab:red", ls=":", label=f"bar {target:g}")
    ax.set_xscale("log")
    ax.set_yscale("linear" if higher else "log")
    ax.set_xlabel("training compute per seed [model FLOPs]")
    ax.set_ylabel(measure.replace("_", " "))
    if not several:
        ax.set_title(next(iter(reach.values()))["note"], fontsize=8)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=6, loc="upper right" if several else "best")
    return save_figure(fig, out_dir, name)
