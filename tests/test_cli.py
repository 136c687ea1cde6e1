"""The command line: bad input is one line on stderr and exit code 2, nothing is overwritten,
and every command has --help. Most cases call ``main`` in-process (fast); one runs the
installed console script."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentsim.experiments import cli
from agentsim.experiments.config import ConfigError, load_config

TINY = ["--preset", "tiny", "--set", "log.wandb='disabled'", "--quiet"]


@pytest.fixture(autouse=True)
def no_persistent_cache(monkeypatch):
    """main() points jax's compile cache at the user's home; tests leave global config alone."""
    monkeypatch.setattr(cli, "_enable_compile_cache", lambda: None)


def run_bad(capsys, argv, match=None):
    """main(argv) must fail as a user error: code 2, one line 'agentsim: error: …'."""
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("agentsim: error:"), captured.err
    assert "Traceback" not in captured.err + captured.out
    if match is not None:
        assert match in lines[0], lines[0]
    return lines[0]


def snapshot(path: Path) -> dict:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------- data


@pytest.mark.parametrize("mix, match", [
    ("random=1,bogus=1", "unknown persona 'bogus'"),
    ("random=0,greedy=0", "sum to a positive"),
    ("random=abc", "not a number"),
    ("random=-1", "random"),
])
def test_data_bad_mixture(capsys, tmp_path, mix, match):
    out = tmp_path / "games.npz"
    run_bad(capsys, ["data", "--out", out, "--games", "10", "--mix", mix], match)
    assert not out.exists() and not list(tmp_path.iterdir())


@pytest.mark.parametrize("games", ["0", "-5"])
def test_data_non_positive_games(capsys, tmp_path, games):
    run_bad(capsys, ["data", "--out", tmp_path / "g.npz", "--games", games], "--games")


def test_data_existing_output_is_not_overwritten(capsys, tmp_path):
    out = tmp_path / "games.npz"
    out.write_bytes(b"precious")
    run_bad(capsys, ["data", "--out", out, "--games", "10"], "--force")
    assert out.read_bytes() == b"precious"


def test_data_refuses_an_agent_source(capsys, tmp_path):
    """An agent's games are played by the run that learns from them, not written by `data`."""
    out = tmp_path / "g.npz"
    run_bad(capsys, ["data", "--out", out, "--games", "10", "--set", f"data.source='{tmp_path}'"], "agent_games.npz")
    assert not out.exists()


def test_data_missing_output_dir(capsys, tmp_path):
    run_bad(capsys, ["data", "--out", tmp_path / "nope" / "g.npz", "--games", "10"], "does not exist")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write anywhere")
def test_data_unwritable_output_dir(capsys, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        run_bad(capsys, ["data", "--out", locked / "g.npz", "--games", "10"], "not writable")
    finally:
        locked.chmod(0o700)


def test_data_output_under_a_file(capsys, tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    run_bad(capsys, ["data", "--out", blocker / "g.npz", "--games", "10"])


# ---------------------------------------------------------------------------------- train


@pytest.mark.parametrize("extra, match", [
    (["--set", "model.foo=1"], "unknown field model.foo"),
    (["--set", "train.steps=abc"], "train.steps"),
    (["--set", "model.num_heads=3"], "must divide"),
    (["--set", "train.lr=-1"], "train.lr"),
    (["--set", "ppo.gamma=1.5"], "ppo.gamma"),
    (["--set", "train.seeds=[0, 0]"], "duplicates"),
    (["--set", "nonsense"], "section.field=value"),
    (["--preset", "nope"], "unknown preset 'nope'"),
    (["--regime", "pretrain_rl"], "ppo.pretrained"),
])
def test_train_bad_config(capsys, tmp_path, extra, match):
    out = tmp_path / "run"
    run_bad(capsys, ["train", "--out", out, "--preset", "tiny", *extra], match)
    assert not out.exists()


def test_train_missing_config_file(capsys, tmp_path):
    run_bad(capsys, ["train", "--out", tmp_path / "run", "--config", tmp_path / "missing.toml"],
            "does not exist")


def test_train_bad_toml_file(capsys, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\nnum_layers = ")
    run_bad(capsys, ["train", "--out", tmp_path / "run", "--config", bad], str(bad))


def _fake_run(path: Path) -> dict:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(load_config("tiny").to_dict()))
    (path / "metrics.jsonl").write_text('{"step": 2, "seed": 0, "losses/loss": 1.0}\n')
    (path / "status.json").write_text('{"status": "interrupted", "step": 2}')
    return snapshot(path)


def test_train_existing_run_needs_resume_or_force(capsys, tmp_path):
    run = tmp_path / "run"
    before = _fake_run(run)
    run_bad(capsys, ["train", "--out", run, "--regime", "next_token", *TINY], "--resume")
    assert snapshot(run) == before


@pytest.mark.parametrize("flags", [[], ["--force"], ["--resume"]])
@pytest.mark.parametrize("files", [{"config.json": '{"mine": 1}'}, {"notes.txt": "thesis draft"}])
def test_train_never_writes_into_a_folder_that_is_not_a_run(capsys, tmp_path, flags, files):
    """Someone's folder (a lone config.json, other files) is refused whatever the flags, untouched."""
    folder = tmp_path / "mine"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    before = snapshot(folder)
    run_bad(capsys, ["train", "--out", folder, "--regime", "next_token", *TINY, *flags],
            "not an agentsim run directory")
    assert snapshot(folder) == before


def test_train_resume_refuses_overrides_that_would_change_the_saved_config(capsys, tmp_path):
    """A resumed run keeps its saved config; a changed field is an error, not silently dropped."""
    run = tmp_path / "run"
    before = _fake_run(run)
    run_bad(capsys, ["train", "--out", run, "--resume", "--preset", "tiny", "--set", "train.steps=8"],
            "train.steps (saved 4, given 8)")
    assert snapshot(run) == before


def test_a_run_saved_before_a_field_existed_resumes_and_compares_as_today(tmp_path):
    """Fields added since a run was saved take their defaults (the old behaviour): --resume with
    the same settings passes the check, and the run groups with today's runs of its config."""
    from agentsim.experiments.runs.store import flat_config, flatten, group_key

    cfg = load_config("tiny", overrides=["train.regime='rl'"])
    old = cfg.to_dict()
    del old["ppo"]["critic_warmup"], old["ppo"]["league"]
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "config.json").write_text(json.dumps(old))
    cli._check_resume_config(cfg, tmp_path / "old")  # no error: nothing the run saved would change
    assert flat_config(tmp_path / "old")["ppo.critic_warmup"] == 0
    assert group_key(flat_config(tmp_path / "old")) == group_key(flatten(cfg.to_dict()))
    with pytest.raises(cli.UserError, match=r"ppo.critic_warmup \(saved 0, given 2\)"):
        cli._check_resume_config(load_config("tiny", overrides=["train.regime='rl'", "ppo.critic_warmup=2"]),
                                 tmp_path / "old")


def test_train_resume_on_an_empty_dir(capsys, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    run_bad(capsys, ["train", "--out", empty, "--resume", *TINY], "no run to resume")
    assert not list(empty.iterdir())


def test_train_out_under_a_file(capsys, tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    run_bad(capsys, ["train", "--out", blocker / "run", "--regime", "random_init", *TINY],
            "cannot write")


@pytest.mark.parametrize("extra", [
    ["--regime", "pretrain_rl", "--set", "ppo.pretrained='{missing}'"],
    ["--regime", "rl", "--set", "model.value_head='none'"],
])
def test_train_failed_start_leaves_nothing_behind(capsys, tmp_path, extra):
    out = tmp_path / "run"
    extra = [e.replace("{missing}", str(tmp_path / "missing")) for e in extra]
    run_bad(capsys, ["train", "--out", out, *extra, *TINY])
    assert not (out / "config.json").exists()


def test_chunk_must_divide_steps_is_a_config_error():
    with pytest.raises(ConfigError, match="chunk"):
        load_config("tiny", overrides=["train.steps=5", "train.chunk=2"])


# ---------------------------------------------------------------------------------- others


def test_reproduce_into_a_non_empty_dir(capsys, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    run_bad(capsys, ["reproduce", "--preset", "tiny", "--out", out, "--quiet"], "not empty")
    assert snapshot(out) == {"notes.txt": b"mine"}


def test_reproduce_unknown_preset(capsys, tmp_path):
    run_bad(capsys, ["reproduce", "--preset", "nope", "--out", tmp_path / "o", "--quiet"], "nope")


def test_probe_on_a_dir_that_is_not_a_run(capsys, tmp_path):
    run_bad(capsys, ["probe", tmp_path], "not a run directory")
    run_bad(capsys, ["probe", tmp_path / "missing"], "not a run directory")


def test_config_prints_every_section(capsys):
    assert cli.main(["config", "--preset", "tiny"]) == 0
    out = capsys.readouterr().out
    for section in ("[data]", "[model]", "[train]", "[ppo]", "[log]"):
        assert section in out
    assert "d_model = 16" in out


@pytest.mark.parametrize("preset, seeds", [("quick", "[0, 1, 2]"), ("c4", "[0, 1, 2, 3, 4]")])
def test_config_prints_a_file_config_reads_back(capsys, tmp_path, preset, seeds):
    """Every field's documentation rides along as comments, multi-line ones included; a reproduce
    preset's config is its runs' (c4's 5 seeds, not its base preset's 3)."""
    assert cli.main(["config", "--preset", preset, "--set", "ppo.critic_warmup=3"]) == 0
    out = capsys.readouterr().out
    assert "# The first N of the run's iterations train only the critic" in out
    (tmp_path / "c.toml").write_text(out)
    assert load_config(file=tmp_path / "c.toml") == load_config(preset, overrides=["ppo.critic_warmup=3",
                                                                                   f"train.seeds={seeds}"])


def _subcommands():
    parser = cli.build_parser()
    (action,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    return sorted(action.choices)


@pytest.mark.parametrize("argv", [["--help"]] + [[c, "--help"] for c in _subcommands()])
def test_help_exits_zero(capsys, argv):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: agentsim")


def test_help_never_imports_jax():
    """`agentsim --help` must answer at once: parsing and every command's --help import no JAX."""
    import subprocess
    import sys

    script = ("import sys\nfrom experiments import cli\n"
              f"for argv in {[['--help']] + [[c, '--help'] for c in _subcommands()]!r}:\n"
              "    try:\n        cli.main(argv)\n    except SystemExit:\n        pass\n"
              "heavy = sorted(m for m in ('jax', 'flax', 'numpy', 'matplotlib', 'orbax') if m in sys.modules)\n"
              "print('HEAVY', heavy)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out, out[-300:]


def test_every_documented_command_exists():
    assert {"reproduce", "train", "probe", "data", "config"} <= set(_subcommands())


@pytest.mark.parametrize("argv", [
    ["data", "--out", "x.npz", "--games", "abc"],
    ["train", "--regime", "nope", "--out", "x"],
    ["frobnicate"],
])
def test_argparse_errors_exit_2_without_traceback(capsys, argv):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error:" in err


def test_argparse_errors_are_one_line(capsys):
    with pytest.raises(SystemExit):
        cli.main(["data", "--out", "x.npz", "--games", "abc"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("agentsim: error:")


def _console_script() -> str:
    script = Path(sys.executable).with_name("agentsim")
    if not script.exists():
        pytest.skip("the agentsim console script is not installed next to this python")
    return str(script)


def test_console_script_reports_a_bad_config_in_one_line(tmp_path):
    proc = subprocess.run(
        [_console_script(), "train", "--out", str(tmp_path / "run"), "--set", "model.foo=1"],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "AGENTSIM_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 2, proc
    lines = proc.stderr.strip().splitlines()
    assert lines == [lines[0]] and lines[0].startswith("agentsim: error: unknown field model.foo")
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------- config, pipes, the table


@pytest.mark.parametrize("preset", sorted(__import__("agentsim.experiments.presets", fromlist=["STAGES"]).STAGES))
def test_config_knows_every_preset_reproduce_knows(capsys, preset):
    assert cli.main(["config", "--preset", preset]) == 0
    out = capsys.readouterr().out
    assert "[train]" in out


def test_config_of_a_reproduce_preset_names_its_base_and_stages(capsys):
    assert cli.main(["config", "--preset", "paper"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# reproduce --preset paper: every run starts from preset paper, then")
    assert "#   rl_shared_value: train.regime='rl'" in out and "seeds = [0, 1, 2, 3, 4]" in out
    assert "num_layers = 4" in out
    assert cli.main(["config", "--preset", "depth"]) == 0  # one only reproduce knows
    out = capsys.readouterr().out
    assert out.startswith("# reproduce --preset depth: every run starts from preset quick, then")
    assert "#   L8/rl: train.regime='rl'" in out


def test_config_into_a_closed_pipe_ends_quietly(capsys, monkeypatch):
    """`agentsim config | head`: the reader goes away; no BrokenPipe traceback, exit 0."""
    read, write = os.pipe()
    os.close(read)
    pipe = os.fdopen(write, "w")  # block-buffered, as a real pipe: the error shows at the flush
    monkeypatch.setattr(sys, "stdout", pipe)
    try:
        assert cli.main(["config", "--preset", "tiny"]) == 0
    finally:
        monkeypatch.undo()
        pipe.close()  # its buffer goes to /dev/null now
    assert capsys.readouterr().err == ""


def test_a_broken_pipe_that_is_not_stdout_keeps_its_traceback(monkeypatch):
    def broken(args):
        raise BrokenPipeError("a worker's pipe")

    monkeypatch.setattr(cli, "COMMANDS", tuple(c._replace(run=broken) if c.name == "config" else c
                                               for c in cli.COMMANDS))
    with pytest.raises(BrokenPipeError):
        cli.main(["config"])


@pytest.mark.parametrize("argv", [
    ["change", "a", "b", "--control", "c", "--out", "x.json", "--games", "60"],
    ["layer-reset", "a", "b", "--out", "x.json", "--games", "60", "--games-per-cell", "8", "--no-head"],
    ["steer", "a", "--layer", "2", "--probe-run", "p", "--games", "100", "--games-per-cell", "2", "--out", "x.json"],
    ["behaviour", "a", "b", "--pretrained", "p", "--games", "60", "--out", "x.json"],
    ["probe", "a", "--simulator", "s", "--games", "50", "--suite", "--timeline"],
    ["probe", "a", "--games", "300", "--rollouts", "8", "--decisions-per-game", "3"],
])
def test_analysis_commands_keep_every_flag(argv):
    args = cli.build_parser().parse_args(argv)
    assert args.func.__name__ == "cmd_" + argv[0].replace("-", "_")
    assert args.games == int(argv[argv.index("--games") + 1])


@pytest.mark.parametrize("argv, match", [
    (["change", "a", "b", "--games", "9"], "argument --games: must be at least 10, got 9"),
    (["layer-reset", "a", "b", "--games-per-cell", "0"], "argument --games-per-cell: must be at least 1, got 0"),
    (["steer", "a", "--games", "19"], "must be at least 20"),
    (["steer", "a", "--layer", "-1"], "argument --layer: must be at least 0, got -1"),
    (["behaviour", "a", "--games", "ten"], "argument --games: expected an integer, got 'ten'"),
    (["probe", "a", "--games", "49"], "must be at least 50"),
    (["probe", "a", "--decisions-per-game", "0"], "argument --decisions-per-game: must be at least 1, got 0"),
    (["probe", "a", "--rollouts", "1"], "argument --rollouts: must be at least 2, got 1"),
])
def test_analysis_sizes_too_small_are_one_line_before_any_work(capsys, argv, match):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    lines = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(lines) == 1 and match in lines[0], lines
