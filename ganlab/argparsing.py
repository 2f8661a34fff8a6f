"""The argument parser of the commands that use argparse (`ganlab eval`, `ganlab report`).

A module of its own, light (no torch, no Hydra), so that every command can import it.
"""

from __future__ import annotations

import argparse

from ganlab.errors import UsageError


class Parser(argparse.ArgumentParser):
    """argparse, with its errors raised as UsageError (argparse prints its usage and then
    `prog: error: ...`, three lines): `ganlab.cli.main` prints them as one line, exit status 2."""

    def error(self, message: str) -> None:
        raise UsageError(f"{message} (see `{self.prog} --help`)")
