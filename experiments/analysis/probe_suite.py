"""The full probe suite: what is decodable (linear and small-MLP probes) and where (layer).

Targets (per move position, split by whole games, held-out data):
  value_mover / value_x     exact expected outcome, mover's frame / X's frame (regression, R²)
  minimax_mover / minimax_x minimax value, both frames (R²)
  outcome_mover             realised result of the game, mover's frame (R²)
  persona_mover / persona_x / persona_o   which persona plays (accuracy; Bayes ceiling beside it)
  board_mover / board_xo    every cell as mine/theirs/empty or X/O/empty (mean accuracy over cells)

Controls for every score (Hewitt & Liang 2019): the random-init network, the step-0
checkpoint (for pretrain_rl that is the pretrained simulator), labels shuffled across games at
the same move number, and for classification a *control task* — labels that are a fixed random
function of (last move, move number), which a probe can only fit by memorising; selectivity
compares each task with its own ceiling (the report: score / Bayes ceiling − control-task score,
whose ceiling is 1). Linear classification probes are ridge on one-hot targets read by
argmax; the small-MLP probes (``MLP_TARGETS``, a second probe type) are trained with
cross-entropy or squared error (``models.probes.fit_probe_stack``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agentsim.experiments.analysis.heldout import HeldOut, held_out
from agentsim.experiments.analysis.model import LoadedModel
from agentsim.experiments.runs import checkpoints
from agentsim.experiments.statistics import weighted_r2
from agentsim.models.probes import fit_probe_stack, probe_layers, shuffled

REGRESSION = ("value_mover", "value_x", "minimax_mover", "minimax_x", "outcome_mover")
CLASSIFICATION = ("persona_mover", "persona_x", "persona_o", "board_mover", "board_xo")
# Small-MLP probes (probe type is an axis of F2) on both label frames of the main targets,
# each beside the random-init network and its selectivity control.
MLP_TARGETS = ("value_mover", "value_x", "persona_mover", "persona_x", "board_mover", "board_xo")
JUDGED = ("persona_mover",)  # read by a claim (2): scored under a game bootstrap too


def seen_summary(rows: HeldOut) -> dict | None:
    """How many held-out test positions occur in the training games (``HeldOut.seen``)."""
    if rows.seen is None:
        return None
    te = rows.splits[2]
    return {"test_rows": int(len(te)), "test_rows_unseen": int((~rows.seen[te]).sum()),
            "rows": int(len(rows.seen)), "rows_unseen": int((~rows.seen).sum())}


def _one_hot(y_cls: np.ndarray, classes: int) -> np.ndarray:
    return np.eye(classes)[y_cls].reshape(len(y_cls), -1)


def _accuracy(probe, x, y_cls, classes):
    pred = probe.predict(x).reshape(len(x), y_cls.shape[1], classes).argmax(-1)
    hit = (pred == y_cls).mean(1)
    return float(hit.mean()), hit


def score_layers(resid_LxNxD: np.ndarray, kind: str, y, classes: int, rows: HeldOut, boot: bool = False) -> dict:
    """Per layer: test score (R² or accuracy), validation score (for choosing a layer) and, for
    classes, accuracy per move number; ``boot`` adds the test score under each game-level
    resample of the test games (``HeldOut.boot_weights``), [B, layers]; where the rows know which
    positions occur in the training games (``HeldOut.seen``), ``unseen_score`` is the same
    probes' test score on the positions never seen there (nan if none)."""
    tr, va, te = rows.splits
    if kind == "reg":
        fit = probe_layers(resid_LxNxD, y, tr, va, te)
        out = {"score": fit.test_r2.tolist(), "val_score": fit.val_r2.tolist()}
        unseen = None if rows.seen is None else ~rows.seen[te]
        if boot or unseen is not None:
            pred = np.stack([p.predict(resid_LxNxD[l, te]) for l, p in enumerate(fit.probes)])
        if boot:
            out["boot_score"] = weighted_r2(np.asarray(y, float)[te], pred, rows.boot_weights).tolist()
        if unseen is not None:  # the same probes, on the test positions never seen in training
            out["unseen_score"] = weighted_r2(np.asarray(y, float)[te], pred, unseen[None].astype(float))[0].tolist()
        return out
    fit = probe_layers(resid_LxNxD, _one_hot(y, classes), tr, va, te)
    scores, val, by_move, hits = [], [], [], []
    for layer, probe in enumerate(fit.probes):
        acc, hit = _accuracy(probe, resid_LxNxD[layer, te], y[te], classes)
        scores.append(acc)
        val.append(_accuracy(probe, resid_LxNxD[layer, va], y[va], classes)[0])
        by_move.append(rows.by_move(hit))
        hits.append(hit)
    out = {"score": scores, "val_score": val, "by_move": by_move}
    if rows.seen is not None:  # the same probes' accuracy on the test positions never seen in training
        unseen = ~rows.seen[te]
        out["unseen_score"] = [float(h[unseen].mean()) if unseen.any() else float("nan") for h in hits]
    if boot:
        w = rows.boot_weights
        out["boot_score"] = ((w @ np.stack(hits).T) / w.sum(1, keepdims=True)).tolist()
    return out


def score_layers_mlp(resid_SxLxNxD: np.ndarray, kind: str, y, classes: int, rows: HeldOut) -> list[dict]:
    """Like ``score_layers`` with a small MLP probe, every seed × layer fit in one batched call."""
    s, layers = resid_SxLxNxD.shape[:2]
    flat = resid_SxLxNxD.reshape(s * layers, *resid_SxLxNxD.shape[2:])
    fit = fit_probe_stack(flat, y, *rows.splits, classes=classes if kind == "cls" else 0)
    score = fit.test_score.reshape(s, layers)
    if kind == "reg":
        return [{"score": score[i].tolist()} for i in range(s)]
    te = rows.splits[2]
    hit = (fit.test_pred == np.asarray(y)[te]).mean(-1).reshape(s, layers, len(te))
    return [{"score": score[i].tolist(), "by_move": [rows.by_move(hit[i, l]) for l in range(layers)]}
            for i in range(s)]


def probe_suite(model: LoadedModel, rows: HeldOut, controls: dict[str, LoadedModel],
                targets=REGRESSION + CLASSIFICATION, seed: int = 0, mlp_targets=MLP_TARGETS,
                boot_targets=JUDGED) -> dict:
    """{target: {"trained"|control name|"shuffled"|"control_task": per-seed results,
    "mlp": the same for the MLP probe (targets in ``mlp_targets``; no step-0 control)}}; targets
    in ``boot_targets`` carry game-bootstrap scores for the trained network and its controls."""
    tokens = rows.tokens
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
                entry[name].append(score_layers(r[s], kind, y, classes, rows, boot=target in boot_targets))
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
    """The suite on a run's final checkpoint with every control."""
    model = LoadedModel.from_run(run_dir)
    rows = held_out(model.cfg, num_games, mark_seen=True, run_dir=run_dir)
    controls = {"random_init": model.at_init()}
    if model.cfg.train.regime == "pretrain_rl" or model.cfg.train.init_from:
        # The first checkpoint of a run that starts from another run's params is that run (for
        # pretrain_rl, the simulator); for runs from scratch it would repeat random init.
        first = checkpoints.steps(Path(run_dir) / "checkpoints")[0]
        controls["step0"] = LoadedModel.from_run(run_dir, step=first)
    labels = rows.labels()
    targets = tuple(t for t in targets if t in labels)  # a board too big to solve has no exact values
    result = {"run": str(run_dir), "regime": model.cfg.train.regime, "seeds": list(model.cfg.train.seeds),
              "targets": probe_suite(model, rows, controls, targets,
                                     mlp_targets=tuple(t for t in mlp_targets if t in labels)),
              "seen": seen_summary(rows),
              "bayes_ceiling": {k: v.tolist() for k, v in rows.bayes_ceiling().items()},
              "persona_names": list(model.layout.persona_names)}
    return result
