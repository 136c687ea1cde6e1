"""The JSON files the project writes are strict JSON: a number that is not finite is null, never
NaN or Infinity, which most readers other than Python's own reject."""

import ast
import json
import math
from pathlib import Path

import numpy as np
import pytest

from agentsim.experiments.report import reproduce as reproduce_module
from agentsim.experiments.runs import strict_json
from agentsim.experiments.runs.run import Run

ROOT = Path(__file__).resolve().parents[1]


def strict_loads(text: str):
    def reject(constant):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=reject)


def test_non_finite_numbers_become_null():
    obj = {"a": float("nan"), "b": [1.5, float("inf"), -float("inf")], "c": np.float32("nan"),
           "d": np.array([[0.25, np.nan]]), "e": (np.int64(3), np.bool_(True)), "f": "NaN"}
    with pytest.raises(ValueError):
        strict_loads(json.dumps(obj, default=lambda x: x.tolist()))  # what json.dumps writes
    assert strict_loads(strict_json.dumps(obj)) == {"a": None, "b": [1.5, None, None], "c": None,
                                                     "d": [[0.25, None]], "e": [3, True], "f": "NaN"}


def test_reproduce_writes_strict_results(tmp_path, monkeypatch):
    """Claims a preset cannot judge carry NaN intervals: results.json holds them as null."""
    final = {"seeds": [0, 1], "matches": {"eval/loss_vs_random": [0.2, 0.3]},
             "simulator": {"move_loss": [1.5, 1.6], "bayes_optimal_loss": 1.4, "gap": [0.1, 0.2],
                           "gap_unseen": [float("nan"), float("nan")]}}

    def fake_train(cfg, run_dir, **kwargs):
        Run(run_dir, cfg).set_status("finished")
        strict_json.write(Path(run_dir) / "final.json", final)

    monkeypatch.setattr(reproduce_module, "train", fake_train)
    monkeypatch.setattr(reproduce_module, "run_analyses", lambda *a, **k: ({"value": {"r2": float("nan")}}, []))
    out = tmp_path / "out"
    results = reproduce_module.reproduce("tiny", out, overrides=("log.wandb='disabled'",), on_message=lambda m: None)
    assert math.isnan(results["claims"]["3"]["interval"]["mean"])
    written = strict_loads((out / "results.json").read_text())
    assert written["claims"]["3"]["interval"]["mean"] is None
    assert strict_loads((out / "analyses.json").read_text()) == {"value": {"r2": None}}
    for name in ("config.json", "status.json", "final.json"):
        strict_loads((out / "runs" / "next_token" / name).read_text())
    assert "| –" in (out / "REPORT.md").read_text()  # a null reads as a missing number


def test_no_module_writes_a_file_with_plain_json_dumps():
    """Every results file goes through ``strict_json``: ``x.write_text(json.dumps(...))`` is the
    pattern that wrote NaN before."""
    offenders = []
    for path in sorted(p for d in ("envs", "models", "experiments") for p in (ROOT / d).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "write_text"
                    and any(isinstance(a, ast.Call) and ast.unparse(a.func) == "json.dumps" for a in node.args)):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, offenders
