"""summary.json: the record of one run, its one schema (`RunSummary`), read and written here.

A run writes it when it ends (completed, diverged, interrupted or failed), and at start-up when it
fails before its first step; `ganlab report`, `ganlab eval`, resume=auto and the sweep's exit
status read it. Keys a reader does not know are kept (`extra`), so an older or newer file
round-trips; optional keys that are None are left out of the file, as before this schema.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ganlab.errors import GanlabError

NAME = "summary.json"
STATUSES = ("completed", "diverged", "interrupted", "failed")


@dataclass
class RunSummary:
    status: str = "failed"               # one of STATUSES
    step: int = 0                        # the last step trained
    run_dir: str | None = None
    labels: dict = field(default_factory=dict)     # short option names: dataset, loss, remedy
    seed: int | None = None
    device: str | None = None
    n_modes: int | None = None
    metrics: dict = field(default_factory=dict)    # the final evaluation's numbers
    references: dict = field(default_factory=dict)  # {untrained, gaussian, data: metrics} (docs/cli.md, Comparing runs)
    config: dict | None = None           # the whole resolved config: `ganlab report` groups runs by it
    protocol: dict = field(default_factory=dict)   # how the numbers were measured
    wall_seconds: float = 0.0            # training time over every segment of a resumed run
    steps_per_second: float = 0.0        # of the last segment
    # Optional: left out of the file when None.
    error: str | None = None
    diverged_step: int | None = None
    resumed_from_step: int | None = None
    mode_counts: list | None = None      # samples per mode at the final evaluation
    mode_history: dict | None = None     # {"steps": [...], "counts": [[...], ...]}
    history: dict | None = None          # {"steps": [...], "metrics": {name: [value per step]}}
    exit_code: int | None = None         # a failed job's exit status, for the process that launched it
    replica: dict | None = None          # trained as replica `index` of `of` (replicas=N from `first_seed`)
    metrics_ema: dict | None = None      # the final evaluation of G's moving average (ema.decay), as `metrics`
    cpu_threads: int | None = None       # the torch threads it trained on (CPU; cpu_threads=auto resolved), last segment
    # ganlab/provenance.py: the code (version, git commit, dirty), torch, Python, CUDA, host and command line
    provenance: dict | None = None       # of the run's start, kept through every resume
    resumed_provenance: list | None = None  # of each resume, in order, with its `resumed_at_step`
    extra: dict = field(default_factory=dict)  # keys this version does not know, kept as they were

    OPTIONAL = ("error", "diverged_step", "resumed_from_step", "mode_counts", "mode_history", "history", "exit_code",
                "replica", "provenance", "resumed_provenance", "metrics_ema", "cpu_threads")

    def to_dict(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k != "extra"}
        for key in self.OPTIONAL:
            if out[key] is None:
                del out[key]
        return {**self.extra, **out}

    @classmethod
    def from_dict(cls, data: dict) -> RunSummary:
        known = {f.name for f in fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in data.items() if k in known},
                   extra={k: v for k, v in data.items() if k not in known})

    @classmethod
    def read(cls, run_dir: str | Path) -> RunSummary:
        """The run's summary; GanlabError naming the file when it is missing or unreadable."""
        path = Path(run_dir) / NAME
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise GanlabError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
        if not isinstance(data, dict):
            raise GanlabError(f"cannot read {path}: not a JSON object")
        return cls.from_dict(data)

    @classmethod
    def read_or_none(cls, run_dir: str | Path) -> RunSummary | None:
        try:
            return cls.read(run_dir)
        except GanlabError:
            return None

    def write(self, run_dir: str | Path) -> None:
        """Atomically (never a half-written file); NaN and infinities as null."""
        from ganlab.tracking import write_json_atomic

        write_json_atomic(Path(run_dir) / NAME, self.to_dict())
