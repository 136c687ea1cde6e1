"""Every claim's rule comes out every way on hand-made numbers (no training), including the cases
the old rules misjudged: a reliably small positive effect, the embeddings or the test set
choosing the layer, a checkpoint grid coarser than the threshold, too few seeds."""

import numpy as np
import pytest

from agentsim.experiments.report import claims
from agentsim.experiments.statistics import Interval, seed_interval, verdict

B = 40
CLEAR = np.array([0.10, 0.12, 0.09, 0.11, 0.10])
WAYS = {  # per-seed statistics (as the claim orients them) and the verdict they must give
    "supported": CLEAR,
    "negligible": np.array([0.01, 0.0, 0.005, 0.01, 0.0]),
    "contradicted": -2 * CLEAR,
    "inconclusive": np.array([0.3, -0.3, 0.2, -0.2, 0.05]),
}


def iv(low, high, n=5):
    return Interval((low + high) / 2, low, high, n, 0.0, 0.0)


@pytest.mark.parametrize("low, high, expected", [
    (0.10, 0.30, "supported"),
    (0.01, 0.20, "supported"),      # reliably positive, not shown negligible
    (0.01, 0.04, "negligible"),     # reliably positive but smaller than δ: the old rule said "contradicted"
    (-0.04, 0.03, "negligible"),
    (-0.30, -0.10, "contradicted"),
    (-0.30, -0.01, "contradicted"),
    (-0.05, 0.20, "inconclusive"),
    (float("nan"), float("nan"), "inconclusive"),
])
def test_four_way_rule(low, high, expected):
    assert verdict(iv(low, high), 0.05)["verdict"] == expected


def test_fewer_than_five_seeds_is_inconclusive_but_says_what_the_interval_gives():
    v = verdict(iv(0.1, 0.3, n=3), 0.05)
    assert v["verdict"] == "inconclusive" and v["rule_gives"] == "supported" and not v["enough_seeds"]


def test_t_interval_by_hand():
    i = seed_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    half = 2.776 * np.std([1, 2, 3, 4, 5], ddof=1) / np.sqrt(5)
    assert (i.mean, i.low, i.high) == pytest.approx((3.0, 3.0 - half, 3.0 + half), abs=1e-3)
    # With three seeds the interval is a t-interval, far wider than the seeds' min-max.
    three = seed_interval([0.01, 0.02, 0.03])
    assert three.low < 0.0 and three.high > 0.04


def test_own_games_split_the_width_shared_games_add_to_it():
    values, game_var = np.array([0.1, 0.2, 0.15, 0.12, 0.18]), np.full(5, 0.001)
    own = seed_interval(values, game_var, shared_games=False)
    shared = seed_interval(values, 0.001, shared_games=True)
    plain = seed_interval(values)
    assert (own.low, own.high) == pytest.approx((plain.low, plain.high))  # seeds already hold game noise
    assert own.game_half == pytest.approx(2.776 * np.sqrt(0.001 / 5), rel=1e-3) and own.seed_half < plain.high - plain.mean
    assert shared.high - shared.low > plain.high - plain.low  # common game noise does not average out
    # Seeds that agree more closely than their own games' noise allows: the bootstrap's game
    # variance is the floor (regression: three seeds once gave a half-width of 0.04 beside a game
    # part of 0.11).
    close = seed_interval([0.100, 0.101, 0.102], np.full(3, 0.01), shared_games=False)
    assert close.high - close.mean == pytest.approx(4.303 * np.sqrt(0.01 / 3), rel=1e-3)
    assert close.seed_half == 0.0


# ---------------------------------------------------------------------------------- builders


def scores(test, val=None, layer=None, noise=0.0, seed=0):
    """A network's Scores on one seed: R² per layer, the chosen layer, bootstrap replicates."""
    test = np.asarray(test, float)
    val = test if val is None else np.asarray(val, float)
    rng = np.random.default_rng(seed)
    boot = test + noise * rng.standard_normal((B, 1))
    return {"val_r2": val.tolist(), "test_r2": test.tolist(), "within_r2": (test - 0.1).tolist(),
            "boot_r2": boot.tolist(), "boot_within_r2": (boot - 0.1).tolist(),
            "layer": int(np.argmax(val[1:]) + 1) if layer is None else layer}


def value_measure(agent_minus_sim, control=0.3, sim=0.1):
    """Claim 1's input: per seed the policy's emergence exceeds the simulator's by d."""
    nets = {"policy": [], "simulator": [], "random_init": []}
    for s, d in enumerate(agent_minus_sim):
        nets["random_init"].append(scores([0.5, control, control], seed=s))
        # block 1 is each network's best block on validation, whatever d is
        nets["simulator"].append(scores([0.5, control + sim, control + sim - 0.01], noise=0.01, seed=s))
        nets["policy"].append(scores([0.5, control + sim + d, control + sim + d - 0.01], noise=0.01, seed=s + 10))
    ceiling = [scores([1.0], layer=0) for _ in agent_minus_sim]
    return {"datasets": {"own_games": {"targets": {"agent_value": {"networks": nets, "ceiling": ceiling}}}}}


# ---------------------------------------------------------------------------------- claim 1


@pytest.mark.parametrize("way", WAYS)
def test_claim1_comes_out_every_way(way):
    c = claims.claim1({"rl": value_measure(WAYS[way])})
    assert c.verdict == way, c.interval
    assert c.interval["mean"] == pytest.approx(WAYS[way].mean())


def test_claim1_never_chooses_the_embeddings_or_reads_the_test_set_for_the_layer():
    measure = value_measure(np.zeros(5))
    for s, net in enumerate(measure["datasets"]["own_games"]["targets"]["agent_value"]["networks"]["policy"]):
        # The embeddings score best, and on test block 2 beats block 1; validation prefers block 1.
        net.update(scores([0.9, 0.45, 0.8], val=[0.9, 0.5, 0.2], seed=s))
    c = claims.claim1({"rl": measure})
    table = c.evidence["rl: own_games / agent_value"]["policy"]
    assert table["layers"] == [1] * 5
    assert c.interval["mean"] == pytest.approx((0.45 - 0.3) - 0.1)  # block 1's test score, not 0.9 or 0.8


def test_claim1_fraction_of_the_gap_uses_the_ceiling():
    table = claims.value_table(value_measure(CLEAR), "own_games", "agent_value")
    e = table["policy"]["emergence"].mean
    assert table["policy"]["fraction_of_gap"].mean == pytest.approx(e / (1.0 - 0.3))


def test_claim1_without_an_agent_run_is_not_judged():
    assert claims.claim1({}).verdict == "inconclusive"


# ---------------------------------------------------------------------------------- claim 2


def persona_suite(effect):
    trained, control, task = [], [], []
    for s, e in enumerate(effect):
        base = 0.3
        boot = lambda acc: (np.asarray(acc) + 0.01 * np.random.default_rng(s).standard_normal((B, 1))).tolist()
        acc = [base, base + e, base + e - 0.01]
        trained.append({"score": acc, "val_score": acc, "boot_score": boot(acc)})
        control.append({"score": [base] * 3, "val_score": [base] * 3, "boot_score": boot([base] * 3)})
        task.append({"score": [0.2] * 3, "val_score": [0.2] * 3})
    return {"analyses": {"probe_suite": {"next_token": {
        "targets": {"persona_mover": {"trained": trained, "random_init": control, "control_task": task}},
        "bayes_ceiling": {"mover_test": 0.6}}}}}


@pytest.mark.parametrize("way", WAYS)
def test_claim2_comes_out_every_way(way):
    c = claims.claim2(persona_suite(WAYS[way] / 2))  # δ = 0.02: half the effects still clear it
    assert c.verdict == way, c.interval


def test_claim2_selectivity_compares_each_task_with_its_own_ceiling():
    """Persona accuracy 0.5 of a Bayes ceiling 0.6 is 0.833 of what is knowable; the control task's
    0.2 of its ceiling 1 is 0.2: selectivity 0.633 (raw accuracies would give 0.3)."""
    c = claims.claim2(persona_suite([0.2] * 5))
    key, = [k for k in c.evidence if k.startswith("selectivity vs the control task")]
    assert "persona 0.6" in key and "control task 1" in key
    assert c.evidence[key].mean == pytest.approx(0.5 / 0.6 - 0.2)


# ---------------------------------------------------------------------------------- claim 3


def timeline(delay_by_seed, steps=None):
    """Sigmoid development in log10(step): block 1 centred at 10^2, the last block at 10^(2 + delay)."""
    steps = np.unique(np.round(np.geomspace(1, 10_000, 14))).astype(int) if steps is None else np.asarray(steps)
    x = np.log10(steps)
    curve = lambda mid: 1 / (1 + np.exp(-4 * (x - mid)))
    data = np.stack([np.stack([np.zeros_like(x), curve(2.0), curve(2.0 + d)], -1) for d in delay_by_seed], 1)
    boot = data[None] + 0.001 * np.random.default_rng(0).standard_normal((B,) + data.shape)
    return {"analyses": {"timeline": {"next_token": {"steps": steps.tolist(), "targets": {"board_mover": data.tolist()},
                                                     "boot": {"board_mover": boot.tolist()}}}}}


@pytest.mark.parametrize("way", WAYS)
def test_claim3_comes_out_every_way(way):
    c = claims.claim3(timeline(WAYS[way] * 5))  # δ = 0.1 log10 steps
    assert c.verdict == way, c.interval


def test_claim3_interpolates_instead_of_snapping_to_the_grid():
    """The old statistic read t90 off the checkpoint grid: two layers a hair apart landed on
    different grid steps (a 0.2-log10 jump) and gave a verdict. Interpolated, they are negligible."""
    c = claims.claim3(timeline(np.full(5, 0.02)))
    assert c.verdict == "negligible" and abs(c.interval["mean"] - 0.02) < 0.01


def test_claim3_needs_a_fine_grid():
    assert claims.claim3(timeline(CLEAR, steps=[1, 10, 100, 1000, 10000])).verdict == "inconclusive"


def test_t90_interpolates_in_log_steps():
    steps = np.array([1, 10, 100, 1000])
    assert claims.t90(steps, np.array([0.0, 0.0, 0.8, 1.0])) == pytest.approx(2.5)  # halfway from 0.8 to 1.0
    assert np.isnan(claims.t90(steps, np.ones(4)))


# ---------------------------------------------------------------------------------- claim 4


def change(drop_by_seed):
    cka = np.stack([[1.0, 0.9, 0.9 - d] for d in drop_by_seed])
    boot = cka[:, None, :] + 0.002 * np.random.default_rng(0).standard_normal((len(cka), B, 3))
    return {"analyses": {"change": {"comparisons": {"tuned": {"cka": cka.tolist(), "boot_cka": boot.tolist(),
                                                              "weight_change": [[0.1, 0.2, 0.3, 0.1]] * len(cka)}},
                                    "seed_floor": {"cka": [[0.9, 0.9, 0.9]]}}}}


@pytest.mark.parametrize("way", WAYS)
def test_claim4_comes_out_every_way(way):
    assert claims.claim4(change(WAYS[way])).verdict == way


# ---------------------------------------------------------------------------------- claim 5


def rl_amount(gain_by_seed):
    frac = np.stack([np.full((5, 2), 0.2), np.stack([np.full(2, 0.2 + g) for g in gain_by_seed])])  # [ckpt, seed, block]
    boot = frac[:, :, None, :] + 0.002 * np.random.default_rng(0).standard_normal((2, 5, B, 2))
    return {"analyses": {"rl_amount": {"value": {"steps": [0, 100], "fraction_of_gap_by_block": frac.tolist(),
                                                 "boot_fraction_of_gap_by_block": boot.tolist()}}}}


@pytest.mark.parametrize("way", WAYS)
def test_claim5_comes_out_every_way(way):
    assert claims.claim5(rl_amount(WAYS[way])).verdict == way


# ---------------------------------------------------------------------------------- claim 6


def simulators(mtp_minus_ntp):
    out = {}
    for name, extra in (("next_token", np.zeros(5)), ("next_token_mtp", mtp_minus_ntp)):
        nets = {"simulator": [scores([0.4, 0.5 + e, 0.4], noise=0.005, seed=s) for s, e in enumerate(extra)],
                "random_init": [scores([0.4, 0.4, 0.4], seed=s) for s in range(5)]}
        out[name] = {"datasets": {"persona_games": {"targets": {"mixture_value": {"networks": nets}}}}}
    return {"analyses": {"value": {"simulators": out}}}


@pytest.mark.parametrize("way", WAYS)
def test_claim6_comes_out_every_way(way):
    assert claims.claim6(simulators(WAYS[way])).verdict == way


def test_missing_analyses_are_not_judged():
    out = claims.judge_all({"analyses": {}})
    assert set(out) == {"1", "2", "3", "4", "5", "6"}
    assert all(c.verdict == "inconclusive" and c.note for c in out.values())


def test_a_subject_that_misses_its_bar_is_flagged():
    finals = {"rl": {"matches": {"eval/loss_vs_perfect": [0.2, 0.1, 0.15], "eval/loss_vs_random": [0.0] * 3},
                     "simulator": {"gap": [1.0] * 3}},
              "pretrain_rl": {"matches": {"eval/loss_vs_perfect": [0.0, 0.0, 0.005], "eval/loss_vs_random": [0.0] * 3},
                              "simulator": {"gap": [1.0] * 3}}}
    q = claims.quality(finals)
    assert [b["meets"] for b in q["rl"]["bars"]] == [False] and [b["meets"] for b in q["pretrain_rl"]["bars"]] == [True]
    c = claims.claim1({"rl": value_measure(CLEAR)})
    assert any("`rl` misses its bar" in f for f in claims.flags(c, q))
    assert not any("pretrain_rl" in f for f in claims.flags(c, q))


def test_connect_four_bars_are_its_own_and_each_miss_is_flagged():
    """On connect-four an agent must lose at most 5 % against perfect play and win at least 95 %
    against random; the simulator gap bar is 0.05 nats/move, read on every held-out position."""
    finals = {"rl": {"matches": {"eval/loss_vs_perfect": [0.04, 0.05, 0.03], "eval/win_vs_random": [0.9, 0.92, 0.94],
                                 "eval/loss_vs_random": [0.0] * 3}, "simulator": {"gap": [1.0] * 3}},
              "next_token": {"matches": {}, "simulator": {"gap": [0.04, 0.05, 0.03], "gap_unseen": [0.2, 0.3, 0.25]}}}
    q = claims.quality(finals, "connect_four:5x4")
    assert {b["measure"]: b["meets"] for b in q["rl"]["bars"]} == {"loss_vs_perfect": True, "win_vs_random": False}
    assert [b["meets"] for b in q["next_token"]["bars"]] == [True]
    assert q["next_token"]["simulator_gap_unseen"]["mean"] == pytest.approx(0.25)
    c = claims.claim1({"rl": value_measure(CLEAR)})
    flagged = claims.flags(c, q)
    assert len(flagged) == 1 and "win vs random 0.920, wanted win vs random ≥ 0.95" in flagged[0]
    assert claims.bars_for("tictactoe")["rl"] == (("loss_vs_perfect", "at_most", 0.02),)


def test_claim1_is_not_moved_by_the_control_at_other_layers():
    """Both networks reach R² 0.6, at different layers where the random-init control differs
    (0.2 and 0.5): the paired statistic compares the networks, not their layers' controls."""
    measure = value_measure(np.zeros(5))
    nets = measure["datasets"]["own_games"]["targets"]["agent_value"]["networks"]
    for s in range(5):
        nets["random_init"][s] = scores([0.1, 0.2, 0.5], seed=s)
        nets["policy"][s] = scores([0.1, 0.6, 0.55], noise=0.005, seed=s)
        nets["simulator"][s] = scores([0.1, 0.5, 0.6], noise=0.005, seed=s + 10)
    c = claims.claim1({"rl": measure})
    assert abs(c.interval["mean"]) < 1e-9 and c.verdict == "negligible"


def test_a_seed_without_a_number_gives_no_verdict():
    i = seed_interval([0.1, 0.12, np.nan, 0.11, 0.1, 0.09])
    assert np.isnan(i.low) and verdict(i, 0.05)["verdict"] == "inconclusive"
    assert np.isnan(seed_interval([0.1, 0.12, np.inf, 0.11, 0.1]).high)


def test_t90_is_a_settling_time_and_ignores_scores_that_do_not_move():
    steps = np.array([1, 10, 100, 1000, 10000])
    bump = np.array([0.0, 1.0, 0.5, 0.5, 0.5])  # rises early, falls back to half: settles before step 100
    assert claims.t90(steps, bump) == pytest.approx(1.9)  # enters the ±10% band from above at 10^1.9
    assert np.isnan(claims.t90(steps, np.array([0.3, 0.31, 0.29, 0.3, 0.305])))  # moved 0.005 < MIN_CHANGE
