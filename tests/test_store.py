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
def comparison(root):
    return compare([str(root)], METRIC, on_problem=lambda m: None)


@pytest.fixture(scope="module")
def groups(comparison):
    return comparison.groups


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
    by_layers = {("num_layers=2" in g.label): g for g in groups}
    a, b = by_layers[True], by_layers[False]
    assert "model.num_layers=3" in b.label and "model.num_layers=2" in a.label
    assert "project" not in a.label and "seeds" not in a.label
    assert sorted(Path(p).name for p in a.runs) == ["a1", "a2"]
    assert [Path(p).name for p in b.runs] == ["b1"]
    assert a.n_seeds == 4 and sorted(a.final) == [1.0, 2.0, 4.0, 9.0] and sorted(a.seeds) == [0, 1, 2, 3]
    assert b.n_seeds == 5 and sorted(b.final) == [0.5, 1.5, 2.5, 3.5, 100.0]


def test_statistics_equal_hand_computed_values(groups):
    """Sample SD and the report's 95% t-interval of the mean (not a bootstrap, which with a few
    seeds is close to their [min, max])."""
    by_n = {g.n_seeds: g for g in groups}
    a, b = by_n[4], by_n[5]
    # A: 1, 2, 4, 9
    assert a.mean == pytest.approx(4.0)
    assert a.sd == pytest.approx(np.sqrt((9 + 4 + 0 + 25) / 3))  # sample SD
    assert a.iqm == pytest.approx(3.0)  # mean of the middle two
    half = 3.182446 * a.sd / np.sqrt(4)  # scipy.stats.t.ppf(0.975, 3)
    assert (a.ci_low, a.ci_high) == (pytest.approx(4.0 - half, rel=1e-3), pytest.approx(4.0 + half, rel=1e-3))
    assert a.ci_low < min(a.final) and a.ci_high > max(a.final)  # wider than [min, max] with 4 seeds
    # B: 0.5, 1.5, 2.5, 3.5, 100 -> trim one from each end
    assert b.mean == pytest.approx(21.6)
    assert b.iqm == pytest.approx(2.5)
    assert b.sd == pytest.approx(np.std([0.5, 1.5, 2.5, 3.5, 100.0], ddof=1))
    half = 2.776445 * b.sd / np.sqrt(5)  # scipy.stats.t.ppf(0.975, 4)
    assert b.ci_high == pytest.approx(21.6 + half, rel=1e-3)


def test_single_seed_and_constant_groups(tmp_path):
    _write_run(tmp_path / "one", _config(seeds=(0,)), {0: [1.0, 1.0, 5.0]}, "finished")
    _write_run(tmp_path / "flat", _config(num_layers=4, seeds=(0, 1, 2)), {s: [2.0, 2.0, 2.0] for s in range(3)},
               "finished")
    gs = {g.n_seeds: g for g in compare([str(tmp_path)], METRIC).groups}
    one, flat = gs[1], gs[3]
    assert one.mean == one.iqm == 5.0
    assert np.isnan(one.sd) and np.isnan(one.ci_low) and np.isnan(one.ci_high)  # no spread from one seed
    assert flat.ci_low == flat.ci_high == flat.mean == 2.0


def test_curves_carry_steps_and_wall_times(groups):
    a = next(g for g in groups if g.n_seeds == 4)
    assert len(a.curves) == 4
    for steps, walls, values in a.curves:
        assert list(steps) == list(STEPS)
        assert list(walls) in ([1.0, 2.0, 3.0], [2.0, 4.0, 6.0])
        assert values[-1] in FINALS["a1"].values() or values[-1] in FINALS["a2"].values()


def test_plot_comparison_writes_png_and_pdf(comparison, tmp_path):
    paths = plot_comparison(comparison, tmp_path / "figs" / "gap")
    assert sorted(p.name for p in paths) == ["gap.pdf", "gap.png"]
    png, pdf = sorted(paths, key=lambda p: p.suffix != ".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert pdf.read_bytes()[:5] == b"%PDF-"


def test_plot_comparison_says_what_it_shows(comparison, tmp_path, monkeypatch):
    """Title (metric and which value), axis units and a caption naming the band."""
    import matplotlib.pyplot as plt

    from agentsim.experiments.report import figures

    shown = {}
    monkeypatch.setattr(plt, "close", lambda fig: shown.setdefault("fig", fig))
    figures.plot_comparison(comparison, tmp_path / "gap")
    fig = shown["fig"]
    texts = [t.get_text() for t in fig.texts]
    assert fig.get_suptitle() == f"{METRIC}: value at the last logged step (metrics.jsonl)"
    assert any("95 % t-interval" in t and "4 or 5 seeds" in t for t in texts), texts
    assert [ax.get_xlabel() for ax in fig.axes] == ["training step (gradient updates; PPO iterations for agents)",
                                                     "wall time (s)"]
    plt.close(fig)


# Regression (fixed): plot_comparison (and cli.cmd_compare for the .json): out_prefix.with_suffix()
# replaces anything after a dot, so --out figs/lr0.003 writes figs/lr0.png, lr0.pdf, lr0.json.
def test_plot_prefix_with_a_dot(comparison, tmp_path):
    paths = plot_comparison(comparison, tmp_path / "lr0.003")
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
    assert METRIC in text and "t-interval" in text
    assert "4.0000 ± 3.5590" in text and "21.6000" in text and "3.0000" in text and "2.5000" in text
    for suffix in (".png", ".pdf", ".json"):
        assert out.with_name("gap" + suffix).exists(), suffix
    summary = json.loads(out.with_name("gap.json").read_text())
    assert sorted(g["n_seeds"] for g in summary["groups"]) == [4, 5]
    assert all("curves" not in g for g in summary["groups"]) and "t-interval" in summary["interval"]


def test_cli_compare_unknown_metric_is_one_line_exit_2(root, tmp_path, capsys):
    assert cli.main(["compare", str(root), "--metric", "eval/nope", "--out", str(tmp_path / "x")]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "eval/nope" in lines[0], captured.err
    assert not list(tmp_path.iterdir())  # nothing written


def test_cli_runs_without_runs_is_exit_2(tmp_path, capsys):
    assert cli.main(["runs", str(tmp_path)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------- telling the truth


def test_a_seed_held_by_two_directories_is_not_pooled_twice(root, tmp_path):
    """The same config and seeds in two directories (a copy, a rerun) are two groups, said so."""
    import shutil

    shutil.copytree(root / "a1", tmp_path / "a1_copy")
    problems = []
    comparison = compare([str(root / "a1"), str(tmp_path / "a1_copy")], METRIC, on_problem=problems.append)
    assert [g.n_seeds for g in comparison.groups] == [2, 2]
    assert [g.label for g in comparison.groups] == ["all [a1]", "all [a1_copy]"]
    assert problems == [f"runs of one config hold the same seeds, so they are kept apart, not pooled: "
                        f"[{root / 'a1'}] and [{tmp_path / 'a1_copy'}]"]


def test_runs_lacking_the_metric_are_named(root, capsys, tmp_path, wide):
    problems = []
    comparison = compare([str(root)], METRIC, on_problem=problems.append)
    assert comparison.left_out == [str(root / "nested" / "c1")]
    assert any(str(root / "nested" / "c1") in p for p in problems)
    assert cli.main(["compare", str(root), "--metric", METRIC, "--out", str(tmp_path / "gap")]) == 0
    err = capsys.readouterr().err
    assert f"agentsim: warning: 1 run(s) have no {METRIC} and are left out: {root / 'nested' / 'c1'}" in err


def _write_final(path: Path, seeds, loss_vs_perfect, gap) -> None:
    (path / "final.json").write_text(json.dumps({
        "seeds": list(seeds),
        "matches": {"eval/loss_vs_random": [0.0] * len(seeds), "eval/loss_vs_perfect": loss_vs_perfect},
        "simulator": {"move_loss": [1.0] * len(seeds), "bayes_optimal_loss": 0.9, "gap": gap}}))


@pytest.fixture
def finished(tmp_path) -> Path:
    """Two next_token runs whose final.json holds what metrics.jsonl does not (play against perfect)."""
    for name, layers, losses in (("l2", 2, [0.1, 0.3]), ("l3", 3, [0.0, 0.2])):
        _write_run(tmp_path / "runs" / name, _config(num_layers=layers), {0: _curve(1.0), 1: _curve(2.0)}, "finished")
        _write_final(tmp_path / "runs" / name, (0, 1), losses, [0.05, 0.15])
    return tmp_path / "runs"


def test_final_json_metrics_can_be_compared_and_plotted(finished, tmp_path):
    comparison = compare([str(finished)], "final/loss_vs_perfect")
    assert comparison.quantity == "final evaluation (final.json)"
    by_label = {g.label: g for g in comparison.groups}
    assert by_label["model.num_layers=2"].final == [0.1, 0.3]
    assert by_label["model.num_layers=3"].mean == pytest.approx(0.1)
    assert [list(c.steps) for c in by_label["model.num_layers=2"].curves] == [[30], [30]]  # one point, at the end
    assert compare([str(finished)], "final/simulator_gap").groups[0].final == [0.05, 0.15]
    paths = plot_comparison(comparison, tmp_path / "perfect")
    assert all(p.stat().st_size > 1000 for p in paths)


def test_a_metric_only_final_json_holds_is_suggested(finished):
    with pytest.raises(RunError, match="did you mean final/loss_vs_perfect"):
        compare([str(finished)], "eval/loss_vs_perfect")


def test_train_prints_the_numbers_runs_shows(finished, tmp_path, capsys, monkeypatch, wide):
    """`train`'s last line and `runs`' headline are the same quantity (final.json seed means) with
    the same names and digits; a run without final.json shows eval/… at its last logged step."""
    from types import SimpleNamespace

    from agentsim.experiments.train import loop

    run = tmp_path / "trained"

    def fake_train(cfg, out, **kw):
        _write_run(Path(out), _config(), {0: _curve(1.0), 1: _curve(2.0)}, "finished")
        _write_final(Path(out), (0, 1), [0.1, 0.4], [0.02, 0.04])
        return SimpleNamespace(interrupted=False)

    monkeypatch.setattr(loop, "train", fake_train)
    assert cli.main(["train", "--out", str(run), "--preset", "tiny", "--quiet"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    shown = "final/simulator_gap=0.030, final/loss_vs_random=0.000, final/loss_vs_perfect=0.250"
    assert printed.endswith(shown), printed
    assert cli.main(["runs", str(run)]) == 0
    assert shown in capsys.readouterr().out
    assert list_runs([str(finished / "l2")])[0]["headline"]["final/loss_vs_perfect"] == pytest.approx(0.2)
    (finished / "l2" / "final.json").unlink()
    assert list_runs([str(finished / "l2")])[0]["headline"] == {"eval/simulator_gap": pytest.approx(1.5)}


@pytest.mark.parametrize("argv, match", [
    (["--status", "done"], "--status must be one of created, running, interrupted, failed, finished"),
    (["--regime", "agent"], "--regime must be one of"),
    (["--where", "model.num_layers=abc"], "model.num_layers"),
    (["--where", "model.num_layers"], "write SECTION.FIELD=VALUE"),
    (["--where", "num_layers=2"], "write SECTION.FIELD=VALUE"),
    (["--where", "model.widht=2"], "unknown field model.widht"),
])
def test_runs_bad_filters_are_one_line_exit_2(root, capsys, argv, match):
    assert cli.main(["runs", str(root), *argv]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("agentsim: error:") and match in lines[0], captured.err


def test_tables_keep_their_width_when_piped(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    run = tmp_path / ("a_run_directory_with_a_name_longer_than_any_terminal_is_wide_" * 2)
    _write_run(run, _config(), {0: _curve(1.0), 1: _curve(2.0)}, "finished")
    assert cli.main(["runs", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert any(str(run) in line and "eval/simulator_gap=1.500" in line for line in out.splitlines()), out
    assert cli.main(["compare", str(tmp_path), "--metric", METRIC, "--out", str(tmp_path / "gap")]) == 0
    assert any("1.5000 ± 0.7071" in line and "[-4.853" in line for line in capsys.readouterr().out.splitlines())


def test_a_corrupted_line_is_reported_and_the_healthy_runs_still_plot(root, tmp_path, capsys, wide):
    import shutil

    for name in ("a1", "b1"):
        shutil.copytree(root / name, tmp_path / "runs" / name)
    lines = (tmp_path / "runs" / "a1" / "metrics.jsonl").read_text().splitlines()
    lines[1] = '{"step": 10, "seed": 1, "eval/simul'  # a torn write in the middle of the file
    (tmp_path / "runs" / "a1" / "metrics.jsonl").write_text("\n".join(lines + ["[1, 2]"]) + "\n")
    (tmp_path / "runs" / "b1" / "timing.jsonl").write_text("garbage\n")
    out = tmp_path / "gap"
    assert cli.main(["compare", str(tmp_path / "runs"), "--metric", METRIC, "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert f"agentsim: warning: {tmp_path / 'runs' / 'a1' / 'metrics.jsonl'} line 2: " in captured.err
    assert f"{tmp_path / 'runs' / 'a1' / 'metrics.jsonl'} line 7: " in captured.err
    assert f"{tmp_path / 'runs' / 'b1' / 'timing.jsonl'} line 1: " in captured.err
    assert "Traceback" not in captured.err
    summary = json.loads(out.with_name("gap.json").read_text())
    assert sorted(g["n_seeds"] for g in summary["groups"]) == [2, 5]
    assert out.with_name("gap.png").stat().st_size > 5000


def test_a_corrupt_config_skips_that_run_only(root, tmp_path):
    import shutil

    shutil.copytree(root / "a1", tmp_path / "a1")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    problems = []
    assert [Path(r["path"]).name for r in list_runs([str(tmp_path)], on_problem=problems.append)] == ["a1"]
    assert len(problems) == 1 and str(tmp_path / "broken" / "config.json") in problems[0]


def test_compare_into_an_unwritable_place_is_one_line_exit_2(root, tmp_path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    assert cli.main(["compare", str(root / "a1"), "--metric", METRIC, "--out", str(blocker / "gap")]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"agentsim: error: cannot write {blocker / 'gap'}"), captured.err
    assert captured.out == "" and sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_runs_reports_a_corrupted_line_once(root, tmp_path):
    import shutil

    shutil.copytree(root / "a1", tmp_path / "a1")
    with open(tmp_path / "a1" / "metrics.jsonl", "a") as f:
        f.write('{"step": 40, "se')
    problems = []
    (row,) = list_runs([str(tmp_path)], on_problem=problems.append)
    assert row["step"] == 30 and row["headline"]["eval/simulator_gap"] == pytest.approx(1.5)
    assert problems == [f"{tmp_path / 'a1' / 'metrics.jsonl'} line 7: not a valid row (corrupted?); skipped"]


def test_which_checkpoints_are_kept_does_not_split_a_config():
    from agentsim.experiments.runs.store import group_key

    base = {"train.seeds": [0], "train.steps": 80, "train.log_checkpoints": 0, "train.checkpoint_every": 5}
    kept = {**base, "train.seeds": [1], "train.log_checkpoints": 3, "train.checkpoint_every": 40}
    assert group_key(base) == group_key(kept)
    assert group_key(base) != group_key({**base, "train.steps": 60})


@pytest.mark.slow  # trains the shared tiny runs; the fast suite checks the stored keys in test_next_token
def test_a_simulator_stores_its_training_positions_and_analyses_read_them(tiny_next_token, tiny_pretrain_rl, tiny_rl,
                                                                         tmp_path):
    """Training writes the keys of its training positions; ``training_positions`` reads them
    (for pretrain_rl, the keys of the run it started from) instead of regenerating the dataset,
    and regenerates where a run has none or they are unreadable. An rl run read no dataset:
    it has no training positions (not those of the persona games its config describes)."""
    import shutil

    from agentsim.experiments.analysis.heldout import training_positions
    from agentsim.experiments.runs.run import TRAIN_POSITIONS, read_config, read_positions, write_positions
    from agentsim.experiments.train.regimes import datasets

    cfg = read_config(tiny_next_token)
    train, _, _ = datasets(cfg)
    stored = read_positions(tiny_next_token)
    np.testing.assert_array_equal(stored, np.unique(train["position"][train["move_mask"]]))
    run = tmp_path / "copy"
    shutil.copytree(tiny_next_token, run)
    write_positions(run, np.array([3, 5, 7], np.int64))  # planted: the file is what is read
    np.testing.assert_array_equal(training_positions(cfg, run), [3, 5, 7])
    (run / TRAIN_POSITIONS).write_bytes(b"not an array")
    np.testing.assert_array_equal(training_positions(cfg, run), stored)  # regenerated
    np.testing.assert_array_equal(training_positions(read_config(tiny_pretrain_rl), tiny_pretrain_rl), stored)
    assert training_positions(read_config(tiny_rl), tiny_rl) is None
