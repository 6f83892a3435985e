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
from .prophesee import read_prophesee
from .stmnist import read_stmnist

__all__ = ["read_events"]

_BY_MAGIC = ((b"#!AER-DAT2.0", read_aedat2), (b"#!AER-DAT3.1", read_aedat3), (b"#!AER-DAT4.0", read_aedat4),
             (b"%", read_prophesee), (b"MATLAB 5.0 MAT-file", read_stmnist))
_ATIS_SUFFIXES = (".bin", ".bs2")


def read_events(path: str | os.PathLike) -> np.ndarray:
    """Events of any supported file as an :data:`EVENT_DTYPE` array (t in microseconds).

    Recognised by the first bytes: AEDAT 2.0 (DVS128 / DAVIS240 / DAVIS346),
    3.1 and 4.0 version lines; a ``%`` header line for Prophesee ``.dat`` and
    EVT 2.0 / 3.0 ``.raw`` files; a MATLAB 5 header for ST-MNIST ``.mat``.
    The headerless N-MNIST / N-Caltech101 format by its ``.bin``/``.bs2`` suffix.
    """
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(20)
    reader = next((read for magic, read in _BY_MAGIC if head.startswith(magic)), None)
    if reader is None and path.suffix.lower() in _ATIS_SUFFIXES:
        reader = read_atis_bin
    if reader is None:
        raise EventFileError(path, 0, f"unknown event format (first bytes {head[:12]!r}; expected an AEDAT 2.0/3.1/"
                                      f"4.0 version line, a Prophesee '%' header, a MATLAB 5 header or an N-MNIST "
                                      f"{'/'.join(_ATIS_SUFFIXES)} file)")
    return reader(path)
