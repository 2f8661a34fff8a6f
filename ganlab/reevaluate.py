"""`ganlab eval RUN_DIR`: evaluate a finished run again, from its checkpoint.

The run's resolved config (in summary.json) rebuilds every network, the remedy's extra networks
included, and the checkpoint fills them. With the default sample count, the evaluation draws the
very samples of the run's final evaluation (its RNG is seeded from the seed and the step), so the
numbers equal the summary's; `--samples` takes more or fewer. Results go to RUN_DIR/eval.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from omegaconf import OmegaConf

from ganlab.errors import GanlabError
from ganlab.evaluation import make_evaluator, scalars
from ganlab.tracking import write_json_atomic
from ganlab.train import build, eval_seed, load_checkpoint


def evaluate_run(run_dir: str | Path, samples: int | None = None, device: str | None = None,
                 overrides: list[str] | None = None) -> dict:
    """Evaluate the run's checkpoint; `overrides` (`metrics.inception=true`, `eval.batch=500`) change how
    the metrics are taken, never the networks."""
    run_dir = Path(run_dir)
    summary_path = run_dir / "summary.json"
    if not run_dir.is_dir():
        raise GanlabError(f"no run directory at {run_dir}")
    try:
        summary = json.loads(summary_path.read_text())
        cfg = OmegaConf.create(summary["config"])
    except (OSError, ValueError, KeyError) as exc:
        raise GanlabError(f"cannot read the run's config from {summary_path}: {exc}; is {run_dir} a ganlab run?") from None
    # The run's own device by default: the same samples need the same RNG stream (CPU and CUDA differ).
    device = torch.device(device or summary.get("device", "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise GanlabError(f"the run was trained on {device}, and this machine has no CUDA; pass --device cpu "
                          "(the samples, and so the numbers, will differ from the summary's)")
    cfg = _with_overrides(cfg, overrides or [])
    exp = build(cfg, device)
    step = load_checkpoint(run_dir / "checkpoint.pt", exp)
    n = samples or cfg.eval.samples
    rng = torch.Generator(device).manual_seed(eval_seed(cfg.seed, step))
    evaluator = make_evaluator(exp.data, exp.latent_dim, OmegaConf.merge(cfg.eval, {"samples": n}), exp.loss, device,
                               cfg.get("metrics"))
    result = evaluator.evaluate(exp.G, exp.D, exp.remedy, rng)
    metrics = {**scalars(result), **evaluator.offline_metrics(result)}
    record = {"run_dir": str(run_dir), "step": step, "metrics": metrics,
              "mode_counts": result.metrics.get("mode_counts"), "protocol": evaluator.protocol()}
    write_json_atomic(run_dir / "eval.json", record)
    return record


EVAL_KEYS = ("metrics.", "eval.batch", "eval.grid")  # what `ganlab eval` may change: how metrics are measured


def _with_overrides(cfg, overrides: list[str]):
    from ganlab.config import MetricsConfig

    for item in overrides:
        key, sep, _ = item.partition("=")
        if not sep or not key.startswith(EVAL_KEYS):
            raise GanlabError(f"{item!r}: ganlab eval takes key=value overrides of {', '.join(EVAL_KEYS)}* only "
                              "(e.g. metrics.inception=true)")
    if "metrics" not in cfg:  # a run from before the image metrics existed
        cfg.metrics = OmegaConf.structured(MetricsConfig)
    try:
        return OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides))
    except Exception as exc:  # noqa: BLE001 - OmegaConf's parse and merge errors alike
        raise GanlabError(f"bad override: {str(exc).splitlines()[0]}") from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ganlab eval", description=__doc__.split("\n\n")[0])
    p.add_argument("path", help="a run directory (with summary.json and checkpoint.pt)")
    p.add_argument("--samples", type=int, default=None, help="samples to evaluate (default: the run's eval.samples)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: the device the run trained on)")
    p.add_argument("overrides", nargs="*", help="how to measure: metrics.inception=true (Inception FID and IS), "
                   "metrics.prdc_samples=10000, eval.batch=500, ...")
    return p


def main(argv: list[str] | None = None) -> None:
    from ganlab.cli import fail

    args = parser().parse_args(argv)
    if args.samples is not None and args.samples < 1:
        fail(f"--samples must be >= 1, got {args.samples}")
    try:
        record = evaluate_run(args.path, args.samples, args.device, args.overrides)
    except GanlabError as exc:
        fail(str(exc), exc.exit_code)
    for key, value in record["metrics"].items():
        print(f"{key:>28}  {value:.6g}")
    print(f"step {record['step']}; wrote {Path(args.path) / 'eval.json'}")
