"""The run store on hand-written run directories with known metrics: grouping, statistics,
figures, filters and the `runs` / `compare` commands."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from agentsim.experiments import cli
from agentsim.experiments.config import Config, LogConfig
from agentsim.experiments.report.figures import plot_comparison
from agentsim.experiments.runs.run import RunError
from agentsim.experiments.runs.store import compare, find_runs, list_runs

METRIC = "eval/simulator_gap"
STEPS = (10, 20, 30)
FINALS = {  # run dir -> seed -> final value of METRIC
    "a1": {0: 1.0, 1: 2.0},
    "a2": {2: 4.0, 3: 9.0},
    "b1": {0: 0.5, 1: 1.5, 2: 2.5, 3: 3.5, 4: 100.0},
}


def _config(num_layers=2, regime="next_token", seeds=(0, 1), project="agentsim", lr=3e-3) -> Config:
    c = Config()
    return replace(c, model=replace(c.model, num_layers=num_layers),
                   train=replace(c.train, regime=regime, seeds=tuple(seeds), lr=lr),
                   log=LogConfig(wandb="disabled", project=project))


def _write_run(path: Path, cfg: Config, values: dict[int, list[float]], status: str, metric: str = METRIC,
               walls=(1.0, 2.0, 3.0)) -> None:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    with open(path / "metrics.jsonl", "w") as f:
        for i, step in enumerate(STEPS):
            for seed in cfg.train.seeds:
                f.write(json.dumps({"step": step, "seed": seed, "losses/loss": 3.0 - i, metric: values[seed][i]}) + "\n")
    with open(path / "timing.jsonl", "w") as f:
        for step, wall in zip(STEPS, walls):
            f.write(json.dumps({"step": step, "wall_time": wall}) + "\n")
    (path / "status.json").write_text(json.dumps({"status": status, "time": 0.0, "step": STEPS[-1]}))


def _curve(final: float) -> list[float]:
    return [final + 2.0, final + 1.0, final]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("store")
    # config A in two run directories (different seeds, different wandb project: still one group)
    _write_run(root / "a1", _config(seeds=(0, 1)), {s: _curve(v) for s, v in FINALS["a1"].items()}, "finished")
    _write_run(root / "a2", _config(seeds=(2, 3), project="other"),
               {s: _curve(v) for s, v in FINALS["a2"].items()}, "finished", walls=(2.0, 4.0, 6.0))
    # config B: another architecture
    _write_run(root / "b1", _config(num_layers=3, seeds=(0, 1, 2, 3, 4)),
               {s: _curve(v) for s, v in FINALS["b1"].items()}, "failed")
    # an RL run without METRIC
    _write_run(root / "nested" / "c1", _config(regime="rl", seeds=(0,)), {0: [0.1, 0.2, 0.3]}, "interrupted",
               metric="charts/episodic_return")
    (root / "not_a_run").mkdir()
    (root / "not_a_run" / "notes.txt").write_text("hello")
    return root


@pytest.fixture(scope="module")
def groups(root):
    return compare([str(root)], METRIC)


def _exact_bootstrap_quantiles(values, qs):
    """Quantiles of the exact bootstrap distribution of the mean (all n^n resamples)."""
    v = np.asarray(values, float)
    means = np.sort([np.mean(c) for c in itertools.product(v, repeat=len(v))])
    return [means[min(len(means) - 1, int(q * len(means)))] for q in qs]


def test_find_runs_recursive_and_glob(root):
    found = {p.name for p in find_runs([str(root)])}
    assert found == {"a1", "a2", "b1", "c1"}
    assert {p.name for p in find_runs([str(root / "a*")])} == {"a1", "a2"}
    with pytest.raises(RunError):
        find_runs([str(root / "zzz*")])
    with pytest.raises(RunError):
        find_runs([str(root / "not_a_run")])


def test_grouping_pools_seeds_and_separates_configs(groups, root):
    assert len(groups) == 2  # c1 lacks the metric
    by_layers = {("num_layers=2" in g["label"]): g for g in groups}
    a, b = by_layers[True], by_layers[False]
    assert "model.num_layers=3" in b["label"] and "model.num_layers=2" in a["label"]
    assert "project" not in a["label"] and "seeds" not in a["label"]
    assert sorted(Path(p).name for p in a["runs"]) == ["a1", "a2"]
    assert [Path(p).name for p in b["runs"]] == ["b1"]
    assert a["n_seeds"] == 4 and sorted(a["final"]) == [1.0, 2.0, 4.0, 9.0]
    assert b["n_seeds"] == 5 and sorted(b["final"]) == [0.5, 1.5, 2.5, 3.5, 100.0]


def test_statistics_equal_hand_computed_values(groups):
    by_n = {g["n_seeds"]: g for g in groups}
    a, b = by_n[4], by_n[5]
    # A: 1, 2, 4, 9
    assert a["mean"] == pytest.approx(4.0)
    assert a["std"] == pytest.approx(np.sqrt((9 + 4 + 0 + 25) / 4))  # population std
    assert a["iqm"] == pytest.approx(3.0)  # mean of the middle two
    # B: 0.5, 1.5, 2.5, 3.5, 100 -> trim one from each end
    assert b["mean"] == pytest.approx(21.6)
    assert b["iqm"] == pytest.approx(2.5)
    assert b["std"] == pytest.approx(np.std([0.5, 1.5, 2.5, 3.5, 100.0]))
    # 95% percentile-bootstrap CI of the mean: compare with the exact bootstrap distribution
    for g in (a, b):
        lo1, lo5, hi95, hi99 = _exact_bootstrap_quantiles(g["final"], (0.01, 0.05, 0.95, 0.99))
        assert lo1 <= g["ci_low"] <= lo5, (g["ci_low"], lo1, lo5)
        assert hi95 <= g["ci_high"] <= hi99, (g["ci_high"], hi95, hi99)
        assert min(g["final"]) <= g["ci_low"] < g["mean"] < g["ci_high"] <= max(g["final"])


def test_single_seed_and_constant_groups(tmp_path):
    _write_run(tmp_path / "one", _config(seeds=(0,)), {0: [1.0, 1.0, 5.0]}, "finished")
    _write_run(tmp_path / "flat", _config(num_layers=4, seeds=(0, 1, 2)), {s: [2.0, 2.0, 2.0] for s in range(3)},
               "finished")
    gs = {g["n_seeds"]: g for g in compare([str(tmp_path)], METRIC)}
    one, flat = gs[1], gs[3]
    assert one["mean"] == one["iqm"] == 5.0 and one["std"] == 0.0
    assert np.isnan(one["ci_low"]) and np.isnan(one["ci_high"])  # no CI from one seed
    assert flat["ci_low"] == flat["ci_high"] == flat["mean"] == 2.0


def test_curves_carry_steps_and_wall_times(groups):
    a = next(g for g in groups if g["n_seeds"] == 4)
    assert len(a["curves"]) == 4
    for steps, walls, values in a["curves"]:
        assert list(steps) == list(STEPS)
        assert list(walls) in ([1.0, 2.0, 3.0], [2.0, 4.0, 6.0])
        assert values[-1] in FINALS["a1"].values() or values[-1] in FINALS["a2"].values()


def test_plot_comparison_writes_png_and_pdf(groups, tmp_path):
    paths = plot_comparison(groups, METRIC, tmp_path / "figs" / "gap")
    assert sorted(p.name for p in paths) == ["gap.pdf", "gap.png"]
    png, pdf = sorted(paths, key=lambda p: p.suffix != ".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert pdf.read_bytes()[:5] == b"%PDF-"


# Regression (fixed): plot_comparison (and cli.cmd_compare for the .json): out_prefix.with_suffix()
# replaces anything after a dot, so --out figs/lr0.003 writes figs/lr0.png, lr0.pdf, lr0.json.
def test_plot_prefix_with_a_dot(groups, tmp_path):
    paths = plot_comparison(groups, METRIC, tmp_path / "lr0.003")
    assert sorted(p.name for p in paths) == ["lr0.003.pdf", "lr0.003.png"]


def test_list_runs_filters(root):
    every = {Path(r["path"]).name: r for r in list_runs([str(root)])}
    assert set(every) == {"a1", "a2", "b1", "c1"}
    assert every["a1"]["step"] == 30 and every["a1"]["status"] == "finished"
    assert every["a1"]["headline"][METRIC] == pytest.approx(1.5)  # seed mean at the last step
    assert every["c1"]["regime"] == "rl" and every["c1"]["headline"] == {}

    def names(**kw):
        return sorted(Path(r["path"]).name for r in list_runs([str(root)], **kw))

    assert names(where=["model.num_layers=3"]) == ["b1"]
    assert names(where=["model.num_layers=2"]) == ["a1", "a2", "c1"]
    assert names(where=["model.num_layers=2", "train.regime=next_token"]) == ["a1", "a2"]
    assert names(where=["train.regime='rl'"]) == ["c1"]
    assert names(where=["data.persona_prompt=false"]) == ["a1", "a2", "b1", "c1"]
    assert names(where=["log.project=other"]) == ["a2"]
    assert names(status="finished") == ["a1", "a2"]
    assert names(status="failed") == ["b1"]
    assert names(regime="rl") == ["c1"]
    assert names(regime="next_token", status="failed") == ["b1"]
    assert names(status="running") == []
    with pytest.raises(RunError, match="model.widht"):
        list_runs([str(root)], where=["model.widht=3"])


@pytest.mark.parametrize("cond", ["train.lr=3e-3", "train.seeds=[0,1]"])
# Regression (fixed): matches_filter: compares str(value) / json.dumps(value) with the raw text, so
# a value written as for --set (3e-3 for 0.003; [0,1] for [0, 1]) matches nothing.
def test_where_accepts_values_as_written_for_set(root, cond):
    assert sorted(Path(r["path"]).name for r in list_runs([str(root)], where=[cond]))[:1] == ["a1"]


@pytest.fixture
def wide(monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # rich tables do not wrap paths


def test_cli_runs_prints_a_table(root, capsys, wide):
    assert cli.main(["runs", str(root)]) == 0
    out = capsys.readouterr().out
    for name in ("a1", "a2", "b1", "c1", "finished", "failed", "interrupted", "simulator_gap=1.500"):
        assert name in out, name
    assert cli.main(["runs", str(root), "--status", "failed", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [Path(r["path"]).name for r in rows] == ["b1"]
    assert cli.main(["runs", str(root), "--regime", "rl", "--where", "model.num_layers=2"]) == 0
    out = capsys.readouterr().out
    assert "c1" in out and "a1" not in out


def test_cli_compare_prints_a_table_and_writes_files(root, tmp_path, capsys, wide):
    out = tmp_path / "cmp" / "gap"
    assert cli.main(["compare", str(root / "a1"), str(root / "a2"), str(root / "b1"), "--metric", METRIC,
                     "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert METRIC in text
    assert "4.0000 ± 3.0822" in text and "21.6000" in text and "3.0000" in text and "2.5000" in text
    for suffix in (".png", ".pdf", ".json"):
        assert out.with_name("gap" + suffix).exists(), suffix
    summary = json.loads(out.with_name("gap.json").read_text())
    assert sorted(g["n_seeds"] for g in summary) == [4, 5]
    assert all("curves" not in g for g in summary)


def test_cli_compare_unknown_metric_is_one_line_exit_2(root, tmp_path, capsys):
    assert cli.main(["compare", str(root), "--metric", "eval/nope", "--out", str(tmp_path / "x")]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "eval/nope" in lines[0], captured.err
    assert not list(tmp_path.iterdir())  # nothing written


def test_cli_runs_without_runs_is_exit_2(tmp_path, capsys):
    assert cli.main(["runs", str(tmp_path)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
