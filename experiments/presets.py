"""Named presets: partial configs merged over the defaults (``--preset NAME``)."""

# Sizes tuned so that `agentsim reproduce --preset quick` runs in minutes on a 2-core CPU.
PRESETS: dict[str, dict] = {
    "quick": {
        "data": {"num_games": 20_000},
        "model": {"num_layers": 2, "d_model": 64, "num_heads": 4},
        "train": {"seeds": [0, 1, 2], "steps": 1500, "chunk": 100, "batch_size": 128},
        "ppo": {"num_envs": 256},
    },
    "tiny": {  # for tests: everything runs, nothing is learnt
        "data": {"num_games": 600},
        "model": {"num_layers": 2, "d_model": 16, "num_heads": 2, "mlp_ratio": 2},
        "train": {"seeds": [0, 1], "steps": 4, "chunk": 2, "batch_size": 16, "warmup": 1,
                  "eval_games": 200, "checkpoint_every": 1},
        "ppo": {"num_envs": 8, "epochs": 1, "minibatches": 2},
    },
}
