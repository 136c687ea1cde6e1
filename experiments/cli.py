"""`agentsim`: the one command-line entry point.

Bad input is one line on stderr and exit code 2 (no traceback); nothing is overwritten.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, NamedTuple

DESCRIPTION = """\
agentsim: does the way a network is trained decide whether it behaves as an agent or as a
simulator, and where in the network each kind of processing lives?

Small transformers are trained on tic-tac-toe move sequences as a simulator (next_token on
games of scripted personas), as an agent (rl: PPO to win) or both (pretrain_rl), then opened
up with per-layer probes against random-init and shuffled-label controls.

Start with:  agentsim reproduce --preset quick --out runs/quick
"""

EPILOG_CONFIG = """\
config: start from --preset, then --config FILE.toml, then --set section.field=value
(repeatable), e.g. --set model.num_layers=4 --set train.seeds=[0,1,2,3,4]
--set 'data.mixture={random=1.0, perfect=2.0}'. Sections: data, model, train, ppo, log.
`agentsim config --preset quick > my.toml` writes every field, documented, as a file --config reads."""


class UserError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


def _enable_compile_cache() -> None:
    import jax

    if jax.config.jax_compilation_cache_dir:  # already configured (tests, a parent process)
        return
    cache = Path(os.environ.get("AGENTSIM_CACHE", Path.home() / ".cache" / "agentsim" / "xla"))
    try:
        cache.mkdir(parents=True, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", str(cache))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    except OSError:
        pass


@contextmanager
def _progress(enabled: bool = True):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    if not enabled:
        yield None
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), transient=False) as p:
        yield p


def _config(args, extra=()):
    from agentsim.experiments.config import load_config

    return load_config(args.preset, args.config, list(args.overrides) + list(extra))


def cmd_references(args) -> int:
    from agentsim.envs import make_game
    from agentsim.envs.solver import solvable
    from agentsim.experiments.analysis.match_ceilings import match_ceilings

    try:
        game = make_game(args.game)
    except ValueError as e:
        raise UserError(str(e)) from None
    if not solvable(game):
        raise UserError(f"references need exact values on {args.game}, which has too many positions to solve here")
    rows = match_ceilings(args.game)
    opponents = sorted({k.split("_vs_")[1] for k in rows["best possible"] if "_as_" not in k})
    cols = [f"{m}_vs_{o}" for o in opponents for m in ("loss", "win")]
    print(f"{game.name}: exact rates from the solver's table (mean of X and O, as the match evaluation counts)")
    print(f"{'player':<18}" + "".join(f"{c.replace('_', ' '):>18}" for c in cols))
    for name, row in rows.items():
        print(f"{name:<18}" + "".join(f"{row[c]:>18.4f}" for c in cols))
    return 0


def cmd_data(args) -> int:
    from dataclasses import replace

    from agentsim.envs.dataset import generate

    if args.games <= 0:
        raise UserError(f"--games must be positive, got {args.games}")
    mixture = None
    if args.mix:
        mixture = {}
        for item in args.mix.split(","):
            name, _, w = item.partition("=")
            try:
                mixture[name.strip()] = float(w) if w else 1.0
            except ValueError:
                raise UserError(f"--mix: weight of {name!r} is not a number: {w!r}") from None
    out = Path(args.out)
    if out.is_dir():
        raise UserError(f"{out} is a directory; give a file path such as {out / 'games.npz'}")
    if out.exists() and not args.force:
        raise UserError(f"{out} exists; pass --force to overwrite it")
    if not out.parent.is_dir():
        raise UserError(f"directory {out.parent} does not exist")
    if not os.access(out.parent, os.W_OK):
        raise UserError(f"directory {out.parent} is not writable")
    # Only the data section matters here: --mix replaces the preset's mixture before validation,
    # and the PPO pool is set aside (on a board too big to solve, the default mixture and pool
    # name `perfect`, which needs the table, even when --mix does not).
    extra = ["ppo.opponents={'random': 1.0}"] + ([f"data.mixture={mixture!r}"] if mixture else [])
    cfg = _config(args, extra).data
    if cfg.source:
        raise UserError(f"agentsim data writes persona games; an agent's own games (data.source={cfg.source!r}) are "
                        "played by `agentsim train --regime next_token --set data.source=RUN`, which keeps them in "
                        "its run directory as agent_games.npz")
    cfg = replace(cfg, num_games=args.games, seed=args.seed, persona_prompt=args.persona_prompt,
                  outcome_token=args.outcome_token)
    try:
        data = generate(cfg)
    except ValueError as e:  # the mixture or game named on the command line
        raise UserError(str(e)) from None
    tmp = out.with_name(out.name + ".tmp")
    try:
        data.save(tmp)
        os.replace(tmp, out)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write {out}: {e.strerror}") from None
    summary = data.summary()
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _check_resume_config(cfg, out: Path) -> None:
    """A resumed run keeps its saved config; overrides that would change it are an error, not
    silently dropped."""
    from agentsim.experiments.runs.store import flat_config, flatten

    saved, given = flat_config(out), flatten(cfg.to_dict())
    diff = [f"{k} (saved {saved.get(k)!r}, given {given.get(k)!r})" for k in sorted(set(saved) | set(given))
            if saved.get(k) != given.get(k)]
    if diff:
        more = f" and {len(diff) - 4} more" if len(diff) > 4 else ""
        raise UserError(f"--resume continues {out} with its saved config, which these settings would change: "
                        f"{'; '.join(diff[:4])}{more}; drop them to resume, or train into a new directory")


def cmd_train(args) -> int:
    import time

    from agentsim.experiments.train.loop import train

    extra = ([f"train.regime={args.regime!r}"] if args.regime else []) + list(args.positional)
    cfg = _config(args, extra)
    if bool(args.out) == bool(args.out_root):
        raise UserError("give exactly one of --out DIR or --out-root ROOT")
    if args.out_root:  # CleanRL-style unique name
        args.out = str(Path(args.out_root) / f"{cfg.data.game}__{cfg.train.regime}__"
                       f"{'-'.join(map(str, cfg.train.seeds))}__{int(time.time())}")
    from agentsim.experiments.runs.run import is_run_dir

    if args.resume and (extra or args.overrides or args.config) and is_run_dir(args.out):
        _check_resume_config(cfg, Path(args.out))
    with _progress(not args.quiet) as progress:
        result = train(cfg, args.out, resume=args.resume, force=args.force, progress=progress)
    if result.interrupted:
        return 130
    from agentsim.experiments.runs.store import FINAL, HEADLINE, headline

    head = headline(Path(args.out), _warn)  # the numbers `agentsim runs` shows for this run
    shown = {FINAL + k: head.get(FINAL + k, "not played (no table)") for k in HEADLINE}  # 7×6: no perfect
    print(f"finished {args.out} (seed means of final.json, as `agentsim runs` shows them): {_headline_text(shown)}")
    return 0


def cmd_probe(args) -> int:
    import numpy as np

    from agentsim.experiments.runs import strict_json

    _require_runs(args.run)
    if args.suite or args.timeline:
        from agentsim.experiments.analysis.probe_suite import analyse_probes
        from agentsim.experiments.analysis.timeline import analyse_timeline

        if args.suite:
            res = analyse_probes(args.run, num_games=args.games)
            strict_json.write(Path(args.run) / "probe_suite.json", res, indent=None)
            for target, entry in res["targets"].items():
                for probe, results in (("linear", entry), ("mlp", entry.get("mlp", {}))):
                    for kind in ("trained", "random_init", "step0", "shuffled", "control_task"):
                        if results.get(kind):
                            scores = np.mean([r["score"] for r in results[kind]], 0)
                            print(f"{target:15s} {probe:6s} {kind:12s} {entry['kind']} by layer: "
                                  + " ".join(f"{v:.3f}" for v in scores))
            print(f"wrote {Path(args.run) / 'probe_suite.json'}")
        if args.timeline:
            res = analyse_timeline(args.run, num_games=args.games)
            strict_json.write(Path(args.run) / "timeline.json", res, indent=None)
            for target, per_ckpt in res["targets"].items():
                for step, scores in zip(res["steps"], per_ckpt):
                    print(f"{target:15s} step {step:6d}: " + " ".join(f"{v:.3f}" for v in np.mean(scores, 0)))
            print(f"wrote {Path(args.run) / 'timeline.json'}")
        return 0
    from agentsim.experiments.analysis.model import LoadedModel
    from agentsim.experiments.analysis.value_probes import ROLLOUTS, measure_value
    from agentsim.experiments.runs.run import read_config

    _require_table("probe (claim 1's value measure)", args.run)
    cfg = read_config(args.run)
    agent = cfg.train.regime in ("rl", "pretrain_rl")
    simulator = args.simulator or (cfg.ppo.pretrained if cfg.train.regime == "pretrain_rl" else None)
    if agent and not simulator:
        raise UserError(f"{args.run} is an agent ({cfg.train.regime}): name the next_token run to compare it with, "
                        "--simulator DIR (same seeds)")
    if not agent and cfg.train.regime != "next_token":
        raise UserError(f"{args.run} is a {cfg.train.regime} run: probe an agent (rl, pretrain_rl) or a next_token run")
    _require_runs(simulator)
    if simulator and list(read_config(simulator).train.seeds) != list(cfg.train.seeds):
        raise UserError(f"{simulator} has other seeds than {args.run}; the comparison is paired by seed")
    res = measure_value(LoadedModel.from_run(args.run) if agent else None,
                        LoadedModel.from_run(simulator if agent else args.run), num_games=args.games,
                        num_rollouts=args.rollouts or ROLLOUTS, decisions_per_game=args.decisions_per_game)
    out = Path(args.run) / "value_probes.json"
    strict_json.write(out, res, indent=None)
    for dataset, d in res["datasets"].items():
        for target, entry in d["targets"].items():
            ceiling = np.mean([c["test_r2"][0] for c in entry["ceiling"]])
            print(f"{dataset} / {target} (ceiling {ceiling:.3f})")
            for net, per_seed in entry["networks"].items():
                r2 = np.mean([r["test_r2"] for r in per_seed], 0)
                print(f"  {net:20s} R² by layer: " + " ".join(f"{v:.3f}" for v in r2)
                      + f"   chosen on validation: {[r['layer'] for r in per_seed]}")
    print(f"wrote {out}")
    return 0


def cmd_reproduce(args) -> int:
    from agentsim.experiments.report.reproduce import reproduce

    with _progress(not args.quiet) as progress:
        results = reproduce(args.preset, args.out, force=args.force, resume=args.resume,
                            overrides=tuple(args.overrides), progress=progress,
                            probe_games=args.probe_games, value_only=args.value_only)
    from agentsim.experiments.report.claims import TITLES

    for number, claim in results["claims"].items():
        print(f"claim {number} ({TITLES[number]}): {claim['verdict']}")
    carried = results.get("carried")
    resumed = f" (resumed: {', '.join(carried)} trained before, not counted)" if carried else ""
    print(f"wrote {args.out}/REPORT.md, results.json, figures/ in {results['total_s']:.0f} s{resumed}")
    return 0


def _warn(message: str) -> None:
    """Something skipped or set aside that the user should know of: one line on stderr."""
    print(f"agentsim: warning: {message}", file=sys.stderr)


def _console():
    """Rich's console; piped, a table keeps its full width (rich would wrap it at 80 columns)."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=100_000)


def _headline_text(head: dict) -> str:
    """Headline metrics as `train` prints them and `runs` shows them: full names, 3 decimals."""
    return ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in head.items())


def cmd_runs(args) -> int:
    from agentsim.experiments.runs import strict_json
    from agentsim.experiments.runs.store import list_runs

    rows = list_runs(args.paths, args.where, args.status, args.regime, on_problem=_warn)
    if args.json:
        print(strict_json.dumps(rows, indent=2))
        return 0
    from rich.table import Table

    table = Table("run", "regime", "status", "step", "seeds",
                  "headline (seed mean; final/: final.json, eval/: last logged step)")
    for r in rows:
        table.add_row(r["path"], str(r["regime"]), str(r["status"]), str(r["step"]), str(r["seeds"]),
                      _headline_text(r["headline"]))
    _console().print(table)
    return 0


def _writable(out: Path) -> Path:
    """``out``, once it is clear (before any work) that it can be written: its nearest existing
    folder must be a writable directory."""
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise UserError(f"cannot write {out}: {parent} is not a writable directory")
    return out


def cmd_compare(args) -> int:
    import math

    from agentsim.experiments.report.figures import plot_comparison
    from agentsim.experiments.runs import strict_json
    from agentsim.experiments.runs.store import INTERVAL_TEXT, compare

    out = _writable(Path(args.out) if args.out else Path("compare") / args.metric.replace("/", "_"))
    comparison = compare(args.runs, args.metric, on_problem=_warn)
    from rich.table import Table

    def number(x: float) -> str:
        return f"{x:.4f}" if math.isfinite(x) else "n/a"

    table = Table("config (what differs)", "seeds", "mean ± SD", "IQM", "95% t-interval of the mean",
                  title=f"{args.metric}: {comparison.quantity}", caption=f"{INTERVAL_TEXT}; n/a with one seed")
    for g in comparison.groups:
        table.add_row(g.label, str(g.n_seeds), f"{number(g.mean)} ± {number(g.sd)}", number(g.iqm),
                      f"[{number(g.ci_low)}, {number(g.ci_high)}]")
    _console().print(table)
    summary_path = out.with_name(out.name + ".json")
    try:
        paths = plot_comparison(comparison, out)
        strict_json.write(summary_path, comparison.as_json())
    except OSError as e:
        raise UserError(f"cannot write {out}: {e.strerror or e}") from None
    print("wrote " + ", ".join(str(p) for p in paths + [summary_path]))
    return 0


def cmd_sweep(args) -> int:
    from agentsim.experiments.runs.sweep import export_wandb, run_sweep

    if args.export:
        if args.export != "wandb":
            raise UserError(f"--export supports only 'wandb', got {args.export!r}")
        out = args.out or str(Path(args.spec).with_suffix(".wandb.yaml"))
        export_wandb(args.spec, out)
        print(f"wrote {out}; run it with: wandb sweep {out} && wandb agent SWEEP_ID")
        return 0
    if not args.out:
        raise UserError("--out DIR is required to run a sweep")
    table = run_sweep(args.spec, args.out, backend=args.backend, parallel=args.parallel,
                      address=args.address, resume=args.resume)
    from rich.table import Table

    t = Table("member", "status", "seconds", "headline metrics (seed mean)", "error")
    for m in table:
        t.add_row(m["name"], m["status"], str(m["seconds"]),
                  ", ".join(f"{k.split('/')[-1]}={v:.3f}" for k, v in m["metrics"].items()), m["error"])
    _console().print(t)
    failed = sum(m["status"] != "finished" for m in table)
    print(f"{len(table) - failed}/{len(table)} members finished; table in {args.out}/sweep.json")
    return 1 if failed else 0


def _require_table(what: str, *paths) -> None:
    """One line, exit code 2, before any work, when a run's board is too big to solve and
    ``what`` reads the solver's table."""
    from agentsim.envs import make_game
    from agentsim.envs.solver import solvable
    from agentsim.experiments.runs.run import read_config

    for p in paths:
        if p:
            game = read_config(p).data.game
            if not solvable(make_game(game)):
                raise UserError(f"{what} needs exact values on {game}, which has too many positions to solve here; "
                                "on this board use train, data (unlabelled), probe --suite or --timeline (the "
                                "targets that need no table)")


def _require_runs(*paths) -> None:
    from agentsim.experiments.runs.run import is_run_dir

    for p in paths:
        if p and not is_run_dir(p):
            raise UserError(f"{p} is not a run directory (no config.json and status.json)")


def _output(out: str | None, default: Path) -> Path:
    path = Path(out) if out else default
    if not path.parent.is_dir():
        raise UserError(f"directory {path.parent} does not exist")
    return path


def _save_analysis(result: dict, out: Path, plot, table: str | None = None) -> list[Path]:
    """What every analysis subcommand does last: JSON, its figure beside it, a table, a line."""
    from agentsim.experiments.runs import strict_json

    strict_json.write(out, result)
    paths = plot(result, out.parent)
    if table:
        print(table)
    print("wrote " + ", ".join(str(p) for p in [out, *paths]))
    return paths


def cmd_change(args) -> int:
    from agentsim.experiments.analysis.change import analyse_change
    from agentsim.experiments.report.figures import plot_change
    from agentsim.experiments.report.tables import change_table

    _require_runs(args.pretrained, args.tuned, args.control)
    _require_table("change (its value-probe change)", args.pretrained)
    out = _output(args.out, Path(args.tuned) / "change.json")
    result = analyse_change(args.pretrained, args.tuned, args.control, num_games=args.games,
                            games_per_cell=args.games_per_cell)
    _save_analysis(result, out, plot_change, change_table(result))
    return 0


def cmd_lookahead(args) -> int:
    from agentsim.experiments.analysis.lookahead import measure_lookahead
    from agentsim.experiments.analysis.model import LoadedModel
    from agentsim.experiments.report.claims import lookahead_evidence
    from agentsim.experiments.report.figures import lookahead
    from agentsim.experiments.report.numbers import interval_text, rate_text
    from agentsim.experiments.runs.run import read_config

    _require_runs(args.run, args.simulator)
    _require_table("lookahead (the solver's best moves)", args.run)
    cfg = read_config(args.run)
    if cfg.train.regime not in ("rl", "pretrain_rl"):
        raise UserError(f"{args.run} is a {cfg.train.regime} run: name an agent (rl, pretrain_rl)")
    if list(read_config(args.simulator).train.seeds) != list(cfg.train.seeds):
        raise UserError(f"{args.simulator} has other seeds than {args.run}; the comparison is paired by seed")
    out = _output(args.out, Path(args.run) / "lookahead.json")
    result = measure_lookahead({cfg.train.regime: LoadedModel.from_run(args.run)}, LoadedModel.from_run(args.simulator),
                               num_games=args.games, persona_games=args.games)
    text = {True: rate_text, False: interval_text}
    table = "\n".join(f"{k}: {text[k.endswith('accuracy')](v) if isinstance(v, dict) else v}"
                      for k, v in lookahead_evidence(result).items())
    _save_analysis(result, out, lookahead, table)
    return 0


def cmd_layer_reset(args) -> int:
    from agentsim.experiments.analysis.layer_reset import analyse_layer_reset
    from agentsim.experiments.report.figures import plot_layer_reset
    from agentsim.experiments.report.tables import layer_reset_table

    _require_runs(args.pretrained, args.tuned)
    _require_table("layer-reset (play against perfect, the value probe)", args.pretrained)
    out = _output(args.out, Path(args.tuned) / "layer_reset.json")
    result = analyse_layer_reset(args.pretrained, args.tuned, args.games, args.games_per_cell,
                                 include_head=not args.no_head)
    _save_analysis(result, out, plot_layer_reset, layer_reset_table(result))
    return 0


def cmd_steer(args) -> int:
    from agentsim.experiments.analysis.steering import analyse_steering
    from agentsim.experiments.report.figures import plot_steering

    _require_runs(args.run, args.probe_run)
    _require_table("steer (the value direction, play against perfect)", args.run)
    out = _output(args.out, Path(args.run) / "steering.json")
    layers = None if args.layer is None else [args.layer]
    result = analyse_steering(args.run, args.probe_run, layers=layers, num_games=args.games,
                              games_per_cell=args.games_per_cell)
    for layer, row in result["summary"].items():
        print(f"layer {layer}: " + ", ".join(f"{k}={v:+.3f}" for k, v in row.items()
                                            if "max_alpha" in k and "persona_perfect" not in k))
    _save_analysis(result, out, plot_steering)
    return 0


def _run_names(paths) -> dict[str, str]:
    """A unique short name (the folder's) per run directory."""
    names: dict[str, str] = {}
    for p in paths:
        name = Path(p).resolve().name
        while name in names:
            name += "'"
        names[name] = p
    return names


def cmd_behaviour(args) -> int:
    import numpy as np

    from agentsim.experiments.analysis.behaviour import analyse_behaviour
    from agentsim.experiments.report.figures import plot_behaviour

    _require_runs(*args.runs, args.pretrained)
    _require_table("behaviour (mass on minimax-optimal moves, play against perfect)", *args.runs)
    out = _output(args.out, Path(args.runs[0]) / "behaviour.json")
    result = analyse_behaviour(_run_names(args.runs), args.pretrained, num_games=args.games)
    for name, r in result["runs"].items():
        kl = {p: round(float(np.mean(v["kl"])), 3) for p, v in r["consistency"]["by_persona"].items()}
        print(f"{name:12s} KL(persona‖model): {kl}" + (
            f"  top-k shift: { {k: round(float(np.mean(v)), 3) for k, v in r['topk_shift'].items()} }"
            if isinstance(r.get("topk_shift"), dict) else ""))
    _save_analysis(result, out, plot_behaviour)
    return 0


def cmd_cost(args) -> int:
    from agentsim.experiments.cost import CPU_RATE, GPU_RATE, hours, preset_cost
    from agentsim.experiments.presets import STAGES

    if args.preset not in STAGES:
        raise UserError(f"unknown preset {args.preset!r}; known: {', '.join(STAGES)}")
    stages = preset_cost(args.preset, tuple(args.overrides))
    total = sum(c.flops for c in stages)
    print(f"{'stage':24s} {'TFLOP':>10s}  {'2 CPU cores':>12s}  {'one GPU (est.)':>14s}  counted as")
    for c in stages + [type(stages[0])("total", "", total, "training only: no evaluation, analyses or compiles")]:
        print(f"{c.name:24s} {c.flops / 1e12:10.1f}  {hours(c.flops, CPU_RATE):10.2f} h  "
              f"{hours(c.flops, GPU_RATE) * 60:11.1f} min  {c.what}")
    print(f"rates: 2 CPU cores {CPU_RATE / 1e9:.0f} GFLOP/s (measured: next-token and PPO training here); one GPU "
          f"{GPU_RATE / 1e12:.0f} TFLOP/s (an assumption: 15 % of an H100's fp32 peak). Times from FLOPs are floors "
          "where work is dispatch-bound.")
    return 0


def cmd_scaling(args) -> int:
    from dataclasses import asdict

    from agentsim.experiments.report.figures import scaling
    from agentsim.experiments.scaling import MEASURES, label_series, reach_by_series, read_point

    if args.measure not in MEASURES:
        raise UserError(f"unknown --measure {args.measure!r}; known: {', '.join(MEASURES)}")
    _require_runs(*args.runs)
    points = label_series(sorted((read_point(r, args.measure) for r in args.runs), key=lambda p: p.flops))
    higher = args.measure.startswith("win")
    reach = reach_by_series(points, args.target, higher_is_better=higher)
    out = _output(args.out, Path(f"scaling_{args.measure}.json"))
    for name, series_reach in reach.items():
        if name:
            print(f"series {name}")
        print(f"  {'run':40s} {'TFLOP/seed':>11s} {args.measure:>22s}  per seed")
        for p in (p for p in points if p.series == name):
            print(f"  {p.run[-40:]:40s} {p.flops / 1e12:11.3f} {p.mean:22.4f}  "
                  + ", ".join(f"{v:.4f}" for v in p.values))
        if series_reach["fit"]:
            print(f"  power law over the finals: {args.measure} ∝ FLOPs^{series_reach['fit']['slope']:.3f}")
        steps = f", train.steps ≈ {series_reach['needed_steps']:,}" if series_reach["needed_steps"] else ""
        print(f"  bar {'≥' if higher else '≤'} {args.target:g}: {series_reach['note']}"
              + (f" ({series_reach['needed_flops'] / 1e12:.3g} TFLOP per seed{steps})"
                 if series_reach["needed_flops"] else ""))
    result = {"measure": args.measure, "points": [asdict(p) | {"mean": p.mean} for p in points], "series": reach}
    _save_analysis(result, out, lambda r, d: scaling(points, reach, args.measure, d, name=out.stem))
    return 0


def cmd_bench(args) -> int:
    import dataclasses

    from agentsim.experiments.bench import FULL, QUICK, run_bench
    from agentsim.experiments.runs import strict_json

    sizes = QUICK if args.quick else FULL
    if args.seeds is not None:
        if args.seeds <= 0:
            raise UserError(f"--seeds must be positive, got {args.seeds}")
        sizes = dataclasses.replace(sizes, ppo_seeds=args.seeds)
    res = run_bench(sizes, args.preset, on_message=lambda m: print(m, file=sys.stderr, flush=True))
    ctx = res.context
    print(f"agentsim bench ({'quick' if args.quick else 'full'}, {ctx['seconds']:.0f} s; load average "
          f"{ctx['load_average_start'][0]:.2f} at the start, {ctx['load_average_end'][0]:.2f} at the end, "
          f"{ctx['cpus']} CPUs: a shared machine's numbers move, compare the ratios)")
    print(res.table())
    if args.out:
        strict_json.write(args.out, res.to_json())
    return 0


def cmd_config(args) -> int:
    from agentsim.experiments.config import load_config
    from agentsim.experiments.presets import BASE_PRESET, PRESET_SEEDS, STAGES

    if args.preset in STAGES:
        # A reproduce preset: its runs start from its own config (or, for one only `reproduce` knows,
        # another preset's), with its seeds and each stage's overrides on top.
        base, seeds = BASE_PRESET.get(args.preset, args.preset), PRESET_SEEDS[args.preset]
        cfg = load_config(base, args.config, ([f"train.seeds={seeds}"] if seeds else []) + list(args.overrides))
        print(f"# reproduce --preset {args.preset}: every run starts from preset {base}"
              + (f" with train.seeds={seeds}" if seeds else "") + ", then its stage's overrides:")
        for name, stage in STAGES[args.preset]:
            print(f"#   {name}: {' '.join(stage)}")
        print()
    else:
        cfg = _config(args)
    print(cfg.to_toml(docs=True))  # a file --config reads back
    return 0


class _Parser(argparse.ArgumentParser):
    """Argument errors are one line (the promise of every agentsim command), exit code 2."""

    def error(self, message):
        print(f"agentsim: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


# ---------------------------------------------------------------------------------- the commands, as data


def _arg(*flags, **kwargs) -> tuple[tuple[str, ...], dict]:
    """One ``add_argument`` call, written down to be made later."""
    return flags, kwargs


def _at_least(minimum: int):
    """An argparse type: an integer no smaller than ``minimum`` (else the one-line argument error)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def _config_args(default_preset: str | None = None) -> list[tuple]:
    return [_arg("--preset", default=default_preset,
                 help="named base config (quick, paper, tiny, c4-quick, c4, c4-tiny, long, c4-long)"),
            _arg("--config", metavar="FILE", help="TOML file with [data], [model], [train], [ppo], [log] tables"),
            _arg("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                 help="override one config field (repeatable)")]


def _games(default: int, minimum: int, help: str = "held-out games") -> tuple:
    return _arg("--games", type=_at_least(minimum), default=default, help=f"{help} (at least {minimum})")


def _games_per_cell(default: int, help: str) -> tuple:
    return _arg("--games-per-cell", type=_at_least(1), default=default, help=help)


def _out_json(default: str) -> tuple:
    return _arg("--out", metavar="FILE.json", help=f"output JSON (default {default}); the figure goes next to it")


_PRETRAINED = _arg("pretrained", help="run directory of the pretrained (next_token) run")
_TUNED = _arg("tuned", help="run directory of the fine-tuned run (same seeds and architecture)")


class Command(NamedTuple):
    """One subcommand: what runs it, its --help texts and its arguments."""

    name: str
    run: Callable[[argparse.Namespace], int]
    help: str
    description: str | None = None
    args: tuple = ()
    epilog: str | None = None


COMMANDS = (
    Command("reproduce", cmd_reproduce, "train all regimes, probe, write figures + REPORT.md",
            "Train next_token, rl, pretrain_rl and a random-init control (seeds vmapped; paper adds continued "
            "pretraining, multi-token, persona-prompted and shared-value runs), evaluate win rates and simulator "
            "loss, run the probe suite, timeline, weight/CKA change, layer reset, steering and behaviour analyses, "
            "and write OUT/figures (F1-F9), OUT/results.json and OUT/REPORT.md with a verdict per claim.", (
                _arg("--preset", default="quick",
                     help="quick: 3 seeds, every figure but F8 at reduced size, 8-10 min on 2 CPU cores; paper: 5 "
                     "seeds, 4 layers, all figures, ~50 min; tiny: smoke test, nothing is learnt; c4-quick, c4, "
                     "c4-tiny: the same on connect-four 5x4 (c4-tiny: 4x4; c4: about 2 h); paper-long, c4-long: 8 "
                     "layers, for a GPU or a night (`agentsim cost` first); depth: the quick preset's four runs at 2, "
                     "4 and 8 layers, claims 1, 3, 4 and 5 at each depth and claim D (do the layer claims grow with "
                     "depth?), see README for its cost; depth-tiny: its smoke test"),
                _arg("--out", required=True, help="output directory (must be new or empty)"),
                _arg("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                     help="override a config field in every regime"),
                _arg("--probe-games", type=int, metavar="N",
                     help="held-out games for every probe (default: the preset's, 300/600/2000 for tiny/quick/paper)"),
                _arg("--value-only", action="store_true",
                     help="skip the interpretability suite: only the claim-1 value probes and figure"),
                _arg("--resume", action="store_true", help="finish an interrupted reproduction"),
                _arg("--force", action="store_true", help="replace an existing OUT"),
                _arg("--quiet", action="store_true", help="no progress bars"))),
    Command("train", cmd_train, "train one regime (all its seeds) into a run directory",
            "Train one config; the run directory gets config.json, metrics.jsonl, checkpoints/, final.json and "
            "an offline wandb mirror.", (
                _arg("--regime", choices=["next_token", "rl", "pretrain_rl", "random_init"],
                     help="shortcut for --set train.regime=..."),
                _arg("--out", help="run directory"),
                _arg("--out-root", help="make a uniquely named run directory under this folder"),
                _arg("positional", nargs="*", metavar="SECTION.FIELD=VALUE",
                     help="more overrides, as with --set (the form wandb agents pass)"),
                *_config_args("quick"),
                _arg("--resume", action="store_true", help="continue from the last checkpoint"),
                _arg("--force", action="store_true", help="replace an existing run directory"),
                _arg("--quiet", action="store_true", help="no progress bar")), epilog=EPILOG_CONFIG),
    Command("probe", cmd_probe, "claim 1's value probes where the value lives (or --suite, --timeline)",
            "Per-layer ridge value probes with ceilings and random-init controls. For an agent (rl, pretrain_rl): "
            "on each seed's own games at its decisions against its own V^π (exact on tic-tac-toe's game tree, "
            "Monte Carlo play of the agent elsewhere), probing the policy trunk, the "
            "critic trunk, the value head and the simulator of the same seed on the same tokens, then on persona "
            "games (transfer). For a next_token run: on persona games against its own value (the Bayes expected "
            "result). Writes RUN/value_probes.json.", (
                _arg("run", help="run directory"),
                _arg("--simulator", metavar="DIR", help="the next_token run an agent is compared with (same seeds; "
                     "default for pretrain_rl: the run it started from)"),
                _games(2000, 50, "games per seed (own games and persona games)"),
                _arg("--rollouts", type=_at_least(2), metavar="K", help="Monte Carlo games of the agent per probed "
                     "history where V^π is not exact (connect-four: no game tree); label error about 0.8/sqrt(K) "
                     "(default: the value measure's, 32)"),
                _arg("--decisions-per-game", type=_at_least(1), metavar="N",
                     help="probe N rows of each game, drawn at random before any label is computed (default: every "
                     "decision); pair it with more --games, as fewer rows train weaker probes"),
                _arg("--suite", action="store_true",
                     help="every target (value, minimax, outcome, persona, board; both frames), linear and small-MLP "
                     "probes, with random-init, step-0, shuffled and control-task controls -> RUN/probe_suite.json"),
                _arg("--timeline", action="store_true",
                     help="probes at every checkpoint x layer (what-when-where) -> RUN/timeline.json"))),
    Command("data", cmd_data, "generate, save and summarise a persona-mixture dataset",
            "Games between personas drawn from a mixture, with exact labels (minimax, expected outcome, Bayes "
            "persona posteriors) saved as .npz.", (
                _arg("--out", required=True, help="output .npz path"),
                _arg("--games", type=int, default=20000, help="number of games"),
                _arg("--mix", help="persona mixture, e.g. random=1,perfect=2,greedy=1,noisy_perfect:0.2=1"),
                _arg("--seed", type=int, default=0),
                _arg("--persona-prompt", action="store_true", help="prefix games with persona tokens"),
                _arg("--outcome-token", action="store_true", help="append a result token"),
                _arg("--force", action="store_true", help="overwrite an existing file"),
                *_config_args())),
    Command("references", cmd_references, "exact loss/win rates of the perfect persona and the best possible "
            "player against each persona (the ceilings beside the agents')",
            "From the solver's table: what the perfect persona (uniform over value-optimal moves) and the best "
            "possible player (each measure's own optimum, a best response) score against random, greedy and "
            "perfect play, as X and O averaged, as the match evaluation counts.", (
                _arg("--game", default="tictactoe",
                     help="tictactoe or connect_four:WxH[xK] (a board the solver can enumerate)"),)),
    Command("sweep", cmd_sweep, "grid/random search over config fields × seeds",
            "Run every member of a sweep spec (TOML; see scripts/sweep_example.toml and the README) as its own "
            "`agentsim train` process, locally or on a Ray cluster; a failing member does not stop the others. "
            "Ends with a table.", (
                _arg("spec", help="sweep spec .toml"),
                _arg("--out", help="sweep directory (one run directory per member)"),
                _arg("--backend", default="local", choices=["local", "ray"]),
                _arg("--address", help="Ray cluster address (e.g. 127.0.0.1:6379) for --backend ray"),
                _arg("--parallel", type=int, default=1, help="local member processes at once"),
                _arg("--resume", action="store_true", help="rerun only unfinished members"),
                _arg("--export", metavar="wandb", help="write a wandb sweep YAML instead of running"))),
    Command("runs", cmd_runs, "list run directories (filter by field, status, regime)", None, (
        _arg("paths", nargs="*", default=["runs"], help="folders or globs to search (default: runs)"),
        _arg("--where", action="append", default=[], metavar="FIELD=VALUE",
             help="keep runs whose config has this value, e.g. model.num_layers=2"),
        _arg("--status", help="created, running, interrupted, failed, finished"),
        _arg("--regime", help="next_token, rl, pretrain_rl, random_init"),
        _arg("--json", action="store_true", help="print JSON instead of a table"))),
    Command("compare", cmd_compare, "compare runs grouped by config: table + curves with seed bands",
            "Group runs by config (seeds pooled across run directories; directories holding the same seed are "
            "kept apart), print the final value of a metric per group as mean ± sample SD, IQM and the 95% "
            "t-interval of the mean over seeds, and plot its curves against steps and wall time (PNG + PDF). "
            "Runs without the metric are named and left out.", (
                _arg("runs", nargs="+", help="run directories, parents of runs, or globs"),
                _arg("--metric", required=True,
                     help="a key of metrics.jsonl (its value at the last logged step), e.g. eval/simulator_gap, or "
                     "final/NAME from final.json (the final evaluation), e.g. final/loss_vs_perfect"),
                _arg("--out", help="output path prefix for the figure and JSON (default compare/METRIC)"))),
    Command("change", cmd_change, "claim 4: per-layer weight change, CKA and probe change after fine-tuning",
            "Compare a fine-tuned run (e.g. pretrain_rl) with the pretrained run it started from, per seed and "
            "layer: relative weight change, the share of parameters updated beyond a tolerance, linear/debiased "
            "CKA of the residual streams on held-out games (beside the seed-to-seed floor) and the change in "
            "value-probe R²; optionally the same for a continued-pretraining control; and the fine-tuned model "
            "patched with the pretrained residual after each layer (beside a matched random one): the change of "
            "its move distribution and of its play. Writes JSON + figures F4 and F4b.", (
                _PRETRAINED, _TUNED,
                _arg("--control", help="continued next-token run from the same pretrained checkpoint"),
                _out_json("TUNED/change.json"), _games(2000, 10),
                _games_per_cell(128, "patched-play games per opponent per side per seed and layer"))),
    Command("lookahead", cmd_lookahead, "look-ahead probes: the move two plies on, agent vs simulator",
            "Softmax probes per layer for the move the player makes two plies on (after the opponent's actual "
            "reply): the agent's own greedy move there, and the solver's best move where it is unique; on the "
            "agent's own games (agent, simulator and random init on the same tokens) and on persona games, beside "
            "the train-majority rate and the exact Bayes ceiling given the history. Writes JSON + figure F10.", (
                _arg("run", help="run directory of the agent (rl, pretrain_rl)"),
                _arg("--simulator", metavar="DIR", required=True, help="the next_token run (same seeds)"),
                _games(1000, 20, "games per seed (own games), and persona games"),
                _out_json("RUN/lookahead.json"))),
    Command("layer-reset", cmd_layer_reset, "claim 4 ablation: reset one layer of a fine-tuned model at a time",
            "For each layer of the fine-tuned run, reset it to the pretrained weights, to the random-init "
            "weights, or perturb it randomly by the same norm as its fine-tuning change; report loss/win vs "
            "random and perfect and the last-layer value-probe R², per seed. Writes JSON + figure F5.", (
                _PRETRAINED, _TUNED, _out_json("TUNED/layer_reset.json"),
                _games(2000, 10, "held-out games for the probe"),
                _games_per_cell(128, "match games per opponent per side per seed"),
                _arg("--no-head", action="store_true", help="skip resetting the head"))),
    Command("steer", cmd_steer, "steer a run along value/persona probe directions (with controls)",
            "Fit value (ridge) and persona (softmax) probes per layer on held-out games, add alpha × direction to "
            "the residual stream, and measure greedy play vs random/perfect and the log-likelihood of each "
            "persona's moves, beside random directions and random-init probes. Writes JSON and F6 "
            "(f6_steering.png/pdf, next to the JSON).", (
                _arg("run", metavar="RUN", help="run directory to steer"),
                _arg("--layer", type=_at_least(0), help="steer after this layer only (0 = embeddings; default: all)"),
                _arg("--probe-run", metavar="DIR", help="fit the probes on this run instead (same architecture)"),
                _games(2000, 20, "held-out games for probes and log-likelihoods"),
                _games_per_cell(64, "games per opponent and side per configuration"),
                _out_json("RUN/steering.json"))),
    Command("behaviour", cmd_behaviour, "simulator vs agent behaviour: persona consistency, top-k shift, results",
            "On held-out games: KL from the persona to move to each run's move distribution, mass on the "
            "persona's vs optimal moves, the Bayes-optimal simulator for reference, prompted strength "
            "(persona-prompt layouts), top-k shift from --pretrained, and win/draw/loss from final.json. Writes "
            "JSON and F9 (f9_behaviour.png/pdf, next to the JSON).", (
                _arg("runs", nargs="+", metavar="RUN", help="run directories"),
                _arg("--pretrained", metavar="DIR", help="the pretrained run RL started from (for top-k shift)"),
                _games(2000, 10), _out_json("RUN/behaviour.json of the first RUN"))),
    Command("bench", cmd_bench, "rollout speed-up vs gymnasium, rollout and training MFU, cost vs game length, "
            "PPO iterations/s with and without the key/value cache", None, (
                _arg("--preset", default="quick", help="the config next-token training and PPO are timed at"),
                _arg("--seeds", type=int, default=None, help="seeds vmapped in the PPO timing (default 3; --quick 1)"),
                _arg("--quick", action="store_true", help="a smaller, faster version (2L d64 only, fewer repeats)"),
                _arg("--out", help="also write the numbers as JSON"))),
    Command("cost", cmd_cost, "a reproduce preset's training cost: model FLOPs per stage and estimated hours",
            "Counts each stage's model FLOPs from its config (next-token: 3 × forward over every game's tokens; "
            "PPO: the rollout and each epoch's forward and backward, critic included) and turns them into time "
            "at the measured 2-core CPU rate and an assumed single-GPU rate. Use it before launching a long preset.", (
                _arg("--preset", default="paper-long", help="any reproduce preset (quick, paper, c4, depth, "
                     "paper-long, c4-long, ...)"),
                _arg("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                     help="override a config field in every stage"))),
    Command("scaling", cmd_scaling, "a measure against training compute over runs, and the compute a bar needs",
            "For finished runs of one regime trained for different lengths: each run's training model "
            "FLOPs per seed (as `agentsim cost` counts them) and its final measure (final.json, mean over seeds); a "
            "power law fitted over the runs' finals; and, if no run meets the bar, the compute where the fit "
            "crosses it, marked as an extrapolation. Runs of several settings (model sizes, learning rates) form "
            "one series per setting, each with its own fit, named by the config fields that differ (runs that "
            "agentsim compare would pool and that differ only in length share a series). Writes a JSON and a log-log figure with each "
            "run's validation curve. Example: agentsim scaling runs/s250 runs/s500 runs/s1000 --measure "
            "simulator_gap --target 0.02", (
                _arg("runs", nargs="+", help="run directories (finished)"),
                _arg("--measure", default="simulator_gap",
                     help="simulator_gap, simulator_gap_unseen, loss_vs_perfect, loss_vs_random, loss_vs_greedy or "
                     "win_vs_random (the report's subjects table)"),
                _arg("--target", type=float, required=True, help="the bar, e.g. 0.02 (gap) or 0.01 (loss rate)"),
                _arg("--out", help="JSON path; the figure goes beside it (default scaling_MEASURE.json)"))),
    Command("config", cmd_config, "print the resolved config, every field documented, as a TOML file --config reads",
            None, (
        _arg("--preset", default="quick", help="named base config (quick, tiny, paper, c4-quick, c4, c4-tiny, long, "
             "c4-long) or a preset only reproduce knows (paper-long, depth, depth-tiny: its base config and stages)"),
        *_config_args()[1:])),
)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="agentsim", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        p = sub.add_parser(command.name, help=command.help, description=command.description, epilog=command.epilog,
                           formatter_class=argparse.RawDescriptionHelpFormatter if command.epilog
                           else argparse.HelpFormatter)
        for flags, kwargs in command.args:
            p.add_argument(*flags, **kwargs)
        p.set_defaults(func=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from agentsim.experiments.config import ConfigError
    from agentsim.experiments.runs.checkpoints import CheckpointError
    from agentsim.experiments.runs.run import RunError
    from agentsim.experiments.train.loop import TrainingStopped

    _enable_compile_cache()
    try:
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's flush at exit
        return code
    except (UserError, ConfigError, RunError, CheckpointError, TrainingStopped) as e:
        # Only bad input and stopped runs become one line; anything else is a bug and keeps
        # its traceback.
        print(f"agentsim: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        if not _reader_gone():
            raise  # some other pipe broke: a bug, with its traceback
        # The reader stopped early (`agentsim config | head`): end quietly, as `cat` would. What is
        # still buffered goes to /dev/null, or the flush at exit would fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _reader_gone() -> bool:
    """Whether stdout is a pipe whose reading end has closed (poll reports an error on it)."""
    import select

    poller = select.poll()
    try:
        poller.register(sys.stdout.fileno(), select.POLLOUT)
    except (AttributeError, OSError, ValueError):  # stdout replaced by something with no file
        return False
    return any(events & select.POLLERR for _, events in poller.poll(0))


if __name__ == "__main__":
    sys.exit(main())
