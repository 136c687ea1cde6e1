"""Claim 1's instrument: the agent's exact V^π against Monte Carlo play of the agent itself, the
simulator's value against the dataset's, the probe reading a planted value at the right layer,
and the whole measure on the shared tiny runs."""

from pathlib import Path
from types import SimpleNamespace

import jax
import numpy as np
import pytest

from agentsim.envs.dataset import generate
from agentsim.envs.tokens import Layout
from agentsim.experiments.analysis import agent_value as AV
from agentsim.experiments.analysis import value_probes as VP
from agentsim.experiments.analysis.model import LoadedModel
from agentsim.experiments.analysis.value_probes import (
    Rows,
    agent_rows,
    checkpoints_read,
    measure_value,
    sample_per_game,
    score_layers,
    score_output,
)
from agentsim.experiments.config import held_out_data, load_config, seed_keys
from agentsim.models.transformer import init_params


@pytest.fixture(scope="module")
def agent():
    """A random-init agent (2 seeds): its policy is a non-trivial function of the whole history."""
    cfg = load_config("tiny", overrides=["train.regime='rl'", "ppo.opponents={random=1.0, greedy=2.0, perfect=1.0}"])
    layout = Layout.for_config(cfg.data)
    graphdef, params = init_params(cfg.model, layout.vocab_size, layout.seq_len, seed_keys(cfg))
    return LoadedModel(cfg, layout, graphdef, params)


@pytest.fixture(scope="module")
def tree():
    return AV.game_tree("tictactoe")


@pytest.fixture(scope="module")
def own_games(agent):
    """The agent's own games, played once for every test that reads them."""
    return AV.agent_games(agent, 3000, seed=3)


def test_tree_policy_is_the_networks_own_move_distribution(agent, tree):
    probs = AV.tree_policy(agent, tree)
    nodes = np.random.default_rng(0).choice(np.flatnonzero(~tree.terminal), 50)
    tokens = AV._node_tokens(agent, tree, nodes)
    logits = agent.logits(tokens)  # [S, n, T, V], each node read from its own history
    pos = agent.layout.prefix_len - 1 + tree.depth[nodes]
    z = logits[:, np.arange(len(nodes)), pos, :9]
    legal = tree.solved.children[tree.state[nodes]] >= 0
    z = np.where(legal, z, -np.inf)
    expected = np.exp(z - z.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)
    np.testing.assert_allclose(probs[:, nodes], expected, atol=1e-5)


def test_tree_policy_over_the_cache_equals_reading_whole_histories(agent, tree):
    """The cached expansion (one token per history on its parent's cache, in chunks smaller than
    a level, so chunks of children of several parent chunks) against the reference that reads
    whole histories: every node, both seeds."""
    assert agent.cfg.model.value_head == "critic"  # the critic the cached path drops is there
    cached = AV.tree_policy(agent, tree, batch=1000)
    reference = AV.tree_policy(agent, tree, cache=False)
    np.testing.assert_allclose(cached, reference, atol=2e-5)
    live = ~tree.terminal
    np.testing.assert_allclose(cached[:, live].sum(-1), 1.0, atol=1e-5)


def test_forward_pads_short_sets_and_drops_the_padding(agent, tree):
    """Sets of any size run on a few padded shapes; every output row is its own history's, in
    order, whatever the set around it (split 70 rows 35 + 35, and 70 rows in batches of 32)."""
    tokens = AV._node_tokens(agent, tree, np.arange(1, 71))
    names = ("resid", "critic_resid", "value")
    whole = agent.run_with_cache(tokens, names)
    halves = [agent.run_with_cache(tokens[i:i + 35], names) for i in (0, 35)]
    batched = agent.run_with_cache(tokens, names, batch=32)
    for k in names:
        axis = 1 if k == "value" else 2
        assert whole[k].shape[axis] == 70
        np.testing.assert_allclose(np.concatenate([h[k] for h in halves], axis), whole[k], atol=1e-5)
        np.testing.assert_allclose(batched[k], whole[k], atol=1e-5)
    logits = agent.logits(tokens, batch=32)
    assert logits.shape[1] == 70
    np.testing.assert_allclose(logits, agent.logits(tokens), atol=1e-5)


def test_agent_values_are_computed_once_per_params(agent, tree, monkeypatch):
    """Claims 1 and 5 read the same checkpoint's V^π from separate loads: the second read is the
    first's array; other params (the same architecture at other seeds) are computed afresh. The
    cache is what is tested, so the fresh computation is counted, not paid (the real one is
    checked against Monte Carlo play below)."""
    first = AV.agent_values(agent, tree)
    calls = []

    def counted(model, tree_, *a, **k):
        calls.append(model)
        return np.zeros((model.num_seeds, tree_.num_nodes, tree_.solved.game.num_actions))

    monkeypatch.setattr(AV, "tree_policy", counted)
    monkeypatch.setattr(AV, "policy_value", lambda tree_, *a: np.full((tree_.num_nodes, 2), 7.0))
    again = LoadedModel(agent.cfg, agent.layout, agent.graphdef, jax.tree.map(np.array, agent.params))
    assert AV.agent_values(again, tree) is first and not calls
    _, params = init_params(agent.cfg.model, agent.layout.vocab_size, agent.layout.seq_len,
                            jax.random.split(jax.random.key(9), agent.num_seeds))
    fresh = AV.agent_values(agent.with_params(params), tree)
    assert len(calls) == 1 and fresh is not first and np.all(fresh == 7.0)
    assert AV.agent_values(agent.with_params(params), tree) is fresh and len(calls) == 1
    assert not first.flags.writeable and not fresh.flags.writeable


def test_exact_value_agrees_with_monte_carlo_play_of_the_agent(agent, tree, own_games):
    """The agent's own games, played by the arena as in training, against V^π from the tree: at the
    root for each side, and at every decision it reaches (the tower property)."""
    values = AV.agent_values(agent, tree)
    games = own_games
    for s in range(agent.num_seeds):
        nodes = tree.find(games.moves[s])
        for side in (0, 1):
            r = games.result[s][games.side[s] == side]
            assert abs(r.mean() - values[s, 0, side]) < 4 * r.std() / np.sqrt(len(r)) + 1e-3
        for t in range(2, 8):
            n = nodes[:, t]
            ok = (n >= 0) & (tree.player[np.maximum(n, 0)] == games.side[s]) & ~tree.terminal[np.maximum(n, 0)]
            if ok.sum() < 300:
                continue
            v, r = values[s, n[ok], games.side[s][ok]], games.result[s][ok]
            assert abs(r.mean() - v.mean()) < 4 * r.std() / np.sqrt(ok.sum()) + 1e-3, (s, t)


def test_own_games_play_o_as_often_as_training_did(agent, own_games):
    """The agent's own games are its training games: O in ``ppo.o_fraction`` of them (0.75 by
    default), not half (the measure once played both sides equally)."""
    assert agent.cfg.ppo.o_fraction == 0.75
    share_o = own_games.side.mean(-1)
    assert np.all(np.abs(share_o - 0.75) < 4 * np.sqrt(0.75 * 0.25 / 3000)), share_o


def test_simulator_value_on_the_tree_is_the_datasets_bayes_value(tree):
    cfg = load_config("tiny")
    data = generate(held_out_data(cfg, 300))
    mixture = AV.mixture_values(tree, cfg.data)
    nodes = tree.find(data["moves"])[:, :-1]
    mask = data["move_mask"]
    np.testing.assert_allclose(mixture[nodes[mask]], data["bayes_x"][mask], atol=1e-5)


def _rows(n_games=400, moves=5, seed=0):
    game = np.repeat(np.arange(n_games), moves)
    move = np.tile(np.arange(moves), n_games)
    y = np.random.default_rng(seed).normal(size=len(game)) + 0.5 * move
    return Rows.make({"v": y}, move, game, move % 2, seed), y


def test_a_value_whose_sign_flips_with_the_side_is_read_by_the_per_side_probes():
    """V in the mover's frame = side-independent feature × (+1 for X, −1 for O): no single linear
    readout has it, one per side does."""
    rows, _ = _rows()
    rng = np.random.default_rng(2)
    f = rng.normal(size=len(rows.move))
    y = np.where(rows.side == 0, f, -f)
    resid = np.stack([rng.normal(size=(len(f), 4)), np.column_stack([f, rng.normal(size=(len(f), 3))])])
    s = score_layers(resid, y, rows)
    assert s.layer == 1 and s.test_r2[1] > 0.99 and s.test_r2[0] < 0.05


def test_a_side_with_no_test_rows_still_scores():
    """An agent that plays O in 3/4 of its games can leave a small test split without an X decision:
    the X probe is still fit and chosen on validation, and the test score is read on the O rows."""
    game = np.repeat(np.arange(400), 4)
    move = np.tile(np.arange(4), 400)
    side = np.ones(len(game), int)
    rows = Rows.make({"v": np.zeros(len(game))}, move, game, side, 0)
    x_games = rows.game[np.concatenate(rows.splits[:2])][:40]  # X decisions in train and val only
    side[np.isin(game, x_games) & (move % 2 == 0)] = 0
    rows = Rows.make({"v": np.zeros(len(game))}, move, game, side, 0)
    assert (rows.side[rows.splits[2]] == 0).sum() == 0 and (rows.side[rows.splits[0]] == 0).sum() > 0
    rng = np.random.default_rng(3)
    y = rng.normal(size=len(game))
    resid = np.stack([rng.normal(size=(len(y), 4)), np.column_stack([y, rng.normal(size=(len(y), 3))])])
    s = score_layers(resid, y, rows)
    assert s.layer == 1 and s.test_r2[1] > 0.99


def test_rows_split_whole_games():
    rows, _ = _rows()
    parts = [set(rows.game[s]) for s in rows.splits]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert rows.weights.shape[1] == len(rows.splits[2])


def test_probe_finds_the_planted_layer_and_the_head_is_scored_as_it_is():
    rows, y = _rows()
    rng = np.random.default_rng(1)
    resid = rng.normal(size=(3, len(y), 8))
    resid[2, :, 3] = y + 0.05 * rng.normal(size=len(y))  # the value lives in block 2, not block 1
    s = score_layers(resid, y, rows)
    assert s.layer == 2 and s.test_r2[2] > 0.99 and s.test_r2[1] < 0.3
    assert s.within_r2[2] > 0.99 and s.within_r2[1] < s.test_r2[1]  # the move number alone explains a lot
    assert abs(np.mean(np.asarray(s.boot_r2)[:, 2]) - s.test_r2[2]) < 0.01
    head = score_output(y, y, rows)
    assert head.test_r2 == [1.0] and head.layer == 0


def test_a_sample_keeps_k_rows_of_every_game_each_row_equally_likely():
    lengths = np.random.default_rng(0).integers(1, 8, 300)
    game = np.random.default_rng(1).permutation(np.repeat(np.arange(300), lengths))  # a game's rows need not touch
    keep = sample_per_game(game, 2, seed=4)
    assert np.array_equal(np.bincount(game[keep], minlength=300), np.minimum(lengths, 2))
    assert np.array_equal(keep, sample_per_game(game, 2, seed=4))
    assert not np.array_equal(keep, sample_per_game(game, 2, seed=5))
    assert sample_per_game(game, None, seed=4).all() and sample_per_game(game, 9, seed=4).all()
    # Each of a 5-row game's rows is kept 2/5 of the time, wherever it stands (SE 0.008 over 4000 draws).
    five = np.tile(np.arange(3), 5)
    freq = np.mean([sample_per_game(five, 2, seed=k) for k in range(4000)], axis=0)
    assert np.all(np.abs(freq - 0.4) < 0.04), freq
    with pytest.raises(ValueError, match="at least 1"):
        sample_per_game(game, 0, seed=0)


def test_sampled_decisions_keep_every_game_its_split_and_its_labels(agent, tree, own_games):
    games = own_games
    full, full_index = agent_rows(agent, agent.cfg, games, tree, 4, seed=0)
    part, part_index = agent_rows(agent, agent.cfg, games, tree, 4, seed=0, decisions_per_game=2)
    for a, b, (ga, ta), (gb, tb) in zip(full, part, full_index, part_index):
        assert len(b.move) < len(a.move) and np.bincount(b.game).max() == 2
        for k in range(3):  # the same games in train, val and test
            assert set(a.game[a.splits[k]]) == set(b.game[b.splits[k]])
        at = {(g, t): i for i, (g, t) in enumerate(zip(ga, ta))}
        i = np.array([at[(g, t)] for g, t in zip(gb, tb)])
        for target in a.y:
            np.testing.assert_array_equal(b.y[target], a.y[target][i])


def test_monte_carlo_labels_are_paid_for_the_sampled_rows_only(agent, own_games, monkeypatch):
    asked = []

    def fake(model, moves_SxRxM, side_SxR, posterior_SxRxP, num_rollouts, seed):
        asked.append(moves_SxRxM.shape[1])
        shape = moves_SxRxM.shape[:2]
        return np.zeros(shape), np.full(shape, 0.1)

    def labels(data_cfg, moves_NxM):  # the replayed labels' shapes, without compiling the replay
        player = np.broadcast_to(np.arange(moves_NxM.shape[1]) % 2, moves_NxM.shape)
        zeros = np.zeros(moves_NxM.shape)
        return {"move_mask": moves_NxM >= 0, "player": player, "bayes_x": zeros, "minimax_x": zeros,
                "position": zeros.astype(np.int64)}

    monkeypatch.setattr(VP, "rollout_values", fake)
    monkeypatch.setattr(VP, "replay", labels)
    games = own_games.moves.shape[1]
    rows, _ = agent_rows(agent, agent.cfg, own_games, None, 4, seed=0, decisions_per_game=1)
    assert asked == [games] and all(len(r.move) == games for r in rows)  # one history per game, not every decision
    agent_rows(agent, agent.cfg, own_games, None, 4, seed=0)
    assert asked[1] > 2 * games


def test_an_agent_and_its_control_are_read_in_one_forward_each_with_the_same_compile(agent, own_games, monkeypatch):
    control = agent.at_init()
    nets = {"policy": (agent, "policy"), "critic": (agent, "critic"), "value_head": (agent, "head"),
            "random_init": (control, "policy"), "random_init_critic": (control, "critic")}
    tokens = own_games.tokens[:, :100]
    expected = {name: m.run_with_cache(tokens, (VP.READS[which],))[VP.READS[which]]
                for name, (m, which) in nets.items()}
    calls = []
    run = LoadedModel.run_with_cache

    def counted(self, tokens, names, *args, **kwargs):
        calls.append((id(self), names))
        return run(self, tokens, names, *args, **kwargs)

    monkeypatch.setattr(LoadedModel, "run_with_cache", counted)
    acts = VP.activations(nets, tokens)
    assert sorted(i for i, _ in calls) == sorted([id(agent), id(control)])  # one pass per model
    assert calls[0][1] == calls[1][1] == ("critic_resid", "resid", "value")  # one names set: one compile
    for name in nets:
        np.testing.assert_allclose(acts[name], expected[name], rtol=1e-5, atol=1e-5)


def test_the_result_names_the_checkpoint_step_of_each_network():
    agent = SimpleNamespace(run_dir=Path("runs/rl"), step=400)
    simulator = SimpleNamespace(run_dir=Path("runs/next_token"), step=1000)
    assert checkpoints_read(agent, simulator) == {"simulator": "runs/next_token", "agent": "runs/rl",
                                                  "checkpoint_steps": {"simulator": 1000, "agent": 400}}
    assert checkpoints_read(None, simulator)["checkpoint_steps"] == {"simulator": 1000, "agent": None}


@pytest.mark.slow  # trains or analyses the shared tiny pretrain_rl run end to end
def test_measure_on_the_tiny_runs(tiny_next_token, tiny_pretrain_rl):
    agent, simulator = LoadedModel.from_run(tiny_pretrain_rl), LoadedModel.from_run(tiny_next_token)
    res = measure_value(agent, simulator, num_games=60)
    assert res["checkpoint_steps"] == {"agent": agent.step, "simulator": simulator.step} and agent.step > 0
    own, persona = res["datasets"]["own_games"], res["datasets"]["persona_games"]
    assert set(own["targets"]) == {"agent_value", "mixture_value", "minimax"}
    assert set(own["targets"]["agent_value"]["networks"]) == {"policy", "simulator", "random_init", "critic",
                                                              "random_init_critic", "value_head"}
    for net, per_seed in own["targets"]["agent_value"]["networks"].items():
        assert len(per_seed) == 2
        assert all(1 <= s["layer"] <= len(s["test_r2"]) - 1 for s in per_seed) or net == "value_head"
    ceilings = [c["test_r2"][0] for c in persona["targets"]["pair_value"]["ceiling"]]
    assert all(0.0 < c < 1.0 for c in ceilings)  # the hidden pair is not a function of the history
    assert all(c["test_r2"][0] == 1.0 for c in own["targets"]["agent_value"]["ceiling"])
