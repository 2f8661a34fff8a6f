"""`ganlab report PATH`: compare the runs under PATH, as a paper-style table over seeds.

Every run directory holds a `summary.json` (ganlab/train.py `run()`). The report reads them all,
groups the runs whose configs are equal once the seed and the bookkeeping keys are set aside, and
gives for each group and metric the mean and the standard error over the completed seeds, how
many runs diverged or failed, and the fraction of seeds that captured every mode. Runs that did
not complete are counted and listed, never dropped.

`build_report()` is the pure part (read, group, compute); `Report` renders the result (rich
tables, Markdown, CSV, the mode-coverage figure); `main()` is the CLI shell around both.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ganlab.config import GROUPS
from ganlab.errors import ConfigError, GanlabError

# The metrics a run writes into summary.json (ganlab/metrics); any other metric found in the
# summaries is accepted too, so a new metric needs no change here.
METRICS = ("modes_captured", "high_quality_pct", "reverse_kl", "critic_gap", "wasserstein1", "wasserstein2",
           "jacobian_sigma_min")
DEFAULT_METRICS = ("modes_captured", "high_quality_pct", "reverse_kl", "wasserstein1")

SEED_KEY = "seed"  # the replicate axis: statistics are taken over it
# Config keys that say how a run was executed, not which experiment it is, so runs that differ
# only in these are replicates of one configuration: the thread count and the device change the
# speed (and floating-point rounding), eval.background only moves W1/W2 and the pictures into a
# worker process, log.every only sets how often scalars are read (the trajectory is the same).
# checkpoint.every and resume only say when state was saved and where a run continued from.
BOOKKEEPING_KEYS = ("cpu_threads", "device", "eval.background", "log.every", "checkpoint.every", "resume",
                    "resume_force")

REPORT_FILES = ("report.md", "report.csv", "report_modes.png")

_MISSING = "<missing>"  # the value of a key that a config does not have (hashable, sorts as text)

CAPTION = ("mean ± standard error over the completed runs of each configuration (s.e. = sample "
           "std with ddof=1 / √n; a single run shows its value alone). seeds: all runs of the "
           "configuration, diverged and failed included. all modes: the fraction of those runs that "
           "captured every mode (modes_captured = n_modes); diverged and failed runs count in the "
           "denominator, as runs that did not.")


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


@dataclass
class Report:
    root: Path
    metrics: list[str]
    by: list[str] | None
    groups: list[Group]
    runs: list[Run]
    notes: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[Run]:
        """Runs that did not complete, in run order: they are listed under the main table."""
        return [r for r in self.runs if r.status != "completed"]

    # ---- rendering -------------------------------------------------------------------------
    def header(self) -> list[str]:
        return ["configuration", "seeds", "diverged", "failed", "all modes", *self.metrics]

    def rows(self) -> list[list[str]]:
        return [[g.label, str(g.n_seeds), str(g.n_diverged), str(g.n_failed), g.all_modes_text(),
                 *(g.stats[m].text(g.n_completed) for m in self.metrics)] for g in self.groups]

    def caption(self) -> str:
        text = CAPTION
        if self.by:
            text += f" Grouped by {', '.join(self.by)} only: runs that differ in other settings are pooled."
        return text

    def problem_rows(self) -> list[list[str]]:
        rows = []
        for r in self.problems:
            detail = r.error or ""
            if r.status == "diverged" and r.diverged_step is not None:
                detail = f"diverged at step {r.diverged_step}" + (f": {detail}" if detail else "")
            rows.append([r.name, r.status, "" if r.step is None else str(r.step), " ".join(detail.split())])
        return rows

    def tables(self) -> list:
        """The rich tables: the comparison, and the runs that did not complete (if any)."""
        # Cells as Text, not markup strings: values like [0.5, 0.9] must print as they are.
        from rich.table import Table
        from rich.text import Text

        table = Table(title=Text(f"ganlab report: {self.root}"), caption=Text(self.caption()),
                      caption_justify="left")
        longest_item = max((len(f"{k}={v}") for g in self.groups for k, v in g.items), default=0)
        table.add_column(self.header()[0], min_width=min(longest_item, 40))  # never cut a key=value
        for name in self.header()[1:]:
            table.add_column(name, justify="right")
        for row in self.rows():
            table.add_row(*map(Text, row))
        tables = [table]
        if self.problems:
            problems = Table(title="runs that did not complete (counted above, not in the means)")
            for name in ("run", "status", "step", "diverged at / error"):
                problems.add_column(name, justify="right" if name == "step" else "left")
            for row in self.problem_rows():
                problems.add_row(*map(Text, row))
            tables.append(problems)
        return tables

    def markdown(self) -> str:
        def line(cells) -> str:
            return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

        header = self.header()
        out = [f"# ganlab report: {self.root}", "", line(header),
               "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
        out += [line(row) for row in self.rows()]
        out += ["", self.caption()]
        if self.problems:
            out += ["", "## Runs that did not complete", "",
                    "Counted in the table above, not in its means.", "",
                    line(["run", "status", "step", "diverged at / error"]), "|---|---|---:|---|"]
            out += [line(row) for row in self.problem_rows()]
        if self.notes:
            out += ["", "## Notes", ""] + [f"- {note}" for note in self.notes]
        return "\n".join(out) + "\n"

    def csv(self) -> str:
        keys = list(dict.fromkeys(k for g in self.groups for k, _ in g.items))
        columns = ["configuration", *keys, "n_seeds", "n_completed", "n_diverged", "n_failed", "n_modes",
                   "n_all_modes", "all_modes_fraction"]
        for m in self.metrics:
            columns += [f"{m}_mean", f"{m}_se", f"{m}_n"]
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        for g in self.groups:
            items = dict(g.items)
            row = [g.label, *(items.get(k, "") for k in keys), g.n_seeds, g.n_completed, g.n_diverged,
                   g.n_failed, _blank(g.n_modes), g.n_all_modes, _blank(g.all_modes_fraction)]
            for m in self.metrics:
                s = g.stats[m]
                row += [_blank(s.mean), _blank(s.se), s.n]
            writer.writerow(row)
        return buffer.getvalue()

    def write(self, directory: str | Path | None = None) -> list[Path]:
        """Write report.md, report.csv and report_modes.png (atomically) into `directory`
        (default: the report's root); return their paths."""
        directory = Path(directory) if directory is not None else self.root
        md, csv_path, png = (directory / name for name in REPORT_FILES)
        _write_atomic(md, self.markdown().encode())
        _write_atomic(csv_path, self.csv().encode())
        _write_atomic(png, modes_figure(self))
        return [md, csv_path, png]


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
        summary, problem = json.loads(summary_path.read_text()), "not a JSON object"
    except (OSError, ValueError) as exc:
        summary, problem = None, str(exc)
    if not isinstance(summary, dict):
        return Run(run_dir, name, "unreadable", None, None, {}, {}, {}, None,
                   error=f"unreadable summary.json: {problem}")
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
    return Run(run_dir, name, str(summary.get("status", "failed")), _int_or_none(summary.get("step")), seed,
               labels, config, metrics, n_modes, error=None if error is None else str(error),
               diverged_step=_int_or_none(summary.get("diverged_step")))


def find_runs(root: Path) -> list[Run]:
    paths = sorted(root.rglob("summary.json"), key=lambda p: _natural(p.relative_to(root).as_posix()))
    return [read_run(p, root) for p in paths]


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


def _auto_groups(runs: list[Run]) -> tuple[list[list[Run]], list[list[tuple[str, str]]]]:
    """Group by the whole config minus seed and bookkeeping; label by what differs."""
    buckets: dict[tuple, list[Run]] = {}
    for run in runs:
        buckets.setdefault(_experiment_key(run), []).append(run)
    groups = list(buckets.values())
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
    def value(run: Run, key: str) -> Any:
        if key in run.labels:
            return run.labels[key]
        if _is_target(key) and key.split(".")[0] in run.labels:  # loss._target_ -> labels["loss"]
            return run.labels[key.split(".")[0]]
        return run.config.get(key, _MISSING)

    buckets: dict[tuple, list[Run]] = {}
    for run in runs:
        buckets.setdefault(tuple(value(run, k) for k in by), []).append(run)
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


def _stat(values: list[Any]) -> Stat:
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


def build_report(path: str | Path, metrics: list[str] | None = None, by: list[str] | None = None) -> Report:
    """Read every run under `path`, group them and compute the statistics. Raises ConfigError for
    a path without runs, an unknown metric or an unknown --by key."""
    root = Path(path)
    if not root.exists():
        raise ConfigError(f"{root} does not exist; give a run directory or a folder of runs (a multirun)")
    if not root.is_dir():
        raise ConfigError(f"{root} is not a directory; give a run directory or a folder of runs (a multirun)")
    runs = find_runs(root)
    if not runs:
        raise ConfigError(f"no runs under {root}: no summary.json found (a run writes it when it ends)")

    readable = [r for r in runs if r.status != "unreadable"]
    known = list(dict.fromkeys([*METRICS, *(m for r in readable for m in r.metrics)]))
    metrics = list(DEFAULT_METRICS) if metrics is None else list(dict.fromkeys(metrics))
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

    report = Report(root, metrics, by, [], runs)
    for members, pairs, label in zip(groups, items, labels):
        group = Group(label, pairs, members)
        completed = [r for r in members if r.outcome == "completed"]
        group.stats = {m: _stat([r.metrics.get(m) for r in completed]) for m in metrics}
        group.n_all_modes = sum(r.n_modes is not None and r.metrics.get("modes_captured") == r.n_modes
                                for r in completed)
        if all(r.n_modes is not None for r in completed):
            group.all_modes_fraction = group.n_all_modes / len(members)
        report.groups.append(group)
        # Within one config a repeated seed is a repeated run (two sweeps into one folder?); with
        # --by, configs that share seeds are pooled on purpose.
        seeds = Counter(r.seed for r in members) if not by else Counter()
        repeated = sorted(str(s) for s, c in seeds.items() if c > 1)
        if repeated:
            report.notes.append(f"{label}: seed {', '.join(repeated)} appears more than once; each run counts")
    unreadable = len(runs) - len(readable)
    if unreadable:
        report.notes.append(f"{unreadable} summary.json could not be read; listed with the runs that did not complete")
    return report


# ---- the figure ----------------------------------------------------------------------------


def modes_figure(report: Report) -> bytes:
    """Modes captured per configuration, one jittered point per completed seed, the group mean as a
    bar and a dashed line at the number of modes. PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.ticker import MaxNLocator

    groups = report.groups
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(groups) + 1.5), 4.5), dpi=100)
    rng = np.random.default_rng(0)  # the same jitter every time the report is made
    all_modes = {r.n_modes for g in groups for r in g.runs if r.n_modes is not None}
    if len(all_modes) == 1:
        ax.axhline(all_modes.pop(), color="tab:red", linestyle="--", linewidth=1, label="n_modes")
    first = {"seed": True, "mean": True, "n_modes": True}

    def once(name: str) -> str | None:
        shown, first[name] = first[name], False
        return {"seed": "one seed", "mean": "mean", "n_modes": "n_modes"}[name] if shown else None

    ticks = []
    for i, g in enumerate(groups):
        ys = [float(r.metrics["modes_captured"]) for r in g.runs if r.outcome == "completed"
              and isinstance(r.metrics.get("modes_captured"), (int, float))
              and math.isfinite(r.metrics["modes_captured"])]
        if ys:
            ax.scatter(i + rng.uniform(-0.15, 0.15, len(ys)), ys, s=28, alpha=0.7, color="tab:blue",
                       linewidths=0, zorder=3, label=once("seed"))
            ax.hlines(sum(ys) / len(ys), i - 0.3, i + 0.3, color="black", linewidth=2, zorder=4,
                      label=once("mean"))
        modes = {r.n_modes for r in g.runs if r.n_modes is not None}
        if len(all_modes) > 1 or len(modes) > 1:  # configurations with different datasets
            for n in sorted(modes):
                ax.hlines(n, i - 0.4, i + 0.4, color="tab:red", linestyle="--", linewidth=1, label=once("n_modes"))
        tick = g.label.replace(" ", "\n")
        missing = [f"{n} {what}" for n, what in ((g.n_diverged, "diverged"), (g.n_failed, "failed")) if n]
        if missing:
            tick += f"\n(+{', '.join(missing)}; not plotted)"
        ticks.append(tick)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(ticks, fontsize=8)
    ax.set_xlim(-0.6, len(groups) - 0.4)
    ax.set_ylim(bottom=-0.5)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("modes captured")
    ax.set_title("Mode coverage per configuration (completed runs, one point per seed)", fontsize=10)
    if groups:
        ax.legend(loc="best", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


# ---- helpers -------------------------------------------------------------------------------


def _num(x: float) -> str:
    return f"{x:.4g}"


def _blank(value: Any) -> Any:
    return "" if value is None else value


def _write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same directory, then rename: never a half-written report."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, like every other ganlab error
        from ganlab.cli import fail

        fail(f"{message} (see `ganlab report --help`)")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="ganlab report",
                description="Compare the runs under PATH: group them by config (seed aside), and print "
                            "mean ± standard error over seeds of each metric, the diverged and failed "
                            "counts and the fraction of seeds that captured all modes. Also writes "
                            "report.md, report.csv and report_modes.png into PATH.")
    p.add_argument("path", metavar="PATH", help="a run directory, a multirun directory, or any folder of runs")
    p.add_argument("--metrics", metavar="A,B", type=_names,
                   help=f"metrics to show (default: {','.join(DEFAULT_METRICS)}; also: "
                        f"{','.join(m for m in METRICS if m not in DEFAULT_METRICS)})")
    p.add_argument("--by", metavar="KEY,KEY", type=_names,
                   help="group by these keys only, pooling runs that differ elsewhere: option names "
                        "(dataset, loss, remedy, ...) or dotted config keys (loss._target_, optim.d.lr)")
    return p


def main(argv: list[str] | None = None) -> None:
    from rich.console import Console
    from rich.measure import Measurement

    from ganlab.cli import fail

    args = parser().parse_args(argv)
    try:
        report = build_report(args.path, metrics=args.metrics, by=args.by)
        written = report.write()
    except GanlabError as exc:
        fail(str(exc), exc.exit_code)
    except OSError as exc:
        fail(f"cannot write the report into {args.path}: {exc.strerror or exc}", 1)
    tables = report.tables()
    console = Console()
    if not console.is_terminal:  # into a file or a pipe: the tables whole, not squeezed into 80 columns
        roomy = console.options.update_width(250)
        console = Console(width=max(console.width, *(Measurement.get(console, roomy, t).maximum for t in tables)))
    for table in tables:
        console.print(table)
    for note in report.notes:
        console.print(f"note: {note}", markup=False, highlight=False)
    console.print(f"wrote {', '.join(p.name for p in written)} into {report.root}", markup=False, highlight=False)
