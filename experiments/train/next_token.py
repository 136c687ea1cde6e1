"""The simulator regime: next-token prediction on persona-mixture games.

``make_next_token`` returns pure functions; the seed axis is vmapped inside one jitted chunk of
``lax.scan``-ed AdamW updates (warm-up + cosine schedule) and split over the local devices.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from agentsim.envs.dataset import Dataset
from agentsim.envs.tokens import Layout
from agentsim.experiments.config import Config
from agentsim.experiments.train.devices import jit_seeds
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
    if train is not None:
        train_tokens = jnp.asarray(train["tokens"])
        val_tokens = jnp.asarray(val["tokens"])
        val_mask = jnp.asarray(val["move_mask"])
        val_bayes = val.bayes_optimal_loss()

    def init(keys):
        _, params = init_params(m, layout.vocab_size, layout.seq_len, keys)
        if init_from is not None:  # continued pretraining starts from another run's params
            params = init_from
        data_keys = jax.vmap(lambda k: jax.random.key_data(jax.random.fold_in(k, 1)))(keys)
        return {"params": params, "opt": jax.vmap(tx.init)(params), "key": data_keys,
                "step": jnp.zeros(len(keys), jnp.int32)}

    def update(state, _):
        key = jax.random.wrap_key_data(state["key"])
        key, k_batch = jax.random.split(key)
        idx = jax.random.randint(k_batch, (t.batch_size,), 0, train_tokens.shape[0])
        (loss, per_head), grads = jax.value_and_grad(
            lambda p: lm_loss(graphdef, p, layout, train_tokens[idx], m.mtp_heads), has_aux=True
        )(state["params"])
        updates, opt = tx.update(grads, state["opt"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        metrics = {"losses/loss": loss, "losses/next_token": per_head[0],
                   "charts/grad_norm": optax.global_norm(grads),
                   "charts/learning_rate": schedule(state["step"])}
        new = {"params": params, "opt": opt, "key": jax.random.key_data(key), "step": state["step"] + 1}
        return new, metrics

    @traced_at_most(1)  # a second trace would mean a silent recompile every chunk
    def chunk(state):
        def one_seed(s):
            s, metrics = jax.lax.scan(update, s, None, length=t.chunk)
            return s, jax.tree.map(jnp.mean, metrics)

        return jax.vmap(one_seed)(state)

    @traced_at_most(1)
    def evaluate(state):
        def one_seed(params):
            nll = move_nll(graphdef, params, layout, val_tokens)
            loss = jnp.sum(nll * val_mask) / val_mask.sum()
            return {"eval/move_loss": loss, "eval/simulator_gap": loss - val_bayes}

        return jax.vmap(one_seed)(state["params"])

    # The seed axis of the state, the metrics and the evaluation is split over the devices.
    return Trainer(graphdef, init, jit_seeds(chunk, len(t.seeds)), jit_seeds(evaluate, len(t.seeds)), t.chunk)
