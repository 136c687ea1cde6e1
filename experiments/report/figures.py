"""Every figure, each drawn only from numbers in results dictionaries (never from live models).

F1 timeline, F2 probe grid, F3 persona by move, F4 change, F5 layer reset, F6 steering,
F7 RL amount, F8 MTP vs NTP, F9 behaviour, the claim-1 value figure and `compare`'s curves.
Bands are 95% bootstrap intervals over seeds (``statistics.bootstrap_ci``): a picture of the
spread, not the interval a claim is judged by.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from agentsim.experiments.statistics import bootstrap_ci  # noqa: E402

REGIME_COLORS = {"next_token": "tab:blue", "rl": "tab:red", "pretrain_rl": "tab:purple",
                 "random_init": "tab:gray"}


def band(ax, x, values, color, label, style="-"):
    values = np.asarray(values, float)  # [seeds, layers]
    ci = bootstrap_ci(values)
    ax.plot(x, ci.mean, style, color=color, label=label, marker="o" if style == "-" else None, ms=3)
    ax.fill_between(x, ci.low, ci.high, color=color, alpha=0.18, lw=0)


NETWORK_STYLE = {  # claim-1 networks: colour, line style, label
    "policy": ("tab:red", "-", "agent: policy trunk"),
    "critic": ("tab:orange", "-", "agent: separate critic trunk"),
    "simulator": ("tab:blue", "-", "next_token simulator (same seed)"),
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
    fig, axes = plt.subplots(len(measures), len(panels), figsize=(5.0 * len(panels), 3.6 * len(measures)),
                             squeeze=False)
    for row, (regime, m) in enumerate(measures.items()):
        for ax, (dataset, target, title) in zip(axes[row], panels):
            entry = m["datasets"].get(dataset, {}).get("targets", {}).get(target)
            if entry is None:
                ax.set_visible(False)
                continue
            for net, per_seed in entry["networks"].items():
                if net == "value_head":
                    ax.axhline(np.mean([r["test_r2"][0] for r in per_seed]), color="tab:orange", ls="--", lw=1,
                               label="agent: value head output")
                    continue
                color, style, label = NETWORK_STYLE[net]
                r2 = np.asarray([r["test_r2"] for r in per_seed])
                x = np.arange(r2.shape[1])
                band(ax, x, r2, color, label, style)
                chosen = [r["layer"] for r in per_seed]
                layer = int(np.bincount(chosen).argmax())
                ax.plot([layer], [r2[:, layer].mean()], "o", mfc="none", mec=color, ms=10)
            ceiling = np.mean([c["test_r2"][0] for c in entry["ceiling"]])
            ax.axhline(ceiling, color="green", ls=":", lw=1.2, label=f"ceiling ({ceiling:.2f})")
            ax.set_title(f"{regime}: {title}", fontsize=9)
            ax.set_xlabel("layer (0 = embeddings)")
            ax.set_ylabel("held-out R²")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    return save_figure(fig, out_dir, name)


def save_analysis(result: dict, out: str | Path, plot, table: str) -> None:
    """What every analysis subcommand does last: JSON, its figure beside it, a table, a line."""
    import json

    out = Path(out)
    if not out.parent.is_dir():
        raise ValueError(f"directory {out.parent} does not exist")
    out.write_text(json.dumps(result, indent=2))
    paths = plot(result, out.parent)
    print(table)
    print(f"wrote {out}, " + ", ".join(map(str, paths)) + f" ({result['seconds']:.0f} s)")


def save_figure(fig, out_dir: Path, name: str) -> list[Path]:
    """Every figure goes out as PNG (to look at) and PDF (for the paper)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.pdf"]
    fig.tight_layout()
    for p in paths:
        fig.savefig(p, dpi=140)
    plt.close(fig)
    return paths


def _scores(per_seed: list[dict]) -> np.ndarray:
    return np.asarray([r["score"] for r in per_seed], float)  # [seeds, layers]


def timeline(timelines: dict[str, dict], out_dir: Path, target: str = "value_mover",
             name: str = "f1_value_probe_layer_by_checkpoint") -> list[Path]:
    """F1: probe score by layer (colour) against training step, one panel per regime."""
    fig, axes = plt.subplots(1, len(timelines), figsize=(4.2 * len(timelines), 3.6), squeeze=False)
    for ax, (stage, tl) in zip(axes[0], timelines.items()):
        data = np.asarray(tl["targets"][target], float)  # [ckpt, seed, layer]
        steps = np.maximum(np.asarray(tl["steps"]), 1)
        cmap = plt.get_cmap("viridis", data.shape[2])
        for layer in range(data.shape[2]):
            ci = bootstrap_ci(data[:, :, layer].T)
            ax.plot(steps, ci.mean, marker="o", ms=3, color=cmap(layer), label="emb" if layer == 0 else f"L{layer}")
            ax.fill_between(steps, ci.low, ci.high, color=cmap(layer), alpha=0.15, lw=0)
        ax.set_xscale("log")
        ax.set_title(f"{stage}: {target}")
        ax.set_xlabel("training step (log)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("held-out probe score")
    axes[0][0].legend(fontsize=7, title="layer")
    return save_figure(fig, out_dir, name)


def probe_grid(suites: dict[str, dict], out_dir: Path, name: str = "f2_probe_targets_controls") -> list[Path]:
    """F2: probe type (rows: linear, small MLP) × target and label frame (bars) per regime
    (columns): the score at the trained model's best layer beside each control there."""
    targets = list(next(iter(suites.values()))["targets"])
    types = [("linear", lambda e: e)]
    if any("mlp" in e for e in next(iter(suites.values()))["targets"].values()):
        types.append(("MLP", lambda e: e.get("mlp")))
    fig, axes = plt.subplots(len(types), len(suites), figsize=(4.6 * len(suites), 4.2 * len(types)),
                             squeeze=False)
    kinds = ("trained", "random_init", "shuffled", "control_task")
    colors = {"trained": "tab:blue", "random_init": "tab:gray", "shuffled": "black", "control_task": "tab:orange"}
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
                    best = int(np.argmax(_scores(entry["trained"]).mean(0)))
                    ci = bootstrap_ci(_scores(entry[kind])[:, best])
                    means.append(ci.mean)
                    errs.append(ci.high - ci.mean)
                ax.barh(y + (j - 1.5) * 0.2, means, 0.2, xerr=errs, color=colors[kind], label=kind)
            ax.set_yticks(y, shown, fontsize=7)
            ax.set_title(f"{stage}: {type_name} probe")
            ax.set_xlabel("score at best layer (R² or accuracy)")
            ax.grid(alpha=0.3, axis="x")
    axes[0][0].legend(fontsize=7)
    return save_figure(fig, out_dir, name)


def persona_by_move(suites: dict[str, dict], out_dir: Path, name: str = "f3_persona_probe_by_move") -> list[Path]:
    """F3: persona-probe accuracy by move number for each layer, with the exact Bayes ceiling."""
    fig, axes = plt.subplots(1, len(suites), figsize=(4.4 * len(suites), 3.6), squeeze=False)
    for ax, (stage, suite) in zip(axes[0], suites.items()):
        entry = suite["targets"]["persona_mover"]
        by_move = np.asarray([r["by_move"] for r in entry["trained"]], float)  # [seed, layer, move]
        cmap = plt.get_cmap("viridis", by_move.shape[1])
        moves = np.arange(by_move.shape[2])
        for layer in range(by_move.shape[1]):
            ci = bootstrap_ci(by_move[:, layer])
            ax.plot(moves, ci.mean, color=cmap(layer), label="emb" if layer == 0 else f"L{layer}")
            ax.fill_between(moves, ci.low, ci.high, color=cmap(layer), alpha=0.15, lw=0)
        ax.plot(moves, suite["bayes_ceiling"]["mover"], "k--", label="Bayes ceiling")
        ctrl = np.asarray([r["by_move"] for r in entry["random_init"]], float).mean(0).max(0)
        ax.plot(moves, ctrl, ":", color="gray", label="random-init (best layer)")
        ax.set_title(f"{stage}: the persona to move")
        ax.set_xlabel("move number")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy")
    axes[0][0].legend(fontsize=7)
    return save_figure(fig, out_dir, name)


def rl_amount(amount: dict, out_dir: Path, name: str = "f7_rl_amount") -> list[Path]:
    """F7 (claim 5): with more RL, how much each layer's weights move from the pretrained model,
    and how much of the achievable gap the policy trunk's probe closes for its own V^π, per block
    (the claim-1 measure, repeated at several RL checkpoints)."""
    steps = np.maximum(np.asarray(amount["steps"]), 1)
    dw = np.asarray(amount["weight_change"], float)  # [ckpt, seed, layer]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    cmap = plt.get_cmap("viridis", dw.shape[2])
    for layer in range(dw.shape[2]):
        ci = bootstrap_ci(dw[:, :, layer].T)
        axes[0].plot(steps, ci.mean, marker="o", ms=3, color=cmap(layer), label=amount["layer_names"][layer])
        axes[0].fill_between(steps, ci.low, ci.high, color=cmap(layer), alpha=0.15, lw=0)
    value = amount.get("value")
    if value:
        frac = np.asarray(value["fraction_of_gap_by_block"], float)  # [ckpt, seed, block]
        vsteps = np.maximum(np.asarray(value["steps"]), 1)
        for block in range(frac.shape[2]):
            ci = bootstrap_ci(frac[:, :, block].T)
            color = cmap(block + 1)
            axes[1].plot(vsteps, ci.mean, marker="o", ms=3, color=color, label=f"block {block + 1}")
            axes[1].fill_between(vsteps, ci.low, ci.high, color=color, alpha=0.15, lw=0)
        axes[1].axhline(0, color="gray", lw=0.5)
        axes[1].legend(fontsize=7)
    axes[0].set_ylabel("‖ΔW‖/‖W‖ vs pretrained")
    axes[1].set_ylabel("fraction of the achievable gap (own V^π)")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("RL iterations (log; step 0 plotted at 1)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    return save_figure(fig, out_dir, name)


def mtp_vs_ntp(simulators: dict[str, dict], out_dir: Path, name: str = "f8_mtp_vs_ntp") -> list[Path]:
    """F8 (claim 6): value-probe R² by layer for each simulator's own value on persona games
    (and minimax), next-token vs multi-token, beside the random-init network and the ceiling."""
    targets = ("mixture_value", "minimax")
    fig, axes = plt.subplots(1, len(targets), figsize=(5 * len(targets), 3.6), squeeze=False)
    colors = {"next_token": "tab:blue", "next_token_mtp": "tab:green"}
    for ax, target in zip(axes[0], targets):
        for stage, m in simulators.items():
            entry = m["datasets"]["persona_games"]["targets"][target]
            r2 = np.asarray([r["test_r2"] for r in entry["networks"]["simulator"]])
            band(ax, np.arange(r2.shape[1]), r2, colors.get(stage), stage)
        ctrl = np.asarray([r["test_r2"] for r in entry["networks"]["random_init"]])
        band(ax, np.arange(ctrl.shape[1]), ctrl, "black", "random init", "--")
        ax.axhline(np.mean([c["test_r2"][0] for c in entry["ceiling"]]), color="green", ls=":", label="ceiling")
        ax.set_title(f"persona games: {target.replace('_', ' ')}")
        ax.set_xlabel("layer (0 = embeddings)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("held-out R²")
    axes[0][0].legend(fontsize=7)
    return save_figure(fig, out_dir, name)


def plot_comparison(groups: list[dict], metric: str, out_prefix: Path) -> list[Path]:
    """`agentsim compare`: each config group's metric against steps and wall time, with seed bands."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for g in groups:
        n = min(len(c[2]) for c in g["curves"])
        values = np.stack([c[2][:n] for c in g["curves"]])
        steps = g["curves"][0][0][:n]
        walls = np.nanmean(np.stack([c[1][:n] for c in g["curves"]]), 0)
        ci = bootstrap_ci(values) if len(values) > 1 else None
        for ax, x in zip(axes, (steps, walls)):
            line, = ax.plot(x, values.mean(0), label=f"{g['label']} (n={len(values)})")
            if ci is not None:
                ax.fill_between(x, ci.low, ci.high, color=line.get_color(), alpha=0.2, lw=0)
    axes[0].set_xlabel("step")
    axes[1].set_xlabel("wall time (s)")
    for ax in axes:
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    paths = [out_prefix.with_name(out_prefix.name + ".png"), out_prefix.with_name(out_prefix.name + ".pdf")]
    for p in paths:
        fig.savefig(p, dpi=130)
    plt.close(fig)
    return paths


CHANGE_COLORS = {"tuned": "tab:purple", "control": "tab:blue"}


def plot_change(result: dict, out_dir, target: str = "mixture_value",
                name: str = "f4_where_rl_changes") -> list[Path]:
    """F4: ΔW/W, CKA to the pretrained model (seed floor dashed) and Δ probe R², by layer."""

    labels = {"tuned": f"RL-tuned ({result['regimes']['tuned']})",
              "control": "continued pretraining (control)"}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    x_w, x_r = np.arange(len(result["layers"])), np.arange(len(result["resid_layers"]))
    for kind, comp in result["comparisons"].items():
        band(axes[0], x_w, comp["weight_change"], CHANGE_COLORS[kind], labels[kind])
        band(axes[1], x_r, comp["cka"], CHANGE_COLORS[kind], labels[kind])
        band(axes[2], x_r, comp["delta_probe_r2"][target], CHANGE_COLORS[kind], labels[kind])
    floor = np.asarray(result["seed_floor"]["cka"], float)
    if len(floor):
        axes[1].plot(x_r, floor.mean(0), "--", color="black", label="seed floor (pretrained seed i vs j)")
    titles = ("relative weight change ‖ΔW‖/‖W_pre‖", "linear CKA to the pretrained model",
              f"Δ value-probe R² ({target.replace('_', ' ')})")
    ticks = (result["layers"], result["resid_layers"], result["resid_layers"])
    for ax, x, names, title in zip(axes, (x_w, x_r, x_r), ticks, titles):
        ax.set_xticks(x, names)
        ax.set_xlabel("layer")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[2].axhline(0, color="gray", lw=0.5)
    axes[1].set_ylim(top=1.02)
    axes[1].legend(fontsize=8)
    fig.suptitle(f"Where fine-tuning changes the network (mean and 95% CI over {len(result['seeds'])} seeds)")

    return save_figure(fig, out_dir, name)


VARIANT_STYLE = {"pretrained": ("tab:green", "layer reset to pretrained"),
                 "init": ("tab:red", "layer reset to random init"),
                 "perturb": ("tab:gray", "random perturbation, same norm (control)")}
PANELS = (("loss_vs_random", "loss rate vs random"), ("loss_vs_perfect", "loss rate vs perfect"),
          ("probe_r2_last/mixture_value", "last-layer value-probe R² (mixture value)"))


def plot_layer_reset(result: dict, out_dir, name: str = "f5_layer_reset") -> list[Path]:
    """F5: each metric after resetting one layer of the tuned model, by layer, with seed bands;
    the unmodified tuned and pretrained models as horizontal lines."""

    fig, axes = plt.subplots(1, len(PANELS), figsize=(5 * len(PANELS), 4))
    x = np.arange(len(result["layers"]))
    for ax, (metric, title) in zip(axes, PANELS):
        for variant, (color, label) in VARIANT_STYLE.items():
            values = np.array([result["reset"][variant][l][metric] for l in result["layers"]]).T  # [S, layers]
            band(ax, x, values, color, label)
        for base, style in (("tuned", "-"), ("pretrained", "--")):
            ax.axhline(np.mean(result["baseline"][base][metric]), ls=style, color="black", lw=1,
                       label=f"{base} model (no reset)")
        ax.set_xticks(x, result["layers"])
        ax.set_xlabel("layer reset")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Layer reset of the {result['regime']} model (mean and 95% CI over {len(result['seeds'])} seeds)")

    return save_figure(fig, out_dir, name)


def plot_steering(result: dict, out_dir: str | Path, name: str = "f6_steering") -> list[Path]:
    """F6: per layer (columns), against alpha: Δ(win − loss) vs random and Δ loss vs perfect under
    value steering, and Δ log-likelihood of the steered-to persona; probe directions beside the
    random-direction and random-init-probe controls, seed means with 95% bootstrap bands."""

    alphas = np.asarray(result["alphas"])
    zero = int(np.argmin(np.abs(alphas)))
    layers = result["layers"]
    play, ll = result["play"], result["persona_loglik"]
    dirs = play["directions"]
    score = np.asarray(play["win"]) - np.asarray(play["loss"])
    score = score - score[:, :, :, zero:zero + 1]
    loss = np.asarray(play["loss"]) - np.asarray(play["loss"])[:, :, :, zero:zero + 1]
    rand = [i for i, d in enumerate(dirs) if d.startswith("random_")]
    styles = {"value": ("tab:red", "-", "value probe"), "persona_perfect": ("tab:purple", "-", "'perfect' persona probe"),
              "init_value": ("black", ":", "value probe @ random init"),
              "init_persona_perfect": ("gray", ":", "'perfect' probe @ random init")}
    fig, axes = plt.subplots(3, len(layers), figsize=(4.2 * len(layers), 9.5), squeeze=False)
    for li, layer in enumerate(layers):
        for row, (vals, opp, ylabel) in enumerate(((score, 0, "Δ(win − loss) vs random"),
                                                   (loss, 1, "Δ loss rate vs perfect"))):
            ax = axes[row, li]
            for d, (color, style, label) in styles.items():
                if d in dirs:
                    band(ax, alphas, vals[:, li, dirs.index(d), :, opp], color, label, style)
            band(ax, alphas, vals[:, li, rand, :, opp].mean(1), "tab:gray", "random directions", "--")
            ax.set(ylabel=ylabel, title=f"steer after layer {layer}" if row == 0 else None)
        ax = axes[2, li]
        band(ax, alphas, np.asarray(ll["target"]["probe"])[:, li], "tab:blue", "toward persona p (probe)")
        band(ax, alphas, np.asarray(ll["off_target"]["probe"])[:, li], "tab:cyan", "other personas (probe)", ":")
        band(ax, alphas, np.asarray(ll["target"]["init_probe"])[:, li], "black", "persona probe @ random init", ":")
        band(ax, alphas, np.asarray(ll["target"]["random"])[:, li], "tab:gray", "random directions", "--")
        ax.set(ylabel="Δ mean log-lik of persona's moves [nats]", xlabel="alpha (× residual RMS)")
        for ax in axes[:, li]:
            ax.axhline(0, color="gray", lw=0.5)
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    axes[2, 0].legend(fontsize=7)
    fig.suptitle(f"steering {result.get('run', '')} ({result['regime']}, {len(result['seeds'])} seeds)", fontsize=9)
    return save_figure(fig, Path(out_dir), name)


def plot_behaviour(result: dict, out_dir: str | Path, name: str = "f9_behaviour") -> list[Path]:
    """F9: per regime, KL to each persona, mass on persona vs optimal moves, top-k shift, and
    win/draw/loss against every persona; bars are seed means with 95% bootstrap CIs."""

    runs = result["runs"]
    names = list(runs)
    prompted = [n for n in names if isinstance(runs[n]["prompted_strength"], dict)]
    panels = ["kl", "mass", "topk", "final"] + (["prompted"] if prompted else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), squeeze=False)
    axes = dict(zip(panels, axes[0]))
    width = 0.8 / max(len(names), 1)

    def bars(ax, x, per_seed_list, offset, color, label, **kw):
        ci = [bootstrap_ci(np.asarray(v, float)) for v in per_seed_list]
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
                             color="black", zorder=3, label="mass on optimal moves" if i == 0 else None)
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
    axes["mass"].set(ylabel="model mass on the persona's top moves", title="(a) persona's moves vs optimal (—)")
    axes["topk"].set(ylabel="share of positions", title="(c) top move outside pretrained top-k")
    axes["final"].set(ylabel="win − loss rate", title="(d) result vs each persona (greedy)")
    if prompted:
        axes["prompted"].set(ylabel="loss rate vs perfect", title="(b) prompted as persona")
    for ax in axes.values():
        ax.grid(alpha=0.3, axis="y")
    axes["kl"].legend(fontsize=7)
    axes["mass"].legend(fontsize=7)
    return save_figure(fig, Path(out_dir), name)
