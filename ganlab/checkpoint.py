"""Full-state checkpoints: everything a run needs to go on as if it had never stopped.

A checkpoint holds every network (the remedy's extra networks included), every optimizer, the
step, every RNG state (torch CPU and CUDA, numpy, python), the loop's bookkeeping (mode history,
losses since the last log tick) and the resolved config. Non-tensor state is kept in plain types,
so `torch.load(weights_only=True)` reads it and no pickled object is ever needed.

Writes are atomic: a temporary file in the same directory, fsync, then rename over the old
checkpoint, which stays whole until the new one is complete. A failed write (full disk, no
permission) leaves the previous checkpoint untouched and says so in one line.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import torch

from ganlab.errors import GanlabError

FORMAT = 1
NAME = "checkpoint.pt"
# Keys that only say how long or how often: a resume may change them.
RUN_LENGTH_KEYS = ("steps", "eval.every", "log.every", "checkpoint.every", "eval.background", "resume",
                   "resume_force")


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


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["internal"]), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(path: Path, exp, step: int, loop: dict, config: dict) -> None:
    """Write the full state of `exp` (a train.Experiment) at `step`, atomically."""
    payload = {
        "format": FORMAT, "step": step,
        "G": exp.G.state_dict(), "D": exp.D.state_dict(),
        "g_opt": exp.g_opt.state_dict(), "d_opt": exp.d_opt.state_dict(),
        "extras": {name: module.state_dict() for name, module in exp.extras.items()},
        "extra_opts": {name: opt.state_dict() for name, opt in exp.extra_opts.items()},
        "rng": rng_state(), "loop": loop,
        "config": json.dumps(config, sort_keys=True),  # a string: plain, and compared key by key on resume
    }
    write_atomic(path, payload)


def write_atomic(path: Path, payload: dict) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise GanlabError(f"cannot write checkpoint {path}: {exc.strerror or exc}; "
                          "the previous checkpoint, if any, is intact") from None


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (POSIX: the directory entry lives in the directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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
    return state


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


def differing_keys(saved: dict, current: dict, ignore: tuple[str, ...] = RUN_LENGTH_KEYS) -> list[str]:
    """Dotted config keys whose values differ between two resolved configs, run-length keys aside."""
    a, b = _flatten(saved), _flatten(current)
    return sorted(k for k in set(a) | set(b)
                  if a.get(k) != b.get(k) and not any(k == i or k.startswith(i + ".") for i in ignore))


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
