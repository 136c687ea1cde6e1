"""Claim 4: where fine-tuning changes the network, layer by layer.

Three views of the same question, per seed and per layer (0 = embeddings, 1…L = blocks, and
the unembedding head), each beside a control so "changed" has a scale:

- weight change ‖W_tuned − W_pre‖ / ‖W_pre‖ (Frobenius over all params of the layer);
- linear and debiased CKA between the pretrained and tuned residual streams on the same
  held-out games, beside the seed floor (CKA between two *pretrained* seeds): a layer whose CKA
  to its own pretrained self falls to the floor is as different as a network trained from
  another seed;
- the change in value-probe test R² (tuned − pretrained; probes fit separately, split by game).

The control run is continued next-token training from the same checkpoint: it separates "RL
changed this layer" from "any further training changes this layer".
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from itertools import combinations
from pathlib import Path

import jax
import numpy as np

from envs.dataset import Dataset, generate, split_by_game
from experiments.activations import LoadedModel
from experiments.probe import targets
from experiments.train import PROBE_SEED_OFFSET
from models.cka import debiased_linear_cka, linear_cka
from models.probes import probe_layers

# ---------------------------------------------------------------------------------- layers


def _key(entry):
    return getattr(entry, "key", getattr(entry, "idx", getattr(entry, "name", entry)))


def layer_of(path) -> str | None:
    """The layer a parameter belongs to: 'emb', 'block1'…'blockL', 'head', 'critic' or 'value'.

    Block i (0-based in the tree) is layer i+1 so that weight groups line up with the residual
    stream index (resid[i+1] is the stream after block i). The final LayerNorm feeds only the
    next-token heads, so it counts as the head. The separate critic trunk is 'critic' and the
    value head (on the critic or, in the shared variant, on the trunk) is 'value'.
    """
    keys = [_key(e) for e in path]
    if keys[0] == "trunk":
        if keys[1] in ("tok", "pos"):
            return "emb"
        if keys[1] == "blocks":
            return f"block{int(keys[2]) + 1}"
        return "head"  # ln_f
    if keys[0] == "heads":
        return "head"
    if keys[0] in ("critic", "value"):
        return keys[0]
    return None


def layer_names(num_layers: int, head: bool = True) -> list[str]:
    return ["emb"] + [f"block{i}" for i in range(1, num_layers + 1)] + (["head"] if head else [])


def _leaves(params):
    return jax.tree_util.tree_flatten_with_path(params)[0]


def sq_norms(params, layers: list[str]) -> np.ndarray:
    """float64[S, len(layers)]: per seed, the squared Frobenius norm of each layer's params."""
    leaves = _leaves(params)
    out = np.zeros((np.shape(leaves[0][1])[0], len(layers)))
    for path, leaf in leaves:
        name = layer_of(path)
        if name in layers:
            a = np.asarray(leaf, np.float64)
            out[:, layers.index(name)] += (a.reshape(a.shape[0], -1) ** 2).sum(1)
    return out


def diff(a, b):
    """a − b, leaf by leaf (same tree)."""
    return jax.tree.map(lambda x, y: np.asarray(x, np.float64) - np.asarray(y, np.float64), a, b)


def weight_change(pre_params, tuned_params, layers: list[str]) -> np.ndarray:
    """float64[S, len(layers)]: ‖W_tuned − W_pre‖ / ‖W_pre‖ per seed and layer."""
    return np.sqrt(sq_norms(diff(tuned_params, pre_params), layers) / sq_norms(pre_params, layers))


def check_compatible(a: LoadedModel, b: LoadedModel, what: str) -> None:
    """ValueError unless the two models have the same architecture, token layout and seeds."""
    if a.cfg.model != b.cfg.model:
        raise ValueError(f"{what}: model architectures differ ({a.cfg.model} vs {b.cfg.model})")
    if a.layout != b.layout:
        raise ValueError(f"{what}: token layouts differ ({a.layout} vs {b.layout})")
    if list(a.cfg.train.seeds) != list(b.cfg.train.seeds):
        raise ValueError(f"{what}: seeds differ ({a.cfg.train.seeds} vs {b.cfg.train.seeds}); "
                         "per-seed comparisons need the same seeds in the same order")
    if jax.tree.structure(a.params) != jax.tree.structure(b.params):
        raise ValueError(f"{what}: parameter trees differ")


# ---------------------------------------------------------------------------------- held-out games


@dataclass
class HeldOut:
    """Held-out games (a data seed no training run used) flattened to move positions."""

    data: Dataset
    mask_NxM: np.ndarray
    rows: list[np.ndarray]  # train/val/test row indices, split by game
    y: dict[str, np.ndarray]  # target -> float64[rows]
    cka_rows: np.ndarray  # a subsample of rows for CKA

    @classmethod
    def make(cls, model: LoadedModel, num_games: int, seed: int = 0, max_cka_rows: int = 8000) -> "HeldOut":
        if num_games < 10:
            raise ValueError(f"num_games must be at least 10, got {num_games}")
        data = generate(replace(model.cfg.data, num_games=num_games,
                                seed=model.cfg.data.seed + PROBE_SEED_OFFSET))
        mask = data["move_mask"]
        game_of_row = np.broadcast_to(np.arange(len(data))[:, None], mask.shape)[mask]
        rows = [np.flatnonzero(np.isin(game_of_row, s)) for s in split_by_game(len(data), (0.6, 0.2, 0.2), seed)]
        y = {k: v[mask].astype(np.float64) for k, v in targets(data).items()}
        n = int(mask.sum())
        cka_rows = np.sort(np.random.default_rng(seed).choice(n, min(n, max_cka_rows), replace=False))
        return cls(data, mask, rows, y, cka_rows)

    def resid(self, model: LoadedModel) -> np.ndarray:
        """float32[S, L+1, rows, D]: the residual stream at every move position."""
        return model.run_with_cache(self.data["tokens"], ("resid",))["resid"][:, :, self.mask_NxM]

    def probe_r2(self, resid_SxLxRxD: np.ndarray) -> dict[str, np.ndarray]:
        """target -> float64[S, L]: value-probe test R² per seed and layer."""
        return {k: np.array([probe_layers(r, y, *self.rows).test_r2 for r in resid_SxLxRxD])
                for k, y in self.y.items()}


def cka_by_layer(a_SxLxRxD: np.ndarray, b_SxLxRxD: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(linear, debiased) CKA float64[S, L] between matching seeds and layers."""
    s, n = a_SxLxRxD.shape[:2]
    lin, deb = np.zeros((s, n)), np.zeros((s, n))
    for i in range(s):
        for l in range(n):
            lin[i, l] = linear_cka(a_SxLxRxD[i, l], b_SxLxRxD[i, l])
            deb[i, l] = debiased_linear_cka(a_SxLxRxD[i, l], b_SxLxRxD[i, l])
    return lin, deb


def seed_floor(resid_SxLxRxD: np.ndarray) -> dict:
    """CKA between every pair of seeds of one model at each layer: the 'another seed' level."""
    pairs = list(combinations(range(resid_SxLxRxD.shape[0]), 2))
    lin, deb = (cka_by_layer(resid_SxLxRxD[[i for i, _ in pairs]], resid_SxLxRxD[[j for _, j in pairs]])
                if pairs else (np.zeros((0, resid_SxLxRxD.shape[1])),) * 2)
    return {"pairs": [list(p) for p in pairs], "cka": lin.tolist(), "cka_debiased": deb.tolist()}


# ---------------------------------------------------------------------------------- analysis


def compare(pre: LoadedModel, tuned: LoadedModel, held: HeldOut, pre_resid=None, pre_r2=None) -> dict:
    """Weight change, CKA and probe change of ``tuned`` against ``pre`` (same seeds), per seed."""
    check_compatible(pre, tuned, "compare")
    layers = layer_names(pre.cfg.model.num_layers)
    pre_resid = held.resid(pre) if pre_resid is None else pre_resid
    pre_r2 = held.probe_r2(pre_resid) if pre_r2 is None else pre_r2
    tuned_resid = held.resid(tuned)
    lin, deb = cka_by_layer(pre_resid[:, :, held.cka_rows], tuned_resid[:, :, held.cka_rows])
    tuned_r2 = held.probe_r2(tuned_resid)
    out = {"weight_change": weight_change(pre.params, tuned.params, layers).tolist(),
           "cka": lin.tolist(), "cka_debiased": deb.tolist(),
           "probe_r2": {k: v.tolist() for k, v in tuned_r2.items()},
           "delta_probe_r2": {k: (tuned_r2[k] - pre_r2[k]).tolist() for k in tuned_r2}}
    others = [n for n in ("critic", "value") if n in {layer_of(p) for p, _ in _leaves(pre.params)}]
    if others:  # not part of the policy, so not in the figure; for the record
        out["other_weight_change"] = dict(zip(others, weight_change(pre.params, tuned.params, others).T.tolist()))
    return out


def analyse_change(pretrained_dir, tuned_dir, control_dir=None, num_games: int = 2000, seed: int = 0) -> dict:
    """Claim 4 by layer: the tuned run (and the continued-pretraining control) vs the pretrained."""
    t0 = time.perf_counter()
    pre = LoadedModel.from_run(pretrained_dir)
    tuned = LoadedModel.from_run(tuned_dir)
    check_compatible(pre, tuned, f"{tuned_dir} vs {pretrained_dir}")
    control = None
    if control_dir is not None:
        control = LoadedModel.from_run(control_dir)
        check_compatible(pre, control, f"control {control_dir} vs {pretrained_dir}")
    layers = layer_names(pre.cfg.model.num_layers)
    held = HeldOut.make(pre, num_games, seed)
    pre_resid = held.resid(pre)
    pre_r2 = held.probe_r2(pre_resid)
    comparisons = {"tuned": compare(pre, tuned, held, pre_resid, pre_r2)}
    if control is not None:
        comparisons["control"] = compare(pre, control, held, pre_resid, pre_r2)
    return {
        "runs": {"pretrained": str(pretrained_dir), "tuned": str(tuned_dir),
                 "control": None if control_dir is None else str(control_dir)},
        "regimes": {"tuned": tuned.cfg.train.regime, "control": control and control.cfg.train.regime},
        "steps": {"pretrained": pre.step, "tuned": tuned.step, "control": control and control.step},
        "seeds": list(pre.cfg.train.seeds),
        "layers": layers,
        "resid_layers": layer_names(pre.cfg.model.num_layers, head=False),
        "num_games": num_games, "num_positions": int(held.mask_NxM.sum()), "cka_rows": len(held.cka_rows),
        "pretrained_probe_r2": {k: v.tolist() for k, v in pre_r2.items()},
        # ‖W_pre − W_init‖ / ‖W_init‖: how far pretraining moved each layer, the scale for ΔW/W.
        "pretraining_weight_change": weight_change(pre.at_init().params, pre.params, layers).tolist(),
        "seed_floor": seed_floor(pre_resid[:, :, held.cka_rows]),
        "comparisons": comparisons,
        "seconds": time.perf_counter() - t0,
    }


# ---------------------------------------------------------------------------------- figure

COLORS = {"tuned": "tab:purple", "control": "tab:blue"}


def plot_change(result: dict, out_dir, target: str = "expected_outcome",
                name: str = "f4_where_rl_changes") -> list[Path]:
    """F4: ΔW/W, CKA to the pretrained model (seed floor dashed) and Δ probe R², by layer."""
    from experiments.figures import _band, plt

    labels = {"tuned": f"RL-tuned ({result['regimes']['tuned']})",
              "control": "continued pretraining (control)"}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    x_w, x_r = np.arange(len(result["layers"])), np.arange(len(result["resid_layers"]))
    for kind, comp in result["comparisons"].items():
        _band(axes[0], x_w, comp["weight_change"], COLORS[kind], labels[kind])
        _band(axes[1], x_r, comp["cka"], COLORS[kind], labels[kind])
        _band(axes[2], x_r, comp["delta_probe_r2"][target], COLORS[kind], labels[kind])
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
    from experiments.figures import save_figure

    return save_figure(fig, out_dir, name)


# ---------------------------------------------------------------------------------- CLI


def _table(result: dict, target: str = "expected_outcome") -> str:
    """Seed means per layer, one row per layer."""
    comps = result["comparisons"]
    head = f"{'layer':7s}" + "".join(f" {k + ' ΔW/W':>14s} {k + ' CKA':>12s} {k + ' ΔR²':>12s}" for k in comps)
    lines = [head + f" {'seed floor':>11s}"]
    floor = np.asarray(result["seed_floor"]["cka"], float)
    for i, name in enumerate(result["layers"]):
        r = result["resid_layers"].index(name) if name in result["resid_layers"] else None
        row = f"{name:7s}"
        for c in comps.values():
            cka = f"{np.mean(np.asarray(c['cka'])[:, r]):12.3f}" if r is not None else f"{'':12s}"
            dr2 = f"{np.mean(np.asarray(c['delta_probe_r2'][target])[:, r]):+12.3f}" if r is not None else f"{'':12s}"
            row += f" {np.mean(np.asarray(c['weight_change'])[:, i]):14.4f} {cka} {dr2}"
        row += f" {floor[:, r].mean():11.3f}" if r is not None and len(floor) else ""
        lines.append(row)
    return "\n".join(lines)


def cmd_change(args) -> int:
    if args.games < 10:
        raise ValueError(f"--games must be at least 10, got {args.games}")
    result = analyse_change(args.pretrained, args.tuned, args.control, num_games=args.games)
    from experiments.figures import save_analysis

    save_analysis(result, args.out or Path(args.tuned) / "change.json", plot_change, _table(result))
    return 0


def add_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "change", help="claim 4: per-layer weight change, CKA and probe change after fine-tuning",
        description="Compare a fine-tuned run (e.g. pretrain_rl) with the pretrained run it started "
        "from, per seed and layer: relative weight change, linear/debiased CKA of the residual "
        "streams on held-out games (beside the seed-to-seed floor) and the change in value-probe "
        "R²; optionally the same for a continued-pretraining control. Writes JSON + figure F4.")
    p.add_argument("pretrained", help="run directory of the pretrained (next_token) run")
    p.add_argument("tuned", help="run directory of the fine-tuned run (same seeds and architecture)")
    p.add_argument("--control", help="continued next-token run from the same pretrained checkpoint")
    p.add_argument("--out", help="output JSON (default TUNED/change.json); the figure goes next to it")
    p.add_argument("--games", type=int, default=2000, help="held-out games")
    p.set_defaults(func=cmd_change)


def analyse_rl_amount(pretrained_dir, tuned_dir, timeline: dict | None = None) -> dict:
    """Claim 5: at every checkpoint of an RL fine-tuning run, the per-layer weight change from
    the pretrained model and (from the run's timeline) the value probe's R² per layer."""
    from experiments import checkpoints

    pre = LoadedModel.from_run(pretrained_dir)
    steps = checkpoints.steps(Path(tuned_dir) / "checkpoints")
    names = layer_names(pre.cfg.model.num_layers, head=False)
    dw = [weight_change(pre.params, LoadedModel.from_run(tuned_dir, step=s).params, names).tolist()
          for s in steps]
    out = {"steps": steps, "layer_names": names, "weight_change": dw}
    if timeline is not None and timeline.get("steps") == steps:
        out["value_r2"] = timeline["targets"]["value_mover"]
    return out
