"""Errors raised by the data readers."""

from __future__ import annotations

import os


class DatasetNotFoundError(FileNotFoundError):
    """A data set is missing, incomplete or corrupt.

    The message is always a single line that names the folder and the files
    that were expected there, so the command line can print it as the reason.
    ``path`` holds the folder (or file) that was looked at.
    """

    def __init__(self, message: str, path: str | os.PathLike | None = None) -> None:
        # One argument only: OSError would otherwise format "[Errno ...]" itself.
        super().__init__(str(message).replace("\r", " ").replace("\n", " "))
        self.path = None if path is None else os.fspath(path)

    def __str__(self) -> str:
        return str(self.args[0])


class DatasetCorruptError(DatasetNotFoundError):
    """The files are present but fail their integrity check or cannot be read."""
