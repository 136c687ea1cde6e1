"""One way to open any checkpoint: run it on games and get named activations.

    model = LoadedModel.from_run("runs/quick/runs/rl")          # latest checkpoint, all seeds
    acts = model.run_with_cache(tokens)                         # {"resid": [S, L+1, N, M, D], ...}

Activations are read at the move positions (the output that predicts move t, i.e. the state
before move t) unless ``positions="all"``. They come from ``models.transformer.apply`` — the
forward pass used in training — so analyses never re-implement it. ``cache=True`` stores them
under ``RUN/activations/`` keyed by checkpoint step and a hash of the tokens.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from agentsim.envs.tokens import Layout
from agentsim.experiments.config import Config, seed_keys
from agentsim.experiments.runs.restore import open_checkpoint
from agentsim.experiments.train.devices import shard_seeds
from agentsim.models.transformer import apply, init_params

NAMES = ("resid", "attn", "mlp")  # also: "critic_resid" (separate critic), "value" (the value head's output)


@partial(jax.jit, static_argnums=(0, 3, 4))
def _forward(graphdef, params, tokens, names: tuple[str, ...], per_seed_tokens: bool = False):
    def one(p, tok):
        out = apply(graphdef, p, tok)
        acts = {"resid": out.resid_LxBxTxD, "attn": out.attn_LxBxTxD, "mlp": out.mlp_LxBxTxD,
                "critic_resid": out.critic_resid_LxBxTxD, "value": out.value_BxT}
        return {k: acts[k] for k in names}, out.logits_KxBxTxV[0]

    return jax.vmap(one, (0, 0 if per_seed_tokens else None))(params, tokens)


@dataclass
class LoadedModel:
    """A checkpoint's seed-stacked params with the config and layout that give them meaning."""

    cfg: Config
    layout: Layout
    graphdef: object
    params: object
    run_dir: Path | None = None
    step: int | None = None

    _placed: tuple | None = field(default=None, init=False, repr=False, compare=False)

    def _seed_params(self):
        """The params split over the local devices by seed, placed once per params object.
        ``self.params`` stays as given: other analyses hand it to their own jitted functions
        beside params they built on the host, and one placement for both keeps one compile."""
        if self._placed is None or self._placed[0] is not self.params:
            self._placed = (self.params, shard_seeds(self.params))
        return self._placed[1]

    def _tokens(self, tokens: np.ndarray) -> jax.Array:
        """A batch of tokens on the device(s): one set per seed goes where its seed is."""
        tokens = jnp.asarray(tokens)
        return shard_seeds(tokens) if tokens.ndim == 3 else tokens

    @classmethod
    def from_run(cls, run_dir: str | Path, step: int | None = None) -> "LoadedModel":
        ck = open_checkpoint(run_dir, step)
        return cls(ck.cfg, ck.layout, ck.graphdef, ck.params, Path(run_dir), ck.step)

    def at_init(self) -> "LoadedModel":
        """The same architecture and seeds at random init (the control of every probe)."""
        _, params = init_params(self.cfg.model, self.layout.vocab_size, self.layout.seq_len, seed_keys(self.cfg))
        return LoadedModel(self.cfg, self.layout, self.graphdef, params, None, None)

    def with_params(self, params) -> "LoadedModel":
        return LoadedModel(self.cfg, self.layout, self.graphdef, params, None, None)

    @property
    def num_seeds(self) -> int:
        return len(self.cfg.train.seeds)

    @property
    def num_params(self) -> int:
        """Parameters of one seed's network (every trunk and head)."""
        return int(sum(np.size(x) for x in jax.tree.leaves(self.params)) // self.num_seeds)

    def logits(self, tokens: np.ndarray, batch: int = 1024) -> np.ndarray:
        """float32[S, N, T, V] of the policy/next-token head; ``tokens`` [N, T] for every seed or
        [S, N, T], one set per seed (e.g. each agent's own games)."""
        per_seed = tokens.ndim == 3
        n = tokens.shape[-2]
        params = self._seed_params()
        return np.concatenate([np.asarray(_forward(self.graphdef, params, self._tokens(self._rows(tokens, i, batch)),
                                                   (), per_seed)[1])[:, :min(batch, n - i)] for i in range(0, n, batch)],
                              axis=1)

    def _rows(self, tokens: np.ndarray, start: int, batch: int) -> np.ndarray:
        """Rows start … start+batch of ``tokens``, padded (with padding tokens) to one of a few
        sizes: a full batch, or a power of two for a short set, so that calls on sets of many
        sizes share a few compiled forwards. The caller drops the padded rows' outputs."""
        rows = tokens[..., start:start + batch, :]
        n = rows.shape[-2]
        size = batch if tokens.shape[-2] - start >= batch else min(batch, max(64, 1 << (n - 1).bit_length()))
        if size == n:
            return rows
        pad = [(0, 0)] * rows.ndim
        pad[-2] = (0, size - n)
        return np.pad(rows, pad, constant_values=self.layout.pad)

    def run_with_cache(self, tokens: np.ndarray, names: tuple[str, ...] = NAMES, positions: str = "moves",
                       batch: int = 1024, cache: bool = False) -> dict[str, np.ndarray]:
        """{name: float32[S, layers, N, P, D]} at the move positions (P = max_moves) or all (P = T);
        "value" is [S, N, P]. ``tokens``: [N, T] for every seed, or [S, N, T] (one set per seed)."""
        path = None
        if cache and self.run_dir is not None:
            digest = hashlib.sha1(np.ascontiguousarray(tokens).tobytes() + repr((names, positions)).encode()).hexdigest()[:16]
            path = self.run_dir / "activations" / f"step_{self.step}_{digest}.npz"
            if path.exists():
                with np.load(path) as z:
                    return {k: z[k] for k in z.files}
        pos = self.layout.move_positions() if positions == "moves" else np.arange(self.layout.seq_len)
        per_seed = tokens.ndim == 3
        chunks: dict[str, list] = {k: [] for k in names}
        params = self._seed_params()
        n = tokens.shape[-2]
        for i in range(0, n, batch):
            acts, _ = _forward(self.graphdef, params, self._tokens(self._rows(tokens, i, batch)), tuple(names), per_seed)
            real = min(batch, n - i)
            for k in names:
                a = np.asarray(acts[k])
                a = a[:, :real] if k == "value" else a[:, :, :real]  # [S, N, T] or [S, L, N, T, D]
                chunks[k].append(a[..., pos] if k == "value" else a[..., pos, :])
        out = {k: np.concatenate(v, axis=1 if k == "value" else 2) for k, v in chunks.items()}
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(path, **out)
        return out


def parameter_count(cfg: Config) -> int:
    """Parameters of one seed's network a config describes (every trunk and head), from the
    shapes alone: nothing is initialised or read from disk."""
    layout = Layout.for_config(cfg.data)
    shapes = jax.eval_shape(lambda k: init_params(cfg.model, layout.vocab_size, layout.seq_len, k)[1], seed_keys(cfg))
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(shapes)) // len(cfg.train.seeds))
