"""Errors a user can cause. Commands raise them; only `ganlab.cli.main` prints their message, as one
line, and exits with their `exit_code`: no traceback."""


class GanlabError(Exception):
    """A problem the user can fix (bad option, bad value, missing file). Its message says how."""

    exit_code = 2


class ConfigError(GanlabError):
    """The composed config is invalid: the message names the key and the allowed values."""


class UsageError(GanlabError):
    """A command line that cannot be parsed (an unknown argument, a value of the wrong type)."""


class WriteError(GanlabError):
    """An output could not be written (a full disk, a read-only directory): exit status 1."""

    exit_code = 1
