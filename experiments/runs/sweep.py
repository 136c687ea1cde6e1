"""Sweeps: grid or random search over config fields × seeds.

A sweep spec (TOML) names a preset, fixed overrides, and the fields to vary:

    preset = "quick"
    method = "grid"               # or "random" with num_samples
    seeds = [0, 1, 2]             # vmapped inside every member
    [set]
    "train.regime" = "next_token"
    [grid]
    "model.num_layers" = [1, 2]
    "train.lr" = [1e-3, 3e-3]
    [random]                      # method = "random": {choice = [...]}, {uniform = [a, b]}, {log_uniform = [a, b]}
    "train.lr" = { log_uniform = [1e-4, 1e-2] }
    [ray]                         # --backend ray: what each member task asks of a node
    num_cpus = 1
    num_gpus = 0
    resources = { big_memory = 1 }

Every member is an ordinary ``agentsim train`` in its own process (so one failing member
cannot stop the others), run by local processes or by tasks on a Ray cluster; seeds are
vmapped inside each member. Ray members need nothing from the driver's machine but the run
directories (absolute paths, on a filesystem every node mounts): the code travels with the
job (``runtime_env`` py_modules: one ``agentsim`` package staged from ``envs``, ``models`` and
``experiments``).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from agentsim.experiments.config import ConfigError, load_config
from agentsim.experiments.runs import strict_json
from agentsim.experiments.runs.run import last_metrics

HEADLINE = ("eval/simulator_gap", "eval/move_loss", "eval/loss_vs_random", "eval/loss_vs_perfect",
            "charts/episodic_return")


def load_spec(path: str | Path) -> dict:
    try:
        spec = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"sweep spec {path} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"sweep spec {path}: {e}") from None
    known = {"preset", "method", "seeds", "num_samples", "seed", "set", "grid", "random", "name", "ray"}
    for k in spec:
        if k not in known:
            raise ConfigError(f"sweep spec: unknown key {k!r}; known: {', '.join(sorted(known))}")
    method = spec.get("method", "grid")
    if method not in ("grid", "random"):
        raise ConfigError(f"sweep spec: method must be grid or random, got {method!r}")
    if method == "random" and int(spec.get("num_samples", 0)) <= 0:
        raise ConfigError("sweep spec: method = 'random' needs num_samples > 0")
    ray_options(spec)  # validate
    return spec


def ray_options(spec: dict) -> dict:
    """The spec's ``[ray]`` table as Ray task options (default: one CPU per member)."""
    table = spec.get("ray", {})
    resources = table.get("resources", {}) if isinstance(table, dict) else None
    if not isinstance(resources, dict):
        raise ConfigError("sweep spec: ray must be a table of num_cpus, num_gpus and a resources table")
    unknown = sorted(set(table) - {"num_cpus", "num_gpus", "resources"})
    if unknown:
        raise ConfigError(f"sweep spec: unknown key ray.{unknown[0]}; known: num_cpus, num_gpus, resources")
    options = {"num_cpus": table.get("num_cpus", 1), "num_gpus": table.get("num_gpus", 0), "resources": resources}
    for name, v in [("num_cpus", options["num_cpus"]), ("num_gpus", options["num_gpus"]),
                    *((f"resources.{k}", v) for k, v in resources.items())]:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise ConfigError(f"sweep spec: ray.{name} must be a number >= 0, got {v!r}")
    return options


def _literal(v) -> str:
    return json.dumps(v) if not isinstance(v, str) else repr(v)


def _sample(dist, rng: np.random.Generator, field: str):
    if not isinstance(dist, dict) or len(dist) != 1:
        raise ConfigError(f"sweep spec: random.{field} must be one of {{choice|uniform|log_uniform = [...]}}")
    (kind, arg), = dist.items()
    if kind == "choice":
        return arg[int(rng.integers(len(arg)))]
    if kind == "uniform":
        return float(rng.uniform(arg[0], arg[1]))
    if kind == "log_uniform":
        return float(math.exp(rng.uniform(math.log(arg[0]), math.log(arg[1]))))
    raise ConfigError(f"sweep spec: random.{field}: unknown distribution {kind!r}")


def members(spec: dict) -> list[dict]:
    """Each member: a name and its overrides; every member's config is validated here."""
    fixed = [f"{k}={_literal(v)}" for k, v in spec.get("set", {}).items()]
    if "seeds" in spec:
        fixed.append(f"train.seeds={_literal(list(spec['seeds']))}")
    points: list[dict] = []
    if spec.get("method", "grid") == "grid":
        grid = spec.get("grid", {})
        for k, v in grid.items():
            if not isinstance(v, list) or not v:
                raise ConfigError(f"sweep spec: grid.{k} must be a non-empty list")
        for values in itertools.product(*grid.values()):
            points.append(dict(zip(grid, values)))
    else:
        rng = np.random.default_rng(spec.get("seed", 0))
        for _ in range(int(spec["num_samples"])):
            points.append({k: _sample(d, rng, k) for k, d in spec.get("random", {}).items()})
    out = []
    for i, point in enumerate(points or [{}]):
        overrides = fixed + [f"{k}={_literal(v)}" for k, v in point.items()]
        load_config(spec.get("preset"), overrides=overrides)  # validate before any work
        label = "__".join(f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
                          for k, v in point.items()) or "base"
        out.append({"name": f"{i:03d}__{label}", "point": point, "overrides": overrides})
    return out


def member_command(spec: dict, member: dict, out: Path) -> list[str]:
    cmd = [sys.executable, "-m", "agentsim.experiments.cli", "train", "--quiet", "--out", str(out / member["name"])]
    if spec.get("preset"):
        cmd += ["--preset", spec["preset"]]
    for o in member["overrides"]:
        cmd += ["--set", o]
    return cmd


def _run_local(cmd: list[str], env: dict | None = None) -> dict:
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False,
                          env=os.environ.copy() if env is None else env)
    err = (proc.stderr.strip().splitlines() or [""])[-1]
    return {"returncode": proc.returncode, "error": err if proc.returncode else "", "seconds": time.time() - t0}


SKIPPED = {"returncode": 0, "error": "", "seconds": 0.0, "node_id": None}  # finished before (--resume)


def run_sweep(spec_path: str | Path, out: str | Path, *, backend: str = "local", parallel: int = 1,
              address: str | None = None, resume: bool = False, on_result=None) -> list[dict]:
    spec = load_spec(spec_path)
    mems = members(spec)
    out = Path(out).absolute()  # Ray workers run in another working directory
    if out.exists() and any(out.iterdir()) and not resume:
        raise ConfigError(f"{out} is not empty; pass --resume to rerun unfinished members")
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.toml").write_text(Path(spec_path).read_text())
    todo = []
    for m in mems:
        status_file = out / m["name"] / "status.json"
        done = status_file.exists() and json.loads(status_file.read_text()).get("status") == "finished"
        cmd = member_command(spec, m, out)
        if resume and (out / m["name"] / "config.json").exists() and not done:
            cmd.append("--resume")
        todo.append((m, cmd, done))
    started = time.time()
    if backend == "local":
        with ThreadPoolExecutor(max(1, parallel)) as pool:
            results = list(pool.map(lambda t: SKIPPED if t[2] else {**_run_local(t[1]), "node_id": None}, todo))
    elif backend == "ray":
        results = _run_ray([t[1] for t in todo], [t[2] for t in todo], address, ray_options(spec))
    else:
        raise ConfigError(f"--backend must be local or ray, got {backend!r}")
    table = []
    for (m, _, _), res in zip(todo, results):
        metrics = last_metrics(out / m["name"])
        table.append({"name": m["name"], "point": m["point"],
                      "status": "finished" if res["returncode"] == 0 else "failed",
                      "error": res["error"], "seconds": round(res["seconds"], 1), "node_id": res["node_id"],
                      "metrics": {k: float(np.mean(v)) for k, v in metrics.items() if k in HEADLINE}})
    summary = {"spec": str(spec_path), "backend": backend, "wall_s": round(time.time() - started, 1),
               "members": table}
    strict_json.write(out / "sweep.json", summary)
    return table


def _code_runtime_env(staging: Path) -> dict:
    """Ray ``runtime_env`` that ships this code to every node: one ``agentsim`` package folder
    staged from the three packages as they are imported here (an editable checkout, whose folders
    sit at the repository's top level, or an installed wheel alike), without caches."""
    import shutil

    import agentsim.envs as envs
    import agentsim.experiments as experiments
    import agentsim.models as models

    package = staging / "agentsim"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('"""agentsim as Ray shipped it to this node."""\n')
    for m in (envs, models, experiments):
        src = Path(m.__file__).parent
        shutil.copytree(src, package / m.__name__.rpartition(".")[2],
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return {"py_modules": [str(package)], "excludes": ["__pycache__", "*.pyc"]}


def _member_task(cmd: list[str]) -> dict:
    """One member on whichever node Ray chose: ``agentsim train`` with this node's Python and the
    code Ray shipped with the job (first on PYTHONPATH, so no install on the node shadows it)."""
    import ray

    import agentsim
    import agentsim.experiments as experiments

    shipped = [str(Path(agentsim.__path__[0]).parent)]  # the staged package Ray put first on sys.path
    env = os.environ.copy()
    env["PYTHONPATH"] = os.pathsep.join(shipped + [p for p in [env.get("PYTHONPATH")] if p])
    res = _run_local([sys.executable, *cmd[1:]], env=env)
    return {**res, "node_id": ray.get_runtime_context().get_node_id(), "code": experiments.__file__}


def _run_ray(cmds: list[list[str]], done: list[bool], address: str | None, options: dict) -> list[dict]:
    try:
        import ray
    except ImportError:
        raise ConfigError("--backend ray needs ray: pip install 'agentsim[ray]'") from None
    if ray.is_initialized():  # its job would not ship our code (Ray uploads local code per job only)
        raise ConfigError("--backend ray opens its own Ray job; call ray.shutdown() before run_sweep")
    staging = tempfile.TemporaryDirectory(prefix="agentsim-ray-")
    ray.init(address=address, log_to_driver=False, runtime_env=_code_runtime_env(Path(staging.name)))
    try:
        task = ray.remote(_member_task).options(**options)
        futures = [None if d else task.remote(c) for c, d in zip(cmds, done)]
        results = []
        for f in futures:
            try:
                results.append(SKIPPED if f is None else ray.get(f))
            except ray.exceptions.RayError as e:  # the task itself died (node lost, runtime env failed)
                msg = (str(e).strip().splitlines() or [type(e).__name__])[-1]
                results.append({"returncode": -1, "error": f"ray: {msg}", "seconds": 0.0, "node_id": None})
        return results
    finally:
        ray.shutdown()
        staging.cleanup()


# The metric a wandb sweep ranks members by: one the regime logs at every step to metrics.jsonl
# (next_token evaluates its held-out loss, PPO plays matches; random_init trains and logs nothing).
REGIME_METRIC = {"next_token": "eval/simulator_gap", "rl": "eval/loss_vs_random", "pretrain_rl": "eval/loss_vs_random"}


def sweep_metric(spec: dict) -> str | None:
    """The metric every member of the sweep logs, or None when its members train regimes that log
    different ones (or none)."""
    regimes = {load_config(spec.get("preset"), overrides=m["overrides"]).train.regime for m in members(spec)}
    return REGIME_METRIC.get(regimes.pop()) if len(regimes) == 1 else None


def export_wandb(spec_path: str | Path, out_yaml: str | Path, run_root: str = "runs/wandb") -> str:
    """A wandb sweep YAML whose command runs ``agentsim train`` (for labs using wandb agents),
    ranking members by a metric the swept regime logs (lower is better for each)."""
    spec = load_spec(spec_path)
    metric = sweep_metric(spec)
    params = {}
    for k, v in spec.get("grid", {}).items():
        params[k] = {"values": v}
    for k, d in spec.get("random", {}).items():
        (kind, arg), = d.items()
        params[k] = ({"values": arg} if kind == "choice" else
                     {"distribution": "uniform" if kind == "uniform" else "log_uniform_values",
                      "min": arg[0], "max": arg[1]})
    fixed = spec.get("set", {})
    lines = ["program: agentsim", f"method: {spec.get('method', 'grid')}"]
    lines += (["metric:", f"  name: {metric}", "  goal: minimize"] if metric else
              ["# no metric: the members' regimes log none in common"])
    lines += ["command:", "  - agentsim", "  - train", "  - --out-root", f"  - {run_root}"]
    if spec.get("preset"):
        lines += ["  - --preset", f"  - {spec['preset']}"]
    for k, v in fixed.items():
        lines += ["  - --set", f"  - {json.dumps(f'{k}={_literal(v)}')}"]
    if "seeds" in spec:
        lines += ["  - --set", f"  - {json.dumps('train.seeds=' + _literal(list(spec['seeds'])))}"]
    lines += ["  - --set", "  - \"log.wandb='online'\"", "  - ${args_no_hyphens}", "parameters:"]
    for k, p in params.items():
        lines.append(f"  {k}:")
        for pk, pv in p.items():
            lines.append(f"    {pk}: {json.dumps(pv)}")
    text = "\n".join(lines) + "\n"
    Path(out_yaml).write_text(text)
    return text
