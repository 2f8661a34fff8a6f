"""The one sink for what a run reports: TensorBoard events, the console, and summary.json."""

from __future__ import annotations

import json
import logging
import math
import struct
import sys
import time
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from pathlib import Path

from google.protobuf import struct_pb2
from rich import get_console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2
from tensorboard.plugins.hparams import metadata as hparams_metadata
from torch.utils.tensorboard import SummaryWriter

from ganlab.atomic import describe
from ganlab.errors import WriteError

log = logging.getLogger(__name__)


def finite_or_none(value):
    """Standard JSON has no NaN or Infinity: write null (a diverged run's missing metric)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


def write_json_atomic(path: Path, data: dict) -> None:
    """Write `data` as JSON, atomically (ganlab.atomic): never a half-written file; a failed write
    (full disk, read-only directory) is one WriteError line (exit status 1) and leaves the old file as
    it was."""
    from ganlab.atomic import write_atomic

    # Encoded before the file is opened: a value JSON cannot hold is a bug, not a failed write.
    text = json.dumps(finite_or_none(data), indent=2, allow_nan=False) + "\n"
    write_atomic(Path(path), lambda f: f.write(text.encode()))


def _after_earlier_event_files(run_dir: Path) -> None:
    """Wait, at most a second, until this second is later than every events file's in `run_dir`. TensorBoard reads a
    run's files in name order, `events.out.tfevents.SECONDS.HOST.PID.N`: a file started in the same second as an
    earlier one of this process sorts by its counter as text (".10" before ".9"), so a restart's file could be read
    first and its purge_step would not hide the earlier points (seen in tests/test_resume.py under xdist)."""
    latest = 0
    for path in run_dir.glob("events.out.tfevents.*"):
        try:
            latest = max(latest, int(path.name.split(".")[3]))
        except (IndexError, ValueError):  # not a name TensorBoard's writer gave
            continue
    deadline = time.monotonic() + 1.1  # a file from a clock ahead of ours is not waited for
    while int(time.time()) <= latest and time.monotonic() < deadline:
        time.sleep(0.05)


class Tracker:
    """Scalars and images to TensorBoard, a live progress bar, and the final summary.

    Use as a context manager: the writer and the bar are closed even when training raises, so the
    other jobs of a multirun are unaffected.
    """

    def __init__(self, run_dir: Path, total_steps: int, hparams: dict, metric_keys: tuple[str, ...],
                 progress: bool | None = None, purge_step: int | None = None):
        self.run_dir = Path(run_dir)
        self.hparams = hparams
        self.metric_keys = metric_keys
        # purge_step (a resumed run): TensorBoard hides what earlier files logged at steps >= it.
        _after_earlier_event_files(self.run_dir)
        self.writer = SummaryWriter(log_dir=str(self.run_dir), purge_step=purge_step)
        self.console = get_console()  # the console RichHandler logs to, so log lines print above the bar
        # A bar only on a terminal: in files and CI logs it would be thousands of lines of noise.
        # progress=False turns it off there too: parallel jobs (joblib) share one terminal.
        show_bar = progress is not False and sys.stdout.isatty()
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
            console=self.console, disable=not show_bar,
        )
        self.task = self.progress.add_task("train", total=total_steps, info="")
        self.headline = ""  # the latest evaluation's headline, shown until the next one

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self) -> None:
        self.progress.stop()
        try:
            self.writer.close()
        except OSError:  # a full disk: the error that stopped the run (if any) is the one to report
            pass

    @contextmanager
    def _events(self):
        """TensorBoard's writer thread hits a full disk, and its OSError comes back at the next write
        or flush of the training thread: one WriteError line (exit status 1), as for every other file of
        the run."""
        try:
            yield
        except OSError as exc:
            raise WriteError(f"cannot write TensorBoard events {self.events_file()}: {describe(exc)}") from None

    def events_file(self) -> Path:
        """The event file this run writes (one per segment of a resumed run), for an error line to name."""
        writer = getattr(self.writer.file_writer, "event_writer", None)  # torch's EventFileWriter
        name = getattr(writer, "_file_name", None)
        return Path(name) if name else self.run_dir / "events.out.tfevents.*"

    def flush(self) -> None:
        """TensorBoard's events on disk now."""
        with self._events():
            self.writer.flush()

    def scalars(self, step: int, values: dict[str, float]) -> None:
        with self._events():
            for tag, value in values.items():
                self.writer.add_scalar(tag, value, step)

    def text(self, tag: str, markdown: str, step: int) -> None:
        """A Markdown text in TensorBoard's Text tab (the run's provenance)."""
        with self._events():
            self.writer.add_text(tag, markdown, step)

    def images(self, step: int, images: dict[str, bytes]) -> None:
        """PNG-encoded pictures (encoded where they were drawn, off the training process)."""
        with self._events():
            for tag, png in images.items():
                width, height = struct.unpack(">II", png[16:24])  # the PNG header's IHDR chunk
                image = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=png)
                self.writer.file_writer.add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)

    def advance(self, step: int, info: str, headline: str | None = None) -> None:
        """Move the bar to `step`; `info` (the losses) is replaced at every call, while `headline`
        (an evaluation's metrics) stays shown until the next evaluation gives another."""
        if headline is not None:
            self.headline = headline
        # refresh: drawn now, not at the next tick of the bar's timer (a log tick is rare: log.every steps)
        self.progress.update(self.task, completed=step, info=info + self.headline, refresh=True)

    def finish(self, summary: dict) -> None:
        """Write summary.json, the HParams entry of this run, and print the final table."""
        write_json_atomic(self.run_dir / "summary.json", summary)
        # The bar's last state stays on screen, and what follows prints below it, not above.
        self.progress.stop()
        if summary["status"] == "interrupted":  # the resumed run writes the final entries
            self.flush()
            self.console.print(f"run directory: {self.run_dir}", soft_wrap=True, markup=False)
            return
        # Written to this run's own file writer (not add_hparams, which opens a sub-run per call):
        # one run per directory.
        with self._events():
            for proto in hparams_summaries(self.hparams, self.metric_keys, summary["status"]):
                self.writer.file_writer.add_summary(proto)
        self.flush()
        self.console.print(summary_table(summary))
        # soft_wrap: never broken over lines by rich, so a copied path is whole.
        self.console.print(f"run directory: {self.run_dir}", soft_wrap=True, markup=False)


# TensorBoard's HParams dashboard ticks the first five hparam columns, after a stable sort that puts
# those marked `differs` first (tf-hparams-query-pane, `Math.min(5, ...)`); the backend hands them
# over sorted by (not differs, name) (backend_context._sort_and_reduce_to_hparams_limit). It reads
# the Experiment of ONE run for the whole logdir, so a run cannot know what differs across runs:
# torch's hparams() leaves `differs` false everywhere, and the six columns sorted by name put
# `steps` sixth, unticked. Here `differs` marks the first five hparams in the order given (the
# caller's ordering says what is shown), and the rest stay a click away.
SHOWN_HPARAMS = 5


def _hparam_value(value) -> struct_pb2.Value:
    # torch's hparams() writes an int as number_value with DATA_TYPE_FLOAT64 (the protos have no
    # integer type: string, bool, float64 only), and the HParams table prints every number with 5
    # significant digits (JS toPrecision(5): seed 0 as 0.0000, batch_size 256 as 256.00). A string
    # is shown as written: an integer goes in as its decimal string (its column then filters and
    # sorts as text, which for a seed, a step count or a batch size loses little).
    if isinstance(value, bool):
        return struct_pb2.Value(bool_value=value)
    if isinstance(value, int):
        return struct_pb2.Value(string_value=str(value))
    if isinstance(value, float):
        return struct_pb2.Value(number_value=value)
    return struct_pb2.Value(string_value=str(value))


_DATA_TYPES = {"bool_value": api_pb2.DATA_TYPE_BOOL, "number_value": api_pb2.DATA_TYPE_FLOAT64,
               "string_value": api_pb2.DATA_TYPE_STRING}
# An integer's column says so in its description (its tooltip): its type stays readable from the record.
INTEGER = "integer (written as text)"


# The command line of the Hydra job now running (launch.train_job sets it around the run): its overrides and
# Hydra's choice of each group. None for a run started from Python.
_COMMAND_LINE: ContextVar[tuple[list[str], dict] | None] = ContextVar("ganlab_command_line", default=None)


@contextmanager
def command_line(overrides, choices):
    """The job's overrides (Hydra's `hydra.overrides.task`) and group choices, for its runs' HParams."""
    token = _COMMAND_LINE.set(([str(o) for o in overrides], dict(choices)))
    try:
        yield
    finally:
        _COMMAND_LINE.reset(token)


def command_line_hparams(cfg, base: dict) -> dict:
    """A run's HParams: `base` (dataset, loss, remedy, seed, steps, batch_size) and every key overridden on the
    command line that started the run (a sweep's job: its own overrides, so every swept key, a sampler's too),
    each with its value in the run's config, its type kept (a float a number, a bool a bool, an int an int; a
    group's option its name, a list its text). So the rows of an lr sweep differ in `optim.d.lr`. The order
    sets the columns ticked by default (SHOWN_HPARAMS): the overridden keys that make another experiment
    (config.Role: experiment, seed, length, schedule) first, then `base`, then the rest (threads, cadence,
    device); the command's own keys (resume, resume_force, objective) are not the run's. A run started from
    Python (no Hydra job: no `command_line` around it) has `base` alone."""
    from enum import Enum

    from omegaconf import Container, OmegaConf

    from ganlab.config import Role, role_of

    job = _COMMAND_LINE.get()
    if job is None:
        return dict(base)
    overrides, choices = job
    first, last = {}, {}
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        role = role_of(key)
        if not key or key.startswith("hydra") or role == Role.command:
            continue
        if key in base:
            value = base[key]
        elif key in choices:  # a group's option (model=dcgan, debug=tiny, optim/paper=wgan)
            value = choices[key]
        else:
            value = OmegaConf.select(cfg, key, default=None)
            if isinstance(value, Container):
                value = str(OmegaConf.to_container(value, resolve=True))
            elif isinstance(value, Enum):
                value = value.name
        if value is not None:
            (first if role in (Role.experiment, Role.seed, Role.length, Role.schedule) else last)[key] = value
    return {**first, **{k: v for k, v in base.items() if k not in first}, **last}


def hparams_summaries(hparams: dict, metric_keys: tuple[str, ...], status: str) -> list[Summary]:
    """The three HParams summaries of a run: the experiment (columns), the session start (this
    run's values) and the session end (its status).

    The metric columns are the `metrics/*` scalars the loop writes at every evaluation: HParams
    shows each one's last value, and their scalar cards have the whole curve (a `final/*` scalar
    written once draws no line). A diverged or failed run ends with STATUS_FAILURE, so the
    dashboard's Status checkboxes filter it out."""
    values = {k: _hparam_value(v) for k, v in hparams.items() if v is not None}
    infos = [api_pb2.HParamInfo(name=k, type=_DATA_TYPES[v.WhichOneof("kind")], differs=i < SHOWN_HPARAMS,
                                description=INTEGER if isinstance(hparams[k], int) and not isinstance(hparams[k], bool)
                                else "")
             for i, (k, v) in enumerate(values.items())]
    metrics = [api_pb2.MetricInfo(name=api_pb2.MetricName(tag=f"metrics/{k}")) for k in metric_keys]
    start = plugin_data_pb2.SessionStartInfo(start_time_secs=time.time())
    for k, v in values.items():
        start.hparams[k].CopyFrom(v)
    end = plugin_data_pb2.SessionEndInfo(
        status=api_pb2.STATUS_SUCCESS if status == "completed" else api_pb2.STATUS_FAILURE,
        end_time_secs=time.time())
    experiment = api_pb2.Experiment(hparam_infos=infos, metric_infos=metrics)
    data = [(hparams_metadata.EXPERIMENT_TAG, plugin_data_pb2.HParamsPluginData(experiment=experiment)),
            (hparams_metadata.SESSION_START_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_start_info=start)),
            (hparams_metadata.SESSION_END_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_end_info=end))]
    return [Summary(value=[Summary.Value(tag=tag, metadata=hparams_metadata.create_summary_metadata(content))])
            for tag, content in data]


class LogHandler(RichHandler):
    """RichHandler (time, level, highlighted message) whose lines rich never wraps: RichHandler lays
    a record out in a table that folds a long message at the terminal's width, so a run directory
    or a `ganlab train resume=...` hint would be copied in pieces. Here a line is one line, however
    narrow the terminal (the terminal may fold it on screen; a copy of it is whole)."""

    def emit(self, record: logging.LogRecord) -> None:
        # Time and level as RichHandler shows them, the message unfolded; public API only.
        line = Text(datetime.fromtimestamp(record.created).strftime("[%x %X] "), style="log.time")
        line.append_text(self.get_level_text(record))
        line.append(" ")
        message = self.render_message(record, self.format(record))
        line.append_text(message if isinstance(message, Text) else Text(str(message)))
        try:
            self.console.print(line, soft_wrap=True)
        except Exception:  # noqa: BLE001 - logging's contract: a failed emit never raises
            self.handleError(record)


def summary_table(summary: dict) -> Table:
    table = Table(title=f"{summary['status']} at step {summary['step']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in summary["metrics"].items():
        if isinstance(value, float):
            table.add_row(key, "nan" if math.isnan(value) else f"{value:.4g}")
        elif isinstance(value, int):
            table.add_row(key, str(value))
    table.add_row("steps/s", f"{summary['steps_per_second']:.1f}")
    return table
