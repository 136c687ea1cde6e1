"""`agentsim scaling`: the compute a bar needs, from runs' finals. Synthetic run directories with a
planted power law: the fit recovers its exponent and the crossing exactly; a measure that does not
fall gives no extrapolation; a run that meets the bar is named as meeting it; runs of two settings
are fitted apart."""

import json

import numpy as np
import pytest

from agentsim.experiments import cli
from agentsim.experiments.config import load_config
from agentsim.experiments.cost import stage_cost
from agentsim.experiments.runs import strict_json
from agentsim.experiments.scaling import compute_to_reach, label_series, reach_by_series, read_point


def fake_run(path, steps: int, gaps: list[float], losses=None, extra=()):
    """A finished next_token run directory (quick config, ``steps`` steps) with these final gaps."""
    cfg = load_config("quick", overrides=["train.regime='next_token'", f"train.steps={steps}", "train.chunk=1", *extra])
    path.mkdir(parents=True)
    strict_json.write(path / "config.json", cfg.to_dict())
    (path / "status.json").write_text(json.dumps({"status": "finished", "step": steps}))
    matches = {"eval/loss_vs_perfect": losses or [0.5, 0.5, 0.5]}
    (path / "final.json").write_text(json.dumps({"simulator": {"gap": gaps}, "matches": matches}))
    rows = [{"step": s, "seed": i, "eval/simulator_gap": g * 2}
            for s in (steps // 2, steps) for i, g in enumerate(gaps)]
    (path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path, stage_cost("x", cfg).flops / 3


def test_planted_power_law_is_recovered(tmp_path):
    # gap = 0.04 · (F / F₀)^-0.5: a 4x compute run has half the gap.
    (a, f0), (b, f1) = fake_run(tmp_path / "a", 100, [0.04] * 3), fake_run(tmp_path / "b", 400, [0.02] * 3)
    assert f1 == pytest.approx(4 * f0)
    points = [read_point(a, "simulator_gap"), read_point(b, "simulator_gap")]
    assert points[0].flops == pytest.approx(f0) and points[0].curve[0] == (pytest.approx(f0 / 2), 0.08)
    reach = compute_to_reach(points, 0.01)
    assert reach["fit"]["slope"] == pytest.approx(-0.5)
    assert reach["needed_flops"] == pytest.approx(16 * f0) and reach["times_largest"] == pytest.approx(4)
    assert reach["needed_steps"] == 1600  # the 400-step run's length, scaled as its compute
    assert reach["met_at"] is None and "extrapolated" in reach["note"]
    met = compute_to_reach(points, 0.03)  # the 4x run meets it
    assert met["met_at"] == pytest.approx(f1) and met["needed_flops"] is None and met["note"] == "met by a measured run"


def test_no_fall_and_one_level_give_no_extrapolation(tmp_path):
    (a, _), (b, _) = fake_run(tmp_path / "a", 100, [0.03] * 3), fake_run(tmp_path / "b", 400, [0.035] * 3)
    flat = compute_to_reach([read_point(a, "simulator_gap"), read_point(b, "simulator_gap")], 0.02)
    assert flat["needed_flops"] is None and "not falling" in flat["note"]
    one = compute_to_reach([read_point(a, "simulator_gap")], 0.02)
    assert one["fit"] is None and "no fit" in one["note"]


def test_cli_table_figure_and_bad_input(tmp_path, capsys):
    a, _ = fake_run(tmp_path / "a", 100, [0.04, 0.05, 0.03])
    b, _ = fake_run(tmp_path / "b", 400, [0.02, 0.025, 0.015])
    out = tmp_path / "s.json"
    assert cli.main(["scaling", str(a), str(b), "--target", "0.01", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "FLOPs^-0.500" in text and "extrapolated: 4× the largest run's compute" in text
    assert "train.steps ≈ 1,600" in text
    res = json.loads(out.read_text())
    assert [p["mean"] for p in res["points"]] == pytest.approx([0.04, 0.02])
    assert list(res["series"]) == [""] and res["series"][""]["fit"]["slope"] == pytest.approx(-0.5)
    assert (tmp_path / "s.png").exists() and (tmp_path / "s.pdf").exists()
    assert cli.main(["scaling", str(a), "--target", "0.01", "--measure", "bogus"]) == 2
    assert "unknown --measure" in capsys.readouterr().err
    assert cli.main(["scaling", str(tmp_path / "nope"), "--target", "0.01"]) == 2
    assert cli.main(["scaling", str(a), "--target", "0.01", "--measure", "simulator_gap_unseen"]) == 2
    assert "has no final simulator_gap_unseen" in capsys.readouterr().err
    losses = compute_to_reach([read_point(a, "loss_vs_perfect"), read_point(b, "loss_vs_perfect")], 0.01)
    assert np.isfinite(losses["fit"]["slope"]) and "not falling" in losses["note"]  # 0.5 at both sizes


def test_two_settings_are_two_series(tmp_path, capsys):
    # 2 layers: gap ∝ F^-0.5; 4 layers: ∝ F^-0.25. Runs that differ in length, chunk, logging or
    # seeds share a series; one fit across both settings would give neither exponent.
    two = [fake_run(tmp_path / "a", 100, [0.04] * 3, extra=["train.eval_every=3"])[0],
           fake_run(tmp_path / "b", 400, [0.02] * 3, extra=["train.chunk=4", "train.seeds=[5,6,7]"])[0]]
    four = [fake_run(tmp_path / "c", 100, [0.08] * 3, extra=["model.num_layers=4"])[0],
            fake_run(tmp_path / "d", 1600, [0.04] * 3, extra=["model.num_layers=4", "train.log_checkpoints=3"])[0]]
    points = label_series([read_point(r, "simulator_gap") for r in two + four])
    assert [p.series for p in points] == ["model.num_layers=2"] * 2 + ["model.num_layers=4"] * 2
    reach = reach_by_series(points, 0.01)
    assert reach["model.num_layers=2"]["fit"]["slope"] == pytest.approx(-0.5)
    assert reach["model.num_layers=4"]["fit"]["slope"] == pytest.approx(-0.25)
    f4 = points[2].flops * 8 ** 4  # 0.08 falls to 0.01 over 8⁴ of its compute
    assert reach["model.num_layers=4"]["needed_flops"] == pytest.approx(f4)
    assert label_series([read_point(r, "simulator_gap") for r in two])[0].series == ""
    out = tmp_path / "grid.json"
    assert cli.main(["scaling", *map(str, two + four), "--target", "0.01", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "series model.num_layers=4" in text and "FLOPs^-0.250" in text and "FLOPs^-0.500" in text
    assert set(json.loads(out.read_text())["series"]) == {"model.num_layers=2", "model.num_layers=4"}
    assert (tmp_path / "grid.png").exists()
