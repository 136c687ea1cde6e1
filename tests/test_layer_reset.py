"""Claim-4 layer-reset ablation: resets touch exactly one layer and undo exactly what they say.

The "tuned" model here is the pretrained one with chosen layers moved by hand, so which layers
changed is known: resetting an unchanged layer must change nothing, and resetting every layer
must give back the pretrained model's numbers exactly.
"""

import json

import jax
import numpy as np
import pytest

from agentsim.experiments import cli
from agentsim.experiments.analysis import layer_reset as lr
from agentsim.experiments.analysis.heldout import held_out
from agentsim.experiments.analysis.layers import diff, layer_of, sq_norms
from agentsim.experiments.analysis.model import LoadedModel

LAYERS = ["emb", "block1", "block2", "head"]


@pytest.fixture(scope="module")
def run(tiny_next_token):
    return tiny_next_token


def moved(model: LoadedModel, layers, scale: float = 0.5) -> LoadedModel:
    """``model`` with noise of relative size ``scale`` added to the given layers only."""
    rng = np.random.default_rng(1)  # numpy, not jax.random: eager jax ops compile per shape
    return model.with_params(jax.tree_util.tree_map_with_path(
        lambda p, a: (np.asarray(a) + scale * (np.std(a) + 0.1) * rng.standard_normal(np.shape(a))).astype(a.dtype)
        if layer_of(p) in layers else a, model.params))


@pytest.fixture(scope="module")
def pre(run):
    return LoadedModel.from_run(run)


@pytest.fixture(scope="module")
def result(pre):
    tuned = moved(pre, {"block1", "block2", "head"})  # the embeddings are left as pretrained
    held = held_out(pre.cfg, 60)
    return lr.layer_reset(pre, tuned, held, games_per_cell=8)


def test_reset_of_unchanged_layer_changes_nothing(result):
    for metric, tuned in result["baseline"]["tuned"].items():
        assert result["reset"]["pretrained"]["emb"][metric] == tuned, metric
        assert result["reset"]["perturb"]["emb"][metric] == tuned, metric  # zero-norm perturbation
    np.testing.assert_array_equal(result["delta_norm"]["emb"], 0.0)


def test_reset_of_every_layer_is_the_pretrained_model(result):
    assert result["baseline"]["all_to_pretrained"] == result["baseline"]["pretrained"]
    assert result["baseline"]["tuned"] != result["baseline"]["pretrained"]
    assert set(result["reset"]["init"]) == set(LAYERS)


def test_splice_replaces_only_the_named_layer(pre):
    init = pre.at_init()
    out = lr.splice(pre.params, init.params, "block2")
    dist = np.sqrt(sq_norms(diff(out, pre.params), LAYERS + ["critic", "value"]))
    assert (dist[:, 2] > 0).all()
    np.testing.assert_array_equal(dist[:, [0, 1, 3, 4, 5]], 0.0)
    np.testing.assert_array_equal(sq_norms(diff(out, init.params), ["block2"]), 0.0)


def test_perturbation_has_the_stated_norm(pre):
    norm_S = np.array([0.7, 2.5])
    out = lr.perturb(pre.params, "block1", norm_S, seed=3)
    dist = np.sqrt(sq_norms(diff(out, pre.params), LAYERS + ["critic", "value"]))
    np.testing.assert_allclose(dist[:, 1], norm_S, rtol=1e-5)
    np.testing.assert_array_equal(dist[:, [0, 2, 3, 4, 5]], 0.0)


def test_analyse_and_cli_on_a_run_against_itself(run, tmp_path):
    out = tmp_path / "reset.json"
    assert cli.main(["layer-reset", str(run), str(run), "--out", str(out), "--games", "60",
                     "--games-per-cell", "8"]) == 0
    res = json.loads(out.read_text())
    assert (tmp_path / "f5_layer_reset.png").exists() and (tmp_path / "f5_layer_reset.pdf").exists()
    assert res["layers"] == LAYERS and res["seeds"] == [0, 1]
    for layer in LAYERS:  # tuned == pretrained: resets to pretrained and zero-norm moves are no-ops
        assert res["reset"]["pretrained"][layer] == res["baseline"]["tuned"]
        assert res["reset"]["perturb"][layer] == res["baseline"]["tuned"]
    with pytest.raises(ValueError, match="games_per_cell"):
        lr.analyse_layer_reset(run, run, num_games=60, games_per_cell=0)
