"""`ganlab eval RUN_DIR`: evaluate a finished run again, from its checkpoint.

The run's resolved config (in summary.json) rebuilds every network, the remedy's extra networks
included, and the checkpoint fills them. With the default sample count, the evaluation draws the
very samples of the run's final evaluation (its RNG is seeded from the seed and the step), so the
numbers equal the summary's; `--samples` takes more or fewer. Results go to RUN_DIR/eval.json.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from ganlab.argparsing import Parser
from ganlab.config import W_SAMPLES_PROTOCOL, compose_checked
from ganlab.errors import ConfigError, GanlabError
from ganlab.evaluation import eval_seed, make_evaluator, scalars
from ganlab.experiment import build, load_checkpoint
from ganlab.summary import RunSummary
from ganlab.tracking import write_json_atomic

log = logging.getLogger(__name__)

MIN_SAMPLES = 2  # W1, precision/recall and the mode counts compare sets of samples: one is no set


def evaluate_run(run_dir: str | Path, samples: int | None = None, device: str | None = None,
                 overrides: list[str] | None = None) -> dict:
    """Evaluate the run's checkpoint; `overrides` (`metrics.inception=true`, `eval.batch=500`) change how
    the metrics are taken, never the networks."""
    # The arguments first, before the run is read or any network built.
    if samples is not None and samples < MIN_SAMPLES:
        raise ConfigError(f"--samples must be >= {MIN_SAMPLES}, got {samples}")
    overrides = list(overrides or [])
    check_overrides(overrides)
    run_dir = Path(run_dir)
    summary_path = run_dir / "summary.json"
    if not run_dir.is_dir():
        raise GanlabError(f"no run directory at {run_dir}")
    try:
        summary = RunSummary.read(run_dir)
        if not isinstance(summary.config, dict):
            raise GanlabError("it holds no config")
        cfg = OmegaConf.create(summary.config)
    except (GanlabError, ValueError) as exc:
        raise GanlabError(f"cannot read the run's config from {summary_path}: {exc}; is {run_dir} a ganlab run?") from None
    # The run's own device by default: the same samples need the same RNG stream (CPU and CUDA differ).
    try:
        device = torch.device(device or summary.device or "cpu")
    except RuntimeError:
        raise GanlabError(f"--device {device}: not a torch device; use cpu or cuda (cuda:1: the second GPU)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise GanlabError(f"the run was trained on {device}, and this machine has no CUDA; pass --device cpu "
                          "(the samples, and so the numbers, will differ from the summary's)")
    cfg = _with_overrides(cfg, overrides)
    exp = build(cfg, device)
    step = load_checkpoint(run_dir / "checkpoint.pt", exp)
    n = samples or cfg.eval.samples
    rng = torch.Generator(device).manual_seed(eval_seed(cfg.seed, step))
    evaluator = make_evaluator(exp.data, exp.latent_dim, OmegaConf.merge(cfg.eval, {"samples": n}),
                               exp.loss.wasserstein_critic, device, cfg.get("metrics"))
    # W1/W2 take min(eval.w_samples, n) points per side (offline_metrics); a run's own low w_samples
    # was warned of when it trained, a low --samples is warned of here.
    if samples is not None and samples < W_SAMPLES_PROTOCOL and "wasserstein1" in evaluator.metric_keys:
        log.warning("--samples %d is below the protocol's %d points per side for W1/W2 (%d taken here): they are "
                    "biased upward, not comparable with the protocol's numbers", samples, W_SAMPLES_PROTOCOL,
                    min(cfg.eval.w_samples, n))
    result = evaluator.evaluate(exp.G, exp.D, exp.remedy, rng)
    metrics = {**scalars(result), **evaluator.offline_metrics(result)}
    record = {"run_dir": str(run_dir), "step": step, "metrics": metrics,
              "mode_counts": result.metrics.get("mode_counts"), "protocol": evaluator.protocol()}
    write_json_atomic(run_dir / "eval.json", record)
    return record


EVAL_KEYS = ("metrics.", "eval.batch", "eval.grid")  # what `ganlab eval` may change: how metrics are measured


def check_overrides(overrides: list[str]) -> None:
    """Refuse what `ganlab eval` cannot change, and check the values as `ganlab train` does (the
    train config composed with them and validated: the same ranges, metrics.inception
    true|false|auto, unknown keys named); raise ConfigError."""
    for item in overrides:
        key, sep, _ = item.partition("=")
        if not sep or not key.startswith(EVAL_KEYS):
            raise ConfigError(f"{item!r}: ganlab eval takes key=value overrides of {', '.join(EVAL_KEYS)}* only "
                              "(e.g. metrics.inception=true)")
    if overrides:
        compose_checked(overrides)


def _with_overrides(cfg, overrides: list[str]):
    from ganlab.config import MetricsConfig

    if "metrics" not in cfg:  # a run from before the image metrics existed
        cfg.metrics = OmegaConf.structured(MetricsConfig)
    try:
        return OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides))
    except Exception as exc:  # noqa: BLE001 - OmegaConf's parse and merge errors alike
        raise GanlabError(f"bad override: {str(exc).splitlines()[0]}") from None


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="ganlab eval", description=__doc__.split("\n\n")[0])
    p.add_argument("path", metavar="RUN_DIR", help="a run directory (with summary.json and checkpoint.pt)")
    p.add_argument("--samples", type=int, default=None, metavar="N",
                   help=f"samples to evaluate, >= {MIN_SAMPLES} (default: the run's eval.samples; W1/W2 take "
                        f"min(N, eval.w_samples) of them, and the protocol {W_SAMPLES_PROTOCOL})")
    p.add_argument("--device", default=None, help="cpu or cuda (default: the device the run trained on)")
    # default=[]: without a default argparse counts a nargs="*" positional as required in its errors.
    p.add_argument("overrides", nargs="*", default=[], help="how to measure: metrics.inception=true|false|auto "
                   "(Inception FID and IS), metrics.prdc_samples=10000, eval.batch=500, ...")
    return p


def main(argv: list[str] | None = None) -> None:
    # intermixed: `ganlab eval RUN_DIR --samples N metrics.inception=true` (overrides after an option) parses too.
    args = parser().parse_intermixed_args(argv)
    # Warnings (log.warning) as `ganlab: warning: ...` lines: no Hydra job sets up logging for this
    # command. Removed afterwards: main() may run inside another program (the tests).
    warnings = logging.StreamHandler(sys.stderr)
    warnings.setLevel(logging.WARNING)
    warnings.setFormatter(logging.Formatter("ganlab: warning: %(message)s"))
    logging.getLogger("ganlab").addHandler(warnings)
    try:
        record = evaluate_run(args.path, args.samples, args.device, args.overrides)
    finally:
        logging.getLogger("ganlab").removeHandler(warnings)
    for key, value in record["metrics"].items():
        print(f"{key:>28}  {value:.6g}")
    print(f"step {record['step']}; wrote {Path(args.path) / 'eval.json'}")
