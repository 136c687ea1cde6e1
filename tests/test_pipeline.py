"""End to end: `reproduce` on the tiny preset writes everything the README promises, and the
probe pipeline recovers a feature planted in a network's residual stream."""

import json

import numpy as np
import pytest

from envs.dataset import Layout, generate
from experiments.analysis.heldout import HeldOut
from experiments.analysis.model import LoadedModel
from experiments.config import load_config, seed_keys
from experiments.report.reproduce import reproduce
from experiments.runs.run import RunError
from models.probes import probe_layers, shuffled
from models.transformer import init_params

pytestmark = pytest.mark.slow

REGIMES = ("next_token", "random_init", "rl", "pretrain_rl")
VERDICTS = {"supported", "contradicted", "inconclusive"}


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce")
    results = reproduce("tiny", out, overrides=("log.wandb='disabled'",), probe_games=300,
                        on_message=lambda m: None)
    return out, results


FIGURES = ("value_probe_by_layer", "f1_value_probe_layer_by_checkpoint", "f2_probe_targets_controls",
           "f3_persona_probe_by_move", "f4_where_rl_changes", "f5_layer_reset", "f6_steering_next_token",
           "f6_steering_pretrain_rl", "f7_rl_amount", "f8_mtp_vs_ntp", "f9_behaviour")


def test_every_figure_written(reproduced):
    """The tiny preset runs every stage of the paper preset, so every figure F1-F9 appears."""
    out, results = reproduced
    for name in FIGURES:
        for ext in ("png", "pdf"):
            path = out / "figures" / f"{name}.{ext}"
            assert path.exists() and path.stat().st_size > 1000, path
        assert f"figures/{name}.png" in results["figures"]


def test_every_claim_has_a_verdict_and_mlp_probes_ran(reproduced):
    _, results = reproduced
    assert set(results["claims"]) == {"1", "2", "3", "4", "5", "6"}
    assert all(c["verdict"] in VERDICTS for c in results["claims"].values())
    suite = results["analyses"]["probe_suite"]["next_token"]["targets"]
    assert set(suite["persona_mover"]["mlp"]) == {"trained", "random_init", "control_task"}
    assert set(suite["value_mover"]["mlp"]) == {"trained", "random_init", "shuffled"}
    # the persona-prompted simulator is played once per roster persona (claim 2's behaviour)
    assert "prompted_as_perfect_loss_vs_perfect" in results["claims"]["2"]


def test_results_json(reproduced):
    out, returned = reproduced
    results = json.loads((out / "results.json").read_text())
    assert results["preset"] == "tiny"
    assert set(results["regimes"]) >= set(REGIMES)
    claim = results["claims"]["1"]
    assert claim["verdict"] in VERDICTS
    for regime in ("rl", "pretrain_rl", "next_token"):
        assert claim["by_regime"][regime]["verdict"] in VERDICTS
    assert claim["verdict"] == claim["by_regime"]["rl"]["verdict"]
    num_layers = load_config("tiny").model.num_layers
    for regime, entry in results["regimes"].items():
        for target in ("expected_outcome", "minimax"):
            probe = entry["probe"][target]
            assert len(probe["r2_by_layer"]["mean"]) == num_layers + 1
            assert 0 <= probe["best_layer"] <= num_layers
        assert set(entry["matches"]) >= {"random", "greedy", "perfect"}
    assert json.loads(json.dumps(returned)) == results


def test_random_init_regime_is_its_own_control(reproduced):
    """The random_init run *is* the control network, so its emergence is exactly zero."""
    out, results = reproduced
    probes = json.loads((out / "runs" / "random_init" / "probes.json").read_text())
    for scores in probes["targets"].values():
        assert scores["trained"] == scores["random_init"]
    emergence = results["regimes"]["random_init"]["probe"]["expected_outcome"]["emergence_by_layer"]
    assert np.allclose(emergence["mean"], 0.0)


def test_report_mentions_every_regime(reproduced):
    out, results = reproduced
    report = (out / "REPORT.md").read_text()
    for regime in REGIMES:
        assert regime in report
    assert results["claims"]["1"]["verdict"] in report


def test_every_run_dir_is_complete(reproduced):
    out, _ = reproduced
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert set(runs) >= set(REGIMES)
    for regime in runs:
        run = out / "runs" / regime
        for name in ("config.json", "final.json", "probes.json", "status.json"):
            assert (run / name).exists(), f"{regime}/{name}"
        assert json.loads((run / "status.json").read_text())["status"] == "finished"
        final = json.loads((run / "final.json").read_text())
        assert len(final["seeds"]) == len(load_config("tiny").train.seeds)
        cfg = json.loads((run / "config.json").read_text())
        assert cfg["log"]["wandb"] == "disabled"
        if regime in REGIMES:
            assert cfg["train"]["regime"] == regime


def test_reproduce_refuses_a_non_empty_dir(reproduced):
    out, _ = reproduced
    before = (out / "results.json").read_bytes()
    with pytest.raises(RunError, match="not empty"):
        reproduce("tiny", out, overrides=("log.wandb='disabled'",), probe_games=300)
    assert (out / "results.json").read_bytes() == before


def test_probe_recovers_a_planted_feature_and_not_shuffled_labels():
    cfg = load_config("tiny", overrides=["data.num_games=400"])
    layout = Layout.for_config(cfg.data)
    data = generate(cfg.data)
    graphdef, params = init_params(cfg.model, layout.vocab_size, layout.seq_len, seed_keys(cfg))
    resid = LoadedModel(cfg, layout, graphdef, params).run_with_cache(data["tokens"], ("resid",))["resid"]
    held = HeldOut.from_data(data)
    flat = resid[0][:, held.mask]  # [L+1, rows, D]
    mask = held.mask
    assert flat.shape == (cfg.model.num_layers + 1, mask.sum(), cfg.model.d_model)
    rng = np.random.default_rng(0)
    y = flat[1] @ rng.normal(size=cfg.model.d_model) + 0.01 * rng.normal(size=len(flat[1]))
    move_of_row, rows = held.move, held.splits
    r2 = probe_layers(flat, y, *rows).test_r2
    assert r2[1] > 0.95, r2
    # The control shuffles labels across games at the same move number, so it keeps what the
    # move number alone predicts; take that part out of the planted feature and nothing is left.
    by_move = np.array([y[move_of_row == m].mean() for m in range(layout.max_moves)])
    y_within = y - by_move[move_of_row]
    r2_within = probe_layers(flat, y_within, *rows).test_r2
    r2_shuffled = probe_layers(flat, shuffled(y_within, move_of_row, rng), *rows).test_r2
    assert r2_within[1] > 0.85, r2_within
    assert np.all(np.abs(r2_shuffled) < 0.05), r2_shuffled
    r2_all_shuffled = probe_layers(flat, shuffled(y, None, rng), *rows).test_r2
    assert np.all(np.abs(r2_all_shuffled) < 0.05), r2_all_shuffled
