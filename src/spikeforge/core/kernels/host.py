"""The host side of the compiled CPU kernels: running a kernel over ranges of elements in parallel, and
reused memory blocks for their large outputs.

A kernel's elements are split into one range per thread (``torch.get_num_threads()``). A library built
with OpenMP (where torch runs its own operations on OpenMP threads, see :func:`.toolchain.build_with_openmp`)
runs all ranges in one call on those same threads (:data:`RANGES_C`): no second set of threads competing for
the cores while torch's, just done with a convolution, still spin-wait for their next task. Otherwise each
range is one call on a thread pool of this module (ctypes releases the GIL).
"""

from __future__ import annotations

import ctypes
import functools
import math
import mmap
import os
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor

__all__ = ["thread_ranges", "parallel", "empty_like", "release_buffers", "pool_large_outputs", "RANGES_C",
           "OPENMP_EXPORT_C"]


@functools.lru_cache(maxsize=1)
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=max(os.cpu_count() or 1, 1), thread_name_prefix="spikeforge-kernel")


def thread_ranges(n: int) -> list[tuple[int, int]]:
    """``[0, n)`` split into one range per thread (torch's thread count; small inputs: one; empty: none)."""
    threads = max(min(torch.get_num_threads(), n // 16384), 1)
    step = max(-(-n // threads), 1)  # n = 0 (empty batch): no chunks
    step += -step % 64
    return [(b, min(b + step, n)) for b in range(0, n, step)]


#: C for kernel sources: ``FOR_RANGES(CALL)`` runs ``CALL`` for each range ``k < nranges`` of elements
#: ``[begin, end) = [bounds[k], bounds[k + 1])`` (``bounds``, ``nranges``: the kernel's arguments), in parallel on
#: OpenMP's threads when compiled with OpenMP, else one after another; ``FOR_RANGES_FAILED(CALL)`` the same for an
#: int ``CALL``, OR-ing the results into the caller's ``int failed``.
RANGES_C = r"""
#if defined(_OPENMP)
#define FOR_RANGES(CALL) \
    _Pragma("omp parallel for num_threads((int)nranges) schedule(static, 1)") \
    for (int64_t k = 0; k < nranges; ++k) { const int64_t begin = bounds[k], end = bounds[k + 1]; CALL; }
#define FOR_RANGES_FAILED(CALL) \
    _Pragma("omp parallel for num_threads((int)nranges) schedule(static, 1) reduction(|:failed)") \
    for (int64_t k = 0; k < nranges; ++k) { const int64_t begin = bounds[k], end = bounds[k + 1]; failed |= CALL; }
#else
#define FOR_RANGES(CALL) \
    for (int64_t k = 0; k < nranges; ++k) { const int64_t begin = bounds[k], end = bounds[k + 1]; CALL; }
#define FOR_RANGES_FAILED(CALL) \
    for (int64_t k = 0; k < nranges; ++k) { const int64_t begin = bounds[k], end = bounds[k + 1]; failed |= CALL; }
#endif
"""

#: C for one translation unit of each library: ``kernel_openmp()``, 1 when its ranges run on OpenMP threads.
OPENMP_EXPORT_C = r"""
int kernel_openmp(void)
{
#if defined(_OPENMP)
    return 1;
#else
    return 0;
#endif
}
"""


def parallel(function, ranges: list[tuple[int, int]], arguments, openmp: bool) -> list:
    """Run the compiled ``function`` over consecutive element ``ranges`` (one per thread, :func:`thread_ranges`):
    ``function(*arguments(k, bounds, count))`` runs ranges ``k .. k + count - 1``, ``bounds`` the address of their
    ``count + 1`` boundaries (int64; a kernel's ``bounds``, ``nranges`` of :data:`RANGES_C`). With ``openmp`` (the
    library's ``kernel_openmp()``) one call runs them all on OpenMP's threads, else one call per range runs on the
    thread pool. Returns the calls' results (none for no ranges)."""
    if not ranges:
        return []
    bounds = (ctypes.c_int64 * (len(ranges) + 1))(*(b for b, _ in ranges), ranges[-1][1])
    address = ctypes.addressof(bounds)
    if openmp or len(ranges) == 1:
        return [function(*arguments(0, address, len(ranges)))]
    step = ctypes.sizeof(ctypes.c_int64)
    futures = [_pool().submit(function, *arguments(k, address + k * step, 1)) for k in range(len(ranges))]
    return [f.result() for f in futures]


#: Memory blocks reused for the full-size outputs (spikes, ``h``, ``dL/dh``), least recently handed out first, each
#: with a weak reference to the memoryview that the storage of the tensor on it holds (dead: the block is unused).
_BLOCKS: list[tuple[mmap.mmap, weakref.ref]] = []
_BLOCKS_LOCK = threading.Lock()
_MAX_BLOCKS = 8
_MAX_BYTES = 1 << 30  # the blocks kept, in all (bytes)
_RECENT = 4  # unused blocks of a size not requested in the last _RECENT pooled allocations are given back
_MIN_BLOCK = 1 << 20  # bytes; smaller tensors come from malloc's heap without page faults
_requested: dict[int, int] = {}  # the sizes (bytes) the last _RECENT pooled allocations asked for -> when
_allocations = 0  # pooled allocations so far
_pooling = True  # large outputs on the blocks; False where malloc keeps freed memory itself (pool_large_outputs)


def pool_large_outputs(enabled: bool) -> None:
    """Put large kernel outputs on the reused blocks (``True``, the default) or take them from torch's allocator
    (``False``, and give the unused blocks back): for a process whose ``malloc`` keeps freed memory itself
    (:func:`spikeforge.runtime.allocator.reuse_freed_memory`, which calls this), where the blocks would only add
    fresh mappings whenever more outputs are alive than they hold (a network's ``h`` of every learnable layer
    until its backward). Measured on the CPU recipes' network with freed memory reused: a LIF step 0.89x, an
    LSG step 0.83x of the time with the blocks; ResNet-19 0.98x."""
    global _pooling
    _pooling = bool(enabled)
    if not _pooling:
        release_buffers()


def release_buffers() -> None:
    """Give the memory of the reuse blocks no tensor lives on back to the system (e.g. after training)."""
    with _BLOCKS_LOCK:
        _BLOCKS[:] = [(block, lease) for block, lease in _BLOCKS if lease() is not None]


def empty_like(t: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """``torch.empty_like(t, dtype=dtype)`` for a dense CPU ``t`` (laid out as a kernel reads it), on a reused
    memory block when large (see :func:`empty_strided`)."""
    return empty_strided(t.shape, t.stride(), t.dtype if dtype is None else dtype)


def empty_strided(size, stride, dtype: torch.dtype) -> Tensor:
    """``torch.empty_strided(size, stride, dtype=dtype)`` on the CPU for a dense layout; large ones on a reused
    memory block.

    A fresh large tensor costs a page fault per 4 KiB page on first touch (glibc maps and unmaps
    every large allocation): as much time as the kernel's own work. A block is reused only when no
    tensor lives on it any more (autograd released the saved ``h``, the input gradient was consumed):
    the storage made from a block holds a memoryview of it, freed with the last tensor or view on it.
    At most ``_MAX_BLOCKS`` blocks of ``_MAX_BYTES`` in all are kept; unused blocks of a size that none of the
    last ``_RECENT`` allocations asked for are given back (a layer's forward and backward and the layers
    around it repeat their sizes within a few allocations, while a training step's peak memory would
    otherwise include the blocks of the stages long done); :func:`release_buffers` gives back all unused
    ones. When the blocks are in use, the tensor comes from torch.
    """
    global _allocations
    numel = math.prod(size)
    nbytes = numel * dtype.itemsize
    if nbytes < _MIN_BLOCK or not _pooling:
        return torch.empty_strided(size, stride, dtype=dtype)
    with _BLOCKS_LOCK:
        _allocations += 1
        _requested[nbytes] = _allocations
        for old_size in [n for n, at in _requested.items() if _allocations - at >= _RECENT]:
            del _requested[old_size]
        _BLOCKS[:] = [(b, lease) for b, lease in _BLOCKS if lease() is not None or len(b) in _requested]
        same = [i for i, (b, lease) in enumerate(_BLOCKS) if lease() is None and len(b) == nbytes]
        if same:  # the most recently used: the others of its size are given back once their size is no longer asked for
            block = _BLOCKS.pop(same[-1])[0]
        else:
            held = sum(len(b) for b, _ in _BLOCKS)
            for entry in [e for e in _BLOCKS if e[1]() is None]:  # least recently handed out first
                if len(_BLOCKS) < _MAX_BLOCKS and held + nbytes <= _MAX_BYTES:
                    break
                _BLOCKS.remove(entry)
                held -= len(entry[0])
            if len(_BLOCKS) >= _MAX_BLOCKS or held + nbytes > _MAX_BYTES:
                return torch.empty_strided(size, stride, dtype=dtype)
            block = mmap.mmap(-1, nbytes)
        lease = memoryview(block)
        _BLOCKS.append((block, weakref.ref(lease)))
    return torch.frombuffer(lease, dtype=dtype, count=numel).as_strided(size, stride)
