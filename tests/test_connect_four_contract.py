"""The game contract (envs/game.py), checked the same way for every game: tic-tac-toe and
connect-four boards from the smallest to 7×6. Random legal and illegal play, batched and
jitted, with every invariant checked after every move."""

import itertools

import jax
import numpy as np
import pytest

from agentsim.envs import make_game

GAMES = ["tictactoe", "connect_four:4x4x3", "connect_four:5x4", "connect_four:4x6x4",
         "connect_four:6x5x5", "connect_four"]
DTYPES = {"board": np.int8, "player": np.int32, "winner": np.int32, "done": np.bool_, "num_moves": np.int32,
          "illegal": np.bool_}
BATCH = 48


@pytest.fixture(scope="module", params=GAMES)
def game(request):
    return make_game(request.param)


@pytest.fixture(scope="module")
def fns(game):
    return {
        "step": jax.jit(jax.vmap(game.step)),
        "mask": jax.jit(jax.vmap(game.legal_mask)),
        "returns": jax.jit(jax.vmap(game.returns)),
        "encode": jax.jit(jax.vmap(game.encode)),
    }


def check_dtypes(game, state, batch=()):
    for field, dtype in DTYPES.items():
        leaf = np.asarray(getattr(state, field))
        assert leaf.dtype == dtype, field
        assert leaf.shape == batch + ((game.num_cells,) if field == "board" else ()), field


def random_games(game, fns, seed, legal_only=True):
    """States of BATCH games after every move (legal moves, or now and then any action)."""
    rng = np.random.default_rng(seed)
    state = jax.vmap(lambda _: game.init())(np.arange(BATCH))
    history = [jax.device_get(state)]
    for _ in range(game.max_moves):
        mask = np.asarray(fns["mask"](state))
        action = np.array([rng.choice(np.flatnonzero(m)) if m.any() else 0 for m in mask])
        if not legal_only:
            wild = rng.random(BATCH) < 0.05
            action[wild] = rng.integers(-2, game.num_actions + 2, wild.sum())
        state = fns["step"](state, action)
        history.append(jax.device_get(state))
    return history


def test_sizes_name_and_equality(game):
    assert game.num_cells == int(np.prod(game.board_shape)) == game.max_moves
    assert game.num_actions in (game.num_cells, game.board_shape[1])  # cells or columns
    assert make_game(game.name) == game and hash(make_game(game.name)) == hash(game)
    check_dtypes(game, game.init())
    s = game.init()
    assert not bool(s.done) and int(s.winner) == -1 and int(s.num_moves) == 0 and int(s.player) == 0
    assert np.asarray(game.legal_mask(s)).all()


def test_legal_play_keeps_every_invariant(game, fns):
    history = random_games(game, fns, seed=0)
    for before, after in itertools.pairwise(history):
        check_dtypes(game, after, (BATCH,))
        live = ~before.done
        changed = (before.board != after.board).sum(1)
        np.testing.assert_array_equal(changed, live.astype(int))  # one new stone per legal move
        cell = np.argmax(before.board != after.board, axis=1)[live]
        np.testing.assert_array_equal(after.board[live, cell], before.player[live] + 1)
        np.testing.assert_array_equal(after.num_moves, before.num_moves + live)
        np.testing.assert_array_equal(after.player[live], 1 - before.player[live])
        assert not after.illegal.any()
        mask = np.asarray(fns["mask"](after))
        assert mask.dtype == bool and mask.shape == (BATCH, game.num_actions)
        np.testing.assert_array_equal(mask.any(1), ~after.done)  # a live game always has a move
        returns = np.asarray(fns["returns"](after))
        assert returns.dtype == np.float32
        np.testing.assert_array_equal(returns[~after.done], 0.0)
        expected = np.where(after.winner == 0, 1.0, np.where(after.winner == 1, -1.0, 0.0))
        np.testing.assert_array_equal(returns[after.done, 0], expected[after.done])
        np.testing.assert_array_equal(returns.sum(1), 0.0)
        full = (after.board != 0).all(1)
        assert (after.done == (full | (after.winner >= 0))).all()
    assert history[-1].done.all(), "a game outlasted max_moves"


def test_finished_games_absorb_every_action(game, fns):
    final = jax.device_get(random_games(game, fns, seed=1, legal_only=False)[-1])
    assert final.done.all()
    for a in range(-1, game.num_actions + 1):
        again = jax.device_get(fns["step"](final, np.full(BATCH, a)))
        for field in DTYPES:
            np.testing.assert_array_equal(getattr(again, field), getattr(final, field), err_msg=f"{field} {a}")


def test_illegal_moves_end_the_game_and_the_mover_loses(game, fns):
    history = random_games(game, fns, seed=2)
    seen = 0
    for state in history[: game.max_moves // 2]:
        mask = np.asarray(fns["mask"](state))
        live = ~state.done
        for bad in [-1, game.num_actions] + list(range(game.num_actions)):
            illegal = live & ((bad < 0) | (bad >= game.num_actions) | ~mask[:, bad % game.num_actions])
            if not illegal.any():
                continue
            seen += illegal.sum()
            after = jax.device_get(fns["step"](state, np.full(BATCH, bad)))
            assert after.done[illegal].all() and after.illegal[illegal].all()
            np.testing.assert_array_equal(after.winner[illegal], 1 - state.player[illegal])
            np.testing.assert_array_equal(after.board[illegal], state.board[illegal])
            np.testing.assert_array_equal(after.num_moves[illegal], state.num_moves[illegal])
            returns = np.asarray(fns["returns"](after))[illegal]
            np.testing.assert_array_equal(returns[np.arange(illegal.sum()), state.player[illegal]], -1.0)
    assert seen > BATCH


def test_encode_is_a_function_of_the_board(game, fns):
    """Equal boards, equal codes; different boards, different codes."""
    boards, codes = [], []
    for state in random_games(game, fns, seed=3):
        boards.append(state.board)
        codes.append(np.asarray(fns["encode"](state)).reshape(BATCH, -1))
    boards = np.concatenate(boards)
    codes = np.concatenate(codes)
    _, board_ids = np.unique(boards, axis=0, return_inverse=True)
    _, code_ids = np.unique(codes, axis=0, return_inverse=True)
    assert len(set(zip(board_ids.ravel(), code_ids.ravel()))) == board_ids.max() + 1 == code_ids.max() + 1


def test_jit_and_vmap_match_eager(game, fns):
    rng = np.random.default_rng(4)
    batch = jax.vmap(lambda _: game.init())(np.arange(4))
    eager = [game.init() for _ in range(4)]
    for _ in range(6):
        actions = rng.integers(-1, game.num_actions + 1, 4)
        batch = fns["step"](batch, actions)
        eager = [game.step(s, int(a)) for s, a in zip(eager, actions)]
        for g, s in enumerate(eager):
            for field in DTYPES:
                np.testing.assert_array_equal(getattr(batch, field)[g], getattr(s, field))
