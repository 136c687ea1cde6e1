"""REPORT.md on a hand-made results dictionary (no training): three significant digits, rates
kept inside [0, 1] and marked where clipped, no column that no row fills."""

import pytest

from agentsim.experiments.report import claims
from agentsim.experiments.report.numbers import CLIPPED_MARK, interval_text, rate_text, sig3
from agentsim.experiments.report.report import report
from agentsim.experiments.report.reproduce import relative_paths
from agentsim.experiments.report.tables import markdown_table
from agentsim.experiments.statistics import Interval


@pytest.mark.parametrize("x, text", [
    (0.123456, "0.123"), (-0.10449, "-0.104"), (0.045, "0.0450"), (0.99961, "1.00"), (12.345, "12.3"),
    (2190.5, "2190"), (123456.0, "123000"), (0.0, "0"), (float("nan"), "–"), (None, "–"), (float("inf"), "–"),
])
def test_three_significant_digits(x, text):
    assert sig3(x) == text


def test_interval_and_rate_texts():
    assert interval_text({"mean": 0.104, "low": 0.0451234, "high": 0.16298}) == "0.104 [0.0451, 0.163]"
    assert interval_text({"mean": 0.5, "low": None, "high": None}) == "0.500"  # strict JSON's null: no interval
    assert interval_text(None) == interval_text({"mean": float("nan")}) == "–"
    assert rate_text({"mean": 0.01, "low": -0.0143, "high": 0.0343}) == f"0.0100 [0, 0.0343]{CLIPPED_MARK}"
    assert rate_text({"mean": 0.99, "low": 0.97, "high": 1.012}) == f"0.990 [0.970, 1.00]{CLIPPED_MARK}"
    assert rate_text({"mean": 0.5, "low": 0.4, "high": 0.6}) == "0.500 [0.400, 0.600]"


def test_markdown_table_leaves_out_columns_no_row_fills():
    lines = markdown_table(["run", "gap", "gap unseen", "bars"], [["rl", "0.1", "–", ""], ["nt", "0.2", "–", "x"]])
    assert lines == ["| run | gap | bars |", "| --- | --- | --- |", "| rl | 0.1 |  |", "| nt | 0.2 | x |"]


def _results() -> dict:
    finals = {"rl": {"seeds": [0, 1, 2], "matches": {"eval/loss_vs_random": [0.0, 0.0, 0.03],
                                                      "eval/win_vs_random": [0.91234, 0.95, 0.9],
                                                      "eval/loss_vs_perfect": [0.0, 0.01, 0.0]},
                     "simulator": {"gap": [0.1234567, 0.2, 0.3]}},
              "next_token": {"seeds": [0, 1, 2], "matches": {"eval/loss_vs_random": [0.1, 0.12, 0.11]},
                             "simulator": {"gap": [0.0123456, 0.0134, 0.0141], "no_inference_gap": 0.04}}}
    judged = claims.judged("2", "persona probe minus random init", Interval(0.0243219, 0.0021987, 0.0464321, 5,
                                                                            0.0212345, 0.00712345),
                           0.02, "figures/f3.png", evidence={"accuracy": Interval(0.98, 0.95, 1.013, 5, 0.01, 0.0),
                                                             "bayes_ceiling": 0.987654})
    out = {n: claims.not_judged(n, "not in this preset").as_dict() | {"flags": []} for n in "13456"}
    return {"preset": "synthetic", "finals": finals, "quality": claims.quality(finals),
            "claims": {"2": judged.as_dict() | {"flags": []}, **out}, "timings": {"rl": 2190.46, "next_token": 12.345},
            "total_s": 2202.8, "sizes": {"probe_games": 300}, "figures": ["figures/f3.png"], "analyses": {}}


def test_report_rounds_clips_rates_and_drops_empty_columns():
    text = report(_results())
    assert "0.0243 [0.00220, 0.0464]" in text and "game noise 0.0212, from the held-out games alone 0.00712" in text
    assert "0.0243219" not in text and "0.024 [" not in text
    subjects = text[text.index("## The subjects"):text.index("Loss and win rates")]
    header = subjects.splitlines()[2]
    # no run measured the gap on never-seen positions, nor played greedy: those columns are gone
    assert "never-seen" not in header and "loss vs greedy" not in header and "loss vs perfect" in header
    rl = next(line for line in subjects.splitlines() if line.startswith("| rl |"))
    assert "[0, " in rl and CLIPPED_MARK in rl and "clipped to [0, 1]" in subjects
    assert "- accuracy: 0.980 [0.950, 1.00]" + CLIPPED_MARK in text and "- bayes_ceiling: 0.988" in text
    assert "| rl | 2190 |" in text and "| next_token | 12.3 |" in text and "total 2200 s" in text


TARGETS = {"wall_minutes": 40, "runs": {"rl": (("loss_vs_perfect", "at_most", 0.01), ("win_vs_random", "at_least", 0.95)),
                                        "next_token": (("simulator_gap", "at_most", 0.02),),
                                        "next_token_mtp": (("simulator_gap", "at_most", 0.02),)}}


def test_preset_targets_come_out_met_and_missed():
    q = _results()["quality"]  # rl: loss vs perfect 0.00333, win vs random 0.921; next_token gap 0.0133
    t = claims.targets_met(TARGETS, q, total_s=2202.8)
    met = {(b["run"], b["measure"]): b["meets"] for b in t["bars"]}
    assert met == {("rl", "loss_vs_perfect"): True, ("rl", "win_vs_random"): False,
                   ("next_token", "simulator_gap"): True, ("next_token_mtp", "simulator_gap"): False}  # no such run
    assert t["wall"]["meets"] and t["wall"]["minutes"] == pytest.approx(36.71, abs=0.01)
    assert not claims.targets_met(TARGETS, q, total_s=2401)["wall"]["meets"]
    strict = {**TARGETS, "runs": {"rl": (("loss_vs_perfect", "at_most", 0.003),)}}
    assert not claims.targets_met(strict, q, total_s=10)["bars"][0]["meets"]
    assert claims.targets_met(None, q, total_s=10) == {}
    # A resumed reproduction's wall leaves out the stages trained before it: not measured, not met.
    resumed = claims.targets_met(TARGETS, q, total_s=600, carried=("next_token",))["wall"]
    assert resumed["meets"] is None and resumed["carried"] == ["next_token"]
    # ...unless this invocation alone took longer than the limit: a lower bound that misses it.
    assert claims.targets_met(TARGETS, q, total_s=2401, carried=("next_token",))["wall"]["meets"] is False


def test_report_states_targets_and_the_machine():
    res = _results()
    res["targets"] = claims.targets_met(TARGETS, res["quality"], res["total_s"])
    res["machine"] = {"cpu": "Test CPU", "cpus": 2, "backend": "cpu", "device": "cpu", "jax": "0.0",
                      "load_average_start": 0.1, "load_average_end": 1.9}
    text = report(res)
    section = text[text.index("## The `synthetic` preset's targets"):]
    assert "| `rl` | win vs random ≥ 0.95 | 0.921 | **no** |" in section
    assert "| `next_token` | simulator gap ≤ 0.02 | 0.0133 | yes |" in section
    assert "| reproduce | wall ≤ 40 min | 36.7 min | yes |" in section
    assert "2 × Test CPU" in section and "1.9 at the end" in section
    assert "preset's targets" not in report(_results())  # none given, no section
    res["targets"] = claims.targets_met(TARGETS, res["quality"], res["total_s"], carried=("next_token", "rl"))
    res["carried"] = ["next_token", "rl"]
    text = report(res)
    assert ("| reproduce | wall ≤ 40 min | 36.7 min (resumed: `next_token`, `rl` trained before, not counted) "
            "| not measured |") in text
    assert "Resumed: `next_token`, `rl` trained (in part) before" in text
    assert "resumed, so a lower bound on the whole" in text and "s (this invocation; stages trained" in text


def test_report_reads_the_gap_against_the_no_inference_reference():
    res = _results()
    learnt = res["quality"]["next_token"]["inference_learnt"]
    assert learnt["mean"] == pytest.approx(1 - 0.0132819 / 0.04, abs=1e-6)
    assert "inference_learnt" in res["quality"]["rl"] or "no_inference_gap" not in res["finals"]["rl"]["simulator"]
    text = report(res)
    assert "has a gap of 0.0400 nats/move" in text and "`next_token` 0.668 [" in text
    assert "`rl` " not in text[text.index("Persona inference"):text.index("Persona inference") + 400]  # no gap bar


def test_relative_paths_rewrites_paths_under_the_root_only(tmp_path, monkeypatch):
    root = tmp_path / "out"
    (root / "runs").mkdir(parents=True)
    monkeypatch.chdir(root / "runs")  # a bare name is never read as a path, wherever one stands
    obj = {"run": str(root / "runs" / "rl"), "other": str(tmp_path / "elsewhere"), "persona": "perfect",
           "rows": [[0.5, 1], {"dir": "rl/checkpoints"}], "n": 3}
    assert relative_paths(obj, root) == {"run": "runs/rl", "other": str(tmp_path / "elsewhere"), "persona": "perfect",
                                         "rows": [[0.5, 1], {"dir": "runs/rl/checkpoints"}], "n": 3}
