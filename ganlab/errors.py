"""Errors a user can cause. The CLI prints their message as one line and exits non-zero, no traceback."""


class GanlabError(Exception):
    """A problem the user can fix (bad option, bad value, missing file). Its message says how."""

    exit_code = 2


class ConfigError(GanlabError):
    """The composed config is invalid: the message names the key and the allowed values."""
