"""The long tier (paper-long, c4-long): what it promises over paper and c4 (8 layers, d ≥ 128,
≥ 10× the games of every trained stage), what `agentsim cost` counts, and (slow) that every
stage trains and is measured at tiny size through `reproduce`."""

import numpy as np
import pytest

from agentsim.experiments import cost
from agentsim.experiments.bench import block_flops, next_token_flops
from agentsim.experiments.config import load_config
from agentsim.experiments.presets import BASE_PRESET, PRESET_SEEDS, SIZES, STAGES

PAIRS = (("paper", "paper-long"), ("c4", "c4-long"))


def games_trained(preset: str) -> dict[str, int]:
    """Games each trained stage sees: next-token steps × batch, PPO iterations × games each."""
    out = {}
    for name, extra in STAGES[preset]:
        cfg = load_config(BASE_PRESET.get(preset, preset), overrides=[o.replace("{run:", "runs/{") for o in extra])
        if cfg.train.regime in ("next_token", "rl", "pretrain_rl"):
            per_step = cfg.train.batch_size if cfg.train.regime == "next_token" else cfg.ppo.num_envs
            out[name] = cfg.train.steps * per_step
    return out


@pytest.mark.parametrize("short, long", PAIRS)
def test_long_tier_is_deeper_wider_and_ten_times_the_games(short, long):
    assert [n for n, _ in STAGES[long]] == [n for n, _ in STAGES[short]]
    short_games, long_games = games_trained(short), games_trained(long)
    for name, games in short_games.items():
        assert long_games[name] >= 10 * games, name
    for name, extra in STAGES[long]:
        cfg = load_config(BASE_PRESET.get(long, long), overrides=[o.replace("{run:", "runs/{") for o in extra])
        assert cfg.model.num_layers == 8 and cfg.model.d_model >= 128 and len(cfg.train.seeds) == 5
        assert cfg.data.game == load_config(BASE_PRESET.get(short, short)).data.game
    assert PRESET_SEEDS[long] is None  # its own config holds the five seeds


def test_cost_counts_next_token_as_bench_does_and_ppo_per_game():
    cfg = load_config("quick", overrides=["train.steps=10", "train.chunk=5", "train.batch_size=8", "train.seeds=[0,1]"])
    positions, games, vocab = cost.game_positions(cfg)
    stage = cost.stage_cost("next_token", cfg)
    assert stage.flops == pytest.approx(next_token_flops(cfg.model, vocab, positions) / games * 8 * 10 * 2)
    rl = load_config("quick", overrides=["train.regime='rl'", "train.steps=3", "train.chunk=1", "ppo.num_envs=4", "ppo.epochs=2"])
    double = load_config("quick", overrides=["train.regime='rl'", "train.steps=6", "train.chunk=1", "ppo.num_envs=4", "ppo.epochs=2"])
    one, two = cost.stage_cost("rl", rl).flops, cost.stage_cost("rl", double).flops
    assert one > 0 and two == pytest.approx(2 * one)
    assert cost.stage_cost("random_init", load_config("quick", overrides=["train.regime='random_init'"])).flops == 0
    # The league's past self reads each game's whole buffer before each of the opponent's moves:
    # on tic-tac-toe the opening and 5 turns, 6 uncached forwards over BOS + 9 moves, through the
    # policy trunk and next-move head only (its value is never read, so the critic never runs).
    league = load_config("quick", overrides=["train.regime='rl'", "train.steps=3", "train.chunk=1", "ppo.num_envs=4",
                                             "ppo.epochs=2", "ppo.league=1.0"])
    m = league.model
    full = m.num_layers * block_flops(m.d_model, m.mlp_ratio, np.arange(1, 11)).sum() + 10 * 2 * m.d_model * vocab
    assert cost.stage_cost("rl", league).flops - one == pytest.approx(3 * 4 * 6 * full * len(league.train.seeds))


def test_cost_of_a_long_preset_exceeds_its_short_one_by_more_than_the_games():
    short = sum(c.flops for c in cost.preset_cost("paper"))
    long = sum(c.flops for c in cost.preset_cost("paper-long"))
    assert long > 10 * short  # 10× the games through a larger network


TINY = ("train.steps=2", "train.chunk=1", "data.num_games=400", "model.d_model=16", "model.num_heads=2",
        "model.mlp_ratio=2", "train.seeds=[0,1]", "train.batch_size=16", "train.warmup=1", "train.eval_games=200",
        "train.eval_games_per_cell=4", "train.final_games_per_cell=8", "ppo.num_envs=8", "ppo.epochs=1",
        "ppo.minibatches=2", "train.log_checkpoints=2", "log.wandb=disabled",
        "ppo.critic_warmup=1")  # c4's pretrain_rl warms its critic up for 10 iterations: 1 of the 2 here


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["paper-long", "c4-long"])
def test_long_tier_runs_at_tiny_size(preset, tmp_path, monkeypatch):
    """Every stage at 8 layers, shrunk in width, steps and games; claim 1's measure on them."""
    from agentsim.experiments.report.reproduce import reproduce

    monkeypatch.setitem(SIZES, preset, SIZES["c4-tiny" if preset.startswith("c4") else "tiny"])
    game = ("data.game='connect_four:4x4'",) if preset.startswith("c4") else ()
    res = reproduce(preset, tmp_path / "out", overrides=TINY + game, on_message=lambda m: None, value_only=True)
    assert set(res["finals"]) == {name for name, _ in STAGES[preset]}
    assert res["analyses"]["value"]["agents"].keys() >= {"rl", "pretrain_rl", "rl_shared_value"}
    assert res["game"]["parameters"] > 0
