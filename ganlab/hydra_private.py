"""The one part of Hydra's API that ganlab uses and Hydra does not publish: its command-line parser,
so that `ganlab train` reads `-m`, `--cfg`, `--config-dir` and the overrides exactly as Hydra will.
Checked against hydra-core 1.3.8 (pyproject.toml admits 1.3.x only); a change shows in
tests/test_launchers.py::test_added_overrides_join_the_overrides_hydra_parses."""

from __future__ import annotations

import argparse

from hydra._internal.utils import get_args_parser


def parse_hydra_args(args: list[str]) -> argparse.Namespace:
    """Hydra's reading of `ganlab train`'s arguments (unknown ones are left for Hydra to refuse)."""
    parsed, _ = get_args_parser().parse_known_args(args)
    return parsed
