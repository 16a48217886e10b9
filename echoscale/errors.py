"""Exceptions that the command line turns into one clean line and an exit code."""

from __future__ import annotations

from pathlib import Path


class EchoscaleError(Exception):
    """Base class of the errors that a user can fix (bad input, missing files).

    Parameters
    ----------
    message : str
        What is wrong, and the fix when one is known.
    path : str or Path, optional
        The file or folder the problem is in; it heads the message.
    """

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else Path(path)
        self.message = message
        super().__init__(
            f"{self.path}: {message}" if self.path is not None else message
        )


class InputError(EchoscaleError):
    """An input file or folder is missing, damaged or not of the expected form."""


class ImageReadError(InputError):
    """An image file cannot be read or is inconsistent."""


class MissingDependencyError(EchoscaleError):
    """An optional package needed for this input is not installed."""
