"""The probe suite's labels and its Bayes ceiling against direct computations."""

import itertools
import json

import numpy as np
import pytest

from agentsim.envs import make_game
from agentsim.envs.dataset import DataConfig, generate
from agentsim.envs.personas import make_persona
from agentsim.experiments.analysis.heldout import HeldOut


@pytest.fixture(scope="module")
def rows():
    return HeldOut.from_data(generate(DataConfig(num_games=300, mixture={"random": 1.0, "center": 1.0, "perfect": 1.0}, seed=3)))


def test_bayes_ceiling_matches_brute_force_posterior(rows):
    """Posterior by brute force (prior × product of the persona's probabilities of X's moves),
    then the accuracy of its argmax per move number."""
    import jax

    d = rows.data
    game = make_game("tictactoe")
    names = d.layout.persona_names
    personas = [make_persona(n, game) for n in names]
    probs = jax.jit(lambda s: [p.probs(s) for p in personas])
    hits = np.zeros(game.max_moves)
    counts = np.zeros(game.max_moves)
    for g in range(60):
        state, lik = game.init(), np.zeros(len(names))
        for t, move in enumerate(d["moves"][g]):
            if move < 0:
                break
            post = np.exp(lik - lik.max())
            hits[t] += int(np.argmax(post / post.sum()) == d["persona_x"][g])
            counts[t] += 1
            if int(state.player) == 0:
                with np.errstate(divide="ignore"):
                    lik = lik + np.log([float(p[move]) for p in probs(state)])
            state = game.step(state, move)
    sub = HeldOut.from_data(d.subset(np.arange(60)))
    ceiling = sub.bayes_ceiling()["x"]
    seen = counts > 0
    np.testing.assert_allclose(ceiling[seen], hits[seen] / counts[seen], atol=1e-6)


def test_labels_are_consistent_across_frames(rows):
    labels = rows.labels()
    player = rows.data["player"][rows.mask]
    sign = np.where(player == 0, 1.0, -1.0)
    np.testing.assert_allclose(labels["value_mover"][1], labels["value_x"][1] * sign)
    np.testing.assert_allclose(labels["minimax_mover"][1], labels["minimax_x"][1] * sign)
    board_xo, board_mover = labels["board_xo"][1], labels["board_mover"][1]
    # empty cells agree; an X stone is "mine" exactly when X is to move
    assert np.array_equal(board_xo == 0, board_mover == 0)
    x_to_move = (player == 0)[:, None]
    assert np.array_equal((board_xo == 1) & x_to_move, (board_mover == 1) & x_to_move)
    # rows of one game never straddle splits
    for a, b in itertools.combinations(rows.splits, 2):
        assert not set(rows.game[a]) & set(rows.game[b])


def test_control_task_is_a_function_of_last_move_and_move_number(rows):
    y = rows.labels()["persona_x"][1]
    ctrl = rows.control_task(y, 3, seed=0)
    tokens = rows.data["tokens"][rows.mask.nonzero()[0]]
    last = tokens[np.arange(len(rows.move)), rows.data.layout.prefix_len - 1 + rows.move]
    seen = {}
    for key, label in zip(zip(last, rows.move), ctrl[:, 0]):
        assert seen.setdefault(key, label) == label
    assert len(set(ctrl[:, 0])) > 1


@pytest.mark.slow  # trains or analyses the shared tiny pretrain_rl run end to end
def test_probe_suite_cli_writes_linear_and_mlp_probes_with_controls(tiny_pretrain_rl, tmp_path, capsys, monkeypatch):
    """`agentsim probe RUN --suite` on a tiny run: every target, both probe types, each beside its
    controls, scores in range, and the step-0 control present (the run has two checkpoints)."""
    import shutil

    from agentsim.experiments import cli
    from agentsim.experiments.analysis.probe_suite import CLASSIFICATION, MLP_TARGETS, REGRESSION

    monkeypatch.setattr(cli, "_enable_compile_cache", lambda: None)
    run = tmp_path / "prl"
    shutil.copytree(tiny_pretrain_rl, run)  # the CLI writes next to the run: never into the shared one
    assert cli.main(["probe", str(run), "--suite", "--games", "120"]) == 0
    printed = capsys.readouterr().out
    res = json.loads((run / "probe_suite.json").read_text())
    assert set(res["targets"]) == set(REGRESSION + CLASSIFICATION)
    for name, entry in res["targets"].items():
        # step 0 of pretrain_rl is the simulator it started from: a control distinct from random init
        assert {"trained", "random_init", "step0", "shuffled"} <= set(entry)
        for per_seed in entry["trained"]:
            assert len(per_seed["score"]) == 3  # embeddings + 2 blocks
            if entry["kind"] == "accuracy":
                assert all(0.0 <= s <= 1.0 for s in per_seed["score"])
        if name in MLP_TARGETS:
            control = "control_task" if entry["kind"] == "accuracy" else "shuffled"
            assert set(entry["mlp"]) == {"trained", "random_init", control}
            assert len(entry["mlp"]["trained"]) == 2  # seeds
            assert f"{name:15s} mlp" in printed
        else:
            assert "mlp" not in entry
