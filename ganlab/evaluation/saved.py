"""What `ganlab eval` and `ganlab sample` run (ganlab/cli.py reads their arguments): `ganlab eval RUN_DIR`
evaluates a finished run again, from its checkpoint; `ganlab eval --samples FILE|DIR dataset=NAME` evaluates samples
made elsewhere; `ganlab sample RUN_DIR --n N --out FILE|DIR` draws samples from a run's checkpoint into a file.

The run's resolved config (in summary.json) rebuilds every network, the remedy's extra networks
included, and the checkpoint fills them. With the default sample count, the evaluation draws the
very samples of the run's final evaluation (its RNG is seeded from the seed and the step), so the
numbers equal the summary's; `--samples` takes more or fewer. Results go to RUN_DIR/eval.json.

A samples file (.npz with an array `images` (n, C, H, W), floats in [-1, 1] or uint8, or `points` (n, d);
`x` as ganlab's own samples.npz; or a bare .npy array), or a folder of PNG files, is scored by the same evaluator
against the dataset it names, on everything that needs no G or D, with the reference rows that need no G. The
record goes to FILE's name with .eval.json, or --out FILE.json; `--out DIR` writes DIR/summary.json, a record
`ganlab report` reads beside ganlab's own runs (one row, labelled samples=NAME).

`ganlab sample` rebuilds and loads the run exactly as `ganlab eval RUN_DIR` does, and draws as its evaluation does
(every network in evaluation mode, the remedy's own sampler: DRS's rejection, a conditional G's labels, ...).

A run trained with G's moving average (`ema.decay`: the checkpoint holds `G_ema`) is evaluated with the average
beside G, as training evaluates it (the same codes; eval.json's `metrics_ema`), and `ganlab sample` draws from the
average unless `--raw` asks for the trained G.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import Tensor

from ganlab import checkpoint, provenance
from ganlab.config import W_SAMPLES_PROTOCOL, compose_checked
from ganlab.data.user import load_arrays
from ganlab.errors import ConfigError, GanlabError, UsageError, WriteError
from ganlab.evaluation import eval_mode, eval_seed, make_evaluator, scalars
from ganlab.evaluation.base import MIN_IMAGE_SAMPLES
from ganlab.gan import build, build_data
from ganlab.memory import check_evaluation
from ganlab.summary import RunSummary
from ganlab.tracking import write_json_atomic

log = logging.getLogger(__name__)

MIN_SAMPLES = 2  # W1, precision/recall and the mode counts compare sets of samples: one is no set
MIN_IMAGES = MIN_IMAGE_SAMPLES  # images: density/coverage's 5 nearest neighbours need 6 (metrics.prdc_samples >= 6)


def evaluate_run(run_dir: str | Path, samples: int | None = None, device: str | None = None,
                 overrides: list[str] | None = None) -> dict:
    """Evaluate the run's checkpoint, and G's moving average beside G where it holds one (`metrics_ema`, the same
    metrics on the same codes); `overrides` (`metrics.inception=true`, `eval.batch=500`) change how the metrics
    are taken, never the networks."""
    # The arguments first, before the run is read or any network built.
    if samples is not None and samples < MIN_SAMPLES:
        raise ConfigError(f"--samples must be >= {MIN_SAMPLES}, got {samples}")
    overrides = list(overrides or [])
    check_overrides(overrides)
    run_dir = Path(run_dir)
    cfg, device = run_config(run_dir, device)
    cfg = _with_overrides(cfg, overrides)
    n = samples or cfg.eval.samples
    # --samples 10000000000 (and eval.batch) refused in one line before anything is built or drawn
    check_evaluation(cfg, n, device, f"--samples {samples}" if samples else f"eval.samples={n}")
    exp, step, average = load_run(run_dir, cfg, device)
    if samples is not None and getattr(exp.data, "evaluator", None) == "image" and samples < MIN_IMAGES:
        raise ConfigError(f"--samples must be >= {MIN_IMAGES} for an image run, got {samples} (density/coverage "
                          "compare each sample with its 5 nearest neighbours)")
    evaluator = make_evaluator(exp.data, exp.latent_dim, OmegaConf.merge(cfg.eval, {"samples": n}),
                               exp.loss.wasserstein_critic, device, cfg.get("metrics"))
    # W1/W2 take min(eval.w_samples, n) points per side (offline_metrics); a run's own low w_samples
    # was warned of when it trained, a low --samples is warned of here.
    if samples is not None and samples < W_SAMPLES_PROTOCOL and "wasserstein1" in evaluator.metric_keys:
        log.warning("--samples %d is below the protocol's %d points per side for W1/W2 (%d taken here): they are "
                    "biased upward, not comparable with the protocol's numbers", samples, W_SAMPLES_PROTOCOL,
                    min(cfg.eval.w_samples, n))

    def measured(G) -> tuple[dict, object]:
        # Seeded as the run's evaluation at this step: G and its average get the same codes, as in training.
        result = evaluator.evaluate(G, exp.D, exp.remedy, torch.Generator(device).manual_seed(eval_seed(cfg.seed, step)))
        return {**scalars(result), **evaluator.offline_metrics(result)}, result

    metrics, result = measured(exp.G)
    record = {"run_dir": str(run_dir), "step": step, "metrics": metrics,
              "mode_counts": result.metrics.get("mode_counts"), "protocol": evaluator.protocol(),
              "provenance": provenance.gather()}  # this evaluation's; the run's own is in its summary.json
    if average is not None:  # as summary.json keeps the average's: its metrics, beside G's
        record["metrics_ema"] = measured(average)[0]
    write_json_atomic(run_dir / "eval.json", record)
    return record


def load_run(run_dir: Path, cfg, device: torch.device) -> tuple:
    """(the GAN rebuilt from `cfg` with the run's checkpoint loaded, its step, G's moving average or None): the
    average only where the checkpoint holds one (`G_ema`)."""
    exp = build(cfg, device)
    path = run_dir / checkpoint.NAME
    state = checkpoint.read(path)
    checkpoint.load_into(state, exp, path)
    return exp, int(state["step"]), exp.ema.G if exp.ema is not None and "G_ema" in state else None


def run_config(run_dir: Path, device: str | None) -> tuple:
    """The run's resolved config (summary.json) and the device to rebuild it on: `device`, or by default the
    run's own (the same samples need the same RNG stream: CPU and CUDA differ). GanlabError naming the file."""
    summary_path = run_dir / "summary.json"
    if not run_dir.is_dir():
        raise GanlabError(f"no run directory at {run_dir}")
    try:
        summary = RunSummary.read(run_dir)
        if not isinstance(summary.config, dict):
            raise GanlabError("it holds no config")
        if EXTERNAL_KEY in summary.config:
            raise GanlabError("it is the record of samples scored by `ganlab eval --samples`, not a trained run")
        cfg = OmegaConf.create(summary.config)
    except (GanlabError, ValueError) as exc:
        raise GanlabError(f"cannot read the run's config from {summary_path}: {exc}; is {run_dir} a ganlab run?") from None
    return cfg, (_device(device) if device else _device(summary.device or "cpu", trained_on=True))


# --- ganlab sample -------------------------------------------------------------------------------------------

SAMPLE_SUFFIXES = (".npz", ".npy")  # --out FILE; anything else is a folder of PNG files


@torch.no_grad()
def draw(exp, n: int, generator: torch.Generator, batch: int, G=None) -> Tensor:
    """n samples of the built experiment, as its evaluation draws them: every network in evaluation mode, the
    remedy's `before_eval` and `sample` (its own sampler), the codes drawn at once from `generator`, G run on
    `batch` of them at a time for images (2-D points all at once, as the toy evaluation). `G`: the generator to
    draw from (G's moving average), by default the run's G."""
    G, D, remedy = exp.G if G is None else G, exp.D, exp.remedy
    device = next(G.parameters()).device
    with eval_mode([G, D, *(module for module, _ in remedy.extra_networks().values())]):
        remedy.before_eval(G, D, exp.data, generator)
        z = torch.randn(n, exp.latent_dim, device=device, generator=generator)
        step = n if getattr(exp.data, "evaluator", None) == "toy" else batch
        return torch.cat([remedy.sample(G, D, z[s:s + step], generator) for s in range(0, n, step)]).float()


def _occupied(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0 or path.is_dir() and any(path.iterdir())


def sample_run(run_dir: str | Path, n: int, out: str | Path, seed: int = 0, force: bool = False,
               device: str | None = None, raw: bool = False) -> dict:
    """Draw n samples from the run's checkpoint with a generator seeded `seed`, and write them to `out`: a .npz
    (`points` float32 (n, d), or `images` uint8 (n, C, H, W)), a .npy of that array, or a folder of PNG files
    (images). They come from G's moving average where the checkpoint holds one (ema.decay), unless `raw`; the
    record's `generator` says which ("G_ema" or "G"). An existing non-empty `out` is refused unless `force`."""
    from ganlab.data.pngs import write_png_folder
    from ganlab.evaluation.image import _to_uint8

    if n < 1:
        raise ConfigError(f"--n must be >= 1, got {n}")
    run_dir, out = Path(run_dir), Path(out)
    to_file = out.suffix.lower() in SAMPLE_SUFFIXES
    if _occupied(out) and not force:
        raise GanlabError(f"--out {out} exists{'' if out.is_file() else ' and is not empty'}; add --force to replace "
                          "it, or choose another path")
    if out.exists() and to_file != out.is_file():
        raise GanlabError(f"--out {out} is a {'folder' if out.is_dir() else 'file'}; give a .npz or .npy file, or a "
                          "folder for PNG files")
    check_output(out, "--out")
    cfg, device = run_config(run_dir, device)
    check_evaluation(cfg, n, device, f"--n {n}")
    exp, step, average = load_run(run_dir, cfg, device)
    kind = getattr(exp.data, "evaluator", "toy")
    if kind == "toy" and not to_file:
        raise GanlabError(f"--out {out}: points go to a .npz or .npy file (PNG folders are for images)")
    G, which = (exp.G, "G") if raw or average is None else (average, "G_ema")
    x = draw(exp, n, torch.Generator(device).manual_seed(seed), int(cfg.eval.batch), G)
    if not torch.isfinite(x).all():
        raise GanlabError(f"the run's {which} gives {int((~torch.isfinite(x)).sum())} NaN or infinite values at step "
                          f"{step}: nothing written")
    array = x.cpu().numpy().astype(np.float32) if kind == "toy" else _to_uint8(x)
    name = SAMPLE_ARRAYS[kind][0]
    with writing("--out", out):
        if not to_file:
            write_png_folder(array, out, replace=True)
        else:
            from ganlab.atomic import write_atomic

            def save(handle):
                if out.suffix.lower() == ".npy":
                    np.save(handle, array)
                else:
                    np.savez(handle, **{name: array})

            out.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(out, save)
    return {"run_dir": str(run_dir), "step": step, "samples": n, "seed": seed, "array": name,
            "shape": list(array.shape), "generator": which, "ema_decay": None if average is None else exp.ema.decay,
            "written_to": str(out)}


def check_output(path: Path, option: str) -> None:
    """Refuse in one line, before any work, an output whose way is blocked by a file (`--out notes.txt/x.npz`):
    the nearest existing folder on its path must be a folder."""
    for above in path.parents:
        if above.exists():
            if not above.is_dir():
                raise UsageError(f"{option} {path}: {above} is a file, not a folder; choose another path")
            return


@contextlib.contextmanager
def writing(option: str, path: Path):
    """An OSError while making or writing the output `path` (a place that cannot take a folder, a read-only file
    system) as one line naming it. The files themselves are written atomically: nothing is left half-written."""
    try:
        yield
    except OSError as exc:
        raise WriteError(f"cannot write {option} {path}: {exc.strerror or exc}; choose another path") from None


# --- ganlab eval --samples FILE|DIR --------------------------------------------------------------------------

EXTERNAL_KEY = "samples"  # the config section of a record of samples made elsewhere: {"name": the row's label}
EVAL_KEYS = ("metrics.", "eval.batch", "eval.grid")  # what `ganlab eval` may change: how metrics are measured
FILE_KEYS = ("dataset", "seed", "eval.w_samples", *EVAL_KEYS)  # and for a samples file: what it is compared with
SAMPLE_ARRAYS = {"image": ("images", "x"), "toy": ("points", "x")}  # the array names a samples file may use
# What a file's evaluation lacks: these need the G and D that made the samples.
NEEDS_NETWORKS = ("critic_gap", "jacobian_sigma_min", "remedy_metrics")


def evaluate_samples_file(path: str | Path, overrides: list[str], device: str | None = None,
                          out: str | Path | None = None, name: str | None = None,
                          tensorboard: str | Path | None = None) -> dict:
    """Score the samples in `path` (a .npz or .npy file, or a folder of PNG files) against the dataset `overrides`
    names (`dataset=NAME`, its keys, `metrics.*`, `eval.batch`, `eval.w_samples`, `seed`: the real draws), on
    everything that needs no G or D. Write the record to `out`: a .json file (default: the file's name with
    .eval.json; its folder made if need be), or a folder, which gets a summary.json that `ganlab report` reads as
    one run labelled samples=`name` (default: the file's stem), with the reference rows that need no G (Gaussian
    fit and real data; images: real data clean, blurred and noised). Samples of several seeds of one generator,
    scored with the same `name` and seed=0, 1, ..., are one row of seeds there. `tensorboard`: a folder for
    TensorBoard events (the metrics, the reference rows, a picture of the samples). Returns the record, with
    `written_to`."""
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
    path = Path(path)
    out = Path(out) if out else path.with_suffix(".eval.json")
    as_run = out.suffix.lower() != ".json"  # a folder: summary.json, as a run's
    if as_run:
        _check_record_folder(out)
    check_output(out, "--out")  # the outputs' paths before the (image metrics: minutes of) work
    if tensorboard is not None:
        tensorboard = Path(tensorboard)
        if tensorboard.exists() and not tensorboard.is_dir():
            raise UsageError(f"--tensorboard {tensorboard} is a file; give a folder for the TensorBoard events")
        check_output(tensorboard, "--tensorboard")
    label = name or path.stem or path.resolve().name
    cfg = compose_checked(overrides)
    device = _device(device or "cpu")
    data = build_data(cfg, device)
    fake = load_samples(path, data, named[-1], device)
    eval_cfg = OmegaConf.merge(cfg.eval, {"samples": len(fake)})
    evaluator = make_evaluator(data, cfg.model.latent_dim, eval_cfg, False, device, cfg.get("metrics"))
    ev = evaluator.evaluate_samples(fake, torch.Generator(device).manual_seed(cfg.seed))
    metrics = {**scalars(ev), **evaluator.offline_metrics(ev)}
    # The reference rows, for a run's record (they cost as much again as the samples' own evaluation, three times
    # as much for images: the .json record leaves them out), from an RNG of their own as a run's rows.
    references = (_data_references(evaluator, torch.Generator(device).manual_seed(eval_seed(cfg.seed, 0)), len(fake))
                  if as_run else {})
    protocol = {k: v for k, v in evaluator.protocol().items() if k not in NEEDS_NETWORKS}
    protocol["references"] = ("gaussian (2-D protocol): samples of a Gaussian with the data's mean and covariance; "
                              "data: fresh real samples (images: real_blurred, real_noised too, as a run's rows); "
                              "each as many as the samples, through the same evaluator. No untrained G: no G here"
                              if as_run else "not measured (--out DIR measures them, for the report)")
    config = {"dataset": OmegaConf.to_container(cfg.dataset, resolve=True), "seed": cfg.seed,
              "eval": OmegaConf.to_container(eval_cfg, resolve=True),
              "metrics": OmegaConf.to_container(cfg.metrics, resolve=True), EXTERNAL_KEY: {"name": label}}
    labels = {"dataset": named[-1], EXTERNAL_KEY: label}
    record = {"samples_file": str(path), "samples": len(fake), "dataset": named[-1], "metrics": metrics,
              "mode_counts": ev.metrics.get("mode_counts"), **({"references": references} if as_run else {}),
              "n_modes": evaluator.n_modes,
              "labels": labels, "seed": cfg.seed, "config": config, "protocol": protocol,
              "provenance": provenance.gather()}
    if tensorboard is not None:
        with writing("--tensorboard", tensorboard):
            _write_tensorboard(tensorboard, evaluator, ev, metrics, references, label)
    with writing("--out", out):
        (out if as_run else out.parent).mkdir(parents=True, exist_ok=True)
    if as_run:
        summary = RunSummary(status="completed", step=0, run_dir=str(out), labels=labels, seed=cfg.seed,
                             device=str(device), n_modes=evaluator.n_modes, metrics=metrics, references=references,
                             config=config, protocol=protocol, mode_counts=record["mode_counts"],
                             provenance=record["provenance"],
                             extra={"samples_file": str(path), "samples": len(fake)})
        summary.write(out)
        written = out / "summary.json"
    else:
        write_json_atomic(out, record)
        written = out
    record["written_to"] = str(written)
    return record


def _check_record_folder(out: Path) -> None:
    """`--out DIR` takes a new folder, or one holding an earlier record of samples: never a trained run's."""
    if out.exists() and not out.is_dir():
        raise GanlabError(f"--out {out} is a file; give a folder for the record (summary.json), or a .json file")
    held = RunSummary.read_or_none(out) if (out / "summary.json").exists() else None
    if (out / "summary.json").exists() and (held is None or not isinstance(held.config, dict)
                                            or EXTERNAL_KEY not in held.config):
        raise GanlabError(f"--out {out} holds a run's summary.json; give another folder for the samples' record")


def _data_references(evaluator, generator: torch.Generator, n: int) -> dict:
    """The evaluator's reference rows that need no G, for n samples."""
    rows = evaluator.data_references(generator, n) if hasattr(evaluator, "data_references") else {}
    return {name: {k: v for k, v in row.items() if k != "mode_counts"} for name, row in rows.items()}


def _write_tensorboard(directory: Path, evaluator, ev, metrics: dict, references: dict, label: str) -> None:
    """The samples' evaluation as TensorBoard events in `directory`, at step 0: `metrics/*` and
    `reference/NAME/*` scalars, as a run logs them, and the pictures its evaluation draws of the samples."""
    from ganlab.tracking import Tracker

    evaluator.history.record(0, ev)
    if ev.grid is None and ev.fake.ndim == 4:  # images: the first samples stand for G's fixed-code grid
        ev.grid = ev.fake[:evaluator.cfg.grid]
    job = evaluator.job(0, ev, last=True)
    images = job.pictures() if hasattr(job, "pictures") else job.complete().images
    numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    with Tracker(directory, 0, {"samples": label}, evaluator.metric_keys, progress=False) as tracker:
        tracker.scalars(0, {f"metrics/{k}": v for k, v in numbers.items()})
        tracker.scalars(0, {f"reference/{name}/{k}": v for name, row in references.items() for k, v in row.items()
                            if isinstance(v, (int, float)) and not isinstance(v, bool)})
        tracker.images(0, images)
        tracker.flush()


def load_samples(path: Path, data, name: str, device: torch.device) -> Tensor:
    """The samples in `path` as float32 on `device`, checked against the shape and range of `data` (the
    dataset option `name`); raise GanlabError with the fix."""
    kind = getattr(data, "evaluator", "toy")
    names = SAMPLE_ARRAYS.get(kind, SAMPLE_ARRAYS["toy"])
    how = f"numpy.savez(PATH, {names[0]}=array of shape (n, {', '.join(map(str, data.shape))}))"
    if path.is_dir():  # a folder of PNG files (`ganlab sample RUN --out DIR` writes one)
        if kind != "image":
            raise GanlabError(f"{path} is a folder; {name}'s points come in a .npz or .npy file: write one with {how}")
        from ganlab.data.pngs import read_png_folder

        array = read_png_folder(path, tuple(data.shape))
    elif not path.is_file():
        raise GanlabError(f"no samples file at {path}; write one with {how}"
                          + (", or give a folder of PNG files" if kind == "image" else ""))
    else:
        array = load_arrays(path, names, how)[0]
    return _checked_samples(array, path, data, name, kind, device)


def _checked_samples(array: np.ndarray, path: Path, data, name: str, kind: str, device: torch.device) -> Tensor:
    if array.ndim != 1 + len(data.shape) or tuple(array.shape[1:]) != tuple(data.shape):
        raise GanlabError(f"{path}: samples of shape (n, {', '.join(map(str, data.shape))}) for {name}, got "
                          f"{tuple(array.shape)}")
    if len(array) < MIN_SAMPLES:
        raise GanlabError(f"{path} holds {len(array)} sample(s); the metrics compare sets: give >= {MIN_SAMPLES}")
    if kind == "image" and len(array) < MIN_IMAGES:
        raise GanlabError(f"{path} holds {len(array)} images; the image metrics' nearest neighbours (density and "
                          f"coverage: 5) need >= {MIN_IMAGES}")
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
    """`name` as a device this machine has (ganlab/devices.py's one check, as for `ganlab train`); GanlabError
    otherwise. `trained_on`: the name is the run's own device, not the user's --device: the line then says to pass
    --device cpu, the numbers differing from the summary's."""
    from ganlab.devices import resolve_device

    try:
        return resolve_device(name, "--device ")
    except GanlabError:
        if not trained_on:
            raise
        raise GanlabError(f"the run was trained on {name}, which this machine does not have; pass --device cpu "
                          "(the samples, and so the numbers, will differ from the summary's)") from None


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
