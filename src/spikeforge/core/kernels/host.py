"""The host side of the compiled CPU kernels: running a kernel over ranges of elements on a thread pool,
and reused memory blocks for their large outputs.

Kernels are called through ctypes, which releases the GIL, so the ranges run in parallel on
``torch.get_num_threads()`` threads.
"""

from __future__ import annotations

import functools
import math
import mmap
import os
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor

__all__ = ["thread_ranges", "parallel", "empty_like", "release_buffers"]


@functools.lru_cache(maxsize=1)
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=max(os.cpu_count() or 1, 1), thread_name_prefix="spikeforge-kernel")


def thread_ranges(n: int) -> list[tuple[int, int]]:
    """``[0, n)`` split into one range per thread (torch's thread count; small inputs: one; empty: none)."""
    threads = max(min(torch.get_num_threads(), n // 16384), 1)
    step = max(-(-n // threads), 1)  # n = 0 (empty batch): no chunks
    step += -step % 64
    return [(b, min(b + step, n)) for b in range(0, n, step)]


def parallel(function, ranges: list[tuple[int, int]], arguments) -> list:
    """Run ``function(*arguments(k, begin, end))`` for every range ``k``, on the thread pool; their results."""
    if len(ranges) == 1:
        return [function(*arguments(0, *ranges[0]))]
    futures = [_pool().submit(function, *arguments(k, b, e)) for k, (b, e) in enumerate(ranges)]
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
    if nbytes < _MIN_BLOCK:
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
