"""What a person sees of a run: the progress bar and the lines around it on a terminal, train.log,
TensorBoard's HParams table, and `ganlab eval`'s warnings."""

import io
import logging
import re

import pytest
from conftest import TINY, ganlab_on_terminal, run_dirs
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

from ganlab.metrics import TOY_METRICS

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def screen_lines(screen: str) -> list[str]:
    """The pieces of text between carriage returns and newlines, colours and cursor moves removed:
    a line rich wrapped is two pieces here; a bar redrawn in place is one piece per drawing."""
    return [piece for piece in re.split(r"[\r\n]+", ANSI.sub("", screen)) if piece.strip()]


@pytest.fixture(scope="module")
def terminal_run(tmp_path_factory):
    """One tiny run on an 80-column pseudo-terminal, from a folder deep enough that the run directory's
    path alone is longer than the terminal is wide."""
    cwd = tmp_path_factory.mktemp("display") / "a_folder_whose_long_name_makes_run_directories_wider_than_a_terminal"
    cwd.mkdir()
    code, screen = ganlab_on_terminal("train", *TINY, "seed=3", cwd=cwd, columns=80)
    assert code == 0, screen
    (run_dir,) = run_dirs(cwd / "outputs")
    assert len(str(run_dir)) > 80
    return run_dir, screen


def test_run_directory_stays_on_one_line_on_a_narrow_terminal(terminal_run):
    run_dir, screen = terminal_run
    lines = screen_lines(screen)
    whole = [line for line in lines if str(run_dir) in line]
    # the log line at the start (through the logging handler) and the last line (printed)
    assert any("run directory:" in line and re.search(r"\(device cpu, \d+ torch threads?\)", line) for line in whole), lines
    assert lines[-1].strip() == f"run directory: {run_dir}"


def test_bar_labels_its_eta_keeps_the_headline_and_stops_before_the_final_table(terminal_run):
    _, screen = terminal_run
    lines = screen_lines(screen)
    bars = [line for line in lines if re.match(r"\s*train\s", line) and "/20" in line]
    assert bars and all(re.search(r"ETA (\d+:\d\d:\d\d|-:--:--)", bar) for bar in bars), bars
    # After the first evaluation (step 10) every drawing of the bar shows its modes and HQ, also at
    # the log tick of step 15, which has no evaluation (every log tick draws the bar).
    after_first = [bar for bar in bars if re.search(r"\b1[1-9]/20\b", bar)]
    assert after_first and all("modes" in bar and "HQ" in bar for bar in after_first), after_first
    # The bar's last drawing, then the final table, then the run directory: nothing drawn after them.
    text = "\n".join(lines)
    assert text.rfind("20/20") < text.find("completed at step 20") < text.rfind("run directory:")


def test_train_log_has_a_line_per_evaluation(terminal_run):
    run_dir, _ = terminal_run
    log = (run_dir / "train.log").read_text().splitlines()
    evaluations = [line for line in log if re.search(r"\bstep \d+ of 20\b", line)]
    assert [re.search(r"step (\d+) of 20", line).group(1) for line in evaluations] == ["10", "20"]
    for line in evaluations:
        assert re.search(r"step \d+ of 20  D -?\d+\.\d{3}  G -?\d+\.\d{3}  modes \d/8  HQ \d+%$", line), line


def hparams_records(run_dir) -> dict:
    """tag -> HParamsPluginData of the run's event file (experiment, session start, session end)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    found = {}
    for event_file in sorted(run_dir.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(event_file)).Load():
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == metadata.PLUGIN_NAME:
                    found[value.tag] = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
    return found


def test_hparams_integers_columns_and_metric_curves(terminal_run):
    from tensorboard.plugins.hparams.backend_context import (
        _sort_and_reduce_to_hparams_limit,
    )

    run_dir, _ = terminal_run
    records = hparams_records(run_dir)
    start = records[metadata.SESSION_START_INFO_TAG].session_start_info.hparams
    # Integers as their decimal strings: the table prints numbers as toPrecision(5) (seed 3 as 3.0000). The
    # command line's keys too (debug=tiny; tests/test_hparams.py has the other types).
    assert {k: (v.WhichOneof("kind"), v.string_value) for k, v in start.items()} == {
        "dataset": ("string_value", "ring"), "loss": ("string_value", "nsgan"), "remedy": ("string_value", "none"),
        "seed": ("string_value", "3"), "steps": ("string_value", "20"), "batch_size": ("string_value", "32"),
        "debug": ("string_value", "tiny")}
    experiment = records[metadata.EXPERIMENT_TAG].experiment
    types = {info.name: info.type for info in experiment.hparam_infos}
    assert set(types.values()) == {api_pb2.DATA_TYPE_STRING} and set(types) == set(start)
    # The columns ticked by default: TensorBoard's backend sorts the infos (differs first, then by
    # name), and its dashboard ticks the first five after a stable sort putting `differs` first: the
    # command line's keys (debug=tiny seed=3), then dataset, loss, remedy (steps a click away).
    _sort_and_reduce_to_hparams_limit(experiment)
    ticked = [info.name for info in sorted(experiment.hparam_infos, key=lambda info: not info.differs)][:5]
    assert sorted(ticked) == ["dataset", "debug", "loss", "remedy", "seed"]
    # The metric columns are the metrics/* curves: every one has a point per evaluation.
    tags = [info.name.tag for info in experiment.metric_infos]
    assert tags == [f"metrics/{k}" for k in TOY_METRICS]
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0}).Reload()
    for tag in tags:
        assert [e.step for e in events.Scalars(tag)] == [10, 20], tag
    assert not [tag for tag in events.Tags()["scalars"] if tag.startswith("final/")]
    assert records[metadata.SESSION_END_INFO_TAG].session_end_info.status == api_pb2.STATUS_SUCCESS


def test_a_diverged_run_is_a_failed_session_which_the_status_filter_hides(tmp_path):
    from ganlab.tracking import Tracker

    hparams = {"loss": "nsgan", "seed": 1, "steps": 100}
    with Tracker(tmp_path, 100, hparams, ("modes_captured",), progress=False) as tracker:
        tracker.scalars(50, {"metrics/modes_captured": 3.0})
        tracker.finish({"status": "diverged", "step": 60, "metrics": {"modes_captured": 3}, "steps_per_second": 1.0})
    records = hparams_records(tmp_path)
    assert records[metadata.SESSION_END_INFO_TAG].session_end_info.status == api_pb2.STATUS_FAILURE
    assert records[metadata.SESSION_START_INFO_TAG].session_start_info.hparams["seed"].string_value == "1"


def test_the_bar_keeps_the_latest_evaluation_until_the_next(tmp_path):
    from ganlab.tracking import Tracker

    with Tracker(tmp_path, 30, {}, (), progress=False) as tracker:
        info = lambda: tracker.progress.tasks[0].fields["info"]
        tracker.advance(5, "D 1.000  G 2.000")
        assert info() == "D 1.000  G 2.000"
        tracker.advance(10, "D 1.100  G 2.100", "  modes 3/8  HQ 40%")
        tracker.advance(15, "D 1.200  G 2.200")  # a log tick without an evaluation
        assert info() == "D 1.200  G 2.200  modes 3/8  HQ 40%"
        tracker.advance(20, "D 1.300  G 2.300", "  modes 5/8  HQ 60%")
        assert info() == "D 1.300  G 2.300  modes 5/8  HQ 60%"


def test_log_lines_are_never_wrapped(tmp_path):
    """A hint to copy (an interrupted run's `ganlab train resume=DIR`) stays one line at 40 columns,
    where rich's own handler folds it."""
    from rich.console import Console
    from rich.logging import RichHandler

    from ganlab.tracking import LogHandler

    hint = f"continue with `ganlab train resume={tmp_path / 'outputs' / '2025-01-01' / '12-00-00_ring_nsgan_none_s0'}`"
    outputs = {}
    for handler_class in (RichHandler, LogHandler):
        console = Console(file=io.StringIO(), width=40, color_system=None)
        logger = logging.getLogger(f"test_display.{handler_class.__name__}")
        logger.propagate, logger.level = False, logging.INFO
        logger.addHandler(handler_class(console=console, show_path=False))
        logger.error("interrupted by SIGINT after step 7; %s", hint)
        outputs[handler_class] = console.file.getvalue()
    assert not any(hint in line for line in outputs[RichHandler].splitlines())  # what was wrong
    (line,) = outputs[LogHandler].splitlines()
    assert "ERROR" in line and line.endswith(f"interrupted by SIGINT after step 7; {hint}")


def test_eval_warns_of_too_few_samples_for_the_protocols_w1(terminal_run, capsys):
    from ganlab.cli import evaluate as main

    run_dir, _ = terminal_run
    main([str(run_dir), "--samples", "500"])
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [
        "ganlab: warning: --samples 500 is below the protocol's 1000 points per side for W1/W2 (100 taken here): "
        "they are biased upward, not comparable with the protocol's numbers"]
    assert "wasserstein1" in captured.out
    main([str(run_dir)])  # the run's own sample count: the final evaluation again, nothing to warn of
    assert capsys.readouterr().err == ""
