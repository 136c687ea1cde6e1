"""An agent's own games as a dataset: what a simulator of the agent (``data.source``) learns from.

The games are played as the agent trained (``arena.play_games``: its masked softmax sampled, an
opponent drawn per game from its PPO pool, the agent O in ``ppo.o_fraction`` of the games) by
``own_games``, which ``analysis.agent_value.agent_games`` calls too: one rollout of an agent's own
games. Seed s of a ``data.source`` run learns from agent seed s's games (claim 1 pairs networks by
seed), drawn with the key ``fold_in(key(data.seed), s)``, so a seed's games do not depend on which
other seeds the run trains. The agent is read at its final checkpoint (a finished run's last).

Every move is labelled with what an ideal predictor of such games knows (``label_games``): the
agent's exact policy at every history, every pool persona's, and the priors over which side is the
agent (``ppo.o_fraction``) and which opponent it faces (the pool's weights). ``bayes_logp`` mixes
these (side, opponent) hypotheses by their posterior given the moves so far, so
``Dataset.bayes_optimal_loss`` is the floor of a simulator of the agent as it is of a simulator of
the persona mixture. Given the side (``known_side_logp``) the floor splits in two: on the agent's
moves its own policy (expected loss: the policy's entropy, ``agent_entropy``), on the opponent's
the posterior mixture over the pool.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import logsumexp

from agentsim.envs import make_game
from agentsim.envs.dataset import DataConfig, Dataset, replay
from agentsim.envs.personas import make_persona
from agentsim.envs.tokens import Layout, tokenize
from agentsim.experiments.config import Config, ConfigError
from agentsim.experiments.runs.restore import open_checkpoint
from agentsim.experiments.runs.run import RunError, is_run_dir, read_config, read_status
from agentsim.experiments.train import arena as A
from agentsim.experiments.train.arena import opponent_pool
from agentsim.experiments.train.policy import make_policy, policy_at

AGENT_REGIMES = ("rl", "pretrain_rl")
AGENT_GAMES = "agent_games.npz"  # in a data.source run's directory: the games it trained on
GAMES_BATCH = 4096  # most games per seed per jitted call when a dataset is played
LABEL_CHUNK = 1 << 16  # games per numpy pass of ``bayes_logp`` (its hypotheses: 4 float64 arrays [games, M, 2, P])


def _batch(num_games: int) -> int:
    """Games per call: a power of two from 1024 to GAMES_BATCH, so that a run's training and
    held-out sets (and most sizes) share one compile; the last batch is played whole and cut."""
    return min(GAMES_BATCH, max(1024, 1 << (num_games - 1).bit_length()))


@dataclass(frozen=True)
class AgentGames:
    """Each seed's own games (leading axes: seed, game)."""

    tokens: np.ndarray  # int32[S, G, T]
    moves: np.ndarray  # int32[S, G, M]: -1 after the end
    side: np.ndarray  # int32[S, G]: the agent's side (0 = X)
    opponent: np.ndarray  # int32[S, G]: index into the pool
    result: np.ndarray  # float32[S, G]: the agent's final return


@lru_cache(maxsize=8)
def _games_fn(graphdef, game_name: str, layout, names: tuple[str, ...], weights: tuple[float, ...], num_games: int,
              o_fraction: float):
    """(params_S, keys_S) -> each seed's own games: jitted once per network shape, pool, size and
    share of games as O (the checkpoints of a run share it)."""
    game = make_game(game_name)
    arena = A.Arena(game, layout, tuple(make_persona(n, game) for n in names))
    opp_logits = A.pool_logits(np.asarray(weights))

    @jax.jit
    def play(params, keys):
        def one(p, k):
            k_reset, k_play = jax.random.split(k)
            envs, traj = A.play_games(arena, make_policy(graphdef, p, game.num_actions), k_reset, k_play,
                                      num_games, opp_logits, o_prob=o_fraction)
            return envs.tokens, envs.agent_side, envs.opponent, traj.reward.sum(0)

        return jax.vmap(one)(params, keys)

    return play


def own_games(graphdef, cfg: Config, layout: Layout, params, keys_S, num_games: int) -> AgentGames:
    """``num_games`` games per seed of the agent whose config, layout and seed-stacked params are
    given, seed i played with ``keys_S[i]``: as O in the share of games PPO trained it as O."""
    names, weights = opponent_pool(cfg)
    play = _games_fn(graphdef, cfg.data.game, layout, names, tuple(weights.tolist()), num_games,
                     float(cfg.ppo.o_fraction))
    tokens, side, opponent, result = (np.asarray(x) for x in play(params, keys_S))
    body = tokens[..., layout.prefix_len: layout.prefix_len + layout.max_moves]
    moves = np.where(body < layout.num_actions, body, -1).astype(np.int32)
    return AgentGames(tokens, moves, side, opponent, result)


# ---------------------------------------------------------------------------------- the source run


@dataclass(frozen=True)
class Source:
    """The agent a ``data.source`` run simulates, its params in the run's seed order."""

    run_dir: Path
    cfg: Config  # the agent's
    layout: Layout  # the agent's
    graphdef: object
    params: object  # seed-stacked: row i is the agent seed equal to the run's seed i
    step: int


def open_source(cfg: Config) -> Source:
    """The finished agent run ``data.source`` names, at its final checkpoint, with the params of
    the agent seeds this run's seeds learn from; every problem is a ConfigError naming the field."""
    src = cfg.data.source
    if not is_run_dir(src):
        raise ConfigError(f"data.source: {src} is not a run directory (no config.json and status.json)")
    status = read_status(src).get("status")
    if status != "finished":
        raise ConfigError(f"data.source: the run in {src} is not finished (status {status}); a simulator of an agent "
                          "learns from a finished agent")
    try:
        agent_cfg = read_config(src)
    except (RunError, ConfigError) as e:
        raise ConfigError(f"data.source: {e}") from None
    if agent_cfg.train.regime not in AGENT_REGIMES:
        raise ConfigError(f"data.source: {src} is a {agent_cfg.train.regime} run, not an agent (rl or pretrain_rl)")
    if agent_cfg.data.game != cfg.data.game:
        raise ConfigError(f"data.source: {src} plays {agent_cfg.data.game}, this run {cfg.data.game}")
    missing = [s for s in cfg.train.seeds if s not in agent_cfg.train.seeds]
    if missing:
        raise ConfigError(f"data.source: {src} has no seed {missing} (it has {list(agent_cfg.train.seeds)}): seed s "
                          "learns from agent seed s's games")
    try:
        ck = open_checkpoint(src, agent_cfg.train.steps)
    except RunError as e:
        raise ConfigError(f"data.source: {e}") from None
    rows = np.asarray([agent_cfg.train.seeds.index(s) for s in cfg.train.seeds])
    params = jax.tree.map(lambda x: x[rows], ck.params)
    return Source(Path(src), ck.cfg, ck.layout, ck.graphdef, params, ck.step)


def play_source(src: Source, seeds, num_games: int, data_seed: int) -> AgentGames:
    """``num_games`` of each seed's agent's own games, in batches (``_batch``). Seed s's games come
    from ``fold_in(key(data_seed), s)`` and batch b's from ``fold_in`` of that with b."""
    base = jax.vmap(lambda s: jax.random.fold_in(jax.random.key(data_seed), s))(jnp.asarray(seeds, jnp.uint32))
    batch = _batch(num_games)
    parts = []
    for b in range(-(-num_games // batch)):
        keys = jax.vmap(lambda k: jax.random.fold_in(k, b))(base)
        parts.append(own_games(src.graphdef, src.cfg, src.layout, src.params, keys, batch))
    return AgentGames(*(np.concatenate([getattr(p, f) for p in parts], axis=1)[:, :num_games]
                        for f in ("tokens", "moves", "side", "opponent", "result")))


# ---------------------------------------------------------------------------------- labels


@lru_cache(maxsize=8)
def _reads_fn(graphdef, game_name: str, layout: Layout):
    """(params_S, moves_SxBxM) -> (log π of each move made, entropy of π before it), [S, B, M]:
    the agent's policy (masked softmax over legal moves, as it samples) at every history of the
    games, whichever side moved; 0 after a game's end."""
    game = make_game(game_name)
    pos = jnp.asarray(layout.move_positions())

    def legal_masks(moves_M):
        def move(state, a):
            return game.step(state, jnp.maximum(a, 0)), game.legal_mask(state)  # -1 (game over) changes nothing

        return jax.lax.scan(move, game.init(), moves_M)[1]

    @jax.jit
    def reads(params, moves):
        def one(p, moves_BxM):
            b, m = moves_BxM.shape
            tokens = jnp.full((b, layout.seq_len), layout.pad, jnp.int32).at[:, 0].set(layout.bos)
            tokens = tokens.at[:, layout.prefix_len:layout.prefix_len + m].set(
                jnp.where(moves_BxM >= 0, moves_BxM, layout.pad))
            legal = jax.vmap(legal_masks)(moves_BxM)  # [B, M, A]
            logits, _ = policy_at(graphdef, p, tokens, jnp.broadcast_to(pos, (b, m)), legal, game.num_actions)
            logp = jax.nn.log_softmax(logits, -1)
            taken = jnp.take_along_axis(logp, jnp.maximum(moves_BxM, 0)[..., None], -1)[..., 0]
            entropy = -jnp.sum(jnp.where(legal, jnp.exp(logp) * logp, 0.0), -1)
            live = moves_BxM >= 0
            return jnp.where(live, taken, 0.0), jnp.where(live, entropy, 0.0)

        return jax.vmap(one)(params, moves)

    return reads


def policy_reads(src: Source, moves_SxNxM: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32[S, N, M] each: log π(move made | history) and the entropy of π there, for each
    seed's agent on its own games (in batches, ``_batch``)."""
    reads = _reads_fn(src.graphdef, src.cfg.data.game, src.layout)
    n = moves_SxNxM.shape[1]
    batch = _batch(n)
    logp, ent = [], []
    for i in range(0, n, batch):
        part = moves_SxNxM[:, i:i + batch]
        pad = batch - part.shape[1]
        part = np.pad(part, ((0, 0), (0, pad), (0, 0)), constant_values=-1)  # the last batch padded
        lp, en = (np.asarray(x)[:, :batch - pad] for x in reads(src.params, jnp.asarray(part, jnp.int32)))
        logp.append(lp)
        ent.append(en)
    return np.concatenate(logp, 1), np.concatenate(ent, 1)


def bayes_logp(player_NxM, mask_NxM, side_N, agent_logp_NxM, pool_logp_NxMxP, o_fraction: float,
               pool_weights_P) -> tuple[np.ndarray, np.ndarray]:
    """(float64[N, M] each) log-probability of each move made under the ideal predictor of the
    agent's games, not knowing and knowing which side is the agent.

    A hypothesis is (the agent's side σ, the opponent p), prior (o_fraction if σ = O else
    1 − o_fraction) × the pool weight of p; under it a move has probability π_agent(move) if its
    mover is σ, else π_p(move). The predictive of move t mixes the hypotheses by their posterior
    given moves < t; knowing the side, only p is mixed (on the agent's moves that is π_agent)."""
    with np.errstate(divide="ignore"):
        prior = np.log([1.0 - o_fraction, o_fraction])[:, None] + np.log(pool_weights_P / pool_weights_P.sum())[None]
        pool = np.asarray(pool_logp_NxMxP, np.float64)
    is_side = player_NxM[..., None] == np.arange(2)  # [N, M, 2]: the mover is side σ
    step = np.where(is_side[..., None], np.asarray(agent_logp_NxM, np.float64)[..., None, None], pool[..., None, :])
    step = np.where(mask_NxM[..., None, None], step, 0.0)  # [N, M, 2, P]
    before = np.concatenate([np.zeros_like(step[:, :1]), np.cumsum(step, 1)[:, :-1]], 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        joint = prior + before  # log P(hypothesis, moves < t)
        unknown = logsumexp(joint + step, axis=(2, 3)) - logsumexp(joint, axis=(2, 3))
        own = np.take_along_axis(joint + step, side_N[:, None, None, None], 2)[:, :, 0]
        known = logsumexp(own, -1) - logsumexp(np.take_along_axis(joint, side_N[:, None, None, None], 2)[:, :, 0], -1)
    return np.where(mask_NxM, unknown, 0.0), np.where(mask_NxM, known, 0.0)


def label_games(cfg: Config, src: Source, moves_SxNxM: np.ndarray, side_SxN: np.ndarray,
                opponent_SxN: np.ndarray) -> list[Dataset]:
    """One dataset per seed of the given agent games: tokens in this run's layout, boards,
    position keys, outcomes, and the floors of the module docstring (``bayes_logp`` with
    ``agent_entropy``, ``agent_logp`` and ``known_side_logp``)."""
    names, weights = opponent_pool(src.cfg)
    pool_cfg = DataConfig(cfg.data.game, mixture=dict(zip(names, weights.tolist())))
    layout = Layout.for_config(cfg.data)
    agent_logp, entropy = policy_reads(src, moves_SxNxM)
    out = []
    n = moves_SxNxM.shape[1]
    rows = -(-n // _batch(n)) * _batch(n)  # padded with empty games (dropped again): one compile for many sizes
    for s in range(moves_SxNxM.shape[0]):
        moves = np.pad(moves_SxNxM[s], ((0, rows - n), (0, 0)), constant_values=-1)
        pool = replay(pool_cfg, moves, labels=False).subset(np.arange(n))  # boards, positions, each pool persona's π
        mask, player, side = pool["move_mask"], pool["player"].astype(np.int64), side_SxN[s].astype(np.int64)
        lp = pool["persona_loglik"]
        parts = [bayes_logp(player[i:i + LABEL_CHUNK], mask[i:i + LABEL_CHUNK], side[i:i + LABEL_CHUNK],
                            agent_logp[s, i:i + LABEL_CHUNK], lp[i:i + LABEL_CHUNK], float(src.cfg.ppo.o_fraction),
                            weights) for i in range(0, n, LABEL_CHUNK)]  # float64 [games, M, 2, P] per chunk
        unknown, known = (np.concatenate(x) for x in zip(*parts))
        arrays = {k: pool[k] for k in ("moves", "move_mask", "player", "boards", "position", "outcome_x", "num_moves")}
        arrays.update(agent_side=side.astype(np.int32), opponent=opponent_SxN[s].astype(np.int32),
                      agent_logp=agent_logp[s], agent_entropy=entropy[s],
                      bayes_logp=unknown.astype(np.float32), known_side_logp=known.astype(np.float32))
        arrays["tokens"] = tokenize(layout, arrays)
        out.append(Dataset(cfg.data, layout, arrays))
    return out


@dataclass
class SeedDatasets:
    """One dataset per seed of a run, the same size each (seed i trains on ``per_seed[i]``), read
    as a ``Dataset`` whose arrays have the seed axis first."""

    per_seed: tuple[Dataset, ...]
    meta: dict = field(default_factory=dict)  # where the games come from (``save_games`` keeps it)

    @property
    def layout(self) -> Layout:
        return self.per_seed[0].layout

    def __len__(self) -> int:
        return len(self.per_seed[0])

    def __getitem__(self, key: str) -> np.ndarray:
        return np.stack([d[key] for d in self.per_seed])

    def subset(self, idx: np.ndarray) -> "SeedDatasets":
        return SeedDatasets(tuple(d.subset(idx) for d in self.per_seed), self.meta)

    def position_keys(self) -> np.ndarray:
        """The positions any seed's games reach (``Dataset.position_keys``, over every seed)."""
        return np.unique(np.concatenate([d.position_keys() for d in self.per_seed]))

    def bayes_optimal_loss(self) -> np.ndarray:
        """float64[S]: each seed's floor (``Dataset.bayes_optimal_loss``)."""
        return np.asarray([d.bayes_optimal_loss() for d in self.per_seed])

    def agent_moves(self) -> np.ndarray:
        """bool[S, N, M]: the moves the agent made (the others are its opponent's)."""
        return self["move_mask"] & (self["player"] == self["agent_side"][..., None])


# ---------------------------------------------------------------------------------- storage


def _meta(cfg: Config, src: Source) -> dict:
    return {"source": str(src.run_dir), "step": src.step, "seeds": list(cfg.train.seeds),
            "num_games": cfg.data.num_games, "seed": cfg.data.seed}


def save_games(path: Path, data: SeedDatasets) -> None:
    """The games a run trains on (moves, the agent's side, the opponent), so that they are never
    played again: a resumed run reads them back (``agent_datasets(..., stored=)``)."""
    with open(path, "wb") as f:
        np.savez_compressed(f, __meta__=np.array(json.dumps(data.meta)), moves=data["moves"].astype(np.int8),
                            side=data["agent_side"].astype(np.int8), opponent=data["opponent"].astype(np.int8))


def agent_datasets(cfg: Config, stored: Path | None = None) -> SeedDatasets:
    """Each seed's dataset of its agent's games (``data.num_games``, ``data.seed``): read from
    ``stored`` (a run's ``AGENT_GAMES``) when it exists, else played."""
    src = open_source(cfg)
    meta = _meta(cfg, src)
    if stored is not None and Path(stored).exists():
        with np.load(stored, allow_pickle=False) as z:
            if json.loads(str(z["__meta__"])) != meta:
                raise ConfigError(f"data.source: {stored} holds other games ({str(z['__meta__'])}) than this "
                                  f"config plays ({json.dumps(meta)})")
            moves, side, opponent = (z[k].astype(np.int32) for k in ("moves", "side", "opponent"))
    else:
        games = play_source(src, cfg.train.seeds, cfg.data.num_games, cfg.data.seed)
        moves, side, opponent = games.moves, games.side, games.opponent
    return SeedDatasets(tuple(label_games(cfg, src, moves, side, opponent)), meta)
