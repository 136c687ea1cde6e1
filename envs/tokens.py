"""How a game becomes a token sequence: ``BOS [X_PERSONA O_PERSONA] m1 m2 … [OUTCOME] PAD…``.

A move is its action id; BOS, PAD, the three results and the persona names follow the
actions. Position ``prefix_len - 1 + t`` is the token *after which* move t is
predicted, i.e. where the network's residual describes the state before move t; every
per-position label of a dataset is indexed by that move number t in [0, max_moves).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from agentsim.envs import make_game

if TYPE_CHECKING:
    from agentsim.envs.dataset import DataConfig


@dataclass(frozen=True)
class Layout:
    """Token ids and positions for one game and persona roster."""

    num_actions: int
    max_moves: int
    persona_names: tuple[str, ...]
    persona_prompt: bool
    outcome_token: bool

    @property
    def bos(self) -> int:
        return self.num_actions

    @property
    def pad(self) -> int:
        return self.num_actions + 1

    @property
    def outcome_base(self) -> int:  # X win, draw, O win
        return self.num_actions + 2

    @property
    def persona_base(self) -> int:  # X personas, then O personas
        return self.num_actions + 5

    @property
    def vocab_size(self) -> int:
        return self.persona_base + 2 * len(self.persona_names)

    @property
    def prefix_len(self) -> int:
        return 1 + 2 * self.persona_prompt

    @property
    def seq_len(self) -> int:
        return self.prefix_len + self.max_moves + self.outcome_token

    def move_positions(self) -> np.ndarray:
        """int32[max_moves]: the position whose output predicts move t (state before move t)."""
        return self.prefix_len - 1 + np.arange(self.max_moves, dtype=np.int32)

    @classmethod
    def for_config(cls, cfg: DataConfig) -> "Layout":
        """The layout of a dataset config's games: its game, the personas of positive weight."""
        game = make_game(cfg.game)
        names = tuple(n for n, w in cfg.mixture.items() if w > 0)
        return cls(game.num_actions, game.max_moves, names, cfg.persona_prompt, cfg.outcome_token)


def tokenize(layout: Layout, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """int32[N, seq_len] token sequences from moves (and personas, outcome if enabled)."""
    n = len(arrays["moves"])
    tokens = np.full((n, layout.seq_len), layout.pad, np.int32)
    tokens[:, 0] = layout.bos
    if layout.persona_prompt:
        tokens[:, 1] = layout.persona_base + arrays["persona_x"]
        tokens[:, 2] = layout.persona_base + len(layout.persona_names) + arrays["persona_o"]
    moves = arrays["moves"]
    body = tokens[:, layout.prefix_len : layout.prefix_len + layout.max_moves]
    body[:] = np.where(moves >= 0, moves, layout.pad)
    if layout.outcome_token:
        result = layout.outcome_base + 1 - np.sign(arrays["outcome_x"]).astype(np.int32)
        tokens[np.arange(n), layout.prefix_len + arrays["num_moves"]] = result
    return tokens
