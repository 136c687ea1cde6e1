"""Figures, each drawn only from numbers in results dictionaries (never from live models)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from models.probes import bootstrap_ci  # noqa: E402

REGIME_COLORS = {"next_token": "tab:blue", "rl": "tab:red", "pretrain_rl": "tab:purple",
                 "random_init": "tab:gray"}


def _band(ax, x, values, color, label, style="-"):
    values = np.asarray(values, float)  # [seeds, layers]
    ci = bootstrap_ci(values)
    ax.plot(x, ci.mean, style, color=color, label=label, marker="o" if style == "-" else None, ms=3)
    ax.fill_between(x, ci.low, ci.high, color=color, alpha=0.18, lw=0)


def value_probe_by_layer(probes: dict[str, dict], out_dir: Path, name: str = "value_probe_by_layer") -> list[Path]:
    """F-claim-1: test R² of a linear value probe at each layer, per regime, with seed bands and
    the random-init and shuffled-label controls. ``probes``: regime -> probes.json content."""
    targets = list(next(iter(probes.values()))["targets"])
    fig, axes = plt.subplots(1, len(targets), figsize=(5.2 * len(targets), 4), squeeze=False)
    for ax, target in zip(axes[0], targets):
        for regime, res in probes.items():
            scores = res["targets"][target]
            x = np.arange(len(scores["trained"][0]))
            color = REGIME_COLORS.get(regime, None)
            _band(ax, x, scores["trained"], color, regime)
            if regime == "next_token":  # controls are the same architecture for every regime
                _band(ax, x, scores["random_init"], "black", "random-init control", "--")
                _band(ax, x, scores["shuffled"], "black", "shuffled-label control", ":")
        ax.set_xticks(x, ["emb"] + [str(i) for i in x[1:]])
        ax.set_xlabel("layer (residual stream after block)")
        ax.set_ylabel("held-out R² (mean, 95% CI over seeds)")
        ax.set_title(f"value probe: {target.replace('_', ' ')}")
        ax.axhline(0, color="gray", lw=0.5)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
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
        entry = suite["targets"]["persona_x"]
        by_move = np.asarray([r["by_move"] for r in entry["trained"]], float)  # [seed, layer, move]
        cmap = plt.get_cmap("viridis", by_move.shape[1])
        moves = np.arange(by_move.shape[2])
        for layer in range(by_move.shape[1]):
            ci = bootstrap_ci(by_move[:, layer])
            ax.plot(moves, ci.mean, color=cmap(layer), label="emb" if layer == 0 else f"L{layer}")
            ax.fill_between(moves, ci.low, ci.high, color=cmap(layer), alpha=0.15, lw=0)
        ax.plot(moves, suite["bayes_ceiling"]["x"], "k--", label="Bayes ceiling")
        ctrl = np.asarray([r["by_move"] for r in entry["random_init"]], float).mean(0).max(0)
        ax.plot(moves, ctrl, ":", color="gray", label="random-init (best layer)")
        ax.set_title(f"{stage}: X's persona")
        ax.set_xlabel("move number")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy")
    axes[0][0].legend(fontsize=7)
    return save_figure(fig, out_dir, name)


def rl_amount(amount: dict, out_dir: Path, name: str = "f7_rl_amount") -> list[Path]:
    """F7: with more RL, how much of the network changes (ΔW/W per layer) and where value
    becomes decodable (probe R² per layer), against RL steps."""
    steps = np.maximum(np.asarray(amount["steps"]), 1)
    dw = np.asarray(amount["weight_change"], float)  # [ckpt, seed, layer]
    r2 = np.asarray(amount.get("value_r2", np.full_like(dw, np.nan)), float)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    cmap = plt.get_cmap("viridis", dw.shape[2])
    for layer in range(dw.shape[2]):
        for ax, data in zip(axes, (dw, r2)):
            ci = bootstrap_ci(data[:, :, layer].T)
            ax.plot(steps, ci.mean, marker="o", ms=3, color=cmap(layer), label=amount["layer_names"][layer])
            ax.fill_between(steps, ci.low, ci.high, color=cmap(layer), alpha=0.15, lw=0)
    axes[0].set_ylabel("‖ΔW‖/‖W‖ vs pretrained")
    axes[1].set_ylabel("value probe R² (mover)")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("RL iterations (log)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    return save_figure(fig, out_dir, name)


def mtp_vs_ntp(suites: dict[str, dict], out_dir: Path, targets=("value_mover", "minimax_mover", "persona_mover", "board_mover"),
               name: str = "f8_mtp_vs_ntp") -> list[Path]:
    """F8: the same probes on next-token and multi-token pretrained models, by layer."""
    fig, axes = plt.subplots(1, len(targets), figsize=(3.8 * len(targets), 3.5), squeeze=False)
    for ax, target in zip(axes[0], targets):
        for stage, suite in suites.items():
            scores = _scores(suite["targets"][target]["trained"])
            _band(ax, np.arange(scores.shape[1]), scores, None, stage)
        ctrl = _scores(next(iter(suites.values()))["targets"][target]["random_init"])
        _band(ax, np.arange(ctrl.shape[1]), ctrl, "black", "random-init", "--")
        ax.set_title(target)
        ax.set_xlabel("layer")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    return save_figure(fig, out_dir, name)
