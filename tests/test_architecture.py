"""The layering of ARCHITECTURE.md holds: every import (top-level or inside a function) points
down the stack, so a lower layer never needs a higher one."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = [  # lowest first; a module may import its own layer and those below
    ("envs",),
    ("models",),
    ("experiments.config", "experiments.presets", "experiments.statistics"),
    ("experiments.runs",),
    ("experiments.train",),
    ("experiments.analysis",),
    ("experiments.report",),
    ("experiments.cli", "experiments.bench"),
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
            out |= {f"{node.module}.{a.name}" for a in node.names}  # `from experiments import cli`
    return out


MODULES = sorted(p for d in ("envs", "models", "experiments") for p in (ROOT / d).rglob("*.py"))


def test_every_package_module_has_a_layer():
    for path in MODULES:
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        if name != "experiments":
            assert _layer(name) is not None, name


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down(path):
    name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
    own = _layer(name)
    if own is None:
        return
    for imported in _imports(path):
        target = _layer(imported)
        assert target is None or target <= own, f"{name} (layer {own}) imports {imported} (layer {target})"
