"""The FID Inception-v3 of pytorch-fid (mseitzer/pytorch-fid, `fid_inception_v3()`), written out here.

It is torchvision's Inception-v3 layout (BasicConv2d = conv without bias + BatchNorm eps 0.001 + ReLU)
with 1008 classes, no auxiliary head, and the three changes that make it match TensorFlow's graph
`inception-2015-12-05` that TTUR's FID uses:

- the average pools of Mixed_5b-5d (InceptionA), Mixed_6b-6e (InceptionC) and Mixed_7b (first
  InceptionE) leave the zero padding out of the average (count_include_pad=False);
- the pool branch of Mixed_7c (second InceptionE) is a 3x3 max pool, not an average pool.

Module and parameter names are torchvision's, so the weights file `pt_inception-2015-12-05-6726825d.pth`
loads with strict=True. Preprocessing is pytorch-fid's resize_input=True, normalize_input=True: images in
[0, 1] (quantized to uint8 levels first), bilinear resize to 299 x 299 (align_corners=False), then 2x - 1.

Checked without the weights: tests/test_fid_reference.py gives this network and torch-fidelity's Inception (an
independent port of the same graph) the same random weights, and their features agree (docs/images.md).

Weights lookup: an explicit path (config `metrics.fid.weights`), then `<cache>/weights/<file>` (cache =
$GANLAB_CACHE or ~/.cache/ganlab), then a download into the cache, checked against the file's SHA-256.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ganlab.errors import GanlabError
from ganlab.metrics.feature_cache import cache_root

log = logging.getLogger(__name__)

WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{WEIGHTS_FILE}"
# Full SHA-256 of that release file. The name carries its first 8 hex digits (torch.hub's convention, which
# pytorch-fid's load_state_dict_from_url checks); the full digest is the one public code pins for the same
# URL (genforce/genforce metrics/inception.py, and others pinning the 95,628,359-byte file), and it agrees
# with the 8-digit prefix. Not re-derived here: the file is not on this machine.
WEIGHTS_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
DOWNLOAD_TIMEOUT_S = 60.0
EXTRACTOR_NAME = "pytorch-fid-inception-v3"
FEATURE_DIM, NUM_CLASSES, INPUT_SIZE = 2048, 1008, 299


# ---------------------------------------------------------------------------------------------- network


class BasicConv2d(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int], stride: int = 1,
                 padding: int | tuple[int, int] = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)  # TF's epsilon, not PyTorch's 1e-5

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool(x: Tensor) -> Tensor:
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)  # TF leaves the padding out


class InceptionA(nn.Module):  # Mixed_5b, 5c, 5d
    def __init__(self, cin: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, 1)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, 1)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
                          self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          self.branch_pool(_avg_pool(x))], 1)


class InceptionB(nn.Module):  # Mixed_6a: 35x35 -> 17x17
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch3x3(x), self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          F.max_pool2d(x, 3, stride=2)], 1)


class InceptionC(nn.Module):  # Mixed_6b-6e: factorized 7x7
    def __init__(self, cin: int, c7: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 192, 1)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d7 = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                      self.branch7x7dbl_5):
            d7 = layer(d7)
        return torch.cat([self.branch1x1(x), b7, d7, self.branch_pool(_avg_pool(x))], 1)


class InceptionD(nn.Module):  # Mixed_7a: 17x17 -> 8x8
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionE(nn.Module):  # Mixed_7b (average pool), Mixed_7c (max pool, as in the TF graph)
    def __init__(self, cin: int, max_pool: bool) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(cin, 320, 1)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_1(x)
        d3 = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg_pool(x)
        return torch.cat([self.branch1x1(x), self.branch3x3_2a(b3), self.branch3x3_2b(b3),
                          self.branch3x3dbl_3a(d3), self.branch3x3dbl_3b(d3), self.branch_pool(pooled)], 1)


class FIDInceptionV3(nn.Module):
    """forward(images in [0, 1], N x 1|3 x H x W) -> (pool3 features N x 2048, logits N x 1008).

    The logits are pool3 @ fc.weight.T without fc.bias: Salimans' Inception Score code takes the matrix
    of `softmax/logits/MatMul` and leaves the bias out, and torch-fidelity's `logits_unbiased` does the
    same. `fc.bias` is still a parameter, so the weights file loads strictly.
    """

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, 32)
        self.Mixed_5c = InceptionA(256, 64)
        self.Mixed_5d = InceptionA(288, 64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, 128)
        self.Mixed_6c = InceptionC(768, 160)
        self.Mixed_6d = InceptionC(768, 160)
        self.Mixed_6e = InceptionC(768, 192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, max_pool=False)
        self.Mixed_7c = InceptionE(2048, max_pool=True)
        self.fc = nn.Linear(FEATURE_DIM, NUM_CLASSES)
        self.weights_sha256: str | None = None  # set by load_fid_inception: the loaded file's digest

    def extractor_id(self) -> str:
        """Names the extractor and its exact weights, for summary.json and the statistics cache key."""
        return f"{EXTRACTOR_NAME}:sha256={self.weights_sha256 or state_dict_sha256(self)}"

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = preprocess(x)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        pool3 = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return pool3, pool3 @ self.fc.weight.T


# ---------------------------------------------------------------------------------------- preprocessing


def quantize(x: Tensor) -> Tensor:
    """Generator output in [-1, 1] -> the uint8 level a saved PNG would hold, / 255 (float in [0, 1]).

    Rounds like torchvision's save_image (x * 255 + 0.5, truncated), so FID sees what files would give."""
    return torch.floor((x.clamp(-1, 1) + 1) * 127.5 + 0.5) / 255


def preprocess(x: Tensor) -> Tensor:
    """pytorch-fid's input path: [0, 1] (or uint8) images -> 3 channels, 299 x 299 bilinear, [-1, 1]."""
    if x.dtype == torch.uint8:
        x = x.float() / 255
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"images must be N x 1|3 x H x W, got shape {tuple(x.shape)}")
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)  # grayscale: the same level in R, G and B
    x = F.interpolate(x.float(), size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
    return 2 * x - 1


# ------------------------------------------------------------------------------------------------ weights


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def state_dict_sha256(model: nn.Module) -> str:
    """A digest of the weights themselves (keys, dtypes, shapes, bytes): the id of weights not from a file."""
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        t = value.detach().cpu().contiguous()
        digest.update(f"{key}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.numpy().tobytes())
    return digest.hexdigest()


def weights_cache_path() -> Path:
    return cache_root() / "weights" / WEIGHTS_FILE


def _offline_error(dest: Path, url: str, reason: object) -> GanlabError:
    reason = " ".join(str(reason).split())  # one line, whatever the OS says
    return GanlabError(f"FID Inception weights {WEIGHTS_FILE} are missing and could not be downloaded ({reason}): "
                       f"download {url} and put it at {dest}, or set metrics.fid.weights=<path to it>")


def download_weights(dest: Path) -> Path:
    """Fetch WEIGHTS_URL into `dest`, verified and atomically (ganlab.data.files.download_verified), so a
    partial or wrong download never sits at `dest`. URL, hash and timeout are read from the module at
    call time (tests monkeypatch them)."""
    from ganlab.data.files import download_verified

    url, expected = WEIGHTS_URL, WEIGHTS_SHA256
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        download_verified(url, dest, expected, f"FID Inception weights {WEIGHTS_FILE}", timeout=DOWNLOAD_TIMEOUT_S)
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:  # timeouts are OSErrors
        raise _offline_error(dest, url, getattr(exc, "reason", exc)) from exc
    log.info("downloaded the FID Inception weights to %s", dest)
    return dest


def resolve_weights(weights: str | os.PathLike | None) -> Path:
    """The weights file to use: the explicit path, else the cache, else a fresh download into the cache."""
    if weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise GanlabError(f"metrics.fid.weights={weights} is not a file: point it at {WEIGHTS_FILE} "
                              f"(from {WEIGHTS_URL}), or leave it empty to use {weights_cache_path()}")
        return path
    dest = weights_cache_path()
    return dest if dest.is_file() else download_weights(dest)


def load_state_dict_lenient(model: nn.Module, state: dict[str, Tensor]) -> None:
    """Strict load that also takes files without BatchNorm's `num_batches_tracked` buffers.

    BatchNorm fills that key in itself only for files without module metadata or with BatchNorm version < 2
    (saved before torch 0.4.1); a state dict saved with version-2 metadata but without the keys fails a strict
    load. It is a training counter, unused in eval mode, so missing ones are set to 0 here, and everything
    else must match exactly. (Whether pytorch-fid's file has them could not be checked here: either loads.)"""
    state = dict(state)
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros_like(value)
    model.load_state_dict(state, strict=True)


def load_fid_inception(weights: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> FIDInceptionV3:
    """The FID Inception-v3 with pytorch-fid's weights, in eval mode without gradients, on `device`.

    A file found in the cache must have WEIGHTS_SHA256 (else GanlabError); an explicit path may be another
    port, so it is only warned about, and its own digest becomes the extractor id either way."""
    path = resolve_weights(weights)
    digest = sha256_file(path)
    if digest != WEIGHTS_SHA256:
        if not weights:
            raise GanlabError(f"{path} has SHA-256 {digest}, not {WEIGHTS_SHA256}: delete it (it is re-downloaded) "
                              f"or replace it with {WEIGHTS_URL}")
        log.warning("%s is not pytorch-fid's %s (SHA-256 %s): its FIDs are not comparable with published ones",
                    path, WEIGHTS_FILE, digest[:16])
    model = FIDInceptionV3()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        load_state_dict_lenient(model, state)
    except (RuntimeError, ValueError, OSError, EOFError, AttributeError, TypeError) as exc:
        raise GanlabError(f"{path} does not hold the FID Inception-v3 state dict ({type(exc).__name__}): "
                          f"use {WEIGHTS_FILE} from {WEIGHTS_URL}") from exc
    model.weights_sha256 = digest
    return model.to(device).eval().requires_grad_(False)


# -------------------------------------------------------------------------------------------- extraction


def _batches(images: Tensor | np.ndarray, batch_size: int) -> Iterator[Tensor]:
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        yield chunk if isinstance(chunk, Tensor) else torch.from_numpy(np.ascontiguousarray(chunk))


def features(model: FIDInceptionV3, images: Tensor | np.ndarray, batch_size: int = 200,
             device: str | torch.device | None = None,
             return_logits: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """pool3 features (n x 2048, float64) of uint8 images or float images in [0, 1], N x C x H x W, in batches
    on `device` (default: the model's), without gradients and with autocast off (fp32 features, as the
    reference). With return_logits, also the n x 1008 logits for the Inception Score."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    feats, logits = [], []
    with torch.no_grad(), torch.autocast(device.type, enabled=False):
        for batch in _batches(images, batch_size):
            batch = batch.to(device)
            if batch.is_floating_point() and (batch.min() < 0 or batch.max() > 1):
                raise ValueError("float images must lie in [0, 1]: quantize generator output with quantize() first")
            f, lg = model(batch)
            feats.append(f.double().cpu())
            if return_logits:
                logits.append(lg.double().cpu())
    out = torch.cat(feats).numpy() if feats else np.zeros((0, FEATURE_DIM))
    if return_logits:
        return out, (torch.cat(logits).numpy() if logits else np.zeros((0, NUM_CLASSES)))
    return out
