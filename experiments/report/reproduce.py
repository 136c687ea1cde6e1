"""`agentsim reproduce`: train every regime, evaluate, probe, and write figures, results and
a report whose verdicts follow from the numbers by a stated rule.

Layout of ``OUT``: ``runs/<regime>/`` (ordinary run directories), ``figures/``,
``results.json`` (every number in the figures, win rates, simulator gap), ``REPORT.md`` and,
unless the runs' ``log.wandb`` is disabled, the figures as one wandb run under ``wandb/``.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path

import jax

from agentsim.envs import make_game
from agentsim.envs.solver import solvable, solved
from agentsim.experiments.analysis.behaviour import analyse_behaviour
from agentsim.experiments.analysis.change import analyse_change
from agentsim.experiments.analysis.layer_reset import analyse_layer_reset
from agentsim.experiments.analysis.lookahead import measure_lookahead
from agentsim.experiments.analysis.match_ceilings import match_ceilings
from agentsim.experiments.analysis.model import LoadedModel, parameter_count
from agentsim.experiments.analysis.probe_suite import analyse_probes
from agentsim.experiments.analysis.rl_amount import analyse_rl_amount, value_over_checkpoints
from agentsim.experiments.analysis.steering import analyse_steering
from agentsim.experiments.analysis.timeline import analyse_timeline
from agentsim.experiments.analysis.value_probes import measure_value
from agentsim.experiments.config import ConfigError, load_config
from agentsim.experiments.presets import BASE_PRESET, DEPTHS, PRESET_SEEDS, SIZES, STAGES, TARGETS, depth_stage
from agentsim.experiments.report import figures as F
from agentsim.experiments.report.claims import (claim_depth, flags, judge_all, judge_depth, lookahead_evidence, quality,
                                                targets_met)
from agentsim.experiments.report.report import report
from agentsim.experiments.runs import checkpoints, strict_json
from agentsim.experiments.runs.run import RunError, read_config, read_status
from agentsim.experiments.runs.wandb_log import log_analysis
from agentsim.experiments.train.loop import train

AGENTS = ("rl", "pretrain_rl", "rl_shared_value")  # the runs claim 1 measures, each beside next_token
# Every analysis, in the order run_analyses runs them ("simulator_value": claim 6's value measure of
# the simulators on persona games); the depth preset repeats those of claims 1, 3, 4 and 5 at each depth.
ANALYSES = ("value", "simulator_value", "probe_suite", "lookahead", "timeline", "change", "rl_amount", "layer_reset",
            "steering", "behaviour")
DEPTH_ANALYSES = ("value", "timeline", "change", "rl_amount")


def reproduce(preset: str, out: str | Path, *, force: bool = False, resume: bool = False,
              overrides: tuple[str, ...] = (), progress=None, on_message=print,
              probe_games: int | None = None, value_only: bool = False) -> dict:
    """Train every stage of the preset, then run every analysis at the preset's sizes
    (``value_only``: only the claim-1 value probes and figure)."""
    out = Path(out)
    if preset not in STAGES:
        raise ConfigError(f"unknown preset {preset!r}; known: {', '.join(STAGES)}")
    if probe_games is not None and probe_games < 50:
        raise ConfigError(f"probe_games must be at least 50, got {probe_games}")
    if out.exists() and not out.is_dir():
        raise RunError(f"{out} is a file, not a folder")
    if out.exists() and any(out.iterdir()):
        if not _is_reproduction(out):  # someone's folder: never write into it or delete it
            raise RunError(f"{out} is not empty and holds no reproduction; choose a new --out")
        if not (force or resume):
            raise RunError(f"{out} is not empty; pass --resume to finish it or --force to replace it")
        if force and not resume:
            shutil.rmtree(out)
    sizes = SIZES[preset] if probe_games is None else replace(SIZES[preset], probe_games=probe_games)
    base_preset = BASE_PRESET.get(preset, preset)
    seeds = PRESET_SEEDS[preset]
    game = load_config(base_preset, overrides=list(overrides)).data.game
    if not solvable(make_game(game)):  # before any training: the claims need exact values
        raise ConfigError(f"reproduce needs exact values on {game}, which has too many positions to solve here "
                          "(claims 1, 2, 5 and 6 read the solver's table); use a board of at most 6x4 or 5x5")
    started, started_load = time.time(), os.getloadavg()[0]
    timings, finals, dirs, carried = {}, {}, {}, []
    for name, stage in STAGES[preset]:
        run_dir = out / "runs" / name
        dirs[name] = run_dir
        if _trained_before(run_dir):
            carried.append(name)
        extra = [_resolve(o, out) for o in stage]
        if seeds:
            extra.append(f"train.seeds={seeds}")
        cfg = load_config(base_preset, overrides=extra + list(overrides))
        t0 = time.time()
        if read_status(run_dir).get("status") != "finished":
            train(cfg, run_dir, resume=(run_dir / "config.json").exists(), progress=progress,
                  on_message=on_message, wandb_group=wandb_group(out, run_dir))
        timings[name] = round(time.time() - t0, 1)
        finals[name] = json.loads((run_dir / "final.json").read_text())
    results = {"preset": preset, "game": game_facts(game, dirs), "sizes": asdict(sizes),
               "quality": quality(finals, game), "references": match_ceilings(game), "finals": finals}
    t0 = time.time()
    if preset in DEPTHS:
        analyses, figures, by_depth = depth_analyses(dirs, out, sizes, DEPTHS[preset], on_message, results["quality"])
        results["depth"] = by_depth
        claims = {"D": claim_depth({d: a["change"] for d, a in analyses["depths"].items() if "change" in a},
                                   {d: v["claims"] for d, v in by_depth.items()})}
    else:
        analyses, figures = run_analyses(dirs, out / "figures", sizes, on_message, root=out, value_only=value_only)
        claims = None
    results["analyses"] = analyses
    strict_json.write(out / "analyses.json", analyses, indent=None)  # kept even if judging fails
    claims = claims or judge_all(results)
    results["claims"] = {k: c.as_dict() | {"flags": flags(c, results["quality"])} for k, c in claims.items()}
    results["lookahead"] = lookahead_evidence(analyses.get("lookahead"))  # not judged: evidence in the report
    if preset in DEPTHS:
        figures += F.claims_by_depth(results, out / "figures")
    timings["analyses"] = round(time.time() - t0, 1)
    results.update(timings=timings, total_s=round(time.time() - started, 1), carried=carried,
                   figures=[str(p.relative_to(out)) for p in figures], machine=machine(started_load))
    results["targets"] = targets_met(TARGETS.get(preset), results["quality"], results["total_s"], tuple(carried))
    strict_json.write(out / "results.json", results)
    (out / "REPORT.md").write_text(report(results))
    log = read_config(dirs[next(iter(dirs))]).log  # the runs' own setting (tests: disabled)
    log_analysis(out, figures, {"claims": {k: {"verdict": c["verdict"], "interval": c["interval"]}
                                           for k, c in results["claims"].items()},
                                "quality": results["quality"], "seconds": timings},
                 mode=log.wandb, project=log.project)
    return results


def machine(load_at_start: float) -> dict:
    """Where the wall time was measured: CPU model and cores, JAX's backend and device, and the
    1-minute load average at the start and end (other work on the machine slows a reproduction)."""
    names = [line.split(":", 1)[1].strip() for line in _read_lines("/proc/cpuinfo") if line.startswith("model name")]
    cpu = names[0] if names else platform.processor() or platform.machine()
    return {"cpu": cpu, "cpus": os.cpu_count(), "backend": jax.default_backend(),
            "device": jax.devices()[0].device_kind, "jax": jax.__version__,
            "load_average_start": round(load_at_start, 2), "load_average_end": round(os.getloadavg()[0], 2)}


def _read_lines(path: str) -> list[str]:
    try:
        return Path(path).read_text().splitlines()
    except OSError:
        return []


def depth_analyses(dirs: dict[str, Path], out: Path, sizes, depths: tuple[int, ...], on_message, quality_: dict):
    """The depth preset: the analyses of claims 1, 3, 4 and 5 on each depth's runs (figures under
    ``figures/L<depth>/``) and those claims judged at each depth, flagged by that depth's subjects."""
    analyses: dict = {"depths": {}, "seconds": {}}
    figures: list[Path] = []
    by_depth: dict[int, dict] = {}
    for d in depths:
        prefix = depth_stage(d, "")
        have = {name[len(prefix):]: path for name, path in dirs.items() if name.startswith(prefix)}
        on_message(f"analyses at {d} layers")
        a, paths = run_analyses(have, out / "figures" / f"L{d}", sizes, on_message, root=out, only=DEPTH_ANALYSES)
        analyses["depths"][d] = a
        analyses["seconds"].update({f"{name} at {d} layers": secs for name, secs in a.pop("seconds").items()})
        figures += paths
        judged_here = judge_depth({"analyses": a})
        own = {name[len(prefix):]: q for name, q in quality_.items() if name.startswith(prefix)}
        by_depth[d] = {"claims": {k: c.as_dict() | {"flags": flags(c, own)} for k, c in judged_here.items()}}
    return analyses, figures, by_depth


def wandb_group(out: Path, run_dir: Path) -> str:
    """A stage's wandb group: its run directory relative to the folder holding the reproduction
    (``paper/runs/rl``), the same on every machine, and apart from another reproduction's."""
    out = Path(out).absolute()
    return str(Path(run_dir).absolute().relative_to(out.parent))


def game_facts(game_name: str, dirs: dict[str, Path]) -> dict:
    """What the report states at its top: the game and board, how many positions it has (against
    which the networks' size is read), its value under perfect play, the networks' size."""
    game = make_game(game_name)
    facts: dict = {"name": game.name, "title": describe(game), "positions": None, "perfect_play": None}
    if solvable(game):
        sg = solved(game)
        facts["positions"] = int(sg.num_states)
        facts["perfect_play"] = {1.0: "a first-player win", 0.0: "a draw", -1.0: "a second-player win"}[
            float(sg.minimax_x[sg.root])]
    first = next(iter(dirs.values()), None)
    if first is not None:
        facts["parameters"] = parameter_count(read_config(first))
    return facts


def describe(game) -> str:
    if game.name == "tictactoe":
        return "tic-tac-toe (3×3)"
    return f"connect-four {game.width}×{game.height} ({game.k} in a row)"


def _trained_before(run_dir: Path) -> bool:
    """Whether an earlier invocation did some of this stage's work (finished it, or saved a
    checkpoint past step 0): a stage created but killed before its first checkpoint starts over."""
    return (read_status(run_dir).get("status") == "finished"
            or any(step > 0 for step in checkpoints.steps(run_dir / "checkpoints")))


def _is_reproduction(out: Path) -> bool:
    """A folder ``reproduce`` wrote: only its own entries (runs/, figures/, results, report, wandb/)."""
    own = {"runs", "figures", "results.json", "REPORT.md", "analyses.json", "wandb"}
    return (out / "runs").is_dir() and {p.name for p in out.iterdir()} <= own


def _resolve(override: str, out: Path) -> str:
    while "{run:" in override:
        i = override.index("{run:")
        j = override.index("}", i)
        override = override[:i] + str(out / "runs" / override[i + 5:j]) + override[j + 1:]
    return override


def relative_paths(obj, root: Path):
    """``obj`` with every string naming a path under ``root`` made relative to it: results and
    figures name runs as the reader's copy of the folder has them, never a temporary path. Only
    strings with a separator are paths here (a bare name such as a persona's stays as it is),
    and the walk builds no ``Path`` for anything else: analyses hold millions of numbers."""
    prefix = str(Path(root).absolute()) + os.sep

    def walk(obj):
        if isinstance(obj, dict):
            return {k: walk(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [walk(v) for v in obj]
        if isinstance(obj, str) and os.sep in obj:
            path = str(Path(obj).absolute())
            return path[len(prefix):] if path.startswith(prefix) else obj
        return obj

    return walk(obj)


def run_analyses(dirs: dict[str, Path], fig_dir: Path, sizes, on_message=print, root: Path | None = None,
                 value_only: bool = False, only: tuple[str, ...] | None = None) -> tuple[dict, list[Path]]:
    """Every analysis of the preset in order, each figure drawn as its numbers arrive.
    ``sizes``: the preset's ``AnalysisSizes``; ``root``: run paths are reported relative to it;
    ``only``: the analyses to run (names as in ``ANALYSES``), all by default."""
    root = Path(root or fig_dir.parent)
    only = ("value",) if value_only else ANALYSES if only is None else only
    have = dict(dirs)
    results: dict = {}
    paths: list[Path] = []
    seconds: dict[str, float] = {}
    clock = [time.time()]

    def lap(name: str) -> None:  # wall time of each analysis, reported beside the stages'
        now = time.time()
        seconds[name] = round(now - clock[0], 1)
        clock[0] = now
        on_message(f"analysis {name}: {seconds[name]:.0f} s")

    def model(name: str) -> LoadedModel:
        return LoadedModel.from_run(have[name])

    # CLAIM 1: VALUE WHERE IT LIVES (F0): each agent on its own games, beside the simulator.
    value: dict = {"agents": {}, "simulators": {}}
    if "next_token" in have:
        simulator = model("next_token")
        for agent in AGENTS:
            if agent in have:
                # A next_token run on this agent's own games (stage next_token_of_<agent>), where the preset has one.
                of_agent = model(f"next_token_of_{agent}") if f"next_token_of_{agent}" in have else None
                value["agents"][agent] = relative_paths(
                    measure_value(model(agent), simulator, sizes.value_games, num_rollouts=sizes.value_rollouts,
                                  agent_simulator=of_agent, decisions_per_game=sizes.value_decisions), root)
        for name in ("next_token", "next_token_mtp"):
            if name in have and "simulator_value" in only:
                value["simulators"][name] = relative_paths(measure_value(None, model(name), sizes.value_games), root)
    results["value"] = value
    if value["agents"]:
        paths += F.value_where_it_lives(value["agents"], fig_dir)
    lap("value")

    # WHAT AND WHERE: the probe suite on the main regimes (F2, F3) and F8.
    suites = {name: analyse_probes(have[name], num_games=sizes.probe_games) for name in ("next_token", "rl", "pretrain_rl")
              if name in have and "probe_suite" in only}
    if suites:
        results["probe_suite"] = suites
        paths += F.probe_grid(suites, fig_dir)
        paths += F.persona_by_move({k: suites[k] for k in ("next_token", "pretrain_rl") if k in suites}, fig_dir)
        lap("probe_suite")
    if "next_token" in have and "lookahead" in only:
        # LOOK-AHEAD (F10): the move two plies on, on each agent's own games and on persona games.
        results["lookahead"] = relative_paths(measure_lookahead(
            {a: model(a) for a in AGENTS if a in have}, model("next_token"),
            model("random_init") if "random_init" in have else None, num_games=sizes.value_games,
            persona_games=sizes.probe_games), root)
        paths += F.lookahead(results["lookahead"], fig_dir)
        lap("lookahead")
    if value["simulators"].keys() >= {"next_token", "next_token_mtp"}:
        paths += F.mtp_vs_ntp(value["simulators"], fig_dir)

    # WHEN: probes at every checkpoint (F1; claim 3 reads the board probe of next_token).
    timelines = {k: analyse_timeline(have[k], num_games=sizes.probe_games) for k in ("next_token", "rl", "pretrain_rl")
                 if k in have and "timeline" in only}
    if timelines:
        results["timeline"] = timelines
        paths += F.timeline(timelines, fig_dir, target="board_mover", name="f1_probe_layer_by_checkpoint")
        paths += F.timeline(timelines, fig_dir, target="value_mover", name="f1b_value_probe_layer_by_checkpoint")
        lap("timeline")

    if "pretrain_rl" in have and "next_token" in have and "change" in only:
        # WHERE RL CHANGES THE NETWORK (F4, F4b: weights, representation, patching) and how that grows with RL (F7).
        results["change"] = analyse_change(have["next_token"], have["pretrain_rl"],
                                           control_dir=have.get("continued_next_token"), num_games=sizes.probe_games,
                                           games_per_cell=sizes.games_per_cell)
        paths += F.plot_change(results["change"], fig_dir)
        lap("change")
    if "pretrain_rl" in have and "next_token" in have and "rl_amount" in only:
        amount = analyse_rl_amount(have["next_token"], have["pretrain_rl"])
        # As many games as claim 1's (one compiled rollout for both; the games cost little beside V^π).
        amount["value"] = value_over_checkpoints(have["pretrain_rl"], sizes.value_games, sizes.rl_checkpoints,
                                                 num_rollouts=sizes.value_rollouts,
                                                 decisions_per_game=sizes.value_decisions)
        results["rl_amount"] = amount
        paths += F.rl_amount(amount, fig_dir)
        lap("rl_amount")
    if "pretrain_rl" in have and "next_token" in have and "layer_reset" in only:
        # LAYER RESET (F5).
        results["layer_reset"] = analyse_layer_reset(have["next_token"], have["pretrain_rl"],
                                                     num_games=sizes.probe_games, games_per_cell=sizes.games_per_cell)
        paths += F.plot_layer_reset(results["layer_reset"], fig_dir)
        lap("layer_reset")

    # STEERING (F6) and BEHAVIOUR (F9).
    # The grid is the preset's: the CLI's full one (9 strengths, 3 random directions) takes minutes per run.
    if "steering" in only:
        results["steering"] = {k: relative_paths(analyse_steering(
            have[k], alphas=sizes.steer_alphas, num_games=min(sizes.probe_games, 1000),
            games_per_cell=sizes.steer_games_per_cell, num_random=sizes.steer_random), root)
            for k in sizes.steer_runs if k in have}
        for stage, res in results["steering"].items():
            paths += F.plot_steering(res, fig_dir, name=f"f6_steering_{stage}")
        lap("steering")
    if "behaviour" in only:
        results["behaviour"] = analyse_behaviour(
            {k: str(v) for k, v in have.items()}, pretrained_dir=str(have["next_token"]) if "next_token" in have else None,
            num_games=sizes.probe_games, games_per_cell=sizes.games_per_cell)
        paths += F.plot_behaviour(results["behaviour"], fig_dir)
        lap("behaviour")
    results["seconds"] = seconds
    return relative_paths(results, root), paths
