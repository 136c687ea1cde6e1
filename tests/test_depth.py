"""The depth axis: claim D's slope and rule on hand-made change results (every way it can come
out), the depth stages, bars by stage name, the depth table and figure; end to end at tiny size
(slow)."""

import json

import numpy as np
import pytest

from agentsim.experiments.presets import DEPTHS, STAGES, at_depths, depth_stage
from agentsim.experiments.report import claims
from agentsim.experiments.report.figures import claims_by_depth
from agentsim.experiments.report.report import depth_lines

B = 30


def change(first_minus_last_S, layers: int, noise: float = 0.0, rng=0) -> dict:
    """A hand-made ``analyse_change`` result whose claim-4 statistic per seed is the given one:
    CKA 1 at the first block and 1 − statistic at the last, replicates jittered by ``noise``."""
    r = np.random.default_rng(rng)
    s = np.asarray(first_minus_last_S, float)
    cka = np.ones((len(s), layers + 1))
    cka[:, -1] = 1.0 - s
    boot = np.repeat(cka[:, None, :], B, axis=1)
    boot[:, :, -1] += noise * r.standard_normal((len(s), B))
    return {"comparisons": {"tuned": {"cka": cka.tolist(), "boot_cka": boot.tolist(),
                                      "weight_change": np.zeros((len(s), layers + 2)).tolist()}},
            "seed_floor": {"cka": np.zeros((1, layers + 1)).tolist()}}


def test_slope_is_the_change_per_doubling_of_depth():
    values, reps = claims.depth_slope([2, 4, 8], [np.zeros(3), np.ones(3), 2 * np.ones(3)],
                                      [np.zeros((3, B)), np.ones((3, B)), 2 * np.ones((3, B))])
    assert values == pytest.approx(np.ones(3)) and reps == pytest.approx(np.ones((3, B)))
    flat, _ = claims.depth_slope([2, 4, 8], [np.full(3, 0.3)] * 3, [np.zeros((3, B))] * 3)
    assert flat == pytest.approx(np.zeros(3))


SEEDS5 = np.array([1.0, 1.1, 0.9, 1.05, 0.95])


@pytest.mark.parametrize("per_doubling, spread, expected", [
    (0.2, 0.0, "supported"),      # later layers change more the deeper the network
    (-0.2, 0.0, "contradicted"),
    (0.0, 0.0, "negligible"),     # the statistic does not move with depth
    (0.0, 0.5, "inconclusive"),   # seeds disagree about the direction
])
def test_claim_depth_comes_out_every_way(per_doubling, spread, expected):
    rng = np.random.default_rng(1)
    slopes = per_doubling * SEEDS5 + spread * rng.standard_normal(5)
    changes = {d: change(0.1 + slopes * k, d, noise=0.002, rng=d) for k, d in enumerate((2, 4, 8))}
    c = claims.claim_depth(changes)
    assert c.verdict == expected, c.interval
    assert c.interval["mean"] == pytest.approx(np.mean(slopes), abs=0.02)
    assert set(c.subjects) == {depth_stage(d, s) for d in (2, 4, 8) for s in ("pretrain_rl", "next_token")}


def test_claim_depth_needs_two_depths_with_a_first_and_a_last_block():
    one_block = {1: change(np.zeros(5), 1), 2: change(SEEDS5, 2)}
    assert claims.claim_depth(one_block).note.startswith("claim 4 measured at 1 depth")
    assert claims.claim_depth({2: change(SEEDS5, 2)}).verdict == "inconclusive"
    c4 = claims.claim4({"analyses": {"change": change(np.zeros(5), 1)}})
    assert c4.verdict == "inconclusive" and "one block" in c4.note  # not 'negligible' on a 0 by construction


def test_claim_depth_reads_depths_back_from_json():
    changes = {d: change(0.1 + 0.2 * SEEDS5 * k, d, noise=0.002, rng=d) for k, d in enumerate((2, 4, 8))}
    from_json = json.loads(json.dumps(changes))  # keys become "2", "4", "8"
    assert claims.claim_depth(from_json).interval == claims.claim_depth(changes).interval


def test_depth_stages_point_at_their_own_depth():
    stages = dict(at_depths(STAGES["quick"], (2, 8)))
    assert list(stages) == [depth_stage(d, n) for d in (2, 8) for n in ("next_token", "random_init", "rl", "pretrain_rl")]
    assert "ppo.pretrained='{run:L8/next_token}'" in stages["L8/pretrain_rl"]
    assert stages["L8/rl"][-1] == "model.num_layers=8" and "model.num_layers=2" in stages["L2/next_token"]
    assert [name for name, _ in STAGES["depth"]][::4] == [f"L{d}/next_token" for d in DEPTHS["depth"]]


def test_a_depth_stage_has_its_regime_bars():
    final = {"matches": {"eval/loss_vs_perfect": [0.0, 0.1]}, "simulator": {"gap": [0.1, 0.1]}}
    q = claims.quality({"L4/rl": final, "L4/random_init": final})
    assert [b["meets"] for b in q["L4/rl"]["bars"]] == [False] and q["L4/random_init"]["bars"] == []


def depth_results():
    by_depth = {}
    for d in (2, 4, 8):
        judged = {"1": claims.judged("1", "s", claims.seed_interval(SEEDS5 * 0.1 * d), 0.05, "f"),
                  "3": claims.not_judged("3", "too few checkpoints"),
                  "4": claims.claim4({"analyses": {"change": change(SEEDS5 * 0.05 * d, d)}})}
        by_depth[d] = {"claims": {k: c.as_dict() | {"flags": [f"`rl` misses at {d}"]} for k, c in judged.items()}}
    changes = {d: change(SEEDS5 * 0.05 * d, d) for d in (2, 4, 8)}
    return {"depth": json.loads(json.dumps(by_depth)),
            "claims": {"D": claims.claim_depth(changes, {d: v["claims"] for d, v in by_depth.items()}).as_dict()}}


def test_depth_table_and_figure(tmp_path):
    results = depth_results()
    lines = "\n".join(depth_lines(results["depth"]))
    assert "| claim | 2 layers | 4 layers | 8 layers |" in lines
    assert "3. Later layers" in lines and "–: **inconclusive**" in lines  # not judged: no number, still a row
    assert "⚠ 8 layers, claim 1: `rl` misses at 8" in lines
    assert results["claims"]["D"]["verdict"] == "supported"  # 0.05·d per seed grows with depth
    paths = claims_by_depth(results, tmp_path)  # a panel with no finite number draws (claim 3 here)
    assert all(p.exists() and p.stat().st_size > 1000 for p in paths)


@pytest.mark.slow
def test_depth_tiny_reproduction(tmp_path):
    from agentsim.experiments.report.reproduce import reproduce

    res = reproduce("depth-tiny", tmp_path / "out", overrides=("log.wandb=disabled",), on_message=lambda m: None)
    assert list(res["claims"]) == ["D"] and set(res["depth"]) == {2, 3}
    for d in (2, 3):
        assert set(res["depth"][d]["claims"]) == {"1", "3", "4", "5"}
        assert (tmp_path / "out" / "runs" / f"L{d}" / "pretrain_rl" / "final.json").exists()
        assert json.loads((tmp_path / "out" / "runs" / f"L{d}" / "rl" / "config.json").read_text())["model"][
            "num_layers"] == d
    report = (tmp_path / "out" / "REPORT.md").read_text()
    assert "## The layer claims at each depth" in report and "Claim D" in report
    assert (tmp_path / "out" / "figures" / "fd_claims_by_depth.png").exists()
    assert (tmp_path / "out" / "figures" / "L3" / "f0_value_where_it_lives.png").exists()
