"""The report's figures (PNG bytes: mode coverage per configuration, and every row's metrics against the
training step; convergence is shown, not assumed) and its files (report.md, report.csv, the figures).

The report itself (reading the runs, grouping, statistics, tables) is ganlab/report.py; the command that
prints its tables, `ganlab report PATH`, is ganlab/cli.py's `report`."""

from __future__ import annotations

import io
import math
import textwrap
from collections import Counter
from pathlib import Path

from ganlab.atomic import write_atomic
from ganlab.report import (
    CONVERGENCE_FILE,
    REPORT_FILES,
    Report,
)


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _fit_title(fig, title: str, fontsize: float):
    """The figure's title (a suptitle, centred on the figure), wrapped onto as many lines as it takes
    to lie within the figure's width: matplotlib never wraps, and draws a long title past the edges,
    cut off. The constrained layout then makes room for its lines."""
    paragraphs = title.split("\n")
    artist = fig.suptitle(title, fontsize=fontsize)
    renderer = fig.canvas.get_renderer()
    width = max(map(len, paragraphs))
    while True:
        artist.set_text("\n".join(textwrap.fill(p, width) for p in paragraphs))
        if artist.get_window_extent(renderer).width <= 0.95 * fig.bbox.width or width <= 20:
            return artist
        width = int(width * 0.9)


def spread(ys: list[float], half_width: float = 0.15, max_step: float = 0.1) -> list[float]:
    """Horizontal offsets for one group's points: seeds with the same value (equal mode counts are
    common) are set side by side, evenly, in the order given; a value of its own stays centred.
    Deterministic: the same report draws the same figure."""
    counts, seen = Counter(ys), Counter()
    offsets = []
    for y in ys:
        k = counts[y]
        step = min(2 * half_width / (k - 1), max_step) if k > 1 else 0.0
        offsets.append((seen[y] - (k - 1) / 2) * step)
        seen[y] += 1
    return offsets


def modes_figure(report: Report) -> bytes:
    """Modes captured per configuration, one point per completed seed (seeds at the same value side
    by side), the group mean as a bar and a dashed line at the number of modes. PNG bytes."""
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    groups = report.groups
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(groups) + 1.5), 4.5), dpi=100, layout="constrained")
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
            ax.scatter([i + dx for dx in spread(ys)], ys, s=28, alpha=0.7, color="tab:blue",
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
    _fit_title(fig, "Mode coverage per configuration (completed runs, one point per seed)", fontsize=10)
    if groups:
        ax.legend(loc="best", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


REFERENCE_STYLES = {"gaussian": ("Gaussian fit", "tab:orange", "--"), "data": ("real data", "tab:green", ":"),
                    "untrained": ("untrained G", "tab:gray", "-.")}
MAX_ROWS = 40  # beyond this many rows the figure is unreadable; the first ones are drawn and the rest named


def convergence_figure(report: Report) -> bytes | None:
    """One row of panels per table row, one panel per metric shown: the mean over the completed
    seeds against the step with a ± s.e. band, the reference rows' means as horizontal lines, and
    the window the "still moving" test looks at shaded. None when no run logged its evaluations."""
    import numpy as np

    rows = [g for g in report.groups if any(g.curves(m)[0] for m in report.metrics)]
    metrics = [m for m in report.metrics if any(g.curves(m)[0] for g in rows)]
    if not rows:
        return None
    plt = _pyplot()
    shown = rows[:MAX_ROWS]
    fig, axes = plt.subplots(len(shown), len(metrics), figsize=(3.4 * len(metrics), 2.3 * len(shown) + 0.6),
                             dpi=90, squeeze=False, layout="constrained")
    for i, g in enumerate(shown):
        for j, m in enumerate(metrics):
            ax = axes[i][j]
            steps, values = g.curves(m)
            if steps:
                data = np.array(values, dtype=float)
                finite = np.isfinite(data)
                n = finite.sum(axis=0)  # seeds with a value at each step (reverse_kl_hq can be undefined)
                mean = np.where(finite, data, 0).sum(axis=0) / np.maximum(n, 1)
                mean[n == 0] = np.nan
                dev = np.where(finite, data - mean, 0)
                se = np.sqrt((dev**2).sum(axis=0) / np.maximum(n - 1, 1) / np.maximum(n, 1))
                ax.plot(steps, mean, color="tab:blue", linewidth=1.2, label=f"mean of {len(values)} seeds")
                ax.fill_between(steps, mean - se, mean + se, color="tab:blue", alpha=0.25, linewidth=0, label="± s.e.")
                movement = g.movement.get(m)
                if movement is not None and movement.since_step is not None:
                    ax.axvspan(movement.since_step, steps[-1], color="tab:red" if movement.moving else "0.85",
                               alpha=0.12 if movement.moving else 0.5, linewidth=0)
            for name, (label, color, style) in REFERENCE_STYLES.items():
                stat = g.reference_stats.get(name, {}).get(m)
                if stat is not None and stat.mean is not None and math.isfinite(stat.mean):
                    ax.axhline(stat.mean, color=color, linestyle=style, linewidth=1, label=label)
            moving = g.movement.get(m) is not None and g.movement[m].moving
            ax.set_title(m + ("  (still moving)" if moving else ""), fontsize=8, color="tab:red" if moving else "black")
            ax.tick_params(labelsize=7)
            if j == 0:
                ax.set_ylabel(g.label.replace(" ", "\n"), fontsize=7)
            if i == len(shown) - 1:
                ax.set_xlabel("step", fontsize=7)
            if i == 0 and j == len(metrics) - 1:
                ax.legend(fontsize=6, loc="best")
    title = "Convergence: each row's metrics against the step (mean ± s.e. over seeds; lines: reference rows)"
    if len(rows) > len(shown):
        title += f"\n{len(rows) - len(shown)} more rows not drawn: report a subset of the runs to see them"
    _fit_title(fig, title, fontsize=9)
    return _png(fig)


def _write_atomic(path: Path, data: bytes) -> None:
    """Never a half-written report: ganlab.atomic's temporary file and rename, one line on failure."""
    write_atomic(path, lambda f: f.write(data), "report file")


def write_report(report: Report, directory: str | Path | None = None) -> list[Path]:
    """Write report.md, report.csv, report_modes.png and, when the runs logged their evaluations,
    report_convergence.png (atomically) into `directory` (default: the report's root); return
    their paths."""
    directory = Path(directory) if directory is not None else report.root
    md, csv_path, png = (directory / name for name in REPORT_FILES)
    convergence = directory / CONVERGENCE_FILE
    _write_atomic(md, report.markdown().encode())
    _write_atomic(csv_path, report.csv().encode())
    _write_atomic(png, modes_figure(report))
    written = [md, csv_path, png]
    figure = convergence_figure(report)
    if figure is not None:
        _write_atomic(convergence, figure)
        written.append(convergence)
    return written
