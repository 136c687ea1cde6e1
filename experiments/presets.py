"""Named presets: what a preset trains and how large its analyses are.

``PRESETS``: partial configs merged over the defaults (``--preset NAME``). ``STAGES``: the runs
``agentsim reproduce --preset NAME`` trains, in order. ``SIZES``: held-out games and grids of
its analyses. Data only, so the CLI, configs and the reproduction read one table.
"""

from __future__ import annotations

from dataclasses import dataclass

# Sizes tuned so that `agentsim reproduce --preset quick` runs in minutes on a 2-core CPU.
PRESETS: dict[str, dict] = {
    "quick": {
        "data": {"num_games": 20_000},
        "model": {"num_layers": 2, "d_model": 64, "num_heads": 4},
        "train": {"seeds": [0, 1, 2], "steps": 1500, "chunk": 100, "batch_size": 128},
        "ppo": {"num_envs": 256},
    },
    "tiny": {  # for tests: everything runs, nothing is learnt
        "data": {"num_games": 600},
        "model": {"num_layers": 2, "d_model": 16, "num_heads": 2, "mlp_ratio": 2},
        "train": {"seeds": [0, 1], "steps": 4, "chunk": 2, "batch_size": 16, "warmup": 1,
                  "eval_games": 200, "checkpoint_every": 1,
                  "eval_games_per_cell": 4, "final_games_per_cell": 8},
        "ppo": {"num_envs": 8, "epochs": 1, "minibatches": 2},
    },
}

# Connect-four on 5×4 (3,945,711 positions; 4×4 for tests): personas on a skill ladder, agents
# trained against its upper rungs. Networks stay far smaller than the board's positions
# (2L d64: about 2·10⁵ parameters), so a simulator must compute rather than look positions up.
C4_MIXTURE = {"random": 1.0, "greedy": 1.0, "center": 1.0, "depth:2": 1.0, "perfect": 1.0}
C4_POOL = {"random": 1.0, "greedy": 1.0, "depth:2": 1.0, "perfect": 2.0}  # perfect twice, as the PPO default
# Every run of a preset shares the next_token run's data config, so "seen in training" means the
# same games for all of them (``analysis.heldout.training_positions``).
# PPO on 5×4 (a study of 7 settings × 3 seeds, 150 iterations × 256 games; in the closing note of
# issue 12): both sides equally often (X, not O, is the side agents lose with here: 5×4 is a draw
# whose openings are easy to lose) and a small entropy bonus (0.01: win rate against random 0.65
# and loss against perfect 0.16 on average, against 0.59 and 0.21 at the tic-tac-toe default 0.1).
C4_PPO = {"num_envs": 256, "opponents": C4_POOL, "o_fraction": 0.5, "ent_coef": 0.01}
# The paper preset: the quick preset's config at 4 layers (so that claim 4 has more than two blocks
# to compare) with 5 seeds; its stages train for longer (STAGES["paper"]).
PRESETS["paper"] = {**PRESETS["quick"], "model": {**PRESETS["quick"]["model"], "num_layers": 4},
                    "train": {**PRESETS["quick"]["train"], "seeds": [0, 1, 2, 3, 4]}}
PRESETS["c4-quick"] = {
    "data": {"game": "connect_four:5x4", "num_games": 100_000, "mixture": C4_MIXTURE},
    "model": {"num_layers": 2, "d_model": 64, "num_heads": 4},
    "train": {"seeds": [0, 1, 2], "steps": 1500, "chunk": 100, "batch_size": 128, "eval_games": 1000,
              "eval_games_per_cell": 64, "final_games_per_cell": 128},
    "ppo": C4_PPO,
}
# The c4 preset at 4 layers, as the paper preset (issue 17), so that claim 4 has 4 blocks to compare:
# 4 × 12 × 64² ≈ 2·10⁵ block parameters per trunk, still far fewer than the board's positions.
PRESETS["c4"] = {**PRESETS["c4-quick"], "data": {**PRESETS["c4-quick"]["data"], "num_games": 200_000},
                 "model": {**PRESETS["c4-quick"]["model"], "num_layers": 4}}
PRESETS["c4-tiny"] = {  # for tests: the tiny preset on 4×4
    **PRESETS["tiny"],
    "data": {"game": "connect_four:4x4", "num_games": 400, "mixture": C4_MIXTURE},
    "ppo": {**PRESETS["tiny"]["ppo"], "opponents": C4_POOL},
}

# PPO at the quick preset (STUDIES.md, "PPO on tic-tac-toe"): many games per iteration, few epochs.
# A rollout of 512 games costs little more per game than one of 128 (the small policy is
# dispatch-bound), so 4× the games for about 2× the time took rl from 13.5 % / 15.5 % lost against
# random / perfect (60 iterations × 128 games, 8 epochs, lr 1e-3) to 1.6 % / 1.8 % (3 seeds).
QUICK_PPO = ["ppo.num_envs=512", "ppo.epochs=4", "ppo.minibatches=8", "ppo.lr=0.002"]
# At 4 layers the same with half the learning rate (STUDIES.md, "PPO at 4 layers"): rl lost 1.37 %
# of its games against perfect play at lr 2e-3 and 0.07 % at 1e-3 (3 seeds, same cost).
PAPER_PPO = ["ppo.num_envs=512", "ppo.epochs=4", "ppo.minibatches=8", "ppo.lr=0.001"]

# The c4 preset's PPO stages in the same shape (512 games an iteration, 4 epochs × 8 minibatches,
# lr 1e-3; STUDIES.md, "Connect four at 4 layers", 3 seeds each): against random play pretrain_rl
# won 80 % and lost 4.3 % (73 % and 6.8 % at 256 games × 8 epochs × 4), rl won 68 % and lost 8.5 %
# (56–59 % and 16 %), at 1.04× the FLOPs; against perfect play the seeds spread too widely at 3
# seeds to tell the two shapes apart.
C4_STAGE_PPO = ["ppo.num_envs=512", "ppo.epochs=4", "ppo.minibatches=8"]

# Each preset is a list of stages: (run name, overrides over the preset). A stage may refer to
# an earlier stage's run directory as {run:NAME}. Stages run in order.
STAGES = {
    # Every figure but F8 (no multi-token run) at reduced size, F6 for the simulator only, in about
    # ten minutes on 2 cores (486–572 s inside `reproduce`, 552–651 s with the install, fresh clone, empty XLA
    # cache, idle machine, 2026-12-07; the target, TARGETS["quick"], is 6).
    "quick": [
        # 2500 steps: the simulator's gap falls as a power of compute (STUDIES.md, "How far the
        # simulator falls with training": 0.038 at 1000 steps, 0.030 at 2000, 0.023 at 4000).
        # The 2000-game validation loss costs a quarter of a 25-step chunk: every fourth chunk
        # (and every checkpoint) is enough for the curve.
        ("next_token", ["train.regime='next_token'", "train.steps=2500", "train.chunk=25", "train.lr=0.006",
                        "data.num_games=100000", "train.log_checkpoints=14", "train.checkpoint_every=50",
                        "train.eval_every=4"]),
        ("random_init", ["train.regime='random_init'"]),
        ("rl", ["train.regime='rl'", "train.steps=80", "train.chunk=20", "train.log_checkpoints=3",
                *QUICK_PPO]),
        ("pretrain_rl", ["train.regime='pretrain_rl'", "train.steps=80", "train.chunk=20", *QUICK_PPO,
                         "train.log_checkpoints=4", "ppo.pretrained='{run:next_token}'"]),
    ],
    # 4 layers, 5 seeds (PRESETS["paper"]); every agent trains with the same PPO settings
    # (PAPER_PPO) for 100 iterations of 512 games.
    "paper": [
        ("next_token", ["train.regime='next_token'", "train.steps=1500", "train.chunk=25",
                        "data.num_games=100000", "train.log_checkpoints=14", "train.checkpoint_every=60",
                        "train.eval_every=4"]),
        ("random_init", ["train.regime='random_init'"]),
        ("rl", ["train.regime='rl'", "train.steps=100", "train.chunk=10", "train.log_checkpoints=6", *PAPER_PPO]),
        # The simulator of the rl agent (claim 1): next_token as above, on each rl seed's own games.
        ("next_token_of_rl", ["train.regime='next_token'", "train.steps=1500", "train.chunk=25",
                              "data.num_games=100000", "train.checkpoint_every=60", "train.eval_every=4",
                              "data.source='{run:rl}'"]),
        ("pretrain_rl", ["train.regime='pretrain_rl'", "train.steps=100", "train.chunk=10", *PAPER_PPO,
                         "train.log_checkpoints=6", "ppo.pretrained='{run:next_token}'"]),
        ("continued_next_token", ["train.regime='next_token'", "train.steps=500", "train.chunk=250",
                                  "data.num_games=100000", "train.init_from='{run:next_token}'"]),
        ("next_token_mtp", ["train.regime='next_token'", "train.steps=1500", "train.chunk=250",
                            "data.num_games=100000", "model.mtp_heads=2"]),
        ("next_token_prompted", ["train.regime='next_token'", "train.steps=1500", "train.chunk=250",
                                 "data.num_games=100000", "data.persona_prompt=true"]),
        ("rl_shared_value", ["train.regime='rl'", "train.steps=100", "train.chunk=20", "model.value_head='shared'",
                             *PAPER_PPO]),
    ],
    # Every stage of the paper preset, so that tests run every analysis path.
    "tiny": [
        ("next_token", ["train.regime='next_token'", "train.log_checkpoints=2"]),
        ("random_init", ["train.regime='random_init'"]),
        ("rl", ["train.regime='rl'"]),
        ("next_token_of_rl", ["train.regime='next_token'", "data.source='{run:rl}'"]),
        ("pretrain_rl", ["train.regime='pretrain_rl'", "ppo.pretrained='{run:next_token}'"]),
        ("continued_next_token", ["train.regime='next_token'", "train.init_from='{run:next_token}'"]),
        ("next_token_mtp", ["train.regime='next_token'", "model.mtp_heads=2"]),
        ("next_token_prompted", ["train.regime='next_token'", "data.persona_prompt=true"]),
        ("rl_shared_value", ["train.regime='rl'", "model.value_head='shared'"]),
    ],
}
STAGES["c4-tiny"] = STAGES["tiny"]
STAGES["c4-quick"] = [
    ("next_token", ["train.regime='next_token'", "train.steps=1000", "train.chunk=25",
                    "train.log_checkpoints=14", "train.checkpoint_every=40"]),
    ("random_init", ["train.regime='random_init'"]),
    ("rl", ["train.regime='rl'", "train.steps=60", "train.chunk=20", "train.log_checkpoints=3", "ppo.num_envs=128"]),
    ("pretrain_rl", ["train.regime='pretrain_rl'", "train.steps=60", "train.chunk=20", "ppo.num_envs=128",
                     "train.log_checkpoints=4", "ppo.pretrained='{run:next_token}'"]),
]
# Every stage of the paper preset at 4 layers: the next-token runs and the RL iterations are what
# cost (at 4 layers ≈ 0.045 s per step and seed, ≈ 0.87 s per PPO iteration and seed; STUDIES.md,
# "Connect four at 4 layers"). The validation loss of 1000 games costs about 8 % of a 50-step chunk
# (0.6 s of 8.3): every fourth chunk (and every logged checkpoint) is enough for the curve.
STAGES["c4"] = [
    ("next_token", ["train.regime='next_token'", "train.steps=2000", "train.chunk=50",
                    "train.log_checkpoints=14", "train.checkpoint_every=50", "train.eval_every=4"]),
    ("random_init", ["train.regime='random_init'"]),
    ("rl", ["train.regime='rl'", "train.steps=100", "train.chunk=10", "train.log_checkpoints=6", *C4_STAGE_PPO]),
    ("next_token_of_rl", ["train.regime='next_token'", "train.steps=2000", "train.chunk=50",
                          "train.checkpoint_every=50", "train.eval_every=4", "data.source='{run:rl}'"]),
    # Its first 10 iterations train the critic alone (STUDIES.md, "Connect four at 4 layers": 6 seeds
    # from the same simulators lost 2.4 % against perfect play, none more than 5.1 %; without, 13.5 %,
    # two seeds above 30 %, a difference 6 seeds do not resolve (Welch p = 0.17); against random
    # play the same).
    ("pretrain_rl", ["train.regime='pretrain_rl'", "train.steps=100", "train.chunk=10",
                     "train.log_checkpoints=6", "ppo.pretrained='{run:next_token}'", *C4_STAGE_PPO,
                     "ppo.critic_warmup=10"]),
    ("continued_next_token", ["train.regime='next_token'", "train.steps=300", "train.chunk=150",
                              "train.init_from='{run:next_token}'"]),
    ("next_token_mtp", ["train.regime='next_token'", "train.steps=1000", "train.chunk=250",
                        "model.mtp_heads=2"]),
    ("next_token_prompted", ["train.regime='next_token'", "train.steps=1000", "train.chunk=250",
                             "data.persona_prompt=true"]),
    ("rl_shared_value", ["train.regime='rl'", "train.steps=60", "train.chunk=20", "model.value_head='shared'",
                         *C4_STAGE_PPO]),
]


# The long tier, for a GPU or a night: every stage of paper / c4 at 8 layers of width 128 with
# ≥ 10× their games (next-token: 512-game batches for 10× the steps' games and a 10× dataset;
# PPO: 512 games an iteration, as paper's and c4's have, for 10× their iterations).
# `agentsim cost --preset paper-long` counts its model FLOPs and estimates its time on 2 CPU
# cores and on one GPU.
LONG_MODEL = {"num_layers": 8, "d_model": 128, "num_heads": 8}
LONG_TRAIN = {"seeds": [0, 1, 2, 3, 4], "batch_size": 512, "warmup": 500, "lr": 1e-3}
PRESETS["long"] = {**PRESETS["quick"], "data": {"num_games": 1_000_000}, "model": LONG_MODEL,
                   "train": {**PRESETS["quick"]["train"], **LONG_TRAIN}, "ppo": {"num_envs": 512}}
PRESETS["c4-long"] = {**PRESETS["c4"], "data": {**PRESETS["c4"]["data"], "num_games": 2_000_000},
                      "model": LONG_MODEL, "train": {**PRESETS["c4"]["train"], **LONG_TRAIN},
                      "ppo": {**C4_PPO, "num_envs": 512}}


def longer(stages: list[tuple[str, list[str]]], next_token_steps: dict[str, int], ppo_steps: dict[str, int]):
    """A preset's stages with new step counts (chunks of a tenth of a run) and their own data
    size dropped (the long preset's dataset is every stage's)."""
    out = []
    for name, extra in stages:
        steps = next_token_steps.get(name) or ppo_steps.get(name)
        kept = [o for o in extra if not o.startswith(("train.steps=", "train.chunk=", "data.num_games="))]
        out.append((name, kept + ([f"train.steps={steps}", f"train.chunk={max(1, steps // 10)}"] if steps else [])))
    return out


STAGES["paper-long"] = longer(STAGES["paper"], {"next_token": 4000, "continued_next_token": 1500, "next_token_mtp": 4000,
                                                "next_token_prompted": 4000, "next_token_of_rl": 4000},
                              {"rl": 1000, "pretrain_rl": 1000, "rl_shared_value": 1000})
STAGES["c4-long"] = longer(STAGES["c4"], {"next_token": 5000, "continued_next_token": 800, "next_token_mtp": 2500,
                                          "next_token_prompted": 2500, "next_token_of_rl": 5000},
                           {"rl": 1000, "pretrain_rl": 1000, "rl_shared_value": 600})


def depth_stage(depth: int, name: str) -> str:
    """A depth preset's run name for a stage at one depth: its run directory is runs/L4/rl."""
    return f"L{depth}/{name}"


def at_depths(stages: list[tuple[str, list[str]]], depths: tuple[int, ...]) -> list[tuple[str, list[str]]]:
    """The stages once per depth (width fixed): ``{run:NAME}`` points at the same depth's run."""
    return [(depth_stage(d, name), [o.replace("{run:", f"{{run:L{d}/") for o in extra] + [f"model.num_layers={d}"])
            for d in depths for name, extra in stages]


# The depth axis (claims 1, 3, 4, 5 at each depth; claim D: the slope over depth): the quick
# preset's four regimes at 2, 4 and 8 layers of width 64, on tic-tac-toe.
DEPTHS = {"depth": (2, 4, 8), "depth-tiny": (2, 3)}  # at least 2: claim 4 compares the first and last blocks
STAGES["depth"] = at_depths(STAGES["quick"], DEPTHS["depth"])
STAGES["depth-tiny"] = at_depths([s for s in STAGES["tiny"] if s[0] in ("next_token", "random_init", "rl", "pretrain_rl")],
                                 DEPTHS["depth-tiny"])
PRESET_SEEDS = {"quick": None, "tiny": None, "paper": None, "c4-tiny": None, "c4-quick": None,
                "c4": [0, 1, 2, 3, 4], "depth": None, "depth-tiny": None,
                "paper-long": None, "c4-long": None}
# The config a preset's stages start from (a preset with no config of its own borrows one).
BASE_PRESET = {"depth": "quick", "depth-tiny": "tiny", "paper-long": "long"}


@dataclass(frozen=True)
class AnalysisSizes:
    """How much held-out data and how large a grid each analysis gets: the figures' size."""

    probe_games: int = 2000
    """Held-out games for every probe (split by game 60/20/20)."""
    steer_alphas: tuple[float, ...] = (-8.0, -4.0, 0.0, 4.0, 8.0)
    """Steering strengths, in units of the residual's per-coordinate RMS."""
    steer_games_per_cell: int = 32
    """Games per opponent and side for each steering configuration."""
    steer_random: int = 2
    """Random directions per layer (the steering control)."""
    games_per_cell: int = 128
    """Games per opponent and side in layer reset, prompted play and patched play (claim 4, per layer)."""
    steer_runs: tuple[str, ...] = ("next_token", "pretrain_rl")
    """Stages whose runs are steered (F6, one figure each)."""
    value_games: int = 2000
    """Games per seed for the claim-1 value measure: the agent's own games, and persona games."""
    rl_checkpoints: int = 4
    """RL checkpoints at which claim 5 repeats the value measure (log-spaced, first and last included)."""
    value_rollouts: int = 32
    """Monte Carlo games per probed history where V^π is not exact (no game tree: connect-four)."""
    value_decisions: int | None = None
    """Rows per game in the agents' value measure (drawn at random before labelling; None: all)."""


SIZES = {
    "tiny": AnalysisSizes(probe_games=300, steer_alphas=(-4.0, 0.0, 4.0), steer_games_per_cell=4, steer_random=1,
                          games_per_cell=8, value_games=100, rl_checkpoints=3),
    "quick": AnalysisSizes(probe_games=600, steer_alphas=(-4.0, 0.0, 4.0), steer_games_per_cell=16, steer_random=1,
                           games_per_cell=32, steer_runs=("next_token",), value_games=1000),
    "paper": AnalysisSizes(),
    "c4-tiny": AnalysisSizes(probe_games=300, steer_alphas=(-4.0, 0.0, 4.0), steer_games_per_cell=4, steer_random=1,
                             games_per_cell=8, value_games=60, rl_checkpoints=3, value_rollouts=8),
    # Monte Carlo V^π costs value_rollouts agent games per probed history (about 20 histories per
    # game on 5×4, own and persona games together): the quick preset probes fewer games, with
    # fewer rollouts (label standard error ≈ 0.14 at 16, 0.10 at 32, beside probe residuals of
    # 0.36–0.48 measured at c4-quick).
    "c4-quick": AnalysisSizes(probe_games=600, steer_alphas=(-4.0, 0.0, 4.0), steer_games_per_cell=16,
                              steer_random=1, games_per_cell=32, steer_runs=("next_token",), value_games=150,
                              rl_checkpoints=3, value_rollouts=16),
    # Monte Carlo V^π dominates: 3 agents × 5 seeds × value_games × ~20 histories × value_rollouts
    # agent games (and again at rl_checkpoints for claim 5).
    "c4": AnalysisSizes(probe_games=1000, steer_games_per_cell=16, games_per_cell=64, value_games=200,
                        value_rollouts=16),
}


SIZES["depth"] = SIZES["quick"]
SIZES["depth-tiny"] = SIZES["tiny"]
SIZES["paper-long"] = SIZES["paper"]
SIZES["c4-long"] = SIZES["c4"]


# What each shipped preset should reach (issue 17): per run, bars on its own subjects table (mean
# over seeds; greedy play as X and O), and the wall time of `reproduce` on 2 CPU cores. The
# report's claim flags use the game's quality bars (``report.claims.BARS``); these are the
# preset's targets, reported met or missed beside the machine and wall time that gave them.
TARGETS: dict[str, dict] = {
    "quick": {"wall_minutes": 6, "runs": {
        "rl": (("loss_vs_perfect", "at_most", 0.05), ("loss_vs_random", "at_most", 0.02)),
        "pretrain_rl": (("loss_vs_perfect", "at_most", 0.02), ("loss_vs_random", "at_most", 0.02)),
        "next_token": (("simulator_gap", "at_most", 0.03),)}},
    "paper": {"wall_minutes": 40, "runs": {
        "rl": (("loss_vs_perfect", "at_most", 0.01),), "rl_shared_value": (("loss_vs_perfect", "at_most", 0.01),),
        "pretrain_rl": (("loss_vs_perfect", "at_most", 0.005),),
        "next_token": (("simulator_gap", "at_most", 0.02),), "next_token_mtp": (("simulator_gap", "at_most", 0.02),)}},
    "c4": {"wall_minutes": 75, "runs": {
        "next_token": (("simulator_gap", "at_most", 0.05), ("simulator_gap_unseen", "at_most", 0.08)),
        "pretrain_rl": (("loss_vs_perfect", "at_most", 0.05), ("win_vs_random", "at_least", 0.85)),
        "rl": (("loss_vs_perfect", "at_most", 0.10),)}},
    "depth": {"wall_minutes": 60, "runs": {}},
}
