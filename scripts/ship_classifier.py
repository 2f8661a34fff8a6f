"""Copy the cached mode classifier of a dataset into the package, as the one ganlab ships (issue 29).

    ganlab classifier dataset=fashion_mnist force=true   # the default recipe, on the standard files
    python scripts/ship_classifier.py fashion_mnist      # -> ganlab/metrics/shipped/fashion_mnist.pt

Only a classifier of the whole standard split (the official files' SHA-256) with its confusion matrices of the
standard test split is shipped: it scores every run that has no cached classifier of its own. A file cached
before ganlab recorded the training data ("standard (recorded before the training data was)") is shipped with
those records added, measured on the standard files here (they must be installed: the Debian package or
$GANLAB_DATA), its weights untouched. The script prints the new file's SHA-256, which goes into
ganlab/metrics/classifier.py's SHIPPED_SHA256.
"""

from __future__ import annotations

import argparse
import hashlib
import sys

from ganlab.data.images import load_split
from ganlab.errors import GanlabError
from ganlab.metrics.classifier import (SHIPPED_DIR, classifier_path, data_record, load_classifier, save_classifier,
                                       split_record)


def ship(dataset: str) -> str:
    path = classifier_path(dataset)
    if not path.is_file():
        raise GanlabError(f"no cached mode classifier at {path}; train it with `ganlab classifier dataset={dataset}`")
    model, info = load_classifier(dataset)  # hash-checked; a classifier of other data is refused here
    if info.get("shipped"):
        raise GanlabError(f"{path} is not in the cache; train one with `ganlab classifier dataset={dataset}`")
    if model.confusion is None:
        raise GanlabError(f"{path} holds no confusion matrices of the standard test split; a run of {dataset} "
                          "measures and stores them (or retrain it)")
    if model.trained_on is None or model.confusion_data is None:  # recorded before the data was: add it now
        train, test = load_split(dataset, "train", None), load_split(dataset, "test", None)
        model.trained_on = data_record(dataset, None, train, test)
        model.confusion_data = split_record(dataset, "test", *test)
        if not model.trained_on["standard"]:
            raise GanlabError(f"the installed {dataset} files are not the standard ones; the shipped classifier "
                              "records the standard split")
    import torch

    saved = torch.load(path, map_location="cpu", weights_only=True)
    target = SHIPPED_DIR / f"{dataset}.pt"
    save_classifier(model, dataset, info["accuracy"], {k: v for k, v in saved["settings"].items() if k != "torch"},
                    path=target)
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    print(f"wrote {target} ({info['hash'][:8]}, test accuracy {100 * info['accuracy']:.1f}%); "
          f"SHIPPED_SHA256[{dataset!r}] = {digest!r}")
    return digest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=["mnist", "fashion_mnist"])
    try:
        ship(parser.parse_args().dataset)
    except GanlabError as exc:
        sys.exit(f"ship_classifier: error: {exc}")


if __name__ == "__main__":
    main()
