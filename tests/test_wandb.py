"""The wandb mirror as cluster users read it: one offline wandb run per seed (group = run
directory, job type = regime, name = <dir>/seed<k>), each logging its own seed's metrics and
holding its final evaluation in its summary; a resumed run continues the same wandb runs; the
figures of a reproduction as one analysis run. Every offline run is read back from its
``.wandb`` transaction log here (tests only: the project itself never reads wandb back), and
``wandb sync --dry-run`` must accept it. No network, no login."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentsim.experiments.config import load_config
from agentsim.experiments.presets import STAGES
from agentsim.experiments.report import reproduce as reproduce_module
from agentsim.experiments.runs.run import Run, read_metrics
from agentsim.experiments.runs.wandb_log import IDS_FILE, log_analysis
from agentsim.experiments.train.loop import train


@pytest.fixture(autouse=True)
def _quiet_offline_wandb(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_MODE", raising=False)  # the config's mode, not the caller's shell
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))  # never the user's settings


# ------------------------------------------------------------------------------- reading offline runs
# A .wandb file is wandb's LevelDB-style log: a 7-byte header (":W&B", magic 0xBEE1, version 0),
# then 32 KiB blocks of records, each a 7-byte header (crc32, length, type: full/first/middle/last)
# and a piece of a serialized wandb.proto Record. wandb 0.31 ships no reader for it.


def _records(path: Path):
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert struct.unpack("<4sHB", data[:7]) == (b":W&B", 0xBEE1, 0), path
    i, pieces = 7, b""
    while i + 7 <= len(data):
        if 32768 - i % 32768 < 7:  # a block's tail too short for a header is padding
            i += 32768 - i % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[i:i + 7])
        if kind == 0:
            break
        pieces += data[i + 7:i + 7 + length]
        i += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = pb.Record()
            record.ParseFromString(pieces)
            pieces = b""
            yield record


def _put(tree: dict, item) -> None:
    """An update or history item into ``tree``: ``nested_key`` is a path (an image logged as
    ``figures/x`` arrives as ``["figures/x", "path"]`` and its other fields)."""
    *path, last = item.nested_key or [item.key]
    for k in path:
        tree = tree.setdefault(k, {})
    tree[last] = json.loads(item.value_json)


def read_offline_run(run_dir: Path, wait_s: float = 30.0) -> dict:
    """The run record (group, job type, name, config), every history row and the final summary.
    wandb's service process writes the log behind ``finish()``: wait for its exit record."""
    (log,) = run_dir.glob("*.wandb")
    deadline = time.time() + wait_s
    while True:
        records = list(_records(log))
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.time() > deadline:
            break
        time.sleep(0.2)
    out = {"history": [], "summary": {}}
    for r in records:
        kind = r.WhichOneof("record_type")
        if kind == "run":
            out.update(id=r.run.run_id, group=r.run.run_group, job_type=r.run.job_type,
                       name=r.run.display_name, project=r.run.project, config={})
            for u in r.run.config.update:
                _put(out["config"], u)
        elif kind == "history":
            out["history"].append({})
            for item in r.history.item:
                _put(out["history"][-1], item)
        elif kind == "summary":
            for u in r.summary.update:
                _put(out["summary"], u)
            for rm in r.summary.remove:
                out["summary"].pop(rm.key or "/".join(rm.nested_key), None)
    return out


def offline_runs(folder: Path) -> list[Path]:
    return sorted((folder / "wandb").glob("offline-run-*"))


def assert_sync_accepts(runs: list[Path]) -> None:
    """`wandb sync --dry-run` lists every run as one it would upload (it exits 0 but lists
    nothing for a folder that holds no readable run, so the listing is checked too)."""
    wandb_cli = Path(sys.executable).with_name("wandb")
    proc = subprocess.run([str(wandb_cli), "sync", "--dry-run", *map(str, runs)], capture_output=True,
                          text=True, timeout=120, check=False)
    printed = proc.stdout + proc.stderr
    assert proc.returncode == 0, printed
    assert f"Would sync {len(runs)} run(s)" in printed, printed
    for run in runs:
        assert f"{run.name}/run-" in printed, printed


# ------------------------------------------------------------------------------------ training runs


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny next_token run (2 seeds, 4 steps, 2 logged steps) mirrored offline."""
    out = tmp_path_factory.mktemp("wandb") / "nt_run"
    cfg = load_config("tiny", overrides=["train.regime='next_token'", "log.wandb='offline'",
                                         "log.project='agentsim-tests'"])
    train(cfg, out, on_message=lambda m: None)
    return out


def test_one_offline_wandb_run_per_seed(trained):
    out = trained
    cfg = json.loads((out / "config.json").read_text())
    final = json.loads((out / "final.json").read_text())
    rows = read_metrics(out)
    seeds = cfg["train"]["seeds"]
    runs = offline_runs(out)
    assert len(runs) == len(seeds) == 2
    ids = json.loads((out / IDS_FILE).read_text())
    read = {r["config"]["seed"]: r for r in map(read_offline_run, runs)}
    assert sorted(read) == seeds
    logged_steps = sorted({r["step"] for r in rows})
    assert logged_steps == [2, 4]
    for i, seed in enumerate(seeds):
        run = read[seed]
        assert run["id"] == ids[str(seed)]
        assert run["group"] == "nt_run"  # the run directory relative to its output folder, never absolute
        assert run["job_type"] == "next_token"
        assert run["name"] == f"nt_run/seed{seed}"
        assert run["project"] == "agentsim-tests"
        assert {k: v for k, v in run["config"].items() if k not in ("seed", "_wandb")} == cfg
        # this seed's own numbers at every logged step, exactly as metrics.jsonl has them
        history = {h["_step"]: h for h in run["history"]}
        assert sorted(history) == logged_steps
        for row in (r for r in rows if r["seed"] == seed):
            logged = {k: v for k, v in history[row["step"]].items() if not k.startswith("_")}
            assert logged == {k: v for k, v in row.items() if k not in ("step", "seed")}
        # the final evaluation, per seed, in the summary
        summary = run["summary"]
        for k, per_seed in final["matches"].items():
            assert summary[f"final/matches/{k}"] == per_seed[i]
        for k in ("move_loss", "gap"):
            assert summary[f"final/simulator/{k}"] == final["simulator"][k][i]
        assert summary["final/simulator/bayes_optimal_loss"] == final["simulator"]["bayes_optimal_loss"]
    # the seeds differ, so a mean (or the other seed) logged for both would have failed above
    a, b = (next(r for r in rows if r["seed"] == s and r["step"] == 4) for s in seeds)
    assert a["eval/move_loss"] != b["eval/move_loss"]
    assert_sync_accepts(runs)


def _cfg(*extra: str):
    return load_config("tiny", overrides=["log.wandb='offline'", "log.project='agentsim-tests'", *extra])


def test_resumed_run_continues_its_wandb_runs_and_force_starts_new_ones(tmp_path):
    cfg = _cfg()
    path = tmp_path / "run"
    first = Run(path, cfg)
    first.start_wandb()
    first.log(2, {"loss": [1.0, 2.0]})
    first.finish_wandb()
    ids = json.loads((path / IDS_FILE).read_text())
    assert len(set(ids.values())) == 2
    # wandb names an offline run's folder by the second it started and its id: the same id started
    # twice within one second writes into one folder (a real resume takes longer than that)
    time.sleep(1.1)
    again = Run(path, cfg, resume=True)
    again.start_wandb()
    again.log(4, {"loss": [0.5, 1.5]})
    again.finish_wandb()
    runs = [read_offline_run(p) for p in offline_runs(path)]
    assert len(runs) == 4
    by_id = {}
    for r in runs:
        by_id.setdefault(r["id"], []).append([h["loss"] for h in r["history"]])
    assert sorted(by_id) == sorted(ids.values())  # the resumed run logs into the same two runs
    assert sorted(by_id.values()) == [[[1.0], [0.5]], [[2.0], [1.5]]]  # each seed: first start, then resume
    assert {r["group"] for r in runs} == {"run"}  # by default the run directory's name
    replaced = Run(path, cfg, force=True, wandb_group="repro/runs/run")
    replaced.start_wandb()
    replaced.finish_wandb()
    new_ids = json.loads((path / IDS_FILE).read_text())
    assert not set(new_ids.values()) & set(ids.values())
    assert {read_offline_run(p)["id"] for p in offline_runs(path)} == set(new_ids.values())
    assert {read_offline_run(p)["group"] for p in offline_runs(path)} == {"repro/runs/run"}


def test_disabled_writes_no_wandb(tmp_path):
    run = Run(tmp_path / "run", load_config("tiny", overrides=["log.wandb='disabled'"]))
    run.start_wandb()
    run.log(2, {"loss": [1.0, 2.0]})
    run.summarize_wandb({"seeds": [0, 1], "matches": {"x": [1, 2]}})
    run.finish_wandb()
    assert not (tmp_path / "run" / "wandb").exists() and not (tmp_path / "run" / IDS_FILE).exists()


# --------------------------------------------------------------------------------- analysis figures


def _png(path: Path, value: float) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [0, value])
    fig.savefig(path, dpi=40)
    plt.close(fig)
    return path


def _check_analysis_run(folder: Path, pngs: list[Path], project: str = "agentsim-tests") -> dict:
    (path,) = offline_runs(folder)
    run = read_offline_run(path)
    assert run["group"] == folder.name and run["job_type"] == "analysis"
    assert run["name"] == f"{folder.name}/analysis" and run["project"] == project
    (row,) = run["history"]
    for png in pngs:
        image = row[f"figures/{png.stem}"]
        assert image["_type"] == "image-file"
        assert (path / "files" / image["path"]).read_bytes() == png.read_bytes()
    assert {k for k in row if not k.startswith("_")} == {f"figures/{p.stem}" for p in pngs}
    assert_sync_accepts([path])
    return run


def test_log_analysis_logs_pngs_and_summary(tmp_path):
    figs = tmp_path / "figs"
    figs.mkdir()
    pngs = [_png(figs / "f1_probe.png", 1.0), _png(figs / "f2_grid.png", 2.0)]
    (figs / "f1_probe.pdf").write_bytes(b"%PDF-1.4")  # not an image wandb shows: left out
    summary = {"claims": {"1": {"verdict": "supported", "interval": {"mean": 0.25, "lo": 0.1, "hi": 0.4}}},
               "seconds": {"next_token": 12.5}, "ignored_list": [1, 2]}
    folder = tmp_path / "repro"
    folder.mkdir()
    where = log_analysis(folder, [*pngs, figs / "f1_probe.pdf"], summary, mode="offline", project="agentsim-tests")
    assert where == offline_runs(folder)[0]
    run = _check_analysis_run(folder, pngs)
    s = run["summary"]
    assert s["claims/1/verdict"] == "supported" and s["claims/1/interval/mean"] == 0.25
    assert s["seconds/next_token"] == 12.5 and not any(k.startswith("ignored_list") for k in s)
    assert log_analysis(tmp_path / "none", pngs, summary, mode="disabled", project="p") is None
    assert not (tmp_path / "none").exists()


FINAL = {"seeds": [0, 1], "matches": {"eval/loss_vs_random": [0.2, 0.3], "eval/loss_vs_perfect": [0.5, 0.6],
                                      "eval/loss_vs_greedy": [0.4, 0.4]},
         "simulator": {"move_loss": [1.5, 1.6], "bayes_optimal_loss": 1.4, "gap": [0.1, 0.2]}}


@pytest.mark.parametrize("mode", ["offline", "disabled"])
def test_reproduce_logs_its_figures_as_one_analysis_run(tmp_path, monkeypatch, mode):
    """``reproduce`` end to end with training and analyses replaced by stand-ins (the real ones
    are the slow pipeline test's): the figures it returns go to one analysis run in the
    reproduction folder when the runs' own config says so, and the folder stays resumable."""
    figs = tmp_path / "out" / "figures"
    trained: list[Path] = []

    def fake_train(cfg, run_dir, **kwargs):
        assert kwargs["wandb_group"] == f"out/runs/{Path(run_dir).name}"  # relative, and tells reproductions apart
        Run(run_dir, cfg).set_status("finished")
        (Path(run_dir) / "final.json").write_text(json.dumps(FINAL))
        trained.append(Path(run_dir))

    def fake_analyses(dirs, fig_dir, sizes, on_message=print, root=None, value_only=False):
        fig_dir.mkdir(parents=True, exist_ok=True)
        return {}, [_png(fig_dir / "f0_value.png", 1.0), _png(fig_dir / "f9_behaviour.png", 2.0)]

    monkeypatch.setattr(reproduce_module, "train", fake_train)
    monkeypatch.setattr(reproduce_module, "run_analyses", fake_analyses)
    out = tmp_path / "out"
    results = reproduce_module.reproduce("tiny", out, overrides=(f"log.wandb='{mode}'",), on_message=lambda m: None)
    assert trained and results["figures"] == ["figures/f0_value.png", "figures/f9_behaviour.png"]
    assert results["carried"] == []  # every stage trained by this invocation: its wall is the whole
    if mode == "disabled":
        assert not (out / "wandb").exists()
        return
    run = _check_analysis_run(out, [figs / "f0_value.png", figs / "f9_behaviour.png"], project="agentsim")
    assert run["summary"]["claims/1/verdict"] == results["claims"]["1"]["verdict"]
    assert run["summary"]["quality/rl/loss_vs_random/mean"] == pytest.approx(0.25)
    # a reproduction folder holding its wandb mirror is still one `reproduce --resume` accepts
    again = reproduce_module.reproduce("tiny", out, resume=True, overrides=(f"log.wandb='{mode}'",),
                                       on_message=lambda m: None)
    assert len(offline_runs(out)) == 2
    assert again["carried"] == [name for name, _ in STAGES["tiny"]] and again["targets"] == {}


def test_a_stage_counts_as_trained_before_only_once_it_has_work_to_keep(tmp_path):
    """A resumed reproduction's wall leaves out what earlier invocations trained; a stage created
    but killed before its first checkpoint starts over, so its time is all in this invocation."""
    run_dir = tmp_path / "rl"
    run = Run(run_dir, load_config("tiny"))
    assert not reproduce_module._trained_before(run_dir)  # config.json and status 'created' only
    (run_dir / "checkpoints" / "step_0").mkdir(parents=True)
    assert not reproduce_module._trained_before(run_dir)
    (run_dir / "checkpoints" / "step_50").mkdir()
    assert reproduce_module._trained_before(run_dir)
    other = tmp_path / "random_init"
    Run(other, load_config("tiny")).set_status("finished")
    assert reproduce_module._trained_before(other) and run.path == run_dir
