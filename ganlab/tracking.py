"""The one sink for what a run reports: TensorBoard events, the console, and summary.json."""

from __future__ import annotations

import json
import logging
import math
import os
import struct
import sys
from pathlib import Path

from rich import get_console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from tensorboard.compat.proto.summary_pb2 import Summary
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summary

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
    """Write to a temporary file in the same directory, then rename: never a half-written file."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        json.dump(finite_or_none(data), f, indent=2, allow_nan=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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
        self.writer = SummaryWriter(log_dir=str(self.run_dir), purge_step=purge_step)
        self.console = get_console()  # the console RichHandler logs to, so log lines print above the bar
        # A bar only on a terminal: in files and CI logs it would be thousands of lines of noise.
        # progress=False turns it off there too: parallel jobs (joblib) share one terminal.
        show_bar = progress is not False and sys.stdout.isatty()
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
            console=self.console, disable=not show_bar,
        )
        self.task = self.progress.add_task("train", total=total_steps, info="")

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self) -> None:
        self.progress.stop()
        self.writer.close()

    def scalars(self, step: int, values: dict[str, float]) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def images(self, step: int, images: dict[str, bytes]) -> None:
        """PNG-encoded pictures (encoded where they were drawn, off the training process)."""
        for tag, png in images.items():
            width, height = struct.unpack(">II", png[16:24])  # the PNG header's IHDR chunk
            image = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=png)
            self.writer.file_writer.add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)

    def advance(self, step: int, info: str) -> None:
        self.progress.update(self.task, completed=step, info=info)

    def finish(self, summary: dict) -> None:
        """Write summary.json, the HParams entry of this run, and print the final table."""
        write_json_atomic(self.run_dir / "summary.json", summary)
        if summary["status"] == "interrupted":  # the resumed run writes the final entries
            self.writer.flush()
            self.console.print(f"run directory: {self.run_dir}", soft_wrap=True)
            return
        # The same keys in every run (NaN where a diverged run has none), for the HParams table.
        final = {f"final/{k}": float(summary["metrics"].get(k, math.nan)) for k in self.metric_keys}
        final["final/diverged"] = float(summary["status"] == "diverged")
        # hparams() builds the three HParams protos; writing them to this run's own file writer
        # (not add_hparams, which opens a sub-run per call) keeps one run per directory.
        for proto in hparams_summary(self.hparams, final):
            self.writer.file_writer.add_summary(proto)
        step = summary["step"]
        for tag, value in final.items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()
        self.console.print(summary_table(summary))
        self.console.print(f"run directory: {self.run_dir}", soft_wrap=True)


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
