"""Verdict rules on hand-made numbers: the report's verdicts must follow from the numbers."""

import numpy as np
import pytest

from experiments.report import claims
from experiments.report.claims import verdict


@pytest.mark.parametrize("low, high, expected", [
    (0.10, 0.30, "supported"),     # whole CI above the threshold
    (-0.2, -0.01, "contradicted"),  # whole CI below
    (0.01, 0.04, "contradicted"),  # reliably smaller than the smallest effect worth the name
    (0.03, 0.20, "inconclusive"),  # straddles it
])
def test_three_way_rule(low, high, expected):
    assert claims.three_way({"mean": (low + high) / 2, "low": low, "high": high}, 0.05) == expected
    assert verdict(low, high, 0.05) == expected


def _suite(trained, control, task=None):
    entry = {"trained": [{"score": s} for s in trained], "random_init": [{"score": s} for s in control]}
    if task is not None:
        entry["control_task"] = [{"score": s} for s in task]
    return entry


def test_claim2_uses_best_layer_over_control():
    trained = [[0.2, 0.5, 0.6]] * 3 + [[0.2, 0.52, 0.61]] * 2
    control = [[0.2, 0.25, 0.25]] * 5
    results = {"analyses": {"probe_suite": {"next_token": {
        "targets": {"persona_mover": _suite(trained, control, control)},
        "bayes_ceiling": {"x": [0.2, 0.8], "o": [0.2, 0.8]}}}}}
    c = claims.claim2(results)
    assert c["layer"] == 2
    assert c["value"]["mean"] == pytest.approx(np.mean([0.35] * 3 + [0.36] * 2))
    assert c["verdict"] == "supported"
    results["analyses"]["probe_suite"]["next_token"]["targets"]["persona_mover"] = _suite(control, control, control)
    assert claims.claim2(results)["verdict"] == "contradicted"


def test_claim3_later_layers_later():
    steps = [0, 10, 100, 1000]
    # layer 0 flat; block 1 done by step 10; block 2 only at step 1000 (for every seed)
    curve = lambda done_at: [0.0 if s < done_at else 1.0 for s in steps]
    per_ckpt = np.stack([np.zeros(4), curve(10), curve(1000)], -1)  # [ckpt, layer]
    data = np.repeat(per_ckpt[:, None, :], 4, axis=1)  # [ckpt, seed, layer]
    results = {"analyses": {"timeline": {"next_token": {"steps": steps, "targets": {"board_mover": data.tolist()}}}}}
    c = claims.claim3(results)
    assert c["value"]["mean"] == pytest.approx(2.0)  # log10(1000) - log10(10)
    assert c["verdict"] == "supported"
    data[..., [1, 2]] = data[..., [2, 1]]
    results["analyses"]["timeline"]["next_token"]["targets"]["board_mover"] = data.tolist()
    assert claims.claim3(results)["verdict"] == "contradicted"


def test_claim6_paired_difference_and_missing_run():
    ntp = _suite([[0.1, 0.2]] * 3, [[0.1, 0.1]] * 3)
    mtp = _suite([[0.1, 0.4]] * 3, [[0.1, 0.1]] * 3)
    regs = {k: {"matches": {"perfect": {"loss": {"mean": 0.1, "low": 0.0, "high": 0.2}}}} for k in ("next_token", "next_token_mtp")}
    results = {"analyses": {"probe_suite": {"next_token": {"targets": {"value_mover": ntp}},
                                            "next_token_mtp": {"targets": {"value_mover": mtp}}}},
               "regimes": regs}
    c = claims.claim6(results)
    assert c["value"]["mean"] == pytest.approx(0.2)
    assert c["verdict"] == "supported"
    del results["analyses"]["probe_suite"]["next_token_mtp"]
    assert claims.claim6(results)["verdict"] == "inconclusive"


def test_judge_all_marks_missing_analyses_inconclusive():
    out = claims.judge_all({"analyses": {}, "regimes": {}})
    assert set(out) == {"2", "3", "4", "5", "6"}
    assert all(v["verdict"] == "inconclusive" for v in out.values())
