"""The full probe suite: what is linearly decodable, where (layer), and when (checkpoint).

Targets (per move position, split by whole games, held-out data):
  value_mover / value_x     exact expected outcome, mover's frame / X's frame (regression, R²)
  minimax_mover / minimax_x minimax value, both frames (R²)
  outcome_mover             realised result of the game, mover's frame (R²)
  persona_mover / persona_x / persona_o   which persona plays (accuracy; Bayes ceiling beside it)
  board_mover / board_xo    every cell as mine/theirs/empty or X/O/empty (mean accuracy over cells)

Controls for every score (Hewitt & Liang 2019): the random-init network, the step-0
checkpoint (for pretrain_rl that is the pretrained simulator), labels shuffled across games at
the same move number, and for classification a *control task* — labels that are a fixed random
function of (last move, move number), which a probe can only fit by memorising; selectivity =
score − control-task score. Linear classification probes are ridge on one-hot targets read by
argmax; the small-MLP probes (``MLP_TARGETS``, a second probe type) are trained with
cross-entropy or squared error (``models.probes.fit_probe_stack``).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from envs.dataset import Dataset, generate, split_by_game
from experiments import checkpoints
from experiments.activations import LoadedModel
from experiments.train import PROBE_SEED_OFFSET
from models.probes import fit_probe_stack, probe_layers, shuffled

REGRESSION = ("value_mover", "value_x", "minimax_mover", "minimax_x", "outcome_mover")
CLASSIFICATION = ("persona_mover", "persona_x", "persona_o", "board_mover", "board_xo")
# Small-MLP probes (probe type is an axis of F2) on both label frames of the main targets,
# each beside the random-init network and its selectivity control.
MLP_TARGETS = ("value_mover", "value_x", "persona_mover", "persona_x", "board_mover", "board_xo")


def held_out(cfg, num_games: int) -> Dataset:
    return generate(replace(cfg.data, num_games=num_games, seed=cfg.data.seed + PROBE_SEED_OFFSET))


class Rows:
    """Positions of a dataset flattened to rows, with the game split and per-row labels."""

    def __init__(self, data: Dataset, seed: int = 0):
        self.data = data
        self.mask = data["move_mask"]
        n, m = self.mask.shape
        self.game = np.broadcast_to(np.arange(n)[:, None], (n, m))[self.mask]
        self.move = np.broadcast_to(np.arange(m)[None], (n, m))[self.mask]
        splits = split_by_game(n, (0.6, 0.2, 0.2), seed)
        self.splits = [np.flatnonzero(np.isin(self.game, s)) for s in splits]

    def labels(self) -> dict[str, tuple[str, np.ndarray, int]]:
        """name -> (kind, y[rows] (ints for classes), classes per output)."""
        d, mask = self.data, self.mask
        player = d["player"][mask]
        sign = np.where(player == 0, 1.0, -1.0)
        num_p = d["posterior_x"].shape[-1]
        px = np.broadcast_to(d["persona_x"][:, None], mask.shape)[mask]
        po = np.broadcast_to(d["persona_o"][:, None], mask.shape)[mask]
        outcome = np.broadcast_to(d["outcome_x"][:, None], mask.shape)[mask]
        board = d["boards"][mask].astype(np.int64)  # 0 empty, 1 X, 2 O
        own = player[:, None] + 1
        board_mover = np.where(board == 0, 0, np.where(board == own, 1, 2))
        return {
            "value_mover": ("reg", d["expected_x"][mask] * sign, 0),
            "value_x": ("reg", d["expected_x"][mask], 0),
            "minimax_mover": ("reg", d["minimax_x"][mask] * sign, 0),
            "minimax_x": ("reg", d["minimax_x"][mask], 0),
            "outcome_mover": ("reg", outcome * sign, 0),
            "persona_mover": ("cls", np.where(player == 0, px, po)[:, None], num_p),
            "persona_x": ("cls", px[:, None], num_p),
            "persona_o": ("cls", po[:, None], num_p),
            "board_mover": ("cls", board_mover, 3),
            "board_xo": ("cls", board, 3),
        }

    def control_task(self, y_cls: np.ndarray, classes: int, seed: int) -> np.ndarray:
        """Labels fixed by (last move token, move number) at random: memorisable, not decodable."""
        tokens = self.data["tokens"][self.mask.nonzero()[0]]
        last = tokens[np.arange(len(self.move)), self.data.layout.prefix_len - 1 + self.move]
        key = last.astype(np.int64) * 64 + self.move
        rng = np.random.default_rng(seed)
        table = rng.integers(0, classes, size=(key.max() + 1, y_cls.shape[1]))
        return table[key]

    def bayes_ceiling(self) -> dict[str, np.ndarray]:
        """Accuracy of the exact posterior's argmax per move number (no probe can beat it)."""
        d, mask = self.data, self.mask
        out = {}
        for side, post_key, true_key in (("x", "posterior_x", "persona_x"), ("o", "posterior_o", "persona_o")):
            hit = (d[post_key].argmax(-1) == d[true_key][:, None]) & mask
            out[side] = hit.sum(0) / np.maximum(mask.sum(0), 1)
        return out


def _one_hot(y_cls: np.ndarray, classes: int) -> np.ndarray:
    return np.eye(classes)[y_cls].reshape(len(y_cls), -1)


def _accuracy(probe, x, y_cls, classes, rows_by_move=None):
    pred = probe.predict(x).reshape(len(x), y_cls.shape[1], classes).argmax(-1)
    hit = (pred == y_cls).mean(1)
    return float(hit.mean()), hit


def score_layers(resid_LxNxD: np.ndarray, kind: str, y, classes: int, rows: Rows) -> dict:
    """Test score per layer (R² or accuracy) and, for classes, accuracy per move number."""
    tr, va, te = rows.splits
    if kind == "reg":
        return {"score": probe_layers(resid_LxNxD, y, tr, va, te).test_r2.tolist()}
    fit = probe_layers(resid_LxNxD, _one_hot(y, classes), tr, va, te)
    scores, by_move = [], []
    for layer, probe in enumerate(fit.probes):
        acc, hit = _accuracy(probe, resid_LxNxD[layer, te], y[te], classes)
        scores.append(acc)
        by_move.append(_by_move(hit, rows))
    return {"score": scores, "by_move": by_move}


def _by_move(hit_T: np.ndarray, rows: Rows) -> list[float]:
    """Mean of a per-test-row score at each move number (nan where no test row has it)."""
    moves = rows.move[rows.splits[2]]
    return [float(hit_T[moves == t].mean()) if np.any(moves == t) else float("nan")
            for t in range(rows.mask.shape[1])]


def score_layers_mlp(resid_SxLxNxD: np.ndarray, kind: str, y, classes: int, rows: Rows) -> list[dict]:
    """Like ``score_layers`` with a small MLP probe, every seed × layer fit in one batched call."""
    s, layers = resid_SxLxNxD.shape[:2]
    flat = resid_SxLxNxD.reshape(s * layers, *resid_SxLxNxD.shape[2:])
    fit = fit_probe_stack(flat, y, *rows.splits, classes=classes if kind == "cls" else 0)
    score = fit.test_score.reshape(s, layers)
    if kind == "reg":
        return [{"score": score[i].tolist()} for i in range(s)]
    te = rows.splits[2]
    hit = (fit.test_pred == np.asarray(y)[te]).mean(-1).reshape(s, layers, len(te))
    return [{"score": score[i].tolist(), "by_move": [_by_move(hit[i, l], rows) for l in range(layers)]}
            for i in range(s)]


def probe_suite(model: LoadedModel, rows: Rows, controls: dict[str, LoadedModel],
                targets=REGRESSION + CLASSIFICATION, seed: int = 0, mlp_targets=MLP_TARGETS) -> dict:
    """{target: {"trained"|control name|"shuffled"|"control_task": per-seed results,
    "mlp": the same for the MLP probe (targets in ``mlp_targets``; no step-0 control)}}."""
    tokens = rows.data["tokens"]
    resid = {"trained": model.run_with_cache(tokens, ("resid",))["resid"][:, :, rows.mask]}
    for name, ctrl in controls.items():
        resid[name] = ctrl.run_with_cache(tokens, ("resid",))["resid"][:, :, rows.mask]
    labels = rows.labels()
    rng = np.random.default_rng(seed)
    out = {}
    for target in targets:
        kind, y, classes = labels[target]
        entry: dict[str, list] = {k: [] for k in list(resid) + ["shuffled"] + (["control_task"] if kind == "cls" else [])}
        y_shuf = shuffled(y, rows.move, rng)
        y_ctrl = rows.control_task(y, classes, seed) if kind == "cls" else None
        for s in range(model.num_seeds):
            for name, r in resid.items():
                entry[name].append(score_layers(r[s], kind, y, classes, rows))
            entry["shuffled"].append(score_layers(resid["trained"][s], kind, y_shuf, classes, rows))
            if kind == "cls":
                entry["control_task"].append(score_layers(resid["trained"][s], kind, y_ctrl, classes, rows))
        out[target] = {"kind": "r2" if kind == "reg" else "accuracy", **entry}
        if target in mlp_targets:
            control, y_sel = ("control_task", y_ctrl) if kind == "cls" else ("shuffled", y_shuf)
            mlp = {"trained": score_layers_mlp(resid["trained"], kind, y, classes, rows),
                   control: score_layers_mlp(resid["trained"], kind, y_sel, classes, rows)}
            if "random_init" in resid:
                mlp["random_init"] = score_layers_mlp(resid["random_init"], kind, y, classes, rows)
            out[target]["mlp"] = mlp
    return out


def analyse_probes(run_dir: str | Path, num_games: int = 2000, targets=REGRESSION + CLASSIFICATION,
                   mlp_targets=MLP_TARGETS) -> dict:
    """The suite on a run's final checkpoint with every control; writes RUN/probe_suite.json."""
    model = LoadedModel.from_run(run_dir)
    rows = Rows(held_out(model.cfg, num_games))
    controls = {"random_init": model.at_init()}
    first = checkpoints.steps(Path(run_dir) / "checkpoints")[0]
    if first != model.step:
        controls["step0"] = LoadedModel.from_run(run_dir, step=first)
    result = {"run": str(run_dir), "regime": model.cfg.train.regime, "seeds": list(model.cfg.train.seeds),
              "targets": probe_suite(model, rows, controls, targets, mlp_targets=mlp_targets),
              "bayes_ceiling": {k: v.tolist() for k, v in rows.bayes_ceiling().items()},
              "persona_names": list(model.layout.persona_names)}
    (Path(run_dir) / "probe_suite.json").write_text(json.dumps(result))
    return result


def analyse_timeline(run_dir: str | Path, num_games: int = 2000,
                     targets=("value_mover", "minimax_mover", "board_mover")) -> dict:
    """What-when-where: probe scores at every saved checkpoint × layer (McGrath et al. 2022)."""
    ckdir = Path(run_dir) / "checkpoints"
    steps = checkpoints.steps(ckdir)
    model = LoadedModel.from_run(run_dir)
    rows = Rows(held_out(model.cfg, num_games))
    result = {"run": str(run_dir), "regime": model.cfg.train.regime, "steps": steps, "targets": {}}
    for step in steps:
        m = LoadedModel.from_run(run_dir, step=step)
        suite = probe_suite(m, rows, {}, targets, mlp_targets=())
        for t in targets:
            result["targets"].setdefault(t, []).append([r["score"] for r in suite[t]["trained"]])
    # result["targets"][t]: [checkpoint][seed][layer]
    (Path(run_dir) / "timeline.json").write_text(json.dumps(result))
    return result
