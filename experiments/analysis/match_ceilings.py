"""Exact references for the match evaluation: what the perfect persona and the best possible
player score against each persona, beside the agents' loss and win rates.

Why: a bar such as "wins ≥ 95 % against random" means little without its ceiling. On
connect-four 5×4 the perfect persona (uniform over value-optimal moves) wins only ~92 % against
random, because optimal play does not try to exploit a weak opponent, while a best response to
random wins ~99.9 %. Both come from the solver's table by one backward pass each, on the same
terms as the evaluation: the mean of the rates as X and as O (``train.evaluate``).
"""

from __future__ import annotations

from agentsim.envs import make_game
from agentsim.envs.personas import make_persona, probs_table
from agentsim.envs.solver import solved

OPPONENTS = ("random", "greedy", "perfect")
REFERENCE = "perfect"


def match_ceilings(game_name: str, opponents: tuple[str, ...] = OPPONENTS) -> dict[str, dict[str, float]]:
    """{"perfect persona": {measure: rate}, "best possible": {measure: rate}} for the measures
    ``loss_vs_<opp>`` and ``win_vs_<opp>`` (and ``_as_x`` / ``_as_o``). "best possible" is each
    measure's own optimum (the fewest losses, the most wins) over every policy; no single player
    need reach all of them at once."""
    game = make_game(game_name)
    sg = solved(game)
    root = sg.root
    tables = {n: probs_table(make_persona(n, game), game) for n in sorted({*opponents, REFERENCE})}
    x_wins, o_wins = sg.returns_x > 0, sg.returns_x < 0
    rows: dict[str, dict[str, float]] = {"perfect persona": {}, "best possible": {}}

    def chance(probs_x, probs_o, result) -> float:
        """P(result) from the empty board; a None side maximises it. Clipped: sums of float32
        move probabilities can exceed 1 by rounding."""
        return min(max(float(sg.backup(probs_x, probs_o, result)[root]), 0.0), 1.0)

    ref = tables[REFERENCE]
    for opp in opponents:
        q = tables[opp]
        # The agent's result as X and as O, per measure: `win` when it wins, `loss` when the other side does.
        for measure, x_result, o_result in (("win", x_wins, o_wins), ("loss", o_wins, x_wins)):
            as_x, as_o = chance(ref, q, x_result), chance(q, ref, o_result)
            if measure == "win":  # the agent side (None) maximises its chance of winning...
                best_x, best_o = chance(None, q, x_result), chance(q, None, o_result)
            else:  # ...or of not losing
                best_x, best_o = 1.0 - chance(None, q, ~x_result), 1.0 - chance(q, None, ~o_result)
            for row, x, o in (("perfect persona", as_x, as_o), ("best possible", best_x, best_o)):
                name = f"{measure}_vs_{opp}"
                rows[row].update({name: (x + o) / 2, f"{name}_as_x": x, f"{name}_as_o": o})
    return rows
