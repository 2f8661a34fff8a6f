"""Fuzzing what ganlab reads back from its own files (issue 28, item 9): the cached mode classifier, the cached
real-feature statistics, and checkpoints. Random byte changes, truncations and additions, anywhere in a file or
inside one of its zip members: the file is refused in one GanlabError line (rebuilt, for the statistics cache), or
what is read is exactly what was written; it is never used with other content. A corrupt checkpoint under
`ganlab train resume=DIR` is refused in one line with every file of the run left as it was.
"""

from __future__ import annotations

import io
import shutil
import struct
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from test_fuzz_files import scratch  # one fresh directory per example
import torch
from conftest import TINY_RUN
from hypothesis import event, example, given
from hypothesis import strategies as st
from test_fuzz_config import run_cli
from test_fuzz_files import assert_one_line_naming, byte_mutations, examples, mutate

import ganlab.train
from ganlab import checkpoint
from ganlab.data.files import IDX_SHA256
from ganlab.errors import GanlabError
from ganlab.metrics import classifier as clf
from ganlab.metrics import feature_cache
from ganlab.metrics.matched_confusion import ConfusionFamily



def members(blob: bytes) -> list[tuple[int, int]]:
    """(offset, size) of each stored member's data in a zip (torch.save and np.savez write stored zips)."""
    spans = []
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        for info in archive.infolist():
            header = blob[info.header_offset: info.header_offset + 30]
            name_len, extra_len = int.from_bytes(header[26:28], "little"), int.from_bytes(header[28:30], "little")
            spans.append((info.header_offset + 30 + name_len + extra_len, info.compress_size))
    return spans


# Where a change lands: anywhere in the file, or inside one zip member's data (the pickled structure, a tensor's
# bytes, a small record), where a zip-level check may not look.
damages = st.lists(st.one_of(
    st.tuples(st.just("file"), byte_mutations()),
    st.tuples(st.just("member"), st.integers(0, 63), st.integers(0, 2**31), st.integers(1, 255)),
    st.tuples(st.just("member"), st.integers(0, 63), st.integers(0, 2**31), st.integers(1, 255)),
), min_size=1, max_size=3)


def damage(blob: bytes, changes) -> bytes:
    spans = members(blob)
    for change in changes:
        if change[0] == "file":
            blob = mutate(blob, change[1])
        else:
            _, which, at, xor = change
            offset, size = spans[which % len(spans)]
            if size and offset + size <= len(blob):
                out = bytearray(blob)
                out[offset + at % size] ^= xor
                blob = bytes(out)
    return blob


# --- the mode classifier's cache -------------------------------------------------------------------

def standard_record(split: str) -> dict:
    prefix = "train" if split == "train" else "t10k"
    return {"images": 60_000 if split == "train" else 10_000,
            "sha256": {k: v for k, v in IDX_SHA256["fashion_mnist"].items() if k.startswith(prefix)}}


@pytest.fixture(scope="module")
def classifier_file(tmp_path_factory):
    """A cached Fashion-MNIST classifier as `ganlab classifier` leaves it: weights, the standard split's record,
    and its confusion family (random, but well formed), written by save_classifier."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GANLAB_CACHE", str(cache))
        torch.manual_seed(0)
        model = clf.ModeClassifier().eval()
        generator = torch.Generator().manual_seed(1)
        confusions = torch.rand(3, 10, 10, generator=generator, dtype=torch.float64) + 0.01
        clf.use_family(model, ConfusionFamily(
            sigma=torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64), noise=torch.tensor([0.0, 0.0, 0.3],
                                                                                         dtype=torch.float64),
            signatures=torch.rand(3, 7, generator=generator, dtype=torch.float64),
            confusions=confusions / confusions.sum(2, keepdim=True), samples=torch.full((3, 10), 500)))
        model.confusion_data = standard_record("test")
        data = {"train": standard_record("train"), "test": standard_record("test"), "root": None}
        path = clf.save_classifier(model, "fashion_mnist", 0.93, {"epochs": 15, "seed": 0, "augment": "yes"},
                                   data=data)
        yield Kept(path, path.read_bytes(), loaded_content(*clf.load_classifier("fashion_mnist")))


class Kept(tuple):
    """(path, the file's bytes, what was read from it), shown short in Hypothesis's reports."""

    def __new__(cls, *items):
        return super().__new__(cls, items)

    def __repr__(self):
        return f"<{self[0].name}: {len(self[1]):,} bytes>"


def loaded_content(model, info) -> dict:
    """Everything a run takes from the cached classifier."""
    family = model.confusion_family
    return {"weights": clf.state_hash(model.state_dict()), "info": info, "trained_on": model.trained_on,
            "confusion_data": model.confusion_data,
            "family": None if family is None else {k: v.tolist() for k, v in family.to_record().items()},
            "confusion": None if model.confusion is None else model.confusion.tolist(),
            "confusion_samples": None if model.confusion_samples is None else model.confusion_samples.tolist()}


@examples(15, 2000)
@given(changes=damages)
def test_a_damaged_classifier_cache_is_refused_or_read_exactly(classifier_file, changes):
    path, intact, expected = classifier_file
    path.write_bytes(damage(intact, changes))
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("GANLAB_CACHE", str(path.parent.parent))
            try:
                got = loaded_content(*clf.load_classifier("fashion_mnist"))
            except GanlabError as exc:
                assert_one_line_naming(exc, path)
                event("refused")
                return
        event("read whole" if got == expected else "read without its confusion matrices")
        # Whole, or without its confusion matrices (a damaged key name drops them: the run measures them again).
        dropped = {**expected, "family": None, "confusion": None, "confusion_samples": None, "confusion_data": None}
        assert got in (expected, dropped), "a damaged classifier file was used with other content than was written"
    finally:
        path.write_bytes(intact)


@pytest.mark.parametrize("what", ["signatures", "accuracy", "data key"])
def test_a_changed_byte_of_the_confusion_matrices_or_the_record_is_refused(classifier_file, what):
    """Found by the property above (`make fuzz`): the file's weights were checked (their SHA-256), the rest was not,
    so a changed byte of the confusion family (here its signatures, which pick the matrix for the samples' look) or
    of the accuracy in the pickled record was used as if written so; and one in the name of the key "data" made the
    file pass for one written before its training data was recorded."""
    from test_faults import flip_a_byte

    path, intact, _ = classifier_file
    try:
        if what == "signatures":
            flip_a_byte(path, torch.load(path, weights_only=True)["confusion_family"]["signatures"])
        else:
            with zipfile.ZipFile(path) as archive:
                entries = [(info, archive.read(info.filename)) for info in archive.infolist()]
            with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
                for info, data in entries:
                    if info.filename.endswith("data.pkl") and what == "accuracy":
                        at = data.index(b"G" + struct.pack(">d", 0.93)) + 8  # BINFLOAT: its last byte
                        data = data[:at] + bytes([data[at] ^ 1]) + data[at + 1:]
                    elif info.filename.endswith("data.pkl"):  # BINUNICODE "data", the top-level key: "eata"
                        data = data.replace(b"X\x04\x00\x00\x00data", b"X\x04\x00\x00\x00eata", 1)
                    archive.writestr(info, data)
        assert torch.load(path, weights_only=True)["hash"]  # torch reads it without complaint
        with pytest.MonkeyPatch.context() as patch, pytest.raises(GanlabError) as refused:
            patch.setenv("GANLAB_CACHE", str(path.parent.parent))
            clf.load_classifier("fashion_mnist")
        assert_one_line_naming(refused.value, path, "fails the checksum of its", "force=true")
    finally:
        path.write_bytes(intact)


# --- the real-feature statistics' cache ---------------------------------------------------------------

@examples(20, 2000)
@given(changes=damages, seed=st.integers(0, 2**16))
@example(changes=[("file", ("set", 364386, 0))], seed=100)  # found by `make fuzz`: a file without its features
def test_damaged_cached_statistics_are_recomputed_or_read_exactly(tmp_path_factory, changes, seed):
    rng = np.random.default_rng(seed)
    features, fresh = rng.normal(size=(12, 3)), rng.normal(size=(12, 3)) + 5
    key = {"dataset": "fuzz", "seed": seed, "n": 12}
    with scratch(tmp_path_factory) as cache, pytest.MonkeyPatch.context() as patch:
        patch.setenv("GANLAB_CACHE", str(cache))
        written = feature_cache.cached_statistics(key, lambda: features)
        path = feature_cache.statistics_path(key)
        path.write_bytes(damage(path.read_bytes(), changes))
        calls = []
        mu, sigma, feats = feature_cache.cached_statistics(key, lambda: calls.append(1) or fresh)
        expected = feature_cache.cached_statistics({"other": seed}, lambda: fresh) if calls else written
        event("recomputed" if calls else "read whole" if feats is not None else "read without its features")
        assert np.array_equal(mu, expected[0]) and np.array_equal(sigma, expected[1])
        # The features whole, or none: a file that lost them (a damaged member name) is read as one that kept none,
        # and the callers compute them again (evaluation/image.py).
        assert feats is None or np.array_equal(feats, expected[2])
        assert feature_cache.cached_statistics(key, lambda: 1 / 0)[0] is not None  # the file is whole again


# --- checkpoints ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint_file(tmp_path_factory):
    from conftest import make_cfg

    run_dir = tmp_path_factory.mktemp("run")
    ganlab.train.run(make_cfg(*TINY_RUN, "steps=20"), run_dir)
    path = run_dir / "checkpoint.pt"
    return Kept(path, path.read_bytes(), checkpoint.content_digest(checkpoint.read(path)))


@examples(15, 2000)
@given(changes=damages)
def test_a_damaged_checkpoint_is_refused_or_read_exactly(tmp_path_factory, checkpoint_file, changes):
    _, intact, digest = checkpoint_file
    with scratch(tmp_path_factory) as directory:
        path = directory / "checkpoint.pt"
        path.write_bytes(damage(intact, changes))
        try:
            state = checkpoint.read(path)
        except GanlabError as exc:
            assert_one_line_naming(exc, path)
            event("refused")
            return
        event("read whole")
        assert checkpoint.content_digest(state) == digest, "a damaged checkpoint was read with other content"


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@examples(3, 200, fixtures=True)
@given(changes=damages)
def test_resuming_from_a_damaged_checkpoint_is_one_line_and_touches_nothing(tmp_path_factory, checkpoint_file, capsys,
                                                                           monkeypatch, changes):
    """`ganlab train ... resume=DIR` on a run whose checkpoint was damaged: one line naming the checkpoint, exit
    status 2, and every file of the run as it was; or, where the damage left the content whole, the run goes on."""
    started = []
    monkeypatch.setattr(ganlab.train, "run", lambda cfg, *args, **kwargs: started.append(cfg) or {})
    finished = checkpoint_file[0].parent  # a run stopped at step 20 of 40, as conftest's `finished`
    intact = checkpoint_file[1]
    with scratch(tmp_path_factory) as base:
        run_dir = base / "run"
        shutil.copytree(finished, run_dir)
        (run_dir / "checkpoint.pt").write_bytes(damage(intact, changes))
        before = snapshot(run_dir)
        code, out, err = run_cli(["train", *TINY_RUN, f"resume={run_dir}"], capsys)
        if code == 0:  # the damage changed no content (checked by the property above): it resumed
            assert len(started) == 1
            assert checkpoint.content_digest(checkpoint.read(run_dir / "checkpoint.pt")) == checkpoint_file[2]
            event("resumed: the damage changed no content")
            return
        event("refused")
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("ganlab: error: "), (code, err)
        assert str(run_dir / "checkpoint.pt") in lines[0] and "Traceback" not in out + err
        assert snapshot(run_dir) == before and started == []


def test_the_damage_lands_where_it_is_aimed():
    """A member change alters that member's bytes only, so the properties reach a file's insides."""
    buffer = io.BytesIO()
    torch.save({"a": torch.zeros(64), "b": torch.ones(64)}, buffer)
    blob = buffer.getvalue()
    spans = members(blob)
    for which, (offset, size) in enumerate(spans):
        changed = damage(blob, [("member", which, 3, 0x40)])
        diff = [i for i in range(len(blob)) if blob[i] != changed[i]]
        assert diff == [offset + 3 % size], (which, diff)
