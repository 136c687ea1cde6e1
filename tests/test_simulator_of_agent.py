"""A simulator of an agent (``data.source``): next_token on an agent's own games. The games are the
agent's (a planted, deterministic agent: every move it makes is its planted choice), seed s's from
agent seed s; the floor of its loss is the exact Bayes mixture over which side is the agent and whom
it faces; a bad source is one ConfigError line; claim 1's table gains the network and its paired
differences; a tiny run trains, evaluates and resumes on the games it stored."""

import itertools
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agentsim.envs.tokens import Layout
from agentsim.experiments import cli
from agentsim.experiments.config import ConfigError, load_config
from agentsim.experiments.report import claims
from agentsim.experiments.report.report import NETWORK_NAMES, value_tables
from agentsim.experiments.runs import strict_json
from agentsim.experiments.runs.restore import abstract_params
from agentsim.experiments.runs.run import Run
from agentsim.experiments.train import agent_data as AD

TINY = ["log.wandb='disabled'"]
# Each agent seed's planted preference: it plays the first legal move of its order (logit gaps of
# 30 nats: another move once in ~1e13).
ORDERS = {0: [4, 0, 2, 6, 8, 1, 3, 5, 7], 1: [8, 7, 6, 5, 4, 3, 2, 1, 0]}


def _planted_params(cfg, layout):
    """Every weight 0 (nothing to compile) but the policy head's bias: the logits, whatever the history."""
    _, shapes = abstract_params(cfg, layout)
    params = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)
    bias = np.zeros(params["heads"][0]["bias"].value.shape, np.float32)  # [S, V]
    for i, s in enumerate(cfg.train.seeds):
        for rank, a in enumerate(ORDERS[s]):
            bias[i, a] = 30.0 * (9 - rank)
    params["heads"][0]["bias"].value = jnp.asarray(bias)
    return params


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A finished 'rl' run directory (seeds 0 and 1) whose final checkpoint is a planted agent."""
    cfg = load_config("tiny", overrides=TINY + ["train.regime='rl'", "train.seeds=[0, 1]"])
    run = Run(tmp_path_factory.mktemp("planted") / "rl", cfg)
    run.save_checkpoint(cfg.train.steps, {"params": _planted_params(cfg, Layout.for_config(cfg.data))})
    run.set_status("finished", step=cfg.train.steps)
    return run.path


def _sim_cfg(source, *extra):
    return load_config("tiny", overrides=TINY + ["train.regime='next_token'", f"data.source='{source}'", *extra])


def test_the_games_are_legal_and_each_seed_plays_its_own_agent(planted):
    """Seeds listed as [1, 0]: dataset 0 holds agent seed 1's games, and every move the agent made
    is its planted choice (its policy, not a greedy stand-in: the floors say it is deterministic)."""
    cfg = _sim_cfg(planted, "train.seeds=[1, 0]", "data.num_games=64")
    data = AD.agent_datasets(cfg)
    assert len(data) == 64 and data["tokens"].shape[:2] == (2, 64)
    for i, s in enumerate(cfg.train.seeds):
        d = data.per_seed[i]
        mask, moves, boards = d["move_mask"], d["moves"], d["boards"]
        n, t = np.nonzero(mask)
        assert np.all(boards[n, t, moves[n, t]] == 0)  # every move onto an empty cell
        assert np.all(mask.sum(1) == d["num_moves"]) and np.all(mask[:, 0])  # contiguous, nobody skips
        mine = mask & (d["player"] == d["agent_side"][:, None])
        for g, m in zip(*np.nonzero(mine)):
            legal = [a for a in ORDERS[s] if boards[g, m, a] == 0]
            assert moves[g, m] == legal[0], (s, g, m)
        assert mine.sum() > 64 and (mask & ~mine).sum() > 0  # both sides move
        np.testing.assert_allclose(d["agent_logp"][mine], 0.0, atol=1e-5)
        np.testing.assert_allclose(d["agent_entropy"][mine], 0.0, atol=1e-5)
        np.testing.assert_array_equal(d["known_side_logp"][mine], d["agent_logp"][mine])
        assert np.all(d["bayes_logp"][mask] <= 1e-6) and np.all(np.isfinite(d["bayes_logp"]))
        assert set(np.unique(d["opponent"])) <= set(range(len(cfg.ppo.opponents)))
        # The tokens are this run's layout of the moves.
        lay = d.layout
        body = d["tokens"][:, lay.prefix_len:lay.prefix_len + lay.max_moves]
        np.testing.assert_array_equal(np.where(body < lay.num_actions, body, -1), moves)


def _brute_force(player, mask, side, agent_lp, pool_lp, o_fraction, w):
    """The predictive by enumerating the hypotheses one by one (no vectorised trick)."""
    n_games, n_moves, n_pool = pool_lp.shape
    unknown, known = np.zeros((n_games, n_moves)), np.zeros((n_games, n_moves))
    for g in range(n_games):
        for t in range(n_moves):
            if not mask[g, t]:
                continue
            num = den = num_k = den_k = 0.0
            for sigma, p in itertools.product((0, 1), range(n_pool)):
                prior = (o_fraction if sigma else 1 - o_fraction) * w[p] / w.sum()

                def lik(u):
                    return np.exp(agent_lp[g, u] if player[g, u] == sigma else pool_lp[g, u, p])

                before = prior * np.prod([lik(u) for u in range(t)])
                num, den = num + before * lik(t), den + before
                if sigma == side[g]:
                    num_k, den_k = num_k + before * lik(t), den_k + before
            unknown[g, t], known[g, t] = np.log(num / den), np.log(num_k / den_k)
    return unknown, known


@pytest.mark.parametrize("o_fraction", [0.75, 1.0])
def test_the_floor_is_the_bayes_mixture_over_side_and_opponent(o_fraction):
    rng = np.random.default_rng(0)
    n_games, n_moves, n_pool = 5, 6, 3
    player = np.tile(np.arange(n_moves) % 2, (n_games, 1))
    mask = np.arange(n_moves)[None] < rng.integers(2, n_moves + 1, n_games)[:, None]
    side = np.array([1, 0, 1, 1, 0]) if o_fraction < 1 else np.ones(n_games, int)
    agent_lp = np.log(rng.uniform(0.05, 1, (n_games, n_moves)))
    pool_lp = np.log(rng.uniform(0.05, 1, (n_games, n_moves, n_pool)))
    pool_lp[0, 1, 2] = -np.inf  # a persona that could not have made this move
    w = np.array([1.0, 1.0, 2.0])
    unknown, known = AD.bayes_logp(player, mask, side, agent_lp, pool_lp, o_fraction, w)
    want_u, want_k = _brute_force(player, mask, side, agent_lp, pool_lp, o_fraction, w)
    np.testing.assert_allclose(unknown, want_u, atol=1e-10)
    np.testing.assert_allclose(known, want_k, atol=1e-10)
    if o_fraction == 1.0:  # the side is no secret: nothing to learn about it
        np.testing.assert_allclose(unknown, known, atol=1e-10)


def _fake_run(path, cfg, status="finished"):
    path.mkdir(parents=True)
    strict_json.write(path / "config.json", cfg.to_dict())
    (path / "status.json").write_text(json.dumps({"status": status}))
    return path


def test_a_source_that_is_no_finished_agent_is_one_config_error(planted, tmp_path, capsys):
    nt = _fake_run(tmp_path / "nt", load_config("tiny", overrides=TINY))
    unfinished = _fake_run(tmp_path / "running", load_config("tiny", overrides=TINY + ["train.regime='rl'"]), "running")
    cases = {tmp_path / "nowhere": "not a run directory", nt: "is a next_token run, not an agent",
             unfinished: "not finished"}
    for source, words in cases.items():
        with pytest.raises(ConfigError, match=words) as e:
            AD.open_source(_sim_cfg(source))
        assert str(e.value).startswith("data.source: ") and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match=r"data.source: .* has no seed \[7\]"):
        AD.open_source(_sim_cfg(planted, "train.seeds=[0, 7]"))
    with pytest.raises(ConfigError, match="data.source applies to next_token only"):
        load_config("tiny", overrides=TINY + ["train.regime='rl'", f"data.source='{planted}'"])
    # The CLI: exit 2, one line, and no run directory made.
    out = tmp_path / "sim"
    assert cli.main(["train", "--preset", "tiny", "--out", str(out), "--set", "log.wandb='disabled'",
                     "--set", f"data.source='{nt}'"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("agentsim: error: data.source: ") and not out.exists()


def _scores(test, seed, noise=0.01):
    boot = np.asarray(test, float) + noise * np.random.default_rng(seed).standard_normal((40, 1))
    return {"val_r2": list(test), "test_r2": list(test), "within_r2": list(np.asarray(test) - 0.1),
            "boot_r2": boot.tolist(), "boot_within_r2": (boot - 0.1).tolist(), "layer": 1}


def _measure(policy, simulator, of_agent, control=0.3):
    nets = {"policy": [], "simulator": [], "random_init": []}
    if of_agent is not None:
        nets["simulator_of_agent"] = []
    for s in range(5):
        nets["random_init"].append(_scores([0.5, control, control], s))
        for name, r2 in (("policy", policy), ("simulator", simulator), ("simulator_of_agent", of_agent)):
            if r2 is not None:
                nets[name].append(_scores([0.5, r2[s], r2[s] - 0.01], s + 10 * len(nets[name])))
    ceiling = [_scores([1.0], s, 0.0) | {"layer": 0} for s in range(5)]
    return {"datasets": {"own_games": {"targets": {"agent_value": {"networks": nets, "ceiling": ceiling}}}}}


def test_claim1_gains_the_simulator_of_the_agent_without_changing_its_statistic():
    policy = np.array([0.40, 0.42, 0.41, 0.40, 0.43])
    simulator = policy - 0.2  # the agent holds more V^π than the persona simulator...
    of_agent = policy - 0.01  # ...but no more than a simulator of its own games: the data does it
    plain = claims.claim1({"rl": _measure(policy, simulator, None)})
    c = claims.claim1({"rl": _measure(policy, simulator, of_agent)})
    assert c.interval == plain.interval and c.verdict == plain.verdict == "supported"
    ev = c.evidence
    assert ev["rl: policy trunk minus simulator of the agent"].mean == pytest.approx(0.01)
    assert ev["rl: policy trunk minus simulator of the agent, rule gives"] == "negligible"
    assert ev["rl: simulator of the agent minus simulator"].mean == pytest.approx(0.19)
    assert ev["rl: simulator of the agent minus simulator, rule gives"] == "supported"
    assert not any("simulator of the agent" in k for k in plain.evidence)
    row = ev["rl: own_games / agent_value"]["simulator_of_agent"]
    assert row["emergence"].mean == pytest.approx(of_agent.mean() - 0.3)  # over the same random init
    lines = "\n".join(value_tables(c.as_dict()))
    assert NETWORK_NAMES["simulator_of_agent"] in lines


@pytest.mark.slow  # trains a tiny next_token run on the shared tiny rl run's games, resumes it, probes it
def test_a_tiny_simulator_of_an_agent_trains_evaluates_resumes_and_is_probed(tiny_rl, tiny_next_token, tmp_path,
                                                                            monkeypatch):
    from agentsim.experiments.analysis.model import LoadedModel
    from agentsim.experiments.analysis.value_probes import measure_value
    from agentsim.experiments.train.loop import train

    cfg = _sim_cfg(tiny_rl)
    train(cfg, tmp_path / "sim", on_message=lambda m: None)
    final = json.loads((tmp_path / "sim" / "final.json").read_text())["simulator"]
    for key in ("move_loss", "bayes_optimal_loss", "gap", "gap_unseen"):
        assert len(final[key]) == 2 and all(np.isfinite(final[key])), key
    assert np.allclose(np.subtract(final["move_loss"], final["bayes_optimal_loss"]), final["gap"])
    for part, floor in (("agent_moves", "policy_entropy"), ("opponent_moves", "pool_posterior_loss")):
        assert all(0 < f < 2.2 for f in final[part][floor]) and all(m > 0 for m in final[part]["moves"])
    assert (tmp_path / "sim" / AD.AGENT_GAMES).exists()

    # Resumed from step 2, the run reads the games it stored (it never plays them again) and logs
    # exactly what the uninterrupted run logged.
    resumed = tmp_path / "resumed"
    shutil.copytree(tmp_path / "sim", resumed)
    for ck in (resumed / "checkpoints").iterdir():
        if ck.name.isdigit() and int(ck.name) > 2:
            shutil.rmtree(ck)
    (resumed / "status.json").write_text(json.dumps({"status": "interrupted", "step": 2}))

    def no_play(*args, **kwargs):
        raise AssertionError("a resumed run played its games again")

    real_play = AD.play_source
    monkeypatch.setattr(AD, "play_source", lambda src, seeds, n, seed: no_play() if n == cfg.data.num_games
                        else real_play(src, seeds, n, seed))
    train(cfg, resumed, resume=True, on_message=lambda m: None)
    assert (resumed / "metrics.jsonl").read_text() == (tmp_path / "sim" / "metrics.jsonl").read_text()

    # Claim 1's measure probes it on the agent's own games, beside the others, paired by seed.
    agent, sim = LoadedModel.from_run(tiny_rl), LoadedModel.from_run(tiny_next_token)
    of_agent = LoadedModel.from_run(tmp_path / "sim")
    with pytest.raises(ValueError, match="did not learn from this agent"):
        measure_value(agent, sim, 60, agent_simulator=LoadedModel.from_run(tiny_next_token))
    res = measure_value(agent, sim, 60, agent_simulator=of_agent)
    nets = res["datasets"]["own_games"]["targets"]["agent_value"]["networks"]
    assert len(nets["simulator_of_agent"]) == 2 and res["checkpoint_steps"]["simulator_of_agent"] == of_agent.step
    assert "simulator_of_agent" not in res["datasets"]["persona_games"]["targets"]["agent_value"]["networks"]
