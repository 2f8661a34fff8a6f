"""Export a run's TensorBoard pictures (the latest of each tag) as PNG files.

    python scripts/export_pictures.py RUN_DIR OUT_DIR [--prefix NAME] [--step N]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--prefix", default="", help="prepended to each file name")
    parser.add_argument("--step", type=int, default=None, help="export this step instead of the latest")
    args = parser.parse_args()
    events = EventAccumulator(str(args.run_dir), size_guidance={"images": 0}).Reload()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for tag in events.Tags()["images"]:
        images = events.Images(tag)
        chosen = images[-1] if args.step is None else next(i for i in images if i.step == args.step)
        path = args.out_dir / f"{args.prefix}{tag}.png"
        path.write_bytes(chosen.encoded_image_string)
        print(f"{path}  (step {chosen.step})")


if __name__ == "__main__":
    main()
