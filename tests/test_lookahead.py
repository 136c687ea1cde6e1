"""Look-ahead probes: labels on hand-worked tic-tac-toe games, the exact label distribution against
a brute-force sum, a planted feature read at its layer, the paired difference's sign both ways, the
ceilings' bounds, and (slow) the whole measure, figure, evidence and report on c4-tiny."""

from types import SimpleNamespace

import numpy as np
import pytest

from agentsim.envs import make_game
from agentsim.envs.solver import solved
from agentsim.envs.tokens import Layout
from agentsim.experiments.analysis import lookahead as LA
from agentsim.experiments.analysis.value_probes import Rows
from agentsim.experiments.report.claims import lookahead_paired

TTT = solved(make_game("tictactoe"))


def _rows_of(history: list[int]) -> int:
    return int(LA.state_rows(TTT, np.array([history + [-1]]))[0, len(history)])


def test_best_move_two_plies_on_is_the_block_the_solver_finds():
    """X0 O4, X to move (t = 2). If X plays 1 and O replies 2, O threatens 2-4-6 and X has no win:
    its one best move is 6. The empty board is a tie (every move draws): no unique best move."""
    st = np.array([_rows_of([0, 4])])
    s1, s2 = LA.two_plies(TTT, st)
    best = LA.unique_best(TTT, s2)
    assert best[0, 1, 2] == 6
    assert LA.unique_best(TTT, np.array([TTT.root]))[0] == -1
    assert s2[0, 0].max() == -1 and s1[0, 0] == -1  # 0 is taken: no continuation through it


def test_a_continuation_that_ends_the_game_is_not_a_row():
    """X0 O3 X1 O4, X to move: X2 wins at once, so nothing follows it; X8 lets O win with 5."""
    _, s2 = LA.two_plies(TTT, np.array([_rows_of([0, 3, 1, 4])]))
    assert (s2[0, 2] == -1).all()
    assert s2[0, 8, 5] == -1 and s2[0, 8, 6] >= 0


class _Stub:
    """A 'network' whose logits at sequence position p prefer move (3p + 1) mod 9, then the next
    ones in turn: the greedy move shows which position was read and whether illegal moves are masked."""

    def __init__(self):
        self.layout = Layout(9, 9, ("random",), False, False)

    def logits(self, tokens, batch=0):
        s, n, t = tokens.shape
        pos = np.arange(t)[:, None]
        z = -((np.arange(self.layout.vocab_size)[None] - (3 * pos + 1)) % 9).astype(np.float32)
        return np.broadcast_to(z, (s, n, t, self.layout.vocab_size)).copy()


def test_own_next_move_label_of_a_crafted_game():
    """Game X0 O4 X1 O2 …, the row at t = 2: after X1 O2 the output choosing move 4 sits at position
    4, which prefers 4 (taken by O), then 5: the label is 5 (position 3 would give 3, position 5
    gives 7, no legal mask gives 4)."""
    moves = np.array([[[0, 4, 1, 2, 6, 3, 5, -1, -1]]])
    st = np.array([_rows_of([0, 4])])
    _, s2 = LA.two_plies(TTT, st)
    greedy = LA.greedy_after(_Stub(), moves, np.array([[2]]), s2[None], TTT)
    assert greedy[0, 0, 1, 2] == 5
    assert greedy[0, 0, 0].max() == -1  # no decision through an illegal move


def test_label_distribution_sums_the_continuations_that_are_rows():
    w = np.zeros((1, 2, 2))
    w[0, 0, 0], w[0, 0, 1], w[0, 1, 0], w[0, 1, 1] = 0.25, 0.5, 0.25, 0.0
    label = np.array([[[3, 5], [-1, 3]]])
    p = LA.label_probs(w, label, 9)
    np.testing.assert_allclose(p[0, [3, 5]], [1 / 3, 2 / 3])
    assert p[0].sum() == pytest.approx(1.0)


class _Data(SimpleNamespace):
    """What ``persona_game_targets`` reads of a dataset, for hand-made games and posteriors."""

    def __getitem__(self, key):
        return self.arrays[key]


def _persona_data(moves, mixture, post_x, post_o) -> _Data:
    moves = np.asarray(moves)
    n, m = moves.shape
    arrays = {"moves": moves, "player": np.tile(np.arange(m) % 2, (n, 1)).astype(np.int8),
              "posterior_x": np.broadcast_to(np.asarray(post_x, np.float32), (n, m, len(post_x))),
              "posterior_o": np.broadcast_to(np.asarray(post_o, np.float32), (n, m, len(post_o)))}
    return _Data(config=SimpleNamespace(game="tictactoe"), layout=Layout(9, 9, tuple(mixture), False, False),
                 arrays=arrays)


def test_persona_next_move_distribution_by_hand_and_by_brute_force():
    """X4 O0 X2 O6 X3 O5 (empty 1, 7, 8), X to move at t = 6: whatever X plays and O replies, nobody
    wins and X's last move is forced, so under random personas each empty cell is X's move two plies
    on with probability 1/3. With a random/greedy mixture and lopsided posteriors the einsum must
    match a plain sum over (mover's persona, move, reply)."""
    game = [[4, 0, 2, 6, 3, 5, 1, 7, 8]]
    data = _persona_data(game, ("random",), [1.0], [1.0])
    tg = LA.persona_game_targets(data)["next_move"]
    row = int(np.flatnonzero(tg.index[1] == 6)[0])
    np.testing.assert_allclose(tg.prob_RxC[row, [1, 7, 8]], [1 / 3] * 3, atol=1e-6)
    assert tg.y[row] == 8

    names, px, po = ("random", "greedy"), np.array([0.3, 0.7]), np.array([0.6, 0.4])
    data = _persona_data([[4, 0, 2, 6, 1, 7, 3, 5, 8]], names, px, po)
    tg = LA.persona_game_targets(data)["next_move"]
    table = LA.persona_probs(TTT, names, np.arange(TTT.num_states)).astype(np.float64)  # [states, P, A]
    for row, t in enumerate(tg.index[1]):
        st = _rows_of(data["moves"][0, :t].tolist())
        mover, other = (px, po) if t % 2 == 0 else (po, px)
        expect = np.zeros(9)
        for p, w in enumerate(mover):
            now = table[st, p]
            for a in np.flatnonzero(now > 0):
                s1 = TTT.children[st, a]
                if TTT.terminal[s1]:
                    continue
                reply = other @ table[s1]
                for b in np.flatnonzero(reply > 0):
                    s2 = TTT.children[s1, b]
                    if not TTT.terminal[s2]:
                        expect += w * now[a] * reply[b] * table[s2, p]
        np.testing.assert_allclose(tg.prob_RxC[row], expect / expect.sum(), atol=1e-5)
        assert tg.prob_RxC[row, tg.y[row]] > 0  # what happened was possible


def _game_rows(n_games=300, moves=4, seed=0):
    game = np.repeat(np.arange(n_games), moves)
    move = np.tile(np.arange(moves), n_games)
    return Rows.make({}, move, game, move % 2, seed)


def test_a_planted_move_is_read_at_its_layer_and_that_layer_is_chosen():
    rows = _game_rows()
    rng = np.random.default_rng(0)
    y = rng.integers(0, 9, size=len(rows.move))
    resid = rng.normal(size=(3, len(y), 12)).astype(np.float32)
    resid[2, :, :9] += 5.0 * np.eye(9)[y]  # the label lives in layer 2 only
    scores = LA.score_networks({"net": resid}, y, rows, 9)["net"]
    assert scores.layer == 2
    assert scores.test_acc[2] > 0.95
    assert max(scores.test_acc[0], scores.test_acc[1]) < 0.2  # chance is 1/9
    assert abs(np.mean(np.asarray(scores.boot_acc)[:, 2]) - scores.test_acc[2]) < 0.02


def _scores(acc_by_seed, layer=1, n_boot=50, seed=0):
    rng = np.random.default_rng(seed)
    return [{"test_acc": [0.1, a, 0.1], "layer": layer,
             "boot_acc": (np.array([0.1, a, 0.1]) + rng.normal(0, 0.01, (n_boot, 3))).tolist()} for a in acc_by_seed]


def test_the_paired_difference_takes_its_sign_from_the_data_both_ways():
    high, low = _scores([0.60, 0.62, 0.61, 0.63, 0.60]), _scores([0.40, 0.41, 0.43, 0.42, 0.40], seed=1)
    up, down = lookahead_paired(high, low), lookahead_paired(low, high)
    assert up.low > 0.1 and down.high < -0.1
    assert up.mean == pytest.approx(-down.mean)
    # each network is read at its own chosen layer: a high score at an unchosen layer does not count
    elsewhere = [dict(s, layer=0) for s in high]
    assert lookahead_paired(elsewhere, low).high < 0


def test_ceilings_lie_between_the_majority_rate_and_one():
    """Labels drawn from their own distributions given the history: the Bayes predictor's expected
    accuracy is at least the majority's and at most 1, and the majority is the train majority's
    accuracy on test rows."""
    rows = _game_rows(600)
    rng = np.random.default_rng(0)
    prob = rng.dirichlet(np.full(9, 0.3), size=len(rows.move))
    prob[:, 4] += 0.5  # one move more common overall
    prob /= prob.sum(1, keepdims=True)
    y = np.array([rng.choice(9, p=p) for p in prob])
    c = LA.ceiling(LA.Target(y, prob, rows, (rows.game, rows.move)))
    assert c.majority == pytest.approx(np.mean(y[rows.splits[2]] == 4))
    assert c.majority < c.bayes <= 1.0
    assert np.all(np.asarray(c.boot_bayes) <= 1.0)


# ---------------------------------------------------------------------------------- end to end


def _random_init(preset: str, regime: str):
    from agentsim.experiments.analysis.model import LoadedModel
    from agentsim.experiments.config import load_config, seed_keys
    from agentsim.models.transformer import init_params

    cfg = load_config(preset, overrides=[f"train.regime='{regime}'"])
    layout = Layout.for_config(cfg.data)
    graphdef, params = init_params(cfg.model, layout.vocab_size, layout.seq_len, seed_keys(cfg))
    return LoadedModel(cfg, layout, graphdef, params)


@pytest.mark.slow  # plays, labels and probes connect-four 4x4 games end to end
def test_lookahead_end_to_end_on_c4_tiny(tmp_path):
    from agentsim.experiments.analysis.agent_value import agent_games
    from agentsim.experiments.report.claims import lookahead_evidence
    from agentsim.experiments.report.figures import lookahead
    from agentsim.experiments.report.report import lookahead_lines

    agent, simulator = _random_init("c4-tiny", "rl"), _random_init("c4-tiny", "next_token")
    res = LA.measure_lookahead({"rl": agent}, simulator, num_games=60, persona_games=60)
    sg = solved(make_game(agent.cfg.data.game))
    num_l = agent.cfg.model.num_layers + 1
    for entry in [*res["agents"]["rl"]["targets"].values(), *res["persona_games"]["targets"].values()]:
        for per_seed in entry["networks"].values():
            assert len(per_seed) == 2 and all(1 <= s["layer"] < num_l and len(s["test_acc"]) == num_l for s in per_seed)
        for c in entry["ceiling"]:
            assert 0.0 <= c["majority"] <= 1.0 and c["bayes"] <= 1.0 + 1e-9
        assert np.mean([c["bayes"] for c in entry["ceiling"]]) > np.mean([c["majority"] for c in entry["ceiling"]])

    # The agent's label is its greedy move read from its own game at move t + 2 (the same games: same seed).
    games = agent_games(agent, 60, 0)
    targets = LA.own_game_targets(agent, games.moves, games.side, 0)
    logits = agent.logits(games.tokens)[..., :sg.game.num_actions]
    states = LA.state_rows(sg, games.moves[0])
    for s, tg in enumerate(targets):
        g, t = tg["next_move"].index
        legal = sg.children[LA.state_rows(sg, games.moves[s])[g, t + 2]] >= 0
        z = np.where(legal, logits[s][g, agent.layout.prefix_len + 1 + t], -np.inf)
        assert (z.argmax(-1) == tg["next_move"].y).mean() > 0.99  # float ties aside
        assert np.all(tg["next_move"].prob_RxC[np.arange(len(g)), tg["next_move"].y] > 0)
        b, bt = tg["best_move"], tg["best_move"].index[1]
        assert len(b.y) <= len(g)
        if s == 0:
            best = LA.unique_best(sg, states[b.index[0], bt + 2])
            assert np.array_equal(best, b.y)

    evidence = lookahead_evidence(res)
    assert "rl, own games / next_move: agent minus simulator" in evidence
    assert {"rl, own games / best_move: agent minus random init",
            "rl, own games / best_move: simulator minus random init"} <= set(evidence)
    lines = lookahead_lines(evidence)
    assert any(line.startswith("- rl, own games / best_move: agent minus simulator") for line in lines)
    paths = lookahead(res, tmp_path)
    assert all(p.exists() for p in paths)
