"""The project installs one import package, ``agentsim``, from its top-level folders: editable (this
test session's own install) and as a wheel. A user's folder named like one of ours must not shadow it,
and nothing named ``envs``, ``models`` or ``experiments`` may be installed at the top level."""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("envs", "models", "experiments")

PROBE = """
import importlib.util, json, sys
import agentsim.envs, agentsim.models, agentsim.experiments.cli, agentsim.experiments.train.ppo
from agentsim.envs import make_game
game = make_game("tictactoe")
state = game.step(game.init(), 4)
print(json.dumps({
    "files": {m: getattr(sys.modules[m], "__file__") for m in
              ("agentsim.envs", "agentsim.models", "agentsim.experiments.train.ppo")},
    "bare": {n: importlib.util.find_spec(n) is not None for n in ("envs", "experiments")},
    "models_is_users": importlib.util.find_spec("models").origin,
    "to_move": int(game.current_player(state)),
}))
"""


def _probe(cwd: Path, env_path: list[str] | None = None) -> dict:
    (cwd / "models").mkdir()
    (cwd / "models" / "__init__.py").write_text("USERS = True\n")  # the user's own models/ folder
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if env_path:
        env["PYTHONPATH"] = os.pathsep.join(env_path)
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_editable_install_is_one_agentsim_package(tmp_path):
    got = _probe(tmp_path)
    for module, f in got["files"].items():
        assert Path(f).resolve().is_relative_to(ROOT), (module, f)
    assert got["bare"] == {"envs": False, "experiments": False}  # nothing installed under the folders' names
    assert Path(got["models_is_users"]).resolve() == (tmp_path / "models" / "__init__.py").resolve()
    assert got["to_move"] == 1


def test_console_script_runs():
    script = Path(sys.executable).with_name("agentsim")
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "reproduce" in out.stdout


@pytest.mark.slow
def test_wheel_installs_one_agentsim_package(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for d in PACKAGES:
        shutil.copytree(ROOT / d, src / d, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(dist), str(src)], check=True, timeout=300)
    wheel, = dist.glob("agentsim-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    name, version = wheel.name.split("-")[:2]
    assert {n.split("/")[0] for n in names} == {"agentsim", f"{name}-{version}.dist-info"}
    for d in PACKAGES:  # every module of every folder is in the wheel, under agentsim/
        for f in (ROOT / d).rglob("*.py"):
            assert "agentsim/" + f.relative_to(ROOT).as_posix() in names, f
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "agentsim = agentsim.experiments.cli:main" in entry_points
    assert "gymnasium" not in entry_points  # gymnasium 1.x never reads a gymnasium.envs entry point

    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, timeout=300)
    run = tmp_path / "run"
    run.mkdir()
    got = _probe(run, [str(target)])
    for module, f in got["files"].items():
        assert Path(f).resolve().is_relative_to(target.resolve()), (module, f)
    assert got["bare"] == {"envs": False, "experiments": False}
    assert got["to_move"] == 1
