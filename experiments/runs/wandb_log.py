"""The wandb mirror, laid out as cluster users read it: one wandb run per seed of a run
directory (group = the run directory relative to the folder it was made in, job type = the
regime) and one run per analysis of a reproduction (group = the reproduction folder's name, job
type ``analysis``). A group never holds an absolute path: the same runs get the same groups on
every machine and mount, and no home or temporary folder is published with them.

Offline by default (``log.wandb``): the runs are written under ``<dir>/wandb/offline-run-*``
and ``wandb sync`` uploads them later; nothing needs a login or the network. Nothing is ever
read back: run directories stay the source of truth.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from agentsim.experiments.runs import strict_json

IDS_FILE = "wandb_ids.json"  # per seed; a resumed run continues the same wandb runs


def _wandb():
    os.environ.setdefault("WANDB_SILENT", "true")
    import wandb

    return wandb


def _init(mode: str, project: str, directory: Path, *, stats: bool = True, **kwargs):
    """One more wandb run in this process beside any already open (one per seed)."""
    wandb = _wandb()
    # console="off": several runs share the process's stdout; system metrics once per process.
    settings = wandb.Settings(console="off", x_disable_stats=not stats, silent=True)
    return wandb.init(project=project, mode=mode, dir=str(directory), reinit="create_new",
                      settings=settings, **kwargs)


def seed_run_ids(path: Path, seeds: tuple[int, ...]) -> dict[int, str]:
    """The wandb run id of each seed, made once per run directory and kept in it, so that a
    resumed run (``--resume``) logs into the same wandb runs and ``--force`` gets new ones."""
    file = path / IDS_FILE
    ids = {int(k): v for k, v in json.loads(file.read_text()).items()} if file.exists() else {}
    if any(s not in ids for s in seeds):
        ids.update({s: secrets.token_hex(4) for s in seeds if s not in ids})
        strict_json.write(file, {str(k): v for k, v in sorted(ids.items())}, indent=None)
    return ids


def start_seed_runs(path: Path, config: dict, seeds: tuple[int, ...], *, mode: str, project: str,
                    regime: str, group: str) -> list:
    """One wandb run per seed, in ``group`` (the run directory, named relative to its output folder)."""
    path = Path(path).absolute()
    ids = seed_run_ids(path, seeds)
    return [_init(mode, project, path, stats=i == 0, id=ids[seed], resume="allow", group=group,
                  job_type=regime, name=f"{path.name}/seed{seed}", config={**config, "seed": seed})
            for i, seed in enumerate(seeds)]


def per_seed(tree: Any, i: int, n: int) -> Any:
    """``tree`` with every list of one value per seed (length ``n``) replaced by seed ``i``'s."""
    if isinstance(tree, dict):
        return {k: per_seed(v, i, n) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)) and len(tree) == n:
        return tree[i]
    return tree


def flat(tree: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a/b": leaf}`` of nested dicts, keeping the numbers, booleans and strings."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat(v, key + "/"))
        elif isinstance(v, (bool, int, float, str)):
            out[key] = v
    return out


def final_summary(final: dict, i: int) -> dict[str, Any]:
    """Seed ``i``'s numbers of ``final.json`` as summary keys ``final/...`` (never a key that
    is also logged per step, which wandb would overwrite with the last step's value)."""
    seeds = final["seeds"]
    own = per_seed({k: v for k, v in final.items() if k != "seeds"}, i, len(seeds))
    return flat(own, "final/")


def log_analysis(folder: str | Path, pngs: list[Path], summary: dict, *, mode: str, project: str) -> Path | None:
    """The figures of an analysis (PNG files) as images, and ``summary`` (nested dicts of numbers
    and strings) as the run summary, in one wandb run grouped with ``folder``. Returns the wandb
    run's folder (None when ``mode`` is disabled)."""
    if mode == "disabled":
        return None
    folder = Path(folder).absolute()
    wandb = _wandb()
    run = _init(mode, project, folder, group=folder.name, job_type="analysis", name=f"{folder.name}/analysis")
    try:
        images = {f"figures/{Path(p).stem}": wandb.Image(str(p)) for p in pngs if Path(p).suffix == ".png"}
        if images:
            run.log(images, step=0)
        run.summary.update(flat(summary))
        return Path(run.dir).parent
    finally:
        run.finish()
