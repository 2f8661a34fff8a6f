"""Will the run fit in memory? An estimate made at start-up, before anything is built or written.

Every allocation that grows with a setting is estimated, and a size beyond the free memory is refused in
one line naming the key, the estimate and the memory free, before the pre-run build allocates it:
- the networks' weights, which grow with the model's widths and latent size (model.latent_dim=100000000 is
  51 GB of weights in one layer), times the copies training keeps (gradients, optimizer moments), and G's
  moving average (ema.decay: one more copy of G);
- one training step's activations at batch_size, and an evaluation's: its samples (eval.samples, their
  codes and G's forward pass), the distances of every sample to every mode of a 2-D mixture
  (dataset.modes), the exact W1/W2's pairs of points (eval.w_samples);
- replicas=N's N copies of the networks and of the step's activations;
- `ganlab eval RUN --samples N`: the evaluation of N samples (`check_evaluation`).
Everything is counted on a build of the config on the meta device, which gives every tensor its shape and
allocates nothing: the weights from its parameters, and the activations from one D step and one G forward
on a few samples, with hooks that add up every layer's output (what autograd keeps for the backward pass),
per sample. It is an estimate (within a small factor), which is enough to refuse sizes that are orders of
magnitude beyond the machine; the configs the package ships need a few GB at most.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
from omegaconf import OmegaConf
from torch import nn

from ganlab.errors import ConfigError, GanlabError

PROBE = 12  # samples in the probe batch: a multiple of every pack size and generator count we ship
# The most layers (modules with weights) the estimate builds on the meta device. A layer costs about 1.5 ms of CPU
# there (its build, and its outputs in the probe steps: measured on a loaded 2-core machine), so this keeps the
# estimate to a few seconds for any config (2,048 plain layers: 3 s): config.MAX_DEPTH keeps one network far below
# it, and this bounds what multiplies networks (remedy.madgan.k generators of G's full depth, an encoder beside them).
MAX_LAYERS = 2048
# The settings that multiply layers, named when there are too many.
LAYER_KEYS = ("model.g.depth", "model.d.depth", "model.encoder.depth", "remedy.madgan.k")

# Bytes per parameter while training: its weight, its gradient and up to two optimizer moments (Adam's).
TRAIN_COPIES = 4
# replicas=N, per parameter of each replica: the stacked copies the vectorised step trains (weight, gradient,
# two moments) and the replica's own GAN, which the stacked slices and moments are copied back into before
# its evaluations and checkpoints (ganlab/replicas.py). Measured: 2.5 MB a replica of the default 2-D run.
REPLICA_COPIES = 8
# Bytes per value of an evaluation's samples: the generated and the real ones, float32, all held at once.
SAMPLE_BYTES = 8
# Bytes per sample and mode of a 2-D mixture: the float32 distances of each sample to each mode, and their
# standardized copy (metrics/modes.py, torch.cdist(...) / std).
DISTANCE_BYTES = 8
# Bytes per mode besides the distances: its centre (float64 while the mixture is built, float32 kept) and
# each evaluation's counts, shares and KL terms (int64, float64) and the counts' list in summary.json.
MODE_BYTES = 64
# Bytes per pair of the exact W1/W2's points: the float64 distances, their squares and POT's transport plan.
PAIR_BYTES = 24


@dataclass
class Sizes:
    """What the config's sizes make, counted on the meta device (nothing allocated)."""

    parameters: int            # of G, D and the remedy's networks
    weight_bytes: int          # their parameters and buffers
    average_bytes: int         # G's moving average (ema.decay; ganlab/ema.py deep-copies G): 0 without one
    values: int                # numbers in one sample: 2 for a 2-D point, C x H x W for an image
    latent_dim: int
    n_modes: int | None        # a 2-D mixture's modes, which its evaluation measures every sample against
    train_per_sample: int | None     # activations one D step keeps per sample (None: the probe could not run)
    generate_per_sample: int | None  # the peak of G's forward pass without autograd, per sample


def _output_bytes(modules: list[nn.Module], call, peak: bool = False) -> int:
    """Bytes of every leaf module's outputs while `call()` runs: their sum (what autograd keeps for
    the backward pass), or with `peak` twice the largest (without autograd, a layer's input and
    output are all that is alive at once)."""
    total = largest = 0

    def hook(module, inputs, output):
        nonlocal total, largest
        for t in output if isinstance(output, (tuple, list)) else (output,):
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()
                largest = max(largest, t.numel() * t.element_size())

    handles = [m.register_forward_hook(hook) for net in modules for m in net.modules()
               if not list(m.children())]
    try:
        call()
    finally:
        for h in handles:
            h.remove()
    return 2 * largest if peak else total


def available_bytes(device: torch.device) -> int:
    """Free memory now: the GPU's for CUDA, MemAvailable (Linux) or the physical total elsewhere."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def sizes(cfg) -> Sizes | None:
    """The config's networks, data and probe steps on the meta device: shapes without memory. None when
    the build fails there in a way the real build may not (the real build then says what is wrong); a
    data file's error is raised now, as the real build would raise it."""
    from ganlab.gan import build

    meta = torch.device("meta")
    layers: set[int] = set()

    def count(module, name, param):  # every layer's weights are registered as it is made
        layers.add(id(module))
        if len(layers) > MAX_LAYERS:
            raise _TooManyLayers

    counting = torch.nn.modules.module.register_module_parameter_registration_hook(count)
    try:
        with meta:  # every tensor made inside, the datasets' too (ring(modes=10**8): its centres), is meta
            exp = build(cfg, meta)
    except _TooManyLayers:
        given = ", ".join(f"{k}={v}" for k in LAYER_KEYS if (v := OmegaConf.select(cfg, k)) is not None)
        raise ConfigError(f"{given}: the networks would have more than {MAX_LAYERS:,} layers, beyond what ganlab "
                          f"builds; lower the depths{' or remedy.madgan.k' if 'madgan' in given else ''}") from None
    except ConfigError:
        return None  # a bad value: the real build says it, in one line
    except GanlabError:
        raise  # a missing or corrupt data file: the same error the build would give, said once
    except Exception as exc:  # noqa: BLE001 - an operation without meta support: no estimate, nothing refused
        if _overflowed(exc):  # the real build would end in the same error, as a traceback
            named = _largest(cfg, "model", "remedy", "dataset")
            setting = f"{named[0]}={named[1]}" if named else "the config"
            raise ConfigError(f"{setting} makes tensors whose sizes overflow 64-bit integers; lower "
                              f"{named[0] if named else 'its sizes'}") from None
        return None
    finally:
        counting.remove()
    networks = [exp.G, exp.D, *exp.extras.values()]
    tensors = {id(t): t for net in networks for t in (*net.parameters(), *net.buffers())}  # shared ones once
    parameters = {id(p): p for net in networks for p in net.parameters()}
    train = generate = None
    with meta:
        real = torch.randn(PROBE, *exp.data.shape)  # not data.sample: image datasets load their files lazily
        z = torch.randn(PROBE, exp.latent_dim)
    try:
        train = _output_bytes([exp.G, exp.D], lambda: exp.remedy.d_loss(exp.G, exp.D, exp.loss, real, z)) // PROBE
    except Exception:  # noqa: BLE001 - a remedy that must draw its own batch (conditional ones): no estimate
        pass
    try:
        with torch.no_grad():
            generate = _output_bytes([exp.G], lambda: exp.G(z), peak=True) // PROBE
    except Exception:  # noqa: BLE001 - as above
        pass
    toy = len(exp.data.shape) == 1 and getattr(exp.data, "evaluator", None) == "toy"
    average = [] if exp.ema is None else [*exp.ema.G.parameters(), *exp.ema.G.buffers()]
    return Sizes(parameters=sum(p.numel() for p in parameters.values()),
                 weight_bytes=sum(t.numel() * t.element_size() for t in tensors.values()),
                 average_bytes=sum(t.numel() * t.element_size() for t in average),
                 values=math.prod(exp.data.shape), latent_dim=int(exp.latent_dim),
                 n_modes=int(exp.data.n_modes or 0) if toy else None, train_per_sample=train, generate_per_sample=generate)


class _TooManyLayers(BaseException):
    """Raised out of the meta build when it passes MAX_LAYERS: a BaseException, since Hydra's instantiate wraps
    every Exception of a constructor in its own."""


def _overflowed(exc: BaseException | None) -> bool:
    """Whether a failed build (or what it wraps) met a size beyond int64: torch's "Storage size calculation
    overflowed", "Overflow when unpacking long"."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if "overflow" in str(exc).lower():
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.0f} MB"


def _count(n: int) -> str:
    for size, unit in ((1e12, " trillion"), (1e9, " billion"), (1e6, " million")):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:,}"


def _largest(cfg, *groups: str) -> tuple[str, int] | None:
    """The integer setting with the largest value under `groups` (model.latent_dim=100000000 over the
    widths): the one to lower."""
    found = []

    def walk(node, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}.{k}")
        elif isinstance(node, int) and not isinstance(node, bool):
            found.append((node, prefix))

    for group in groups:
        node = OmegaConf.select(cfg, group)
        if node is not None:
            walk(OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node, group)
    if not found:
        return None
    value, key = max(found)
    return key, value


@dataclass
class _Evaluation:
    """One evaluation's bytes, by what grows them."""

    kept: int      # the samples and their codes, all held at once (eval.samples, --samples)
    forward: int   # G's forward pass: over all samples (2-D), or over eval.batch of them (images)
    modes: int     # a 2-D mixture's distances and per-mode tensors (dataset.modes)
    pairs: int     # the exact W1/W2's pairs (in the host's memory: the worker computes them with numpy)

    @property
    def device_bytes(self) -> int:
        return self.kept + self.forward + self.modes


def _evaluation(s: Sizes, cfg, n: int) -> _Evaluation:
    """An evaluation of n samples: a 2-D one generates them all at once, an image one in eval.batch chunks
    (and keeps them all)."""
    forward_n = n if s.n_modes is not None else min(int(cfg.eval.batch), n)
    kept, forward = n * (s.values * SAMPLE_BYTES + s.latent_dim * 4), forward_n * (s.generate_per_sample or 0)
    if s.n_modes is None:
        return _Evaluation(kept, forward, 0, 0)
    w = min(int(cfg.eval.w_samples), n)
    return _Evaluation(kept, forward, n * s.n_modes * DISTANCE_BYTES + s.n_modes * MODE_BYTES, w * w * PAIR_BYTES)


def check_fits(cfg, device: torch.device) -> None:
    """Refuse, in one line naming the key, sizes whose estimate exceeds the free memory: before the pre-run
    build, which would allocate the networks (and a 2-D mixture's modes) itself."""
    s = sizes(cfg)
    if s is None:
        return
    available = available_bytes(device)
    where = "GPU memory" if device.type == "cuda" else "memory"
    free = f"and {_gb(available)} is free"
    # G's moving average is one more copy of G's weights, never trained (no gradient, no moments).
    weights = TRAIN_COPIES * s.weight_bytes + s.average_bytes
    if weights > available:
        named = _largest(cfg, "model", "remedy")
        setting = f"{named[0]}={named[1]} makes" if named else "the model makes"
        raise ConfigError(f"{setting} networks of {_count(s.parameters)} parameters, which need about "
                          f"{_gb(weights)} of {where} to train (weights, gradients, optimizer moments"
                          f"{', the moving average of G' if s.average_bytes else ''}), {free}; "
                          f"lower {named[0] if named else 'its widths'}")
    train = weights + (s.train_per_sample or 0) * int(cfg.batch_size)
    if train > available:
        raise ConfigError(f"batch_size={cfg.batch_size} needs about {_gb(train)} of {where} per training step, "
                          f"{free}; lower batch_size")
    ev = _check_evaluation(s, cfg, int(cfg.eval.samples), f"eval.samples={cfg.eval.samples}", weights, available,
                           where)
    replicas = int(cfg.get("replicas", 1))
    if replicas > 1:
        # Each replica holds its networks twice over (stacked and its own), with ema.decay G's average twice too,
        # and its share of the vectorised step's activations; the evaluations run one replica at a time.
        each = (REPLICA_COPIES * s.weight_bytes + 2 * s.average_bytes
                + (s.train_per_sample or 0) * int(cfg.batch_size))
        total = replicas * each + ev.device_bytes
        if total > available:
            fit = max((available - ev.device_bytes) // max(each, 1), 0)
            raise ConfigError(f"replicas={replicas} trains {replicas:,} copies of the networks at once, which need "
                              f"about {_gb(total)} of {where} ({_gb(each)} each), {free}; lower replicas (about "
                              f"{fit:,} fit), or train the seeds as a sweep (-m seed=...)")


def _check_evaluation(s: Sizes, cfg, n: int, setting: str, weights: int, available: int,
                      where: str) -> _Evaluation:
    """Refuse an evaluation of n samples that cannot fit beside the `weights`. `setting`: the key and value
    that ask for the n samples (eval.samples=N, --samples N)."""
    ev = _evaluation(s, cfg, n)
    free = f"and {_gb(available)} is free"
    total = weights + ev.device_bytes
    if total > available:
        if ev.modes > ev.kept + ev.forward:  # the modes, not the samples: name the dataset's size
            named = _largest(cfg, "dataset")
            mixture = f"{named[0]}={named[1]}" if named else "the dataset"
            raise ConfigError(f"{mixture} makes {s.n_modes:,} modes, and an evaluation measures each of its "
                              f"{n:,} samples against each of them: about {_gb(total)} of {where}, {free}; lower "
                              f"{named[0] if named else 'the modes'}")
        if ev.forward > ev.kept and s.n_modes is None:  # images: G's forward over eval.batch samples at a time
            setting = f"eval.batch={cfg.eval.batch}"
        lower = setting.split("=")[0].split(" ")[0]
        raise ConfigError(f"{setting} needs about {_gb(total)} of {where} per evaluation, {free}; lower {lower}")
    host = available_bytes(torch.device("cpu"))
    if ev.pairs > host:
        w = min(int(cfg.eval.w_samples), n)
        raise ConfigError(f"eval.w_samples={cfg.eval.w_samples}: the exact W1/W2 between {w:,} points per side "
                          f"need about {_gb(ev.pairs)} of memory, and {_gb(host)} is free; lower eval.w_samples")
    return ev


def check_evaluation(cfg, n: int, device: torch.device, setting: str) -> None:
    """`ganlab eval RUN --samples N`: refuse, before the run is built, an evaluation of n samples that cannot
    fit (`setting`: how the command asked for them, e.g. "--samples 10000000000")."""
    s = sizes(cfg)
    if s is not None:
        _check_evaluation(s, cfg, n, setting, TRAIN_COPIES * s.weight_bytes + s.average_bytes,
                          available_bytes(device), "GPU memory" if device.type == "cuda" else "memory")
