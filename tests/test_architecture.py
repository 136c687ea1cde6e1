"""The layering of ARCHITECTURE.md holds: every import (top-level or inside a function) points
down the stack, so a lower layer never needs a higher one."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("envs", "models", "experiments")  # folders at the top level, installed as agentsim.<folder>
LAYERS = [  # lowest first; a module may import its own layer and those below
    ("agentsim.envs",),
    ("agentsim.models",),
    ("agentsim.experiments.config", "agentsim.experiments.presets", "agentsim.experiments.statistics"),
    ("agentsim.experiments.runs",),
    ("agentsim.experiments.train",),
    ("agentsim.experiments.analysis",),
    ("agentsim.experiments.report",),
    ("agentsim.experiments.cli", "agentsim.experiments.bench", "agentsim.experiments.cost",
     "agentsim.experiments.scaling"),
]


def _layer(module: str) -> int | None:
    for i, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    return None


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}  # `from agentsim.experiments import cli`
    return out


def _module(path: Path) -> str:
    return ".".join(("agentsim", *path.relative_to(ROOT).with_suffix("").parts)).removesuffix(".__init__")


MODULES = sorted(p for d in PACKAGES for p in (ROOT / d).rglob("*.py"))
PYTHON = sorted(p for d in (*PACKAGES, "tests", "scripts", "benchmarks") for p in (ROOT / d).rglob("*.py"))


def test_every_package_module_has_a_layer():
    for path in MODULES:
        name = _module(path)
        if name != "agentsim.experiments":
            assert _layer(name) is not None, name


def test_no_bare_package_imports():
    """Only ``agentsim.<folder>`` is installed; a bare ``import envs`` would work from the repository
    root by accident (the folder is on sys.path there) and load a second copy of every module."""
    bare = [f"{p.relative_to(ROOT)}: {m}" for p in PYTHON for m in _imports(p)
            if m.partition(".")[0] in PACKAGES]
    assert not bare, bare


def test_the_bare_import_check_sees_bare_imports(tmp_path):
    f = tmp_path / "x.py"
    f.write_text("import envs.game\nfrom models import transformer\nfrom agentsim.experiments import cli\n")
    assert {m.partition(".")[0] for m in _imports(f)} & set(PACKAGES) == {"envs", "models"}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down(path):
    name = _module(path)
    own = _layer(name)
    if own is None:
        return
    for imported in _imports(path):
        target = _layer(imported)
        assert target is None or target <= own, f"{name} (layer {own}) imports {imported} (layer {target})"
