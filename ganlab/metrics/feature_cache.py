"""The cache of real-data feature statistics, and FID from features against them.

Real-data statistics cost a full pass of the feature extractor over the reference split, and are the same
for every run that shares dataset, split, extractor (and its weights' hash) and sample count. They are kept
under `<cache>/stats/<sha256 of the key's canonical JSON>.npz`, with the key inside the file: a file whose
key differs, or that cannot be read, is recomputed rather than trusted. The real features themselves are
kept too (float32) up to 50k samples, so KID and precision/recall/density/coverage can reuse them.

The image evaluator's real-data rows (the ceiling, and the real, blurred and noised reference rows every image run
measures before its first step) are numbers of the same kind: the same for every run with the same data, seed,
classifier and metric code. `cached_rows` keeps them as JSON under `<cache>/rows/`, keyed by all of that and by a
fingerprint of the code that computes them (`source_fingerprint`), so a change to that code recomputes them.

No torch import here: the background evaluator can use it on numbers alone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ganlab.atomic import write_atomic
from ganlab.errors import GanlabError
from ganlab.metrics.frechet import feature_statistics, frechet_distance

log = logging.getLogger(__name__)

MAX_CACHED_FEATURES = 50_000
# pytorch-fid's floor: below the feature dimension (2048) the covariance is singular.
MIN_FID_SAMPLES = 2048
_warned: set[tuple[str, int]] = set()  # warn once per (metric, n): evaluations repeat every few steps


def cache_root() -> Path:
    """ganlab's cache directory: $GANLAB_CACHE if set, else ~/.cache/ganlab."""
    env = os.environ.get("GANLAB_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ganlab"


def canonical_key(key: dict) -> str:
    """Sorted, compact JSON: equal keys give equal text whatever their insertion order."""
    return json.dumps(key, sort_keys=True, separators=(",", ":"), default=str)


def statistics_path(key: dict) -> Path:
    return cache_root() / "stats" / f"{hashlib.sha256(canonical_key(key).encode()).hexdigest()}.npz"


def _read(path: Path, text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None] | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["key"]) != text:
                log.warning("%s holds statistics for another key: recomputing them", path)
                return None
            mu, sigma = data["mu"], data["sigma"]
            feats = data["features"] if "features" in data.files else None
    except Exception as exc:  # noqa: BLE001 - any unreadable file is recomputed, never trusted
        log.warning("cannot read cached statistics %s (%s): recomputing them", path, type(exc).__name__)
        return None
    d = len(mu)
    if mu.ndim != 1 or sigma.shape != (d, d) or (feats is not None and (feats.ndim != 2 or feats.shape[1] != d)):
        log.warning("cached statistics %s have inconsistent shapes: recomputing them", path)
        return None
    return mu, sigma, feats


def _write(path: Path, arrays: dict[str, np.ndarray]) -> None:
    # Readers see the old file or the whole new one (ganlab.atomic); a file object, so numpy does not
    # append another ".npz".
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, lambda f: np.savez(f, **arrays), "feature cache")
    except (OSError, GanlabError) as exc:  # a cache only: the run goes on, and computes them again next time
        log.warning("%s; the features are not cached", exc)


def cached_statistics(key: dict, compute: Callable[[], np.ndarray]
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(mu, sigma, features or None) of the real features that `compute()` returns (n x d), from the cache
    when a valid file for `key` exists. `key` should hold dataset, split, extractor id/hash, n and anything
    else the features depend on. Features come back (float32) when n <= 50,000."""
    path, text = statistics_path(key), canonical_key(key)
    if path.is_file() and (cached := _read(path, text)) is not None:
        return cached
    feats = np.asarray(compute())
    mu, sigma = feature_statistics(feats)
    kept = feats.astype(np.float32) if len(feats) <= MAX_CACHED_FEATURES else None
    arrays = {"key": np.array(text), "mu": mu, "sigma": sigma}
    if kept is not None:
        arrays["features"] = kept
    _write(path, arrays)
    return mu, sigma, kept


def source_fingerprint(*parts: str) -> str:
    """SHA-256 (16 hex digits) of ganlab's source files under `parts` (folders or .py files, relative to the
    package): the code that computes a cached number, so that any change to it makes the cache recompute."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for part in parts:
        target = package / part
        for file in sorted(target.rglob("*.py")) if target.is_dir() else [target]:
            digest.update(str(file.relative_to(package)).encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def _plain(value):
    """numpy's and torch's scalars and arrays as JSON's numbers and lists."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def rows_path(key: dict) -> Path:
    return cache_root() / "rows" / f"{hashlib.sha256(canonical_key(key).encode()).hexdigest()}.json"


def cached_rows(key: dict, compute: Callable[[], dict]) -> dict:
    """`compute()`'s JSON-able result (metric rows of real data) for `key`, from the cache when a valid file
    for `key` exists; computed and stored otherwise. A file that cannot be read or holds another key is
    recomputed, never trusted; a cache that cannot be written only costs the time again."""
    path, text = rows_path(key), canonical_key(key)
    try:
        held = json.loads(path.read_text())
        if held.get("key") == text and isinstance(held.get("rows"), dict):
            return held["rows"]
        log.warning("%s holds rows for another key: recomputing them", path)
    except FileNotFoundError:
        pass
    except (OSError, ValueError, AttributeError) as exc:  # unreadable, not JSON, or not an object
        log.warning("cannot read cached rows %s (%s): recomputing them", path, type(exc).__name__)
    rows = compute()
    payload = json.dumps({"key": text, "rows": rows}, default=_plain).encode()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, lambda f: f.write(payload), "reference-row cache")
    except (OSError, GanlabError) as exc:
        log.warning("%s; the reference rows are not cached", exc)
    # What the caller gets is what a later cached call returns: JSON's numbers (ints, floats, lists), not numpy's.
    return json.loads(payload)["rows"]


def warn_if_few_samples(n: int, what: str = "FID") -> None:
    """One-line warning when `what` uses fewer than 2,048 samples: below the feature dimension the covariance
    is not full rank (TTUR's README and pytorch-fid). TTUR also recommends at least 10,000 samples, "otherwise
    the true FID of the generator is underestimated"; the field's reference is 50k. The estimate depends on n
    in any case, so FIDs are comparable only at equal n."""
    if n < MIN_FID_SAMPLES and (what, n) not in _warned:
        _warned.add((what, n))
        log.warning("%s from %d samples (< %d, the Inception feature dimension, below which its covariance is "
                    "singular): compare it only with scores at the same n; TTUR recommends >= 10,000",
                    what, n, MIN_FID_SAMPLES)


def fid_from_features(fake_features: np.ndarray, real_mu: np.ndarray, real_sigma: np.ndarray,
                      what: str = "FID") -> float:
    """FID of generated features against cached real statistics (float64), warning (once per n) when
    n < 2,048; `what` names the score in the warning (e.g. "domain FID")."""
    fake = np.asarray(fake_features, np.float64)
    warn_if_few_samples(len(fake), what)
    return frechet_distance(*feature_statistics(fake), real_mu, real_sigma)
