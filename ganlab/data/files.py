"""Data files: where they live, and fetching them from known mirrors with a verified SHA-256.

A file is looked up under `<root>/<dataset>/` (and in read-only system copies), else downloaded
once; bytes whose SHA-256 differs from the registry's are never kept. Offline, the one-line
error names the file, the path to put it at and the URL to get it from.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ganlab.errors import GanlabError, WriteError

TIMEOUT = 60.0  # seconds without data before a mirror counts as unreachable; tests lower it
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Remote:
    """A dataset's files: name -> SHA-256 of the upstream bytes (None: no verified hash, so the file
    is never downloaded), the mirrors' base URLs tried in order, and read-only local copies."""

    title: str
    files: dict[str, str | None]
    mirrors: tuple[str, ...]
    system_dirs: tuple[str, ...] = field(default=())


REGISTRY: dict[str, Remote] = {
    # SHA-256 and sizes from tensorflow/datasets tensorflow_datasets/url_checksums/mnist.txt (the cvdf
    # mirror; its sizes 9912422/28881/1648877/4542 are LeCun's originals). The ossci mirror serves the
    # same bytes (torchvision checks LeCun's MD5s against it). The same four hashes appear in many
    # independent loaders.
    "mnist": Remote(
        "MNIST",
        {
            "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        },
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/"),
    ),
    # SHA-256 from tensorflow/datasets tensorflow_datasets/url_checksums/fashion_mnist.txt (sizes
    # 26421880/29515/4422102/5148, the upstream release; the same hashes sit next to Zalando's MD5s
    # 8d4fb7e6.../25c81989.../bef4ecab.../bb300cfd... in other loaders).
    # Debian's dataset-fashion-mnist is searched too. Its .gz files are re-compressed, so their bytes
    # (and sizes) differ from upstream and are NOT checked against these hashes; the IDX reader
    # validates their content (magic, dims, length) instead.
    "fashion_mnist": Remote(
        "Fashion-MNIST",
        {
            "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        },
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        ("/usr/share/datasets/fashion-mnist",),
    ),
    # SHA-256 from tensorflow/datasets tensorflow_datasets/url_checksums/cifar10.csv (the python
    # version; the current cifar10.txt lists the binary version instead), the same as keras'
    # datasets/cifar10.py file_hash; the archive is 170,498,071 bytes, MD5 c58f30108f718f92721af3b95e74349a.
    "cifar10": Remote(
        "CIFAR-10",
        {"cifar-10-python.tar.gz": "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"},
        ("https://www.cs.toronto.edu/~kriz/",),
    ),
}


# SHA-256 of the decompressed IDX files: the bytes `images.read_idx` reads, whatever their compression (Debian's
# re-compressed Fashion-MNIST gives the same bytes: their MD5s are those torchvision lists for the raw files,
# f4a8712d.../9018921c.../8181f547.../15d48437...). They decide whether data is the full standard split (60,000
# train / 10,000 test images), the only data the cached mode classifier is trained on (metrics/classifier.py).
# MNIST's: the values other loaders check after gunzipping the cvdf files above (measured nowhere here: no MNIST).
IDX_SHA256: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
}
STANDARD_IMAGES = {"train": 60_000, "test": 10_000}  # the sizes of those splits, for messages


def data_root(root: str | os.PathLike | None = None) -> Path:
    """`root` if given, else $GANLAB_DATA, else ~/.cache/ganlab/data."""
    chosen = root or os.environ.get("GANLAB_DATA") or Path.home() / ".cache" / "ganlab" / "data"
    return Path(chosen).expanduser()


def fetch(dataset: str, filename: str, root: str | os.PathLike | None = None) -> Path:
    """The local path of a registered file: found under `<root>/<dataset>/` or a system copy, else
    downloaded there (verified, atomically). Raises GanlabError with the fix when it cannot."""
    remote = REGISTRY.get(dataset)
    if remote is None or filename not in remote.files:
        raise GanlabError(f"unknown data file {dataset}/{filename}; known datasets: {', '.join(REGISTRY)}")
    directory = data_root(root) / dataset
    path = directory / filename
    if path.is_file():
        return path
    for system in remote.system_dirs:  # e.g. a Debian package (not re-verified: see REGISTRY)
        if (Path(system) / filename).is_file():
            return Path(system) / filename
    urls = [base + filename for base in remote.mirrors]
    fix = f"download {urls[0]} and put it at {path}, or set dataset.root / $GANLAB_DATA"
    expected = remote.files[filename]
    if expected is None:  # never accept bytes we cannot verify
        raise GanlabError(f"{remote.title} file {filename} is not in {directory} and has no verified checksum to "
                          f"download it with: {fix}")
    given = root or os.environ.get("GANLAB_DATA")
    if given and not data_root(root).is_dir():  # a typo must not leave a new directory tree behind
        which = "dataset.root" if root else "$GANLAB_DATA"
        raise GanlabError(f"{which}={given} does not exist; create it first, or leave {which} unset to use "
                          f"{Path.home() / '.cache' / 'ganlab' / 'data'}")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WriteError(f"cannot create the data directory {directory}: {exc.strerror or exc}; set dataset.root "
                         "or $GANLAB_DATA to a writable directory") from None
    problems = []
    for url in urls:
        try:
            download_verified(url, path, expected, f"{remote.title} {filename}")
            return path
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:  # timeouts are OSErrors
            problems.append(str(getattr(exc, "reason", None) or exc).replace("\n", " "))
    raise GanlabError(f"{remote.title} file {filename} is not in {directory} and cannot be downloaded "
                      f"(offline? {problems[0]}): {fix}")


def download_verified(url: str, path: Path, sha256: str, label: str, timeout: float | None = None) -> None:
    """Stream `url` to a temporary file next to `path`, hashing as it goes; keep it only if the hash
    matches (os.replace: a reader never sees a partial file), else GanlabError naming both hashes.
    Network errors (urllib's, timeouts) propagate for the caller to word. The one downloader: data
    files here, the FID Inception weights (metrics/inception.py)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout or TIMEOUT) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with _progress(label, total) as advance:
                while chunk := response.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    advance(len(chunk))
        got = digest.hexdigest()
        if got != sha256:
            raise GanlabError(f"downloaded {path.name} from {url} has SHA-256 {got}, expected {sha256}, so it was "
                              f"not cached (deleted). Retry later, or put a verified copy at {path}")
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@contextlib.contextmanager
def _progress(label: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on a terminal; silent otherwise (logs, CI, tests)."""
    if not sys.stderr.isatty():
        yield lambda n: None
        return
    import rich.progress as rp
    from rich.console import Console

    columns = (rp.TextColumn("{task.description}"), rp.BarColumn(), rp.DownloadColumn(), rp.TransferSpeedColumn())
    with rp.Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(f"downloading {label}", total=total)
        yield lambda n: bar.advance(task, n)
