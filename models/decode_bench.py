"""Micro-benchmark: a greedy rollout with and without the key/value cache.

B sequences start from one token and are extended greedily (the policy head's arg-max) to
``seq_len`` tokens, reading the value at every step as a rollout does:
- ``full``: re-run ``apply`` on the whole [B, seq_len] token buffer every step (what the PPO
  rollout and the evaluation playout do today);
- ``cache``: ``prefill`` the first token, then one ``decode_step`` per token;
- ``cache2``: two tokens per ``extend`` call, as a game turn appends the agent's move and the
  opponent's reply: the first is the arg-max, the second a fixed function of it (the env,
  not the model, picks a reply); the next move is the arg-max at the second token.
Steps/s counts generated tokens (= agent steps for ``full`` and ``cache``). Compile time is
excluded; runs are interleaved and the best of ``reps`` is reported (see ``bench``).

    nice -n 5 python -m agentsim.models.decode_bench            # 2L d64 and 4L d128, seq_len 10 and 43
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp

from agentsim.models.transformer import ModelConfig, apply, decode_step, extend, make_model, prefill

VOCAB = 24


def make_rollout(cfg: ModelConfig, seq_len: int, batch: int, mode: str):
    """A jitted rollout(params, bos_B) -> (tokens generated [B, seq_len - 1], sum of values)."""
    graphdef, _ = make_model(cfg, VOCAB, seq_len, jax.random.key(0))
    steps = seq_len - 1

    def full(params, bos_B):
        tokens = jnp.zeros((batch, seq_len), jnp.int32).at[:, 0].set(bos_B)

        def body(tokens, t):
            out = apply(graphdef, params, tokens)
            nxt = jnp.argmax(out.logits_KxBxTxV[0, :, t], -1)
            return tokens.at[:, t + 1].set(nxt), out.value_BxT[:, t].sum()

        tokens, values = jax.lax.scan(body, tokens, jnp.arange(steps))
        return tokens[:, 1:], values.sum()

    def cache(params, bos_B):
        out, c = prefill(graphdef, params, bos_B[:, None], capacity=seq_len)

        def body(carry, _):
            c, logits_BxV, value_sum = carry
            nxt = jnp.argmax(logits_BxV, -1)
            step, c = decode_step(graphdef, params, nxt, c)
            return (c, step.logits_KxBxV[0], value_sum + step.value_B.sum()), nxt

        carry = (c, out.logits_KxBxTxV[0, :, 0], out.value_BxT.sum())
        (_, _, value_sum), played = jax.lax.scan(body, carry, None, length=steps)
        return played.T, value_sum

    def cache2(params, bos_B):
        out, c = prefill(graphdef, params, bos_B[:, None], capacity=seq_len)
        first = jnp.argmax(out.logits_KxBxTxV[0, :, 0], -1)

        def body(carry, _):
            c, nxt, value_sum = carry
            reply = (nxt * 7 + 3) % VOCAB
            out, c = extend(graphdef, params, jnp.stack([nxt, reply], 1), c)
            return (c, jnp.argmax(out.logits_KxBxTxV[0, :, 1], -1), value_sum + out.value_BxT.sum()), nxt

        (_, _, value_sum), played = jax.lax.scan(body, (c, first, 0.0), None, length=steps // 2)
        return played.T, value_sum

    return jax.jit({"full": full, "cache": cache, "cache2": cache2}[mode]), graphdef


def bench(cases: dict, batch: int = 256, reps: int = 5) -> dict:
    """cases: {name: (cfg, seq_len, mode)} -> {name: {'steps_per_s', 'us_per_step'}}.

    Everything is compiled first, then timed in ``reps`` interleaved rounds (one run of each
    case per round) and the fastest run of each case kept: on a shared machine the load drifts
    over minutes, and interleaving keeps the ratios between cases honest."""
    runs = {}
    for name, (cfg, seq_len, mode) in cases.items():
        rollout, _ = make_rollout(cfg, seq_len, batch, mode)
        _, params = make_model(cfg, VOCAB, seq_len, jax.random.key(1))
        bos = jnp.full(batch, VOCAB - 1, jnp.int32)
        jax.block_until_ready(rollout(params, bos))  # compile
        tokens = (seq_len - 1) if mode != "cache2" else 2 * ((seq_len - 1) // 2)
        runs[name] = (rollout, params, bos, tokens, [])
    for _ in range(reps):
        for rollout, params, bos, _, times in runs.values():
            t0 = time.perf_counter()
            jax.block_until_ready(rollout(params, bos))
            times.append(time.perf_counter() - t0)
    out = {}
    for name, (_, _, _, tokens, times) in runs.items():
        sec = min(times)
        out[name] = {"steps_per_s": batch * tokens / sec, "us_per_step": 1e6 * sec / tokens}
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--modes", default="full,cache,cache2")
    args = ap.parse_args(argv)
    models = {"2L d64": ModelConfig(num_layers=2, d_model=64, num_heads=4),
              "4L d128": ModelConfig(num_layers=4, d_model=128, num_heads=4)}
    modes = args.modes.split(",")
    print(f"greedy rollout, B={args.batch}, value head = separate critic (1 block); steps/s = tokens "
          f"generated per second; µs/step = one token for the whole batch; best of {args.reps}", flush=True)
    for name, cfg in models.items():
        r = bench({(mode, t): (cfg, t, mode) for mode in modes for t in (10, 43)}, args.batch, args.reps)
        for mode in modes:
            a, b = r[mode, 10], r[mode, 43]
            print(f"{name:8s} {mode:6s}  T=10: {a['steps_per_s']:>9,.0f} steps/s ({a['us_per_step']:7.0f} µs/step)"
                  f"   T=43: {b['steps_per_s']:>9,.0f} steps/s ({b['us_per_step']:7.0f} µs/step)"
                  f"   cost/step 43 vs 10: {b['us_per_step'] / a['us_per_step']:4.2f}×", flush=True)


if __name__ == "__main__":
    main()
