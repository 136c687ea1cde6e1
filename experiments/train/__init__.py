"""Training: the regimes (next-token simulator, PPO agent, pretrain-then-RL, random init), the
arena agents play in, evaluation, and the thin loop that writes a run directory."""
