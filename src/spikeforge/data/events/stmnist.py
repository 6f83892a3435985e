"""ST-MNIST tactile recordings (See et al. 2020, "ST-MNIST - The Spiking Tactile MNIST Neuromorphic Dataset").

Each recording is a MATLAB 5 ``.mat`` file holding one variable, ``spiketrain``:
a float64 array of shape ``[101, N]``, one column per sample. Rows 0-99 are
the taxels of the 10x10 sensor: +1 marks an ON event, -1 an OFF event, 0
nothing. Row 100 is the sample's time in seconds. Taxel ``a`` sits at column
``x = a % 10`` and row ``y = a // 10`` (the paper's row-major grid, as in
tonic's ST-MNIST reader).

:func:`read_stmnist` returns one event per non-zero taxel entry, ordered by
sample then taxel, with ``t = round(seconds * 1e6)`` microseconds (times are
kept as recorded: they do not start at 0). The file is read with
``scipy.io.loadmat`` (``scipy`` is imported only here); its top-level data
elements are walked first, so a truncated file raises :class:`EventFileError`
with the offset of the element that runs past the end.
"""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path

import numpy as np

from ...optional import require
from .arrays import EVENT_DTYPE, EventFileError

__all__ = ["read_stmnist", "STMNIST_SIZE"]

STMNIST_SIZE = (10, 10)  # (height, width) taxels
_TAXELS = STMNIST_SIZE[0] * STMNIST_SIZE[1]
_MAT_HEADER = 128  # 116 text + 8 subsystem offset + 2 version + 2 endian indicator
_MI_COMPRESSED = 15


def _check_elements(data: bytes, path: Path) -> None:
    """Walk the top-level data elements of a little-endian MATLAB 5 file: tag (uint32 type, uint32 bytes) + body."""
    if not data.startswith(b"MATLAB 5.0 MAT-file") or data[126:128] != b"IM":
        raise EventFileError(path, 0, "not a little-endian MATLAB 5 .mat file (ST-MNIST recordings are)")
    pos = _MAT_HEADER
    while pos < len(data):
        if pos + 8 > len(data):
            raise EventFileError(path, pos, "file ends inside a data element tag")
        kind, size = struct.unpack_from("<II", data, pos)
        end = pos + 8 + size
        if end > len(data):
            raise EventFileError(path, pos, f"data element of {size} bytes runs past the end of the file")
        pos = end if kind == _MI_COMPRESSED else end + (-size % 8)


def read_stmnist(path: str | os.PathLike) -> np.ndarray:
    """Events of an ST-MNIST ``.mat`` recording as an :data:`EVENT_DTYPE` array (x, y in the 10x10 taxel
    grid, t in microseconds).

    Needs ``scipy``. Raises :class:`EventFileError` naming the file if it is
    truncated, cannot be decoded, or has no ``[101, N]`` ``spiketrain`` of
    -1/0/+1 entries.
    """
    path = Path(path)
    scipy_io = require("scipy.io", f"reading the ST-MNIST file {path}")
    data = path.read_bytes()
    _check_elements(data, path)
    try:
        spiketrain = scipy_io.loadmat(io.BytesIO(data)).get("spiketrain")
    except Exception as err:  # noqa: BLE001 - scipy raises several error types for a corrupt file
        raise EventFileError(path, _MAT_HEADER, f"MATLAB data cannot be decoded ({err})") from None
    if not isinstance(spiketrain, np.ndarray) or spiketrain.ndim != 2 or spiketrain.shape[0] != _TAXELS + 1:
        shape = getattr(spiketrain, "shape", None)
        raise EventFileError(path, _MAT_HEADER, f"expected a 'spiketrain' variable of shape [101, N], found {shape}")
    taxels, seconds = spiketrain[:_TAXELS], spiketrain[_TAXELS]
    if not np.isin(taxels, (-1.0, 0.0, 1.0)).all():
        raise EventFileError(path, _MAT_HEADER, "'spiketrain' taxel rows hold values other than -1, 0 and +1")
    sample, taxel = np.nonzero(taxels.T)  # row-major over [N, 100]: sample order, then taxel order
    events = np.empty(sample.shape[0], dtype=EVENT_DTYPE)
    events["x"] = taxel % STMNIST_SIZE[1]
    events["y"] = taxel // STMNIST_SIZE[1]
    events["t"] = np.rint(seconds[sample] * 1e6)
    events["p"] = taxels[taxel, sample] > 0
    return events
