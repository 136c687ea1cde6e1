"""Typed, self-documenting run configuration (one docstring per field, CleanRL/tyro style).

A ``Config`` is built from defaults, a named preset, a TOML file and ``section.field=value``
overrides, in that order, and validated before any work starts: every problem is a
``ConfigError`` naming the field, which the CLI prints as one line (exit code 2).
"""

from __future__ import annotations

import ast
import json
import math
import tomllib
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from agentsim.envs import make_game
from agentsim.envs.dataset import DataConfig
from agentsim.envs.personas import make_persona
from agentsim.models.transformer import ModelConfig

REGIMES = ("next_token", "rl", "pretrain_rl", "random_init")
PROBE_SEED_OFFSET = 1_000_003  # held-out evaluation and analysis games use a data seed no run trains on


class ConfigError(ValueError):
    """A config value that cannot work; the message names the field."""


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation shared by every regime."""

    regime: str = "next_token"
    """next_token (simulator), rl (agent from scratch), pretrain_rl (agent from a simulator), random_init (control)."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Seeds trained together in one process (vmapped)."""
    steps: int = 2000
    """Gradient updates (next_token) or PPO iterations (rl, pretrain_rl)."""
    chunk: int = 100
    """Updates per jitted chunk; metrics are logged and checkpoints may be taken between chunks."""
    batch_size: int = 128
    """Games per next-token batch."""
    lr: float = 3e-3
    """Peak learning rate (next_token)."""
    warmup: int = 100
    """Linear warm-up steps before the cosine decay (next_token)."""
    weight_decay: float = 0.01
    """AdamW weight decay (next_token)."""
    checkpoint_every: int = 5
    """Save a checkpoint every this many chunks (and always at the end)."""
    eval_every: int = 1
    """Evaluate (validation loss, or RL matches) every this many chunks, and always at a checkpoint and at the end."""
    eval_games: int = 2000
    """Held-out games for the simulator loss, during training (validation) and at the end (a fresh set)."""
    eval_games_per_cell: int = 128
    """Games per persona and side in the match evaluation logged during RL training."""
    final_games_per_cell: int = 256
    """Games per persona and side in the final evaluation (final.json)."""
    log_checkpoints: int = 0
    """Extra checkpoints at about this many log-spaced steps (for probes over training time)."""
    init_from: str = ""
    """next_token: start from this run's final params (continued pretraining) instead of init."""


@dataclass(frozen=True)
class PPOConfig:
    """Multi-step RL: PPO against a pool of persona opponents, playing both X and O."""

    # The defaults below (perfect opponent twice as likely, 3/4 of the games as O, 8 epochs, a
    # decaying entropy bonus of 0.1) come from a study of ~40 settings × 3 seeds at the paper
    # preset's size: they take rl from 17 % to 1.3–2.3 % losses against perfect play (two 5-seed
    # runs; pretrain_rl from 0.5 % to 0 %).
    opponents: dict[str, float] = field(default_factory=lambda: {"random": 1.0, "greedy": 1.0, "perfect": 2.0})
    """Opponent persona -> sampling weight, drawn per episode."""
    num_envs: int = 256
    """Whole games played per iteration (in parallel) per seed."""
    o_fraction: float = 0.75
    """Probability that the agent plays O (moves second, the harder side) in a training game."""
    epochs: int = 8
    """Passes over each rollout."""
    minibatches: int = 4
    """Minibatches per epoch."""
    lr: float = 1e-3
    """Adam learning rate (linearly annealed to 0)."""
    critic_lr_scale: float = 1.0
    """The critic's and value head's learning rate as a multiple of ``lr`` (annealed alike)."""
    critic_warmup: int = 0
    """The first N of the run's iterations train only the critic and value head (the policy is
    held where it started, e.g. at the simulator for pretrain_rl), so the policy's first
    gradients use advantages from a critic fitted to its own returns. The policy's rate and
    entropy bonus then anneal over the remaining iterations. With ``model.value_head='shared'``
    only the value head learns (on the held trunk)."""
    gamma: float = 1.0
    """Discount; 1 because only the final result matters."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    clip: float = 0.2
    """PPO ratio clip."""
    ent_coef: float = 0.1
    """Entropy bonus (at the start, when ent_decay)."""
    ent_decay: bool = True
    """Decay the entropy bonus linearly from ent_coef to 0 over the run, as the learning rate is."""
    vf_coef: float = 0.5
    """Value loss weight."""
    max_grad_norm: float = 0.5
    """Global gradient-norm clip."""
    kl_coef: float = 0.0
    """pretrain_rl: weight of KL(policy || frozen pretrained policy), the RLHF-style tie."""
    pretrained: str = ""
    """pretrain_rl: run directory of a next_token run to start from."""
    league: float = 0.0
    """Sampling weight, beside the personas', of the agent's own past selves as training
    opponents (0: the personas only). Evaluation and the analyses play the personas only."""
    league_size: int = 4
    """Past selves kept: the newest, taken every ``league_every`` iterations, replaces the oldest."""
    league_every: int = 10
    """Iterations between two snapshots of the agent into the league (the start is the first)."""


@dataclass(frozen=True)
class LogConfig:
    """Where results go besides the run directory."""

    wandb: str = "offline"
    """wandb mode: offline (default, no network), online (opt in), or disabled."""
    project: str = "agentsim"
    """wandb project name."""


@dataclass(frozen=True)
class Config:
    """Everything that determines a run."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_toml(self, docs: bool = False) -> str:
        """The config as a TOML file ``--config`` reads back; ``docs``: each field's
        documentation above it as comments."""
        lines = []
        for section, values in self.to_dict().items():
            lines.append(f"[{section}]")
            notes = field_docs(type(getattr(self, section))) if docs else {}
            for k, v in values.items():
                lines += [f"# {line.strip()}".rstrip() for line in notes.get(k, "").strip().splitlines()]
                if isinstance(v, dict):
                    inner = ", ".join(f"{json.dumps(a, ensure_ascii=False)} = {_toml_value(b)}" for a, b in v.items())
                    lines.append(f"{k} = {{ {inner} }}")
                else:
                    lines.append(f"{k} = {_toml_value(v)}")
            lines.append("")
        return "\n".join(lines)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    return repr(v)


def _coerce(name: str, tp: Any, value: Any) -> Any:
    """Check/convert one value against a field's annotated type."""
    origin = typing.get_origin(tp)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif origin is tuple:
        (item,) = {a for a in typing.get_args(tp) if a is not Ellipsis}
        if isinstance(value, (list, tuple)):
            return tuple(_coerce(name, item, v) for v in value)
        if isinstance(value, int) and not isinstance(value, bool):
            return (value,)
    elif origin is dict:
        _, vt = typing.get_args(tp)
        if isinstance(value, dict):
            return {str(k): _coerce(f"{name}.{k}", vt, v) for k, v in value.items()}
    raise ConfigError(f"{name}: expected {getattr(tp, '__name__', str(tp))}, got {value!r}")


def _build(cls, values: dict, prefix: str):
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    kwargs = {}
    for k, v in values.items():
        if k not in known:
            raise ConfigError(f"unknown field {prefix}{k}; known: {', '.join(sorted(known))}")
        tp = hints[k]
        if is_dataclass(tp):
            if not isinstance(v, dict):
                raise ConfigError(f"{prefix}{k}: expected a table of fields, got {v!r}")
            kwargs[k] = _build(tp, v, f"{prefix}{k}.")
        else:
            kwargs[k] = _coerce(f"{prefix}{k}", tp, v)
    return cls(**kwargs)


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k not in ("mixture", "opponents"):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_override(text: str) -> dict:
    """'train.lr=1e-3' -> {'train': {'lr': 0.001}}; values are Python/TOML-ish literals."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r}: write section.field=value")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw  # a bare word is a string
    out: dict = {}
    node = out
    parts = key.strip().split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


def load_config(preset: str | None = None, file: str | Path | None = None,
                overrides: typing.Sequence[str] = (), base: dict | None = None) -> Config:
    """Defaults <- base <- preset <- TOML file <- overrides, then validate."""
    from agentsim.experiments.presets import PRESETS  # presets are configs too

    values: dict = base or {}
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
        values = _merge(values, PRESETS[preset])
    if file is not None:
        path = Path(file)
        try:
            values = _merge(values, tomllib.loads(path.read_text()))
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {path}: {e}") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"config file {path}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
    for o in overrides:
        values = _merge(values, parse_override(o))
    cfg = _build(Config, values, "")
    validate(cfg)
    return cfg


def config_from_dict(values: dict) -> Config:
    return _build(Config, values, "")


def validate(cfg: Config) -> None:
    """Raise ConfigError naming the first impossible value."""
    try:
        cfg.data.validate()
    except ValueError as e:
        raise ConfigError(str(e)) from None
    try:
        cfg.model.validate()
    except ValueError as e:
        raise ConfigError(str(e)) from None
    t, p = cfg.train, cfg.ppo
    if t.regime not in REGIMES:
        raise ConfigError(f"train.regime must be one of {', '.join(REGIMES)}, got {t.regime!r}")
    if not t.seeds:
        raise ConfigError("train.seeds is empty")
    if any(not 0 <= s < 2**32 for s in t.seeds):
        raise ConfigError(f"train.seeds must lie in [0, 2**32), got {t.seeds}")
    if len(set(t.seeds)) != len(t.seeds):
        raise ConfigError(f"train.seeds has duplicates: {t.seeds}")
    positive = {"train.steps": t.steps, "train.chunk": t.chunk, "train.batch_size": t.batch_size,
                "train.checkpoint_every": t.checkpoint_every, "train.eval_every": t.eval_every,
                "train.eval_games": t.eval_games,
                "train.eval_games_per_cell": t.eval_games_per_cell,
                "train.final_games_per_cell": t.final_games_per_cell,
                "ppo.num_envs": p.num_envs, "ppo.epochs": p.epochs,
                "ppo.minibatches": p.minibatches, "ppo.league_size": p.league_size,
                "ppo.league_every": p.league_every}
    for name, v in positive.items():
        if v <= 0:
            raise ConfigError(f"{name} must be positive, got {v}")
    nonneg = {"train.lr": t.lr, "train.warmup": t.warmup, "train.weight_decay": t.weight_decay,
              "ppo.lr": p.lr, "ppo.critic_lr_scale": p.critic_lr_scale, "ppo.ent_coef": p.ent_coef, "ppo.vf_coef": p.vf_coef,
              "ppo.kl_coef": p.kl_coef, "ppo.max_grad_norm": p.max_grad_norm, "ppo.clip": p.clip,
              "ppo.league": p.league}
    for name, v in nonneg.items():
        if not v >= 0:
            raise ConfigError(f"{name} must be >= 0, got {v}")
    if not 0 <= p.critic_warmup < t.steps:
        raise ConfigError(f"ppo.critic_warmup must lie in [0, train.steps) ({t.steps}), got {p.critic_warmup}")
    if not math.isfinite(p.league):
        raise ConfigError(f"ppo.league must be a finite weight, got {p.league}")
    for name, v in {"ppo.gamma": p.gamma, "ppo.gae_lambda": p.gae_lambda, "ppo.o_fraction": p.o_fraction}.items():
        if not 0 <= v <= 1:
            raise ConfigError(f"{name} must lie in [0, 1], got {v}")
    if p.num_envs % p.minibatches:
        raise ConfigError(f"ppo.minibatches ({p.minibatches}) must divide ppo.num_envs ({p.num_envs})")
    # The pool's names are checked for every regime, but whether its personas can play this board
    # (perfect needs the solver's table) only where PPO plays them: a 7×6 next_token run does not.
    game = make_game(cfg.data.game if t.regime in ("rl", "pretrain_rl") else "tictactoe")
    if not p.opponents or sum(p.opponents.values()) <= 0:
        raise ConfigError("ppo.opponents must name at least one persona with positive weight")
    for name, w in p.opponents.items():
        try:
            make_persona(name, game)
        except ValueError as e:
            raise ConfigError(f"ppo.opponents: {e}") from None
        if not math.isfinite(w) or w < 0:
            raise ConfigError(f"ppo.opponents: weight of {name!r} must be a finite number >= 0, got {w}")
    if t.regime in ("rl", "pretrain_rl") and cfg.model.value_head == "none":
        raise ConfigError("model.value_head: PPO needs a value head (critic or shared)")
    if t.regime in ("rl", "pretrain_rl") and cfg.data.persona_prompt:
        raise ConfigError("data.persona_prompt: RL regimes play without persona prompts; set it false")
    if t.regime != "random_init" and t.steps % t.chunk:
        raise ConfigError(f"train.chunk ({t.chunk}) must divide train.steps ({t.steps})")
    if t.log_checkpoints < 0:
        raise ConfigError(f"train.log_checkpoints must be >= 0, got {t.log_checkpoints}")
    if t.init_from and t.regime != "next_token":
        raise ConfigError("train.init_from applies to next_token only (pretrain_rl uses ppo.pretrained)")
    # Whether data.source names a finished agent run is checked where the run is opened, before
    # any training (``train/agent_data.py::open_source``), as train.init_from's run is.
    if cfg.data.source and t.regime != "next_token":
        raise ConfigError("data.source applies to next_token only (a simulator of an agent's games)")
    if cfg.data.source and cfg.data.persona_prompt:
        raise ConfigError("data.persona_prompt: an agent's games (data.source) have no personas to prompt; "
                          "set it false")
    if t.regime == "pretrain_rl" and not p.pretrained:
        raise ConfigError("ppo.pretrained: pretrain_rl needs the run directory of a next_token run")
    if cfg.log.wandb not in ("offline", "online", "disabled"):
        raise ConfigError(f"log.wandb must be offline, online or disabled, got {cfg.log.wandb!r}")


def seed_keys(cfg: Config):
    """The PRNG key of every seed of a run, stacked (the leading axis of all its params)."""
    import jax
    import jax.numpy as jnp

    return jax.vmap(jax.random.key)(jnp.asarray(cfg.train.seeds, jnp.uint32))


def held_out_data(cfg: Config, num_games: int, index: int = 0) -> DataConfig:
    """The run's game distribution under a data seed no training run uses (evaluation, analyses);
    ``index`` > 0 gives further independent sets (e.g. one per seed)."""
    from dataclasses import replace

    return replace(cfg.data, num_games=num_games, seed=cfg.data.seed + PROBE_SEED_OFFSET + index)


def field_docs(cls) -> dict[str, str]:
    """Field -> the docstring under it (for --help and the README)."""
    import inspect

    src = inspect.getsource(cls)
    tree = ast.parse(src)
    docs, last = {}, None
    for node in tree.body[0].body:
        if isinstance(node, ast.AnnAssign):
            last = node.target.id
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and last:
            docs[last] = node.value.value
            last = None
    return docs
