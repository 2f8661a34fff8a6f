"""Full-state checkpoints: everything a run needs to go on as if it had never stopped.

A checkpoint holds every network (the remedy's extra networks included), every optimizer, the
step, every RNG state (torch CPU and CUDA, numpy, python), the loop's bookkeeping (mode history,
losses since the last log tick), the moving average of G when `ema.decay` asks for one, and the
resolved config. Non-tensor state is kept in plain types,
so `torch.load(weights_only=True)` reads it and no pickled object is ever needed.

Writes are atomic (ganlab.atomic): a temporary file in the same directory, fsync, then rename over
the old checkpoint, which stays whole until the new one is complete. A failed write (full disk, no
permission) leaves the previous checkpoint untouched and says so in one line.

Each checkpoint carries a sha256 of its whole content, checked on every read: a bit flipped on disk
or in a copy is refused instead of resuming from (or evaluating) silently wrong weights. Only a
healthy state is saved (`unhealthy`): a diverging run keeps its last good checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
from pathlib import Path

import numpy as np
import torch

from ganlab import atomic
from ganlab.config import ADDED_KEYS, RESUMABLE_ROLES, keys_with
from ganlab.devices import device_index, device_kind
from ganlab.errors import GanlabError

log = logging.getLogger(__name__)

# 2: the content checksum (CHECKSUM_KEY). Format 1 files hold none and still load, with a warning.
FORMAT = 2
CHECKSUM_KEY = "sha256"
# The largest |parameter| a checkpoint may hold. Healthy runs stay far below it: max |w| is 0.73 after
# 20 steps of the tiny test run, and 0.79 to 19.1 over the 38 checkpoints (up to 25k steps) of the toy
# reproductions (PacGAN and VEEGAN setups, all their remedies). An lr=1e30 step jumps to ~1e30 at
# once; a run creeping past 1e6 is diverging, its losses about to overflow. Optimizer states are
# only required finite: Adam's step count alone reaches 25,000.
WEIGHT_BOUND = 1e6
NAME = "checkpoint.pt"
# The keys a resume may change (how long, when measured, how the work is spread; config.Role): a change of
# any other key is another experiment, refused unless resume_force=true.
RESUMABLE_KEYS = keys_with(*RESUMABLE_ROLES)


def rng_state() -> dict:
    """Every RNG the run draws from, as tensors and plain numbers."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
             "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64),
                        "gauss_next": gauss_next}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, trained_on: str | None = None, device: torch.device | None = None) -> None:
    """Put back every RNG of `state`. A run trained on one GPU (`trained_on`, its config's device: cuda:1) and
    resumed on another (`device`: cuda:0) takes its GPU's stream along; CUDA states of GPUs this machine
    lacks (a checkpoint of a 2-GPU process resumed on 1 GPU) are left out, not an error."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["internal"]), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        saved, count = list(state["cuda"]), torch.cuda.device_count()
        if device is not None and device.type == "cuda" and trained_on is not None and device_kind(trained_on) == "cuda":
            source = device_index(trained_on)
            target = device.index if device.index is not None else torch.cuda.current_device()
            if source < len(saved) and target < count:
                saved += [None] * (target + 1 - len(saved))
                saved[target] = state["cuda"][source]  # the run's own stream, on the GPU it continues on
        for index, gpu_state in enumerate(saved[:count]):
            if gpu_state is not None:
                torch.cuda.set_rng_state(gpu_state, index)


def save(path: Path, exp, step: int, loop: dict, config: dict, rng: dict | None = None) -> None:
    """Write the full state of `exp` (a gan.GAN) at `step`, atomically. `rng`: the RNG states to
    resume with (default: the global ones, which a single run trains from)."""
    payload = {
        "format": FORMAT, "step": step,
        "G": exp.G.state_dict(), "D": exp.D.state_dict(),
        "g_opt": exp.g_opt.state_dict(), "d_opt": exp.d_opt.state_dict(),
        "extras": {name: module.state_dict() for name, module in exp.extras.items()},
        "extra_opts": {name: opt.state_dict() for name, opt in exp.extra_opts.items()},
        "rng": rng_state() if rng is None else rng, "loop": loop,
        "config": json.dumps(config, sort_keys=True),  # a string: plain, and compared key by key on resume
    }
    average = getattr(exp, "ema", None)  # the moving average of G (ema.decay), or None
    if average is not None:
        payload["G_ema"] = average.G.state_dict()
    payload[CHECKSUM_KEY] = content_digest(payload)
    write_atomic(path, payload)


def write_atomic(path: Path, payload: dict, what: str = "checkpoint") -> None:
    """torch.save `payload` to `path` atomically; a failed write is one GanlabError line."""
    atomic.write_atomic(path, lambda f: torch.save(payload, f), what)


def content_digest(node) -> str:
    """sha256 of a checkpoint's content: every tensor's dtype, shape and bytes and every plain value,
    dicts walked in sorted key order, so it is the same after a torch.save/torch.load round trip
    (any device, any memory layout) and changes with any bit of the data."""
    digest = hashlib.sha256()
    _feed(digest, node)
    return digest.hexdigest()


def _feed(digest, node) -> None:
    # Every item is tagged with its kind and length: no two different contents feed the same bytes.
    if isinstance(node, torch.Tensor):
        flat = node.detach().cpu().contiguous().reshape(-1)
        raw = flat.view(torch.uint8).numpy()  # the raw bytes, whatever the dtype (bfloat16 included)
        digest.update(f"T{flat.dtype}{tuple(node.shape)}{raw.nbytes}:".encode())
        digest.update(raw)
    elif isinstance(node, dict):
        digest.update(f"D{len(node)}:".encode())
        for key in sorted(node, key=_plain):
            digest.update(_plain(key))
            _feed(digest, node[key])
    elif isinstance(node, (list, tuple)):  # one kind: a tuple may come back as either
        digest.update(f"L{len(node)}:".encode())
        for item in node:
            _feed(digest, item)
    else:
        digest.update(_plain(node))


def _plain(value) -> bytes:
    if value is None:
        text = "N"
    elif isinstance(value, bool):  # before int: True is an int too
        text = f"B{int(value)}"
    elif isinstance(value, int):
        text = f"I{int(value)}"
    elif isinstance(value, float):
        text = f"F{float(value).hex()}"  # exact, NaN and -0.0 included
    elif isinstance(value, str):
        text = f"S{len(value)}:{value}"
    else:
        raise TypeError(f"a checkpoint holds only tensors and plain values, not {type(value).__name__}")
    return text.encode()


def read(path: Path) -> dict:
    """The checkpoint's contents, or one clear GanlabError (missing, truncated, corrupt)."""
    path = Path(path)
    if not path.is_file():
        raise GanlabError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - zip, pickle or torch errors alike: the file is unusable
        raise GanlabError(f"checkpoint {path} is truncated or corrupt (torch cannot read it); "
                          "resume from an intact checkpoint") from None
    if not isinstance(state, dict) or not {"step", "G", "D", "g_opt", "d_opt"} <= set(state):
        raise GanlabError(f"checkpoint {path} is not a ganlab checkpoint (its entries: "
                          f"{sorted(state) if isinstance(state, dict) else type(state).__name__})")
    expected = state.pop(CHECKSUM_KEY, None)
    if expected is None:
        # Format 1 (before checksums): long runs left such files on disk; they stay usable.
        log.warning("checkpoint %s holds no content checksum (written before checkpoint format 2); "
                    "loading it unverified", path)
        return state
    try:
        intact = content_digest(state) == expected
    except (TypeError, RuntimeError):  # a value no ganlab checkpoint holds: changed after writing too
        intact = False
    if not intact:
        raise GanlabError(f"checkpoint {path} is corrupt: its content checksum does not match (bytes changed "
                          "after it was written); resume from an intact copy")
    return state


def unhealthy(exp) -> str | None:
    """What makes the state of `exp` (a gan.GAN) unfit to checkpoint, or None: a parameter,
    buffer or optimizer state that is not finite, or a parameter beyond WEIGHT_BOUND. Losses can
    stay finite for a while after the weights blow up (a saturated D), so the weights are checked
    themselves: resuming from such a state only diverges again."""
    checks = []  # (what, tensor, bounded)
    average = getattr(exp, "ema", None)
    averaged = {} if average is None else {"G's moving average": average.G}
    for network, module in {**exp.networks(), **averaged}.items():
        checks += [(f"{network}'s parameter {name}", p, True) for name, p in module.named_parameters()]
        checks += [(f"{network}'s buffer {name}", b, False) for name, b in module.named_buffers()]
    optimizers = {"G": exp.g_opt, "D": exp.d_opt, **exp.extra_opts}
    for network, opt in optimizers.items():
        for index, values in opt.state_dict()["state"].items():
            checks += [(f"{network}'s optimizer state {key} (of parameter {index})", v, False)
                       for key, v in values.items() if isinstance(v, torch.Tensor)]
    for what, tensor, bounded in checks:
        if not tensor.is_floating_point() or tensor.numel() == 0:  # integers are always finite
            continue
        peak = float(tensor.detach().abs().amax())  # NaN propagates through amax
        if not math.isfinite(peak):
            return f"{what} holds {'NaN' if math.isnan(peak) else 'inf'}"
        if bounded and peak > WEIGHT_BOUND:
            return f"{what} reached |w| = {peak:.3g}, beyond {WEIGHT_BOUND:.0e}"
    return None


def load_into(state: dict, exp, path: Path) -> None:
    """Fill a freshly built experiment's networks and optimizers from a checkpoint's state."""
    differ = sorted(set(exp.extras) ^ set(state.get("extras", {})))
    if differ:
        raise GanlabError(f"checkpoint {path} does not match the run's remedy: extra networks {differ} differ")
    try:
        exp.G.load_state_dict(state["G"])
        exp.D.load_state_dict(state["D"])
        _load_optimizer(exp.g_opt, state["g_opt"])
        _load_optimizer(exp.d_opt, state["d_opt"])
        for name, module in exp.extras.items():
            module.load_state_dict(state["extras"][name])
            _load_optimizer(exp.extra_opts[name], state["extra_opts"][name])
        if getattr(exp, "ema", None) is not None:
            if "G_ema" in state:
                exp.ema.G.load_state_dict(state["G_ema"])
            else:  # ema.decay set on a resume (resume_force=true) of a run that had none: it starts from G here
                log.warning("checkpoint %s holds no moving average of G: ema.decay starts it from G at step %s",
                            path, state.get("step"))
                exp.ema.reset()
    except (KeyError, RuntimeError, ValueError) as exc:
        raise GanlabError(f"checkpoint {path} does not match the run's model or config: "
                          f"{str(exc).splitlines()[0][:200]}") from None


def _load_optimizer(opt, state: dict) -> None:
    """The optimizer's moments and step counts from the checkpoint, its settings (lr, betas, ...)
    from the config: they are equal unless resume_force=true let the config change them, and then
    the new settings are what the user asked for (torch alone would restore the old ones)."""
    settings = [{k: v for k, v in group.items() if k != "params"} for group in opt.param_groups]
    opt.load_state_dict(state)
    for group, fresh in zip(opt.param_groups, settings):
        group.update(fresh)


def differing_keys(saved: dict, current: dict, ignore: tuple[str, ...] = RESUMABLE_KEYS) -> list[str]:
    """Dotted config keys whose values differ between two resolved configs, the keys a resume may change aside."""
    a, b = _flatten(saved), _flatten(current)
    a.update({k: b[k] for k, old in ADDED_KEYS.items() if k not in a and k in b and b[k] == old})
    for flat in (a, b):  # another GPU is no other run: cuda:1's RNG streams move to cuda:0 (set_rng_state)
        if "device" in flat:
            flat["device"] = device_kind(flat["device"])
    return sorted(k for k in set(a) | set(b)
                  if a.get(k) != b.get(k) and not any(k == i or k.startswith(i + ".") for i in ignore))


def shown_differences(saved: dict, current: dict, keys: list[str], most: int = 8) -> str:
    """`key (X in the checkpoint, Y now)` for the first `most` of `keys`, values as a config override writes them:
    what a user repeats to resume. A key the checkpoint's config lacks shows the value of the runs before it
    existed (config.ADDED_KEYS), else `unset`."""
    a, b = _flatten(saved), _flatten(current)

    def value(flat: dict, key: str) -> str:
        if key not in flat:
            return _override_text(ADDED_KEYS[key]) if key in ADDED_KEYS else "unset"
        return _override_text(flat[key])

    shown = ", ".join(f"{k} ({value(a, k)} in the checkpoint, {value(b, k)} now)" for k in keys[:most])
    return shown + (f" and {len(keys) - most} more" if len(keys) > most else "")


def _override_text(value) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _flatten(node, prefix: str = "") -> dict:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def find(path: str | Path) -> Path:
    """The checkpoint a `resume=PATH` names: the file itself, or the one in a run directory."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / NAME
        if not path.is_file():
            raise GanlabError(f"resume: {path.parent} holds no {NAME}; is it a ganlab run directory?")
        return path
    if not path.exists():
        raise GanlabError(f"resume: no run directory or checkpoint at {path}")
    return path
