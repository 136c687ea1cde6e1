"""`agentsim bench`: throughput on this machine, measured after compilation.

Reports the solver time, dataset games/s, raw env steps/s (jitted scan(vmap(step))), next-token
training tokens/s and its fraction of the measured fp32 matmul peak (MFU), and PPO agent
steps/s. Numbers are medians of a few repeats; compare ratios, not absolutes, on a shared CPU.
"""

from __future__ import annotations

import time
from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np


def _median_time(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def matmul_peak(n: int = 2048) -> float:
    """Measured fp32 GFLOP/s of a jitted square matmul (the MFU denominator)."""
    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    f(a).block_until_ready()
    return 2 * n**3 / _median_time(lambda: f(a), 5) / 1e9


def model_flops_per_token(cfg, vocab: int = 20, seq_len: int = 10) -> float:
    """Forward+backward FLOPs per token of next-token training ≈ 6 × matmul params + attention.
    The separate critic is not counted: its output is unused by the loss, so XLA drops it."""
    d, f = cfg.d_model, cfg.mlp_ratio * cfg.d_model
    per_block = 4 * d * d + 2 * d * f + 2 * seq_len * d
    return 6 * (cfg.num_layers * per_block + cfg.mtp_heads * d * vocab)


def run_bench(preset: str = "quick", seeds: int = 3) -> dict:
    from envs import make_game
    from envs.dataset import generate, split_by_game
    from envs.solver import solve
    from experiments.config import load_config, seed_keys
    from experiments.train.next_token import make_next_token
    from experiments.train.ppo import make_ppo

    out = {}
    game = make_game("tictactoe")
    solve(game)
    out["solver_s"] = _median_time(lambda: solve(game).minimax_x, 3)

    cfg = load_config(preset, overrides=[f"train.seeds={list(range(seeds))}", "train.chunk=50"])
    generate(replace(cfg.data, num_games=100_000))
    t = _median_time(lambda: generate(replace(cfg.data, num_games=100_000))["tokens"], 2)
    out["dataset_games_per_s"] = 100_000 / t

    n_env, n_steps = 4096, 9
    step = jax.vmap(game.step)
    init = jax.vmap(lambda _: game.init())(jnp.arange(n_env))

    @jax.jit
    def roll(key):
        def body(s, k):
            logits = jnp.where(jax.vmap(game.legal_mask)(s), 0.0, -1e9)
            return step(s, jax.random.categorical(k, logits)), None
        return jax.lax.scan(body, init, jax.random.split(key, n_steps))[0].board

    roll(jax.random.key(0))
    out["env_steps_per_s"] = n_env * n_steps / _median_time(lambda: roll(jax.random.key(1)))

    data = generate(cfg.data)
    tr, va = split_by_game(len(data), (0.9, 0.1), 0)
    trainer = make_next_token(cfg, data.layout, data.subset(tr), data.subset(va))
    state = trainer.init(seed_keys(cfg))
    state, _ = trainer.chunk(state)
    dt = _median_time(lambda: trainer.chunk(state)[1]["losses/loss"])
    tokens = seeds * cfg.train.chunk * cfg.train.batch_size * data.layout.seq_len
    out["next_token_tokens_per_s"] = tokens / dt
    peak = matmul_peak()
    out["matmul_peak_gflops"] = peak
    out["next_token_mfu"] = out["next_token_tokens_per_s"] * model_flops_per_token(cfg.model) / (peak * 1e9)

    rl_cfg = load_config(preset, overrides=[f"train.seeds={list(range(seeds))}", "train.chunk=5", "train.regime='rl'"])
    ppo = make_ppo(rl_cfg, data.layout)
    pstate = ppo.init(seed_keys(rl_cfg))
    pstate, m = ppo.chunk(pstate)
    dt = _median_time(lambda: ppo.chunk(pstate)[1]["charts/agent_steps"])
    out["ppo_agent_steps_per_s"] = float(np.sum(m["charts/agent_steps"])) * rl_cfg.train.chunk / dt
    out["seeds"] = seeds
    return out
