"""`agentsim bench`: the ratios that matter on this machine, measured side by side in one run.

- rollout speed-up: agent env-steps/s of the jitted ``arena.play_games`` rollout (transformer
  policy over its key/value cache, one seed) ÷ the same network acting in
  ``gymnasium.make("agentsim/TicTacToe-v0")`` through a plain Python loop (a jitted forward
  over the token history per step, legal moves from ``info["action_mask"]``);
- rollout MFU: the policy's model FLOPs per agent step (see ``rollout_flops``) × agent steps/s
  ÷ the measured fp32 matmul peak, per model size;
- cost versus game length: time per agent step of a synthetic 42-move game ÷ a 9-move one,
  through the same ``Policy`` interface, cached and full recompute, per model size (what the
  key/value cache is for: its cost per step should not grow with the game);
- next-token training MFU (real tokens only, see ``next_token_flops``) per model size, with
  where the step's time goes (forward, backward, optimizer timed separately);
- PPO iterations/s at the quick settings, cached rollout and full-recompute rollout.

Every number is measured after compilation; cases that are compared are timed in interleaved
rounds and the best round kept (a shared machine's load drifts over minutes): compare the
ratios, not the absolutes. ``run_bench`` computes; ``experiments.cli`` prints the table.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

# ---------------------------------------------------------------------------------- sizes and results


@dataclass(frozen=True)
class BenchSizes:
    """How large each measurement is (``FULL`` for ``agentsim bench``, ``QUICK`` for --quick)."""

    models: tuple[tuple[int, int], ...] = ((2, 64), (4, 128))
    """(layers, d_model) of each measured network; the first is the rollout and length model."""
    batch: int = 256
    """Games per jitted rollout."""
    gym_steps: int = 300
    """Agent steps of the gymnasium Python loop (whole episodes, at least this many)."""
    short_moves: int = 9
    """Moves of the short synthetic game (tic-tac-toe's length)."""
    long_moves: int = 42
    """Moves of the long synthetic game (connect-four's length)."""
    nt_batch: int = 128
    """Games per next-token training step."""
    nt_steps: int = 20
    """Training steps per timed next-token call."""
    ppo_seeds: int = 3
    """Seeds vmapped in the PPO timing."""
    ppo_iterations: int = 5
    """PPO iterations per timed call."""
    ppo_overrides: tuple[str, ...] = ()
    """Overrides over the preset's config for PPO (tests shrink it)."""
    nt_games: int = 4096
    """Games generated for the next-token timing."""
    reps: int = 3
    """Timed rounds per measurement (the best is kept)."""


FULL = BenchSizes()
QUICK = BenchSizes(models=((2, 64),), batch=128, gym_steps=100, nt_steps=10, ppo_seeds=1, ppo_iterations=3, reps=2)


@dataclass(frozen=True)
class Row:
    """One line of the bench table."""

    key: str  # JSON key
    label: str  # what it is, for the table
    value: float
    unit: str  # "x", "%", "/s", "GFLOP/s", ...
    goal: str = ""  # e.g. ">= 100"
    detail: str = ""  # the numbers it is made of

    @property
    def met(self) -> bool | None:
        if not self.goal:
            return None
        op, target = self.goal.split()
        return self.value >= float(target) if op == ">=" else self.value <= float(target)


@dataclass(frozen=True)
class BenchResult:
    rows: tuple[Row, ...]
    raw: dict  # every measured number, JSON-able
    context: dict  # machine, load, versions, sizes

    def to_json(self) -> dict:
        return {"rows": [dict(dataclasses.asdict(r), met=r.met) for r in self.rows],
                "raw": self.raw, "context": self.context}

    def table(self) -> str:
        def fmt(r: Row) -> str:
            if r.unit == "%":
                return f"{100 * r.value:.1f} %"
            if r.unit == "x":
                return f"{r.value:.2f}x" if r.value < 10 else f"{r.value:,.0f}x"
            return f"{r.value:,.4g} {r.unit}"

        width = max(len(r.label) for r in self.rows)
        lines = [f"{'measure':{width}s}  {'value':>14s}  {'goal':8s}  detail"]
        for r in self.rows:
            mark = {True: "met; ", False: "NOT met; ", None: ""}[r.met]
            lines.append(f"{r.label:{width}s}  {fmt(r):>14s}  {_goal_text(r):8s}  {mark}{r.detail}".rstrip())
        return "\n".join(lines)


def _goal_text(r: Row) -> str:
    if not r.goal:
        return ""
    op, target = r.goal.split()
    op = {">=": "≥", "<=": "≤"}[op]
    return f"{op} {100 * float(target):.0f} %" if r.unit == "%" else f"{op} {float(target):g}{r.unit}"


# ---------------------------------------------------------------------------------- timing


def _best_times(fns: dict, reps: int) -> dict[str, float]:
    """{name: best wall time of fn()} over ``reps`` interleaved rounds, after one warm-up call
    each (the compile): the cases compared see the same load."""
    for fn in fns.values():
        jax.block_until_ready(fn())
    times = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            t = time.perf_counter()
            jax.block_until_ready(fn())
            times[k].append(time.perf_counter() - t)
    return {k: min(v) for k, v in times.items()}


def matmul_peak(n: int = 2048, reps: int = 5) -> float:
    """Measured fp32 GFLOP/s of a jitted n × n matmul."""
    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    return 2 * n**3 / _best_times({"mm": lambda: f(a)}, reps)["mm"] / 1e9


PEAK_SIZES = (512, 1024, 2048)


def matmul_peaks(sizes=PEAK_SIZES, reps: int = 5) -> dict[int, float]:
    """{n: GFLOP/s} of ``matmul_peak`` over a few sizes: on a loaded machine a 2048² matmul (the
    usual peak) can run at a third of a 512² one, so the MFU denominator takes the best."""
    return {n: matmul_peak(n, max(reps, 3)) for n in sizes}


# ---------------------------------------------------------------------------------- FLOP counts


def _xla_flops(lowered) -> float:
    """XLA's own FLOP count of a lowered program without loops (every position, every op; XLA
    counts a loop's body once, whatever its trip count)."""
    cost = lowered.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost.get("flops", float("nan")))



def block_flops(d: int, mlp_ratio: int, context) -> float:
    """Forward FLOPs of one transformer block for one token attending to ``context`` positions:
    q/k/v/out projections 8d², MLP 4·d·f, attention scores and mixing 4·d·context (2 per MAC).
    Layer norms, softmax and biases are not counted."""
    return 8 * d * d + 4 * d * mlp_ratio * d + 4 * d * np.asarray(context, np.float64)


def rollout_flops(cfg, vocab: int, position_KxG: np.ndarray, live_KxG: np.ndarray) -> float:
    """Model FLOPs a cached policy must spend on a batch of games: every token up to a game's
    last decision once through the policy trunk and (``value_head='critic'``) the critic trunk,
    each attending to the positions before it, plus the policy head (one next-move head, full
    vocabulary) and the value head at every decision. Not counted: what the fixed shapes run
    beyond that (the masked rest of the cache, the heads at the reply token, finished games,
    the 2nd…k-th multi-token heads)."""
    d = cfg.d_model
    last = np.where(live_KxG, position_KxG, -1).max(0)  # [G]: position of each game's last decision
    n = last + 1  # tokens each game's decisions needed
    ctx_sum = n * (n + 1) / 2  # sum over positions p < n of (p + 1)
    per_layer = n * block_flops(d, cfg.mlp_ratio, 0) + 4 * d * ctx_sum
    layers = cfg.num_layers + (cfg.critic_layers if cfg.value_head == "critic" else 0)
    decisions = live_KxG.sum()
    return float(layers * per_layer.sum() + decisions * (2 * d * vocab + 2 * d))


def next_token_flops(cfg, vocab: int, positions_R: np.ndarray) -> float:
    """Training FLOPs (forward + backward = 3 × forward) over the real tokens, i.e. the positions
    ``positions_R`` that have a target: each through the policy trunk attending to its causal
    context (p + 1) and the next-token head(s) over the whole vocabulary. The separate critic is
    not counted (the loss does not read it, so XLA drops it); positions without a target are not
    counted though the fixed shapes run them."""
    d, ctx = cfg.d_model, np.asarray(positions_R, np.float64) + 1
    fwd = cfg.num_layers * block_flops(d, cfg.mlp_ratio, ctx).sum() + len(ctx) * cfg.mtp_heads * 2 * d * vocab
    return float(3 * fwd)


# ---------------------------------------------------------------------------------- measurements


def _net(layers: int, d: int, vocab: int, seq_len: int, seed: int = 0):
    from agentsim.models.transformer import ModelConfig, init_params

    cfg = ModelConfig(num_layers=layers, d_model=d, num_heads=4)
    graphdef, params = init_params(cfg, vocab, seq_len, jax.random.split(jax.random.key(seed), 1))
    return cfg, graphdef, jax.tree.map(lambda x: x[0], params)


def _tictactoe():
    from agentsim.envs import make_game
    from agentsim.envs.dataset import DataConfig
    from agentsim.envs.tokens import Layout

    return make_game("tictactoe"), Layout.for_config(DataConfig())


def make_rollout(layers: int, d: int, batch: int, cache: bool = True, opponents=("random",)):
    """(cfg, jitted rollout(key) -> (position [K, G], live [K, G]), graphdef, params): PPO's
    rollout (``arena.play_games``) of a fresh network against ``opponents``."""
    from agentsim.envs.personas import make_persona
    from agentsim.experiments.train import arena as A
    from agentsim.experiments.train.policy import make_policy

    game, layout = _tictactoe()
    arena = A.Arena(game, layout, tuple(make_persona(n, game) for n in opponents))
    cfg, graphdef, params = _net(layers, d, layout.vocab_size, layout.seq_len)

    def rollout(params, key):
        k_reset, k_play = jax.random.split(key)
        _, traj = A.play_games(arena, make_policy(graphdef, params, game.num_actions, cache=cache),
                               k_reset, k_play, batch, jnp.zeros(len(opponents)))
        return traj.position, traj.live

    return cfg, partial(jax.jit(rollout), params), graphdef, params


def gym_loop(graphdef, params, steps: int, reps: int = 1, seed: int = 0) -> tuple[int, float]:
    """(agent steps played, best agent steps/s over ``reps`` blocks of at least ``steps``): the
    network playing ``agentsim/TicTacToe-v0`` against random as a gymnasium user would: reset
    and step in Python, the token history built from the moves (the opponent's reply read off
    the board), one jitted forward over the history per decision, a move sampled from the
    softmax over ``info["action_mask"]``. Sides alternate by episode; the first episode of each
    side (compilation) is not timed."""
    import gymnasium

    import agentsim.envs.gym_env  # noqa: F401  (registers the envs)
    from agentsim.models.transformer import apply

    _, layout = _tictactoe()
    fwd = jax.jit(lambda p, t: apply(graphdef, p, t).logits_KxBxTxV[0, 0])
    rng = np.random.default_rng(seed)
    envs = [gymnasium.make("agentsim/TicTacToe-v0", agent_side=s) for s in ("x", "o")]

    def episode(env, ep_seed: int) -> int:
        obs, info = env.reset(seed=ep_seed)
        tokens = np.full((1, layout.seq_len), layout.pad, np.int32)
        tokens[0, 0] = layout.bos
        n = layout.prefix_len
        for cell in np.flatnonzero(obs == -1):  # the opponent's opening move (agent as O)
            tokens[0, n], n = cell, n + 1
        done, steps = False, 0
        while not done:
            logits = np.asarray(fwd(params, tokens))[n - 1, :layout.num_actions]
            z = np.where(info["action_mask"] > 0, logits, -np.inf)
            p = np.exp(z - z.max())
            action = int(rng.choice(len(p), p=p / p.sum()))
            before = obs
            obs, _, terminated, truncated, info = env.step(action)
            tokens[0, n], n = action, n + 1
            reply = np.flatnonzero((obs == -1) & (before != -1))
            if len(reply):
                tokens[0, n], n = reply[0], n + 1
            done, steps = terminated or truncated, steps + 1
        return steps

    for i, env in enumerate(envs):
        episode(env, i)  # compile
    best, total, ep = 0.0, 0, 0
    for _ in range(reps):  # the best of ``reps`` blocks, as the jitted rollout's best round
        block = 0
        t = time.perf_counter()
        while block < steps:
            block += episode(envs[ep % 2], 100 + ep)
            ep += 1
        best, total = max(best, block / (time.perf_counter() - t)), total + block
    return total, best


def make_synthetic(layers: int, d: int, moves: int, batch: int, cache: bool, num_actions: int = 7):
    """A jitted synthetic game of exactly ``moves`` moves through the ``Policy`` interface: each
    agent step samples a move from the policy head and appends it and a random reply (2 tokens),
    as a turn of the arena does. Returns (run(key), agent steps per game)."""
    from agentsim.experiments.train.policy import make_policy

    vocab, seq_len = num_actions + 2, moves + 1  # moves, BOS, PAD
    _, graphdef, params = _net(layers, d, vocab, seq_len)
    turns = (moves + 1) // 2
    rows = jnp.arange(batch)

    @jax.jit
    def run(params, key):
        policy = make_policy(graphdef, params, num_actions, cache=cache)
        tokens = jnp.full((batch, seq_len), num_actions + 1, jnp.int32).at[:, 0].set(num_actions)
        state, logits, value = policy.start(tokens[:, :1], jnp.ones(batch, jnp.int32))

        def act(tokens, length, logits, key):
            k_act, k_reply = jax.random.split(key)
            action = jax.random.categorical(k_act, logits)
            reply = jax.random.randint(k_reply, (batch,), 0, num_actions)
            tokens = tokens.at[rows, length].set(action, mode="drop").at[rows, length + 1].set(reply, mode="drop")
            return tokens, jnp.minimum(length + 2, seq_len)

        def turn(carry, key):
            tokens, length, state, logits, total = carry
            tokens, length = act(tokens, length, logits, key)
            state, logits, value = policy.advance(state, tokens, length)
            return (tokens, length, state, logits, total + value.sum()), None

        keys = jax.random.split(key, turns)  # the last turn reads nothing after it, as in play_games
        carry = (tokens, jnp.ones(batch, jnp.int32), state, logits, value.sum())
        (tokens, length, _, logits, total), _ = jax.lax.scan(turn, carry, keys[:-1])
        return act(tokens, length, logits, keys[-1])[0], total

    return (lambda key: run(params, key)), turns


def _next_token_parts(layers: int, d: int, sizes: BenchSizes, preset: str):
    """({phase: fn()}, {phase: XLA's FLOPs per call}, real tokens per call, model FLOPs per call)
    for one seed of next-token training on the preset's games: 'forward' (the loss),
    'forward+backward' (loss and gradients) and 'step' (the trainer's own chunk: gradients and
    the AdamW update), each ``nt_steps`` batches per call."""
    from agentsim.envs.dataset import generate, split_by_game
    from agentsim.experiments.config import load_config, seed_keys
    from agentsim.experiments.train.next_token import lm_loss, make_next_token, target_mask

    cfg = load_config(preset, overrides=[
        f"model.num_layers={layers}", f"model.d_model={d}", "model.num_heads=4", "train.seeds=[0]",
        f"train.chunk={sizes.nt_steps}", f"train.batch_size={sizes.nt_batch}", f"data.num_games={sizes.nt_games}"])
    data = generate(cfg.data)
    tr, va = split_by_game(len(data), (0.9, 0.1), 0)
    trainer = make_next_token(cfg, data.layout, data.subset(tr), data.subset(va))
    state = trainer.init(seed_keys(cfg))
    layout, heads = data.layout, cfg.model.mtp_heads
    tokens = jnp.asarray(data.subset(tr)["tokens"])
    params = jax.tree.map(lambda x: x[0], state["params"])

    def loss(params, batch):
        return lm_loss(trainer.graphdef, params, layout, batch, heads)[0]

    def batches(key):
        return tokens[jax.random.randint(key, (sizes.nt_steps, sizes.nt_batch), 0, tokens.shape[0])]

    def forward(params, key):
        return jax.lax.scan(lambda total, b: (total + loss(params, b), None), 0.0, batches(key))[0]

    def forward_backward(params, key):  # gradients summed in the carry, as cheap as it gets
        def one(acc, b):
            value, grads = jax.value_and_grad(loss)(params, b)
            return jax.tree.map(jnp.add, acc, (value, grads)), None
        return jax.lax.scan(one, jax.tree.map(jnp.zeros_like, (jnp.float32(0), params)), batches(key))[0]

    key = jax.random.key(1)
    fns = {"forward": partial(jax.jit(forward), params, key),
           "forward+backward": partial(jax.jit(forward_backward), params, key),
           "step": partial(trainer.chunk, state)}
    batch = batches(key)[0]  # XLA's count of one batch (no loop), times the batches per call
    xla = {"forward": sizes.nt_steps * _xla_flops(jax.jit(loss).lower(params, batch)),
           "forward+backward": sizes.nt_steps * _xla_flops(jax.jit(jax.value_and_grad(loss)).lower(params, batch))}
    # Real tokens: the positions with a next-token target, over the whole training set (batches
    # are drawn uniformly from it).
    mask = np.asarray(target_mask(layout, tokens, 0))
    positions = np.nonzero(mask)[1]
    per_call = sizes.nt_steps * sizes.nt_batch / len(mask)
    real_tokens = mask.sum() * per_call
    flops = next_token_flops(cfg.model, layout.vocab_size, positions) * per_call
    return fns, xla, float(real_tokens), float(flops)


def _ppo_iterations(sizes: BenchSizes, preset: str) -> dict[str, float]:
    """PPO iterations/s (seeds vmapped) with the cached and the full-recompute rollout."""
    from agentsim.envs.tokens import Layout
    from agentsim.experiments.config import load_config, seed_keys
    from agentsim.experiments.train.ppo import make_ppo

    cfg = load_config(preset, overrides=["train.regime='rl'", f"train.seeds={list(range(sizes.ppo_seeds))}",
                                         f"train.chunk={sizes.ppo_iterations}", *sizes.ppo_overrides])
    layout = Layout.for_config(cfg.data)
    fns = {}
    for name, cache in (("cached", True), ("full", False)):
        trainer = make_ppo(cfg, layout, cache=cache)
        state = trainer.init(seed_keys(cfg))
        fns[name] = partial(trainer.chunk, state)
    t = _best_times(fns, sizes.reps)
    return {f"ppo_iterations_per_s_{k}": sizes.ppo_iterations / v for k, v in t.items()}


def _rollout_rows(sizes: BenchSizes, peak: Callable[[], float], raw: dict) -> list[Row]:
    """The jitted rollout (cached and full recompute) vs the gymnasium loop, and its MFU."""
    _, layout = _tictactoe()
    key = jax.random.key(0)
    (layers, d), rows = sizes.models[0], []
    for i, (layers_i, d_i) in enumerate(sizes.models):
        cfg, roll, graphdef, params = make_rollout(layers_i, d_i, sizes.batch)
        fns = {"cached": partial(roll, key)}
        if i == 0:
            fns["full"] = partial(make_rollout(layers_i, d_i, sizes.batch, cache=False)[1], key)
        t = _best_times(fns, sizes.reps)
        position, live = (np.asarray(x) for x in roll(key))
        steps = float(live.sum())
        flops = rollout_flops(cfg, layout.vocab_size, position, live)
        raw[f"rollout_{layers_i}L_d{d_i}"] = {f"agent_steps_per_s_{k}": steps / v for k, v in t.items()} | {
            "agent_steps": steps, "flops_per_agent_step": flops / steps}
        if i == 0:
            gym_steps, gym_rate = gym_loop(graphdef, params, sizes.gym_steps, sizes.reps)
            raw["gym_loop"] = {"agent_steps_per_s": gym_rate, "agent_steps": gym_steps}
    first = raw[f"rollout_{layers}L_d{d}"]
    jitted, full = first["agent_steps_per_s_cached"], first["agent_steps_per_s_full"]
    gym = raw["gym_loop"]["agent_steps_per_s"]
    rows.append(Row("rollout_speedup_vs_gym", f"rollout speed-up vs gymnasium loop ({layers}L d{d})", jitted / gym, "x",
                    ">= 100", f"jitted play_games B={sizes.batch} {jitted:,.0f} vs gym loop {gym:,.0f} agent steps/s"))
    rows.append(Row("rollout_speedup_from_cache", f"rollout speed-up from the cache ({layers}L d{d})", jitted / full,
                    "x", detail=f"{jitted:,.0f} vs {full:,.0f} agent steps/s (full recompute)"))
    p = peak()
    for layers_i, d_i in sizes.models:
        r = raw[f"rollout_{layers_i}L_d{d_i}"]
        r["mfu"] = r["flops_per_agent_step"] * r["agent_steps_per_s_cached"] / (p * 1e9)
        rows.append(Row(f"rollout_mfu_{layers_i}L_d{d_i}", f"rollout MFU {layers_i}L d{d_i} (cached, B={sizes.batch})",
                        r["mfu"], "%", ">= 0.25", f"{r['agent_steps_per_s_cached']:,.0f} agent steps/s × "
                        f"{r['flops_per_agent_step'] / 1e6:.2f} model MFLOP/step"))
    return rows


def _length_rows(sizes: BenchSizes, raw: dict) -> list[Row]:
    """Per model size, time per agent step of a long synthetic game ÷ a short one, cached and
    full recompute, with each game's agent steps/s."""
    key, rows = jax.random.key(0), []
    for layers, d in sizes.models:
        fns, turns = {}, {}
        for cache in (True, False):
            for moves in (sizes.short_moves, sizes.long_moves):
                run, turns[cache, moves] = make_synthetic(layers, d, moves, sizes.batch, cache)
                fns[cache, moves] = partial(run, key)
        t = _best_times(fns, sizes.reps)
        per_step = {k: t[k] / turns[k] for k in t}
        raw[f"game_length_{layers}L_d{d}"] = {
            f"{'cached' if c else 'full'}_{m}_moves": {"us_per_agent_step_of_batch": 1e6 * v,
                                                       "agent_steps_per_s": sizes.batch / v}
            for (c, m), v in per_step.items()}
        for cache, label in ((True, "cached"), (False, "full recompute")):
            long, short = per_step[cache, sizes.long_moves], per_step[cache, sizes.short_moves]
            rows.append(Row(f"length_cost_ratio_{'cached' if cache else 'full'}_{layers}L_d{d}",
                            f"cost/agent step, {sizes.long_moves} vs {sizes.short_moves} moves, {label} ({layers}L d{d})",
                            long / short, "x", "<= 1.5" if cache else "",
                            f"{1e6 * long:,.0f} vs {1e6 * short:,.0f} µs per step of B={sizes.batch}"))
    return rows


def _next_token_rows(sizes: BenchSizes, preset: str, peak: Callable[[], float], raw: dict) -> list[Row]:
    """Next-token training MFU over real tokens per model size, and where a step's time goes:
    forward, backward and optimizer timed separately, each with its FLOP rate by XLA's count."""
    rows = []
    for layers, d in sizes.models:
        fns, xla, real_tokens, flops = _next_token_parts(layers, d, sizes, preset)
        t = _best_times(fns, sizes.reps)
        step, fwd, fb = t["step"], t["forward"], t["forward+backward"]
        share = {"forward": fwd / step, "backward": (fb - fwd) / step, "optimizer_and_rest": (step - fb) / step}
        gflops = {"forward": xla["forward"] / fwd / 1e9,
                  "backward": (xla["forward+backward"] - xla["forward"]) / max(fb - fwd, 1e-9) / 1e9}
        mfu = flops / step / (peak() * 1e9)
        raw[f"next_token_{layers}L_d{d}"] = {
            "real_tokens_per_s": real_tokens / step, "mfu": mfu, "seconds_per_call": t,
            "real_tokens_per_call": real_tokens, "model_flops_per_call": flops, "xla_flops_per_call": xla,
            "share": share, "xla_gflops_per_s": gflops}
        rows.append(Row(f"next_token_mfu_{layers}L_d{d}", f"next-token training MFU {layers}L d{d}", mfu, "%",
                        ">= 0.45" if (layers, d) == (4, 128) else "",
                        f"{real_tokens / step:,.0f} real tokens/s; step time: forward {100 * share['forward']:.0f} % "
                        f"({gflops['forward']:,.0f} GFLOP/s), backward {100 * share['backward']:.0f} % "
                        f"({gflops['backward']:,.0f} GFLOP/s, {xla['forward+backward'] / xla['forward'] - 1:.1f}× the "
                        f"forward's FLOPs), optimizer+rest {100 * share['optimizer_and_rest']:.0f} %"))
    return rows


def _ppo_rows(sizes: BenchSizes, preset: str, raw: dict) -> list[Row]:
    raw.update(_ppo_iterations(sizes, preset))
    c, f = raw["ppo_iterations_per_s_cached"], raw["ppo_iterations_per_s_full"]
    what = f"{sizes.ppo_seeds} seeds, {preset} settings"
    return [Row("ppo_iterations_per_s_cached", f"PPO iterations/s, cached rollout ({what})", c, "/s",
                detail=f"{sizes.ppo_iterations} iterations per timed call; the update is one full forward per game"),
            Row("ppo_iterations_per_s_full", f"PPO iterations/s, full-recompute rollout ({what})", f, "/s"),
            Row("ppo_speedup_from_cache", "PPO speed-up from the cache", c / f, "x")]


def run_bench(sizes: BenchSizes = FULL, preset: str = "quick", on_message=print) -> BenchResult:
    """Every measurement of the module docstring; ``on_message`` gets a line per phase.

    The MFU denominator is the best matmul throughput measured during the run (``matmul_peak``
    at the start and before each MFU is computed): the conservative choice on a shared machine,
    where large matmuls lose most to other processes."""
    say = on_message or (lambda m: None)
    t_start, load_start = time.time(), list(os.getloadavg())
    peaks: list[dict] = []

    def peak() -> float:
        peaks.append(matmul_peaks(reps=sizes.reps))
        return max(max(p.values()) for p in peaks)

    raw: dict = {}
    peak()
    say("rollouts (jitted play_games, cached and full recompute, vs the gymnasium loop)...")
    rows = _rollout_rows(sizes, peak, raw)
    say("cost versus game length (synthetic games)...")
    rows += _length_rows(sizes, raw)
    say("next-token training (forward / backward / optimizer)...")
    rows += _next_token_rows(sizes, preset, peak, raw)
    say("PPO iterations (cached vs full-recompute rollout)...")
    rows += _ppo_rows(sizes, preset, raw)
    best = max(max(p.values()) for p in peaks)
    raw["matmul_gflops"] = peaks
    rows.append(Row("matmul_peak_gflops", "fp32 matmul peak (MFU denominator)", best, "GFLOP/s",
                    detail="best jitted square matmul (n = " + ", ".join(map(str, PEAK_SIZES)) + ") of "
                    f"{len(peaks)} measurements; n=2048: " + ", ".join(f"{p[2048]:,.0f}" for p in peaks)))
    context = {"seconds": time.time() - t_start, "load_average_start": load_start,
               "load_average_end": list(os.getloadavg()), "cpus": os.cpu_count(),
               "jax": jax.__version__, "backend": jax.default_backend(), "preset": preset,
               "sizes": dataclasses.asdict(sizes)}
    return BenchResult(tuple(rows), raw, context)
