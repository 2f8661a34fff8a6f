"""Provenance (ganlab/provenance.py): which code, machine and command line made a run, in summary.json,
TensorBoard's text tab and eval.json; kept through a resume; `ganlab --version`; the report's warning
when runs of different ganlab versions are compared."""

import json
import os
import platform
import shutil
import socket
import subprocess
import re
import sys

import pytest
import torch
from conftest import REPO, TINY, TINY_RUN, make_cfg
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_report import metrics, write_summary

from ganlab import provenance
from ganlab.cli import main
from ganlab.evaluation.saved import evaluate_run
from ganlab.report import build_report
from ganlab.train import run

VERSION = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M).group(1)
GIT = shutil.which("git")


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture
def fresh_git_query():
    """The git query and the version are cached per process: a test that moves the package clears them,
    before and after."""
    provenance.git_state.cache_clear()
    provenance.version.cache_clear()
    yield
    provenance.git_state.cache_clear()
    provenance.version.cache_clear()


def text_tab(run_dir) -> dict[int, str]:
    """TensorBoard's text tab of a run: {step: the Markdown of the `provenance` text}."""
    events = EventAccumulator(str(run_dir), size_guidance={"tensors": 0}).Reload()
    return {e.step: e.tensor_proto.string_val[0].decode() for e in events.Tensors("provenance/text_summary")}


def assert_shown(markdown: str, entry: dict) -> None:
    for key, value in entry.items():
        shown = "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
        assert f"| {key} | {shown} |" in markdown, (key, markdown)


def test_a_run_records_its_provenance_in_summary_and_tensorboard(tmp_path):
    run_dir = tmp_path / "run"
    # `ganlab train ...` in-process: the command line recorded is the one typed, not Hydra's rewritten sys.argv
    args = ["train", *TINY, "steps=5", "eval.every=5", "seed=3", f"hydra.run.dir={run_dir}"]
    main(args)
    summary = json.loads((run_dir / "summary.json").read_text())
    p = summary["provenance"]
    assert list(p) == list(provenance.FIELDS)
    assert p["ganlab"] == VERSION
    assert p["torch"] == str(torch.__version__) and p["python"] == platform.python_version()
    assert p["cuda"] == torch.version.cuda and (p["cuda"] is None or isinstance(p["cuda"], str))
    assert p["host"] == socket.gethostname()
    assert p["command"] == "ganlab " + " ".join(args)
    assert "resumed_provenance" not in summary  # a run never resumed
    # TensorBoard's text tab: the same fields, at step 0
    (step, markdown), = text_tab(run_dir).items()
    assert step == 0
    assert_shown(markdown, p)
    # `ganlab eval` records its own, in eval.json
    with provenance.command(["ganlab", "eval", str(run_dir)]):
        record = evaluate_run(run_dir)
    assert json.loads((run_dir / "eval.json").read_text())["provenance"] == record["provenance"]
    assert record["provenance"] == {**p, "command": f"ganlab eval {run_dir}"}
    if GIT is None or subprocess.run(["git", "-C", str(REPO), "rev-parse"], capture_output=True).returncode:
        pytest.skip("not run from a git checkout: the git fields are null (test_outside_a_git_checkout...)")
    assert p["git_commit"] == git("rev-parse", "HEAD").strip() and len(p["git_commit"]) == 40
    assert p["git_dirty"] is bool(git("status", "--porcelain").strip())


def test_a_resumed_run_keeps_its_provenance_and_adds_the_resume(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    with provenance.command(["ganlab", "train", "debug=tiny_resume", "steps=20"]):
        first = run(make_cfg(*TINY_RUN, "steps=20"), run_dir)["provenance"]
    monkeypatch.setattr(provenance, "version", lambda: "9.9.9")  # resumed by a newer ganlab
    with provenance.command(["ganlab", "train", f"resume={run_dir}"]):
        summary = run(make_cfg(*TINY_RUN, f"resume={run_dir}"), run_dir)
    assert summary == json.loads((run_dir / "summary.json").read_text())
    assert summary["provenance"] == first and first["command"] == "ganlab train debug=tiny_resume steps=20"
    (resumed,) = summary["resumed_provenance"]
    assert resumed["ganlab"] == "9.9.9" and resumed["command"] == f"ganlab train resume={run_dir}"
    assert resumed["resumed_at_step"] == 20 and set(resumed) == {*provenance.FIELDS, "resumed_at_step"}
    # Each segment in TensorBoard's text tab, at the step it started from
    tab = text_tab(run_dir)
    assert sorted(tab) == [0, 20]
    assert_shown(tab[0], first)
    assert_shown(tab[20], resumed)
    # The report names the two versions that made this one run
    assert build_report(run_dir).versions_note == (
        f"these runs were made by different ganlab versions or commits: {provenance.code_label(first)}, "
        f"resumed by {provenance.code_label(resumed)}: 1 run")


@pytest.mark.parametrize("where", ["no checkout", "no git binary", "a wheel inside another repository"])
def test_outside_a_git_checkout_the_git_fields_are_null(where, tmp_path, monkeypatch, fresh_git_query):
    if where == "no git binary":
        monkeypatch.setenv("PATH", str(tmp_path))  # no `git` to find
    elif where == "a wheel inside another repository":
        if GIT is None:
            pytest.skip("no git binary")
        for args in (["init", "-q"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty",
                                      "-m", "x"]):
            subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)
    package = tmp_path / ".venv/lib/site-packages/ganlab" if where != "no git binary" else REPO / "ganlab"
    package.mkdir(parents=True, exist_ok=True)
    monkeypatch.setattr(provenance, "PACKAGE_DIR", package)
    assert provenance.git_state() == (None, None)
    p = provenance.gather()
    assert (p["git_commit"], p["git_dirty"]) == (None, None)
    assert p["ganlab"] == VERSION  # from pyproject.toml beside it, or the installed metadata
    assert provenance.version_line() == f"ganlab {VERSION}"
    if where == "no checkout":  # a whole run: null in summary.json and in the text tab
        summary = run(make_cfg(*TINY, "steps=5", "eval.every=5"), tmp_path / "run")
        saved = json.loads((tmp_path / "run/summary.json").read_text())["provenance"]
        assert saved == summary["provenance"] and (saved["git_commit"], saved["git_dirty"]) == (None, None)
        assert_shown(text_tab(tmp_path / "run")[0], saved)


def test_version_prints_the_version_and_commit(tmp_path):
    # the installed console script, as a user types it
    out = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ganlab"), "--version"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert out.returncode == 0 and out.stderr == ""
    commit, dirty = provenance.git_state()
    expected = f"ganlab {VERSION}" + (f" (commit {commit[:7]}{', dirty' if dirty else ''})" if commit else "")
    assert out.stdout == expected + "\n"
    if commit:
        assert commit == git("rev-parse", "HEAD").strip()


def stamp(run_dir, version, commit):
    """Give a fake run's summary.json the provenance of the ganlab `version` at `commit`."""
    path = run_dir / "summary.json"
    summary = json.loads(path.read_text())
    summary["provenance"] = {"ganlab": version, "git_commit": commit, "git_dirty": False, "torch": "2.13.0",
                             "python": "3.11.7", "cuda": None, "host": "h", "command": "ganlab train"}
    path.write_text(json.dumps(summary))


def test_report_warns_when_runs_of_different_versions_are_compared(tmp_path, capsys):
    root = tmp_path / "sweep"
    for seed in range(3):
        write_summary(root / f"old_{seed}", seed, metrics=metrics(6))
        stamp(root / f"old_{seed}", "0.1.0", "a" * 40)
    write_summary(root / "new_0", 0, lr=2e-3, metrics=metrics(7))
    stamp(root / "new_0", "0.2.0", "b" * 40)
    write_summary(root / "unrecorded", 1, lr=2e-3, metrics=metrics(7))  # older than provenance
    note = ("these runs were made by different ganlab versions or commits: 0.1.0 (commit aaaaaaa): 3 runs; "
            "0.2.0 (commit bbbbbbb): 1 run; no provenance recorded (an older ganlab): 1 run")
    assert build_report(root).versions_note == note
    # the command: one line on stderr, prefixed as its other warnings are; the note in report.md
    capsys.readouterr()
    main(["report", str(root)])
    out = capsys.readouterr()
    assert [line for line in out.err.splitlines() if "versions" in line] == [f"ganlab: warning: {note}"]
    assert "versions" not in out.out
    assert f"- {note}" in (root / "report.md").read_text()


def test_report_says_nothing_when_one_version_made_every_run(tmp_path):
    for seed in range(2):
        write_summary(tmp_path / str(seed), seed, metrics=metrics(6))
        stamp(tmp_path / str(seed), "0.1.0", "a" * 40)
    assert build_report(tmp_path).versions_note is None
    for seed in range(2):  # two versions without a commit (installed wheels)
        stamp(tmp_path / str(seed), f"0.{seed}.0", None)
    assert build_report(tmp_path).versions_note.endswith("0.0.0: 1 run; 0.1.0: 1 run")


def test_every_job_of_a_sweep_and_every_replica_carries_it(tmp_path):
    args = ["train", "-m", "seed=0,10", "replicas=2", *TINY, "steps=5", "eval.every=5", f"hydra.sweep.dir={tmp_path}"]
    main(args)
    summaries = [json.loads(p.read_text()) for p in sorted(tmp_path.rglob("summary.json"))]
    assert sorted(s["seed"] for s in summaries) == [0, 1, 10, 11]
    for s in summaries:
        assert s["provenance"]["command"] == "ganlab " + " ".join(args) and s["provenance"]["ganlab"] == VERSION
        assert_shown(text_tab(s["run_dir"])[0], s["provenance"])
