"""What `ganlab eval` runs (ganlab/cli.py reads its arguments): `ganlab eval RUN_DIR` evaluates a finished
run again, from its checkpoint; `ganlab eval --samples FILE dataset=NAME` evaluates samples made elsewhere.

The run's resolved config (in summary.json) rebuilds every network, the remedy's extra networks
included, and the checkpoint fills them. With the default sample count, the evaluation draws the
very samples of the run's final evaluation (its RNG is seeded from the seed and the step), so the
numbers equal the summary's; `--samples` takes more or fewer. Results go to RUN_DIR/eval.json.

A samples file (.npz with an array `images` (n, C, H, W), floats in [-1, 1] or uint8, or `points` (n, 2);
`x` as ganlab's own samples.npz; or a bare .npy array) is scored by the same evaluator against the
dataset it names, on everything that needs no G or D. Results go to FILE's name with .eval.json.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import Tensor

from ganlab.config import W_SAMPLES_PROTOCOL, compose_checked
from ganlab.errors import ConfigError, GanlabError, UsageError
from ganlab.evaluation import eval_seed, make_evaluator, scalars
from ganlab.gan import build, build_data, load_checkpoint
from ganlab.memory import check_evaluation
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
    device = _device(device) if device else _device(summary.device or "cpu", trained_on=True)
    cfg = _with_overrides(cfg, overrides)
    n = samples or cfg.eval.samples
    # --samples 10000000000 (and eval.batch) refused in one line before anything is built or drawn
    check_evaluation(cfg, n, device, f"--samples {samples}" if samples else f"eval.samples={n}")
    exp = build(cfg, device)
    step = load_checkpoint(run_dir / "checkpoint.pt", exp)
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
FILE_KEYS = ("dataset", "seed", "eval.w_samples", *EVAL_KEYS)  # and for a samples file: what it is compared with
SAMPLE_ARRAYS = {"image": ("images", "x"), "toy": ("points", "x")}  # the array names a samples file may use
# What a file's evaluation lacks: these need the G and D that made the samples.
NEEDS_NETWORKS = ("critic_gap", "jacobian_sigma_min", "remedy_metrics")


def evaluate_samples_file(path: str | Path, overrides: list[str], device: str | None = None,
                          out: str | Path | None = None) -> dict:
    """Score the samples in `path` against the dataset `overrides` names (`dataset=NAME`, its keys, `metrics.*`,
    `eval.batch`, `eval.w_samples`, `seed`: the real draws); write the record to `out` (default: the file's
    name with .eval.json) and return it."""
    for item in overrides:
        key, sep, _ = item.partition("=")
        if not sep or not key.startswith(FILE_KEYS):
            raise ConfigError(f"{item!r}: ganlab eval --samples FILE takes key=value overrides of "
                              f"{', '.join(k + ('' if k.endswith('.') else '*') for k in FILE_KEYS)} only")
    named = [item.partition("=")[2] for item in overrides if item.startswith("dataset=")]
    if not named:
        from ganlab.config import options

        raise UsageError(f"ganlab eval --samples {path} needs the dataset the samples imitate: dataset=NAME "
                         f"({', '.join(options('dataset'))})")
    cfg = compose_checked(overrides)
    device = _device(device or "cpu")
    data = build_data(cfg, device)
    fake = load_samples(Path(path), data, named[-1], device)
    evaluator = make_evaluator(data, cfg.model.latent_dim, OmegaConf.merge(cfg.eval, {"samples": len(fake)}),
                               False, device, cfg.get("metrics"))
    ev = evaluator.evaluate_samples(fake, torch.Generator(device).manual_seed(cfg.seed))
    protocol = {k: v for k, v in evaluator.protocol().items() if k not in NEEDS_NETWORKS}
    record = {"samples_file": str(path), "samples": len(fake), "dataset": named[-1],
              "metrics": {**scalars(ev), **evaluator.offline_metrics(ev)},
              "mode_counts": ev.metrics.get("mode_counts"), "protocol": protocol}
    out = Path(out) if out else Path(path).with_suffix(".eval.json")
    write_json_atomic(out, record)
    record["written_to"] = str(out)
    return record


def load_samples(path: Path, data, name: str, device: torch.device) -> Tensor:
    """The samples in `path` as float32 on `device`, checked against the shape and range of `data` (the
    dataset option `name`); raise GanlabError with the fix."""
    kind = getattr(data, "evaluator", "toy")
    names = SAMPLE_ARRAYS.get(kind, SAMPLE_ARRAYS["toy"])
    how = f"numpy.savez(PATH, {names[0]}=array of shape (n, {', '.join(map(str, data.shape))}))"
    if not path.is_file():
        raise GanlabError(f"no samples file at {path}; write one with {how}")
    try:
        with open(path, "rb") as handle:
            loaded = np.load(handle, allow_pickle=False)
            if isinstance(loaded, np.ndarray):  # a bare .npy array
                array = loaded
            else:
                with loaded:
                    key = next((n for n in names if n in loaded.files), None)
                    if key is None:
                        held = ", ".join(loaded.files) or "no arrays"
                        raise GanlabError(f"{path} holds {held}, no array named {' or '.join(names)}; "
                                          f"write it with {how}")
                    array = loaded[key]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        # numpy calls any other file "pickled data": its advice to unpickle an unknown file is not ours.
        why = "neither" if "pickle" in str(exc) else str(exc).splitlines()[0]
        raise GanlabError(f"cannot read {path} as a .npz or .npy file ({why}); write it with {how}") from None
    if array.ndim != 1 + len(data.shape) or tuple(array.shape[1:]) != tuple(data.shape):
        raise GanlabError(f"{path}: samples of shape (n, {', '.join(map(str, data.shape))}) for {name}, got "
                          f"{tuple(array.shape)}")
    if len(array) < MIN_SAMPLES:
        raise GanlabError(f"{path} holds {len(array)} sample(s); the metrics compare sets: give >= {MIN_SAMPLES}")
    if array.dtype == np.uint8 and kind == "image":
        x = torch.from_numpy(array).float().div_(127.5).sub_(1.0)
    elif np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer):
        x = torch.from_numpy(np.asarray(array, np.float32))
        if not torch.isfinite(x).all():
            raise GanlabError(f"{path}: {int((~torch.isfinite(x)).sum())} values are NaN or infinite")
        low, high = float(x.min()), float(x.max())
        if kind == "image" and (low < -1.001 or high > 1.001):
            raise GanlabError(f"{path}: images in [-1, 1] as floats (or 0..255 as uint8), got values from {low:.4g} "
                              f"to {high:.4g}; rescale them (x / 127.5 - 1 for 0..255)")
        if kind == "image":
            x = x.clamp_(-1.0, 1.0)  # a rounding error's overshoot
    else:
        raise GanlabError(f"{path}: samples of numbers, got dtype {array.dtype}")
    return x.to(device)


def _device(name: str, trained_on: bool = False) -> torch.device:
    """`name` as a device this machine has (cpu, or a CUDA GPU it holds); GanlabError otherwise.
    `trained_on`: the name is the run's own device, not the user's --device."""
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise GanlabError(f"--device {name}: not a device ganlab evaluates on; use cpu or cuda (cuda:1: the second GPU)")
    count = torch.cuda.device_count() if device.type == "cuda" and torch.cuda.is_available() else 0
    if device.type == "cuda" and (device.index or 0) >= count:
        have = f"{count} GPU(s), cuda:0 to cuda:{count - 1}" if count else "no CUDA"
        if trained_on:
            raise GanlabError(f"the run was trained on {name}, and this machine has {have}; pass --device cpu "
                              "(the samples, and so the numbers, will differ from the summary's)")
        raise GanlabError(f"--device {name}: this machine has {have}; use --device cpu")
    return device


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
