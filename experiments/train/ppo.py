"""The agent regimes: PPO from scratch (``rl``) or from a simulator (``pretrain_rl``).

PureJaxRL's skeleton: one jitted chunk = ``scan`` over iterations, each = ``scan`` over
rollout steps (games vmapped, same-step autoreset) then ``scan`` over epochs ⊃ minibatches;
seeds are vmapped around it. The policy is the transformer's next-move head masked to legal
moves; the value comes from the separate critic (default) or the shared head. ``pretrain_rl``
may add ``kl_coef × KL(π ‖ π_pretrained)`` to the loss (the RLHF analogue) and start with
``ppo.critic_warmup`` iterations that train the critic alone. With ``ppo.league``
the pool also holds the agent's past selves (snapshots kept in the state, one drawn per iteration).
"""

from __future__ import annotations

from functools import partial

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from agentsim.envs import make_game
from agentsim.envs.personas import make_persona
from agentsim.envs.tokens import Layout
from agentsim.experiments.config import Config, PPOConfig
from agentsim.experiments.train import arena as A
from agentsim.experiments.train.devices import jit_seeds, shard_seeds
from agentsim.experiments.train.evaluate import make_match_eval, playable
from agentsim.experiments.train.policy import NEG, make_policy, policy_at
from agentsim.experiments.train.trainer import Trainer, traced_at_most
from agentsim.models.transformer import apply, init_params


CRITIC = ("critic", "value")  # the params the value is read from beside the policy's trunk and heads


def optimizer(p: PPOConfig, steps: int) -> optax.GradientTransformation:
    """Adam on the global-norm-clipped gradient, annealed linearly to 0 over the run. The critic
    (and value head) may learn at its own rate, and alone for the first ``p.critic_warmup``
    iterations: the policy's Adam is then masked (updates 0, its state and count untouched, so
    its bias correction and its schedule, over the remaining updates, start when it does).
    Otherwise it stays a single Adam, so its state (and checkpoints of earlier runs) keep their shape."""
    per_iteration = p.epochs * p.minibatches
    total, held = steps * per_iteration, p.critic_warmup * per_iteration

    def adam(lr, updates):
        return optax.adam(optax.linear_schedule(lr, 0.0, max(updates, 1)), eps=1e-5)

    def part(params):
        return jax.tree_util.tree_map_with_path(lambda path, _: "critic" if path[0].key in CRITIC else "policy", params)

    if p.critic_lr_scale == 1 and not held:
        return optax.chain(optax.clip_by_global_norm(p.max_grad_norm), adam(p.lr, total))
    policy = adam(p.lr, total - held)
    if held:
        policy = optax.transforms.conditionally_mask(policy, lambda count: count >= held)
    return optax.chain(optax.clip_by_global_norm(p.max_grad_norm),
                       optax.multi_transform({"policy": policy, "critic": adam(p.lr * p.critic_lr_scale, total)}, part))


def gae(rewards, values, dones, last_value, gamma: float, lam: float):
    """Generalised advantage estimation over a [time, env] rollout; returns (adv, targets)."""

    def back(carry, x):
        next_adv, next_value = carry
        r, v, d = x
        delta = r + gamma * next_value * (1 - d) - v
        adv = delta + gamma * lam * (1 - d) * next_adv
        return (adv, v), adv

    _, adv = jax.lax.scan(back, (jnp.zeros_like(last_value), last_value),
                          (rewards, values, dones.astype(jnp.float32)), reverse=True)
    return adv, adv + values


def ppo_loss(logits, value, batch, clip: float, vf_coef: float, ent_coef: float):
    """Clipped PPO objective over the real turns (``batch["live"]``); returns (loss, metrics)."""
    w = batch["live"].astype(jnp.float32)
    n = jnp.maximum(w.sum(), 1.0)

    def mean(x):
        return jnp.sum(x * w) / n

    logp_all = jax.nn.log_softmax(logits)
    logp = jnp.take_along_axis(logp_all, batch["action"][..., None], -1)[..., 0]
    log_ratio = logp - batch["logp"]
    ratio = jnp.exp(log_ratio)
    adv = batch["adv"]
    adv_mean = mean(adv)
    adv = (adv - adv_mean) / (jnp.sqrt(mean((adv - adv_mean) ** 2)) + 1e-8)
    pg = -mean(jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - clip, 1 + clip) * adv))
    v_clipped = batch["value"] + jnp.clip(value - batch["value"], -clip, clip)
    v_loss = 0.5 * mean(jnp.maximum((value - batch["target"]) ** 2, (v_clipped - batch["target"]) ** 2))
    p = jnp.exp(logp_all)
    entropy = mean(-jnp.sum(jnp.where(p > 0, p * logp_all, 0.0), axis=-1))
    loss = pg + vf_coef * v_loss - ent_coef * entropy
    metrics = {"losses/policy_loss": pg, "losses/value_loss": v_loss, "losses/entropy": entropy,
               "losses/approx_kl": mean((ratio - 1) - log_ratio),
               "losses/clipfrac": mean((jnp.abs(ratio - 1) > clip).astype(jnp.float32))}
    return loss, metrics


def make_ppo(cfg: Config, layout: Layout, init_from=None, ref_params=None, cache: bool = True) -> Trainer:
    """PPO trainer. ``init_from``: seed-stacked params to start from (pretrain_rl);
    ``ref_params``: the frozen policy of the KL tie (defaults to ``init_from``); ``cache``: the
    rollout reads the policy over its key/value cache (False: recomputes every history, the
    reference path ``agentsim bench`` compares)."""
    p, m, t = cfg.ppo, cfg.model, cfg.train
    if m.value_head == "none":
        raise ValueError("model.value_head: PPO needs a value head (critic or shared)")
    game = make_game(cfg.data.game)
    names, weights = A.opponent_pool(cfg)
    arena = A.Arena(game, layout, tuple(make_persona(n, game) for n in names))
    league = p.league > 0  # the agent's past selves join the pool, at index len(names)
    opp_logits = A.pool_logits(np.append(weights, p.league) if league else weights)
    num_a = game.num_actions
    turns = (game.max_moves + 1) // 2  # most decisions one side makes in a game
    mb_size = p.num_envs // p.minibatches
    tx = optimizer(p, t.steps)
    graphdef, _ = init_params(m, layout.vocab_size, layout.seq_len, jax.random.split(jax.random.key(0), 1))
    if ref_params is None:
        ref_params = init_from
    use_kl = p.kl_coef > 0 and ref_params is not None
    match_eval = make_match_eval(cfg, layout, graphdef, playable(cfg.data.game, ("random", "perfect")),
                                 t.eval_games_per_cell)

    def past_self(past, env):
        """A past self's move distribution in one game: its sampling policy, as the agent plays."""
        obs = A.observe(arena, env)
        logits = apply(graphdef, past, env.tokens[None]).logits_KxBxTxV[0][0, obs.position, :num_a]
        return jax.nn.softmax(jnp.where(obs.legal, logits, NEG))

    def init(keys):
        params = init_from
        if params is None:
            _, params = init_params(m, layout.vocab_size, layout.seq_len, keys)

        def per_seed(key, params):
            state = {"params": params, "opt": tx.init(params),
                     "key": jax.random.key_data(jax.random.fold_in(key, 2)), "step": jnp.int32(0)}
            if league:  # every slot starts as the initial agent
                state["league"] = jax.tree.map(lambda x: jnp.broadcast_to(x, (p.league_size,) + x.shape), params)
            return state

        return jax.vmap(per_seed)(keys, params)

    def iteration(state, ref):
        params = state["params"]
        key, k_reset, k_play, k_epochs = jax.random.split(jax.random.wrap_key_data(state["key"]), 4)
        pool = arena
        if league:  # this iteration's games against the league face one past self, drawn uniformly
            k_past = jax.random.fold_in(k_reset, 1)  # a stream of its own; runs without a league draw as before
            taken = jnp.minimum(state["step"] // p.league_every + 1, p.league_size)
            past = jax.tree.map(lambda x: x[jax.random.randint(k_past, (), 0, taken)], state["league"])
            pool = arena._replace(net=partial(past_self, past))

        # COLLECT TRAJECTORIES: num_envs whole games, one agent decision per scan step.
        envs, traj = A.play_games(pool, make_policy(graphdef, params, num_a, cache=cache), k_reset, k_play,
                                  p.num_envs, opp_logits, o_prob=p.o_fraction)  # [K, E]
        adv, target = gae(traj.reward, traj.value, traj.done | ~traj.live,
                          jnp.zeros(p.num_envs), p.gamma, p.gae_lambda)

        # UPDATE NETWORK: one forward pass per game covers all of its decisions.
        per_game = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), {
            "position": traj.position, "legal": traj.legal, "action": traj.action, "logp": traj.logp,
            "value": traj.value, "adv": adv, "target": target, "live": traj.live})
        per_game["tokens"] = envs.tokens
        chex.assert_shape([per_game["position"], per_game["action"], per_game["adv"], per_game["live"]],
                          (p.num_envs, turns))
        chex.assert_shape(per_game["legal"], (p.num_envs, turns, num_a))
        chex.assert_shape(per_game["tokens"], (p.num_envs, layout.seq_len))

        # The entropy bonus, decayed to 0 over the policy's iterations as its learning rate is
        # (ppo.ent_decay; after the critic's warm-up).
        policy_step = jnp.maximum(state["step"] - p.critic_warmup, 0)
        ent_coef = (p.ent_coef * (1.0 - policy_step / max(t.steps - p.critic_warmup, 1)) if p.ent_decay
                    else jnp.float32(p.ent_coef))

        def minibatch_update(carry, mb):
            params, opt = carry

            def loss_fn(params):
                logits, value = policy_at(graphdef, params, mb["tokens"], mb["position"], mb["legal"], num_a)
                loss, metrics = ppo_loss(logits, value, mb, p.clip, p.vf_coef, ent_coef)
                if use_kl:
                    ref_logits, _ = policy_at(graphdef, ref, mb["tokens"], mb["position"], mb["legal"], num_a)
                    lp, lq = jax.nn.log_softmax(logits), jax.nn.log_softmax(ref_logits)
                    kl = jnp.sum(jnp.where(mb["legal"], jnp.exp(lp) * (lp - lq), 0.0), -1)
                    kl = jnp.sum(kl * mb["live"]) / jnp.maximum(mb["live"].sum(), 1)
                    loss = loss + p.kl_coef * kl
                    metrics["losses/kl_to_pretrained"] = kl
                return loss, metrics

            (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
            updates, opt = tx.update(grads, opt, params)
            return (optax.apply_updates(params, updates), opt), metrics

        def epoch(carry, key):
            perm = jax.random.permutation(key, p.num_envs)
            mbs = jax.tree.map(lambda x: x[perm].reshape((p.minibatches, mb_size) + x.shape[1:]), per_game)
            return jax.lax.scan(minibatch_update, carry, mbs)

        (params, opt), metrics = jax.lax.scan(epoch, (params, state["opt"]), jax.random.split(k_epochs, p.epochs))
        metrics = jax.tree.map(jnp.mean, metrics)
        metrics["charts/ent_coef"] = jnp.asarray(ent_coef, jnp.float32)
        live = traj.live.astype(jnp.float32)
        resid = jnp.sum(live * (target - traj.value) ** 2) / live.sum()
        tmean = jnp.sum(live * target) / live.sum()
        tvar = jnp.sum(live * (target - tmean) ** 2) / live.sum()
        metrics["losses/explained_variance"] = 1 - resid / jnp.maximum(tvar, 1e-8)
        result = traj.reward.sum(0)
        metrics["charts/episodic_return"] = result.mean()
        metrics["charts/win_rate"] = (result > 0).mean()
        metrics["charts/loss_rate"] = (result < 0).mean()
        metrics["charts/agent_steps"] = traj.live.sum().astype(jnp.float32)
        new = dict(state, params=params, opt=opt, key=jax.random.key_data(key), step=state["step"] + 1)
        if league:
            vs_past = (envs.opponent == len(names)).astype(jnp.float32)
            metrics["charts/return_vs_league"] = jnp.sum(result * vs_past) / jnp.maximum(vs_past.sum(), 1.0)
            # Every league_every iterations the agent as it now is replaces the oldest slot.
            slot = (new["step"] // p.league_every) % p.league_size
            snap = new["step"] % p.league_every == 0
            new["league"] = jax.tree.map(lambda kept, x: jnp.where(snap, kept.at[slot].set(x), kept),
                                         state["league"], params)
        return new, metrics

    @traced_at_most(1)  # a second trace would mean a silent recompile every chunk
    def one_chunk(state, ref):
        def one_seed(s, r):
            s, metrics = jax.lax.scan(lambda c, _: iteration(c, r), s, None, length=t.chunk)
            return s, jax.tree.map(jnp.mean, metrics)

        return jax.vmap(one_seed)(state, ref)

    # The seed axis of the state, the frozen reference and the metrics is split over the devices;
    # the evaluation follows its (so split) params.
    _chunk = jit_seeds(one_chunk, len(t.seeds))
    frozen = shard_seeds(ref_params, len(t.seeds)) if use_kl else None

    def chunk(state):
        return _chunk(state, frozen)

    def evaluate(state):
        return match_eval(state["params"])

    return Trainer(graphdef, init, chunk, evaluate, t.chunk)
