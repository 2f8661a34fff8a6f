"""Training the mode classifier (metrics/classifier.py): what `ganlab classifier dataset=NAME` runs
(ganlab/cli.py reads its arguments), and `ensure_classifier`, which trains it on a run's first use when the cache has none (as FID tools
fetch their weights on first use)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from ganlab.data.degrade import AUGMENTATION
from ganlab.data.degrade import augment as augment_batch
from ganlab.errors import GanlabError
from ganlab.metrics.classifier import (
    DEFAULT_AUGMENT,
    DEFAULT_EPOCHS,
    MINUTES,
    ModeClassifier,
    check_dataset,
    classifier_file,
    classifier_path,
    confusion_record,
    data_record,
    data_summary,
    family_is_standard,
    load_classifier,
    save_classifier,
    set_confusion,
    split_is_standard,
    split_record,
    state_hash,
    stored_family,
    to_model_input,
    use_family,
    write_file,
)

log = logging.getLogger(__name__)

BATCH_SIZE, LR = 128, 3e-3


def train_classifier(dataset: str, root: str | None, epochs: int, seed: int, device: torch.device | str = "cpu",
                     batch_size: int = BATCH_SIZE, lr: float = LR, limit: int | None = None,
                     progress: bool | None = None, augment: bool = False,
                     confusion_grid: tuple | None = None,
                     on_loaded: Callable[[], None] | None = None,
                     on_data: Callable[[dict], None] | None = None) -> tuple[ModeClassifier, float]:
    """Train on `dataset`'s train split (its first `limit` images if given); return the model (in
    eval mode, on `device`, with its confusion matrix on the test split set) and its accuracy on
    the whole test split. Deterministic for a seed on the CPU: batches follow a seeded permutation
    of the images held in memory (no DataLoader).
    AdamW with a one-cycle learning rate peaking at `lr`. No shifts or flips: they slowed cnn28-v1 down
    (91.2 % against 92.5 % after 8 epochs on Fashion-MNIST). `augment`: blur, noise and contrast on three
    quarters of each batch (ganlab.data.degrade.AUGMENTATION), so that blurry and noisy generated images are
    confused as the test split is (issue 26, Fashion-MNIST test split: 92.7 % clean, 91.9 % blurred once, 88.4 %
    noised, where the plain classifier scores 94.1 %, 84.7 % and 21.4 %). A rich bar on a terminal, and
    a log line per epoch with the test accuracy. `on_loaded` is called once both splits have been read (the
    announcement of a training, which a data error must not be preceded by), after `on_data`, which gets what
    the model is trained on (metrics/classifier.py `data_record`, also set as `model.trained_on`) and may
    raise to refuse it."""
    from rich import get_console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from ganlab.data.images import load_split

    check_dataset(dataset)
    device = torch.device(device)
    x_train, y_train = load_split(dataset, "train", root)
    x_test, y_test = load_split(dataset, "test", root)
    if limit is not None:
        x_train, y_train = x_train[:limit], y_train[:limit]
    record = data_record(dataset, root, (x_train, y_train), (x_test, y_test))
    if on_data is not None:
        on_data(record)
    if on_loaded is not None:
        on_loaded()
    x_train, x_test = to_model_input(x_train, device), to_model_input(x_test, device)
    y_train, y_test = y_train.to(device), y_test.to(device)
    batch_size = min(batch_size, len(x_train))
    steps_per_epoch = len(x_train) // batch_size
    total = epochs * steps_per_epoch
    # The caller's RNG streams are left as they were; ours come from `seed` alone.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)  # initial weights, and dropout
        generator = torch.Generator().manual_seed(seed)  # the batches, on the CPU
        model = ModeClassifier().to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
        schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total)
        bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=get_console(),
                       disable=progress is False or (progress is None and not sys.stdout.isatty()))
        test_acc, start = 0.0, time.monotonic()
        with bar:
            task = bar.add_task(f"classifier {dataset}", total=total, info="")
            for epoch in range(1, epochs + 1):
                model.train()
                order = torch.randperm(len(x_train), generator=generator).to(device)  # each image once an epoch
                for idx in order[:steps_per_epoch * batch_size].view(steps_per_epoch, -1):
                    batch = augment_batch(x_train[idx], generator) if augment else x_train[idx]
                    loss = F.cross_entropy(model(batch), y_train[idx])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    schedule.step()
                    bar.advance(task)
                pred = model.predict(x_test)
                test_acc = float((pred == y_test).double().mean())
                bar.update(task, info=f"test acc {100 * test_acc:.2f}%")
                log.info("epoch %d/%d: test accuracy %.2f%% (%.0f s)", epoch, epochs, 100 * test_acc,
                         time.monotonic() - start)
    model.eval()
    model.trained_on = record
    # `confusion_grid`: (sigmas, noises), None the default
    if set_confusion(model, x_test, y_test, confusion_grid):
        model.confusion_data = record["test"]
    return model, test_acc


def refuse_for_the_cache(dataset: str, record: dict) -> None:
    """`ganlab classifier`'s check, before any training: the cache takes the standard split's classifier only."""
    if not record["standard"]:
        raise GanlabError(f"{data_summary(dataset, record)}: the cached mode classifier ({classifier_path(dataset)}) "
                          f"scores every {dataset} run, so it is trained on the standard split only; leave "
                          "dataset.root out (the standard files are fetched) or point it at the standard files")


def train_and_save(dataset: str, root: str | None, epochs: int, seed: int, device: torch.device,
                   augment: bool = False, on_loaded: Callable[[], None] | None = None,
                   on_data: Callable[[dict], None] | None = None) -> tuple[Path, float, float]:
    """Train the classifier at the protocol's settings and cache it; return (path, test accuracy, seconds).
    Data other than the standard split is refused before any training (`on_data`: the check, default
    `refuse_for_the_cache`)."""
    start = time.monotonic()
    check = on_data or (lambda record: refuse_for_the_cache(dataset, record))
    model, test_acc = train_classifier(dataset, root, epochs, seed, device, batch_size=BATCH_SIZE, lr=LR,
                                       augment=augment, on_loaded=on_loaded, on_data=check)
    seconds = time.monotonic() - start
    settings = {"epochs": epochs, "seed": seed, "batch_size": BATCH_SIZE, "lr": LR, "device": str(device),
                "threads": torch.get_num_threads(), "seconds": round(seconds, 1),
                "augment": AUGMENTATION if augment else None}
    return save_classifier(model, dataset, test_acc, settings), test_acc, seconds


def ensure_classifier(dataset: str, root: str | None, device: torch.device | str = "cpu") -> tuple[ModeClassifier, dict]:
    """`load_classifier`, after training the classifier on first use when neither the cache nor ganlab has one (as FID
    tools fetch their weights on first use): every later run, and `ganlab eval`, reuse it. It is trained
    only on the standard split: a run whose data (`root`) is another (a small dataset.root of the user's) is
    refused in one line, before any training, naming the command that trains it on the standard files. A file
    without its confusion matrices (written before they were recorded), or with matrices from another test split,
    gets them measured on this run's test split and stored (`add_confusion`); without the test split the model
    keeps none, and the confusion-corrected metrics are left out (a one-line warning says why)."""
    check_dataset(dataset)
    path = classifier_path(dataset)
    if classifier_file(dataset) is None:  # neither cached nor shipped with ganlab
        def refuse(record: dict) -> None:  # before the announcement, and before any training
            if not record["standard"]:
                raise GanlabError(f"no mode classifier for {dataset} at {path}, and this run's data "
                                  f"({data_summary(dataset, record)}) cannot train it: it scores every {dataset} "
                                  f"run, so it is trained on the standard split only; train it once with `ganlab "
                                  f"classifier dataset={dataset}` (which fetches the standard files), then run again")

        def announce() -> None:  # once the data is read: a data error is not preceded by "training one now"
            log.warning("no mode classifier for %s yet: training one now, once (about %d minutes on 2 CPU cores); "
                        "it is cached at %s for every later run", dataset, MINUTES[dataset], path)

        _, test_acc, seconds = train_and_save(dataset, root, DEFAULT_EPOCHS[dataset], 0, torch.device("cpu"),
                                              augment=DEFAULT_AUGMENT, on_loaded=announce, on_data=refuse)
        log.warning("mode classifier for %s: test accuracy %.2f%% after %.0f s; cached at %s", dataset,
                    100 * test_acc, seconds, path)
    model, info = load_classifier(dataset, device)
    if not info["augmented"] and DEFAULT_AUGMENT:
        log.warning("mode classifier %s was trained on clean images alone: it confuses blurred and noised samples "
                    "far more, and the corrected mode counts are validated with the default, augmented one; retrain it "
                    "with `ganlab classifier dataset=%s force=true`", path, dataset)
    if model.confusion is None and not info["shipped"]:  # a shipped file holds the standard ones; it is not rewritten
        add_confusion(model, dataset, root, path)
    return model, info


def add_confusion(model: ModeClassifier, dataset: str, root: str | None, path: Path) -> bool:
    """Give a cached classifier without standard confusion matrices those of this run's test split (clean,
    blurred and noised: metrics/matched_confusion.py): the ones its file holds if they were measured on this
    very split (`confusion_data`, the split's SHA-256s), else measured and stored in its file with that record
    (weights and hash untouched) unless the file holds standard ones by then. Matrices of another split than the
    standard one serve runs on that split alone: `load_classifier` leaves them out. False, with a warning, when
    the test split cannot be read; a file that cannot be rewritten keeps them in memory only (measured again by
    the next run)."""
    from ganlab.data.images import load_split

    try:
        x, y = load_split(dataset, "test", root)
    except GanlabError as exc:
        log.warning("mode classifier %s has no confusion matrices under blur and noise of the standard test split "
                    "(written before they were recorded, or measured on another one) and the %s test split they are "
                    "measured on is unavailable (%s): the confusion-corrected mode counts are left out",
                    path, dataset, exc)
        return False
    record = split_record(dataset, "test", x, y)
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - retrained or removed meanwhile: measure them here
        saved = None
    current = isinstance(saved, dict) and saved.get("hash") == state_hash(model.state_dict())
    if current and saved.get("confusion_data") == record and (family := stored_family(saved, path, dataset)):
        use_family(model, family)  # measured on this very split by an earlier run
        model.confusion_data = record
        return True
    start = time.monotonic()
    standard = split_is_standard(dataset, "test", record)
    if standard:
        log.warning("measuring the confusion matrices of mode classifier %s on clean, blurred and noised test images, "
                    "once (about 3 minutes on one CPU core); they are stored in its file", path)
    else:
        log.warning("measuring the confusion matrices of mode classifier %s on clean, blurred and noised images of "
                    "this run's test split (%d images, not the standard one); they are stored in its file for runs "
                    "on this same split alone", path, len(y))
    if not set_confusion(model, to_model_input(x, next(model.parameters()).device), y):
        return False
    model.confusion_data = record
    log.info("confusion matrices measured in %.0f s", time.monotonic() - start)
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)  # again: minutes may have passed
        # Not if another process retrained it meanwhile, nor over standard matrices another run stored meanwhile.
        if saved["hash"] == state_hash(model.state_dict()) and not (
                saved.get("confusion_family") is not None and family_is_standard(saved, dataset)):
            stale = ("confusion", "confusion_samples")  # the clean matrix alone, before issue 26: now the family's
            write_file(path, {**{k: v for k, v in saved.items() if k not in stale}, **confusion_record(model)})
    except Exception as exc:  # noqa: BLE001 - a read-only cache, a full disk: the run goes on without storing it
        log.warning("measured the confusion matrices of %s on the test split but could not store them there (%s)",
                    path, exc)
    return True
