"""The exact solver on connect-four: against an independent plain-Python brute force (a board is
a tuple of columns; it shares no code with the package), against the game's own JAX rules,
against published counts and values, and the disk cache's corruption handling."""

import time
import warnings
from functools import cache

import jax
import numpy as np
import pytest

from agentsim.envs import make_game, table_cache
from agentsim.envs import solver as solver_module
from agentsim.envs.personas import make_persona, probs_table
from agentsim.envs.solver import search_words, solved


class Brute:
    """Connect-four W×H, K in a row: columns are tuples of stones (1 X, 2 O) from the bottom."""

    def __init__(self, width, height, k):
        self.width, self.height = width, height
        self.lines = [
            [(c + dc * i, r + dr * i) for i in range(k)]
            for c in range(width) for r in range(height) for dc, dr in ((1, 0), (0, 1), (1, 1), (1, -1))
            if 0 <= c + dc * (k - 1) < width and 0 <= r + dr * (k - 1) < height
        ]
        self.empty = ((),) * width
        self.winner, self.minimax, self.random_play = cache(self.winner), cache(self.minimax), cache(self.random_play)

    def winner(self, cols):
        for line in self.lines:
            stones = {cols[c][r] if r < len(cols[c]) else 0 for c, r in line}
            if len(stones) == 1 and 0 not in stones:
                return stones.pop()
        return 0

    def over(self, cols):
        return self.winner(cols) != 0 or all(len(col) == self.height for col in cols)

    def value(self, cols):
        """X's return at a finished board."""
        return {0: 0, 1: 1, 2: -1}[self.winner(cols)]

    def moves(self, cols):
        stone = 1 if sum(map(len, cols)) % 2 == 0 else 2
        return [cols[:c] + (cols[c] + (stone,),) + cols[c + 1 :] for c in range(self.width) if len(cols[c]) < self.height]

    def minimax(self, cols):
        if self.over(cols):
            return self.value(cols)
        vals = [self.minimax(k) for k in self.moves(cols)]
        return max(vals) if sum(map(len, cols)) % 2 == 0 else min(vals)

    def random_play(self, cols):
        """Expected X return when both sides play uniformly at random."""
        if self.over(cols):
            return self.value(cols)
        kids = self.moves(cols)
        return sum(self.random_play(k) for k in kids) / len(kids)

    def reachable(self):
        seen, stack = {self.empty}, [self.empty]
        while stack:
            cols = stack.pop()
            if not self.over(cols):
                for k in self.moves(cols):
                    if k not in seen:
                        seen.add(k)
                        stack.append(k)
        return seen


def columns(board, width, height):
    """A flat board (row 0 at the bottom, as the game documents) as a tuple of columns."""
    return tuple(tuple(int(board[r * width + c]) for r in range(height) if board[r * width + c]) for c in range(width))


def root(sg):
    return int(np.flatnonzero(sg.depth == 0)[0])


@pytest.mark.parametrize("size", [(4, 4, 3), pytest.param((4, 4, 4), marks=pytest.mark.slow)])
def test_matches_brute_force(size):
    w, h, k = size
    sg, brute = solved(make_game(f"connect_four:{w}x{h}x{k}")), Brute(w, h, k)
    boards = [columns(b, w, h) for b in np.asarray(sg.states.board)]
    assert set(boards) == brute.reachable() and len(boards) == sg.num_states
    np.testing.assert_array_equal(sg.minimax_x, [brute.minimax(b) for b in boards])
    np.testing.assert_array_equal(sg.terminal, [brute.over(b) for b in boards])
    np.testing.assert_array_equal(sg.returns_x, [brute.value(b) if brute.over(b) else 0 for b in boards])
    np.testing.assert_array_equal(sg.depth, [sum(map(len, b)) for b in boards])
    table = probs_table(make_persona("random", sg.game), sg.game)
    np.testing.assert_allclose(sg.expected_outcome(table, table), [brute.random_play(b) for b in boards], atol=1e-5)


@pytest.mark.parametrize("name", ["connect_four:4x4x3", "connect_four:5x4x3"])
def test_children_and_states_agree_with_the_jax_rules(name):
    """Every (position, move) of the table: the game's own step gives the child the table
    names, field by field, and nothing where the table has none."""
    sg = solved(make_game(name))
    game, rows = sg.game, np.arange(sg.num_states)
    if sg.num_states > 100_000:
        rows = np.random.default_rng(0).choice(sg.num_states, 100_000, replace=False)

    @jax.jit
    def expand(states):
        kids = jax.vmap(lambda s: jax.vmap(lambda a: game.step(s, a))(np.arange(game.num_actions)))(states)
        return kids, jax.vmap(game.legal_mask)(states), jax.vmap(jax.vmap(sg.index_of))(kids)

    kids, legal, idx = jax.device_get(expand(sg.states_at(rows)))
    expected = np.where(legal, idx, -1)
    np.testing.assert_array_equal(sg.children[rows], expected)
    assert (legal.any(1) == ~sg.terminal[rows]).all()
    table_kids = sg.states_at(sg.children[rows][legal])
    for field in kids._fields:
        np.testing.assert_array_equal(getattr(kids, field)[legal], getattr(table_kids, field), err_msg=field)


class Disguised:
    """The same game under another name and type: the solver knows no bitboards for it, so it
    expands it through the game's own jitted step (bitboards.StepKeys)."""

    def __init__(self, game):
        self.game, self.name = game, "disguised:" + game.name

    def __getattr__(self, attr):
        return getattr(self.game, attr)

    def __hash__(self):
        return hash(self.name)

    def __eq__(self, other):
        return isinstance(other, Disguised) and other.name == self.name


@pytest.mark.parametrize("name", ["tictactoe", pytest.param("connect_four:4x4x3", marks=pytest.mark.slow)])
def test_bitboard_kernels_agree_with_the_jax_rules_on_every_position(name):
    game = make_game(name)
    fast, generic = solver_module.solve(game), solver_module.solve(Disguised(game))
    for field in ("keys", "depth", "children", "terminal", "returns_x", "minimax_x"):
        a, b = getattr(fast, field), getattr(generic, field)
        assert a.dtype == b.dtype and np.array_equal(a, b), field
    for field in fast.states._fields:
        np.testing.assert_array_equal(getattr(fast.states, field), getattr(generic.states, field), err_msg=field)
    rows = np.arange(0, generic.num_states, 7)
    np.testing.assert_array_equal(jax.jit(jax.vmap(generic.index_of))(generic.states_at(rows)), rows)


def test_index_of_finds_every_state_and_keys_are_the_encoding():
    sg = solved(make_game("connect_four:5x4"))
    rows = np.random.default_rng(1).choice(sg.num_states, 50_000, replace=False)
    states = sg.states_at(rows)
    np.testing.assert_array_equal(jax.jit(jax.vmap(sg.index_of))(states), rows)
    words = np.asarray(jax.jit(jax.vmap(sg.game.encode))(states)).astype(np.int64)
    np.testing.assert_array_equal((words[:, 0] << 32) + words[:, 1], sg.keys[rows])
    assert (np.diff(sg.keys) > 0).all()


def test_big_tables_are_looked_up_on_the_host(monkeypatch):
    """Above IN_PROGRAM_MAX_STATES, index_of and minimax_of call back into numpy: same answers
    under jit and vmap, and the perfect persona is unchanged."""
    game = make_game("connect_four:4x4")
    sg = solved(game)
    rows = np.random.default_rng(4).choice(sg.num_states, 3000, replace=False)
    states = sg.states_at(rows)
    perfect = probs_table(make_persona("perfect", game), game)
    monkeypatch.setattr(solver_module, "IN_PROGRAM_MAX_STATES", 0)
    assert "pure_callback" in str(jax.make_jaxpr(sg.index_of)(game.init()))
    np.testing.assert_array_equal(jax.jit(jax.vmap(sg.index_of))(states), rows)
    np.testing.assert_array_equal(jax.jit(jax.vmap(sg.minimax_of))(states), sg.minimax_x[rows])
    np.testing.assert_array_equal(probs_table(make_persona("perfect", game), game), perfect)


@pytest.mark.parametrize("top", [1 << 3, 1 << 23])
def test_two_word_search_is_searchsorted_on_64_bit_keys(top):
    """Keys wider than 32 bits (6×4 and 5×5 codes are 35 bits, 7×6 codes 55): the
    lexicographic search over uint32 words equals numpy's search on the int64 keys."""
    rng = np.random.default_rng(2)
    keys = np.unique(rng.integers(0, top << 32, 5000, dtype=np.int64))
    hi_keys, lo_keys = (keys >> 32).astype(np.uint32), keys.astype(np.uint32)
    queries = np.concatenate([keys[::7], rng.integers(0, top << 32, 500, dtype=np.int64), keys[:1], keys[-1:]])
    search = jax.jit(jax.vmap(lambda hi, lo: search_words(hi_keys, lo_keys, hi, lo)))
    got = search((queries >> 32).astype(np.uint32), queries.astype(np.uint32))
    np.testing.assert_array_equal(got, np.clip(np.searchsorted(keys, queries), 0, len(keys) - 1))


# Published facts. Positions reachable by legal play per board: John Tromp's table in "John's
# Connect Four Playground" (tromp.github.io/c4/c4.html), quoted from memory (the page could not
# be fetched here) and reproduced to the last digit; for 7×6 the counts after 0..8 plies are
# OEIS A212693 (1, 7, 49, 238, 1120, 4263, 16422, 54859, 184275). Values with perfect play:
# 4×4, 5×4, 5×5 and 6×5 are draws, 6×4 is a second-player win (../shared/FINDINGS.md; Tromp's
# table), 7×6 a first-player win (Allis 1988, "A knowledge-based approach of connect-four").
# 6×5 and 7×6 are beyond this solver.
@pytest.mark.parametrize(
    "name, positions, value",
    [("connect_four:4x4", 161_029, 0), ("connect_four:5x4", 3_945_711, 0), ("connect_four:4x5", 1_706_255, 0),
     pytest.param("connect_four:6x4", 94_910_577, -1, marks=pytest.mark.slow),
     pytest.param("connect_four:5x5", 69_763_700, 0, marks=pytest.mark.slow)],
)
def test_published_counts_and_values(name, positions, value):
    game = make_game(name)
    sg = solved(game)
    try:
        assert sg.num_states == positions
        assert sg.minimax_x[root(sg)] == value
        rows = np.random.default_rng(3).choice(sg.num_states, 2000, replace=False)
        np.testing.assert_array_equal(jax.jit(jax.vmap(sg.index_of))(sg.states_at(rows)), rows)
    finally:
        if sg.num_states > 10_000_000:  # do not hold gigabytes for the rest of the session
            solver_module._CACHE.pop(game.name)
            jax.clear_caches()  # compiled look-ups hold the table through their host callback


def test_first_plies_of_7x6_match_oeis_a212693():
    layers, *_ = solver_module.enumerate_layers(make_game("connect_four"), max_depth=8)
    assert [len(k) for k in layers] == [1, 7, 49, 238, 1120, 4263, 16422, 54859, 184275]


def test_perfect_play_is_minimax():
    game = make_game("connect_four:4x4")
    sg = solved(game)
    table = probs_table(make_persona("perfect", game), game)
    np.testing.assert_allclose(sg.expected_outcome(table, table), sg.minimax_x, atol=1e-6)


@pytest.mark.parametrize("name", ["connect_four", "connect_four:7x4", "connect_four:6x5", "connect_four:5x6",
                                  "connect_four:6x5x3"])
def test_boards_too_big_are_refused_at_once(name):
    start = time.perf_counter()
    with pytest.raises(ValueError, match="too many positions to solve exactly here") as err:
        solved(make_game(name))
    assert time.perf_counter() - start < 1.0
    assert "\n" not in str(err.value) and make_game(name).name in str(err.value)


def test_disk_cache_round_trip_and_rebuild(tmp_path, monkeypatch):
    monkeypatch.setenv("AGENTSIM_CACHE", str(tmp_path))
    game = make_game("connect_four:4x4x3")
    monkeypatch.delitem(solver_module._CACHE, game.name, raising=False)
    fresh = solved(game)
    path = table_cache.path_for(solver_module._cache_tag(game))
    assert path.parent == tmp_path / "solver" and path.exists()
    assert not list(path.parent.glob("*.tmp")), "temporary file left behind"

    def reload(expect_warning: bool):
        solver_module._CACHE.pop(game.name)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sg = solved(game)
        messages = [str(w.message) for w in caught]
        assert bool(messages) == expect_warning, messages
        if expect_warning:
            assert len(messages) == 1 and "unreadable" in messages[0] and "\n" not in messages[0]
        for field in ("keys", "depth", "children", "terminal", "returns_x", "minimax_x"):
            a, b = getattr(sg, field), getattr(fresh, field)
            assert a.dtype == b.dtype and np.array_equal(a, b), field

    real_solve = solver_module.solve
    monkeypatch.setattr(solver_module, "solve", lambda g: pytest.fail("solved again despite a good cache"))
    reload(expect_warning=False)
    monkeypatch.setattr(solver_module, "solve", real_solve)
    data = path.read_bytes()
    for broken in [data[: len(data) // 2],  # truncated
                   data[:-100] + bytes(b ^ 0xFF for b in data[-100:]),  # corrupt bytes
                   data + b"x",  # trailing garbage
                   b"not a table at all"]:
        path.write_bytes(broken)
        reload(expect_warning=True)
        assert path.read_bytes() == data, "the rebuilt table was not written back"
