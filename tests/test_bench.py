"""`agentsim bench` at toy sizes: every measurement runs, the table and JSON have their shape and
every ratio is finite and positive (no timing assertions: the machine is shared); the FLOP
counts follow by hand."""

import json

import numpy as np
import pytest

from agentsim.experiments import bench
from agentsim.models.transformer import ModelConfig

TOY = bench.BenchSizes(models=((1, 16),), batch=16, gym_steps=6, short_moves=3, long_moves=6, nt_batch=8,
                       nt_steps=2, nt_games=200, ppo_seeds=1, ppo_iterations=1, reps=1,
                       ppo_overrides=("ppo.num_envs=8", "ppo.epochs=1", "ppo.minibatches=1",
                                      "ppo.opponents={random=1.0}", "model.num_layers=1", "model.d_model=16",
                                      "model.num_heads=2", "model.mlp_ratio=2"))
KEYS = {"rollout_speedup_vs_gym", "rollout_speedup_from_cache", "rollout_mfu_1L_d16", "length_cost_ratio_cached_1L_d16",
        "length_cost_ratio_full_1L_d16", "next_token_mfu_1L_d16", "ppo_iterations_per_s_cached", "ppo_iterations_per_s_full",
        "ppo_speedup_from_cache", "matmul_peak_gflops"}


@pytest.fixture(scope="module")
def result():  # the whole bench at toy size: a minute and a half, so only its slow test asks for it
    messages = []
    res = bench.run_bench(TOY, preset="tiny", on_message=messages.append)
    assert messages  # progress is reported, not printed by the computing module
    return res


@pytest.mark.slow  # runs the whole bench (the fixture); the hand-computed tests below are fast
def test_bench_rows_table_and_json(result):
    assert {r.key for r in result.rows} == KEYS
    for r in result.rows:
        assert np.isfinite(r.value) and r.value > 0, r
    data = json.loads(json.dumps(result.to_json()))  # JSON-able
    assert [r["key"] for r in data["rows"]] == [r.key for r in result.rows]
    assert {r["key"]: r["met"] for r in data["rows"]}["ppo_speedup_from_cache"] is None  # no goal, no verdict
    assert all(isinstance(r["met"], bool) for r in data["rows"] if r["goal"])
    assert data["context"]["sizes"]["batch"] == TOY.batch and len(data["context"]["load_average_start"]) == 3
    share = data["raw"]["next_token_1L_d16"]["share"]
    assert share["forward"] > 0 and sum(share.values()) == pytest.approx(1.0)
    assert data["raw"]["gym_loop"]["agent_steps"] >= TOY.gym_steps
    game_length = data["raw"]["game_length_1L_d16"]  # per model size, as the old decode micro-benchmark
    assert set(game_length) == {f"{c}_{m}_moves" for c in ("cached", "full") for m in (3, 6)}
    for case in game_length.values():
        assert set(case) == {"us_per_agent_step_of_batch", "agent_steps_per_s"}
        assert all(np.isfinite(v) and v > 0 for v in case.values())
        assert case["agent_steps_per_s"] == pytest.approx(TOY.batch * 1e6 / case["us_per_agent_step_of_batch"])
    assert len(data["raw"]["matmul_gflops"]) == 1 + 2 * len(TOY.models)  # start, then before each MFU
    table = result.table().splitlines()
    assert len(table) == 1 + len(result.rows)
    assert any("rollout speed-up vs gymnasium loop" in line and ("met" in line) for line in table)


def test_goal_verdicts():
    assert bench.Row("a", "a", 120.0, "x", ">= 100").met is True
    assert bench.Row("a", "a", 1.6, "x", "<= 1.5").met is False
    assert bench.Row("a", "a", 0.3, "%", ">= 0.25").met is True
    assert bench.Row("a", "a", 3.0, "/s").met is None


def test_flop_counts_by_hand():
    cfg = ModelConfig(num_layers=2, d_model=8, num_heads=2, mlp_ratio=4, value_head="critic", critic_layers=1)
    # one block, one token attending to 3 positions: 8·64 + 4·8·32 + 4·8·3 = 512 + 1024 + 96
    assert bench.block_flops(8, 4, 3) == 1632
    # Two games: game 0 decides at positions 0 and 2 (3 tokens needed), game 1 at 1 only (2 tokens).
    position = np.array([[0, 1], [2, 3]])
    live = np.array([[True, True], [True, False]])
    per_token = 8 * 64 + 4 * 8 * 32  # matmuls of one block
    trunk = 5 * per_token + 4 * 8 * (6 + 3)  # 5 tokens; contexts 1+2+3 and 1+2
    heads = 3 * (2 * 8 * 12 + 2 * 8)  # 3 decisions: policy head over 12 tokens, value head
    assert bench.rollout_flops(cfg, 12, position, live) == 3 * trunk + heads  # 2 policy blocks + 1 critic
    # next-token training: 3 × forward; real tokens at positions 0 and 4 (contexts 1 and 5)
    fwd = 2 * (2 * per_token + 4 * 8 * 6) + 2 * 2 * 8 * 12
    assert bench.next_token_flops(cfg, 12, np.array([0, 4])) == 3 * fwd
