"""The cache of real-data reference rows (feature_cache.cached_rows) and the image evaluator's use of it: a sweep's
runs of one seed measure the ceiling and the real, blurred and noised rows once, and get the same numbers as a
fresh measurement."""

import json

import numpy as np
import pytest
import torch
from test_eval_samples import digits  # noqa: F401 - a fixture

from ganlab.metrics import feature_cache
from ganlab.metrics.feature_cache import cached_rows, rows_path, source_fingerprint


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GANLAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def counting(value):
    calls = []

    def compute():
        calls.append(1)
        return value

    return compute, calls


def test_rows_are_computed_once_per_key_and_come_back_as_json_numbers(cache):
    compute, calls = counting({"data": {"modes": np.int64(7), "kl": np.float64(0.25), "counts": np.arange(3),
                                        "fid": float("nan")}})
    first = cached_rows({"seed": 1}, compute)
    again = cached_rows({"seed": 1}, compute)
    assert len(calls) == 1 and first["data"]["modes"] == 7 and first["data"]["counts"] == [0, 1, 2]
    assert again["data"]["kl"] == 0.25 and np.isnan(again["data"]["fid"])
    # the first call returns what later ones read: JSON's numbers, not numpy's
    assert type(first["data"]["modes"]) is int and type(first["data"]["counts"]) is list
    cached_rows({"seed": 2}, compute)  # another key: measured again
    assert len(calls) == 2


@pytest.mark.parametrize("damage", ["not json {", '{"key": "another", "rows": {}}', '["a list"]', '{"key": 1}'])
def test_a_damaged_or_foreign_file_is_recomputed_and_replaced(cache, damage):
    key = {"seed": 3}
    path = rows_path(key)
    path.parent.mkdir(parents=True)
    path.write_text(damage)
    compute, calls = counting({"data": {"modes": 5}})
    assert cached_rows(key, compute) == {"data": {"modes": 5}} and len(calls) == 1
    assert json.loads(path.read_text())["rows"] == {"data": {"modes": 5}}
    assert cached_rows(key, compute) == {"data": {"modes": 5}} and len(calls) == 1


def test_an_unwritable_cache_only_costs_the_time_again(tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("GANLAB_CACHE", str(blocker))  # the cache's folder cannot be made under a file
    compute, calls = counting({"data": {"modes": 5}})
    assert cached_rows({"seed": 4}, compute) == {"data": {"modes": 5}}
    assert cached_rows({"seed": 4}, compute) == {"data": {"modes": 5}} and len(calls) == 2
    assert "not cached" in caplog.text


def test_the_code_fingerprint_follows_the_source(tmp_path, monkeypatch):
    package = tmp_path / "pkg"
    (package / "metrics").mkdir(parents=True)
    (package / "metrics" / "a.py").write_text("x = 1\n")
    monkeypatch.setattr(feature_cache, "__file__", str(package / "metrics" / "feature_cache.py"))
    before = source_fingerprint("metrics")
    assert source_fingerprint("metrics") == before
    (package / "metrics" / "a.py").write_text("x = 2\n")
    assert source_fingerprint("metrics") != before
    one_file = source_fingerprint("metrics/a.py")
    (package / "metrics" / "b.py").write_text("y = 1\n")  # a new file in the folder: the folder's code changed
    assert source_fingerprint("metrics/a.py") == one_file and source_fingerprint("metrics") != one_file
    monkeypatch.undo()
    assert len(source_fingerprint("metrics", "evaluation", "data")) == 16  # the package's own folders


def _evaluator(root, **eval_overrides):
    from ganlab.config import compose_config
    from ganlab.evaluation import make_evaluator
    from ganlab.gan import build_data

    cfg = compose_config(["dataset=stacked_fashion_mnist", f"dataset.root={root}", "dataset.n=1000",
                          "eval.samples=600", "metrics.prdc_samples=300", "metrics.kid_subsets=4",
                          *(f"eval.{k}={v}" for k, v in eval_overrides.items())])
    data = build_data(cfg, torch.device("cpu"))
    return make_evaluator(data, 8, cfg.eval, False, torch.device("cpu"), cfg.metrics)


def _classifications(evaluator, monkeypatch):
    calls = []
    classify = evaluator._classify
    monkeypatch.setattr(evaluator, "_classify", lambda x: calls.append(len(x)) or classify(x))
    return calls


def test_a_runs_real_data_rows_are_measured_once_per_seed_and_equal_a_fresh_measurement(digits, monkeypatch):
    root, _ = digits
    first = _evaluator(root)
    calls = _classifications(first, monkeypatch)
    rows = first.data_references(torch.Generator().manual_seed(11))
    assert set(rows) == {"data", "real_blurred", "real_noised"} and len(calls) == 5  # reference, ceiling, 3 rows
    assert rows["data"]["modes_captured"] > 0

    second = _evaluator(root)  # a second run of the sweep: its own process would start the same way
    calls = _classifications(second, monkeypatch)
    consumed = torch.Generator().manual_seed(11)
    torch.rand(100, generator=consumed)  # the untrained G's evaluation draws first: the rows do not depend on it
    assert second.data_references(consumed) == rows
    assert calls == []  # neither the reference sample, the ceiling nor the rows were classified again
    assert second.reference_sample(600)["modes"] == first.reference_sample(600)["modes"]

    calls = _classifications(second, monkeypatch)
    other = second.data_references(torch.Generator().manual_seed(12))  # another seed: other real images
    assert len(calls) == 3 and other != rows


def test_the_cached_rows_equal_the_uncached_ones(digits, monkeypatch, tmp_path):
    root, _ = digits
    cached = _evaluator(root).data_references(torch.Generator().manual_seed(5))
    with monkeypatch.context() as patch:
        patch.setattr("ganlab.metrics.feature_cache.cached_rows", lambda key, compute: compute())
        fresh = _evaluator(root)
        uncached = fresh.data_references(torch.Generator().manual_seed(5))
        ceiling = fresh.reference_sample(600)
    assert set(uncached) == set(cached)
    for name, row in cached.items():  # the same numbers: JSON keeps a float exactly
        assert uncached[name] == pytest.approx(row, rel=0, abs=0, nan_ok=True), name
    assert _evaluator(root).reference_sample(600)["modes"] == ceiling["modes"]


def test_other_settings_are_another_key(digits, monkeypatch):
    root, _ = digits
    _evaluator(root).data_references(torch.Generator().manual_seed(5))
    other = _evaluator(root, samples=700)
    calls = _classifications(other, monkeypatch)
    other.data_references(torch.Generator().manual_seed(5))
    assert len(calls) == 5


def test_other_images_under_the_same_name_are_another_key(digits, tmp_path, monkeypatch):
    """The key holds the images' content: another folder of Fashion-MNIST files (or the same files changed) is
    measured afresh, never served the first folder's rows."""
    import shutil

    from test_image_data import IDX_NAMES, write_idx

    root, templates = digits
    rows = _evaluator(root).data_references(torch.Generator().manual_seed(5))
    other = tmp_path / "other"
    shutil.copytree(root, other)
    g = torch.Generator().manual_seed(1)
    labels = torch.arange(100) % 10  # the test split again, with other pixel noise
    images = ((templates[labels] + 0.4 * torch.randn(100, 28, 28, generator=g)).clamp(-1, 1) * 127.5 + 127.5).round()
    write_idx(other / "fashion_mnist" / IDX_NAMES["test"][0], images.to(torch.uint8).numpy())
    evaluator = _evaluator(other)
    calls = _classifications(evaluator, monkeypatch)
    again = evaluator.data_references(torch.Generator().manual_seed(5))
    assert len(calls) == 4  # the ceiling and the three rows: the training split's reference sample is the same
    assert again["data"] != rows["data"]
    train = ((templates[torch.arange(300) % 10] + 0.4 * torch.randn(300, 28, 28, generator=g)).clamp(-1, 1)
             * 127.5 + 127.5).round()  # and the training split changed: the reference sample's statistics too
    write_idx(other / "fashion_mnist" / IDX_NAMES["train"][0], train.to(torch.uint8).numpy())
    evaluator = _evaluator(other)
    calls = _classifications(evaluator, monkeypatch)
    evaluator.data_references(torch.Generator().manual_seed(5))
    assert len(calls) == 5
