"""Write docs/results/toy.md from a `scripts/reproduce_toy.sh` output directory.

Every number is read from the runs' summary.json files through ganlab.report (the same grouping,
reference rows, statistics and convergence test as `ganlab report`); the papers' numbers and
training lengths are quoted from their Table 1 and code (docs/methods.md). A claim is made only where
the statistics support it:
- which setups are collapsing baselines is decided by BASELINE_RULE, stated before the measurement;
  remedy rows get verdicts only in a setup that passes it;
- a remedy "beats" the GAN only where the permutation test over seeds, Benjamini-Hochberg-adjusted over
  the table's comparisons, says "better" (q < 0.05), with the bootstrap interval of the difference;
- rows that use more than samples from G (class labels, real anchors) are never compared with the GAN;
- the unrolled rows are compared with their k = 0 control (the same G objective without unrolling);
- a paper's number is "reproduced" only by a row trained at least as long as the paper (steps x batch)
  and within 2 s.e. of the difference; a shorter row says which share of the paper's training it had;
- a row whose metrics were still moving over its last 20 % of evaluations says so.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from ganlab.metrics import REFERENCES
from ganlab.report import Group, Run, build_report, find_runs
from ganlab.report_output import convergence_figure
from ganlab.verdicts import METHOD, adjust, compare, pq_cell, q_text, within

# Paper numbers: modes / HQ % (VEEGAN Table 1, 5 runs); modes / HQ % / reverse KL ± s.e. over 10 trials (PacGAN Table 1).
VEEGAN = {("ring", "GAN"): (1, 99.3), ("ring", "Unrolled GAN"): (7.6, 35.6), ("ring", "VEEGAN"): (8, 52.9),
          ("grid", "GAN"): (3.3, 0.5), ("grid", "Unrolled GAN"): (23.6, 16), ("grid", "VEEGAN"): (24.6, 40)}
PACGAN = {("ring", "GAN"): "6.3±0.5 / 98.2±0.2 / 0.45±0.09", ("ring", "PacGAN2"): "7.9±0.1 / 95.6±2.0 / 0.07±0.03",
          ("ring", "PacGAN3"): "7.8±0.1 / 97.7±0.3 / 0.10±0.02", ("ring", "PacGAN4"): "7.8±0.1 / 95.9±1.4 / 0.07±0.02",
          ("grid", "GAN"): "17.3±0.8 / 94.8±0.7 / 0.70±0.07", ("grid", "PacGAN2"): "23.8±0.7 / 91.3±0.8 / 0.13±0.04",
          ("grid", "PacGAN3"): "24.6±0.4 / 94.2±0.4 / 0.06±0.02", ("grid", "PacGAN4"): "24.8±0.2 / 93.6±0.6 / 0.04±0.01"}
# Training length in samples (steps x batch) in the papers' own code, and where it comes from.
PAPER_LENGTH = {
    "veegan": (25_000 * 512, ("the Unrolled-GAN 2-D notebook's 25,000 steps at batch 512 (VEEGAN's own 2-D length is "
                              "not in our notes; this is the length the VEEGAN rows are held to)")),
    # PacGAN's code trains every pack size on 100 packs per step: its length is counted in packs, not samples
    "pacgan": (400 * 100_000, ("PacGAN's 2-D code: 400 epochs of 100,000 packs, 100 packs per step (400,000 steps) "
                               "for every pack size; lengths below are steps × packs against those 40M packs")),
}
DEFAULT_PARTS = ("baselines_veegan", "baselines_pacgan", "veegan", "veegan_unrolled_k0", "pacgan",
                 "pacgan34")  # what reproduce_toy.sh runs by default
METRICS = ["modes_captured", "high_quality_pct", "reverse_kl", "reverse_kl_hq", "wasserstein1"]
HEADLINE = ["modes_captured", "high_quality_pct", "reverse_kl"]  # the convergence figure
SHORT = {"modes_captured": "modes", "high_quality_pct": "HQ %", "reverse_kl": "KL", "reverse_kl_hq": "KL (HQ)",
         "wasserstein1": "W1"}
# The loss class of each setup's GAN row (experiment/*_setup.yaml: nsgan).
SETUP_LOSS = {"veegan": "NonSaturatingGAN", "pacgan": "NonSaturatingGAN"}
VERDICT_METRICS = ["modes_captured", "high_quality_pct", "reverse_kl", "wasserstein1"]  # each table's family
COLLAPSED = 0.9  # a run is fully collapsed at an evaluation whose reverse KL is at least 90 % of log K
# The rule that decides which setups are collapsing baselines, fixed (committed) before the 10-seed baseline runs
# were started (2026-12-06), and printed in toy.md above the measurement it is applied to. A table of remedies is
# only worth reading against a GAN that collapses without them.
BASELINE_SEEDS_NEEDED = 10
BASELINE_ENDS_BELOW = 8     # of 10 seeds: the GAN ends with fewer modes than the real data's
BASELINE_FULLY_AT_SOME = 5  # of 10 seeds: fully collapsed (COLLAPSED) at some evaluation
BASELINE_RULE = (
    f"A setup's GAN is a **collapsing baseline** when, over {BASELINE_SEEDS_NEEDED} seeds at the table's length, it "
    f"ends with fewer modes than the real data (8 on the ring, 25 on the grid) in at least {BASELINE_ENDS_BELOW} of "
    f"{BASELINE_SEEDS_NEEDED} seeds **and** is fully collapsed (reverse KL ≥ {COLLAPSED:g} log K: nearly every "
    f"sample nearest one mode) at some evaluation in at least {BASELINE_FULLY_AT_SOME} of them. A setup that meets "
    "the first part only is a **mode-dropping baseline**: its tables are shown and labelled so (a remedy there "
    "recovers dropped modes, it does not undo a full collapse). A setup that fails the first part is **not a "
    "baseline**: its remedy rows are listed without verdicts against its GAN.")


def classify(group: Group) -> tuple[str, str, str]:
    """(setup, dataset, method) of a group, from its runs' config."""
    config = group.runs[0].config
    setup = "pacgan" if config.get("model.g.width") == 400 else "veegan"
    dataset = "ring" if "ring" in str(config.get("dataset._target_")) else "grid"
    remedy = group.runs[0].labels.get("remedy", "none")
    loss = group.runs[0].labels.get("loss", "")
    if str(config.get("loss._target_", "")).rsplit(".", 1)[-1] != SETUP_LOSS[setup]:  # another loss (the losses part)
        method = loss if remedy == "none" else f"{remedy} ({loss})"
    elif remedy == "none":
        method = "GAN"
    elif remedy == "unrolled" and config.get("remedy.unrolled.k") == 0:
        method = CONTROL  # the same G objective without unrolling: what unrolling is measured against
    elif remedy == "unrolled":
        method = "Unrolled GAN"
    elif remedy == "veegan" and setup == "veegan":
        method = "VEEGAN"
    elif remedy == "pacgan" and setup == "pacgan":
        method = f"PacGAN{config.get('remedy.pacgan.m')}"
    else:
        method = remedy
    return setup, dataset, method


CONTROL = "Unrolled k = 0 (control)"


def paper_numbers(text: str) -> list[tuple[float, float]]:
    """'6.3±0.5 / 98.2±0.2 / 0.45±0.09' -> [(6.3, 0.5), (98.2, 0.2), (0.45, 0.09)]."""
    return [tuple(float(x) for x in part.split("±")) for part in text.split(" / ")]


def cell(group: Group | None, metric: str) -> str:
    return "–" if group is None else group.stats[metric].text(group.n_completed)


def table_verdicts(groups: dict[str, Group], decided: bool) -> dict[tuple[str, str], object]:
    """One table's comparisons, adjusted together (Benjamini-Hochberg over the table): every row against
    the GAN row on VERDICT_METRICS, and the unrolled row against its k = 0 control. Rows that use more
    than samples from G are not compared. {(method, metric): Verdict}; {} when the setup is not (yet) a baseline."""
    gan = groups.get("GAN")
    if gan is None or not decided:
        return {}
    pairs = [(method, groups[method], gan) for method in sorted(groups) if groups[method] is not gan and not groups[method].uses]
    if "Unrolled GAN" in groups and CONTROL in groups:
        pairs.append((f"Unrolled GAN vs {CONTROL}", groups["Unrolled GAN"], groups[CONTROL]))
    family = [(m, compare(m, g.values(m), base.values(m)), g.stats[m].mean, base.stats[m].mean)
              for _, g, base in pairs for m in VERDICT_METRICS]
    adjusted = iter(adjust(family))
    return {(method, m): next(adjusted) for method, _, _ in pairs for m in VERDICT_METRICS}


def at_ceiling(group: Group) -> bool:
    """Every completed seed captured every mode: a 'better' on modes then restates the GAN's shortfall."""
    return bool(group.completed) and all(r.n_modes and r.metrics.get("modes_captured") == r.n_modes
                                         for r in group.completed)


# A lower KL or W1 is no sign of coverage when most samples lie off every mode: a Gaussian blob over the modes
# scores a low KL too (the reference rows). Said beside such a verdict when the row's HQ % is below this.
SPREAD_HQ = 10.0
SPREAD_METRICS = ("reverse_kl", "wasserstein1")


def spread_note(group: Group) -> str:
    hq = group.stats["high_quality_pct"].mean
    if hq is None or hq >= SPREAD_HQ:
        return ""
    return (f"HQ % {hq:.1f}: most samples lie off every mode, so this is the lower value of samples spread over the "
            "modes (as the Gaussian fit's), not of samples on them")


def samples_seen(group: Group) -> int:
    config = group.runs[0].config
    return int(config["steps"]) * int(config["batch_size"])


def paper_units(group: Group, setup: str) -> int:
    """What the paper's length counts: samples (VEEGAN-row setup), or packs (PacGAN: batch / pack size)."""
    m = int(group.runs[0].config.get("remedy.pacgan.m") or 1) if setup == "pacgan" else 1
    return samples_seen(group) // m


def length_text(group: Group, setup: str) -> str:
    """'25,000 × 256 (50 % of the paper's)', or for PacGAN's setup '25,000 × 100 packs of 2 (6.25 % ...)'."""
    config = group.runs[0].config
    share = paper_units(group, setup) / PAPER_LENGTH[setup][0]
    m = int(config.get("remedy.pacgan.m") or 1)
    what = f"{int(config['batch_size']) // m} packs of {m}" if setup == "pacgan" and m > 1 else f"{int(config['batch_size'])}"
    return f"{int(config['steps']):,} × {what} ({100 * share:.3g} % of the paper's)"


def gflops_text(group: Group) -> str:
    """Matrix-product GFLOP of one training step (n_critic D steps and the G step), counted on the row's
    saved config (ganlab.flops); '–' where the run directory has no saved config."""
    from ganlab.errors import GanlabError
    from ganlab.flops import flops_for_run_dir

    try:
        return f"{flops_for_run_dir(group.runs[0].path).flops / 1e9:.3g}"
    except GanlabError:  # no saved config (a summary written by hand, an old run)
        return "–"


def flags(group: Group) -> str:
    return "; ".join(group.flags) or "–"


def reproduced(group: Group | None, setup: str, metric: str, paper: float, paper_se: float = 0.0) -> str:
    """Whether our row reproduces one paper number: only at the paper's length, within 2 s.e."""
    if group is None or group.stats[metric].mean is None:
        return "not measured"
    share = paper_units(group, setup) / PAPER_LENGTH[setup][0]
    stat = group.stats[metric]
    if share < 1:
        return f"shorter than the paper: {100 * share:.3g} % of its training; not counted ({cell(group, metric)} vs {paper:g})"
    same = within(stat.mean, stat.se, paper, paper_se)
    return f"{'reproduced' if same else 'not reproduced'} ({cell(group, metric)} vs {paper:g})"


def reference_lines(base: Group, columns: list[str], width: int) -> list[str]:
    """The reference rows of a table section, from its baseline group's runs (same model, same data)."""
    lines = []
    for name, what in REFERENCES.items():
        label = f"reference: {what}"
        stats = base.reference_stats.get(name)
        if not stats:
            continue
        n = sum(name in r.references for r in base.completed)
        cells = [stats[m].text(n) if m in stats and stats[m].mean is not None else "–" for m in columns]
        lines.append(f"| {label} | " + " | ".join(cells) + " |" + " |" * (width - len(cells) - 1))
    return lines


def collapsed_at(run: Run, n_modes: int) -> list[int]:
    """The evaluation steps at which a run was fully collapsed (reverse KL >= COLLAPSED log K)."""
    if run.history is None:
        return []
    steps, kls = run.history["steps"], run.history["metrics"].get("reverse_kl", [])
    return [s for s, kl in zip(steps, kls) if kl is not None and kl >= COLLAPSED * math.log(n_modes)]


def collapse_history(run: Run, n_modes: int) -> str:
    """When a run was fully collapsed and what it ended at."""
    steps, kls = run.history["steps"], run.history["metrics"].get("reverse_kl", [])
    collapsed = collapsed_at(run, n_modes)
    if not collapsed:
        return "never fully collapsed"
    last = collapsed[-1]
    after = [s for s, kl in zip(steps, kls) if s > last and kl is not None and kl < 0.5 * math.log(n_modes)]
    span = f"fully collapsed at {len(collapsed)} of {len(steps)} evaluations (first {collapsed[0]:,}, last {last:,})"
    if last == steps[-1]:
        return span + "; still collapsed at the end"
    return span + (f"; below half of log K from {after[0]:,}" if after else "")


def baseline_status(gan: Group) -> tuple[str, str]:
    """BASELINE_RULE applied to a setup's GAN row: ('collapsing' | 'mode-dropping' | 'not a baseline' |
    'undecided', the counts that decided it)."""
    # Every seed counts in the denominator: a diverged or failed GAN run is not a collapse, so it counts against
    # the rule instead of leaving the setup undecided for good.
    runs = [r for r in gan.completed if r.n_modes]
    below = sum(r.metrics.get("modes_captured", r.n_modes) < r.references.get("data", {}).get("modes_captured", r.n_modes)
                for r in runs)
    fully = sum(bool(collapsed_at(r, r.n_modes)) for r in runs)
    others = gan.n_seeds - len(runs)
    counts = (f"ends below the real data's modes in {below} of {gan.n_seeds} seeds, fully collapsed at some evaluation "
              f"in {fully} of {gan.n_seeds}" + (f" ({others} did not complete)" if others else ""))
    if gan.n_seeds < BASELINE_SEEDS_NEEDED:
        return "undecided", f"{counts}: fewer than the rule's {BASELINE_SEEDS_NEEDED} seeds"
    if below < BASELINE_ENDS_BELOW:
        return "not a baseline", counts
    return ("collapsing" if fully >= BASELINE_FULLY_AT_SOME else "mode-dropping"), counts


STATUS_TEXT = {"collapsing": "**a collapsing baseline**", "mode-dropping": "**a mode-dropping baseline** (not a full collapse)",
               "not a baseline": "**not a baseline**: its remedy rows get no verdicts",
               "undecided": "**not decided yet**: its remedy rows get no verdicts until it is"}


def persists(gan: Group) -> str:
    """The GAN row's end against the real data (the same statistics as the tables, a family of its own)."""
    data = [r.references.get("data", {}) for r in gan.completed]
    refs = gan.reference_stats.get("data", {})
    metrics = ("modes_captured", "reverse_kl")
    found = adjust((m, compare(m, gan.values(m), [d.get(m) for d in data]), gan.stats[m].mean,
                    refs[m].mean if m in refs else None) for m in metrics)
    parts = [f"{SHORT[m]} {cell(gan, m)} against the real data's {refs[m].text(len(data)) if m in refs else '–'}: "
             + (f"{v.word} ({q_text(v.q)}; Δ {v.interval_text()})" if v.p is not None else v.text())
             for m, v in zip(metrics, found)]
    return "; ".join(parts) + "."


def machine_time(root: Path, runs: list[Run]) -> list[str]:
    """The runs' own training time (summary.json wall_seconds, all segments of a resumed run) by part,
    and each part's wall-clock segments (.segments, written by reproduce_toy.sh)."""
    lines = []
    parts = sorted({r.path.parent.name for r in runs})
    total = 0.0
    for part in parts:
        members = [r for r in runs if r.path.parent.name == part]
        seconds = sum(_summary_number(r, "wall_seconds") for r in members)
        total += seconds
        segments = []
        marker = root / part / ".segments"
        if marker.is_file():
            for line in marker.read_text().split("\n"):
                if line.strip():
                    wall, _steps, jobs, *status = line.split()
                    segments.append((float(wall), int(jobs), status[0] if status else "0"))
        wall = sum(s[0] for s in segments)
        done = sum(r.status == "completed" for r in members)
        state = "complete" if (root / part / ".complete").exists() else (
            "**incomplete**: `make reproduce-toy` run again continues it (rows with fewer seeds than the others are "
            "not finished)")
        lines.append(f"- `{part}` ({state}): {len(members)} runs ({done} completed), {seconds / 3600:.2f} h of training "
                     f"time (the sum of the runs' own wall_seconds); {len(segments)} recorded segment(s) of the "
                     f"script, {wall / 3600:.2f} h wall-clock with {max((s[1] for s in segments), default=0)} jobs at a "
                     "time (a segment cut short by the end of a session records no wall-clock; its runs' time is in the "
                     "training time).")
    for part in DEFAULT_PARTS:
        if part not in parts:
            lines.append(f"- `{part}`: **not run yet**; its rows are missing below.")
    lines.insert(0, f"- **Machine time: {total / 3600:.2f} h** of training time over all runs (2 CPU cores, "
                    "joblib jobs side by side, 1 torch thread each). The runs record their own time, not what else "
                    "the machine ran, so per-run times are upper bounds of the cost on an idle machine.")
    return lines


def _summary_number(run: Run, key: str) -> float:
    value = json.loads((run.path / "summary.json").read_text()).get(key)
    return float(value) if isinstance(value, (int, float)) else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("path")
    ap.add_argument("--seeds", help="the remedy rows' seeds (the GAN baselines have their own: "
                                    f"{BASELINE_SEEDS_NEEDED})")
    ap.add_argument("--out", default="docs/results/toy.md")
    ap.add_argument("--figures", default="docs/figures", help="where the convergence and mode-history figures go")
    ap.add_argument("--baselines", action="store_true",
                    help="only print each setup's baseline status, 'SETUP DATASET STATUS' a line (reproduce_toy.sh "
                         "trains remedy rows only where the GAN is a baseline)")
    args = ap.parse_args()
    root, out, figures = Path(args.path), Path(args.out), Path(args.figures)

    if args.baselines and not (root.is_dir() and find_runs(root)):
        return  # nothing measured yet: no status line (reproduce_toy.sh says to run the baselines part)
    report = build_report(root, metrics=METRICS)
    rows: dict[tuple[str, str, str], Group] = {}
    for g in report.groups:  # two configurations that classify alike (pacgan m=2 and m=3 in the VEEGAN setup) stay apart
        key = classify(g)
        if key in rows:
            key = (key[0], key[1], f"{key[2]} [{g.label}]")
        rows[key] = g
    status = {(s, d): baseline_status(g) for (s, d, m), g in rows.items() if m == "GAN"}
    if args.baselines:
        for (setup, dataset), (word, counts) in sorted(status.items()):
            print(f"{setup} {dataset} {word.replace(' ', '_')}  # {counts}")
        return
    if not args.seeds:
        ap.error("--seeds is required to write the doc")
    figures.mkdir(parents=True, exist_ok=True)
    n_seeds = len(args.seeds.split(","))
    lines = [
        "# Toy reproduction: VEEGAN and PacGAN Table 1 on the ring and the grid",
        "",
        ("Written by `make reproduce-toy` (`scripts/reproduce_toy.sh`, then `scripts/toy_results.py`) from the runs' "
         f"`summary.json` files; do not edit by hand. Remedy rows: seeds {args.seeds} ({n_seeds} per row); the GAN "
         f"baselines: {BASELINE_SEEDS_NEEDED} seeds (the `baselines` parts)."),
        "",
        *machine_time(root, report.runs),
        ("- **Evaluation** as in the papers: 2,500 fresh samples; modes captured / high-quality % (within 3 std of a "
         "mode) / reverse KL of the nearest-mode histogram of **all** samples (`reverse_kl`; PacGAN's logger uses the "
         "high-quality samples only: `reverse_kl_hq`, shown beside it); W1 is the exact empirical W1 on 1,000 samples."),
        ("- Cells are mean ± standard error over the seeds that completed. **Verdicts** (one table per setup and "
         f"dataset, after its values): {METHOD}. Each table is one family: it says how many comparisons q was "
         "adjusted over. A bare difference of means is never called a result."),
        ("- Rows whose remedy uses more than samples from G (class labels: `acgan`, `cgan_projection`; real anchors at "
         "sampling: `local_generator`) answer another question and sit in their own sections with their own metrics, "
         "never compared with the GAN."),
        ("- **Reference rows**, measured by the same evaluator on the same sample count in every run: the untrained G "
         "(this setup's G before its first step), a Gaussian with the data's mean and covariance, and fresh real "
         "data (the ceiling). A row within 2 s.e. of the Gaussian fit in modes, reverse KL and HQ % is flagged "
         "'indistinguishable from a Gaussian blob'."),
        ("- **Convergence**: each seed's least-squares slope of a metric over every evaluation of its last 20 %; a row "
         "whose slopes differ from 0 (one-sample t-test, α = 0.05) is flagged 'still moving'; the figure below draws "
         "every row."),
        "- **Compute**: GFLOP/step is the matrix-product FLOPs of one training step (n_critic D steps and the G step) "
        "of the row's config, counted by torch's FlopCounterMode (`ganlab.flops`).",
        "",
    ]

    # ---- the rule first, then the baselines it is applied to -------------------------------------------
    lines += ["## Which setups are collapsing baselines", "",
              ("The tables compare remedies with a plain GAN, so the GAN must collapse in the setup without them. The "
               "rule, fixed before the 10-seed baseline runs were started:"), "", f"> {BASELINE_RULE}", "",
              (f"The measurement: every GAN run of every candidate setup, from its evaluation every {_every(report)} "
               f"steps: when it was fully collapsed (reverse KL ≥ {COLLAPSED:g} log K), and where it ended."), "",
              "| setup | dataset | seed | over training | final modes | final HQ % | final KL |", "|---|---|---|---|---|---|---|"]
    for (setup, dataset, method), g in sorted(rows.items()):
        if method != "GAN":
            continue
        for r in sorted(g.runs, key=lambda r: int(r.seed) if str(r.seed).isdigit() else str(r.seed)):
            if r.history is None or r.n_modes is None:
                continue
            m = r.metrics
            lines.append(f"| {setup} | {dataset} | {r.seed} | {collapse_history(r, r.n_modes)} | "
                         f"{m.get('modes_captured', '–')} | {_fmt(m.get('high_quality_pct'))} | {_fmt(m.get('reverse_kl'))} |")
    lines += ["", "The rule applied:", ""]
    for (setup, dataset), (word, counts) in sorted(status.items()):
        gan = rows[(setup, dataset, "GAN")]
        lines.append(f"- {setup} setup, {dataset}: {STATUS_TEXT[word]}: {counts}. At the end: {persists(gan)}")
    history_figures = _mode_history_figures(rows, figures)
    lines += ["", *(f"![{alt}]({Path('../figures') / name})" for alt, name in history_figures), ""]

    # ---- one table per setup and dataset, then its verdicts -------------------------------------------
    columns = METRICS
    header = ("| method | " + " | ".join(SHORT[m] for m in columns)
              + " | GFLOP/step | training (steps × batch) | flags | runs |")
    n_columns = len(columns) + 5  # method, the metrics, GFLOP/step, training, flags, runs
    findings = []
    for setup, title, paper in (("veegan", "VEEGAN Table 1 rows (VEEGAN-row setup)", VEEGAN),
                                ("pacgan", "PacGAN Table 1 rows (PacGAN's setup)", PACGAN)):
        present = {(d, m): g for (s, d, m), g in rows.items() if s == setup}
        if not present:
            continue
        lines += [f"## {title}", "", f"Paper length: {PAPER_LENGTH[setup][1]}.", ""]
        for dataset in ("ring", "grid"):
            groups = {m: g for (d, m), g in present.items() if d == dataset and not g.uses}
            if not groups:
                continue
            word = status.get((setup, dataset), ("undecided", "no GAN row"))[0]
            lines += [f"### {dataset}", "", f"The GAN here: {STATUS_TEXT[word]}.", "", header, "|" + "---|" * n_columns]
            order = sorted(groups, key=lambda m: (m != "GAN", m))
            for method in order:
                g = groups[method]
                lines.append(f"| {method} | " + " | ".join(cell(g, m) for m in columns)
                             + f" | {gflops_text(g)} | {length_text(g, setup)} | {flags(g)} | {_outcome(g)} |")
            if "GAN" in groups:
                lines += reference_lines(groups["GAN"], columns, n_columns)
                untrained = groups["GAN"].reference_stats.get("untrained", {})
                hq, modes = untrained.get("high_quality_pct"), untrained.get("modes_captured")
                if hq is not None and hq.mean is not None and hq.mean > 50 and modes.mean is not None and modes.mean <= 1:
                    lines += ["", (f"The untrained G scores {hq.mean:.0f} % high-quality samples on {modes.mean:g} mode: "
                                   "an untrained MLP maps every z close to the origin, which is the grid's centre mode. "
                                   "HQ % alone rewards that collapse; read it with the modes and the KL.")]
            lines += ["", "Published, same rows: " + "; ".join(
                f"{m} {_paper_text(paper[(dataset, m)])}" for m in order if (dataset, m) in paper) + ".", ""]
            lines += verdict_lines(setup, dataset, groups, word, findings)

    # ---- reproduced? -----------------------------------------------------------------------------------
    lines += ["## Is a paper's number reproduced?", "",
              ("A number counts as reproduced only when the row was trained at least as long as the paper (samples seen, "
               "or packs for PacGAN's setup) and ours is within two standard errors of the difference (ours over seeds "
               "and, where published, the paper's). Rows shorter than the paper are never counted."), ""]
    for (setup, dataset, method), g in sorted(rows.items()):
        table = VEEGAN if setup == "veegan" else PACGAN
        if (dataset, method) not in table:
            continue
        if setup == "veegan":
            numbers = list(zip(("modes_captured", "high_quality_pct"), ((v, 0.0) for v in table[(dataset, method)])))
        else:
            numbers = list(zip(("modes_captured", "high_quality_pct", "reverse_kl"), paper_numbers(table[(dataset, method)])))
        parts = [f"{SHORT[m]}: {reproduced(g, setup, m, v, se)}" for m, (v, se) in numbers]
        lines.append(f"- {setup} {method}, {dataset}: " + "; ".join(parts) + ".")

    # ---- what the verdicts found -----------------------------------------------------------------------
    lines += ["", "## Which remedy beats the GAN here", "",
              ("Only the comparisons whose q < 0.05 in their table, in a setup whose GAN is a baseline; everything else "
               "in the tables above is 'not significant', which does not show equality: the intervals say how large a difference the seeds still allow."), ""]
    lines += findings or ["- none."]

    # ---- rows that use more than samples from G: what they mean, and their own metrics ------------------
    lines += explained_rows(root, "Conditional rows (class labels)", ["class_fidelity_pct", "modes_captured",
                                                                      "high_quality_pct", "wasserstein1"], (
        "`cgan_projection` and `acgan` are told the mode: on these mixtures the class is the mode index. "
        "Their evaluation samples draw the classes uniformly from the evaluation's own RNG, so where G follows "
        "its labels the all-sample reverse KL is that of the drawn labels (the same in every conditional row "
        "of a seed), not a property of G, and their modes are not comparable with an unconditional G's. What G "
        "contributes is how many samples land, high quality, on their class's mode (`class_fidelity_pct`). No "
        "verdict against the GAN:"),
        lambda g: (f"class fidelity {cell(g, 'class_fidelity_pct')} %, HQ {cell(g, 'high_quality_pct')} %, "
                   f"W1 {cell(g, 'wasserstein1')}"))
    lines += explained_rows(root, "Local-generator rows (real anchors)", ["local_origin_error", "local_tangent_sigma_min",
                                                                          "high_quality_pct", "wasserstein1"], (
        "`local_generator` makes G(x, z) around real anchors x drawn from the data at evaluation, and its locality "
        "term keeps G(x, 0) near x: as long as it does, modes and reverse KL mostly reflect the anchors (the "
        "data), not G. G's own part is HQ % (how far the samples stray from the anchors' modes) and the local "
        "metrics: ‖G(x, 0) − x‖ (`local_origin_error`, the distance to the anchors) and the smallest singular value "
        "of the local tangents dG(x, z)/dz (`local_tangent_sigma_min`; scripts/reproduce_toy.sh sets the tangent "
        "scale c to each mixture's mode variance). No verdict against the GAN:"),
        lambda g: f"origin error {cell(g, 'local_origin_error')}, "
                  f"tangent sigma_min {cell(g, 'local_tangent_sigma_min')}, HQ {cell(g, 'high_quality_pct')} %")
    if any(method == "loss_sensitive" for _, _, method in rows):
        lines += explained_rows(root, "Loss-Sensitive rows", ["jacobian_sigma_min", "reverse_kl"], (
            "`loss=loss_sensitive` runs with the author's code defaults (`margin_scale` 2e-4 times the L1 distance, "
            "set for 64x64x3 images in [-1, 1]). On 2-D samples that margin is about 1e-3, so D's hinge is nearly "
            "(L(x) - L(G(z)))_+ and G moves its samples down L wherever L is lowest. A run collapsed to a point has "
            "G's Jacobian sigma_min 0 (G ignores z) and reverse KL log K (every sample nearest one mode; whether that "
            "mode counts as captured depends on how near it lies). The same setup's GAN rows, for comparison:"),
            lambda g: (f"Jacobian sigma_min {cell(g, 'jacobian_sigma_min')}, reverse KL {cell(g, 'reverse_kl')}; "
                       f"runs collapsed to a point (sigma_min < 1e-3): {point_collapsed(g)} of {g.n_completed}"),
            select=lambda key: key[0] == "veegan" and key[2] in ("loss_sensitive", "GAN"))

    # ---- convergence figure --------------------------------------------------------------------------
    headline = build_report(root, metrics=HEADLINE)
    figure = convergence_figure(headline)
    if figure is not None:
        (figures / "toy_convergence.png").write_bytes(figure)
        lines += ["", "## Convergence", "",
                  ("Every row's modes, HQ % and reverse KL against the step: mean ± s.e. over seeds; horizontal lines are "
                   "the reference rows (orange: Gaussian fit, green: real data, grey: untrained G); the shaded span is "
                   "the last 20 % of evaluations that the 'still moving' test looks at (red where it moved)."), "",
                  "![convergence](../figures/toy_convergence.png)"]

    lines += ["", "## Setups", "",
              ("- **VEEGAN-row setup** (`ganlab/configs/experiment/veegan_setup.yaml`): G and D 3x128 ReLU, latent 2, Adam G 1e-3 / "
               "D 1e-4, beta1 0.5, batch 256. The Unrolled-GAN notebook's networks (2x128 tanh, latent 256) do not make a "
               "plain GAN collapse (measured: docs/default-run.md), so these rows use a setup in which it does, early on; the baseline "
               "section shows how long that lasts. VEEGAN's own 2-D networks are not in our notes; `remedy=veegan` uses "
               "`model.encoder` (3x128 ReLU) as its reconstructor."),
              ("- **PacGAN's setup** (`ganlab/configs/experiment/pacgan_setup.yaml`): G 4x400 ReLU + batch norm, D 3x200 maxout "
               "(5 pieces), latent 2, Adam 1e-4, beta1 0.8, 100 packs per minibatch (batch = 100 m samples)."),
              "- Our ring has radius 2 and std 0.02, our grid spacing 2 and std 0.05: PacGAN's geometry up to scale.",
              ("- Unrolled GAN: k = 5 unrolling steps with gradients through them (`remedy=unrolled`), "
               + unrolled_objective(rows) + f" Its control, '{CONTROL}', trains G on the same objective with no "
               "unrolling (`remedy.unrolled.k=0`: the minimax, saturating G step), so that a difference between the "
               "two is unrolling's, not the objective's; every other row's G is non-saturating."),
              ""]
    out.write_text("\n".join(lines) + "\n")


def verdict_lines(setup: str, dataset: str, groups: dict[str, Group], word: str, findings: list[str]) -> list[str]:
    """A table's verdicts: each comparison's difference with its bootstrap interval, p and BH q over the table.
    Appends the significant ones to `findings`."""
    if word not in ("collapsing", "mode-dropping"):
        return [f"No verdicts: the GAN here is {STATUS_TEXT[word].replace('**', '')}.", ""]
    found = table_verdicts(groups, decided=True)
    if not found:
        return []
    lines = [f"Verdicts ({setup} setup, {dataset}; Benjamini-Hochberg over this table's "
             f"{max(v.family for v in found.values())} comparisons):", "",
             "| comparison | metric | Δ [95 % CI] | p | q | verdict | note |", "|---|---|---|---|---|---|---|"]
    for (method, metric), v in found.items():
        name = method if " vs " in method else f"{method} vs GAN"
        note = ("every seed at the ceiling (all modes): this restates the other row's shortfall"
                if metric == "modes_captured" and at_ceiling(groups[method.split(" vs ")[0]])
                else spread_note(groups[method.split(" vs ")[0]]) if metric in SPREAD_METRICS and v.word == "better"
                else "")
        pq = [pq_cell(v.p), pq_cell(v.q)]
        lines.append(f"| {name} | {SHORT[metric]} | {v.interval_text() or '–'} | {pq[0]} | {pq[1]} | "
                     f"{v.word if v.p is not None else v.text()} | {note} |")
        if v.word in ("better", "worse"):
            findings.append(f"- {setup} setup, {dataset}, {name}: {SHORT[metric]} {v.word} ({q_text(v.q)}; "
                            f"Δ {v.interval_text()})" + (f"; {note}" if note else "") + ".")
    ceiling = [m for m in groups if groups[m] is not groups.get("GAN") and not groups[m].uses and at_ceiling(groups[m])]
    if len(ceiling) > 1:
        lines += ["", (f"{', '.join(ceiling)}: every seed captured every mode, so their modes verdicts are one fact "
                       "repeated (the GAN's modes against the ceiling), not separate findings.")]
    return lines + [""]


def explained_rows(root: Path, title: str, metrics: list[str], text: str, describe, select=None) -> list[str]:
    """A section for the rows whose runs logged `metrics[0]` (a method whose modes and KL mean something
    else, with metrics of its own), or those whose (setup, dataset, method) `select` accepts: `text`, then
    one line per row, `describe(group)`. Empty without such rows."""
    present = {m for r in find_runs(root) for m in (r.metrics or {})}
    if select is None and metrics[0] not in present:  # no such rows: no section (and no unknown metric to ask for)
        return []
    groups = [(classify(g), g) for g in build_report(root, metrics=[m for m in metrics if m in present]).groups
              if (select(classify(g)) if select else any(metrics[0] in (r.metrics or {}) for r in g.runs))]
    if not groups:
        return []
    lines = ["", f"## {title}", "", text, ""]
    for (setup, dataset, method), g in sorted(groups, key=lambda item: item[0]):
        lines.append(f"- {setup} setup, {dataset}, {method}: {describe(g)} ({g.n_completed} runs).")
    return lines


def point_collapsed(group: Group) -> int:
    """Completed runs whose final G maps every z to (nearly) one point: the Jacobian's smallest singular value
    below 1e-3 (the ring's mode std is 0.02)."""
    return sum(1 for r in group.completed if (r.metrics or {}).get("jacobian_sigma_min", 1.0) < 1e-3)


def unrolled_objective(rows: dict) -> str:
    """Which G objective the Unrolled rows trained with: runs from before `remedy.unrolled.g_objective`
    existed took the loss's G loss on the fakes only, not the paper's value (ganlab/remedies/unrolled.py)."""
    objectives = {run.config.get("remedy.unrolled.g_objective", "loss (before the option existed)")
                  for (_, _, method), g in rows.items() if method == "Unrolled GAN" for run in g.runs}
    if objectives == {"value"}:
        return "G minimising the game's value at the unrolled D, as Metz et al. define it."
    return (f"G objective: {', '.join(sorted(objectives))}. `loss` is the loss's G loss on the fakes only, not the "
            "paper's value at the unrolled D (its real-data term left out); ganlab's default is now `value`, and "
            "these rows are still to be re-run with it.")


def _every(report) -> str:
    values = {r.config.get("eval.every") for r in report.runs}
    return ", ".join(f"{v:,}" for v in sorted(v for v in values if isinstance(v, int))) or "?"


def _fmt(value) -> str:
    if value is None:
        return "–"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _outcome(group: Group) -> str:
    extra = [f"{n} {what}" for n, what in ((group.n_diverged, "diverged"), (group.n_failed, "failed")) if n]
    return f"{group.n_seeds}" + (f" ({', '.join(extra)})" if extra else "")


def _paper_text(value) -> str:
    return value if isinstance(value, str) else "{} / {}".format(*value)


def _mode_history_figures(rows: dict, figures: Path) -> list[tuple[str, str]]:
    """The mode histogram over training of the first two VEEGAN-setup GAN seeds on each dataset: the transient."""
    import json

    from ganlab.pictures import mode_history_picture

    made = []
    for (setup, dataset, method), g in sorted(rows.items()):
        if method != "GAN" or setup != "veegan":
            continue
        for r in sorted(g.completed, key=lambda r: str(r.seed))[:2]:
            history = json.loads((r.path / "summary.json").read_text()).get("mode_history")
            if not history:
                continue
            name = f"toy_{setup}_{dataset}_gan_s{r.seed}_mode_history.png"
            (figures / name).write_bytes(mode_history_picture(
                history["steps"], history["counts"], f"{setup} setup, {dataset}, GAN seed {r.seed}: mode histogram"))
            made.append((f"mode histogram, {dataset}, GAN seed {r.seed}", name))
    return made


if __name__ == "__main__":
    from ganlab.errors import GanlabError

    try:
        main()
    except GanlabError as exc:  # a path without runs, an unreadable summary: one line, not a traceback
        raise SystemExit(f"toy_results: {exc}") from None
