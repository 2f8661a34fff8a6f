"""The argument parser of the commands that use argparse (`ganlab eval`, `ganlab report`).

A module of its own, light (no torch, no Hydra), so that every command can import it without an
import cycle.
"""

from __future__ import annotations

import argparse


class Parser(argparse.ArgumentParser):
    """argparse, with its errors as the one line every ganlab error is (argparse prints its usage
    and then `prog: error: ...`, three lines), exit status 2."""

    def error(self, message: str) -> None:
        from ganlab.cli import fail  # here: the CLI module imports Hydra

        fail(f"{message} (see `{self.prog} --help`)")
