"""Claim-4 'where RL changes the network': weight change, CKA and probe change by layer.

The checks pin the layer bookkeeping: a model against itself changes nowhere, and a change
made only in block 1 shows up only in block 1's weights and only from residual layer 1 on.
"""

import json
from dataclasses import replace

import jax
import numpy as np
import pytest

from agentsim.experiments import cli
from agentsim.experiments.analysis import change
from agentsim.experiments.analysis.heldout import held_out
from agentsim.experiments.analysis.layers import check_compatible, layer_of, weight_change
from agentsim.experiments.analysis.model import LoadedModel
from agentsim.experiments.report.tables import change_table
from agentsim.experiments.runs.run import RunError


@pytest.fixture(scope="module")
def pre(tiny_next_token):
    return LoadedModel.from_run(tiny_next_token)


@pytest.fixture(scope="module")
def held(pre):
    return held_out(pre.cfg, 60)


def perturb_block1(model: LoadedModel, scale: float = 0.5) -> LoadedModel:
    """The same model with noise of relative size ``scale`` on trunk block 0 (= layer 1) only."""
    rng = np.random.default_rng(0)  # numpy, not jax.random: eager jax ops compile per shape

    def f(path, a):
        if layer_of(path) != "block1":
            return a
        a = np.asarray(a)
        return (a + scale * a.std() * rng.standard_normal(a.shape) + scale * 0.1).astype(a.dtype)

    return model.with_params(jax.tree_util.tree_map_with_path(f, model.params))


def test_layer_of_groups_every_trunk_param(pre):
    names = {layer_of(p) for p, _ in jax.tree_util.tree_flatten_with_path(pre.params)[0]}
    assert names == {"emb", "block1", "block2", "head", "critic", "value"}


def test_model_against_itself_changes_nowhere(pre, held):
    out = change.compare(pre, pre, held, change.cka_rows(held))
    np.testing.assert_array_equal(out["weight_change"], 0.0)
    np.testing.assert_allclose(out["cka"], 1.0, atol=1e-6)
    np.testing.assert_allclose(out["cka_debiased"], 1.0, atol=1e-6)
    for delta in out["delta_probe_r2"].values():
        np.testing.assert_array_equal(delta, 0.0)


def test_change_in_block1_shows_only_in_block1(pre, held):
    tuned = perturb_block1(pre)
    out = change.compare(pre, tuned, held, change.cka_rows(held))
    w = np.asarray(out["weight_change"])  # [S, (emb, block1, block2, head)]
    assert (w[:, 1] > 0.1).all()
    np.testing.assert_array_equal(w[:, [0, 2, 3]], 0.0)
    cka = np.asarray(out["cka"])  # [S, (emb, after block1, after block2)]
    np.testing.assert_allclose(cka[:, 0], 1.0, atol=1e-6)
    assert (cka[:, 1:] < 0.999).all()
    np.testing.assert_array_equal(np.asarray(out["delta_probe_r2"]["minimax"])[:, 0], 0.0)


def test_weight_change_matches_hand_norm(pre):
    tuned = perturb_block1(pre)
    block_pre = pre.params["trunk"]["blocks"][0]
    block_tuned = tuned.params["trunk"]["blocks"][0]
    num = sum(((np.asarray(b)[0] - np.asarray(a)[0]) ** 2).sum()
              for a, b in zip(jax.tree.leaves(block_pre), jax.tree.leaves(block_tuned)))
    den = sum((np.asarray(a)[0] ** 2).sum() for a in jax.tree.leaves(block_pre))
    w = weight_change(pre.params, tuned.params, ["block1"])
    np.testing.assert_allclose(w[0, 0], np.sqrt(num / den), rtol=1e-6)


@pytest.mark.slow  # trains or analyses the shared tiny pretrain_rl run end to end
def test_analyse_change_and_cli(tiny_next_token, tiny_pretrain_rl, tmp_path, capsys):
    out = tmp_path / "change.json"
    assert cli.main(["change", str(tiny_next_token), str(tiny_pretrain_rl), "--control", str(tiny_next_token),
                     "--out", str(out), "--games", "60", "--games-per-cell", "2"]) == 0
    res = json.loads(out.read_text())
    assert (tmp_path / "f4_where_rl_changes.png").exists() and (tmp_path / "f4_where_rl_changes.pdf").exists()
    assert (tmp_path / "f4b_claim4_three_ways.png").exists()
    assert res["layers"] == ["emb", "block1", "block2", "head"] and res["seeds"] == [0, 1]
    s, g, r = 2, 4, 3
    assert np.shape(res["comparisons"]["tuned"]["weight_change"]) == (s, g)
    assert np.shape(res["comparisons"]["tuned"]["cka"]) == (s, r)
    assert np.shape(res["seed_floor"]["cka"]) == (1, r)  # one pair of seeds
    # PPO moved the policy trunk; the "control" here is the pretrained run itself.
    assert np.all(np.asarray(res["comparisons"]["tuned"]["weight_change"])[:, :3] > 0)
    np.testing.assert_array_equal(res["comparisons"]["control"]["weight_change"], 0.0)
    # Claim 4 three ways: updated fractions (none for the "control", itself), patching per resid layer.
    for tol, frac in res["comparisons"]["control"]["updated_fraction"].items():
        np.testing.assert_array_equal(frac, 0.0)
        assert np.shape(res["comparisons"]["tuned"]["updated_fraction"][tol]) == (s, g)
    patch = res["patching"]
    assert patch["sources"] == ["pretrained", "random_init"]
    for source in patch["sources"]:
        assert np.shape(patch["distribution"]["tv"][source]) == (s, r)
        assert np.shape(patch["play"]["behaviour_change"][source]) == (s, r)
        assert np.shape(patch["play"]["patched"][source]["loss"]) == (s, r, 2)
    assert patch["play"]["games_per_cell"] == 2
    # The printed table shows all three measures: the control (itself) updated nothing anywhere.
    table = change_table(res).splitlines()
    assert table[0] in capsys.readouterr().out
    head = table[0].split()
    for column in ("tuned", "upd>0.001", "control", "pretrained", "Δplay", "random_init"):
        assert column in head
    assert len(table) == 1 + len(res["layers"])
    emb = table[1].split()
    assert emb[0] == "emb" and float(emb[1]) > 0 and float(emb[2]) > 0  # tuned: ΔW/W, updated fraction
    assert float(emb[5]) == 0.0 and float(emb[6]) == 0.0  # the control's


def test_bad_inputs(tiny_next_token, pre, tmp_path, capsys):
    with pytest.raises(RunError, match="not a run directory"):
        change.analyse_change(tiny_next_token, tmp_path / "missing", num_games=60)
    with pytest.raises(ValueError, match="at least 10"):
        change.analyse_change(tiny_next_token, tiny_next_token, num_games=0)
    assert cli.main(["change", str(tiny_next_token), str(tmp_path / "missing")]) == 2
    assert "not a run directory" in capsys.readouterr().err
    wide = LoadedModel(replace(pre.cfg, model=replace(pre.cfg.model, d_model=32)), pre.layout, pre.graphdef,
                       pre.params)
    with pytest.raises(RunError, match="architectures differ"):
        check_compatible(pre, wide, "test")
    other = LoadedModel(replace(pre.cfg, train=replace(pre.cfg.train, seeds=[5, 6])), pre.layout,
                        pre.graphdef, pre.params)
    with pytest.raises(RunError, match="seeds differ"):
        check_compatible(pre, other, "test")
