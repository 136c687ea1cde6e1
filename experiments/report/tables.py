"""Plain-text tables that analysis subcommands print (seed means, one row per layer)."""

from __future__ import annotations

import numpy as np

from agentsim.experiments.report.figures import PANELS


def change_table(result: dict, target: str = "mixture_value") -> str:
    """Seed means per layer, one row per layer: claim 4's three measures (weights: relative change
    and the updated fraction at the rule's tolerance; representation: CKA and the probe change;
    patching: the move distribution's and play's change with the pretrained residual patched in,
    beside the matched random-init control)."""
    comps = result["comparisons"]
    tol = f"{result.get('update_tolerance', 1e-3):g}"
    patch = result.get("patching") or {}
    sources = list(patch.get("distribution", {}).get("tv", {}))
    play = patch.get("play", {}).get("behaviour_change", {})
    head = f"{'layer':7s}" + "".join(
        f" {k + ' ΔW/W':>14s} {k + ' upd>' + tol:>16s} {k + ' CKA':>12s} {k + ' ΔR²':>12s}" for k in comps)
    head += f" {'seed floor':>11s}" + "".join(f" {'TV ' + s:>15s}" for s in sources)
    head += "".join(f" {'Δplay ' + s:>18s}" for s in play)
    lines = [head]
    floor = np.asarray(result["seed_floor"]["cka"], float)

    def cell(values, r, spec):  # spec: a format with its width, e.g. "+12.3f"; blank where r is None
        return f"{np.mean(np.asarray(values)[:, r]):{spec}}" if r is not None else " " * len(f"{0.0:{spec}}")

    for i, name in enumerate(result["layers"]):
        r = result["resid_layers"].index(name) if name in result["resid_layers"] else None
        row = f"{name:7s}"
        for c in comps.values():
            upd = c.get("updated_fraction", {}).get(tol)
            row += f" {np.mean(np.asarray(c['weight_change'])[:, i]):14.4f}"
            row += f" {np.mean(np.asarray(upd)[:, i]):16.3f}" if upd is not None else f" {'':16s}"
            row += f" {cell(c['cka'], r, '12.3f')} {cell(c['delta_probe_r2'][target], r, '+12.3f')}"
        row += f" {cell(floor, r, '11.3f')}" if len(floor) else f" {'':11s}"
        row += "".join(f" {cell(patch['distribution']['tv'][s], r, '15.3f')}" for s in sources)
        row += "".join(f" {cell(play[s], r, '18.3f')}" for s in play)
        lines.append(row.rstrip())
    return "\n".join(lines)


def layer_reset_table(result: dict) -> str:
    """Seed means: the unmodified baselines, then every (layer, variant)."""
    metrics = [m for m, _ in PANELS]

    def row(layer, variant, values):
        return f"{layer:7s} {variant[:11]:11s} " + " ".join(f"{np.mean(values[m]):15.3f}" for m in metrics)

    lines = [f"{'layer':7s} {'variant':11s} " + " ".join(f"{m.split('/')[0]:>15s}" for m in metrics)]
    lines += [row("-", base, result["baseline"][base]) for base in result["baseline"]]
    lines += [row(layer, v, result["reset"][v][layer]) for layer in result["layers"] for v in ("pretrained", "init", "perturb")]
    return "\n".join(lines)


EMPTY_CELLS = ("", "–")


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table's lines, leaving out every column that no row fills (a measurement the
    preset did not make would otherwise be a column of dashes)."""
    keep = [j for j in range(len(header)) if not rows or any(row[j] not in EMPTY_CELLS for row in rows)]
    return ["| " + " | ".join(cells[j] for j in keep) + " |"
            for cells in (header, ["---"] * len(header), *rows)]
