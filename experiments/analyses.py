"""Every analysis of the paper preset, run on the run directories of a reproduction.

Each analysis is also its own CLI subcommand usable on any run directory; this module only
sequences them and collects their JSON results and figures.
"""

from __future__ import annotations

import time
from pathlib import Path

from experiments import figures as F
from experiments.probe_suite import analyse_probes, analyse_timeline


def run_all(dirs: dict[str, Path], fig_dir: Path, sizes, on_message=print) -> tuple[dict, list[Path]]:
    """``sizes``: an ``experiments.reproduce.AnalysisSizes`` (held-out games, grids)."""
    probe_games = sizes.probe_games
    results: dict = {}
    paths: list[Path] = []
    have = {k: v for k, v in dirs.items()}
    seconds: dict[str, float] = {}
    clock = [time.time()]

    def lap(name: str) -> None:  # wall time of each analysis, reported beside the stages'
        now = time.time()
        seconds[name] = round(now - clock[0], 1)
        clock[0] = now
        on_message(f"analysis {name}: {seconds[name]:.0f} s")

    # WHAT AND WHERE: the probe suite on every trained model (F2, F3, F8).
    # MLP probes (F2) only on the three regimes F2 compares; F8 needs the linear probes of the MTP run.
    suites = {name: analyse_probes(have[name], num_games=probe_games) for name in ("next_token", "rl", "pretrain_rl")
              if name in have}
    if "next_token_mtp" in have:
        suites["next_token_mtp"] = analyse_probes(have["next_token_mtp"], num_games=probe_games, mlp_targets=())
    results["probe_suite"] = suites
    main = {k: suites[k] for k in ("next_token", "rl", "pretrain_rl") if k in suites}
    paths += F.probe_grid(main, fig_dir)
    paths += F.persona_by_move({k: suites[k] for k in ("next_token", "next_token_mtp", "pretrain_rl") if k in suites}, fig_dir)
    if "next_token_mtp" in suites:
        paths += F.mtp_vs_ntp({k: suites[k] for k in ("next_token", "next_token_mtp")}, fig_dir)
    lap("probe_suite")

    # WHEN: probes at every checkpoint (F1).
    timelines = {k: analyse_timeline(have[k], num_games=probe_games) for k in ("next_token", "rl", "pretrain_rl") if k in have}
    results["timeline"] = timelines
    paths += F.timeline(timelines, fig_dir)
    paths += F.timeline({k: timelines[k] for k in timelines}, fig_dir, target="minimax_mover",
                        name="f1b_minimax_probe_layer_by_checkpoint")
    lap("timeline")

    if "pretrain_rl" in have and "next_token" in have:
        from experiments import change, layer_reset

        # WHERE RL CHANGES THE NETWORK (F4) and how that grows with RL (F7).
        results["change"] = change.analyse_change(have["next_token"], have["pretrain_rl"],
                                                  control_dir=have.get("continued_next_token"), num_games=probe_games)
        paths += change.plot_change(results["change"], fig_dir)
        results["rl_amount"] = change.analyse_rl_amount(have["next_token"], have["pretrain_rl"], timelines.get("pretrain_rl"))
        paths += F.rl_amount(results["rl_amount"], fig_dir)
        lap("change")
        # LAYER RESET (F5).
        results["layer_reset"] = layer_reset.analyse_layer_reset(have["next_token"], have["pretrain_rl"],
                                                                 num_games=probe_games,
                                                                 games_per_cell=sizes.games_per_cell)
        paths += layer_reset.plot_layer_reset(results["layer_reset"], fig_dir)
        lap("layer_reset")

    # STEERING (F6) and BEHAVIOUR (F9).
    from experiments import behaviour, steering

    # The grid is the preset's: the CLI's full one (9 strengths, 3 random directions) takes minutes per run.
    results["steering"] = {k: steering.analyse_steering(have[k], alphas=sizes.steer_alphas, num_games=min(probe_games, 1000),
                                                        games_per_cell=sizes.steer_games_per_cell,
                                                        num_random=sizes.steer_random)
                           for k in sizes.steer_runs if k in have}
    for stage, res in results["steering"].items():
        paths += steering.plot_steering(res, fig_dir, name=f"f6_steering_{stage}")
    lap("steering")
    results["behaviour"] = behaviour.analyse_behaviour(
        {k: str(v) for k, v in have.items()}, pretrained_dir=str(have["next_token"]) if "next_token" in have else None,
        num_games=probe_games, games_per_cell=sizes.games_per_cell)
    paths += behaviour.plot_behaviour(results["behaviour"], fig_dir)
    lap("behaviour")
    results["seconds"] = seconds
    return results, paths
