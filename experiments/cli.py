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
    if out.exists() and not args.force:
        raise UserError(f"{out} exists; pass --force to overwrite it")
    if not out.parent.exists():
        raise UserError(f"directory {out.parent} does not exist")
    if not os.access(out.parent, os.W_OK):
        raise UserError(f"directory {out.parent} is not writable")
    cfg = _config(args).data
    cfg = replace(cfg, num_games=args.games, seed=args.seed, persona_prompt=args.persona_prompt,
                  outcome_token=args.outcome_token, **({"mixture": mixture} if mixture else {}))
    data = generate(cfg)
    tmp = out.with_name(out.name + ".tmp")
    data.save(tmp)
    os.replace(tmp, out)
    summary = data.summary()
    print(json.dumps(summary, indent=2, default=str))
    return 0


def cmd_train(args) -> int:
    from experiments.train import train

    cfg = _config(args, [f"train.regime={args.regime!r}"] if args.regime else [])
    with _progress(not args.quiet) as progress:
        result = train(cfg, args.out, resume=args.resume, force=args.force, progress=progress)
    if result.interrupted:
        return 130
    final = json.loads((Path(args.out) / "final.json").read_text())
    print(f"finished {args.out}: loss vs random {final['matches']['eval/loss_vs_random']}, "
          f"vs perfect {final['matches']['eval/loss_vs_perfect']}, simulator gap {final['simulator']['gap']}")
    return 0


def cmd_probe(args) -> int:
    from experiments.probe import probe_run

    res = probe_run(args.run, num_games=args.games)
    for target, scores in res["targets"].items():
        import numpy as np

        for kind, vals in scores.items():
            print(f"{target:17s} {kind:12s} R² by layer: " + " ".join(f"{v:.3f}" for v in np.mean(vals, 0)))
    print(f"wrote {Path(args.run) / 'probes.json'}")
    return 0


def cmd_reproduce(args) -> int:
    from experiments.reproduce import reproduce

    with _progress(not args.quiet) as progress:
        results = reproduce(args.preset, args.out, force=args.force, resume=args.resume,
                            overrides=tuple(args.overrides), progress=progress,
                            probe_games=args.probe_games)
    c1 = results["claims"]["1"]
    print(f"claim 1 (agent represents its goal): {c1['verdict']}")
    print(f"wrote {args.out}/REPORT.md, results.json, figures/ in {results['total_s']:.0f} s")
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentsim", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("reproduce", help="train all regimes, probe, write figures + REPORT.md",
                       description="Train next_token, rl, pretrain_rl and a random-init control "
                       "(seeds vmapped), evaluate win rates and simulator loss, fit per-layer value "
                       "probes with controls, and write OUT/figures, OUT/results.json, OUT/REPORT.md.")
    p.add_argument("--preset", default="quick", help="quick (minutes on a CPU) or tiny (smoke test)")
    p.add_argument("--out", required=True, help="output directory (must be new or empty)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override a config field in every regime")
    p.add_argument("--probe-games", type=int, default=3000, help="held-out games for the probes")
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
    p.add_argument("--out", required=True, help="run directory")
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
