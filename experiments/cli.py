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
`agentsim config --preset quick` prints every field with its documentation."""


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
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if not enabled:
        yield None
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), transient=False) as p:
        yield p


def _add_config_args(p: argparse.ArgumentParser, default_preset: str | None = None) -> None:
    p.add_argument("--preset", default=default_preset, help="named base config (quick, tiny)")
    p.add_argument("--config", metavar="FILE", help="TOML file with [data], [model], [train], [ppo], [log] tables")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override one config field (repeatable)")


def _config(args, extra=()):
    from experiments.config import load_config

    return load_config(args.preset, args.config, list(args.overrides) + list(extra))


def cmd_data(args) -> int:
    from dataclasses import replace

    from envs.dataset import generate

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
    cfg = _config(args).data
    cfg = replace(cfg, num_games=args.games, seed=args.seed, persona_prompt=args.persona_prompt,
                  outcome_token=args.outcome_token, **({"mixture": mixture} if mixture else {}))
    data = generate(cfg)
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
    from experiments.store import flat_config, flatten

    saved, given = flat_config(out), flatten(cfg.to_dict())
    diff = [f"{k} (saved {saved.get(k)!r}, given {given.get(k)!r})" for k in sorted(set(saved) | set(given))
            if saved.get(k) != given.get(k)]
    if diff:
        more = f" and {len(diff) - 4} more" if len(diff) > 4 else ""
        raise UserError(f"--resume continues {out} with its saved config, which these settings would change: "
                        f"{'; '.join(diff[:4])}{more}; drop them to resume, or train into a new directory")


def cmd_train(args) -> int:
    import time

    from experiments.train import train

    extra = ([f"train.regime={args.regime!r}"] if args.regime else []) + list(args.positional)
    cfg = _config(args, extra)
    if bool(args.out) == bool(args.out_root):
        raise UserError("give exactly one of --out DIR or --out-root ROOT")
    if args.out_root:  # CleanRL-style unique name
        args.out = str(Path(args.out_root) / f"{cfg.data.game}__{cfg.train.regime}__"
                       f"{'-'.join(map(str, cfg.train.seeds))}__{int(time.time())}")
    if args.resume and (extra or args.overrides or args.config) and (Path(args.out) / "config.json").exists():
        _check_resume_config(cfg, Path(args.out))
    with _progress(not args.quiet) as progress:
        result = train(cfg, args.out, resume=args.resume, force=args.force, progress=progress)
    if result.interrupted:
        return 130
    final = json.loads((Path(args.out) / "final.json").read_text())
    print(f"finished {args.out}: loss vs random {final['matches']['eval/loss_vs_random']}, "
          f"vs perfect {final['matches']['eval/loss_vs_perfect']}, simulator gap {final['simulator']['gap']}")
    return 0


def cmd_probe(args) -> int:
    import numpy as np

    if args.games < 50:
        raise UserError(f"--games must be at least 50, got {args.games}")
    if args.suite or args.timeline:
        from experiments.probe_suite import analyse_probes, analyse_timeline

        if args.suite:
            res = analyse_probes(args.run, num_games=args.games)
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
            for target, per_ckpt in res["targets"].items():
                for step, scores in zip(res["steps"], per_ckpt):
                    print(f"{target:15s} step {step:6d}: " + " ".join(f"{v:.3f}" for v in np.mean(scores, 0)))
            print(f"wrote {Path(args.run) / 'timeline.json'}")
        return 0
    from experiments.probe import probe_run

    res = probe_run(args.run, num_games=args.games)
    for target, scores in res["targets"].items():
        for kind, vals in scores.items():
            print(f"{target:17s} {kind:12s} R² by layer: " + " ".join(f"{v:.3f}" for v in np.mean(vals, 0)))
    print(f"wrote {Path(args.run) / 'probes.json'}")
    return 0


def cmd_reproduce(args) -> int:
    from experiments.reproduce import reproduce

    with _progress(not args.quiet) as progress:
        results = reproduce(args.preset, args.out, force=args.force, resume=args.resume,
                            overrides=tuple(args.overrides), progress=progress,
                            probe_games=args.probe_games, value_only=args.value_only)
    c1 = results["claims"]["1"]
    print(f"claim 1 (agent represents its goal): {c1['verdict']}")
    print(f"wrote {args.out}/REPORT.md, results.json, figures/ in {results['total_s']:.0f} s")
    return 0


def cmd_runs(args) -> int:
    from experiments.store import list_runs

    rows = list_runs(args.paths, args.where, args.status, args.regime)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table("run", "regime", "status", "step", "seeds", "headline (seed mean)")
    for r in rows:
        head = ", ".join(f"{k.split('/')[-1]}={v:.3f}" for k, v in r["headline"].items())
        table.add_row(r["path"], str(r["regime"]), str(r["status"]), str(r["step"]), str(r["seeds"]), head)
    Console().print(table)
    return 0


def cmd_compare(args) -> int:
    from experiments.store import compare, plot_comparison

    groups = compare(args.runs, args.metric)
    from rich.console import Console
    from rich.table import Table

    table = Table("config (what differs)", "seeds", "final mean ± std", "IQM", "95% CI of mean", title=args.metric)
    for g in groups:
        table.add_row(g["label"], str(g["n_seeds"]), f"{g['mean']:.4f} ± {g['std']:.4f}", f"{g['iqm']:.4f}",
                      f"[{g['ci_low']:.4f}, {g['ci_high']:.4f}]")
    Console().print(table)
    out = Path(args.out) if args.out else Path("compare") / args.metric.replace("/", "_")
    paths = plot_comparison(groups, args.metric, out)
    summary = [{k: v for k, v in g.items() if k != "curves"} for g in groups]
    summary_path = out.with_name(out.name + ".json")
    summary_path.write_text(json.dumps(summary, indent=2))
    print("wrote " + ", ".join(str(p) for p in paths + [summary_path]))
    return 0


def cmd_sweep(args) -> int:
    from experiments.sweep import export_wandb, run_sweep

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
    from rich.console import Console
    from rich.table import Table

    t = Table("member", "status", "seconds", "headline metrics (seed mean)", "error")
    for m in table:
        t.add_row(m["name"], m["status"], str(m["seconds"]),
                  ", ".join(f"{k.split('/')[-1]}={v:.3f}" for k, v in m["metrics"].items()), m["error"])
    Console().print(t)
    failed = sum(m["status"] != "finished" for m in table)
    print(f"{len(table) - failed}/{len(table)} members finished; table in {args.out}/sweep.json")
    return 1 if failed else 0


def cmd_bench(args) -> int:
    from experiments.bench import run_bench

    if args.seeds <= 0:
        raise UserError(f"--seeds must be positive, got {args.seeds}")
    res = run_bench(args.preset, args.seeds)
    for k, v in res.items():
        print(f"{k:28s} {v:,.4g}" if isinstance(v, float) else f"{k:28s} {v}")
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2))
    return 0


def cmd_config(args) -> int:
    from dataclasses import fields

    from experiments.config import Config, field_docs

    cfg = _config(args)
    for section in fields(Config):
        obj = getattr(cfg, section.name)
        docs = field_docs(type(obj))
        print(f"[{section.name}]")
        for f in fields(obj):
            print(f"{f.name} = {json.dumps(getattr(obj, f.name))}    # {docs.get(f.name, '')}")
        print()
    return 0


class _Parser(argparse.ArgumentParser):
    """Argument errors are one line (the promise of every agentsim command), exit code 2."""

    def error(self, message):
        print(f"agentsim: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="agentsim", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("reproduce", help="train all regimes, probe, write figures + REPORT.md",
                       description="Train next_token, rl, pretrain_rl and a random-init control "
                       "(seeds vmapped; paper adds continued pretraining, multi-token, persona-prompted "
                       "and shared-value runs), evaluate win rates and simulator loss, run the probe suite, "
                       "timeline, weight/CKA change, layer reset, steering and behaviour analyses, and write "
                       "OUT/figures (F1-F9), OUT/results.json and OUT/REPORT.md with a verdict per claim.")
    p.add_argument("--preset", default="quick",
                   help="quick: 3 seeds, every figure but F8 at reduced size, ~5 min on a CPU; "
                   "paper: 5 seeds, all figures, ~30 min; tiny: smoke test, nothing is learnt")
    p.add_argument("--out", required=True, help="output directory (must be new or empty)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override a config field in every regime")
    p.add_argument("--probe-games", type=int, metavar="N",
                   help="held-out games for every probe (default: the preset's, 300/600/2000 for tiny/quick/paper)")
    p.add_argument("--value-only", action="store_true",
                   help="skip the interpretability suite: only the claim-1 value probes and figure")
    p.add_argument("--resume", action="store_true", help="finish an interrupted reproduction")
    p.add_argument("--force", action="store_true", help="replace an existing OUT")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser("train", help="train one regime (all its seeds) into a run directory",
                       description="Train one config; the run directory gets config.json, "
                       "metrics.jsonl, checkpoints/, final.json and an offline wandb mirror.",
                       epilog=EPILOG_CONFIG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--regime", choices=["next_token", "rl", "pretrain_rl", "random_init"],
                   help="shortcut for --set train.regime=...")
    p.add_argument("--out", help="run directory")
    p.add_argument("--out-root", help="make a uniquely named run directory under this folder")
    p.add_argument("positional", nargs="*", metavar="SECTION.FIELD=VALUE",
                   help="more overrides, as with --set (the form wandb agents pass)")
    _add_config_args(p, "quick")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument("--force", action="store_true", help="replace an existing run directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("probe", help="per-layer value probes (with controls) on a run",
                       description="Fit ridge probes for the value of the position at every layer "
                       "on held-out games, beside random-init and shuffled-label controls; writes "
                       "RUN/probes.json.")
    p.add_argument("run", help="run directory")
    p.add_argument("--games", type=int, default=3000, help="held-out games to probe on")
    p.add_argument("--suite", action="store_true",
                   help="every target (value, minimax, outcome, persona, board; both frames), linear and "
                   "small-MLP probes, with random-init, step-0, shuffled and control-task controls "
                   "-> RUN/probe_suite.json")
    p.add_argument("--timeline", action="store_true",
                   help="probes at every checkpoint x layer (what-when-where) -> RUN/timeline.json")
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("data", help="generate, save and summarise a persona-mixture dataset",
                       description="Games between personas drawn from a mixture, with exact labels "
                       "(minimax, expected outcome, Bayes persona posteriors) saved as .npz.")
    p.add_argument("--out", required=True, help="output .npz path")
    p.add_argument("--games", type=int, default=20000, help="number of games")
    p.add_argument("--mix", help="persona mixture, e.g. random=1,perfect=2,greedy=1,noisy_perfect:0.2=1")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--persona-prompt", action="store_true", help="prefix games with persona tokens")
    p.add_argument("--outcome-token", action="store_true", help="append a result token")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    _add_config_args(p)
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("sweep", help="grid/random search over config fields × seeds",
                       description="Run every member of a sweep spec (TOML; see experiments/sweep.py "
                       "and the README) as its own `agentsim train` process, locally or on a Ray "
                       "cluster; a failing member does not stop the others. Ends with a table.")
    p.add_argument("spec", help="sweep spec .toml")
    p.add_argument("--out", help="sweep directory (one run directory per member)")
    p.add_argument("--backend", default="local", choices=["local", "ray"])
    p.add_argument("--address", help="Ray cluster address (e.g. 127.0.0.1:6379) for --backend ray")
    p.add_argument("--parallel", type=int, default=1, help="local member processes at once")
    p.add_argument("--resume", action="store_true", help="rerun only unfinished members")
    p.add_argument("--export", metavar="wandb", help="write a wandb sweep YAML instead of running")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("runs", help="list run directories (filter by field, status, regime)")
    p.add_argument("paths", nargs="*", default=["runs"], help="folders or globs to search (default: runs)")
    p.add_argument("--where", action="append", default=[], metavar="FIELD=VALUE",
                   help="keep runs whose config has this value, e.g. model.num_layers=2")
    p.add_argument("--status", help="finished, running, interrupted, failed")
    p.add_argument("--regime", help="next_token, rl, pretrain_rl, random_init")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("compare", help="compare runs grouped by config: table + curves with seed bands",
                       description="Group runs by config (seeds pooled across run directories), "
                       "print the final value of a metric as mean ± std, IQM and a bootstrap CI, and "
                       "plot its curves against steps and wall time (PNG + PDF).")
    p.add_argument("runs", nargs="+", help="run directories, parents of runs, or globs")
    p.add_argument("--metric", required=True, help="a key of metrics.jsonl, e.g. eval/simulator_gap")
    p.add_argument("--out", help="output path prefix for the figure and JSON (default compare/METRIC)")
    p.set_defaults(func=cmd_compare)

    from experiments import behaviour, change, layer_reset, steering

    change.add_cli(sub)
    layer_reset.add_cli(sub)
    steering.add_cli(sub)
    behaviour.add_cli(sub)

    p = sub.add_parser("bench", help="throughput on this machine (solver, data, env, training, PPO, MFU)")
    p.add_argument("--preset", default="quick")
    p.add_argument("--seeds", type=int, default=3, help="seeds vmapped during the timing")
    p.add_argument("--out", help="also write the numbers as JSON")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("config", help="print the resolved config with every field documented")
    _add_config_args(p, "quick")
    p.set_defaults(func=cmd_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from experiments.checkpoints import CheckpointError
    from experiments.config import ConfigError
    from experiments.runs import RunError
    from experiments.train import TrainingStopped

    _enable_compile_cache()
    try:
        return args.func(args)
    except (UserError, ConfigError, RunError, CheckpointError, TrainingStopped) as e:
        print(f"agentsim: error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:  # validation errors from envs/models (unknown persona, …)
        print(f"agentsim: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
