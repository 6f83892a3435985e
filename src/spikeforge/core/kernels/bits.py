"""Compiled CPU codec of spike tensors as two bit planes (for :mod:`spikeforge.core.packing`).

The layout is packing's: for ``n`` elements and ``m = ceil(n / 8)`` bytes per plane, element ``i``
is bit ``i // m`` of byte ``i % m``; plane 0 holds ``value != 0``, plane 1 ``value is NaN``, read
from the top byte of each element (bits 5 and 6 in every floating dtype, see packing). Encoding
reads each element's top byte once and writes the two planes; decoding writes each element once
(0, 1 or NaN as a bit pattern of its dtype), into a reused memory block (no page faults). One
pass each way, against about ten whole-tensor passes with torch operations.

Built like the neuron kernels (system C compiler, verified cache: :mod:`.cache`); None from
:func:`load_codec` when it cannot be, and packing then uses torch operations.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib

import torch
from torch import Tensor

from .cache import cache_dir, load_library
from .host import OPENMP_EXPORT_C, RANGES_C, empty_strided, parallel, thread_ranges
from .toolchain import FLAGS, build_with_openmp, compiler, compiler_identity, machine_tag, openmp_tag, run_compiler

__all__ = ["load_codec", "encode", "decode"]

_SOURCE = r"""
#include <stdint.h>
#include <string.h>
""" + RANGES_C + OPENMP_EXPORT_C + r"""

/* Planes bits[2][m] of the n elements from data (size bytes each, top byte at offset top): bytes [begin, end). */
static void encode_range(const uint8_t* data, int64_t size, int64_t top, int64_t n, int64_t m, int64_t begin,
                         int64_t end, uint8_t* bits)
{
    for (int64_t j = begin; j < end; ++j) {
        uint8_t nonzero = 0, nan = 0;
        for (int r = 0; r < 8; ++r) {
            const int64_t i = r * m + j;
            if (i < n) {
                const uint8_t v = data[i * size + top];
                nonzero |= (uint8_t)(((v >> 5) & 1) << r);
                nan |= (uint8_t)(((v >> 6) & 1) << r);
            }
        }
        bits[j] = nonzero;
        bits[m + j] = nan;
    }
}

/* encode_range over the byte ranges of bounds (FOR_RANGES). */
void spike_encode(const uint8_t* data, int64_t size, int64_t top, int64_t n, int64_t m, const int64_t* bounds,
                  int64_t nranges, uint8_t* bits)
{
    FOR_RANGES(encode_range(data, size, top, n, m, begin, end, bits))
}

/* The elements of the byte ranges of bounds (FOR_RANGES) of the planes bits[2][m] into out (n elements of
   TYPE): zero, one or nan (bit patterns). */
#define DECODE(NAME, TYPE) \
static void NAME##_range(const uint8_t* bits, int64_t n, int64_t m, int64_t begin, int64_t end, TYPE one, \
                         TYPE nan, TYPE* out) \
{ \
    for (int r = 0; r < 8; ++r) { \
        const int64_t first = r * m + begin, last = r * m + end < n ? r * m + end : n; \
        for (int64_t i = first; i < last; ++i) { \
            const int64_t j = i - r * m; \
            const TYPE value = ((bits[j] >> r) & 1) ? one : 0; \
            out[i] = ((bits[m + j] >> r) & 1) ? nan : value; \
        } \
    } \
} \
void NAME(const uint8_t* bits, int64_t n, int64_t m, const int64_t* bounds, int64_t nranges, TYPE one, TYPE nan, \
          TYPE* out) \
{ \
    FOR_RANGES(NAME##_range(bits, n, m, begin, end, one, nan, out)) \
}
DECODE(spike_decode16, uint16_t)
DECODE(spike_decode32, uint32_t)
DECODE(spike_decode64, uint64_t)
"""

#: Element size -> (decoder name, ctypes type of its bit patterns).
_DECODERS = {2: ("spike_decode16", ctypes.c_uint16), 4: ("spike_decode32", ctypes.c_uint32),
             8: ("spike_decode64", ctypes.c_uint64)}


def _build(command: str, library) -> None:
    source = library.parent / "bits.c"
    source.write_text(_SOURCE)
    build_with_openmp(lambda openmp: run_compiler([command, *FLAGS, *openmp, "-shared", str(source), "-o",
                                                   str(library)]))


@functools.lru_cache(maxsize=1)
def load_codec() -> ctypes.CDLL | None:
    """The compiled codec (built once, cached on disk); None without a working C compiler (one warning)."""
    command = compiler()
    if command is None:
        return None
    key = "\0".join([_SOURCE, compiler_identity(command), *FLAGS, machine_tag(), openmp_tag()])
    key = hashlib.sha256(key.encode()).hexdigest()
    lib = load_library(cache_dir(), f"bits_{key[:24]}", key, functools.partial(_build, command))
    if lib is None:
        return None
    ptr, i64 = ctypes.c_void_p, ctypes.c_int64
    lib.spike_encode.argtypes = [ptr, i64, i64, i64, i64, ptr, i64, ptr]
    lib.spike_encode.restype = None
    for name, pattern in _DECODERS.values():
        getattr(lib, name).argtypes = [ptr, i64, i64, ptr, i64, pattern, pattern, ptr]
        getattr(lib, name).restype = None
    lib.openmp = bool(lib.kernel_openmp())
    return lib


def encode(flat_bytes: Tensor, n: int, size: int, top: int) -> Tensor:
    """``bits[2, m]`` (uint8) of ``n`` elements of ``size`` bytes stored in the CPU tensor ``flat_bytes``
    (their storage, in order), the top byte of each at offset ``top``."""
    lib = load_codec()
    m = -(-n // 8)
    bits = torch.empty(2, m, dtype=torch.uint8)
    parallel(lib.spike_encode, thread_ranges(m),
             lambda k, bounds, count: (flat_bytes.data_ptr(), size, top, n, m, bounds, count, bits.data_ptr()),
             lib.openmp)
    return bits


def decode(bits: Tensor, n: int, dtype: torch.dtype) -> Tensor:
    """The ``n`` elements (``[n]``, ``dtype``) the CPU planes ``bits[2, m]`` encode."""
    lib = load_codec()
    name, pattern = _DECODERS[dtype.itemsize]
    one, nan = _patterns(dtype)
    out = empty_strided((n,), (1,), dtype)
    m = bits.shape[1]
    parallel(getattr(lib, name), thread_ranges(m),
             lambda k, bounds, count: (bits.data_ptr(), n, m, bounds, count, pattern(one), pattern(nan),
                                       out.data_ptr()),
             lib.openmp)
    return out


#: Element size -> the unsigned integer dtype of its bit pattern.
_UNSIGNED = {2: torch.uint16, 4: torch.uint32, 8: torch.uint64}


@functools.lru_cache(maxsize=None)
def _patterns(dtype: torch.dtype) -> tuple[int, int]:
    """The bit patterns of 1 and of torch's NaN in ``dtype``."""
    unsigned = _UNSIGNED[dtype.itemsize]
    return (torch.ones((), dtype=dtype).view(unsigned).item(),
            torch.full((), float("nan"), dtype=dtype).view(unsigned).item())
