"""`agentsim cost`: what a preset's training costs, counted in model FLOPs from its configs, and
the time that count takes at stated throughputs (2 CPU cores, measured; one GPU, assumed).

The count is the one ``bench`` uses for MFU (``bench.next_token_flops`` and the same block
FLOPs for PPO), so the estimate and the benchmark speak one unit. Not counted: evaluation
games during training, the analyses, compiles, data generation. A time estimated from FLOPs
is a floor where the work is dispatch-bound (small PPO batches on a CPU, every step on a GPU).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from agentsim.experiments.bench import block_flops, next_token_flops
from agentsim.experiments.config import load_config
from agentsim.experiments.presets import BASE_PRESET, PRESET_SEEDS, STAGES

# Achieved model FLOP/s, per seed-vmapped run, each with where it comes from.
CPU_RATE = 40e9
"""2 cores: next-token training at ≈ 20 % MFU of the ≈ 200 GFLOP/s fp32 matmul peak (``agentsim bench``:
19.5–21.3 % at 2L d64 and 4L d128, README's benchmark table). The quick preset's PPO stages run
at about this rate too (rl: 80 iterations × 512 games × 3 seeds, 2L d64, ≈ 90 s)."""
GPU_RATE = 10e12
"""One H100, an assumption, not a measurement (no GPU was lent to measure it): 15 % of its
67 TFLOP/s fp32 peak, for networks this small (d ≤ 128, ≤ 43 tokens) whose matmuls cannot
fill it."""


@dataclass(frozen=True)
class StageCost:
    name: str
    regime: str
    flops: float
    what: str  # how the count was made, in words


def game_positions(cfg, games: int = 256) -> tuple[np.ndarray, int, int]:
    """Positions (0-based) of the tokens with a next-move target in a sample of the config's
    persona games, the games sampled and the vocabulary size: the tokens one game costs."""
    d = cfg.data
    return _positions(d.game, tuple(sorted(d.mixture.items())), d.persona_prompt, d.outcome_token, games)


@lru_cache(maxsize=None)
def _positions(game: str, mixture: tuple, persona_prompt: bool, outcome_token: bool, games: int):
    from agentsim.envs.dataset import DataConfig, generate
    from agentsim.experiments.train.next_token import target_mask

    data = generate(DataConfig(game=game, num_games=games, mixture=dict(mixture), persona_prompt=persona_prompt,
                               outcome_token=outcome_token), labels=False)
    mask = np.asarray(target_mask(data.layout, data["tokens"], 0))
    return np.nonzero(mask)[1], games, data.layout.vocab_size


def stage_cost(name: str, cfg) -> StageCost:
    """Model FLOPs of one stage over all its seeds."""
    seeds, regime, m = len(cfg.train.seeds), cfg.train.regime, cfg.model
    if regime == "random_init":
        return StageCost(name, regime, 0.0, "no training")
    positions, games, vocab = game_positions(cfg)
    if regime == "next_token":
        per_game = next_token_flops(m, vocab, positions) / games
        flops = per_game * cfg.train.batch_size * cfg.train.steps * seeds
        return StageCost(name, regime, flops, f"{cfg.train.steps} steps × {cfg.train.batch_size} games × 3 (fwd+bwd)")
    # PPO: each iteration plays num_envs games (one cached forward over each game's tokens, the
    # critic trunk beside the policy's) and updates on them for `epochs` passes (forward + backward).
    layers = m.num_layers + (m.critic_layers if m.value_head == "critic" else 0)
    fwd_game = (layers * block_flops(m.d_model, m.mlp_ratio, positions + 1).sum()
                + len(positions) * (2 * m.d_model * vocab + 2 * m.d_model)) / games
    per_iteration = cfg.ppo.num_envs * fwd_game * (1 + 3 * cfg.ppo.epochs)
    what = f"{cfg.train.steps} iterations × {cfg.ppo.num_envs} games × (rollout + {cfg.ppo.epochs} epochs × 3)"
    if cfg.ppo.league > 0:
        # The past self reads every game's whole token buffer, uncached, before each opponent
        # move (the opening and every turn), in every game: the arena computes it for all of them.
        # Only its policy trunk and next-move head: nothing reads its value, so XLA drops the critic.
        from agentsim.envs import make_game
        from agentsim.envs.tokens import Layout

        seq_len, moves = Layout.for_config(cfg.data).seq_len, (make_game(cfg.data.game).max_moves + 1) // 2 + 1
        full = m.num_layers * block_flops(m.d_model, m.mlp_ratio, np.arange(1, seq_len + 1)).sum() \
            + seq_len * 2 * m.d_model * vocab
        per_iteration += cfg.ppo.num_envs * moves * full
        what += f" + the league's {moves} uncached forwards a game"
    flops = per_iteration * cfg.train.steps * seeds
    return StageCost(name, regime, float(flops), what)


def preset_cost(preset: str, overrides: tuple[str, ...] = ()) -> list[StageCost]:
    """Every stage of a ``reproduce`` preset, as it would be trained (a stage's reference to an
    earlier run names a run, not a size: it is left unresolved)."""
    base, seeds = BASE_PRESET.get(preset, preset), PRESET_SEEDS.get(preset)
    out = []
    for name, extra in STAGES[preset]:
        kept = [o.replace("{run:", "runs/{") for o in extra] + ([f"train.seeds={seeds}"] if seeds else [])
        out.append(stage_cost(name, load_config(base, overrides=kept + list(overrides))))
    return out


def hours(flops: float, rate: float) -> float:
    return flops / rate / 3600
