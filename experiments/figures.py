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
    fig.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.pdf"]
    for p in paths:
        fig.savefig(p, dpi=150)
    plt.close(fig)
    return paths
