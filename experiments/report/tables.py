"""Plain-text tables that analysis subcommands print (seed means, one row per layer)."""

from __future__ import annotations

import numpy as np

from agentsim.experiments.report.figures import PANELS


def change_table(result: dict, target: str = "mixture_value") -> str:
    """Seed means per layer, one row per layer."""
    comps = result["comparisons"]
    head = f"{'layer':7s}" + "".join(f" {k + ' ΔW/W':>14s} {k + ' CKA':>12s} {k + ' ΔR²':>12s}" for k in comps)
    lines = [head + f" {'seed floor':>11s}"]
    floor = np.asarray(result["seed_floor"]["cka"], float)
    for i, name in enumerate(result["layers"]):
        r = result["resid_layers"].index(name) if name in result["resid_layers"] else None
        row = f"{name:7s}"
        for c in comps.values():
            cka = f"{np.mean(np.asarray(c['cka'])[:, r]):12.3f}" if r is not None else f"{'':12s}"
            dr2 = f"{np.mean(np.asarray(c['delta_probe_r2'][target])[:, r]):+12.3f}" if r is not None else f"{'':12s}"
            row += f" {np.mean(np.asarray(c['weight_change'])[:, i]):14.4f} {cka} {dr2}"
        row += f" {floor[:, r].mean():11.3f}" if r is not None and len(floor) else ""
        lines.append(row)
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
