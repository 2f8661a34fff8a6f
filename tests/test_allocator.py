"""ganlab/allocator.py: a process keeps freed large blocks for the next tensor of that size instead of
page-faulting fresh zeroed memory in for every one (an image evaluation's 150 MB activations). Counted in
page faults, not seconds: each run in a fresh process, as a ganlab command's would."""

import json
import platform
import subprocess
import sys

import pytest

PAGES = 1500 * 32 * 28 * 28 * 4 // 4096  # one activation of the classifier's first layer on a chunk, in 4 KiB pages

PROBE = """
import json, resource
import torch
from ganlab.allocator import keep_freed_memory
applied = keep_freed_memory()
assert keep_freed_memory() == applied  # once per process, the same answer
torch.set_num_threads(1)
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
# The mode classifier's first layer on one evaluation chunk (500 stacked samples: 1,500 grey images)
conv = torch.nn.Conv2d(1, 32, 3, padding=1).to(memory_format=torch.channels_last)
x = torch.rand(1500, 1, 28, 28).contiguous(memory_format=torch.channels_last)
with torch.no_grad():
    conv(x).relu()  # the first chunk pays its pages either way
    before = faults()
    for _ in range(10):
        conv(x).relu()  # two 150 MB activations, made and freed
print(json.dumps({"applied": applied, "faults": faults() - before}))
"""


def probe(**env) -> dict:
    import os

    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env={**os.environ, **env},
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt's thresholds are glibc's: elsewhere ganlab "
                                                              "leaves malloc as it is")
def test_freed_large_blocks_are_reused_instead_of_faulted_in_again():
    kept, default = probe(GANLAB_KEEP_FREED_MEMORY="1"), probe(GANLAB_KEEP_FREED_MEMORY="0")
    assert kept["applied"] and not default["applied"]
    # malloc as it is: every activation is a fresh mmap, all its pages faulted in again (measured: 20 x PAGES)
    assert default["faults"] > 15 * PAGES
    # kept: the chunks reuse freed heap (measured: PAGES + 1 alone, 2 x PAGES + 1 beside the suite's other work)
    assert kept["faults"] <= 4 * PAGES


def test_every_image_evaluator_keeps_freed_memory_and_nothing_else_asks():
    """The image evaluator calls it before its first evaluation; the 2-D runs leave malloc as it is (their tiny
    tensors gain nothing, and the tests' 2-D runs were 5-9 % slower with it)."""
    import inspect

    from ganlab import cli, launch
    from ganlab.evaluation import image, toy, worker

    assert "keep_freed_memory()" in inspect.getsource(image.ImageEvaluator.__init__)
    for module in (cli, launch, toy, worker):
        assert "keep_freed_memory" not in inspect.getsource(module), module.__name__
