"""Errors that describe bad *user input* (shapes, arguments, files, names).

They subclass the built-in exception a Python caller would expect (``ValueError``,
``FileNotFoundError``), so the API stays idiomatic, while the CLI can tell them apart from
programming errors: a ``UserError`` becomes one line on stderr and exit status 2, anything else
keeps its traceback because it is a bug.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input from the user: the message names the bad value and what was expected."""


class DataError(UserError):
    """A data file or archive is missing, truncated, corrupt or has unexpected content."""


class DataNotFoundError(DataError, FileNotFoundError):
    """A data set is not where we looked; the message says where we looked and how to get it."""


class TrainingDiverged(UserError, FloatingPointError):
    """The loss became NaN or infinite; the message names the epoch and step."""
