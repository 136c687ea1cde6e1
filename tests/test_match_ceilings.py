"""The match references (perfect persona, best possible player) against an independent
pure-Python tic-tac-toe search, and the facts every game must obey."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest

from agentsim.envs import make_game
from agentsim.envs.personas import make_persona, probs_table
from agentsim.envs.solver import solved
from agentsim.experiments.analysis.match_ceilings import match_ceilings

LINES = [(0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6)]


def winner(b: tuple) -> int:
    for i, j, k in LINES:
        if b[i] and b[i] == b[j] == b[k]:
            return b[i]
    return 0


def moves(b: tuple) -> list[int]:
    return [i for i in range(9) if b[i] == 0] if not winner(b) else []


def play(b: tuple, i: int, mover: int) -> tuple:
    return b[:i] + (mover,) + b[i + 1:]


@lru_cache(maxsize=None)
def minimax(b: tuple, mover: int) -> int:
    """X's (1) result with best play by both; mover 1 = X, 2 = O."""
    w = winner(b)
    if w or not moves(b):
        return {0: 0, 1: 1, 2: -1}[w]
    vals = [minimax(play(b, i, mover), 3 - mover) for i in moves(b)]
    return max(vals) if mover == 1 else min(vals)


def perfect_moves(b: tuple, mover: int) -> list[int]:
    vals = {i: minimax(play(b, i, mover), 3 - mover) for i in moves(b)}
    best = max(vals.values()) if mover == 1 else min(vals.values())
    return [i for i, v in vals.items() if v == best]


@lru_cache(maxsize=None)
def chance(b: tuple, mover: int, me: int, want: int, agent: str) -> float:
    """P(the result is `want` for player `me`) when `me` plays `agent` ("best": maximises that
    chance; "perfect": uniform over minimax-optimal moves) and the other side plays uniformly."""
    w = winner(b)
    if w or not moves(b):
        result = 0 if not w else (1 if w == me else -1)
        return float(result == want)
    nexts = [chance(play(b, i, mover), 3 - mover, me, want, agent) for i in moves(b)]
    if mover != me:
        return sum(nexts) / len(nexts)
    if agent == "best":
        return max(nexts)
    opts = perfect_moves(b, mover)
    return sum(chance(play(b, i, mover), 3 - mover, me, want, agent) for i in opts) / len(opts)


def test_tictactoe_against_random_matches_independent_search():
    got = match_ceilings("tictactoe", opponents=("random",))
    empty = (0,) * 9
    for row, agent in (("best possible", "best"), ("perfect persona", "perfect")):
        assert got[row]["win_vs_random_as_x"] == pytest.approx(chance(empty, 1, 1, 1, agent), abs=1e-5)
        assert got[row]["win_vs_random_as_o"] == pytest.approx(chance(empty, 1, 2, 1, agent), abs=1e-5)
        assert got[row]["loss_vs_random"] == pytest.approx(0.0, abs=1e-9)
    # The best response to random beats the perfect persona, which does not try to exploit it.
    assert got["best possible"]["win_vs_random"] > got["perfect persona"]["win_vs_random"] + 0.05


@pytest.mark.parametrize("name", ["tictactoe", "connect_four:4x4"])
def test_references_obey_game_facts(name):
    got = match_ceilings(name)
    for opp in ("random", "greedy", "perfect"):
        assert got["perfect persona"][f"loss_vs_{opp}"] == pytest.approx(0.0, abs=1e-9)  # both draws
        assert got["best possible"][f"win_vs_{opp}"] >= got["perfect persona"][f"win_vs_{opp}"] - 1e-9
    assert got["best possible"]["win_vs_perfect"] == pytest.approx(0.0, abs=1e-9)  # nobody beats perfect play
    assert 0.5 < got["perfect persona"]["win_vs_random"] < 1.0


def test_backup_generalises_expected_outcome():
    game = make_game("tictactoe")
    sg = solved(game)
    rand, perf = (probs_table(make_persona(n, game), game) for n in ("random", "perfect"))
    np.testing.assert_allclose(sg.backup(rand, perf), sg.expected_outcome(rand, perf), atol=1e-6)
    # A best response to perfect play gets exactly the minimax value, from every state where
    # X is to move against the perfect persona's O (perfect O never errs).
    best = sg.backup(None, perf)
    np.testing.assert_allclose(best, sg.minimax_x, atol=1e-9)
    assert sg.backup(perf, perf)[sg.root] == pytest.approx(0.0, abs=1e-9)


def test_the_references_command_prints_the_table_and_refuses_a_big_board(capsys):
    from agentsim.experiments import cli

    assert cli.main(["references", "--game", "tictactoe"]) == 0
    out = capsys.readouterr().out
    best = next(line for line in out.splitlines() if line.startswith("best possible")).split()
    assert best[-1] == "0.9667"  # win vs random: the independent search above agrees
    assert cli.main(["references", "--game", "connect_four"]) == 2  # 7×6: no table
    assert "too many positions" in capsys.readouterr().err
