"""Write docs/results/stacked.md from a `scripts/reproduce_stacked.sh` output directory: modes and
KL(p_gen || uniform) over the 1,000 stacked modes as mean ± s.e. over seeds for each remedy, the
feature metrics beside them, the reference rows (the untrained G, real data through the same
classifier), verdicts against the DCGAN baseline and of each method against its control (the same
statistics as `ganlab report`: permutation test, bootstrap interval, Benjamini-Hochberg over the
table), the compute of each row, the training length against the paper's, and the wall time. Rows
that use class labels (acgan, cgan_projection) are never compared with the unconditional rows. Every number is read from the runs' summary.json files (via
ganlab.report); the papers' Stacked MNIST numbers are quoted (docs/methods.md, References) for scale only: they are
on Stacked MNIST with other networks and far longer training."""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from ganlab.report import Group, build_report, mean_se
import math

from ganlab.verdicts import ALPHA, METHOD, adjust, compare, pq_cell

# modes_corrected / reverse_kl_corrected: the confusion-deconvolved estimates (ganlab/metrics/confusion.py).
BOUNDS = "modes_corrected_bounds"  # one cell: modes_corrected_low - modes_corrected_high
METRICS = ["modes_captured", "modes_above_share", "reverse_kl", "modes_corrected", BOUNDS,
           "reverse_kl_corrected", "domain_fid", "kid", "precision", "recall", "coverage", "swd"]
# The verdicts' family: the headline coverage metrics (fewer tests, more power); the rest are shown without tests.
VERDICT_METRICS = ["modes_captured", "modes_corrected", "reverse_kl_corrected", "domain_fid", "coverage"]
SHORT = {"modes_captured": "modes", "modes_corrected": "modes, corrected", "reverse_kl_corrected": "KL, corrected",
         "domain_fid": "domain FID", "coverage": "coverage"}
# PacGAN's Stacked MNIST code for the VEEGAN-setup table (its Table 3): 50 epochs of 128,000 images at batch 64.
PAPER_IMAGES = 50 * 128_000
PAPER_LENGTH = "PacGAN's Stacked MNIST code for its Table 3 (VEEGAN's setup): 50 epochs of 128,000 triples at batch 64"
PAPERS = [("VEEGAN (Srivastava et al. 2017), Table 2", "DCGAN 99 / 3.4; Unrolled GAN 48.7 / 4.32; VEEGAN 150 / 2.95"),
          ("PacGAN (Lin et al. 2018), Table 3", "DCGAN 78.9 / 4.50; PacDCGAN2 1000 / 0.06")]


def summaries(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(root.rglob("summary.json"))]


def reference_modes(config: dict) -> dict:
    """The real data's modes and KL under the runs' protocol (for runs whose summary predates the
    `reference_modes` record): the evaluator's own reference sample, classified."""
    import torch
    from omegaconf import OmegaConf

    from ganlab.evaluation.image import ImageEvaluator
    from ganlab.gan import build

    cfg = OmegaConf.create(config)
    exp = build(cfg, torch.device("cpu"))
    evaluator = ImageEvaluator(exp.data, exp.latent_dim, cfg.eval, exp.loss.wasserstein_critic, torch.device("cpu"), cfg.metrics)
    return evaluator.reference_sample(cfg.eval.samples)["modes"]


ORDER = ["none", "pacgan", "unrolled", "multiscale", "acgan", "cgan_projection"]


def row_name(group: Group, base_width: int | None) -> str:
    """'multiscale', 'multiscale (3 Ds of width 5)', 'none (D width 14)', 'unrolled k = 0 (control)'."""
    config = group.runs[0].config
    remedy = group.runs[0].labels.get("remedy", "?")
    width = config.get("model.d.width")
    if remedy == "unrolled" and config.get("remedy.unrolled.k") == 0:
        return "unrolled k = 0 (control)"
    if base_width is not None and width != base_width:
        return f"multiscale (3 Ds of width {width})" if remedy == "multiscale" else f"{remedy} (D width {width})"
    return remedy


def comparisons(rows: dict[str, Group], base_width: int | None) -> list[tuple[str, str, str]]:
    """(row, against, why), each pair once: each remedy against the DCGAN row, and each method against its
    control: unrolling against the same G objective without it (k = 0); three Ds against one D of the same total
    parameters, either way (one wider D; three narrower Ds). Rows with class labels are not compared."""
    controls = {"unrolled k = 0 (control)", *(n for n in rows if n.startswith(("none (D width", "multiscale (3 Ds")))}
    pairs = [(name, "none", "against the DCGAN baseline") for name in rows
             if name != "none" and name not in controls and not rows[name].uses]
    pairs.append(("unrolled", "unrolled k = 0 (control)", "unrolling, the G objective held fixed"))
    for name in sorted(controls):
        if name.startswith("none (D width"):
            pairs.append(("multiscale", name, "three scales against one D of about the same parameters"))
        if name.startswith("multiscale (3 Ds"):
            pairs.append((name, "none", "three scales at about the one D's parameters"))
    return [p for p in pairs if p[0] in rows and p[1] in rows]


def modes_per_class(run_dir: Path) -> list[int] | None:
    """The modes captured in each of the 10 first-digit classes (a mode id is 100*first + 10*second +
    third): 100 modes each. None without the run's 1,000 mode counts."""
    counts = json.loads((run_dir / "summary.json").read_text()).get("mode_counts")
    if not counts or len(counts) != 1000:
        return None
    return [sum(1 for c in counts[100 * k:100 * (k + 1)] if c > 0) for k in range(10)]


def within_class_section(groups: list, base_width: int | None) -> list[str]:
    """For the conditional rows (dataset.classes=first): the modes captured per first-digit class, against
    every other row grouped the same way. Following its labels spreads a conditional G over the 10
    classes; collapse inside a class shows as few of that class's 100 modes."""
    if not any(g.runs[0].config.get("dataset.classes") == "first" for g in groups):
        return []
    lines = ["", "## Within-class collapse: modes per first-digit class", "",
             ("`acgan` and `cgan_projection` ran with `dataset.classes=first`: each triple's class is its first digit, "
              "10 classes of 100 modes each (a class label of all 1,000 modes, the default, would leave no room to "
              "collapse within a class). Per run, the modes captured among each class's 100 (the generated samples' "
              "classified triples, grouped by their first digit), then the fewest, the median and the most over the "
              "10 classes: mean ± s.e. over seeds. The unconditional rows are grouped the same way beside them, as values "
              "only: a labelled row is not compared with an unlabelled one, so no claim that either collapses less "
              "within a class is made here."),
             "", "| row | classes | seeds | fewest modes in a class (of 100) | median | most |", "|---|---|---|---|---|---|"]
    for group in sorted(groups, key=_order):
        per_run = [m for m in (modes_per_class(r.path) for r in group.completed) if m is not None]
        if not per_run:
            continue
        cells = [mean_se([float(pick(m)) for m in per_run]).text(len(per_run)) for pick in (min, statistics.median, max)]
        remedy = group.runs[0].labels.get("remedy", "?")
        classes = "first digit" if group.runs[0].config.get("dataset.classes") == "first" else "mode"
        label = classes if remedy in ("acgan", "cgan_projection") else "– (unconditional)"
        lines.append(f"| {row_name(group, base_width)} | {label} | {len(per_run)} | " + " | ".join(cells) + " |")
    return lines


def merged_references(references: list) -> list[tuple[str, int, list[str]]]:
    """(label, runs, cells) per reference row, rows of one kind with the same cells as one: the untrained G is
    the same network under every D width, and the real images score the same whichever class labels the
    dataset gives; one row then names every configuration whose runs measured the same (its s.e. over the first
    one's runs, since the others repeat those values), so no row is a repeat."""
    merged: dict[tuple, list] = {}
    for ref in references:
        kind, _, where = ref.label.partition(" (")
        key = (kind, tuple(_cells(ref.stats, ref.n)))
        entry = merged.setdefault(key, [kind, [], ref.n])  # the runs of one row: s.e. over its seeds
        entry[1].append(where.rstrip(")"))
    return [(kind + (f" ({wheres[0]}" + "".join(f"; the same in the runs of {w}" for w in wheres[1:]) + ")"
                     if any(wheres) else ""), n, list(cells))
            for (_, cells), (kind, wheres, n) in merged.items()]


def _cells(stats: dict, n: int) -> list[str]:
    """The table's cells of METRICS; the corrected count's bounds as one cell, "low - high" (means over the runs),
    the interval that held the truth on the validation's sets where the count itself was off."""
    def cell(m: str) -> str:
        if m != BOUNDS:
            return stats[m].text(n)
        low, high = (stats[k].mean if k in stats else None for k in ("modes_corrected_low", "modes_corrected_high"))
        return "–" if low is None or high is None else f"{low:.0f} - {high:.0f}"
    return [cell(m) for m in METRICS]


def _result_row(name: str, group: Group) -> str:
    speed = [json.loads((r.path / "summary.json").read_text())["steps_per_second"] for r in group.runs
             if r.status == "completed"]
    cells = _cells(group.stats, group.n_completed)
    seeds = f"{group.n_seeds}" + (f" ({group.n_completed} completed)" if group.n_completed != group.n_seeds else "")
    rate = f"{statistics.median(speed):.1f}" if speed else "–"
    return f"| {name} | {seeds} | " + " | ".join(cells) + f" | {_compute(group)} | {rate} |"


def _compute(group: Group) -> str:
    """'GFLOP/step | D params' of a row's config (ganlab.flops), or dashes where its config is not saved."""
    from ganlab.errors import GanlabError
    from ganlab.flops import flops_for_run_dir

    try:
        cost = flops_for_run_dir(group.runs[0].path)
    except GanlabError:
        return "– | –"
    return f"{cost.flops / 1e9:.3g} | {cost.d_params:,}"


def _order(group) -> int:
    remedy = group.runs[0].labels.get("remedy")
    return ORDER.index(remedy) if remedy in ORDER else len(ORDER)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out", type=Path, help="the reproduce_stacked.sh output directory")
    ap.add_argument("--out", dest="doc", type=Path, default=Path("docs/results/stacked.md"))
    ap.add_argument("--validation", type=Path, default=Path("docs/results/stacked_validation.md"),
                    help="the counts' validation table (`make validate-stacked`), put in the doc when it exists")
    ap.add_argument("--pending", default=None,
                    help="rows the reproduction has not finished (a doc made from part of it says which, at its top)")
    args = ap.parse_args()
    report = build_report(args.out, metrics=[m for m in METRICS if m != BOUNDS] + ["modes_corrected_low", "modes_corrected_high"])
    runs = summaries(args.out)
    first = runs[0]
    config = first["config"]
    # .complete: one line "wall-seconds steps jobs [remedies]" per sweep (a later one adds remedies)
    segments = [line.split() for line in (args.out / ".complete").read_text().splitlines() if line.strip()] \
        if (args.out / ".complete").exists() else []
    wall_text = "; ".join(f"{' '.join(seg[3:]) or 'sweep'} {float(seg[0]) / 60:.{0 if float(seg[0]) >= 600 else 1}f} min"
                          for seg in segments)
    jobs = "/".join(sorted({seg[2] for seg in segments})) if segments else "?"
    run_hours = sum(float(r.get("wall_seconds") or 0) for r in runs) / 3600
    lines = [
        "# Stacked Fashion-MNIST: a DCGAN baseline against the image remedies",
        "",
        *([f"> **Part of the reproduction.** Not in these tables yet: {args.pending}. Their verdicts, and Benjamini-"
           "Hochberg over the full table, come when `make reproduce-stacked` has finished them.", ""]
          if args.pending else []),
        (f"Generated by `scripts/reproduce_stacked.sh` (`make reproduce-stacked`) from {len(runs)} runs in "
        f"`{args.out}`; every number below is read from their `summary.json`."),
        "",
        "## Setup",
        "",
        (f"- Data: `{config['dataset']['_target_'].rsplit('.', 1)[-1]}`, {config['dataset']['n']:,} fixed triples "
        "of Fashion-MNIST training images as the RGB channels (Debian's `dataset-fashion-mnist`), 1,000 modes."),
        (f"- `experiment=stacked_setup`: DCGAN, G width {config['model']['g']['width']} (channels "
        f"{2 * config['model']['g']['width']}/{config['model']['g']['width']}), D width {config['model']['d']['width']} "
        f"(half of G's channels, the Unrolled GAN paper's small-D setting), D normalization "
        f"`{config['model']['d'].get('norm', 'none')}`; NS-GAN; Adam "
        f"{config['optim']['g']['lr']:g}, betas {tuple(config['optim']['g']['betas'])}; batch {config['batch_size']}. "
        "As PacGAN's code for VEEGAN's Stacked-MNIST setup (stacked_MNIST_experiments/VEEGAN_experiment: DCGAN with "
        "batch norm in every D layer but the input, Adam 2e-4, beta1 0.5, batch 64, 26,000 evaluation samples); the "
        "half-size D follows its reproduction of the Unrolled GAN experiment (D=0.5G). What differs: the widths "
        f"(theirs gf_dim = df_dim = 64; ours G {config['model']['g']['width']}, D {config['model']['d']['width']}), "
        "4x4 kernels and two strided convolutions (theirs 5x5, four D convolutions), z ~ N(0, 1) (theirs U(-1, 1)), "
        "one G step per D step (theirs two), the data (Fashion-MNIST, offline here), the length (below) and the "
        "classifier (ours, named below); docs/methods.md lists every source."),
        (f"- Training length: **{config['steps']:,} steps** per run ({config['steps'] * config['batch_size']:,} real images seen, "
        f"{config['steps'] * config['batch_size'] / 128_000:.1f} passes over the 128k triples): "
        f"**{100 * config['steps'] * config['batch_size'] / PAPER_IMAGES:.2g} % of the paper's training** ({PAPER_LENGTH}). "
        "Short, to fit 2 CPU cores; no row here is a reproduction."),
        (f"- Evaluation: {config['eval']['samples']:,} generated samples (the protocol's 26,000); "
        f"classifier: {first['protocol'].get('classifier', '?')}."),
        (f"- Machine time: **{run_hours:.2f} h** of run time (the sum of the {len(runs)} runs' own `wall_seconds`, every "
         f"segment of a resumed run), {jobs} runs at a time on 2 CPU cores (1 torch thread each). Wall-clock of the "
         f"sweeps as `.complete` recorded them: {wall_text} (an invocation cut short by the end of a session records "
         "nothing, so these undercount; the run time does not).") if segments else
        f"- Machine time: **{run_hours:.2f} h** of run time (the sum of the runs' own `wall_seconds`); wall-clock not recorded.",
        "",
        "## Results (mean ± s.e. over seeds)",
        "",
        ("| row | seeds | modes (of 1000) | modes >= 10 % of uniform share | KL | modes, corrected | corrected: low - high "
         "| KL, corrected | domain FID | KID | precision | recall | coverage | SWD | GFLOP/step | D params | steps/s |"),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    # The DCGAN baseline: the remedy=none row of the main sweep (the equal-capacity control lives under controls/).
    dcgan = next((g for g in report.groups if g.runs[0].labels.get("remedy") == "none" and not g.uses
                  and g.runs[0].config.get("dataset.classes", "mode") == "mode"
                  and "controls" not in g.runs[0].path.relative_to(args.out).parts), None)
    base_width = dcgan.runs[0].config.get("model.d.width") if dcgan is not None else None
    rows = {row_name(g, base_width): g for g in sorted(report.groups, key=_order)}
    for name, group in rows.items():
        if group.uses:
            continue
        lines.append(_result_row(name, group))
    for label, n, cells in merged_references(report.reference_rows):  # measured by every run before its first step
        lines.append(f"| {label} | {n} runs | " + " | ".join(cells) + " | | | |")
    if not report.reference_rows:
        lines.append("| (no reference rows: these runs predate them; re-run `make reproduce-stacked`) |" + " |" * (len(METRICS) + 4))
    labelled = {name: g for name, g in rows.items() if g.uses}
    if labelled:
        lines += ["", "## Rows that use class labels (not compared with the rows above)", "",
                  ("`acgan` and `cgan_projection` are told a class (here a triple's first digit, `dataset.classes=first`) "
                   "and draw their evaluation samples at uniformly drawn classes: their mode counts and KL partly "
                   "reflect the labels, not G alone, so they answer another question than the unconditional rows and "
                   "get no verdict against them. Their within-class coverage is below."), "",
                  "| row | seeds | " + " | ".join(["modes (of 1000)", "modes >= 10 % of uniform share", "KL",
                                                      "modes, corrected", "corrected: low - high", "KL, corrected",
                                                      "domain FID", "KID", "precision", "recall", "coverage", "SWD"])
                  + " | GFLOP/step | D params | steps/s |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        lines += [_result_row(name, g) for name, g in labelled.items()]
    pairs = comparisons(rows, base_width)
    lines += ["", "## Verdicts: each remedy against the DCGAN baseline, each method against its control", "",
              (f"{METHOD[0].upper()}{METHOD[1:]}. One family: the {len(pairs) * len(VERDICT_METRICS)} comparisons "
               f"below ({len(pairs)} pair{'s' if len(pairs) != 1 else ''} x {len(VERDICT_METRICS)} metrics: "
               f"{'; '.join(SHORT[m] for m in VERDICT_METRICS)}); the other metrics are shown above without tests."), ""]
    seeds = min((g.n_completed for a, b, _ in pairs for g in (rows[a], rows[b])), default=0)
    family = len(pairs) * len(VERDICT_METRICS)
    if seeds >= 2 and family:
        # The exact test's floor: the observed split and its mirror of C(2n, n); BH then needs enough comparisons
        # at that floor before any q falls below ALPHA.
        floor = 2 / math.comb(2 * seeds, seeds)
        needed = math.ceil(family * floor / ALPHA)
        text = (f"With {seeds} seeds a side the smallest p the exact test can give is 2/C({2 * seeds}, {seeds}) = "
                f"{floor:.3g}; over {family} comparisons Benjamini-Hochberg calls one significant only when at least "
                f"{needed} comparisons reach that floor.")
        if floor >= ALPHA:
            text += " No verdict here can be significant at this seed count."
        lines += [text, ""]
    if pairs:
        tests = [(m, compare(m, rows[a].values(m), rows[b].values(m)), rows[a].stats[m].mean, rows[b].stats[m].mean)
                 for a, b, _ in pairs for m in VERDICT_METRICS]
        found = iter(adjust(tests))
        lines += ["| comparison | what it isolates | metric | Δ [95 % CI] | p | q | verdict |", "|---|---|---|---|---|---|---|"]
        for a, b, why in pairs:
            for m in VERDICT_METRICS:
                v = next(found)
                cells = ([v.interval_text(), pq_cell(v.p), pq_cell(v.q), v.word] if v.p is not None
                         else ["–", "", "", v.text()])
                lines.append(f"| {a} vs {b} | {why} | {SHORT[m]} | " + " | ".join(cells) + " |")
    else:
        lines.append("- no remedy=none group among these runs: no verdicts.")
    if all(g.stats["recall"].mean == 0 for g in report.groups):
        lines += ["", ("Recall is 0 in every run: no real sample's features lie within the 3-nearest-neighbour ball of "
                  "any generated sample. The generated features sit far tighter together than the real ones at this "
                  "training length (precision, the converse, is near 1).")]
    ref = None if report.reference_rows else (first["protocol"].get("reference_modes") or reference_modes(config))
    lines += [
        "",
        ("The domain FID, KID, precision/recall, coverage and SWD are computed on the mode classifier's "
        "penultimate features (3 x 128, one block per channel), not on Inception features: they are comparable "
        "between these runs only."),
    ]
    if report.reference_rows:
        lines.append("Reference rows: `real data` is test-split images (the mode classifier did not train on them; "
                     "three independent test images a sample), the ceiling; `real data, blurred` and `real data, "
                     "noised` are the same images after a 3x3 binomial blur twice, or with Gaussian noise of std 0.5: "
                     "what a G that covers every mode but draws blurry or noisy images scores. Where those rows' "
                     "corrected counts are far from the clean row's, the count cannot separate blur or noise from "
                     "coverage (the validation below).")
    if ref:
        lines.append(f"The real data's own reference sample scores {ref['modes_captured']} modes and KL "
                     f"{ref['reverse_kl']:.3f} under the same classifier and sample count: the ceiling of this protocol.")
    lines += within_class_section(report.groups, base_width)
    if args.validation.is_file():  # how far the counts above can be trusted, measured where the truth is known
        lines += ["", args.validation.read_text().replace("\n## ", "\n### ").rstrip(), ""]
    else:
        lines += ["", ("The mode counts have not been validated on real images with known modes for this doc "
                       "(`make validate-stacked` writes that table)."), ""]
    lines += ["", "## The papers' Stacked MNIST numbers (modes / KL), for scale only", ""]
    lines += [f"- {name}: {text}." for name, text in PAPERS]
    lines += ["", ("These are on Stacked MNIST (not Fashion-MNIST), with the papers' networks and training lengths; "
              "ours is a different, shorter benchmark, so no row is a reproduction of theirs."), ""]
    args.doc.parent.mkdir(parents=True, exist_ok=True)
    args.doc.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
