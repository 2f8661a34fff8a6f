"""The CLI end to end, in subprocesses, as a user runs it."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from conftest import TINY, ganlab, ganlab_on_terminal, run_dirs
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ganlab.config import options

SUMMARY_METRICS = {"modes_captured", "high_quality_pct", "reverse_kl", "critic_gap", "wasserstein1", "wasserstein2"}


def test_bare_command_and_help_list_the_commands(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    for args in ([], ["--help"]):
        out = ganlab(*args, cwd=tmp_path)
        assert out.returncode == 0 and "train" in out.stdout and "commands" in out.stdout
    # the installed console script, not only `python -m ganlab`
    script = Path(sys.executable).parent / "ganlab"
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0 and "train" in out.stdout


def test_help_sets_every_command_name_apart_from_its_text():
    from ganlab.cli import COMMANDS, usage

    rows = {line.split()[0]: line for line in usage().splitlines() if line.startswith("  ")}
    assert set(rows) == set(COMMANDS)
    for name, line in rows.items():
        # "classifiertrain ..." was one word: the name column was narrower than the longest name
        after = line[line.index(name) + len(name):]
        assert after[:2].isspace() and after.strip() == COMMANDS[name], line
    assert len({len(line) - len(COMMANDS[name]) for name, line in rows.items()}) == 1  # the texts align


def test_train_help_lists_groups_and_options(tmp_path):
    from ganlab.config import GROUPS

    out = ganlab("train", "--help", cwd=tmp_path)
    assert out.returncode == 0
    assert "remedies combine: remedy=[pacgan,spectral_norm]" in out.stdout
    # every option of every group, as the configs offer them (ganlab.config.options): none listed by hand
    for group in (*GROUPS, "experiment", "debug"):
        assert len(options(group)) >= 2, group
        assert f"\n{group}: {', '.join(options(group))}\n" in out.stdout, group


def test_cfg_job_prints_the_composed_config(tmp_path):
    out = ganlab("train", "--cfg", "job", "loss=wgan_gp", "seed=7", cwd=tmp_path)
    assert out.returncode == 0
    assert "ganlab.losses.WGANGP" in out.stdout and "seed: 7" in out.stdout and "penalty_weight: 10.0" in out.stdout
    assert not (tmp_path / "outputs").exists()


def test_a_run_writes_everything_the_run_directory_promises(tmp_path):
    # eval.background=true (the default) here, to exercise the worker process.
    out = ganlab("train", *TINY, "eval.background=true", "seed=3", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    (run_dir,) = run_dirs(tmp_path / "outputs")
    assert "ring_nsgan_none_s3" in run_dir.name
    for name in (".hydra/config.yaml", ".hydra/overrides.yaml", "train.log", "checkpoint.pt", "samples.npz"):
        assert (run_dir / name).exists(), name

    import torch

    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert set(checkpoint) == {"format", "step", "G", "D", "g_opt", "d_opt", "extras", "extra_opts", "rng", "loop",
                               "config", "sha256"} and checkpoint["step"] == 20
    assert checkpoint["extras"] == {} and checkpoint["extra_opts"] == {}  # remedy=none adds no networks
    from ganlab.models.mlp import Generator

    G = Generator(latent_dim=2, out_shape=(2,))
    G.load_state_dict(checkpoint["G"])  # the G of the default model config

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["step"] == 20
    assert summary["wall_seconds"] > 0 and summary["steps_per_second"] > 0
    assert SUMMARY_METRICS <= set(summary["metrics"])
    assert summary["protocol"]["samples"] == 200 and summary["protocol"]["wasserstein_samples"] == 100

    # The final metrics are computed on exactly the saved samples.
    import torch

    from ganlab.data.toy import ring
    from ganlab.metrics.modes import mode_coverage
    from ganlab.metrics.wasserstein import empirical_wasserstein

    samples = np.load(run_dir / "samples.npz")
    assert samples["x"].shape == (200, 2) and samples["real"].shape == (200, 2)
    data = ring()
    again = mode_coverage(torch.from_numpy(samples["x"]), data.centers, data.std)
    again.update(empirical_wasserstein(samples["x"][:100], samples["real"][:100]))
    for key in SUMMARY_METRICS - {"critic_gap"}:
        assert summary["metrics"][key] == pytest.approx(again[key]), key

    events = EventAccumulator(str(run_dir), size_guidance={"images": 0, "scalars": 0}).Reload()
    tags = events.Tags()
    for tag in ("loss/d", "loss/g", "grad_norm/d", "grad_norm/g", "metrics/modes_captured",
                "metrics/high_quality_pct", "metrics/reverse_kl", "metrics/critic_gap",
                "metrics/wasserstein1", "metrics/wasserstein2"):
        assert tag in tags["scalars"], tag
    assert [e.step for e in events.Scalars("metrics/wasserstein1")] == [10, 20]
    assert {"samples", "discriminator", "mode_histogram"} <= set(tags["images"])
    assert len(events.Images("mode_histogram")) == 2
    # HParams are written into the run's own event file, not a sub-run directory.
    assert [p for p in run_dir.iterdir() if p.is_dir() and p.name != ".hydra"] == []
    hparams = hparams_of(run_dir)
    assert {k: hparams[k] for k in ("loss", "remedy", "dataset", "seed")} == {
        "loss": "nsgan", "remedy": "none", "dataset": "ring", "seed": "3"}  # integers as text: "3", not 3.0000
    # HParams' metric columns are the metrics/* curves (tests/test_display.py); no one-point final/* cards
    assert not [tag for tag in tags["scalars"] if tag.startswith("final/")]


def hparams_of(run_dir):
    """The HParams session-start info in the run's event file, as a plain dict."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams import plugin_data_pb2

    (event_file,) = run_dir.glob("events.out.tfevents.*")
    for event in EventFileLoader(str(event_file)).Load():
        for value in event.summary.value:
            if value.metadata.plugin_data.plugin_name == "hparams":
                data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
                if data.HasField("session_start_info"):
                    found = {}
                    for key, v in data.session_start_info.hparams.items():
                        kind = v.WhichOneof("kind")
                        found[key] = int(v.number_value) if kind == "number_value" else getattr(v, kind)
                    return found
    raise AssertionError("no HParams session in the event file")


def test_multirun_2x2_gives_four_run_directories(tmp_path):
    out = ganlab("train", "-m", *TINY, "steps=10", "loss=nsgan,wgan_gp", "seed=0,1", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    dirs = run_dirs(tmp_path / "outputs" / "multirun")
    assert len(dirs) == 4
    names = sorted(d.name.split("_", 1)[1] for d in dirs)
    assert names == ["ring_nsgan_none_s0", "ring_nsgan_none_s1", "ring_wgan_gp_none_s0", "ring_wgan_gp_none_s1"]
    assert len({d.parent for d in dirs}) == 1  # one sweep directory


@pytest.mark.parametrize("args, needle", [
    (["loss=nope"], f"unknown option loss=nope; choose one of: {', '.join(options('loss'))}"),
    (["lossx=gan"], "unknown key 'lossx'"),
    (["eval.everyy=3"], "unknown key 'eval.everyy'; 'eval' has: every, samples"),
    (["steps=abc"], "bad value for 'steps'"),
    (["steps=0"], "steps=0 is out of range"),
    (["batch_size=-4"], "batch_size=-4 is out of range"),
    (["optim.d.lr=0"], "optim.d.lr=0 is out of range"),
    (["optim.g.lr=-1e-3"], "optim.g.lr=-0.001 is out of range"),
    (["device=tpu"], "device=tpu: not a device ganlab trains on; choose auto, cpu, cuda, cuda:N"),
    (["model.d.norm=batch"], "model.d.norm='batch': choose one of none, layer"),
    (["-m", "loss=nsgan,nope"], "unknown option loss=nope"),
    (["-m", "loss=wgan", "loss.clip=0.01,-1"], "loss: clip must be > 0, got -1"),
    (["model.latent_dim=abc"], "model.latent_dim='abc': expected an integer"),
    (["model.latent_dim=0"], "model.latent_dim=0 is out of range"),
    (["seed=-1"], "seed=-1 is out of range: it must be an integer in [0, 4294967295]"),
    (["optim.g.betas=[2.0,0.9]"], "optim.g.betas=[2.0, 0.9]: expected two numbers in [0, 1)"),
    (["dataset=grid", "dataset.std=-1"], "dataset: std must be > 0, got -1"),
    (["model.d.depth=0"], "model.d.depth=0 is out of range: it must be an integer in [1, 64]"),
])
def test_bad_input_ends_with_one_clear_line(tmp_path, args, needle):
    out = ganlab("train", *args, cwd=tmp_path)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    assert not (tmp_path / "outputs").exists()  # refused before any work


def test_an_injected_divergence_stops_the_run_and_a_sweep_goes_on(tmp_path):
    # lr 1e30 blows D's weights up at the first step: the losses turn inf/nan.
    out = ganlab("train", "-m", *TINY, "steps=200", "log.every=50", "eval.every=100",
                 "optim.d.lr=1e-4,1e30", cwd=tmp_path)
    assert out.returncode == 3, out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    summaries = [json.loads((d / "summary.json").read_text()) for d in run_dirs(tmp_path / "outputs")]
    status = sorted((s["status"], s["step"]) for s in summaries)
    assert status == [("completed", 200), ("diverged", 50)]  # stopped at the first log tick
    diverged = next(s for s in summaries if s["status"] == "diverged")
    assert diverged["diverged_step"] == 50


def test_progress_bar_on_a_terminal_only(tmp_path):
    """A live bar with the losses when stdout is a terminal; none in a pipe (the other tests)."""
    code, screen = ganlab_on_terminal("train", *TINY, cwd=tmp_path)
    assert code == 0
    assert "train" in screen and "20/20" in screen and "modes" in screen and "D " in screen

    piped = ganlab("train", *TINY, cwd=tmp_path)
    assert piped.returncode == 0 and "20/20" not in piped.stdout


def test_an_explicit_run_directory_that_holds_a_run_is_refused(tmp_path):
    first = ganlab("train", *TINY, "steps=5", "hydra.run.dir=outputs/fixed", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    summary = (tmp_path / "outputs/fixed/summary.json").read_bytes()
    again = ganlab("train", *TINY, "steps=5", "seed=1", "hydra.run.dir=outputs/fixed", cwd=tmp_path)
    assert again.returncode == 2
    assert again.stderr.strip() == ("ganlab: error: hydra.run.dir=outputs/fixed already holds a run; "
                                    "pick a new directory (nothing there was touched)")
    assert (tmp_path / "outputs/fixed/summary.json").read_bytes() == summary


# ---- ganlab eval: its arguments ------------------------------------------------------------


@pytest.mark.parametrize("args, message", [
    (["--samples", "1"], "--samples must be >= 2, got 1"),
    (["--samples", "x"], "--samples x scores a file; leave out the run directory"),
    (["--out", "e.json"], "--out is for --samples FILE; a run's evaluation goes to RUN_DIR/eval.json"),
    (["--bogus"], "unrecognized arguments: --bogus (see `ganlab eval --help`)"),
    (["metrics.inception=maybe"], "metrics.inception='maybe': choose true, false or auto"),
    (["eval.batch=0"], "eval.batch=0 is out of range: it must be an integer >= 1"),
    (["eval.grid=2000"], "eval.grid=2000 is out of range: it must be an integer in [1, 1024]"),
    (["metrics.prdc_samples=abc"], "bad value for 'metrics.prdc_samples'"),
    (["metrics.inceptoin=true"], "unknown key 'metrics.inceptoin'; 'metrics' has: inception,"),
    (["steps=5"], "ganlab eval takes key=value overrides of metrics., eval.batch, eval.grid"),
])
def test_eval_argument_errors_are_one_line_before_any_work(tmp_path, capsys, args, message):
    from ganlab.cli import main

    # No run at the path: every error below is found before the run is looked at.
    with pytest.raises(SystemExit) as exited:
        main(["eval", str(tmp_path / "nowhere"), *args])
    assert exited.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ganlab: error: ") and message in lines[0], lines


def test_eval_usage_names_a_run_directory_or_a_samples_file(tmp_path, capsys):
    from ganlab.cli import eval_parser, main

    assert eval_parser().format_usage().split()[-3:] == ["[RUN_DIR]", "[overrides", "...]"]
    with pytest.raises(SystemExit):
        main(["eval"])
    assert capsys.readouterr().err.strip() == ("ganlab: error: ganlab eval needs a run directory (ganlab eval RUN_DIR), "
                                               "or a samples file and its dataset (ganlab eval --samples FILE.npz "
                                               "dataset=NAME)")
    # overrides may follow an option, as `ganlab --help` shows them: the arguments parse, and the
    # missing run is what is reported
    with pytest.raises(SystemExit):
        main(["eval", str(tmp_path / "nowhere"), "--samples", "5000", "metrics.inception=false", "eval.batch=500"])
    assert capsys.readouterr().err.strip() == f"ganlab: error: no run directory at {tmp_path / 'nowhere'}"


# ---- standard output that cannot be written, and a working directory that is gone (issue 28) -----------


def _ganlab_with_stdout(args, cwd, stdout, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "ganlab", *args], cwd=cwd, env=env, stdout=stdout,
                          stderr=subprocess.PIPE, text=True, timeout=300, **kwargs)


def test_a_full_standard_output_ends_in_one_line_on_stderr(tmp_path):
    """`ganlab train ... >/dev/full`: the run's files are written, and the error that its table could not be
    printed is one line on stderr (not a line sent to the unwritable stdout); `ganlab --help` too."""
    with open("/dev/full", "w") as full:
        trained = _ganlab_with_stdout(["train", *TINY, "steps=5", "hydra.run.dir=run"], tmp_path, full)
        helped = _ganlab_with_stdout(["--help"], tmp_path, full)
    for result in (trained, helped):
        assert result.returncode == 1, result.stderr
        assert result.stderr.strip().splitlines() == [
            "ganlab: error: cannot write to standard output: No space left on device"], result.stderr
    assert json.loads((tmp_path / "run/summary.json").read_text())["status"] == "completed"


def test_a_closed_pipe_on_standard_output_exits_quietly_with_141(tmp_path):
    """`ganlab report DIR | head -c 10`: the reader left; as `seq`, `cat` and other Unix tools killed by
    SIGPIPE, no message and the status 128 + SIGPIPE (141)."""
    from conftest import make_cfg

    from ganlab.train import run

    run(make_cfg(*TINY, "steps=5"), tmp_path / "run")
    for args in (["report", "run"], ["--help"]):
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen([sys.executable, "-m", "ganlab", *args], cwd=tmp_path, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        proc.stdout.close()  # no reader: every write to standard output is EPIPE
        err = proc.stderr.read()
        assert proc.wait(timeout=120) == 128 + signal.SIGPIPE and err == "", (args, proc.returncode, err)


def test_a_deleted_working_directory_is_refused_in_one_line(tmp_path):
    """Deleted under a running shell: one line, before torch is imported (it would abort with "Intel oneMKL
    FATAL ERROR: Cannot load libtorch_cpu.so")."""
    gone = tmp_path / "gone"
    gone.mkdir()
    result = _ganlab_with_stdout(["train", *TINY], gone, subprocess.PIPE,
                                 preexec_fn=lambda: os.rmdir(gone))  # after the child's chdir into it
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip().splitlines() == [
        "ganlab: error: the current directory no longer exists: cd to an existing directory"], result.stderr


def test_a_signal_inside_the_logging_module_stops_at_once_without_a_traceback(monkeypatch):
    """A random Ctrl-C (test_kill) once met logging's `_releaseLock` at exit: the KeyboardInterrupt raised there was
    "ignored" with a traceback. Inside logging's own code the start-up handler stops at once, as inside an import."""
    import logging
    import signal
    import sys

    from ganlab import cli

    class Stopped(Exception):
        pass

    def stop(signum):
        raise Stopped(signum)

    monkeypatch.setattr(cli, "_stop", stop)
    seen = []

    class Interrupted(logging.Handler):  # a signal arriving while logging handles a record
        def emit(self, record):
            frame = sys._getframe()
            seen.append(cli._inside_logging(frame))
            try:
                cli._on_signal(signal.SIGINT, frame)
            except Stopped as exc:
                seen.append(exc.args[0])
            except KeyboardInterrupt:  # what it did before: raised where the interpreter may ignore it
                seen.append("raised")

    logger = logging.getLogger("ganlab-test-signal")
    handler = Interrupted()
    logger.addHandler(handler)
    try:
        logger.warning("a record")
    finally:
        logger.removeHandler(handler)
    assert seen == [True, signal.SIGINT]
    assert not cli._inside_logging(sys._getframe())  # elsewhere it raises, so that `finally` blocks tidy up
    with pytest.raises(KeyboardInterrupt):
        cli._on_signal(signal.SIGINT, sys._getframe())
