"""The simulator regime: next-token prediction on persona-mixture games (or, with ``data.source``,
on an agent's own games, one dataset per seed).

``make_next_token`` returns pure functions; the seed axis is vmapped inside one jitted chunk of
``lax.scan``-ed AdamW updates (warm-up + cosine schedule) and split over the local devices.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import optax

from agentsim.envs.dataset import Dataset
from agentsim.envs.tokens import Layout
from agentsim.experiments.config import Config
from agentsim.experiments.train.devices import jit_seeds, shard_seeds
from agentsim.experiments.train.trainer import Trainer, traced_at_most
from agentsim.models.transformer import apply, init_params


def target_mask(layout: Layout, tokens_BxT: jax.Array, ahead: int) -> jax.Array:
    """Where head ``ahead`` (0 = next token) has a move (or outcome) token to predict."""
    target = jnp.roll(tokens_BxT, -(1 + ahead), axis=-1)
    pos = jnp.arange(tokens_BxT.shape[-1])
    in_range = pos + 1 + ahead < tokens_BxT.shape[-1]
    is_move = target < layout.num_actions
    is_outcome = (target >= layout.outcome_base) & (target < layout.outcome_base + 3)
    return in_range & (is_move | (is_outcome & layout.outcome_token))


def token_nll(logits_BxTxV: jax.Array, tokens_BxT: jax.Array, ahead: int) -> jax.Array:
    """-log p(token t+1+ahead | tokens ≤ t) at every position."""
    target = jnp.roll(tokens_BxT, -(1 + ahead), axis=-1)
    logp = jax.nn.log_softmax(logits_BxTxV, axis=-1)
    return -jnp.take_along_axis(logp, target[..., None], axis=-1)[..., 0]


def move_nll(graphdef, params, layout: Layout, tokens_BxT: jax.Array) -> jax.Array:
    """float32[B, max_moves]: the policy head's NLL of each move (0 where there is none)."""
    logits = apply(graphdef, params, tokens_BxT).logits_KxBxTxV[0]
    nll = token_nll(logits, tokens_BxT, 0)
    pos = jnp.asarray(layout.move_positions())
    moves = tokens_BxT[:, pos + 1]
    return jnp.where(moves < layout.num_actions, nll[:, pos], 0.0)


def lm_loss(graphdef, params, layout: Layout, tokens_BxT, num_heads: int):
    """Mean NLL per head over its targets; the training loss is their mean (Gloeckle et al.)."""
    logits = apply(graphdef, params, tokens_BxT).logits_KxBxTxV
    per_head = []
    for k in range(num_heads):
        mask = target_mask(layout, tokens_BxT, k)
        nll = token_nll(logits[k], tokens_BxT, k)
        per_head.append(jnp.sum(nll * mask) / jnp.maximum(mask.sum(), 1))
    per_head = jnp.stack(per_head)
    return per_head.mean(), per_head


def make_next_token(cfg: Config, layout: Layout, train: Dataset | None, val: Dataset | None,
                    init_from=None) -> Trainer:
    """Next-token trainer; without datasets it can only ``init`` (a template for restoring)."""
    t, m = cfg.train, cfg.model
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, t.lr, warmup_steps=max(t.warmup, 1), decay_steps=max(t.steps, t.warmup + 1),
        end_value=t.lr * 0.05)
    tx = optax.chain(optax.clip_by_global_norm(1.0),
                     optax.adamw(schedule, weight_decay=t.weight_decay))
    keys0 = jax.random.split(jax.random.key(0), len(t.seeds))
    graphdef, _ = init_params(m, layout.vocab_size, layout.seq_len, keys0[:1])
    num_s = len(t.seeds)
    per_seed = False  # one dataset per seed (data.source: each seed its agent's games), seed axis first
    if train is not None:
        train_tokens = jnp.asarray(train["tokens"])
        val_tokens = jnp.asarray(val["tokens"])
        val_mask = jnp.asarray(val["move_mask"])
        val_bayes = val.bayes_optimal_loss()
        per_seed = train_tokens.ndim == 3

    def init(keys):
        _, params = init_params(m, layout.vocab_size, layout.seq_len, keys)
        if init_from is not None:  # continued pretraining starts from another run's params
            params = init_from
        data_keys = jax.vmap(lambda k: jax.random.key_data(jax.random.fold_in(k, 1)))(keys)
        return {"params": params, "opt": jax.vmap(tx.init)(params), "key": data_keys,
                "step": jnp.zeros(len(keys), jnp.int32)}

    def update(tokens_NxT, state, _):
        key = jax.random.wrap_key_data(state["key"])
        key, k_batch = jax.random.split(key)
        idx = jax.random.randint(k_batch, (t.batch_size,), 0, tokens_NxT.shape[0])
        (loss, per_head), grads = jax.value_and_grad(
            lambda p: lm_loss(graphdef, p, layout, tokens_NxT[idx], m.mtp_heads), has_aux=True
        )(state["params"])
        updates, opt = tx.update(grads, state["opt"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        metrics = {"losses/loss": loss, "losses/next_token": per_head[0],
                   "charts/grad_norm": optax.global_norm(grads),
                   "charts/learning_rate": schedule(state["step"])}
        new = {"params": params, "opt": opt, "key": jax.random.key_data(key), "step": state["step"] + 1}
        return new, metrics

    def one_seed(s, tokens_NxT):
        s, metrics = jax.lax.scan(partial(update, tokens_NxT), s, None, length=t.chunk)
        return s, jax.tree.map(jnp.mean, metrics)

    def one_eval(params, tokens_NxT, mask_NxM, bayes):
        nll = move_nll(graphdef, params, layout, tokens_NxT)
        loss = jnp.sum(nll * mask_NxM) / mask_NxM.sum()
        return {"eval/move_loss": loss, "eval/simulator_gap": loss - bayes}

    # The seed axis of the state, the metrics and the evaluation is split over the devices; so are
    # per-seed datasets, passed as arguments (a shared dataset is a constant of the chunk).
    if per_seed:
        @traced_at_most(1)  # a second trace would mean a silent recompile every chunk
        def chunk_per_seed(state, tokens_SxNxT):
            return jax.vmap(one_seed)(state, tokens_SxNxT)

        @traced_at_most(1)
        def evaluate_per_seed(state, tokens_SxNxT, mask_SxNxM, bayes_S):
            return jax.vmap(one_eval)(state["params"], tokens_SxNxT, mask_SxNxM, bayes_S)

        train_s = shard_seeds(train_tokens, num_s)
        val_s = shard_seeds((val_tokens, val_mask, jnp.asarray(val_bayes, jnp.float32)), num_s)
        jchunk, jeval = jit_seeds(chunk_per_seed, num_s), jit_seeds(evaluate_per_seed, num_s)
        return Trainer(graphdef, init, lambda state: jchunk(state, train_s), lambda state: jeval(state, *val_s),
                       t.chunk)

    @traced_at_most(1)  # a second trace would mean a silent recompile every chunk
    def chunk(state):
        return jax.vmap(one_seed, (0, None))(state, train_tokens)

    @traced_at_most(1)
    def evaluate(state):
        return jax.vmap(one_eval, (0, None, None, None))(state["params"], val_tokens, val_mask, val_bayes)

    # The seed axis of the state, the metrics and the evaluation is split over the devices.
    return Trainer(graphdef, init, jit_seeds(chunk, len(t.seeds)), jit_seeds(evaluate, len(t.seeds)), t.chunk)
