"""Training-time views: log-spaced checkpoint steps, the probe timeline (claim 3, F1) and the
RL-amount analysis (claim 5, F7) on the shared tiny runs."""

import numpy as np
import pytest

from agentsim.experiments.analysis.heldout import held_out
from agentsim.experiments.analysis.model import LoadedModel
from agentsim.experiments.analysis.probe_suite import probe_suite
from agentsim.experiments.analysis.rl_amount import analyse_rl_amount
from agentsim.experiments.analysis.timeline import analyse_timeline
from agentsim.experiments.runs import checkpoints
from agentsim.experiments.train.loop import log_spaced_steps


@pytest.mark.parametrize("total, chunk, count", [(1000, 10, 12), (60, 20, 3), (1500, 100, 6), (4, 2, 2),
                                                 (10_000, 1, 30)])
def test_log_spaced_steps_are_chunk_aligned_and_geometric(total, chunk, count):
    steps = sorted(log_spaced_steps(total, chunk, count))
    assert steps[0] == chunk and steps[-1] == total  # both ends
    assert all(s % chunk == 0 and chunk <= s <= total for s in steps)
    assert len(steps) <= count
    assert len(set(steps)) == len(steps)
    big = [s for s in steps if s >= 20 * chunk]  # past the rounding to chunks: equal log gaps
    if len(big) >= 3:
        gaps = np.diff(np.log(big))
        assert gaps.max() / gaps.min() < 1.5, gaps


def test_log_spaced_steps_edge_cases():
    assert log_spaced_steps(100, 10, 0) == set()
    assert log_spaced_steps(0, 10, 5) == set()
    assert log_spaced_steps(10, 10, 5) == {10}


def test_timeline_has_every_checkpoint_and_step0_is_the_random_init_network(tiny_next_token):
    result = analyse_timeline(tiny_next_token, num_games=60, targets=("value_mover", "board_mover"))
    steps = checkpoints.steps(tiny_next_token / "checkpoints")
    assert result["steps"] == steps and steps[0] == 0 and len(steps) >= 3
    scores = np.asarray(result["targets"]["board_mover"])  # [checkpoint, seed, layer]
    assert scores.shape == (len(steps), 2, 3)
    # A run trained from scratch saves its init as step 0: the same network as at_init().
    model = LoadedModel.from_run(tiny_next_token)
    rows = held_out(model.cfg, 60)
    init = probe_suite(model.at_init(), rows, {}, ("board_mover",), mlp_targets=())
    np.testing.assert_allclose(scores[0], [r["score"] for r in init["board_mover"]["trained"]])


@pytest.mark.slow  # trains or analyses the shared tiny pretrain_rl run end to end
def test_rl_amount_starts_at_zero_change_and_moves(tiny_next_token, tiny_pretrain_rl):
    result = analyse_rl_amount(tiny_next_token, tiny_pretrain_rl)
    dw = np.asarray(result["weight_change"])  # [checkpoint, seed, layer]
    assert result["steps"] == checkpoints.steps(tiny_pretrain_rl / "checkpoints")
    assert result["layer_names"] == ["emb", "block1", "block2"]
    np.testing.assert_array_equal(dw[0], 0.0)  # RL starts from the pretrained params exactly
    assert np.all(dw[-1] > 0)
