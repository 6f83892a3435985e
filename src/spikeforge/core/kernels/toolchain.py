"""The system C compiler the CPU kernels are built with: which one, its identity and the machine (parts
of every cache key), the common flags, and running it.

The compiler is ``$CC`` if set, else the first of ``cc``, ``gcc``, ``clang`` on ``PATH``.
"""

from __future__ import annotations

import functools
import os
import platform
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import torch

from .cache import BuildError

__all__ = ["compiler", "compiler_available", "compiler_identity", "machine_tag", "FLAGS", "run_compiler",
           "build_with_openmp", "openmp_tag"]


@functools.lru_cache(maxsize=1)
def compiler() -> str | None:
    """The C compiler command, or None when there is none."""
    for candidate in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if candidate and shutil.which(candidate):
            return candidate
    return None


def compiler_available() -> bool:
    """Whether a C compiler is available."""
    return compiler() is not None


@functools.lru_cache(maxsize=1)
def compiler_identity(command: str) -> str:
    """The compiler's resolved path and version banner (part of the cache key)."""
    path = os.path.realpath(shutil.which(command) or command)
    try:
        banner = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        banner = ""
    return f"{path}\n{banner}"


@functools.lru_cache(maxsize=1)
def machine_tag() -> str:
    """What a ``-march=native`` binary depends on: the CPU's feature flags."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        flags = platform.processor()
    return platform.machine() + flags


# On x86 with AVX-512, full-width vectors: the backward's exp and the recompute are compute-bound (measured
# 10% faster forward and backward on an AVX-512 Xeon); a no-op on CPUs without AVX-512.
FLAGS = ["-O3", "-march=native", "-fPIC"] + (["-mprefer-vector-width=512"] if platform.machine() in ("x86_64", "AMD64")
                                              else [])


def run_compiler(cmd: list[str]) -> None:
    """Run one compiler command; raises BuildError with its first error line."""
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or [f"exit status {result.returncode}"]
        first = next((line for line in lines if "error" in line), lines[0])
        raise BuildError(f"compiling a CPU kernel failed ({cmd[0]}: {first.strip()[:300]})")


@functools.lru_cache(maxsize=1)
def _torch_on_openmp() -> bool:
    """Whether torch runs its CPU operations on OpenMP threads (its parallel backend)."""
    return "parallel backend: OpenMP" in torch.__config__.parallel_info()


def openmp_tag() -> str:
    """What :func:`build_with_openmp` depends on besides the compiler (part of the cache keys)."""
    return f"openmp={int(_torch_on_openmp())}"


def build_with_openmp(build: Callable[[list[str]], None]) -> None:
    """Run ``build(flags)`` (compile and link with these extra ``flags``) with ``-fopenmp`` when torch runs its
    operations on OpenMP threads, so that the kernels' ranges run on those threads (``host.RANGES_C``); without
    it where torch does not, or when that build fails (a compiler without an OpenMP runtime): the ranges then run
    on the host's thread pool."""
    if _torch_on_openmp():
        try:
            build(["-fopenmp"])
            return
        except BuildError:
            pass
    build([])
