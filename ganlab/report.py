"""`ganlab report PATH`: compare the runs under PATH, as a paper-style table over seeds.

Every run directory holds a `summary.json` (ganlab/train.py `run()`). The report reads them all,
groups the runs whose configs are equal once the seed and the bookkeeping keys are set aside, and
gives for each group and metric the mean and the standard error over the completed seeds, how
many runs diverged or failed, and the fraction of seeds that captured every mode. Runs that did
not complete are counted and listed, never dropped. A seed counts once: where one config and seed ran
more than once (a sweep run again after it was interrupted), one run stands for it and a warning names
the others (`drop_repeated_seeds`).

A number alone is not a claim, so the report also gives:
- reference rows under the table: what the runs' untrained G, a Gaussian fit to the data and the
  real data score under the same protocol (summary.json `references`);
- a verdict per metric against a baseline group (`--baseline remedy=none` by default): an exact
  permutation test over seeds, a bootstrap interval of the difference and Benjamini-Hochberg over the
  report's comparisons (ganlab/verdicts.py), and a flag on rows indistinguishable from the Gaussian blob;
- rows whose remedy uses more than samples from G (class labels, real anchors: `Remedy.uses`) in a
  table of their own, never compared with the plain GAN;
- convergence: each metric against the step (mean ± s.e. over seeds, report_convergence.png), and a
  flag on rows whose metrics were still moving at the end.

`build_report()` is the pure part (read, group, compute); `Report` renders the result (rich
tables that read in a 100-column terminal: one per metric; Markdown with the protocol; CSV); ganlab/report_output.py draws the figures and writes the files; `ganlab report` is ganlab/cli.py's.
"""

from __future__ import annotations

import csv
import importlib
import io
import logging
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ganlab import verdicts
from ganlab.config import ADDED_KEYS, GROUPS, REPLICATE_ROLES, Role, keys_with
from ganlab.errors import ConfigError, GanlabError
from ganlab.metrics import REFERENCES, protocol_metrics
from ganlab.provenance import code_label
from ganlab.summary import RunSummary
from ganlab.verdicts import Movement, Verdict

# Warnings go to stderr: through the handlers of the `ganlab` logger where a caller set them up, else
# through logging's last-resort handler (the message alone).
log = logging.getLogger(__name__)

# The metrics a 2-D run writes into summary.json (ganlab/evaluation.py); any other metric found in
# the summaries is accepted too, so a new metric needs no change here.
METRICS = protocol_metrics("toy")  # from the registry (ganlab/metrics/__init__.py); image runs add their own
DEFAULT_METRICS = ("modes_captured", "high_quality_pct", "reverse_kl", "reverse_kl_hq", "wasserstein1")
# Image runs' headline metrics: shown by default where the summaries have them (and the 2-D ones they lack are not).
IMAGE_DEFAULT_METRICS = ("domain_fid", "fid", "swd_pixels")
DEFAULT_BASELINE = ("remedy", "none")  # when the runs have such a group and others to compare with it
# The Gaussian-blob flag: a row whose mode metrics are all within 2 s.e. of the Gaussian fit's. HQ %
# is among them, so that a GAN on the blob's number of modes with sharp samples is not called a blob.
BLOB_METRICS = ("modes_captured", "reverse_kl", "high_quality_pct")
BLOB_FLAG = "indistinguishable from a Gaussian blob"

SEED_KEY, = keys_with(Role.seed)  # the replicate axis: statistics are taken over it
# Keys that say how a run was executed, not which experiment it is (config.Role: cadence, execution, device,
# command), so runs that differ only in these are replicates of one configuration: threads and the device
# change the speed (and floating-point rounding), eval.background only moves W1/W2 and the pictures into a
# worker process, log.every and checkpoint.every only say how often scalars were read and state saved.
BOOKKEEPING_KEYS = keys_with(*REPLICATE_ROLES)

REPORT_FILES = ("report.md", "report.csv", "report_modes.png")  # always written
CONVERGENCE_FILE = "report_convergence.png"  # written when the runs logged their evaluations (summary history)

_MISSING = "<missing>"  # the value of a key that a config does not have (hashable, sorts as text)

CAPTION = ("mean ± standard error over the completed runs of each configuration (s.e. = sample "
           "std with ddof=1 / √n; a single run shows its value alone). seeds: all runs of the "
           "configuration, diverged and failed included, one run per seed (a seed run more than once with the same "
           "config, as when a sweep is run again, counts once: see the notes). all modes: the fraction of those runs that "
           "captured every mode (modes_captured = n_modes); diverged and failed runs count in the "
           "denominator, as runs that did not.")
VERDICT_CAPTION = ("vs {baseline}: each row against its baseline (the {baseline} group with the same dataset, "
                   "the same extra information and the most config in common), over the completed seeds: "
                   + verdicts.METHOD + "; {family} comparisons in the family; better/worse by each metric's better "
                   "side, higher/lower where it has none; n/a with fewer than 2 seeds. Δ: the row's mean minus the "
                   "baseline's, with its interval. Welch's t-test p is in report.csv (welch_p) for older tables.")
USES_CAPTION = ("Rows whose remedy uses more than samples from G ({uses}) answer another question than the plain "
                "GAN's rows (a conditional G is told the mode to draw from; a localized G samples around real "
                "points), so they sit in a table of their own with their own metrics and are never compared "
                "with {baseline}.")
FLAG_CAPTION = (f"flags: '{BLOB_FLAG}' when {', '.join(BLOB_METRICS)} are all within 2 s.e. of the difference "
                "from the Gaussian-fit reference of the same runs; 'still moving: METRIC' when the seeds' changes "
                "of the metric over the last 20 % of the evaluations differ from 0 (one-sample t-test, α = 0.05: "
                "more than about 2 s.e.; report_convergence.png draws every row against the step).")


@dataclass
class Run:
    """One run directory, as its summary.json describes it."""

    path: Path          # the run directory
    name: str           # path relative to the report's root, for display
    status: str         # completed | diverged | failed (unknown statuses count as failed) | unreadable
    step: int | None
    seed: Any
    labels: dict
    config: dict        # flattened to dotted keys; labels + seed for summaries older than `config`
    metrics: dict
    n_modes: int | None
    error: str | None = None
    diverged_step: int | None = None
    references: dict = field(default_factory=dict)  # name -> metrics (untrained, gaussian, data)
    history: dict | None = None  # {"steps": [...], "metrics": {name: [value per step]}}
    made_by: tuple[str, ...] = ()  # the ganlab version and commit of each segment (start, resumes): provenance

    @property
    def outcome(self) -> str:
        return self.status if self.status in ("completed", "diverged") else "failed"


@dataclass
class Stat:
    mean: float | None  # None when no completed run has a finite value
    se: float | None    # None with fewer than two values
    n: int              # the values it is computed over

    def text(self, n_completed: int) -> str:
        if self.mean is None:
            return "–"
        if self.se is None:
            text = _num(self.mean)
        elif self.se == 0:
            text = f"{_num(self.mean)} ± 0"
        else:  # the s.e. to two significant digits, the mean to the same decimal place (6.30 ± 0.52)
            decimals = min(8, max(0, 1 - math.floor(math.log10(self.se))))
            text = f"{self.mean:.{decimals}f} ± {self.se:.{decimals}f}"
        # Say when a completed run had no finite value for this metric: nothing is dropped silently.
        return text if self.n == n_completed else f"{text} (n={self.n})"


@dataclass
class Group:
    label: str                     # e.g. "loss=wgan_gp remedy=pacgan"
    items: list[tuple[str, str]]   # the (key, value) pairs the label is made of
    runs: list[Run]
    stats: dict[str, Stat] = field(default_factory=dict)
    n_all_modes: int = 0           # runs that completed with modes_captured == n_modes
    all_modes_fraction: float | None = None  # over all runs; None if n_modes is unknown
    baseline: Group | None = None  # the group the verdicts compare with (None: no verdicts)
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    movement: dict[str, Movement] = field(default_factory=dict)
    reference_stats: dict[str, dict[str, Stat]] = field(default_factory=dict)  # name -> metric -> Stat
    flags: list[str] = field(default_factory=list)
    uses: tuple[str, ...] = ()     # what its remedy uses beyond samples from G (Remedy.uses)

    @property
    def completed(self) -> list[Run]:
        return [r for r in self.runs if r.outcome == "completed"]

    def values(self, metric: str) -> list:
        return [r.metrics.get(metric) for r in self.completed]

    def verdict_text(self, metric: str) -> str:
        if self.baseline is self:
            return "baseline"
        verdict = self.verdicts.get(metric)
        return verdict.text() if verdict else ""

    @property
    def n_seeds(self) -> int:
        return len(self.runs)

    def count(self, outcome: str) -> int:
        return sum(r.outcome == outcome for r in self.runs)

    @property
    def n_completed(self) -> int:
        return self.count("completed")

    @property
    def n_diverged(self) -> int:
        return self.count("diverged")

    @property
    def n_failed(self) -> int:
        return self.count("failed")

    @property
    def n_modes(self) -> int | None:
        known = {r.n_modes for r in self.runs if r.n_modes is not None}
        return known.pop() if len(known) == 1 else None

    def all_modes_text(self) -> str:
        if self.all_modes_fraction is None:
            return "n/a"
        return f"{self.all_modes_fraction:.2f} ({self.n_all_modes}/{self.n_seeds})"

    def curves(self, metric: str) -> tuple[list[int], list[list]]:
        """The completed runs' values of `metric` at the evaluation steps they all logged."""
        runs = [r for r in self.completed if r.history and metric in r.history["metrics"]]
        if not runs:
            return [], []
        common = set(runs[0].history["steps"])
        for r in runs[1:]:
            common &= set(r.history["steps"])
        steps = sorted(common)
        out = []
        for r in runs:
            at = dict(zip(r.history["steps"], r.history["metrics"][metric]))
            out.append([at[s] if at[s] is not None else math.nan for s in steps])
        return steps, out


@dataclass
class ReferenceRow:
    """One reference distribution, pooled over the runs that measured it (same dataset; for the
    untrained G, also the same model)."""

    label: str                 # "reference: untrained G", with a qualifier when several exist
    name: str                  # untrained | gaussian | data
    n: int                     # the seeds it is pooled over (one run per seed)
    stats: dict[str, Stat]


@dataclass
class Report:
    root: Path
    metrics: list[str]
    by: list[str] | None
    groups: list[Group]
    runs: list[Run]
    notes: list[str] = field(default_factory=list)
    baseline: tuple[str, str] | None = None  # (key, value) of the baseline groups; None: no verdicts
    reference_rows: list[ReferenceRow] = field(default_factory=list)
    # (the run counted, the runs of the same config and seed left out): drop_repeated_seeds
    duplicates: list[tuple[Run, list[Run]]] = field(default_factory=list)
    versions_note: str | None = None  # the runs were made by different ganlab versions or commits

    @property
    def has_verdicts(self) -> bool:
        return self.baseline is not None and any(g.baseline is not None for g in self.groups)

    @property
    def baseline_text(self) -> str:
        return "=".join(self.baseline) if self.baseline else ""

    @property
    def problems(self) -> list[Run]:
        """Runs that did not complete, in run order: they are listed under the main table."""
        return [r for r in self.runs if r.status != "completed"]

    # ---- rendering -------------------------------------------------------------------------
    # Every table is built once as a TableSpec and drawn by rich (the terminal) or as Markdown (report.md).
    # One table per metric, not one with a column per metric and verdict: with intervals and q-values a
    # single table was 16 columns wide and unreadable in a 100-column terminal.

    @property
    def compared_groups(self) -> list[Group]:
        """The groups of the main tables: samples from G alone."""
        return [g for g in self.groups if not g.uses]

    @property
    def family_size(self) -> int:
        """The comparisons Benjamini-Hochberg adjusted over (one report is one family)."""
        return max((v.family for g in self.groups for v in g.verdicts.values()), default=0)

    def overview_spec(self) -> TableSpec:
        rows = [[g.label, str(g.n_seeds), str(g.n_diverged), str(g.n_failed), g.all_modes_text(),
                 "; ".join(g.flags + ([f"uses {', '.join(g.uses)}: own table"] if g.uses else []))]
                for g in self.groups]
        return TableSpec(f"ganlab report: {self.root}",
                         ["configuration", "seeds", "diverged", "failed", "all modes", "flags"], rows, wrap=(0, 5))

    def metric_spec(self, metric: str) -> TableSpec:
        groups = self.compared_groups
        if self.has_verdicts:
            title = (f"{metric}: vs {self.baseline_text}, permutation p, Benjamini-Hochberg q over "
                     f"{self.family_size} comparisons")
            columns = ["configuration", "mean ± s.e.", "95 % CI of Δ", "p", "q", "verdict"]
        else:
            title, columns = metric, ["configuration", "mean ± s.e."]
        rows = []
        for g in groups:
            row = [g.label, g.stats[metric].text(g.n_completed)]
            if self.has_verdicts:
                row += _verdict_cells(g, metric)
            rows.append(row)
        pad = [""] * (len(columns) - 2)
        references = [[ref.label, ref.stats[metric].text(ref.n) if metric in ref.stats else "–", *pad]
                      for ref in self.reference_rows]
        # The verdict may wrap at spaces ("n/a (no baseline on this dataset)"); the numbers never do.
        return TableSpec(title, columns, rows, references, wrap=(0, len(columns) - 1) if self.has_verdicts else (0,))

    def uses_specs(self) -> list[TableSpec]:
        """The rows with extra information, one table per kind: the shown metrics and the metrics only they
        have (class fidelity, distance to the anchors), values without verdicts, at most 4 metrics a table."""
        specs = []
        for uses in dict.fromkeys(g.uses for g in self.groups if g.uses):
            groups = [g for g in self.groups if g.uses == uses]
            plain = {m for g in self.compared_groups for r in g.completed for m in r.metrics}
            own = sorted({m for g in groups for r in g.completed for m in r.metrics} - plain)
            shown = [*self.metrics, *own]
            for start in range(0, len(shown), 4):
                chunk = shown[start:start + 4]
                rows = [[g.label, str(g.n_seeds), *(_stat(g, m).text(g.n_completed) for m in chunk)] for g in groups]
                specs.append(TableSpec(f"rows that use {', '.join(uses)} (not compared with "
                                       f"{self.baseline_text or 'the other rows'})",
                                       ["configuration", "seeds", *chunk], rows))
        return specs

    def problems_spec(self) -> TableSpec:
        return TableSpec("runs that did not complete (counted above, not in the means)",
                         ["run", "status", "step", "diverged at / error"], self.problem_rows(), wrap=(0, 3))

    def specs(self) -> list[TableSpec]:
        specs = [self.overview_spec(), *(self.metric_spec(m) for m in self.metrics), *self.uses_specs()]
        return specs + ([self.problems_spec()] if self.problems else [])

    def caption(self) -> str:
        text = CAPTION
        if self.by:
            text += f" Grouped by {', '.join(self.by)} only: runs that differ in other settings are pooled."
        if self.reference_rows:
            text += (" reference rows: the same evaluator and sample count on this run's G before its first step "
                     "(untrained G), on a Gaussian with the data's mean and covariance (Gaussian fit) and on fresh "
                     "data (real data), mean ± s.e. over the seeds that measured them (one run per seed, "
                     "as the runs of one seed draw the same reference samples).")
        if "reverse_kl" in self.metrics or "reverse_kl_hq" in self.metrics:
            text += (" reverse_kl: KL(p_gen(mode) || uniform) with p the nearest-mode histogram of all samples; "
                     "reverse_kl_hq: of the high-quality samples only (PacGAN's logger), undefined without one.")
        if self.has_verdicts:
            text += " " + VERDICT_CAPTION.format(baseline=self.baseline_text, family=self.family_size)
        uses = list(dict.fromkeys(u for g in self.groups for u in g.uses))
        if uses:
            text += " " + USES_CAPTION.format(uses=", ".join(uses), baseline=self.baseline_text or "the other rows")
        return text + " " + FLAG_CAPTION

    def problem_rows(self) -> list[list[str]]:
        rows = []
        for r in self.problems:
            detail = r.error or ""
            if r.status == "diverged" and r.diverged_step is not None:
                detail = f"diverged at step {r.diverged_step}" + (f": {detail}" if detail else "")
            rows.append([r.name, r.status, "" if r.step is None else str(r.step), " ".join(detail.split())])
        return rows

    def duplicate_notes(self) -> list[str]:
        """One line per seed that ran more than once: every run directory, and which one counts."""
        notes = []
        for kept, dropped in self.duplicates:
            label = next((g.label for g in self.groups if any(r is kept for r in g.runs)), "")
            notes.append(f"{label + ': ' if label else ''}seed {kept.seed} ran more than once with the same config; "
                         f"counted once, from {kept.path} ({_attempt(kept)}); left out: "
                         + ", ".join(f"{r.path} ({_attempt(r)})" for r in dropped))
        return notes

    def tables(self) -> list:
        """The rich tables, in the order of `specs`."""
        return [spec.rich() for spec in self.specs()]

    def markdown(self) -> str:
        out = [f"# ganlab report: {self.root}", ""]
        for i, spec in enumerate(self.specs()):
            out += spec.markdown(heading=i > 0) + [""]
        out += ["## Protocol", "", self.caption()]
        notes = self.duplicate_notes() + [self.versions_note] * bool(self.versions_note) + self.notes
        if notes:
            out += ["", "## Notes", ""] + [f"- {note}" for note in notes]
        return "\n".join(out) + "\n"

    def csv(self) -> str:
        keys = list(dict.fromkeys(k for g in self.groups for k, _ in g.items))
        columns = ["configuration", *keys, "n_seeds", "n_completed", "n_diverged", "n_failed", "n_modes",
                   "n_all_modes", "all_modes_fraction"]
        for m in self.metrics:
            columns += [f"{m}_{part}" for part in CSV_VERDICT_PARTS]
        columns += ["baseline", "family", "uses", "flags"]
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        for g in self.groups:
            items = dict(g.items)
            row = [g.label, *(items.get(k, "") for k in keys), g.n_seeds, g.n_completed, g.n_diverged,
                   g.n_failed, _blank(g.n_modes), g.n_all_modes, _blank(g.all_modes_fraction)]
            for m in self.metrics:
                s, v = _stat(g, m), g.verdicts.get(m)
                word = g.verdict_text(m) if g.baseline is g else (v.word if v else "")
                row += [_blank(s.mean), _blank(s.se), s.n, word,
                        *(_blank(getattr(v, name, None)) for name in ("p", "q", "diff", "low", "high", "welch"))]
            row += ["" if g.baseline is None else g.baseline.label, self.family_size if self.has_verdicts else "",
                    "; ".join(g.uses), "; ".join(g.flags)]
            writer.writerow(row)
        for ref in self.reference_rows:  # the same columns; the counts are the runs it is pooled over
            row = [ref.label, *("" for _ in keys), ref.n, ref.n, "", "", "", "", ""]
            for m in self.metrics:
                s = ref.stats.get(m, Stat(None, None, 0))
                row += [_blank(s.mean), _blank(s.se), s.n] + [""] * (len(CSV_VERDICT_PARTS) - 3)
            writer.writerow(row + ["", "", "", ""])
        return buffer.getvalue()


CSV_VERDICT_PARTS = ("mean", "se", "n", "verdict", "p", "q", "diff", "ci_low", "ci_high", "welch_p")


@dataclass
class TableSpec:
    """One table, drawn by rich in the terminal or as Markdown. Only the `wrap` columns may wrap (at
    spaces, never cut): numbers and verdicts stay on one line."""

    title: str
    columns: list[str]
    rows: list[list[str]]
    references: list[list[str]] = field(default_factory=list)  # dim, under a rule
    wrap: tuple[int, ...] = (0,)

    def rich(self):
        # Cells as Text, not markup strings: values like [0.5, 0.9] must print as they are.
        from rich import box
        from rich.table import Table
        from rich.text import Text

        table = Table(title=Text(self.title), box=box.SIMPLE_HEAD, pad_edge=False, title_justify="left",
                      collapse_padding=True)
        cells = [[row[i] for row in self.rows + self.references] for i in range(len(self.columns))]
        for i, name in enumerate(self.columns):
            wraps = i in self.wrap
            # A wrapping column is at least as wide as its longest word (up to 24), so it breaks at spaces;
            # only a longer word (a path) is folded.
            longest = max((len(word) for text in [name, *cells[i]] for word in text.split()), default=1)
            table.add_column(name, justify="left" if wraps else "right",
                             no_wrap=not wraps, overflow="fold" if wraps else "ellipsis",
                             min_width=min(24, longest) if wraps else None)
        for row in self.rows:
            table.add_row(*map(Text, row))
        if self.references:
            table.add_section()  # a rule between the runs and the references
        for row in self.references:
            table.add_row(*(Text(cell, style="dim") for cell in row))
        return table

    def markdown(self, heading: bool = True) -> list[str]:
        def line(cells) -> str:
            return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

        aligns = ["---" if i in self.wrap else "---:" for i in range(len(self.columns))]
        return ([f"## {self.title}", ""] if heading else []) + [line(self.columns), "|" + "|".join(aligns) + "|",
                                                                 *map(line, self.rows), *map(line, self.references)]


# ---- reading -------------------------------------------------------------------------------


def _natural(text: str) -> list:
    """Sort key that puts sweep job 2 before job 10."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts to dotted keys. Lists of plain values stay one (hashable) value, such as Adam's
    betas; lists holding dicts (a stack of remedies) are flattened with their index."""
    if isinstance(node, dict) and node:
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    if isinstance(node, list) and any(isinstance(v, (dict, list)) for v in node):
        out = {}
        for i, value in enumerate(node):
            out.update(flatten(value, f"{prefix}{i}."))
        return out
    key = prefix[:-1]
    if isinstance(node, list):
        return {key: tuple(node)}
    return {key: "{}" if isinstance(node, dict) else node}


def _n_modes_from_config(config: dict) -> int | None:
    """The number of modes of the toy datasets, from their config keys (ring: modes; grid: side²)."""
    for key in ("dataset.n_modes", "dataset.modes"):
        if isinstance(config.get(key), int):
            return config[key]
    side = config.get("dataset.side")
    return side * side if isinstance(side, int) else None


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def read_run(summary_path: Path, root: Path) -> Run:
    run_dir = summary_path.parent
    name = run_dir.relative_to(root).as_posix() if run_dir != root else "."
    try:
        summary = RunSummary.read(run_dir).to_dict()  # the schema's reader; the checks below take old files too
    except GanlabError as exc:
        return Run(run_dir, name, "unreadable", None, None, {}, {}, {}, None,
                   error=f"unreadable summary.json: {str(exc).split(': ', 1)[-1]}")
    labels = {k: str(v) for k, v in (summary.get("labels") or {}).items()}
    seed = summary.get("seed")
    if isinstance(summary.get("config"), dict):
        config = flatten(summary["config"])
    else:  # written before summaries carried the config: the option names and the seed are all we know
        config = {**labels, SEED_KEY: seed}
    if seed is None:
        seed = config.get(SEED_KEY)
    metrics = summary.get("metrics") if isinstance(summary.get("metrics"), dict) else {}
    n_modes = _int_or_none(summary.get("n_modes"))
    error = summary.get("error")
    references = summary.get("references") if isinstance(summary.get("references"), dict) else {}
    history = summary.get("history")
    if not (isinstance(history, dict) and isinstance(history.get("steps"), list)
            and isinstance(history.get("metrics"), dict)):
        history = None
    resumes = summary.get("resumed_provenance") if isinstance(summary.get("resumed_provenance"), list) else []
    made_by = tuple(dict.fromkeys(code_label(p) for p in [summary.get("provenance"), *resumes]))
    return Run(run_dir, name, str(summary.get("status", "failed")), _int_or_none(summary.get("step")), seed,
               labels, config, metrics, n_modes, error=None if error is None else str(error),
               diverged_step=_int_or_none(summary.get("diverged_step")),
               references={k: v for k, v in references.items() if isinstance(v, dict)}, history=history,
               made_by=made_by)


def versions_note(runs: list[Run]) -> str | None:
    """The ganlab versions and commits that made `runs` (summary.json `provenance`) and how many runs each, when
    more than one did (a run resumed by another version is counted as "A, resumed by B"); else None."""
    made = [r.made_by for r in runs if r.made_by]
    if len({label for labels in made for label in labels}) < 2:
        return None
    counts = Counter(made)
    return ("these runs were made by different ganlab versions or commits: "
            + "; ".join(f"{', resumed by '.join(labels)}: {n} run{'s' * (n != 1)}" for labels, n in counts.most_common()))


def _attempt(run: Run) -> str:
    return f"{run.status}, step {'?' if run.step is None else run.step}"


_OUTCOME_RANK = {"completed": 2, "diverged": 1}  # a result of the seed; interrupted, failed: an unfinished try


def _preference(run: Run) -> tuple:
    """Which of the runs of one config and seed counts (the largest): a completed run, else a diverged
    one (both are results of the seed; an interrupted or failed run is not), then the one that trained
    more steps, then the one whose summary.json was written last."""
    try:
        written = (run.path / "summary.json").stat().st_mtime_ns
    except OSError:
        written = -1
    return _OUTCOME_RANK.get(run.status, 0), -1 if run.step is None else run.step, written


def drop_repeated_seeds(runs: list[Run]) -> tuple[list[Run], list[tuple[Run, list[Run]]]]:
    """One run per config and seed. A sweep run again after it was killed trains every seed again
    in a new folder: counting both would count each seed twice and shrink every standard error by
    about √2. Runs are the same experiment and seed when their configs are equal once the
    bookkeeping keys are set aside (the report's grouping: `_experiment_key`) and their seeds are
    equal; of those `_preference` picks one, and on a full tie the last in path order. Returns the
    runs kept, in their order, and (the run kept, the runs left out) for each seed run more than once.
    Unreadable summaries and runs without a seed are kept as they are."""
    buckets: dict[tuple, list[int]] = {}
    for i, run in enumerate(runs):
        if run.status != "unreadable" and run.seed is not None:
            buckets.setdefault((_experiment_key(run), run.seed), []).append(i)
    left_out: set[int] = set()
    duplicates = []
    for members in buckets.values():
        if len(members) < 2:
            continue
        kept = max(members, key=lambda i: (_preference(runs[i]), i))
        dropped = [i for i in members if i != kept]
        left_out.update(dropped)
        duplicates.append((runs[kept], [runs[i] for i in dropped]))
    return [r for i, r in enumerate(runs) if i not in left_out], duplicates


def find_runs(root: Path) -> list[Run]:
    paths = sorted(root.rglob("summary.json"), key=lambda p: _natural(p.relative_to(root).as_posix()))
    runs = [read_run(p, root) for p in paths]
    # A run from before a config key existed did what the key's old value does (config.ADDED_KEYS):
    # give it that value where other runs of the same dataset have the key, so that they group together.
    for key, old in ADDED_KEYS.items():
        target = key.split(".")[0] + "._target_"  # the same option of the key's group
        targets = {r.config.get(target) for r in runs if key in r.config}
        for r in runs:
            if key not in r.config and r.config.get(target) in targets:
                r.config[key] = old
    return runs


# ---- grouping ------------------------------------------------------------------------------


def _is_target(key: str) -> bool:
    return key == "_target_" or key.endswith("._target_")


def _short(target: Any) -> str:
    return str(target).rsplit(".", 1)[-1].lower()


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _label_value(runs: list[Run], name: str, target_keys: list[str]) -> str:
    """The short option name of group `name` (`loss` -> `wgan_gp`) for these runs: their `labels`,
    or the class names of the differing targets when the summaries carry no label for it."""
    names = Counter(r.labels[name] for r in runs if name in r.labels)
    if names:
        return names.most_common(1)[0][0]
    shorts = [_short(runs[0].config.get(k, _MISSING)) for k in target_keys]
    return "+".join(dict.fromkeys(s for s in shorts if s != _MISSING.lower()))


def _label_items(groups: list[list[Run]], keys: list[str]) -> list[list[tuple[str, str]]]:
    """For each group, the (name, value) pairs of `keys`: the `_target_` keys under one config
    group collapse into that group's short option name (`loss=wgan_gp`); label names (`loss`) are
    looked up in the runs' labels; other keys show their value, and are left out where missing."""
    label_groups: dict[str, list[str]] = {}
    for k in keys:
        if _is_target(k) or k in GROUPS:
            label_groups.setdefault(k.split(".")[0] if _is_target(k) and "." in k else k, []).append(k)
    order = {g: i for i, g in enumerate(GROUPS)}
    label_names = sorted(label_groups, key=lambda g: (order.get(g, len(GROUPS)), keys.index(label_groups[g][0])))
    plain = [k for k in keys if not (_is_target(k) or k in GROUPS)]
    result = []
    for runs in groups:
        items = []
        for name in label_names:
            targets = [k for k in label_groups[name] if _is_target(k)]
            items.append((name, _label_value(runs, name, targets)))
        for k in plain:
            value = runs[0].config.get(k, _MISSING)
            if value != _MISSING:
                items.append((k, _shown(value)))
        result.append(items)
    return result


def _experiment_key(run: Run) -> tuple:
    ignored = {SEED_KEY, *BOOKKEEPING_KEYS}
    return tuple(sorted(((k, v) for k, v in run.config.items() if k not in ignored), key=lambda kv: kv[0]))


# Samples made elsewhere, scored by `ganlab eval --samples FILE --out DIR` (ganlab/evaluation/saved.py): their
# record's config has this key (the row's name) and no model, loss or remedy. Such a row is labelled by its name.
SAMPLES_KEY = "samples.name"


def _auto_groups(runs: list[Run]) -> tuple[list[list[Run]], list[list[tuple[str, str]]]]:
    """Group by the whole config minus seed and bookkeeping; label by what differs (samples made elsewhere: by
    their dataset and name, and left out of what the other rows' labels compare)."""
    buckets: dict[tuple, list[Run]] = {}
    for run in runs:
        buckets.setdefault(_experiment_key(run), []).append(run)
    own = [g for g in buckets.values() if SAMPLES_KEY not in g[0].config]
    groups, items = _own_groups(own) if own else ([], [])
    for g in buckets.values():
        if SAMPLES_KEY in g[0].config:
            groups.append(g)
            items.append([("dataset", g[0].labels.get("dataset") or _short(g[0].config.get("dataset._target_"))),
                          ("samples", _shown(g[0].config[SAMPLES_KEY]))])
    return groups, items


def _own_groups(groups: list[list[Run]]) -> tuple[list[list[Run]], list[list[tuple[str, str]]]]:
    """ganlab's own runs, grouped: labelled by the keys in which the groups' configs differ."""
    buckets = {_experiment_key(g[0]): g for g in groups}
    if len(groups) == 1:
        names = [n for n in ("dataset", "loss", "remedy") if n in groups[0][0].labels]
        return groups, _label_items(groups, names)
    configs = [dict(key) for key in buckets]
    all_keys = list(dict.fromkeys(k for config in configs for k in config))
    differing = [k for k in all_keys if len({c.get(k, _MISSING) for c in configs}) > 1]
    targets = [k for k in differing if _is_target(k)]
    # A key that changes with the chosen options (WGAN-GP brings its own learning rates) is said by
    # the option names already; show it only where it varies between groups of the same options.
    by_choice: dict[tuple, set] = {}
    shown = []
    for k in differing:
        if _is_target(k):
            continue
        by_choice.clear()
        for c in configs:
            by_choice.setdefault(tuple(c.get(t, _MISSING) for t in targets), set()).add(c.get(k, _MISSING))
        if any(len(values) > 1 for values in by_choice.values()):
            shown.append(k)
    return groups, _label_items(groups, targets + shown)


def _check_by(runs: list[Run], by: list[str]) -> None:
    labels = {name for r in runs for name in r.labels}
    config_keys = {k for r in runs for k in r.config} - {SEED_KEY}
    for key in by:
        if key == SEED_KEY:
            raise ConfigError("--by seed: the report averages over seeds; group by other keys")
        if key not in labels and key not in config_keys:
            choices = sorted(labels) + sorted(config_keys - labels)
            raise ConfigError(f"unknown key '{key}' for --by; choose from: {', '.join(choices)}")


def _by_groups(runs: list[Run], by: list[str]) -> tuple[list[list[Run]], list[list[tuple[str, str]]]]:
    buckets: dict[tuple, list[Run]] = {}
    for run in runs:
        buckets.setdefault(tuple(_value(run, k) for k in by), []).append(run)
    groups = list(buckets.values())
    items = []
    for key, members in zip(buckets, groups):
        pairs = []
        for k, v in zip(by, key):
            if _is_target(k):  # shown as its option name: loss._target_ -> loss=wgan_gp
                from_labels = k.split(".")[0] in members[0].labels
                pairs.append((k.rsplit(".", 1)[0] if "." in k else k, _shown(v) if from_labels else _short(v)))
            else:
                pairs.append((k, _shown(v)))
        items.append(pairs)
    return groups, items


def mean_se(values: list[Any]) -> Stat:
    xs = []
    for v in values:
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            xs.append(float(v))
    n = len(xs)
    if n == 0:
        return Stat(None, None, 0)
    mean = sum(xs) / n
    if n == 1:
        return Stat(mean, None, 1)
    variance = sum((x - mean) ** 2 for x in xs) / (n - 1)  # sample variance (ddof=1)
    return Stat(mean, math.sqrt(variance / n), n)


def _value(run: Run, key: str) -> Any:
    """A run's value of `key`: its label (`remedy` -> `pacgan`), else its config value."""
    if key in run.labels:
        return run.labels[key]
    if _is_target(key) and key.split(".")[0] in run.labels:  # loss._target_ -> labels["loss"]
        return run.labels[key.split(".")[0]]
    return run.config.get(key, _MISSING)


def _items(runs: list[Run], prefix: str) -> frozenset:
    """The config items under `prefix` (e.g. "dataset.") of these runs, pooled."""
    return frozenset((k, v) for r in runs for k, v in r.config.items() if k.startswith(prefix))


def parse_baseline(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise ConfigError(f"--baseline {text!r}: give KEY=VALUE, e.g. --baseline remedy=none")
    return key.strip(), value.strip()


def _assign_baselines(groups: list[Group], metrics: list[str], spec: tuple[str, str], explicit: bool) -> bool:
    """Give every group its baseline and verdicts; False when there is nothing to compare."""
    key, value = spec
    bases = [g for g in groups if all(_shown(_value(r, key)) == value for r in g.runs)]
    if not bases:
        if explicit:
            raise ConfigError(f"--baseline {key}={value}: no group has it; the groups are: "
                              + "; ".join(g.label for g in groups))
        return False
    if len(bases) == len(groups) and not explicit:
        return False  # every group is a baseline: nothing to compare
    axis = (key, f"{key}.") if not _is_target(key) else (key.split(".")[0], f"{key.split('.')[0]}.")
    ignored = {SEED_KEY, *BOOKKEEPING_KEYS}

    def distance(a: Group, b: Group) -> int:
        """The config keys in which two groups differ, the compared axis (remedy.*) set aside."""
        ca, cb = a.runs[0].config, b.runs[0].config
        keys = (set(ca) | set(cb)) - ignored
        return sum(ca.get(k, _MISSING) != cb.get(k, _MISSING) for k in keys
                   if k != axis[0] and not k.startswith(axis[1]))

    for g in groups:
        if g in bases:
            g.baseline = g
            continue
        # A verdict across datasets means nothing: the baseline has the group's dataset config, and
        # of those the most config in common (PacGAN's GAN row for PacGAN's rows, not the VEEGAN setup's).
        candidates = [b for b in bases if _items(b.runs, "dataset.") == _items(g.runs, "dataset.")]
        # Nor one between rows that use different information (class labels, real anchors: Remedy.uses).
        comparable = [b for b in candidates if b.uses == g.uses]
        if not comparable:
            why = (f"uses {', '.join(g.uses)}: not compared with {key}={value}" if candidates
                   else "no baseline on this dataset")
            g.verdicts = {m: Verdict("n/a", None, why) for m in metrics}
            continue
        g.baseline = min(comparable, key=lambda b: distance(g, b))
        g.verdicts = {m: verdicts.compare(m, g.values(m), g.baseline.values(m)) for m in metrics}
    # One report is one family: Benjamini-Hochberg over every comparison it shows.
    compared = [(g, m) for g in groups if g.baseline is not None and g.baseline is not g for m in metrics]
    adjusted = verdicts.adjust((m, g.verdicts[m], _stat(g, m).mean, _stat(g.baseline, m).mean) for g, m in compared)
    for (g, m), verdict in zip(compared, adjusted):
        g.verdicts[m] = verdict
    return True


def _uses(run: Run) -> tuple[str, ...]:
    """What a run's remedies use beyond samples from G (`Remedy.uses` of the classes its config names)."""
    found: list[str] = []
    for key, target in run.config.items():
        if not (key.startswith("remedy.") and key.endswith("._target_") and str(target).startswith("ganlab.")):
            continue
        module, _, name = str(target).rpartition(".")
        try:
            found += getattr(getattr(importlib.import_module(module), name), "uses", ())
        except (ImportError, AttributeError):  # a remedy renamed since the run: what it used is unknown, so
            found.append(f"an unknown remedy ({target})")  # it is kept apart rather than compared
    return tuple(dict.fromkeys(found))


def _flags(group: Group, metrics: list[str]) -> list[str]:
    flags = []
    gauss = group.reference_stats.get("gaussian", {})
    if all(m in gauss and gauss[m].mean is not None and group.stats.get(m) is not None
           and group.stats[m].mean is not None for m in BLOB_METRICS) and all(
            verdicts.within(group.stats[m].mean, group.stats[m].se, gauss[m].mean, gauss[m].se) for m in BLOB_METRICS):
        flags.append(BLOB_FLAG)
    moving = [m for m in metrics if group.movement.get(m) and group.movement[m].moving]
    if moving:
        flags.append("still moving: " + ", ".join(moving))
    return flags


def _reference_rows(groups: list[Group], metrics: list[str]) -> list[ReferenceRow]:
    """Pool each reference over the runs that measured it: the Gaussian fit and the data per dataset
    config, the untrained G per dataset and model config (an untrained MLP is not an untrained DCGAN).
    One run per seed: the references of a seed are the same draws in every group of a sweep (the
    same model, data and evaluation seed), so counting each group's copy would shrink the s.e."""
    pools: dict[tuple, list[Run]] = {}
    first: dict[tuple, Group] = {}
    seen: set = set()
    order = list(REFERENCES)
    for g in groups:
        for r in g.runs:
            for name in r.references:
                if name not in REFERENCES:
                    continue
                model = _items([r], "model.") if name == "untrained" else frozenset()
                key = (_items([r], "dataset."), order.index(name), model)
                if (key, r.seed) in seen:
                    continue
                seen.add((key, r.seed))
                pools.setdefault(key, []).append(r)
                first.setdefault(key, g)
    datasets = list(dict.fromkeys(k[0] for k in pools))
    rows = []
    for key in sorted(pools, key=lambda k: (datasets.index(k[0]), k[1])):
        runs, name = pools[key], order[key[1]]
        qualifiers = []
        if len(datasets) > 1:
            qualifiers.append(_dataset_qualifier(key[0], datasets, runs[0]))
        if name == "untrained" and sum(k[0] == key[0] and k[1] == key[1] for k in pools) > 1:
            qualifiers.append(f"the model of {first[key].label}")
        label = f"reference: {REFERENCES[name]}" + (f" ({'; '.join(qualifiers)})" if qualifiers else "")
        stats = {m: mean_se([r.references[name].get(m) for r in runs]) for m in metrics}
        rows.append(ReferenceRow(label, name, len(runs), stats))
    return rows


def _dataset_qualifier(dataset: frozenset, datasets: list[frozenset], run: Run) -> str:
    """"dataset=NAME" for a reference row, with the keys in which its config differs from another
    config of the same dataset (e.g. ", classes=first"), so that no two rows read alike."""
    text = f"dataset={run.labels.get('dataset') or _short(run.config.get('dataset._target_'))}"
    mine = dict(dataset)
    others = [dict(d) for d in datasets if d != dataset and dict(d).get("dataset._target_") == mine.get("dataset._target_")]
    differ = sorted(k for k in mine if any(other.get(k) != mine[k] for other in others))
    return text + "".join(f", {k.removeprefix('dataset.')}={_shown(mine[k])}" for k in differ)


def build_report(path: str | Path, metrics: list[str] | None = None, by: list[str] | None = None,
                 baseline: str | None = None) -> Report:
    """Read every run under `path`, group them and compute the statistics, the verdicts against
    `baseline` ("KEY=VALUE"; default remedy=none where the runs have it) and the reference rows.
    Raises ConfigError for a path without runs, an unknown metric, an unknown --by key or a
    baseline no group has."""
    root = Path(path)
    if not root.exists():
        raise ConfigError(f"{root} does not exist; give a run directory or a folder of runs (a multirun)")
    if not root.is_dir():
        raise ConfigError(f"{root} is not a directory; give a run directory or a folder of runs (a multirun)")
    runs = find_runs(root)
    if not runs:
        raise ConfigError(f"no runs under {root}: no summary.json found (a run writes it when it ends)")
    runs, duplicates = drop_repeated_seeds(runs)

    readable = [r for r in runs if r.status != "unreadable"]
    known = list(dict.fromkeys([*METRICS, *(m for r in readable for m in r.metrics)]))
    spec = parse_baseline(baseline) if baseline is not None else DEFAULT_BASELINE
    present = {m for r in readable for m in r.metrics}
    if metrics is None:  # the headline metrics these runs have (2-D or image), else the 2-D ones
        metrics = [m for m in (*DEFAULT_METRICS, *IMAGE_DEFAULT_METRICS) if m in present] or list(DEFAULT_METRICS)
    else:
        metrics = list(dict.fromkeys(metrics))
    if not metrics:
        raise ConfigError(f"--metrics is empty; choose from: {', '.join(known)}")
    for m in metrics:
        if m not in known:
            raise ConfigError(f"unknown metric '{m}' for --metrics; choose from: {', '.join(known)}")
    if by is not None:
        by = list(dict.fromkeys(by))
        if not by:
            raise ConfigError("--by is empty; name at least one key, or leave it out to group by the whole config")
        _check_by(readable, by)

    if by:
        groups, items = _by_groups(readable, by)
    elif readable:
        groups, items = _auto_groups(readable)
    else:  # every summary.json was unreadable: they are listed, and there is nothing to average
        groups, items = [], []
    # A failed run has no n_modes of its own: take it from its group's other runs, or its config.
    for members in groups:
        group_modes = {r.n_modes for r in members if r.n_modes is not None}
        for r in members:
            if r.n_modes is None:
                r.n_modes = group_modes.pop() if len(group_modes) == 1 else _n_modes_from_config(r.config)

    labels = [" ".join(f"{k}={v}" for k, v in pairs) or "all runs" for pairs in items]
    for label, count in Counter(labels).items():
        if count > 1:  # two configs whose differing keys read the same: number them apart
            seen = 0
            for i, other in enumerate(labels):
                if other == label:
                    seen += 1
                    labels[i] = f"{label} [{seen}]"

    report = Report(root, metrics, by, [], runs, duplicates=duplicates)
    for members, pairs, label in zip(groups, items, labels):
        group = Group(label, pairs, members, uses=tuple(dict.fromkeys(u for r in members for u in _uses(r))))
        completed = [r for r in members if r.outcome == "completed"]
        # The blob flag's metrics are computed whether shown or not (rows show `metrics` only).
        group.stats = {m: mean_se([r.metrics.get(m) for r in completed]) for m in dict.fromkeys([*metrics, *BLOB_METRICS])}
        group.n_all_modes = sum(r.n_modes is not None and r.metrics.get("modes_captured") == r.n_modes
                                for r in completed)
        if all(r.n_modes is not None for r in completed):
            group.all_modes_fraction = group.n_all_modes / len(members)
        for name in REFERENCES:
            if any(name in r.references for r in completed):
                group.reference_stats[name] = {m: mean_se([r.references.get(name, {}).get(m) for r in completed])
                                               for m in dict.fromkeys([*metrics, *BLOB_METRICS])}
        group.movement = {m: verdicts.still_moving(*group.curves(m)) for m in metrics}
        group.flags = _flags(group, metrics)
        report.groups.append(group)
    # A seed of one config counts once (drop_repeated_seeds); with --by, configs that share seeds are
    # pooled on purpose. Said on stderr, and in report.md's notes.
    for note in report.duplicate_notes():
        log.warning(note)
    report.versions_note = versions_note(runs)
    if report.versions_note:  # the numbers may differ for that alone: said on stderr, and in report.md's notes
        log.warning(report.versions_note)
    if _assign_baselines(report.groups, metrics, spec, explicit=baseline is not None):
        report.baseline = spec
    report.reference_rows = _reference_rows(report.groups, metrics)
    unreadable = len(runs) - len(readable)
    if unreadable:
        report.notes.append(f"{unreadable} summary.json could not be read; listed with the runs that did not complete")
    return report


# ---- helpers -------------------------------------------------------------------------------


def _num(x: float) -> str:
    return f"{x:.4g}"


def _blank(value: Any) -> Any:
    return "" if value is None else value


def _stat(group: Group, metric: str) -> Stat:
    return group.stats.get(metric) or mean_se(group.values(metric))


def _verdict_cells(group: Group, metric: str) -> list[str]:
    """Δ [CI], p, q, verdict of a row in a metric's table."""
    if group.baseline is group:
        return ["baseline", "", "", ""]
    v = group.verdicts.get(metric)
    if v is None:
        return ["", "", "", ""]
    if v.p is None:
        return ["", "", "", v.text()]
    return [v.ci_text(digits=2), verdicts.pq_cell(v.p), verdicts.pq_cell(v.q), v.word]
