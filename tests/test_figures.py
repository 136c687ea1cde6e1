"""Every figure, drawn from hand-made results dictionaries (no training), is ready for a paper:
its legend says what the lines and bands are and covers no panel, every numeric axis names its
unit, layer axes tick at whole layers, and F0's rings (the chosen layers) are explained."""

import re

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.container import BarContainer

from agentsim.experiments.report import figures as F

S, L, B = 3, 4, 3  # seeds, layers (0 = embeddings), blocks
RNG = np.random.default_rng(0)


def _r(*shape):
    return RNG.uniform(0.1, 0.9, shape).tolist()


def _probe_seeds(n_layers=L):
    return [{"test_r2": _r(n_layers), "layer": 2} for _ in range(S)]


def _value_entry(nets=("policy", "simulator", "random_init")):
    networks = {n: _probe_seeds() for n in nets} | {"value_head": [{"test_r2": [0.5]} for _ in range(S)]}
    return {"networks": networks, "ceiling": [{"test_r2": [1.0]} for _ in range(S)]}


def value_measures():
    targets = {"agent_value": _value_entry(), "mixture_value": _value_entry()}
    return {"rl": {"datasets": {"own_games": {"targets": {"agent_value": _value_entry()}},
                                "persona_games": {"targets": targets}}}}


def simulators():
    entry = {"networks": {"simulator": _probe_seeds(), "random_init": _probe_seeds()},
             "ceiling": [{"test_r2": [1.0]}] * S}
    return {k: {"datasets": {"persona_games": {"targets": {"mixture_value": entry, "minimax": entry}}}}
            for k in ("next_token", "next_token_mtp")}


def timelines():
    return {"next_token": {"steps": [0, 10, 100, 1000], "targets": {"value_mover": _r(4, S, L)}}}


def suites():
    def kinds(moves=False):
        seed = ((lambda: {"score": _r(L), "val_score": _r(L), "by_move": _r(L, 9)}) if moves
                else (lambda: {"score": _r(L), "val_score": _r(L)}))
        return {k: [seed() for _ in range(S)] for k in ("trained", "random_init", "shuffled", "control_task")}

    persona = kinds(moves=True) | {"mlp": kinds()}
    return {"next_token": {"targets": {"value_mover": kinds() | {"mlp": kinds()}, "persona_mover": persona},
                           "bayes_ceiling": {"mover": _r(9)}}}


def amount():
    return {"steps": [0, 10, 100], "layer_names": ["emb", "block1", "block2", "block3"],
            "weight_change": _r(3, S, L), "value": {"steps": [0, 10, 100], "fraction_of_gap_by_block": _r(3, S, B)}}


def change():
    names = ["emb", "block1", "block2", "block3"]
    comp = {"weight_change": _r(S, 5), "cka": _r(S, L), "delta_probe_r2": {"mixture_value": _r(S, L)}}
    return {"layers": names + ["head"], "resid_layers": names, "regimes": {"tuned": "pretrain_rl"},
            "comparisons": {"tuned": comp, "control": comp}, "seed_floor": {"cka": _r(3, L)}, "seeds": list(range(S))}


def layer_reset():
    metrics = [m for m, _ in F.PANELS]
    layers = ["emb", "block1", "block2"]

    def cell():
        return {m: _r(S) for m in metrics}

    return {"layers": layers, "regime": "pretrain_rl", "seeds": list(range(S)),
            "reset": {v: {l: cell() for l in layers} for v in F.VARIANT_STYLE},
            "baseline": {"tuned": cell(), "pretrained": cell()}}


def steering():
    dirs = ["value", "persona_perfect", "init_value", "init_persona_perfect", "random_0", "random_1"]
    alphas, layers = [-2.0, 0.0, 2.0], [1, 2]
    play = {"directions": dirs, "win": _r(S, 2, len(dirs), 3, 2), "loss": _r(S, 2, len(dirs), 3, 2)}
    ll = {"target": {k: _r(S, 2, 3) for k in ("probe", "init_probe", "random")}, "off_target": {"probe": _r(S, 2, 3)}}
    return {"alphas": alphas, "layers": layers, "play": play, "persona_loglik": ll, "seeds": list(range(S)),
            "regime": "next_token", "run": "runs/next_token"}


def behaviour():
    personas = ["random", "greedy", "perfect"]
    cons = {"by_persona": {p: {"kl": _r(S), "mass_on_persona": _r(S), "mass_on_optimal": _r(S)} for p in personas},
            "bayes_simulator": {p: {"kl": 0.1} for p in personas}}

    def run(regime):
        return {"regime": regime, "consistency": cons, "topk_shift": {"top1": _r(S), "top3": _r(S)},
                "final": {p: {"win": _r(S), "loss": _r(S)} for p in personas},
                "prompted_strength": {p: {"perfect": {"loss": _r(S)}} for p in personas}}

    return {"runs": {"next_token": run("next_token"), "pretrain_rl": run("pretrain_rl")}}


FIGURES = {
    "f0": lambda out: F.value_where_it_lives(value_measures(), out),
    "f1": lambda out: F.timeline(timelines(), out),
    "f2": lambda out: F.probe_grid(suites(), out),
    "f3": lambda out: F.persona_by_move(suites(), out),
    "f4": lambda out: F.plot_change(change(), out),
    "f5": lambda out: F.plot_layer_reset(layer_reset(), out),
    "f6": lambda out: F.plot_steering(steering(), out),
    "f7": lambda out: F.rl_amount(amount(), out),
    "f8": lambda out: F.mtp_vs_ntp(simulators(), out),
    "f9": lambda out: F.plot_behaviour(behaviour(), out),
}


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    """Each figure drawn once, laid out as ``save_figure`` would save it, and handed back as its
    matplotlib Figure (the first one also saved for real, PNG and PDF)."""
    figures: dict = {}
    save = F.save_figure

    def keep(fig, out_dir, name):
        figures[name] = fig
        return save(fig, out_dir, name) if len(figures) == 1 else []

    def draw(key):
        if key not in figures:
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(F, "save_figure", keep)
                before = set(figures)
                paths = FIGURES[key](tmp_path_factory.mktemp(key))
                (name,) = set(figures) - before
                figures[key] = figures.pop(name)
            assert all(p.exists() for p in paths)
            FigureCanvasAgg(figures[key]).draw()  # a closed figure gets a canvas again; the layout runs
        return figures[key]

    return draw


def _named_ticks(axis) -> bool:
    """Ticks labelled with names (layers, personas, targets), not numbers (mathtext aside)."""
    return any(re.search("[A-Za-z]", re.sub(r"\$.*?\$", "", t.get_text())) for t in axis.get_ticklabels())


def _legends(fig):
    return list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]


@pytest.mark.parametrize("key", sorted(FIGURES))
def test_legend_says_what_the_bands_are_and_covers_no_panel(drawn, key):
    fig = drawn(key)
    renderer = fig.canvas.get_renderer()
    legends = _legends(fig)
    assert legends, key
    for legend in legends:
        title = legend.get_title().get_text()
        assert "95 % t-interval" in title and f"{S} seeds" in title, title
        box = legend.get_window_extent(renderer)
        for ax in fig.axes:
            if ax.get_visible():
                assert not box.overlaps(ax.get_window_extent(renderer)), (key, ax.get_title())


@pytest.mark.parametrize("key", sorted(FIGURES))
def test_numeric_axes_name_their_units_and_layer_axes_tick_whole_layers(drawn, key):
    fig = drawn(key)
    for ax in (a for a in fig.axes if a.get_visible()):
        for axis, label in ((ax.xaxis, ax.get_xlabel()), (ax.yaxis, ax.get_ylabel())):
            if _named_ticks(axis):
                continue
            assert "[" in label and "]" in label, (key, ax.get_title(), label)
        if ax.get_xlabel().startswith("layer"):
            low, high = sorted(ax.get_xlim())
            ticks = [t for t in ax.get_xticks() if low <= t <= high]
            assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks), (key, ticks)


def test_f0_explains_its_rings_and_its_ceiling(drawn):
    fig = drawn("f0")
    (legend,) = _legends(fig)
    labels = [t.get_text() for t in legend.get_texts()]
    assert any(label.startswith("ring: the layer most seeds chose on validation games") for label in labels)
    assert any(label.startswith("ceiling") for label in labels)
    assert len(labels) == len(set(labels))  # one entry per label, however many panels draw it


def test_bands_are_the_t_interval_over_seeds():
    values = np.array([[1.0, 2.0], [2.0, 2.0], [3.0, 2.0]])
    ci = F.seed_band(values)
    half = 4.303 * 1.0 / np.sqrt(3)  # t(0.975, df=2) × sd / √seeds
    assert np.allclose(ci.mean, [2.0, 2.0]) and np.allclose(ci.low, [2.0 - half, 2.0], rtol=1e-3)
    assert np.allclose(ci.high, [2.0 + half, 2.0], rtol=1e-3)
    assert F.seed_note([3, 5]) == "line: mean over 3 or 5 seeds; band: 95 % t-interval of that mean (df = seeds − 1)"


def test_f2_reads_every_bar_at_the_layer_each_seed_chose_on_validation(tmp_path, monkeypatch):
    """The layer comes from validation scores among layers 1…L: here the test scores peak at layer
    3 for both seeds and validation peaks at layer 0 (never chosen), so seed 0 is read at layer 1
    and seed 1 at layer 2, and each control at its seed's layer."""
    trained = [{"score": [0.9, 0.1, 0.3, 0.8], "val_score": [0.9, 0.7, 0.2, 0.1]},
               {"score": [0.9, 0.2, 0.5, 0.8], "val_score": [0.9, 0.1, 0.6, 0.3]}]
    control = [{"score": [0.0, 0.01, 0.02, 0.03]}, {"score": [0.1, 0.11, 0.12, 0.13]}]
    suite = {"targets": {"value_mover": {"trained": trained, "random_init": control}}}
    figures = []
    monkeypatch.setattr(F, "save_figure", lambda fig, out_dir, name: figures.append(fig) or [])
    F.probe_grid({"next_token": suite}, tmp_path)
    (ax,) = figures[0].axes
    width = {c.get_label(): c.patches[0].get_width() for c in ax.containers if isinstance(c, BarContainer)}
    assert width["trained"] == pytest.approx((0.1 + 0.5) / 2)  # not 0.8, the test-best layer's mean
    assert width["random_init"] == pytest.approx((0.01 + 0.12) / 2)


def test_f6_tells_every_line_apart_and_labels_each_random_init_control(drawn):
    """Its random-init controls once shared one black dotted style with nothing to tell them apart."""
    from matplotlib.colors import to_hex

    (legend,) = _legends(drawn("f6"))
    labels = [t.get_text() for t in legend.get_texts()]
    styles = [(to_hex(h.get_color()), h.get_linestyle()) for h in legend.legend_handles]
    assert len(set(styles)) == len(styles), list(zip(labels, styles))
    assert sum("@ random init" in label for label in labels) == 3, labels
