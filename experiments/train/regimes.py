"""The regimes (README table), each built as a ``Trainer`` from a config.

``next_token`` (simulator), ``rl`` and ``pretrain_rl`` (agents, PPO), ``random_init`` (the
control: the untrained network). Runs that start from another run's params (pretrain_rl,
continued pretraining) open that run's checkpoint, never its trainer.
"""

from __future__ import annotations

from pathlib import Path

from agentsim.envs.dataset import Dataset, generate, split_by_game
from agentsim.envs.tokens import Layout
from agentsim.experiments.config import Config, ConfigError, seed_keys
from agentsim.experiments.runs.restore import open_checkpoint
from agentsim.experiments.train.agent_data import agent_datasets
from agentsim.experiments.train.next_token import make_next_token
from agentsim.experiments.train.trainer import Trainer
from agentsim.models.transformer import init_params


def datasets(cfg: Config, stored: Path | None = None) -> tuple[Dataset, Dataset, Dataset]:
    """(train, val, full) splits of the run's dataset, split by whole games (without the labels
    that need the solver's table: training reads tokens and the Bayes-optimal loss only). With
    ``data.source`` one dataset per seed of the agent's games (``agent_data.SeedDatasets``, the
    same split for every seed), read from ``stored`` (a run's ``AGENT_GAMES``) where it exists."""
    data = agent_datasets(cfg, stored) if cfg.data.source else generate(cfg.data, labels=False)
    n_val = min(cfg.train.eval_games, len(data) // 5)
    val_idx, train_idx = split_by_game(len(data), (n_val / len(data), 1 - n_val / len(data)), cfg.data.seed)
    return data.subset(train_idx), data.subset(val_idx), data


def _start_from(run_dir: str, cfg: Config, layout: Layout, field: str):
    """Seed-stacked params of another run to start from; its architecture, layout and seed count
    must be this run's."""
    ck = open_checkpoint(run_dir)
    if len(ck.cfg.train.seeds) != len(cfg.train.seeds):
        raise ConfigError(f"{field}: {run_dir} has {len(ck.cfg.train.seeds)} seeds, this run has {len(cfg.train.seeds)}")
    if ck.cfg.model != cfg.model or ck.layout != layout:
        raise ConfigError(f"{field}: that run's model or token layout differs from this run's")
    return ck.params


def make_trainer(cfg: Config, layout: Layout, train: Dataset | None = None,
                 val: Dataset | None = None) -> Trainer:
    """The regime's trainer (next_token needs the train and validation sets)."""
    regime = cfg.train.regime
    if regime == "next_token":
        init_from = _start_from(cfg.train.init_from, cfg, layout, "train.init_from") if cfg.train.init_from else None
        return make_next_token(cfg, layout, train, val, init_from=init_from)
    if regime in ("rl", "pretrain_rl"):
        from agentsim.experiments.train.ppo import make_ppo

        init_from = _start_from(cfg.ppo.pretrained, cfg, layout, "ppo.pretrained") if regime == "pretrain_rl" else None
        return make_ppo(cfg, layout, init_from=init_from)
    # random_init: the untrained network, the control every probe is measured against.
    graphdef, _ = init_params(cfg.model, layout.vocab_size, layout.seq_len, seed_keys(cfg)[:1])

    def init(keys):
        return {"params": init_params(cfg.model, layout.vocab_size, layout.seq_len, keys)[1]}

    return Trainer(graphdef, init, lambda s: (s, {}), lambda s: {}, 0)
