"""Sweeps: a real 2-config x 2-seed grid run locally (and, slow, on a two-node Ray cluster), a
failing member, invalid specs, random search, wandb export and resume."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from agentsim.experiments import cli
from agentsim.experiments.config import ConfigError, load_config
from agentsim.experiments.runs import sweep
from agentsim.experiments.runs.run import read_metrics
from agentsim.experiments.runs.sweep import export_wandb, load_spec, members, run_sweep

GRID_SPEC = """\
preset = "tiny"
method = "grid"
seeds = [0, 1]
[set]
"log.wandb" = "disabled"
"train.regime" = "next_token"
[grid]
"model.num_layers" = [1, 2]
"""
NAMES = ["000__num_layers=1", "001__num_layers=2"]
TIMES: dict[str, float] = {}


def _note(tmp_path_factory, **numbers) -> None:
    """Measured numbers, kept beside the session's temporary files (pytest-of-USER/pytest-N)."""
    with open(tmp_path_factory.getbasetemp() / "agentsim_timings.jsonl", "a") as f:
        f.write(json.dumps(numbers) + "\n")


def _spec(tmp: Path, text: str, name: str = "spec.toml") -> Path:
    path = tmp / name
    path.write_text(text)
    return path


@pytest.fixture(scope="module", autouse=True)
def _member_env():
    """Members are separate processes on few cores; they use this test session's compile cache
    (tests/conftest.py), so the Ray members reuse what the local members compiled."""
    import jax

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OPENBLAS_NUM_THREADS", "1")
        if jax.config.jax_compilation_cache_dir:
            mp.setenv("AGENTSIM_CACHE", jax.config.jax_compilation_cache_dir)
        yield


@pytest.fixture(scope="module")
def grid_sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("grid")
    spec = _spec(tmp, GRID_SPEC)
    t0 = time.time()
    table = run_sweep(spec, tmp / "out", parallel=2)
    TIMES["local_grid_s"] = time.time() - t0
    print(f"local 2x2 sweep: {TIMES['local_grid_s']:.1f} s")
    _note(tmp_path_factory, local_grid_sweep_s=round(TIMES["local_grid_s"], 1))
    return spec, tmp / "out", table


def _check_grid(out: Path, table: list[dict], backend: str):
    assert [m["name"] for m in table] == NAMES
    for m in table:
        assert m["status"] == "finished", m
        assert m["error"] == ""
        assert {"eval/simulator_gap", "eval/move_loss"} <= set(m["metrics"]), m["metrics"]
        rows = read_metrics(out / m["name"])
        assert {r["seed"] for r in rows} == {0, 1}  # both seeds vmapped inside the member
        assert json.loads((out / m["name"] / "status.json").read_text())["status"] == "finished"
        cfg = json.loads((out / m["name"] / "config.json").read_text())
        assert cfg["model"]["num_layers"] == m["point"]["model.num_layers"]
        assert cfg["train"]["seeds"] == [0, 1] and cfg["log"]["wandb"] == "disabled"
    summary = json.loads((out / "sweep.json").read_text())
    assert summary["backend"] == backend
    assert [m["name"] for m in summary["members"]] == NAMES
    assert all(m["status"] == "finished" and m["metrics"] for m in summary["members"])
    if backend == "local":
        assert all(m["node_id"] is None for m in summary["members"])
    assert (out / "sweep.toml").exists()


@pytest.mark.slow
def test_local_grid_sweep_finishes_with_a_table(grid_sweep):
    _, out, table = grid_sweep
    _check_grid(out, table, "local")
    assert [m["point"] for m in table] == [{"model.num_layers": 1}, {"model.num_layers": 2}]


@pytest.fixture(scope="module")
def failing_sweep(tmp_path_factory):
    """random_init finishes (final evaluation only); pretrain_rl passes validation but its
    ppo.pretrained run does not exist, so it fails at run time. Run through the CLI."""
    tmp = tmp_path_factory.mktemp("failing")
    missing = tmp / "no_such_run"
    spec = _spec(tmp, f"""\
preset = "tiny"
seeds = [0, 1]
[set]
"log.wandb" = "disabled"
"ppo.pretrained" = "{missing}"
[grid]
"train.regime" = ["random_init", "pretrain_rl"]
""")
    out = tmp / "out"
    buf = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(buf):
        mp.setenv("COLUMNS", "250")  # the rich table does not wrap
        rc = cli.main(["sweep", str(spec), "--out", str(out), "--parallel", "2"])
    return {"spec": spec, "out": out, "missing": missing, "rc": rc, "printed": buf.getvalue()}


@pytest.mark.slow
def test_failing_member_does_not_stop_the_others(failing_sweep):
    f = failing_sweep
    assert f["rc"] == 1
    assert "1/2 members finished" in f["printed"]
    summary = json.loads((f["out"] / "sweep.json").read_text())
    ok, bad = summary["members"]
    assert ok["point"] == {"train.regime": "random_init"} and ok["status"] == "finished" and ok["error"] == ""
    assert bad["point"] == {"train.regime": "pretrain_rl"} and bad["status"] == "failed"
    assert "\n" not in bad["error"] and str(f["missing"]) in bad["error"]
    assert bad["error"].startswith("agentsim: error:")
    assert (f["out"] / ok["name"] / "final.json").exists()
    assert bad["name"] in f["printed"] and "failed" in f["printed"]


def _spy_members(monkeypatch) -> list[list[str]]:
    seen: list[list[str]] = []
    real = sweep._run_local

    def spy(cmd):
        seen.append(cmd)
        return real(cmd)

    monkeypatch.setattr(sweep, "_run_local", spy)
    return seen


@pytest.mark.slow
def test_resume_reruns_only_unfinished_members(grid_sweep, tmp_path, monkeypatch):
    spec, out = grid_sweep[0], tmp_path / "out"
    shutil.copytree(grid_sweep[1], out)
    done, todo = out / NAMES[0], out / NAMES[1]
    # member 1 was interrupted after its last checkpoint, before its final evaluation
    (todo / "status.json").write_text(json.dumps({"status": "interrupted", "step": 4}))
    (todo / "final.json").unlink()
    untouched = {p: p.stat().st_mtime_ns for p in done.rglob("*") if p.is_file()}
    metrics_before = (todo / "metrics.jsonl").read_bytes()
    with pytest.raises(ConfigError, match="--resume"):
        run_sweep(spec, out, parallel=2)  # not empty, and no resume
    seen = _spy_members(monkeypatch)
    table = run_sweep(spec, out, parallel=2, resume=True)
    assert [m["status"] for m in table] == ["finished", "finished"]
    assert table[0]["seconds"] == 0.0 and table[1]["seconds"] > 0
    assert len(seen) == 1 and str(todo) in seen[0] and seen[0][-1] == "--resume"
    assert {p: p.stat().st_mtime_ns for p in untouched} == untouched
    assert (todo / "final.json").exists()
    assert json.loads((todo / "status.json").read_text())["status"] == "finished"
    assert (todo / "metrics.jsonl").read_bytes() == metrics_before  # continued, not retrained
    assert table[1]["metrics"] == grid_sweep[2][1]["metrics"]


@pytest.mark.slow
def test_resume_retries_failed_members(failing_sweep, tmp_path, monkeypatch):
    spec, out = failing_sweep["spec"], tmp_path / "out"
    shutil.copytree(failing_sweep["out"], out)
    first = json.loads((out / "sweep.json").read_text())["members"]
    done = out / first[0]["name"]
    untouched = {p: p.stat().st_mtime_ns for p in done.rglob("*") if p.is_file()}
    seen = _spy_members(monkeypatch)
    table = run_sweep(spec, out, resume=True, parallel=2)
    assert [m["status"] for m in table] == ["finished", "failed"]
    assert table[0]["seconds"] == 0.0 and table[1]["seconds"] > 0
    assert len(seen) == 1 and first[1]["name"] in " ".join(seen[0])
    # a member that never got a run directory is started afresh, one that did is continued
    assert ("--resume" in seen[0]) == (out / first[1]["name"] / "config.json").exists()
    assert {p: p.stat().st_mtime_ns for p in untouched} == untouched
    assert table[1]["error"] == first[1]["error"]


# --------------------------------------------------------------------------------------------
# specs (no training)


@pytest.mark.parametrize("text, match", [
    ('preset = "tiny"\nmethods = "grid"\n', "unknown key 'methods'"),
    ('preset = "tiny"\nmethod = "bayes"\n', "method"),
    ('preset = "tiny"\nmethod = "random"\n', "num_samples"),
    ('preset = "tiny"\n[grid]\n"model.num_layers" = 2\n', "grid.model.num_layers"),
    ('preset = "tiny"\n[grid]\n"model.num_layers" = []\n', "grid.model.num_layers"),
    ('preset = "tiny"\n[grid]\n"model.num_layers" = ["two", 3]\n', "model.num_layers"),
    ('preset = "tiny"\n[grid]\n"model.num_heads" = [2, 3]\n', "model.num_heads"),
    ('preset = "tiny"\n[grid]\n"model.depth" = [1, 2]\n', "model.depth"),
    ('preset = "tiny"\nseeds = [0, 0]\n', "train.seeds"),
    ('preset = "tiny"\n[set]\n"train.regime" = "pretrain_rl"\n', "ppo.pretrained"),
    ('preset = "nope"\n', "unknown preset"),
    ('preset = "tiny"\nmethod = "random"\nnum_samples = 2\n[random]\n"train.lr" = { beta = [1, 2] }\n', "beta"),
    ('preset = "tiny"\nmethod = "random"\nnum_samples = 2\n[random]\n"train.lr" = [1, 2]\n', "random.train.lr"),
    ('preset = "tiny"\n[grid\n', "sweep spec"),
    ('preset = "tiny"\nray = 2\n', "ray must be a table"),
    ('preset = "tiny"\n[ray]\nnum_gpu = 1\n', "ray.num_gpu"),
    ('preset = "tiny"\n[ray]\nnum_cpus = -1\n', "ray.num_cpus"),
    ('preset = "tiny"\n[ray]\nnum_gpus = true\n', "ray.num_gpus"),
    ('preset = "tiny"\n[ray]\nresources = 1\n', "ray must be a table"),
    ('preset = "tiny"\n[ray]\nresources = { member = "one" }\n', "ray.resources.member"),
])
def test_invalid_spec_is_a_config_error_before_any_work(tmp_path, text, match, monkeypatch):
    def no_work(*a, **k):
        raise AssertionError("a member started")

    monkeypatch.setattr(sweep, "_run_local", no_work)
    monkeypatch.setattr(sweep, "_run_ray", no_work)
    spec = _spec(tmp_path, text)
    with pytest.raises(ConfigError, match=match):
        run_sweep(spec, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_spec_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_spec(tmp_path / "nope.toml")


def test_cli_invalid_spec_is_one_line_exit_2(tmp_path, capsys):
    spec = _spec(tmp_path, 'preset = "tiny"\n[grid]\n"model.num_heads" = [3]\n')
    assert cli.main(["sweep", str(spec), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.num_heads" in err[0]


RANDOM_SPEC = """\
preset = "tiny"
method = "random"
num_samples = 7
seed = {seed}
seeds = [0, 1, 2]
[set]
"log.wandb" = "disabled"
[random]
"train.lr" = {{ log_uniform = [1e-4, 1e-2] }}
"ppo.clip" = {{ uniform = [0.1, 0.3] }}
"model.num_layers" = {{ choice = [1, 2, 3] }}
"""


def test_random_search_members(tmp_path):
    mems = members(load_spec(_spec(tmp_path, RANDOM_SPEC.format(seed=3))))
    assert len(mems) == 7 and len({m["name"] for m in mems}) == 7
    for m in mems:
        p = m["point"]
        assert set(p) == {"train.lr", "ppo.clip", "model.num_layers"}
        assert 1e-4 <= p["train.lr"] <= 1e-2
        assert 0.1 <= p["ppo.clip"] <= 0.3
        assert p["model.num_layers"] in (1, 2, 3)
        cfg = load_config("tiny", overrides=m["overrides"])  # the overrides carry the point
        assert cfg.train.lr == pytest.approx(p["train.lr"]) and cfg.ppo.clip == pytest.approx(p["ppo.clip"])
        assert cfg.model.num_layers == p["model.num_layers"] and cfg.train.seeds == (0, 1, 2)
        assert cfg.log.wandb == "disabled"
    lrs = [m["point"]["train.lr"] for m in mems]
    assert len(set(lrs)) == 7
    again = members(load_spec(_spec(tmp_path, RANDOM_SPEC.format(seed=3), "again.toml")))
    assert again == mems  # deterministic for a seed
    other = members(load_spec(_spec(tmp_path, RANDOM_SPEC.format(seed=4), "other.toml")))
    assert [m["point"] for m in other] != [m["point"] for m in mems]


def test_export_wandb_yaml(tmp_path):
    spec = _spec(tmp_path, GRID_SPEC.replace('"model.num_layers" = [1, 2]',
                                             '"model.num_layers" = [1, 2]\n"train.lr" = [0.001, 0.003]'))
    out = tmp_path / "sweep.yaml"
    text = export_wandb(spec, out)
    doc = yaml.safe_load(out.read_text())
    assert text == out.read_text()
    assert doc["method"] == "grid"
    assert doc["metric"] == {"name": "eval/simulator_gap", "goal": "minimize"}  # what next_token logs
    assert doc["parameters"] == {"model.num_layers": {"values": [1, 2]}, "train.lr": {"values": [0.001, 0.003]}}
    cmd = doc["command"]
    assert cmd[:2] == ["agentsim", "train"] and "${args_no_hyphens}" in cmd
    assert cmd[cmd.index("--preset") + 1] == "tiny"
    # what a wandb agent would run parses and validates as `agentsim train`
    point = ["model.num_layers=2", "train.lr=0.003"]
    argv = [a for a in cmd[1:] if a != "${args_no_hyphens}"] + point
    args = cli.build_parser().parse_args(argv)
    assert args.command == "train" and args.positional == point
    cfg = load_config(args.preset, args.config, list(args.overrides) + list(args.positional))
    assert cfg.model.num_layers == 2 and cfg.train.lr == 0.003 and cfg.train.seeds == (0, 1)
    assert cfg.train.regime == "next_token" and cfg.log.wandb == "online"


def test_export_wandb_metric_follows_the_swept_regime(tmp_path):
    rl = _spec(tmp_path, GRID_SPEC.replace('"train.regime" = "next_token"', '"train.regime" = "rl"'), "rl.toml")
    assert yaml.safe_load(export_wandb(rl, tmp_path / "rl.yaml"))["metric"]["name"] == "eval/loss_vs_random"
    mixed = _spec(tmp_path, GRID_SPEC.replace('"train.regime" = "next_token"\n', "").replace(
        "[grid]", '[grid]\n"train.regime" = ["next_token", "rl"]'), "mixed.toml")
    assert "metric" not in yaml.safe_load(export_wandb(mixed, tmp_path / "mixed.yaml"))  # no metric both log


@pytest.mark.slow
def test_exported_metric_is_one_every_member_logs(grid_sweep, tmp_path):
    spec, out, table = grid_sweep
    metric = yaml.safe_load(export_wandb(spec, tmp_path / "sweep.yaml"))["metric"]["name"]
    for m in table:
        assert all(metric in row for row in read_metrics(out / m["name"])), m["name"]


def test_export_wandb_random(tmp_path):
    spec = _spec(tmp_path, RANDOM_SPEC.format(seed=0))
    doc = yaml.safe_load(export_wandb(spec, tmp_path / "s.yaml"))
    assert doc["method"] == "random"
    assert doc["parameters"]["train.lr"] == {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2}
    assert doc["parameters"]["ppo.clip"] == {"distribution": "uniform", "min": 0.1, "max": 0.3}
    assert doc["parameters"]["model.num_layers"] == {"values": [1, 2, 3]}


def test_cli_export(tmp_path, capsys):
    spec = _spec(tmp_path, GRID_SPEC)
    assert cli.main(["sweep", str(spec), "--export", "wandb"]) == 0
    assert (tmp_path / "spec.wandb.yaml").exists() and "wandb sweep" in capsys.readouterr().out


# Regression (fixed): run_sweep: member commands get --out relative to the driver's cwd, but Ray
# workers run in the raylet's cwd (where `ray start` ran, or on another machine), so `agentsim sweep
# spec.toml --out DIR --backend ray` with a relative DIR writes the runs elsewhere and the table has
# no metrics.
def test_member_commands_use_absolute_run_dirs(tmp_path, monkeypatch):
    seen = []

    def fake_ray(cmds, done, address, options):
        seen.extend(cmds)
        assert options == {"num_cpus": 1, "num_gpus": 0, "resources": {}}  # no [ray] table: one CPU each
        return [{"returncode": 0, "error": "", "seconds": 0.0, "node_id": None} for _ in cmds]

    monkeypatch.setattr(sweep, "_run_ray", fake_ray)
    monkeypatch.chdir(tmp_path)
    _spec(tmp_path, GRID_SPEC)
    run_sweep("spec.toml", "rel_out", backend="ray", address="127.0.0.1:1")
    assert len(seen) == 2
    for cmd in seen:
        assert Path(cmd[cmd.index("--out") + 1]).is_absolute(), cmd


def test_ray_table_becomes_task_options(tmp_path):
    spec = load_spec(_spec(tmp_path, GRID_SPEC + '[ray]\nnum_gpus = 1\nresources = { member = 1, big = 0.5 }\n'))
    assert sweep.ray_options(spec) == {"num_cpus": 1, "num_gpus": 1, "resources": {"member": 1, "big": 0.5}}


# --------------------------------------------------------------------------------------------
# Ray


def _processes_mentioning(text: str) -> dict[int, str]:
    """Live (non-zombie) processes whose command line contains ``text``."""
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != os.getpid():
            try:
                with open(f"/proc/{name}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                        continue
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
            except (OSError, IndexError):
                continue
            if text in cmdline:
                out[int(name)] = cmdline[:200]
    return out


@pytest.fixture
def two_node_cluster(monkeypatch):
    """Two Ray nodes on this machine (Ray's own ``Cluster``): a head and a worker, each with one
    CPU and one ``member`` slot, so that members asking for a slot run one per node at a time.
    Everything Ray writes (sessions, sockets, the current-cluster address file) goes to a
    temporary dir of our own (RAY_TMPDIR), so no other Ray on the machine is touched. Teardown,
    whatever happened: shut both nodes down, kill anything of ours still running, and fail if
    anything was (a stray raylet, GCS or worker)."""
    pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's socket paths have a length limit
    monkeypatch.setenv("RAY_TMPDIR", str(temp))
    t0 = time.time()
    cluster = Cluster()
    try:
        head = cluster.add_node(num_cpus=1, resources={"member": 1}, include_dashboard=False)
        worker = cluster.add_node(num_cpus=1, resources={"member": 1})
        cluster.wait_for_nodes()
        TIMES["ray_start_s"] = time.time() - t0
        assert _processes_mentioning(str(temp)), "the cluster's processes are not found by their temp dir"
        yield cluster.address, {head.node_id, worker.node_id}
    finally:
        cluster.shutdown()
        deadline = time.time() + 20
        while _processes_mentioning(str(temp)) and time.time() < deadline:
            time.sleep(0.5)
        stray = _processes_mentioning(str(temp))
        for pid in stray:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(temp, ignore_errors=True)
        assert not stray, f"Ray processes left after shutdown: {stray}"


RAY_SPEC = GRID_SPEC + """[ray]
num_cpus = 1
resources = { member = 1 }
"""


@pytest.mark.slow
def test_grid_sweep_on_a_two_node_ray_cluster(two_node_cluster, tmp_path, tmp_path_factory, monkeypatch):
    """Members land on both nodes and run the code Ray shipped with them, not the driver's
    checkout, from a driver whose working directory is elsewhere."""
    address, node_ids = two_node_cluster
    spec = _spec(tmp_path, RAY_SPEC)
    seen: list[dict] = []
    real = sweep._run_ray

    def spy(*args):
        seen.extend(real(*args))
        return seen

    monkeypatch.setattr(sweep, "_run_ray", spy)
    monkeypatch.chdir(tmp_path)
    t0 = time.time()
    table = run_sweep(spec, "out", backend="ray", address=address)
    TIMES["ray_grid_s"] = time.time() - t0
    print(f"ray start: {TIMES.get('ray_start_s', float('nan')):.1f} s, ray 2x2 sweep: {TIMES['ray_grid_s']:.1f} s")
    _note(tmp_path_factory, ray_start_s=round(TIMES.get("ray_start_s", float("nan")), 1),
          ray_grid_sweep_s=round(TIMES["ray_grid_s"], 1))
    _check_grid(tmp_path / "out", table, "ray")
    recorded = [m["node_id"] for m in json.loads((tmp_path / "out" / "sweep.json").read_text())["members"]]
    assert recorded == [m["node_id"] for m in table] == [r["node_id"] for r in seen]
    assert set(recorded) == node_ids  # one member on each node
    repo = Path(sweep.__file__).resolve().parents[2]
    for r in seen:
        shipped = Path(r["code"]).resolve().parent
        assert not shipped.is_relative_to(repo)
        assert shipped.is_relative_to(Path(os.environ["RAY_TMPDIR"]))  # Ray's runtime_resources of this cluster
        assert (shipped / "runs" / "sweep.py").read_bytes() == Path(sweep.__file__).read_bytes()
