"""How the process's C allocator treats large CPU tensors during training.

glibc's ``malloc`` serves a block above its mmap threshold (which it raises with use, but never above
32 MiB on 64-bit systems) with a fresh mapping and unmaps it on ``free``: every such tensor costs one
page fault and one zeroed page per 4 KiB, on every step. A spiking network's tensors hold ``T`` times
the images of an ANN's (time folded into the batch: ResNet-19 at T=4, batch 32 has 33-67 MB
activations and gradients against the ANN's 8-17 MB), so they stay above the ceiling, and the faults
cost 5-18% of a CPU training step (measured; see ``benchmarks/README.md``). :func:`reuse_freed_memory`
makes ``malloc`` serve every block from its heap and keep freed memory there for the next step: no
faults once the first step has run, at the price of a higher resident peak (heap fragmentation;
ResNet-19 T=4 batch 32: +25%), and memory that the process keeps until it exits.

This is a setting of the whole process, so the library never makes it on import: the training and
search loop applies it on CPU devices (``memory.reuse_freed``, on by default), as a training launcher
would preload another allocator. Other C libraries (musl, macOS, Windows) are left alone.
"""

from __future__ import annotations

import ctypes
import functools
import platform

from ..core.kernels import host

__all__ = ["reuse_freed_memory"]

# mallopt parameters of glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_INT_MAX = 2**31 - 1


@functools.lru_cache(maxsize=1)
def _glibc():
    """The process's glibc (its ``mallopt``), or None on other C libraries."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


def reuse_freed_memory() -> bool:
    """Serve every allocation of this process from glibc's heap (no mappings per block) and keep up to
    2 GiB of freed memory at its top (no trimming back to the system), and let the compiled kernels take their
    large outputs from torch's allocator too (:func:`spikeforge.core.kernels.host.pool_large_outputs`); True
    when applied, False on a C library other than glibc. Blocks mapped before the call are unmapped as usual
    when freed."""
    libc = _glibc()
    if libc is None:
        return False
    # trim threshold first: setting the mmap count alone would trim the heap's top on every large free
    if not (libc.mallopt(_M_TRIM_THRESHOLD, _INT_MAX) and libc.mallopt(_M_MMAP_MAX, 0)):
        return False
    host.pool_large_outputs(False)  # the compiled kernels' own reused blocks are no longer needed
    return True
