"""``read_events(path)``: pick the reader from the file's first bytes (or its suffix)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .aedat2 import read_aedat2
from .aedat3 import read_aedat3
from .aedat4 import read_aedat4
from .arrays import EventFileError
from .atis import read_atis_bin

__all__ = ["read_events"]

_BY_MAGIC = {b"#!AER-DAT2.0": read_aedat2, b"#!AER-DAT3.1": read_aedat3, b"#!AER-DAT4.0": read_aedat4}
_ATIS_SUFFIXES = (".bin", ".bs2")


def read_events(path: str | os.PathLike) -> np.ndarray:
    """Events of an AEDAT 2.0 (DVS128), AEDAT 3.1, AEDAT 4.0 or N-MNIST ``.bin``/``.bs2`` file.

    AEDAT files are recognised by their version line, the headerless N-MNIST /
    N-Caltech101 format by the suffix. Returns an :data:`EVENT_DTYPE` array
    (t in microseconds).
    """
    path = Path(path)
    with open(path, "rb") as f:
        magic = f.read(12)
    reader = _BY_MAGIC.get(magic)
    if reader is None and path.suffix.lower() in _ATIS_SUFFIXES:
        reader = read_atis_bin
    if reader is None:
        raise EventFileError(path, 0, f"unknown event format (first bytes {magic!r}; expected an AEDAT 2.0/3.1/4.0 "
                                      f"version line or an N-MNIST {'/'.join(_ATIS_SUFFIXES)} file)")
    return reader(path)
