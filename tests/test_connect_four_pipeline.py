"""Connect-four through the pipeline, piece by piece: pair outcomes at the visited states equal
the solver's, a replay labels given games as generation does, boards too big to solve give an
unlabelled dataset and one-line refusals, positions are marked seen or never seen in training,
Monte Carlo V^π agrees with the exact tree value, the ceiling of a noisy label, the presets and
the report's game line. Tests that compile a data pipeline or play games are marked slow; the
whole tiny pipeline on 4×4 is in test_connect_four_reproduce.py."""

import json

import numpy as np
import pytest

from agentsim.envs import make_game
from agentsim.envs.dataset import DataConfig, Dataset, generate, pair_outcomes_at, position_keys, replay
from agentsim.envs.personas import make_persona, probs_table
from agentsim.envs.solver import solved
from agentsim.envs.tokens import Layout
from agentsim.experiments import cli
from agentsim.experiments.analysis import agent_value as AV
from agentsim.experiments.analysis.heldout import HeldOut, seen_in, training_positions
from agentsim.experiments.analysis.model import LoadedModel
from agentsim.experiments.config import load_config, seed_keys
from agentsim.experiments.train.regimes import datasets
from agentsim.models.transformer import init_params

BIG = "connect_four"  # 7×6: too many positions to enumerate here
NO_TABLE_MIX = {"random": 1.0, "greedy": 1.0}


@pytest.fixture(autouse=True)
def no_persistent_cache(monkeypatch):
    monkeypatch.setattr(cli, "_enable_compile_cache", lambda: None)


@pytest.mark.slow  # compiles a game's data pipeline (seconds)
def test_pair_outcomes_at_visited_states_are_the_solvers():
    game = make_game("connect_four:4x4")
    sg = solved(game)
    names = ("random", "greedy", "perfect")
    rows = np.random.default_rng(0).choice(sg.num_states, 500, replace=False)
    tables = [probs_table(make_persona(n, game), game) for n in names]
    got = pair_outcomes_at(game.name, names, rows)
    for i, tx in enumerate(tables):
        for j, to in enumerate(tables):
            np.testing.assert_array_equal(got[i, j], sg.expected_outcome(tx, to)[rows])


@pytest.mark.slow  # compiles a game's data pipeline (seconds)
def test_a_replay_labels_given_games_as_generation_does():
    cfg = DataConfig(num_games=200, seed=4, mixture={"random": 1.0, "perfect": 1.0, "center": 2.0})
    data = generate(cfg)
    again = replay(cfg, data["moves"])
    mask = data["move_mask"]
    for key in ("bayes_x", "minimax_x", "posterior_x", "posterior_o", "boards", "position", "bayes_logp"):
        np.testing.assert_allclose(again[key][mask], data[key][mask], atol=1e-6, err_msg=key)
    np.testing.assert_array_equal(again["tokens"], data["tokens"])
    assert "expected_x" not in again.arrays  # who played is not known from the moves


@pytest.mark.slow  # compiles a game's data pipeline (seconds)
def test_a_board_too_big_to_solve_gives_an_unlabelled_dataset():
    data = generate(DataConfig(BIG, num_games=24, mixture=NO_TABLE_MIX, seed=1))
    assert not data.labelled
    assert {"minimax_x", "bayes_x", "expected_x"}.isdisjoint(data.arrays)
    for key in ("tokens", "persona_x", "persona_o", "outcome_x", "boards", "position", "posterior_x", "bayes_logp"):
        assert key in data.arrays, key
    mask = data["move_mask"]
    np.testing.assert_allclose(data["posterior_x"][mask].sum(-1), 1.0, atol=1e-5)
    assert 0 < data.bayes_optimal_loss() < np.log(7)
    assert not HeldOut.from_data(data).value_targets()
    assert "value_mover" not in HeldOut.from_data(data).labels() and "board_mover" in HeldOut.from_data(data).labels()
    with pytest.raises(ValueError, match="too many positions"):
        generate(DataConfig(BIG, num_games=4, mixture=NO_TABLE_MIX), labels=True)


@pytest.mark.slow  # compiles a game's data pipeline (seconds)
def test_position_keys_are_equal_exactly_for_equal_boards():
    data = generate(DataConfig(num_games=300, seed=2, mixture={"random": 1.0}))
    mask = data["move_mask"]
    boards, keys = data["boards"][mask], data["position"][mask]
    by_board = {}
    for b, k in zip(boards, keys):
        by_board.setdefault(b.tobytes(), set()).add(int(k))
    assert all(len(v) == 1 for v in by_board.values())
    assert len({next(iter(v)) for v in by_board.values()}) == len(by_board)
    np.testing.assert_array_equal(keys, position_keys(make_game("tictactoe"), boards))


@pytest.mark.slow  # compiles a game's data pipeline (seconds)
def test_seen_flags_mark_exactly_the_positions_of_the_training_games():
    """A toy split: positions of 3 training games; a held-out position is seen iff its board
    occurs before some move of those games."""
    data = generate(DataConfig("connect_four:4x4", num_games=60, seed=3, mixture={"random": 1.0}))
    mask = data["move_mask"]
    train = np.arange(3)
    seen_boards = {b.tobytes() for g in train for b in data["boards"][g][mask[g]]}
    keys = np.unique(data["position"][train][mask[train]])
    flags = seen_in(data["position"], keys)
    brute = np.array([[b.tobytes() in seen_boards for b in game] for game in data["boards"]])
    np.testing.assert_array_equal(flags[mask], brute[mask])
    assert flags[mask].any() and not flags[mask].all()
    held = HeldOut.from_data(data, train_positions=keys)
    np.testing.assert_array_equal(held.seen, brute[mask])
    assert not seen_in(data["position"], keys[:0]).any()


@pytest.mark.slow  # compiles a game's data pipeline (seconds)
def test_training_positions_are_the_train_split_of_the_runs_dataset():
    cfg = load_config("tiny", overrides=["data.num_games=200", "train.eval_games=40"])
    train, val, _ = datasets(cfg)
    keys = training_positions(cfg)
    assert set(keys) == set(train["position"][train["move_mask"]])
    val_only = set(val["position"][val["move_mask"]]) - set(keys)
    assert not seen_in(np.array(sorted(val_only), np.int64), keys).any()


@pytest.mark.slow
def test_monte_carlo_value_agrees_with_the_exact_tree_value():
    """A random-init agent (its policy depends on the whole history) at sampled decisions of its
    own tic-tac-toe games: V^π by Monte Carlo play from the history against an opponent drawn
    from the posterior, against V^π on the game tree, within 4 standard errors everywhere."""
    cfg = load_config("tiny", overrides=["train.regime='rl'", "ppo.opponents={random=1.0, greedy=2.0, perfect=1.0}"])
    layout = Layout.for_config(cfg.data)
    graphdef, params = init_params(cfg.model, layout.vocab_size, layout.seq_len, seed_keys(cfg))
    agent = LoadedModel(cfg, layout, graphdef, params)
    tree = AV.exact_tree("tictactoe")
    assert tree is not None and AV.exact_tree("connect_four:4x4") is None  # 131,060,741 histories
    values = AV.agent_values(agent, tree)
    games = AV.agent_games(agent, 100, seed=3)
    rng = np.random.default_rng(0)
    num_r = 24
    hist = np.full((agent.num_seeds, num_r, 9), -1, np.int32)
    side = np.zeros((agent.num_seeds, num_r), np.int32)
    post = np.zeros((agent.num_seeds, num_r, 3))
    exact = np.zeros((agent.num_seeds, num_r))
    for s in range(agent.num_seeds):
        found = tree.find(games.moves[s])[:, :-1]
        node = np.maximum(found, 0)
        mine = (found >= 0) & ~tree.terminal[node] & (tree.player[node] == games.side[s][:, None])
        pick = rng.choice(mine.sum(), num_r, replace=False)
        g, t = (a[pick] for a in np.nonzero(mine))
        post_x, post_o = AV.pool_posteriors(cfg, games.moves[s])
        for r in range(num_r):
            hist[s, r, :t[r]] = games.moves[s][g[r], :t[r]]
        side[s] = games.side[s][g]
        post[s] = np.where((side[s] == 0)[:, None], post_o[g, t], post_x[g, t])
        exact[s] = values[s, found[g, t], side[s]]
    mean, se = AV.rollout_values(agent, hist, side, post, num_rollouts=128, seed=1)
    # Where all 128 rollouts give one result their SD is 0, yet a value of, say, -0.99 often gives
    # 128 losses: the rule of three bounds the chance of the other results at 3/128, so the error of
    # such a mean is at most about 2·3/128 (results span 2); floor the SE at a third of that.
    se_floor = np.maximum(se, 2.0 / 128)
    assert np.all(np.abs(mean - exact) <= 4 * se_floor + 1e-5), (mean, exact, se)
    z = (mean - exact)[se > 0] / se[se > 0]
    assert len(z) > 20 and np.mean(z**2) < 2.0  # errors of the size the standard errors claim
    # A wrong opponent (always the first of the pool, whatever the history says) is caught.
    wrong, wrong_se = AV.rollout_values(agent, hist, side, np.eye(3)[np.zeros_like(side)], num_rollouts=128, seed=1)
    assert np.any(np.abs(wrong - exact) > 4 * wrong_se + 1e-5)


# ---------------------------------------------------------------------------------- 7×6 on the command line


def run_bad(capsys, argv, match):
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("agentsim: error:"), captured
    assert match in lines[0], lines[0]


@pytest.fixture
def big_run(tmp_path):
    """A run directory on 7×6 (its config and status; commands that need the table refuse it
    before opening anything else)."""
    cfg = load_config("tiny", overrides=[f"data.game='{BIG}'", "data.mixture={random=1.0, greedy=1.0}",
                                         "ppo.opponents={random=1.0, greedy=1.0}", "train.regime='rl'"])
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(cfg.to_dict()))
    (run / "status.json").write_text(json.dumps({"status": "finished"}))
    return run


@pytest.mark.parametrize("argv", [
    ["probe", "{run}"], ["change", "{run}", "{run}"], ["layer-reset", "{run}", "{run}"], ["steer", "{run}"],
    ["behaviour", "{run}"],
])
def test_commands_that_need_the_table_refuse_a_big_board_in_one_line(capsys, big_run, argv):
    run_bad(capsys, [a.format(run=big_run) for a in argv], "too many positions to solve")


def test_reproduce_on_a_big_board_refuses_before_training(capsys, tmp_path):
    run_bad(capsys, ["reproduce", "--preset", "c4-tiny", "--out", tmp_path / "out", "--quiet",
                     "--set", f"data.game='{BIG}'", "--set", "data.mixture={random=1.0, greedy=1.0}",
                     "--set", "ppo.opponents={random=1.0}"], "too many positions to solve")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # compiles a game's data pipeline (seconds)
def test_data_on_a_big_board_is_unlabelled_and_a_table_persona_is_refused(capsys, tmp_path):
    out = tmp_path / "big.npz"
    code = cli.main(["data", "--out", str(out), "--games", "8", "--mix", "random=1,greedy=1",
                     "--set", f"data.game='{BIG}'"])
    assert code == 0 and json.loads(capsys.readouterr().out)["games"] == 8
    assert not Dataset.load(out).labelled
    run_bad(capsys, ["data", "--out", tmp_path / "p.npz", "--games", "8", "--mix", "random=1,perfect=1",
                     "--set", f"data.game='{BIG}'"], "too many positions")


# ---------------------------------------------------------------------------------- cheap pieces


def test_seen_in_is_membership_in_the_sorted_training_keys():
    keys = np.array([3, 8, 2**40 + 5, 2**62], np.int64)
    positions = np.array([[3, 4, 2**62], [0, 2**40 + 5, 2**63 - 1]], np.int64)
    np.testing.assert_array_equal(seen_in(positions, keys), [[True, False, True], [False, True, False]])
    assert seen_in(positions, keys[:0]).shape == positions.shape and not seen_in(positions, keys[:0]).any()


def test_the_ceiling_of_a_noisy_label_is_one_minus_its_noise_share():
    """A Monte Carlo label y with standard error se per row: the noise-free value, scored against
    y, reaches R² = 1 − Σ se² / Σ (y − ȳ)² on the test rows, overall and on never-seen rows."""
    from agentsim.experiments.analysis.value_probes import Rows, ceiling

    rng = np.random.default_rng(0)
    n = 400
    game = np.repeat(np.arange(100), 4)
    y = rng.uniform(-1, 1, n)
    se = np.full(n, 0.2)
    rows = Rows.make({"v": y}, np.tile(np.arange(4), 100), game, np.zeros(n, int), seed=0)
    rows.seen = rng.random(n) < 0.5
    top = ceiling(y, y, rows, se)
    te = rows.splits[2]
    want = 1 - np.sum(se[te] ** 2) / np.sum((y[te] - y[te].mean()) ** 2)
    assert top.test_r2[0] == pytest.approx(want)
    new = te[~rows.seen[te]]
    assert top.unseen_r2[0] == pytest.approx(1 - np.sum(se[new] ** 2) / np.sum((y[new] - y[new].mean()) ** 2))
    assert ceiling(y, y, rows).test_r2[0] == pytest.approx(1.0)


def test_histories_are_counted_without_building_the_tree():
    from agentsim.envs.game_tree import count_histories

    assert count_histories(solved(make_game("tictactoe"))) == 549_946


def test_connect_four_presets():
    """c4-quick: 3 seeds on 5×4, every regime; c4: 5 seeds, 4 layers and every stage of the paper preset;
    the networks are far smaller than the board's 3,945,711 positions; every run of a preset
    reads the same persona games (so "seen in training" is one set)."""
    from agentsim.experiments.presets import PRESET_SEEDS, PRESETS, SIZES, STAGES

    for name, seeds in (("c4-quick", 3), ("c4", 5)):  # the dicts: validating would load the 5×4 table
        preset = PRESETS[name]
        assert preset["data"]["game"] == "connect_four:5x4"
        assert len(PRESET_SEEDS[name] or preset["train"]["seeds"]) == seeds
        assert not any("data.num_games" in o for _, stage in STAGES[name] for o in stage)
        assert SIZES[name].value_rollouts >= 16
        d, layers = preset["model"]["d_model"], preset["model"]["num_layers"]
        assert 2 * layers * 12 * d * d < 3_945_711 / 10  # both trunks' blocks, well under a tenth
    assert {n for n, _ in STAGES["c4"]} == {n for n, _ in STAGES["paper"]}
    assert PRESETS["c4"]["model"]["num_layers"] == PRESETS["paper"]["model"]["num_layers"] == 4  # claim 4 has 4 blocks
    assert {"next_token", "random_init", "rl", "pretrain_rl"} <= {n for n, _ in STAGES["c4-quick"]}


def test_the_report_states_the_game_and_the_networks_size():
    from agentsim.experiments.report.report import game_line
    from agentsim.experiments.report.reproduce import describe, game_facts

    assert describe(make_game("connect_four:5x4")) == "connect-four 5×4 (4 in a row)"
    facts = game_facts("tictactoe", {})
    assert facts["positions"] == 5478 and facts["perfect_play"] == "a draw"
    line = game_line({**facts, "parameters": 1234})
    assert line.startswith("**Game: tic-tac-toe (3×3)**") and "5,478 positions" in line and "1,234 parameters" in line
    big = game_facts(BIG, {})
    assert big["positions"] is None and game_line(big) == "**Game: connect-four 7×6 (4 in a row)**."
