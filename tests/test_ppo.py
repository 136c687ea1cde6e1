"""PPO pieces on hand-computed numbers, and the whole trainer learning a one-move game."""

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import agentsim.envs as envs
from agentsim.envs.game import GameState, base3_code, returns_from_winner
from agentsim.envs.tokens import Layout
from agentsim.experiments.config import load_config, seed_keys
from agentsim.experiments.train.policy import NEG, policy_at
from agentsim.experiments.train.ppo import gae, make_ppo, ppo_loss

# ---------------------------------------------------------------------------------- GAE


def test_gae_hand_computed_with_done_in_the_middle():
    gamma, lam = 0.9, 0.8
    # [time, env]: env 0 ends its episode at t=1 (t=2 starts a new one), env 1 never ends.
    rewards = jnp.array([[1.0, 0.0], [2.0, 0.0], [3.0, 1.0]])
    values = jnp.array([[0.5, 0.2], [1.0, 0.4], [1.5, 0.6]])
    dones = jnp.array([[False, False], [True, False], [False, False]])
    last_value = jnp.array([2.0, 0.0])
    adv, target = gae(rewards, values, dones, last_value, gamma, lam)
    # env 0: t2: 3 + .9*2 - 1.5 = 3.3; t1 (done): 2 - 1 = 1 (nothing flows back across the
    # done); t0: delta = 1 + .9*1 - .5 = 1.4, adv = 1.4 + .72*1 = 2.12.
    # env 1: t2: 1 + 0 - .6 = .4; t1: .9*.6 - .4 = .14 + .72*.4 = .428;
    #        t0: .9*.4 - .2 = .16 + .72*.428 = .46816.
    expected = np.array([[2.12, 0.46816], [1.0, 0.428], [3.3, 0.4]])
    np.testing.assert_allclose(adv, expected, rtol=1e-6)
    np.testing.assert_allclose(target, expected + np.asarray(values), rtol=1e-6)


def test_gae_gamma_lambda_one_is_return_to_go():
    rewards = jnp.array([[0.0], [0.0], [1.0]])
    values = jnp.array([[0.3], [-0.2], [0.7]])
    adv, target = gae(rewards, values, jnp.array([[False], [False], [True]]), jnp.zeros(1), 1.0, 1.0)
    np.testing.assert_allclose(target[:, 0], [1.0, 1.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(adv[:, 0], [0.7, 1.2, 0.3], rtol=1e-6)


# ---------------------------------------------------------------------------------- loss

R2 = math.sqrt(2.0)


def _loss_example():
    """Four turns, three actions; the last turn is not live and holds absurd numbers."""
    logits = jnp.array([[0.0, 0.0, 0.0],  # uniform over 3
                        [0.0, 0.0, 0.0],
                        [0.0, 0.0, NEG],  # uniform over the 2 legal moves
                        [5.0, -3.0, 0.0]])
    logp_new = np.array([-math.log(3), -math.log(3), -math.log(2), 0.0])
    ratio = np.array([1.5, 0.5, 1.5, 100.0])
    batch = {
        "action": jnp.array([0, 1, 1, 0]),
        "logp": jnp.asarray(logp_new - np.log(ratio), jnp.float32),
        # live advantages [1, -1, -1] normalise to [√2, -1/√2, -1/√2]
        "adv": jnp.array([1.0, -1.0, -1.0, 1000.0]),
        "value": jnp.array([0.0, 0.0, 0.5, 50.0]),  # old values
        "target": jnp.array([1.0, 0.0, -1.0, -50.0]),
        "live": jnp.array([True, True, True, False]),
    }
    value = jnp.array([0.5, 0.1, -0.5, 0.0])  # new values
    return logits, value, batch


def test_ppo_loss_hand_computed():
    logits, value, batch = _loss_example()
    loss, m = ppo_loss(logits, value, batch, clip=0.2, vf_coef=0.5, ent_coef=0.01)
    # Policy: turn 0 (ratio 1.5, adv > 0) is clipped to 1.2; turn 1 (ratio 0.5, adv < 0) is
    # clipped to 0.8; turn 2 (ratio 1.5, adv < 0) keeps the unclipped, more pessimistic 1.5.
    pg = -(1.2 * R2 + 0.8 * (-1 / R2) + 1.5 * (-1 / R2)) / 3
    # Value (clip 0.2 around the old value): max of unclipped and clipped squared errors:
    # turn 0: max(.25, (0.2-1)²=.64); turn 1: max(.01, .01); turn 2: max(.25, (0.3+1)²=1.69).
    v_loss = 0.5 * (0.64 + 0.01 + 1.69) / 3
    entropy = (math.log(3) + math.log(3) + math.log(2)) / 3
    approx_kl = ((0.5 - math.log(1.5)) * 2 + (-0.5 - math.log(0.5))) / 3
    np.testing.assert_allclose(m["losses/policy_loss"], pg, rtol=1e-5)
    np.testing.assert_allclose(m["losses/value_loss"], v_loss, rtol=1e-5)
    np.testing.assert_allclose(m["losses/entropy"], entropy, rtol=1e-5)
    np.testing.assert_allclose(m["losses/approx_kl"], approx_kl, rtol=1e-5)
    np.testing.assert_allclose(m["losses/clipfrac"], 1.0)
    np.testing.assert_allclose(loss, pg + 0.5 * v_loss - 0.01 * entropy, rtol=1e-5)
    for v in m.values():
        assert np.isfinite(v)


def test_ppo_loss_gradients_follow_the_clipping():
    logits, value, batch = _loss_example()
    g_logits, g_value = jax.grad(
        lambda l, v: ppo_loss(l, v, batch, 0.2, 0.5, 0.0)[0], argnums=(0, 1))(logits, value)
    g_logits, g_value = np.asarray(g_logits), np.asarray(g_value)
    # Clipped turns and the dead turn get no policy gradient; the pessimistic turn does.
    np.testing.assert_array_equal(g_logits[[0, 1, 3]], 0.0)
    assert np.abs(g_logits[2, :2]).sum() > 1e-3
    # Value: on turns 0 and 2 the clipped error is the larger one and its clip is saturated,
    # so they get no gradient; turn 1 is inside the clip; the dead turn gets nothing.
    np.testing.assert_array_equal(g_value[[0, 2, 3]], 0.0)
    np.testing.assert_allclose(g_value[1], 0.5 * (0.1 - 0.0) / 3, rtol=1e-5)


def test_ppo_loss_on_policy_has_no_clipping_or_kl():
    logits, value, batch = _loss_example()
    on_policy = dict(batch, logp=jax.nn.log_softmax(logits)[jnp.arange(4), batch["action"]])
    _, m = ppo_loss(logits, value, on_policy, 0.2, 0.5, 0.01)
    np.testing.assert_allclose(m["losses/clipfrac"], 0.0)
    np.testing.assert_allclose(m["losses/approx_kl"], 0.0, atol=1e-7)
    # ratio 1: the policy loss is -mean(normalised advantage) = 0
    np.testing.assert_allclose(m["losses/policy_loss"], 0.0, atol=1e-6)


# ---------------------------------------------------------------------------------- learning


class PickGame:
    """One move: X wins by choosing TARGET among 4 actions and loses otherwise (test game)."""

    name = "pick4"
    num_actions = 4
    num_cells = 4
    max_moves = 1
    board_shape = (2, 2)
    TARGET = 2

    def __hash__(self):
        return hash(self.name)

    def __eq__(self, other):
        return type(other) is type(self)

    def init(self):
        return GameState(board=jnp.zeros(4, jnp.int8), player=jnp.int32(0), winner=jnp.int32(-1),
                         done=jnp.bool_(False), num_moves=jnp.int32(0), illegal=jnp.bool_(False))

    def legal_mask(self, state):
        return (state.board == 0) & ~state.done

    def is_terminal(self, state):
        return state.done

    def current_player(self, state):
        return state.player

    def returns(self, state):
        return returns_from_winner(state)

    def encode(self, state):
        return base3_code(state.board)

    def step(self, state, action):
        action = jnp.asarray(action, jnp.int32)
        legal = (action >= 0) & (action < 4) & ~state.done
        stone = (state.player + 1).astype(jnp.int8)
        board = jnp.where(legal, state.board.at[jnp.clip(action, 0, 3)].set(stone), state.board)
        winner = jnp.where(legal & (action == self.TARGET), state.player, 1 - state.player)
        moved = GameState(board, 1 - state.player, winner.astype(jnp.int32), jnp.bool_(True),
                          state.num_moves + legal.astype(jnp.int32), ~legal)
        return jax.tree.map(lambda old, new: jnp.where(state.done, old, new), state, moved)


PICK_OVERRIDES = ["data.game='pick4'", "data.mixture={random=1.0}", "train.regime='rl'",
                  "ppo.opponents={random=1.0}", "ppo.num_envs=64", "ppo.minibatches=2",
                  "ppo.epochs=4", "train.seeds=[0, 1]",
                  "ppo.o_fraction=0.5", "ppo.ent_coef=0.01", "ppo.ent_decay=false"]


@pytest.fixture(scope="module")
def pick_game():
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(envs.GAMES, "pick4", PickGame)
        yield PickGame()


@pytest.fixture(scope="module")
def pick_layout(pick_game):
    cfg = load_config("tiny", overrides=PICK_OVERRIDES)
    return Layout.for_config(cfg.data)


def _pick_trainer(layout, *overrides, init_from=None):
    """(config, trainer, initial seed-stacked state) of PPO on the pick game with `overrides`."""
    cfg = load_config("tiny", overrides=PICK_OVERRIDES + list(overrides))
    trainer = make_ppo(cfg, layout, init_from=init_from)
    return cfg, trainer, trainer.init(seed_keys(cfg))


def _kernel(params):
    """The first block's up-projection, seed-stacked: a cheap fingerprint of a network."""
    return np.asarray(params["trunk"]["blocks"][0]["up"]["kernel"].value)


def _target_prob(trainer, params, layout):
    """Seed-stacked P(TARGET) of the policy at the opening (the agent as X)."""
    tokens = jnp.full((1, layout.seq_len), layout.pad, jnp.int32).at[:, 0].set(layout.bos)
    legal = jnp.ones((1, 1, layout.num_actions), bool)

    def one(p):
        logits, _ = policy_at(trainer.graphdef, p, tokens, jnp.zeros((1, 1), jnp.int32), legal,
                              layout.num_actions)
        return jax.nn.softmax(logits[0, 0])[PickGame.TARGET]

    return np.asarray(jax.vmap(one)(params))


@pytest.fixture(scope="module")
def pick_start(pick_game, pick_layout):
    """(config, trainer, initial seed-stacked state) of PPO on the pick game."""
    return _pick_trainer(pick_layout, "train.steps=30", "train.chunk=10")


@pytest.mark.slow
def test_ppo_learns_the_winning_move_with_vmapped_seeds(pick_start, pick_layout):
    cfg, trainer, state = pick_start
    kernel = _kernel(state["params"])
    assert not np.allclose(kernel[0], kernel[1]), "vmapped seeds must start from different nets"
    p0 = _target_prob(trainer, state["params"], pick_layout)
    assert np.all(p0 < 0.8) and not np.allclose(p0[0], p0[1])
    history = []
    for _ in range(cfg.train.steps // cfg.train.chunk):
        state, metrics = trainer.chunk(state)
        history.append({k: np.asarray(v) for k, v in metrics.items()})
    assert np.all(np.asarray(state["step"]) == cfg.train.steps)
    for k, v in history[-1].items():
        assert v.shape == (2,) and np.all(np.isfinite(v)), k
    assert "losses/kl_to_pretrained" not in history[-1]
    p1 = _target_prob(trainer, state["params"], pick_layout)
    assert np.all(p1 > 0.9), p1
    evals = {k: np.asarray(v) for k, v in trainer.evaluate(state).items()}
    # As X the agent moves and the game ends: greedy play must always pick the winning move.
    assert np.all(evals["eval/win_vs_random_as_x"] >= 0.95), evals["eval/win_vs_random_as_x"]
    assert np.all(evals["eval/win_vs_perfect_as_x"] >= 0.95)
    # The rollout's entropy falls as the policy commits.
    assert np.all(history[-1]["losses/entropy"] < history[0]["losses/entropy"])


@pytest.mark.slow
def test_kl_to_pretrained_starts_at_zero_and_grows(pick_start, pick_layout):
    _, _, start = pick_start
    # One epoch of one minibatch: the first update's loss is computed at the reference params.
    _, trainer, state = _pick_trainer(pick_layout, "ppo.kl_coef=0.5", "ppo.epochs=1", "ppo.minibatches=1",
                                      "train.steps=20", "train.chunk=1", "ppo.lr=3e-3", init_from=start["params"])
    kls = []
    for _ in range(5):
        state, metrics = trainer.chunk(state)
        kls.append(np.asarray(metrics["losses/kl_to_pretrained"]))
    assert kls[0].shape == (2,)
    np.testing.assert_allclose(kls[0], 0.0, atol=1e-6)
    assert np.all(kls[-1] > 1e-6), kls  # the policy has moved away from the reference


# ---------------------------------------------------------------------------------- options


def _moved(start, now, part: str) -> float:
    """How far one part of the params (trunk, heads, critic, value) moved: the largest absolute
    change over seeds and parameters."""
    return max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
               for a, b in zip(jax.tree.leaves(now[part]), jax.tree.leaves(start[part])))


@pytest.mark.slow  # two PPO compiles
def test_critic_lr_scale_moves_only_the_critic(pick_game, pick_layout):
    def moved(scale):
        _, trainer, state = _pick_trainer(pick_layout, f"ppo.critic_lr_scale={scale}", "train.steps=2",
                                          "train.chunk=1")
        new, _ = trainer.chunk(state)
        return {k: _moved(state["params"], new["params"], k) for k in ("trunk", "heads", "critic", "value")}

    frozen, faster, same = moved(0.0), moved(4.0), moved(1.0)
    assert frozen["critic"] == 0.0 and frozen["value"] == 0.0  # rate 0: the critic stays where it started
    assert frozen["trunk"] > 0 and frozen["heads"] > 0
    # Adam's first steps are lr-sized per parameter, so 4× the rate moves the critic about 4× as far
    # and the policy's parameters as far as at the common rate.
    assert 3.0 < faster["value"] / same["value"] < 5.0, (faster, same)
    np.testing.assert_allclose(faster["trunk"], same["trunk"], rtol=1e-3)


def test_the_optimizer_holds_the_policy_through_the_warmup_then_anneals_it_over_the_rest():
    """Constant gradients, so each Adam update is its learning rate in size: 2 iterations × 4
    updates with 1 of warm-up hold the policy for 4 updates, then anneal its rate from ppo.lr to 0
    over the other 4; the critic anneals over all 8. At warm-up 0 it is one Adam on everything."""
    from agentsim.experiments.train.ppo import optimizer

    params = {"trunk": jnp.zeros(3), "heads": jnp.zeros(2), "critic": jnp.zeros(3), "value": jnp.zeros(1)}
    grads = jax.tree.map(jnp.ones_like, params)  # clipped to norm 0.5: ~0.17 each, far above Adam's eps

    def steps(*overrides):
        cfg = load_config("tiny", overrides=["ppo.epochs=1", "ppo.minibatches=4", "train.steps=2", "ppo.lr=0.01",
                                             *overrides])
        tx = optimizer(cfg.ppo, cfg.train.steps)
        update = jax.jit(tx.update)  # one compile instead of eight op-by-op passes
        state, sizes = tx.init(params), []
        for _ in range(8):
            updates, state = update(grads, state, params)
            sizes.append({k: float(np.abs(np.asarray(u)).max()) for k, u in updates.items()})
        return sizes

    warm, plain = steps("ppo.critic_warmup=1"), steps()
    policy = [0, 0, 0, 0, 0.01, 0.0075, 0.005, 0.0025]
    critic = [0.01 * (1 - k / 8) for k in range(8)]
    for k in range(8):
        np.testing.assert_allclose([warm[k]["trunk"], warm[k]["heads"]], policy[k], atol=1e-5)
        np.testing.assert_allclose([warm[k]["critic"], warm[k]["value"], plain[k]["trunk"], plain[k]["critic"]],
                                   critic[k], atol=1e-5)


@pytest.mark.slow  # a PPO compile
def test_critic_warmup_holds_the_policy_then_starts_it_afresh(pick_game, pick_layout):
    cfg, trainer, state = _pick_trainer(pick_layout, "ppo.critic_warmup=1", "train.steps=2", "train.chunk=1",
                                        "ppo.ent_decay=true")
    start = state["params"]
    moved = partial(_moved, start)

    def policy_adam(state):  # the policy's Adam inside its mask: (counts of Adam and schedule, moments)
        inner = state["opt"][1].inner_states["policy"].inner_state.inner_state
        counts = [np.asarray(c) for _, c in optax.tree_utils.tree_get_all_with_path(inner, "count")]
        return counts, jax.tree.leaves(optax.tree_utils.tree_get(inner, "mu"))

    held, _ = trainer.chunk(state)  # iteration 1: the critic alone learns
    assert moved(held["params"], "trunk") == 0.0 and moved(held["params"], "heads") == 0.0
    assert moved(held["params"], "critic") > 0 and moved(held["params"], "value") > 0
    # The policy's Adam is untouched while held, so its bias correction and its rate's schedule
    # start at its first real update (a count left running would distort it: here ~2× smaller).
    counts, mu = policy_adam(held)
    assert len(counts) == 2 and all(np.all(c == 0) for c in counts), counts
    assert all(np.all(np.asarray(m) == 0) for m in mu)
    after, m2 = trainer.chunk(held)
    assert moved(after["params"], "trunk") > 0 and moved(after["params"], "heads") > 0
    # The entropy bonus decays over the policy's own iterations too: its first one has it whole.
    np.testing.assert_allclose(np.asarray(m2["charts/ent_coef"]), cfg.ppo.ent_coef, rtol=1e-6)
    counts, _ = policy_adam(after)
    assert all(np.all(c == cfg.ppo.epochs * cfg.ppo.minibatches) for c in counts), counts


@pytest.mark.slow  # a PPO compile: ~15 s
def test_the_league_keeps_the_agents_past_selves_and_plays_them(pick_game, pick_layout):
    _, trainer, state = _pick_trainer(pick_layout, "ppo.league=1.0", "ppo.league_size=2", "ppo.league_every=2",
                                      "train.steps=6", "train.chunk=1")
    start = _kernel(state["params"])
    np.testing.assert_array_equal(_kernel(state["league"])[:, 0], start)  # every slot starts as the agent
    np.testing.assert_array_equal(_kernel(state["league"])[:, 1], start)
    params_at = {0: start}
    for step in range(1, 7):
        state, metrics = trainer.chunk(state)
        params_at[step] = _kernel(state["params"])
        assert np.all(np.isfinite(np.asarray(metrics["charts/return_vs_league"])))
    # A snapshot every 2 iterations into 2 slots: step 2's agent into slot 1, step 4's into slot 0
    # (replacing the start), step 6's into slot 1.
    league = _kernel(state["league"])
    np.testing.assert_array_equal(league[:, 0], params_at[4])
    np.testing.assert_array_equal(league[:, 1], params_at[6])
    assert not np.allclose(params_at[4], params_at[6])


def test_o_fraction_sets_the_share_of_games_played_as_o():
    from agentsim.envs.personas import make_persona
    from agentsim.experiments.train import arena as A

    game = envs.make_game("tictactoe")
    arena = A.Arena(game, Layout.for_config(load_config("tiny").data), (make_persona("random", game),))
    keys = jax.random.split(jax.random.key(0), 2000)
    sides = {}
    for prob in (None, 0.5, 0.0, 1.0, 0.75):
        kw = {} if prob is None else {"o_prob": prob}
        draw = jax.jit(jax.vmap(lambda k: A.reset(arena, k, jnp.zeros(1), **kw).agent_side))
        sides[prob] = np.asarray(draw(keys))
    np.testing.assert_array_equal(sides[None], sides[0.5])  # the default draws exactly as before
    assert np.all(sides[0.0] == 0) and np.all(sides[1.0] == 1)
    assert abs(sides[0.75].mean() - 0.75) < 0.03


@pytest.mark.slow  # a PPO compile: ~15 s
def test_ent_decay_anneals_the_entropy_bonus_to_zero(pick_game, pick_layout):
    _, trainer, state = _pick_trainer(pick_layout, "train.steps=4", "train.chunk=1", "ppo.ent_coef=0.1",
                                      "ppo.ent_decay=true", "ppo.epochs=1")
    coefs = []
    for _ in range(4):
        state, metrics = trainer.chunk(state)
        coefs.append(np.asarray(metrics["charts/ent_coef"]))
    # Iteration i (0-based) of 4 uses 0.1 × (1 - i/4), on every seed.
    np.testing.assert_allclose(np.stack(coefs).reshape(4, -1), np.repeat([[0.1], [0.075], [0.05], [0.025]], 2, 1),
                               rtol=1e-6)
