"""Fault tolerance of training runs: determinism, kill -9 and SIGINT with resume, the NaN guard,
corrupt checkpoints, refusing to overwrite, and unwritable directories.

Most scenarios share one "fleet" of `agentsim train` subprocesses run concurrently (the
machine has few cores, and compiles dominate): two fresh identical runs (determinism, also for
rl), one run killed with SIGKILL, one interrupted with SIGINT, one `--force` over an old run and
a `--resume` of a copy whose newest checkpoint is corrupt. The killed and interrupted runs are
resumed, and every resumed or replaced run is compared byte for byte with an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import chex
import jax
import numpy as np
import pytest

from agentsim.envs.tokens import Layout
from agentsim.experiments import cli
from agentsim.experiments.config import load_config, seed_keys
from agentsim.experiments.runs import checkpoints
from agentsim.experiments.runs.checkpoints import CheckpointError
from agentsim.experiments.runs.restore import open_checkpoint
from agentsim.experiments.runs.run import Run, RunError, read_config, read_metrics
from agentsim.experiments.train import loop as train_mod
from agentsim.experiments.train.loop import TrainingStopped

REPO = Path(__file__).resolve().parents[1]
STEPS = 20  # 10 chunks of 2 with a checkpoint after each: a kill at step >= 4 is mid-way
NT_SETS = ["train.steps=%d" % STEPS, "train.chunk=2", "train.checkpoint_every=1", "log.wandb='disabled'"]
RL_SETS = ["log.wandb='disabled'"]  # tiny: 4 PPO iterations in chunks of 2
FLEET_TIMEOUT = 600


def _cmd(out: Path, regime: str, sets: list[str], *extra: str) -> list[str]:
    cmd = [sys.executable, "-m", "agentsim.experiments.cli", "train", "--preset", "tiny", "--regime", regime,
           "--out", str(out), "--quiet"]
    for s in sets:
        cmd += ["--set", s]
    return cmd + list(extra)


def _nt_cfg():
    return load_config("tiny", overrides=NT_SETS + ["train.regime='next_token'"])


@pytest.fixture(scope="module", autouse=True)
def _shared_compile_cache():
    """`agentsim train` subprocesses use this test session's compile cache (tests/conftest.py),
    so they share compiled programs with each other and with the in-process runs."""
    with pytest.MonkeyPatch.context() as mp:
        if jax.config.jax_compilation_cache_dir:
            mp.setenv("AGENTSIM_CACHE", jax.config.jax_compilation_cache_dir)
        yield


def _note(tmp_path_factory, **numbers) -> None:
    """Measured numbers, kept beside the session's temporary files (pytest-of-USER/pytest-N)."""
    with open(tmp_path_factory.getbasetemp() / "agentsim_timings.jsonl", "a") as f:
        f.write(json.dumps(numbers) + "\n")


def _ckpt_steps(run: Path) -> list[int]:
    return checkpoints.steps(run / "checkpoints")


def _status(run: Path) -> dict:
    p = run / "status.json"
    return json.loads(p.read_text()) if p.exists() else {}


def _template(run: Path):
    cfg = read_config(run)
    trainer = train_mod.make_trainer(cfg, Layout.for_config(cfg.data))
    return trainer.init(seed_keys(cfg))


def _corrupt_dir(d: Path) -> int:
    n = 0
    for f in sorted(d.rglob("*")):
        if f.is_file():
            f.write_bytes(b"\x00corrupt" * 3)
            n += 1
    return n


class _Proc:
    def __init__(self, root: Path, name: str, cmd: list[str]):
        self.name, self.cmd = name, cmd
        self.log = root / f"{name}.log"
        self._f = open(self.log, "w")
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
        self.p = subprocess.Popen(cmd, stdout=self._f, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        self.t0 = time.time()
        self.seconds = None

    def wait(self, deadline: float) -> int:
        try:
            rc = self.p.wait(timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            raise AssertionError(f"{self.name} timed out:\n{self.log.read_text()[-3000:]}") from None
        self._f.close()
        self.seconds = time.time() - self.t0
        return rc

    def output(self) -> str:
        return self.log.read_text()


def _write_old_run(path: Path) -> None:
    """A different, older run in the directory that `--force` must replace."""
    old = load_config("tiny", overrides=["train.steps=8", "model.num_layers=1", "log.wandb='disabled'"])
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(old.to_dict()))
    (path / "metrics.jsonl").write_text('{"step": 99, "seed": 0, "losses/loss": 1.0}\n')
    (path / "checkpoints" / "step_99").mkdir(parents=True)
    (path / "checkpoints" / "step_99" / "junk").write_text("junk")
    (path / "status.json").write_text('{"status": "finished", "step": 99}')
    (path / "stale_marker.txt").write_text("from the old run")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """Phase 1: nt_a and rl_a (they fill the compile cache). Phase 2, all together: their twins,
    a `--force` over an old run, a run killed with SIGKILL and one interrupted with SIGINT (each
    resumed as soon as it has exited), and a `--resume` of a copy of nt_a whose newest
    checkpoint is corrupt."""
    root = tmp_path_factory.mktemp("fleet")
    deadline = time.time() + FLEET_TIMEOUT
    procs: dict[str, _Proc] = {}
    try:

        def start(name, regime, sets, *extra, out=None):
            procs[name] = _Proc(root, name, _cmd(root / (out or name), regime, sets, *extra))

        start("nt_a", "next_token", NT_SETS)
        start("rl_a", "rl", RL_SETS)
        rcs = {name: procs[name].wait(deadline) for name in ("nt_a", "rl_a")}
        phase1 = time.time() - (deadline - FLEET_TIMEOUT)
        assert rcs["nt_a"] == 0, procs["nt_a"].output()[-3000:]

        # a copy of nt_a without its final result and with a corrupt newest checkpoint
        shutil.copytree(root / "nt_a", root / "nt_corrupt")
        (root / "nt_corrupt" / "final.json").unlink()
        corrupt_steps = _ckpt_steps(root / "nt_corrupt")
        assert _corrupt_dir(root / "nt_corrupt" / "checkpoints" / f"step_{corrupt_steps[-1]}") > 0
        _write_old_run(root / "nt_force")

        start("nt_b", "next_token", NT_SETS)
        start("rl_b", "rl", RL_SETS)
        start("nt_force", "next_token", NT_SETS, "--force")
        # in-process, while those start: restore_latest falls back past the corrupt checkpoint
        fallback_messages: list[str] = []
        fallback = checkpoints.restore_latest(root / "nt_corrupt" / "checkpoints", _template(root / "nt_corrupt"),
                                              on_skip=fallback_messages.append)
        start("nt_corrupt_resume", "next_token", NT_SETS, "--resume", out="nt_corrupt")
        victims = {"nt_kill": signal.SIGKILL, "nt_int": signal.SIGINT}
        for name in victims:
            start(name, "next_token", NT_SETS)

        # Signal each victim as soon as a checkpoint at step >= 4 is on disk; resume it once it exited.
        at_signal: dict[str, list[int]] = {}
        after: dict[str, dict] = {}
        while len(after) < len(victims) and time.time() < deadline:
            for name, sig in victims.items():
                p, run = procs[name], root / name
                if name not in at_signal:
                    if any(s >= 4 for s in _ckpt_steps(run)):
                        p.p.send_signal(sig)
                        at_signal[name] = _ckpt_steps(run)
                    elif p.p.poll() is not None:
                        raise AssertionError(f"{name} ended before it was signalled:\n{p.output()[-3000:]}")
                elif name not in after and p.p.poll() is not None:
                    rcs[name] = p.wait(deadline)
                    after[name] = {"status": _status(run), "steps": _ckpt_steps(run),
                                   "final": (run / "final.json").exists(), "output": p.output(),
                                   "metric_steps": sorted({r["step"] for r in read_metrics(run)})}
                    start(name + "_resume", "next_token", NT_SETS, "--resume", out=name)
            time.sleep(0.02)
        for name, p in procs.items():
            if name not in rcs:
                rcs[name] = p.wait(deadline)
        seconds = {name: round(p.seconds, 1) for name, p in procs.items()}
        print(f"fleet: phase 1 {phase1:.1f} s, all {time.time() - (deadline - FLEET_TIMEOUT):.1f} s; "
              f"per process: {seconds}")
        _note(tmp_path_factory, fleet_phase1_s=round(phase1, 1),
              fleet_total_s=round(time.time() - (deadline - FLEET_TIMEOUT), 1), fleet_process_s=seconds)
        return {"root": root, "rc": rcs, "procs": procs, "at_signal": at_signal, "after_signal": after,
                "seconds": seconds, "corrupt": {"steps_before": corrupt_steps, "fallback": fallback,
                                                "messages": fallback_messages}}
    finally:  # never leave our subprocesses running (e.g. when an assertion above failed)
        for p in procs.values():
            if p.p.poll() is None:
                p.p.kill()
                p.p.wait()


def _metrics_bytes(run: Path) -> bytes:
    return (run / "metrics.jsonl").read_bytes()


def _assert_ok(fleet, name):
    assert fleet["rc"][name] == 0, fleet["procs"][name].output()[-3000:]


# --------------------------------------------------------------------------------------------
# determinism


@pytest.mark.slow
@pytest.mark.parametrize("regime", ["nt", "rl"])
def test_two_fresh_runs_write_identical_metrics(fleet, regime):
    a, b = fleet["root"] / f"{regime}_a", fleet["root"] / f"{regime}_b"
    _assert_ok(fleet, f"{regime}_a")
    _assert_ok(fleet, f"{regime}_b")
    assert _metrics_bytes(a) == _metrics_bytes(b)
    rows = read_metrics(a)
    cfg = read_config(a)
    expected_steps = list(range(cfg.train.chunk, cfg.train.steps + 1, cfg.train.chunk))
    assert sorted({r["step"] for r in rows}) == expected_steps
    assert len(rows) == len(expected_steps) * len(cfg.train.seeds)
    assert all("wall_time" not in r for r in rows)  # wall time lives in timing.jsonl
    timing = [json.loads(l) for l in (a / "timing.jsonl").read_text().splitlines()]
    assert [t["step"] for t in timing] == expected_steps
    assert _status(a)["status"] == "finished" and (a / "final.json").exists()
    assert json.loads((a / "final.json").read_text()) == json.loads((b / "final.json").read_text())


# --------------------------------------------------------------------------------------------
# kill -9 and resume


@pytest.mark.slow
def test_kill9_mid_run_then_resume_equals_uninterrupted(fleet):
    root = fleet["root"]
    _assert_ok(fleet, "nt_a")
    assert fleet["rc"]["nt_kill"] == -signal.SIGKILL
    after = fleet["after_signal"]["nt_kill"]
    # it really was killed mid-way
    assert not after["final"] and after["status"].get("status") == "running"
    assert max(after["steps"]) < STEPS and max(after["steps"]) >= 4
    assert max(after["metric_steps"], default=0) < STEPS
    _assert_ok(fleet, "nt_kill_resume")
    assert f"from step {max(after['steps'])}" in fleet["procs"]["nt_kill_resume"].output()
    run = root / "nt_kill"
    assert _metrics_bytes(run) == _metrics_bytes(root / "nt_a")
    timing_steps = [json.loads(l)["step"] for l in (run / "timing.jsonl").read_text().splitlines()]
    assert timing_steps == sorted(set(timing_steps))  # no duplicated steps after the truncation
    assert _status(run)["status"] == "finished"
    assert json.loads((run / "final.json").read_text()) == json.loads((root / "nt_a" / "final.json").read_text())
    chex.assert_trees_all_close(open_checkpoint(run).params, open_checkpoint(root / "nt_a").params, rtol=0, atol=0)


# --------------------------------------------------------------------------------------------
# SIGINT


@pytest.mark.slow
def test_sigint_checkpoints_exits_130_and_resumes(fleet):
    root = fleet["root"]
    _assert_ok(fleet, "nt_a")
    after = fleet["after_signal"]["nt_int"]
    assert fleet["rc"]["nt_int"] == 130, after["output"][-3000:]
    status = after["status"]
    assert status["status"] == "interrupted"
    step = status["step"]
    assert 4 <= step < STEPS and not after["final"]
    assert step in after["steps"] and max(after["steps"]) == step  # checkpoint at the interrupted step
    assert max(after["metric_steps"]) == step
    assert "--resume" in after["output"]
    _assert_ok(fleet, "nt_int_resume")
    assert f"from step {step}" in fleet["procs"]["nt_int_resume"].output()
    assert _metrics_bytes(root / "nt_int") == _metrics_bytes(root / "nt_a")
    assert _status(root / "nt_int")["status"] == "finished"


# --------------------------------------------------------------------------------------------
# --force and refusing to overwrite


@pytest.mark.slow
def test_force_replaces_an_old_run(fleet):
    root = fleet["root"]
    _assert_ok(fleet, "nt_force")
    run = root / "nt_force"
    assert not (run / "stale_marker.txt").exists()
    assert 99 not in _ckpt_steps(run)
    assert read_config(run) == _nt_cfg()
    assert _metrics_bytes(run) == _metrics_bytes(root / "nt_a")


@pytest.mark.slow
def test_refuses_existing_run_without_resume_or_force(fleet, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(fleet["root"] / "nt_a", run)
    before = {n: (run / n).read_bytes() for n in ("config.json", "metrics.jsonl", "status.json")}
    with pytest.raises(RunError, match="--resume"):
        train_mod.train(_nt_cfg(), run)
    argv = ["train", "--preset", "tiny", "--regime", "next_token", "--out", str(run), "--quiet"]
    for s in NT_SETS:
        argv += ["--set", s]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already holds a run" in err[0]
    assert {n: (run / n).read_bytes() for n in before} == before
    assert _ckpt_steps(run) == _ckpt_steps(fleet["root"] / "nt_a")


# --------------------------------------------------------------------------------------------
# corrupt checkpoints


@pytest.mark.slow
def test_corrupt_newest_checkpoint_falls_back_to_previous(fleet):
    c, run = fleet["corrupt"], fleet["root"] / "nt_corrupt"
    newest, previous = c["steps_before"][-1], c["steps_before"][-2]
    step, state = c["fallback"]
    assert step == previous
    assert len(c["messages"]) == 1 and f"step_{newest}" in c["messages"][0] and "older" in c["messages"][0]
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state["params"]))
    # `train --resume` completes from the previous checkpoint and re-logs identical metrics
    _assert_ok(fleet, "nt_corrupt_resume")
    out = fleet["procs"]["nt_corrupt_resume"].output()
    assert f"step_{newest} is unreadable" in out and f"from step {previous}" in out
    assert _status(run)["status"] == "finished" and (run / "final.json").exists()
    assert _metrics_bytes(run) == _metrics_bytes(fleet["root"] / "nt_a")


@pytest.mark.slow
# Regression (fixed): save(): `if target.exists(): return` keeps a corrupt step_N, so a run resumed
# past it never rewrites its final checkpoint, and every later load (load_params, pretrain_rl,
# probes) silently falls back to step N-2.
def test_resumed_run_rewrites_its_corrupt_final_checkpoint(fleet):
    _assert_ok(fleet, "nt_corrupt_resume")
    run, ref = fleet["root"] / "nt_corrupt", fleet["root"] / "nt_a"
    messages: list[str] = []
    restored = checkpoints.restore_latest(run / "checkpoints", _template(run), on_skip=messages.append)
    assert restored[0] == STEPS and messages == [], messages
    expected = checkpoints.restore(ref / "checkpoints", STEPS, _template(ref))
    chex.assert_trees_all_close(restored[1], expected, rtol=0, atol=0)


@pytest.mark.slow
def test_all_checkpoints_corrupt_is_a_clear_error(fleet, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(fleet["root"] / "nt_a", run)
    for d in (run / "checkpoints").iterdir():
        _corrupt_dir(d)
    messages: list[str] = []
    with pytest.raises(CheckpointError, match="no readable checkpoint"):
        checkpoints.restore_latest(run / "checkpoints", _template(run), on_skip=messages.append)
    assert len(messages) == len(_ckpt_steps(run))
    with pytest.raises(RunError, match="no readable checkpoint"):
        open_checkpoint(run)
    argv = ["train", "--preset", "tiny", "--regime", "next_token", "--out", str(run), "--quiet", "--resume"]
    for s in NT_SETS:
        argv += ["--set", s]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "no readable checkpoint" in err[-1] and err[-1].startswith("agentsim: error:")


# --------------------------------------------------------------------------------------------
# NaN guard


@pytest.mark.slow
def test_nan_guard_stops_names_the_step_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    real = train_mod.make_trainer
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        trainer = real(*args, **kwargs)
        def chunk(state):
            new_state, metrics = trainer.chunk(state)
            calls["n"] += 1
            if calls["n"] == 3:  # the chunk ending at step 6
                metrics = {**metrics, "losses/loss": metrics["losses/loss"] * np.nan}
            return new_state, metrics

        return dataclasses.replace(trainer, chunk=chunk)

    monkeypatch.setattr(train_mod, "make_trainer", poisoned)
    run = tmp_path / "run"
    with pytest.raises(TrainingStopped) as exc:
        train_mod.train(_nt_cfg(), run, on_message=lambda m: None)
    msg = str(exc.value)
    assert "step 6" in msg and "losses/loss" in msg and "step 4" in msg, msg
    status = _status(run)
    assert status["status"] == "failed" and status["step"] == 4 and "losses/loss" in status["reason"]
    assert _ckpt_steps(run) == [0, 2, 4]
    assert max(r["step"] for r in read_metrics(run)) == 4  # the bad chunk was not logged
    monkeypatch.setattr(train_mod, "make_trainer", real)
    step, state = checkpoints.restore_latest(run / "checkpoints", _template(run))
    assert step == 4
    leaves = jax.tree.leaves(state)
    assert all(np.isfinite(np.asarray(x)).all() for x in leaves if np.issubdtype(np.asarray(x).dtype, np.floating))


# --------------------------------------------------------------------------------------------
# unwritable directories, torn metrics


def _no_training(monkeypatch):
    """Fail the test if a training state is initialised or a chunk runs (building the datasets and
    the trainer first is allowed: train() validates those before it touches the run directory)."""
    real = train_mod.make_trainer

    def guarded(*args, **kwargs):
        trainer = real(*args, **kwargs)
        def boom(*a, **k):
            raise AssertionError("training started")

        return dataclasses.replace(trainer, init=boom, chunk=boom)

    monkeypatch.setattr(train_mod, "make_trainer", guarded)


def test_unwritable_parent_is_a_run_error_before_training(tmp_path, monkeypatch, capsys):
    parent = tmp_path / "locked"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        if os.access(parent, os.W_OK):
            pytest.skip("running as root: chmod does not stop writes")
        _no_training(monkeypatch)
        with pytest.raises(RunError, match="cannot write"):
            train_mod.train(_nt_cfg(), parent / "run")
        assert cli.main(["train", "--preset", "tiny", "--out", str(parent / "run"), "--quiet",
                         "--set", "log.wandb='disabled'"]) == 2
        assert "cannot write" in capsys.readouterr().err
    finally:
        parent.chmod(0o700)


def test_run_dir_under_a_file_is_a_run_error_before_training(tmp_path, monkeypatch, capsys):
    """Works even as root: the 'parent directory' is a regular file."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    _no_training(monkeypatch)
    with pytest.raises(RunError, match="cannot write"):
        train_mod.train(_nt_cfg(), blocker / "run")
    assert cli.main(["train", "--preset", "tiny", "--out", str(blocker / "run"), "--quiet",
                     "--set", "log.wandb='disabled'"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write" in err[0]


def test_resume_without_a_run_is_an_error(tmp_path, monkeypatch):
    _no_training(monkeypatch)
    with pytest.raises(RunError, match="no run to resume"):
        train_mod.train(_nt_cfg(), tmp_path / "nothing", resume=True)


# Regression (fixed): Run.truncate_metrics (and read_metrics): json.loads on every line, so a torn
# last line (killed or disk full mid-append; an rl line is ~1.5 kB per seed, so many seeds exceed
# one buffered write) makes --resume crash with JSONDecodeError.
def test_resume_tolerates_a_torn_last_metrics_line(tmp_path):
    cfg = _nt_cfg()
    run = Run(tmp_path / "run", cfg)
    run.log(2, {"losses/loss": np.array([1.0, 2.0])}, wall_time=1.0)
    run.log(4, {"losses/loss": np.array([3.0, 4.0])}, wall_time=2.0)
    with open(tmp_path / "run" / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "seed": 0, "losses/lo')
    resumed = Run(tmp_path / "run", cfg, resume=True)
    try:
        resumed.truncate_metrics(4)
    except json.JSONDecodeError as e:
        raise AssertionError(f"JSONDecodeError: {e}") from None
    assert [r["step"] for r in read_metrics(tmp_path / "run")] == [2, 2, 4, 4]


def test_checkpoint_round_trip_and_save_time(tmp_path, tmp_path_factory):
    cfg = _nt_cfg()
    trainer = train_mod.make_trainer(cfg, Layout.for_config(cfg.data))
    state = trainer.init(seed_keys(cfg))
    times = []
    for step in (0, 2, 4):
        t0 = time.perf_counter()
        checkpoints.save(tmp_path / "ck", step, state)
        times.append(time.perf_counter() - t0)
    save_s = float(np.median(times))
    print(f"checkpoint save: median {save_s:.3f} s over {len(times)} saves")
    _note(tmp_path_factory, checkpoint_save_s=[round(t, 3) for t in times])
    assert checkpoints.steps(tmp_path / "ck") == [0, 2, 4]
    step, restored = checkpoints.restore_latest(tmp_path / "ck", state)
    assert step == 4
    for x, y in zip(jax.tree.leaves(state), jax.tree.leaves(restored)):
        if jax.dtypes.issubdtype(np.asarray(x).dtype, jax.dtypes.prng_key):
            continue
        assert np.array_equal(np.asarray(x), np.asarray(y))


# --------------------------------------------------------------------------------------------
# Opened checkpoints are kept, keyed by their files


def test_an_opened_checkpoint_is_reused_until_its_files_change(tiny_next_token, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_next_token, run)
    first = open_checkpoint(run)
    assert open_checkpoint(run) is first  # the analyses' many reopenings read nothing
    leaf = jax.tree.leaves(first.params)[0]
    with pytest.raises(ValueError, match="read-only"):
        leaf[...] = 0  # shared between callers: nobody may change it in place
    newest, older = _ckpt_steps(run)[-1], _ckpt_steps(run)[-2]
    assert open_checkpoint(run, newest) is not first and open_checkpoint(run, newest).step == newest
    _corrupt_dir(run / "checkpoints" / f"step_{newest}")  # the same names, other contents
    assert open_checkpoint(run).step == older
    shutil.rmtree(run / "checkpoints" / f"step_{newest}")
    assert open_checkpoint(run).step == older
    with pytest.raises(RunError, match=f"no checkpoint at step {newest}"):
        open_checkpoint(run, newest)
