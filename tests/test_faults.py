"""Faults a user meets: a full disk, a checkpoint changed on disk, weights that blow up, Ctrl-C.

Each must end in one error line without a traceback, and leave what was written before (the
previous checkpoint above all) intact and loadable.
"""

import errno
import json
import logging
import os
import resource
import signal
import subprocess
import sys
import time
import zipfile

import pytest
import torch
from conftest import TINY, TINY_RUN, built, ganlab, make_cfg

from ganlab import checkpoint
from ganlab.atomic import write_atomic
from ganlab.errors import GanlabError
from ganlab.tracking import write_json_atomic
from ganlab.train import Diverged, run

def leftovers(directory):
    return sorted(p.name for p in directory.glob(".*.tmp"))


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("ganlab: error:")]


# --- atomic writes -------------------------------------------------------------------------------

def test_a_failed_write_keeps_the_old_file_removes_its_temporary_and_names_the_cause(tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"the previous checkpoint")

    def torch_short_write(f):
        """What torch.save does on a full disk: a RuntimeError whose context is the OSError."""
        f.write(b"half a checkpo")
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598") from None

    with pytest.raises(GanlabError) as failed:
        write_atomic(path, torch_short_write, "checkpoint")
    assert str(failed.value) == (f"cannot write checkpoint {path}: No space left on device (free some space on its "
                                 "disk); the previous checkpoint, if any, is intact")
    assert failed.value.__cause__ is None and failed.value.__suppress_context__  # no chained traceback
    assert path.read_bytes() == b"the previous checkpoint"
    assert leftovers(tmp_path) == []


def test_a_value_json_cannot_hold_is_a_bug_and_touches_nothing(tmp_path):
    path = tmp_path / "summary.json"
    write_json_atomic(path, {"status": "completed", "loss": float("nan")})
    assert json.loads(path.read_text()) == {"status": "completed", "loss": None}
    before = path.read_bytes()
    with pytest.raises(TypeError):  # not a GanlabError: the user cannot fix it
        write_json_atomic(path, {"status": object()})
    assert path.read_bytes() == before and leftovers(tmp_path) == []


def limit_file_size(size: int):
    """For preexec_fn: files of this process larger than `size` fail with EFBIG (Python ignores
    SIGXFSZ, which would otherwise kill it), as on a full disk, without root or a small disk."""
    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, resource.RLIM_INFINITY))
    return limit


def test_torch_save_on_a_full_disk_is_one_error_and_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"the previous checkpoint")
    script = (f"from ganlab import checkpoint; import torch\n"
              f"checkpoint.write_atomic({str(path)!r}, {{'w': torch.zeros(100_000)}})\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            preexec_fn=limit_file_size(50_000))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"ganlab.errors.WriteError: cannot write checkpoint {path}: File too large (raise the file-size limit, "
        "`ulimit -f`); the previous checkpoint, if any, is intact")
    assert "During handling" not in result.stderr and "unexpected pos" not in result.stderr  # not chained
    assert path.read_bytes() == b"the previous checkpoint"
    assert leftovers(tmp_path) == []


def test_a_training_that_hits_a_full_disk_ends_in_one_line_and_keeps_its_checkpoint(finished):
    """The resumed run trains to step 40, and its checkpoint (~840 kB) exceeds the limit."""
    good = (finished / "checkpoint.pt").read_bytes()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "1000"}  # log lines unwrapped
    result = subprocess.run([sys.executable, "-m", "ganlab", "train", *TINY_RUN, f"resume={finished}"],
                            cwd=finished.parent, env=env, capture_output=True, text=True, timeout=300,
                            preexec_fn=limit_file_size(len(good) // 2))
    out = result.stdout + result.stderr
    assert result.returncode == 1, out  # a file that cannot be written: exit status 1 (docs/cli.md)
    reported = [line for line in out.splitlines() if "cannot write checkpoint" in line]
    assert len(reported) == 1, out
    assert f"cannot write checkpoint {finished / 'checkpoint.pt'}: File too large" in reported[0]
    assert "Traceback" not in out
    assert leftovers(finished) == []
    assert (finished / "checkpoint.pt").read_bytes() == good
    assert checkpoint.read(finished / "checkpoint.pt")["step"] == 20  # intact, and verified
    summary = json.loads((finished / "summary.json").read_text())
    assert summary["status"] == "failed" and "File too large" in summary["error"]


@pytest.mark.parametrize("limit, where, named", [
    (2_000, "Hydra's .hydra record", "cannot write {}/run/.hydra/"),
    (20_000, "TensorBoard's event file", "cannot write TensorBoard events {}/run/events.out.tfevents."),
])
def test_a_full_disk_before_the_first_checkpoint_is_one_line(tmp_path, limit, where, named):
    """The disk fills while Hydra writes .hydra/ (before any ganlab code runs in the job), or under
    TensorBoard's writer thread: one `ganlab: error:` line naming the file (issue 28), never a traceback
    or Hydra's HYDRA_FULL_ERROR hint."""
    result = subprocess.run([sys.executable, "-m", "ganlab", "train", *TINY_RUN, "hydra.run.dir=run"], cwd=tmp_path,
                            env={**os.environ, "COLUMNS": "1000"}, capture_output=True, text=True, timeout=300,
                            preexec_fn=limit_file_size(limit))
    out = result.stdout + result.stderr
    assert result.returncode == 1, (where, out)  # Hydra's file and TensorBoard's alike (docs/cli.md)
    assert "Traceback" not in out and "HYDRA_FULL_ERROR" not in out and "Exception in thread" not in out, (where, out)
    errors = [line for line in out.splitlines() if "ganlab: error:" in line]
    assert len(errors) == 1 and "File too large" in errors[0], (where, out)
    assert named.format(tmp_path) in errors[0], (where, errors[0])
    assert leftovers(tmp_path / "run") == []


def test_a_full_disk_at_the_first_write_names_the_file_and_the_command_that_starts_it_again(tmp_path, capsys,
                                                                                            monkeypatch):
    """`ulimit -f 1` (1 KiB): Hydra's first file, .hydra/config.yaml, fails half-written. The line names it;
    the directory left behind holds no checkpoint, so the same command is refused with the exact command
    that starts the run again there (resume=auto), which then completes."""
    from ganlab.cli import main

    command = ["train", *TINY, "steps=5", "hydra.run.dir=run"]
    full = subprocess.run([sys.executable, "-m", "ganlab", *command], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "1000"}, timeout=300, preexec_fn=limit_file_size(1024))
    assert full.returncode == 1, full.stderr
    assert error_lines(full) == [f"ganlab: error: cannot write {tmp_path / 'run/.hydra/config.yaml'}: File too large "
                                 "(raise the file-size limit, `ulimit -f`)"], full.stderr
    assert "Traceback" not in full.stdout + full.stderr

    monkeypatch.chdir(tmp_path)  # the same command again, in this process (no second start-up)
    with pytest.raises(SystemExit) as again:
        main(command)
    assert again.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "ganlab: error: hydra.run.dir=run holds a run that stopped before its first checkpoint (nothing to resume); "
        "start it again there with `ganlab train debug=tiny steps=5 hydra.run.dir=run resume=auto`, or pick a new "
        "directory (nothing there was touched)")
    main([*command, "resume=auto"])
    assert json.loads((tmp_path / "run/summary.json").read_text())["status"] == "completed"


# --- the content checksum ------------------------------------------------------------------------

def test_the_content_digest_survives_a_round_trip_and_sees_any_change(tmp_path):
    content = {"format": 2, "w": torch.randn(3, 4).t(), "half": torch.randn(5).bfloat16(), "step": torch.tensor(7.0),
               "state": {10: {"m": torch.zeros(2)}, 2: {"m": torch.ones(2)}}, "betas": (0.5, 0.999),
               "gauss_next": None, "loss": float("nan"), "flag": True, "config": '{"seed": 0}'}
    torch.save(content, tmp_path / "c.pt")
    loaded = torch.load(tmp_path / "c.pt", weights_only=True)
    digest = checkpoint.content_digest(content)
    assert checkpoint.content_digest(loaded) == digest
    changes = [("w", content["w"] + 1e-7), ("step", torch.tensor(7.0, dtype=torch.float64)),
               ("step", torch.tensor([7.0])), ("betas", (0.5, 0.9990001)), ("flag", 1), ("gauss_next", 0.0),
               ("config", '{"seed": 1}'), ("state", {10: {"m": torch.zeros(2)}, 3: {"m": torch.ones(2)}})]
    for key, value in changes:
        assert checkpoint.content_digest({**content, key: value}) != digest, key


def flip_a_byte(path, tensor) -> None:
    """Rewrite the checkpoint's zip with one byte changed in the stored bytes of `tensor`, every
    CRC recomputed: a valid zip that torch reads without complaint."""
    raw = tensor.numpy().tobytes()
    with zipfile.ZipFile(path) as archive:
        entries = [(info, archive.read(info.filename)) for info in archive.infolist()]
    (name,) = [info.filename for info, data in entries if "/data/" in info.filename and data == raw]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for info, data in entries:
            if info.filename == name:
                data = bytearray(data)
                data[len(data) // 2] ^= 0x10
            archive.writestr(info, bytes(data))


def test_a_checkpoint_changed_on_disk_is_refused_in_one_line(finished, caplog):
    path = finished / "checkpoint.pt"
    with caplog.at_level(logging.WARNING, logger="ganlab.checkpoint"):
        state = checkpoint.read(path)  # the intact one loads, verified (no warning)
    assert state["step"] == 20 and caplog.records == []
    weight = state["G"]["net.0.weight"]

    flip_a_byte(path, weight)
    changed = torch.load(path, weights_only=True)  # torch sees nothing wrong: only the checksum does
    assert not torch.equal(changed["G"]["net.0.weight"], weight)
    message = f"checkpoint {path} is corrupt: its content checksum does not match"
    with pytest.raises(GanlabError, match=message):
        checkpoint.read(path)

    before = {p.name: p.read_bytes() for p in finished.iterdir() if p.is_file()}
    for args in (["eval", str(finished)], ["train", *TINY_RUN, f"resume={finished}"]):
        result = ganlab(*args, cwd=finished.parent)
        assert result.returncode == 2, result.stderr
        assert len(error_lines(result)) == 1 and message in error_lines(result)[0], result.stderr
        assert "resume from an intact copy" in error_lines(result)[0]
        assert "Traceback" not in result.stdout + result.stderr
    assert {p.name: p.read_bytes() for p in finished.iterdir() if p.is_file()} == before


def test_a_checkpoint_from_before_checksums_still_loads_with_a_warning(finished, caplog):
    path = finished / "checkpoint.pt"
    old = torch.load(path, weights_only=True)
    del old[checkpoint.CHECKSUM_KEY]
    old["format"] = 1
    torch.save(old, path)
    with caplog.at_level(logging.WARNING, logger="ganlab.checkpoint"):
        state = checkpoint.read(path)
    assert state["step"] == 20 and torch.equal(state["G"]["net.0.weight"], old["G"]["net.0.weight"])
    assert [r.getMessage() for r in caplog.records] == [
        f"checkpoint {path} holds no content checksum (written before checkpoint format 2); "
        "loading it unverified"]
    summary = run(make_cfg(*TINY_RUN, f"resume={finished}"), finished)  # and resumes
    assert summary["status"] == "completed" and summary["resumed_from_step"] == 20


# --- only good states are checkpointed -----------------------------------------------------------

def test_unhealthy_names_the_network_and_the_value():
    exp = built()
    assert checkpoint.unhealthy(exp) is None
    for p in exp.D.parameters():  # one optimizer step, so that Adam holds state
        p.grad = torch.zeros_like(p)
    exp.d_opt.step()
    first = next(iter(exp.d_opt.state.values()))
    first["exp_avg_sq"][0] = float("nan")
    assert checkpoint.unhealthy(exp) == "D's optimizer state exp_avg_sq (of parameter 0) holds NaN"
    with torch.no_grad():
        next(exp.G.parameters())[0, 0] = -3e7
    assert checkpoint.unhealthy(exp) == "G's parameter net.0.weight reached |w| = 3e+07, beyond 1e+06"


def test_weights_that_blow_up_are_never_checkpointed(finished, tmp_path):
    """optim.g.lr=1e30: one G step takes its weights to ~1e30 while the losses are still finite
    (log.every=20 reads them only at step 40); the checkpoint after that step is refused."""
    blow_up = ["optim.g.lr=1e30", "checkpoint.every=1", "log.every=20"]
    good = (finished / "checkpoint.pt").read_bytes()
    with pytest.raises(Diverged):
        run(make_cfg(*TINY_RUN, *blow_up, "resume_force=true", f"resume={finished}"), finished)
    summary = json.loads((finished / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["diverged_step"] == 21
    assert "G's parameter" in summary["error"] and "beyond 1e+06" in summary["error"]
    assert (finished / "checkpoint.pt").read_bytes() == good  # the last good state stays
    kept = checkpoint.read(finished / "checkpoint.pt")
    assert max(float(w.abs().max()) for w in kept["G"].values()) < checkpoint.WEIGHT_BOUND

    fresh = tmp_path / "fresh"  # no good state at all: no checkpoint
    with pytest.raises(Diverged, match="beyond 1e\\+06"):
        run(make_cfg(*TINY, *blow_up), fresh)
    assert json.loads((fresh / "summary.json").read_text())["status"] == "diverged"
    assert not (fresh / "checkpoint.pt").exists() and leftovers(fresh) == []


# --- Ctrl-C ---------------------------------------------------------------------------------------

def test_ctrl_c_with_the_evaluation_worker_running_saves_and_stops_in_one_line(tmp_path):
    """A terminal's Ctrl-C reaches the run and its evaluation worker (one process group): the run
    saves (draining the worker's pending results) and stops; nobody prints a traceback."""
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "1000"}
    proc = subprocess.Popen([sys.executable, "-m", "ganlab", "train", "steps=5000", "checkpoint.every=20",
                             "eval.every=20", "eval.samples=200", "eval.w_samples=100", "eval.background=true",
                             "batch_size=32", f"hydra.run.dir={run_dir}"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own process group, as a terminal's job
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "checkpoint.pt").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + signal.SIGINT, out + err
    assert "Traceback" not in out + err and "KeyboardInterrupt" not in out + err
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert checkpoint.read(run_dir / "checkpoint.pt")["step"] == summary["step"]


def read_only(monkeypatch):
    """Every new file fails as on a read-only mount (root may write anywhere, so chmod cannot show it):
    the check of the output directory and the atomic writer both create files."""
    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    import ganlab.atomic
    import ganlab.preflight

    monkeypatch.setattr(ganlab.preflight.tempfile, "NamedTemporaryFile", refuse)
    monkeypatch.setattr(ganlab.atomic, "open", refuse, raising=False)


def test_a_read_only_run_directory_on_resume_and_on_eval_is_one_line(finished, monkeypatch, capsys):
    from ganlab.cli import main

    before = {p.name: p.read_bytes() for p in finished.iterdir() if p.is_file()}
    read_only(monkeypatch)
    for args in (["train", *TINY_RUN, "steps=40", f"resume={finished}"], ["eval", str(finished)]):
        with pytest.raises(SystemExit) as stop:
            main(args)
        err = capsys.readouterr().err.strip().splitlines()
        assert stop.value.code == 1 and len(err) == 1 and "Read-only file system" in err[0], err
        assert err[0].startswith("ganlab: error: cannot write") and "Traceback" not in err[0]
    assert {p.name: p.read_bytes() for p in finished.iterdir() if p.is_file()} == before
