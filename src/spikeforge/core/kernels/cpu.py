"""Compiled CPU kernel: the two sequential loops of the recurrence in C.

Each element's whole time loop runs in registers: the forward reads ``x`` once
and writes the spikes and the pre-firing membrane ``h`` once; the backward
reads the upstream gradient and ``h`` once and writes ``dL/dh`` once. That is
the memory-traffic floor of the recurrence, against several tensor passes per
step for any composition of torch operations.

The C source is generated per configuration (surrogate shape, reset mode and
timing, detach, strictness, dtype): the surrogate derivative is the shape's own Python
definition evaluated on symbols (:mod:`.codegen`). It is compiled once with the
system C compiler (``cc``/``gcc``, found on ``PATH`` or in ``$CC``), cached in
``$SPIKEFORGE_CACHE/kernels`` (default ``~/.cache/spikeforge/kernels``; verified
before loading, see :mod:`.cache`), loaded with ctypes and run on
``torch.get_num_threads()`` threads (ctypes releases the GIL). Without a working
compiler the ``auto`` backend falls back to the torch-operation kernel.

Handles float32/float64 CPU tensors whose per-step parameters are scalars;
:func:`supports` tells whether a call qualifies.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import Tensor

from .cache import BuildError, cache_dir, load_library
from .codegen import c_expression
from .layout import dense, like
from .spec import NeuronSpec

__all__ = ["supports", "compiler_available", "CPU_LOOPS", "load_kernel"]

_HEADER = r"""
#include <stdint.h>
#include <tgmath.h>
typedef {real} real;

#define HARD {hard}
#define DETACH {detach}
#define DELAYED {delayed}
#define FIRES(h, vth) ({fires})
enum {{ BLOCK = 512 }};
"""

# Forward: compiled without fast-math, so h and the spikes are bit-identical to torch's.
_FORWARD = r"""
/* One step of the recurrence for one element: the membrane before firing from the carried
   state u (the membrane after the reset; with DELAYED, h of the previous step, whose own
   spike is reset now, after the leak). */
static inline real membrane(real u, real x, real decay, real scale, real vth, real vreset)
{{
    const real leaked = decay * u + scale * x;
    if (!DELAYED) return leaked;
    const int pending = FIRES(u, vth);
    return HARD ? (pending ? vreset + scale * x : leaked) : leaked - vth * (pending ? (real)1 : (real)0);
}}

/* Fire on h (spike to *s: 1, 0, or NaN for a NaN membrane) and update the carried state *u;
   returns 1 on a spike. */
static inline int step(real hv, real* s, real* u, real vth, real vreset)
{{
    const int fires = FIRES(hv, vth);
    const real fire = fires ? (real)1 : (real)0;
    *s = hv != hv ? hv : fire;
    *u = DELAYED ? hv : HARD ? (fires ? vreset : hv) : hv - vth * fire;
    return fires;
}}

/* x, s, h: [T][N]; elements [begin, end) of each step. h may be NULL (inference).
   counts[t] receives the number of spikes of step t in this range. */
void lif_forward(const real* x, real* s, real* h, real* u_out, const real* v0, real v0s, int64_t* counts,
                 int64_t T, int64_t N, int64_t begin, int64_t end,
                 real decay, real scale, real vth, real vreset)
{{
    real u[BLOCK];
    for (int64_t t = 0; t < T; ++t) counts[t] = 0;
    for (int64_t b = begin; b < end; b += BLOCK) {{
        const int64_t n = end - b < BLOCK ? end - b : BLOCK;
        for (int64_t i = 0; i < n; ++i) u[i] = v0 ? v0[b + i] : v0s;
        for (int64_t t = 0; t < T; ++t) {{
            const real* xt = x + t * N + b;
            real* st = s + t * N + b;
            int64_t fired = 0;
            if (h) {{
                real* ht = h + t * N + b;
                for (int64_t i = 0; i < n; ++i) {{
                    const real hv = membrane(u[i], xt[i], decay, scale, vth, vreset);
                    ht[i] = hv;
                    fired += step(hv, st + i, u + i, vth, vreset);
                }}
            }} else {{
                for (int64_t i = 0; i < n; ++i)
                    fired += step(membrane(u[i], xt[i], decay, scale, vth, vreset), st + i, u + i, vth, vreset);
            }}
            counts[t] += fired;
        }}
        for (int64_t i = 0; i < n; ++i) u_out[b + i] = u[i];
    }}
}}
"""

# Backward: fast-math lets the compiler vectorise exp/tanh of the surrogate (libmvec).
_BACKWARD = r"""
static inline real surrogate(real x, real w) {{ return {derivative}; }}

/* scale * dL/dh for every step from dL/ds (gs) and dL/d(final state) (gu, may be NULL).
   g carries dL/du_t (immediate reset) or dL/dh_{{t+1}} (DELAYED, where the final state is h). */
void lif_backward(const real* gs, const real* gu, const real* h, real* gh,
                  int64_t T, int64_t N, int64_t begin, int64_t end,
                  real decay, real vth, real vreset, real w, real scale)
{{
    const real leak = DELAYED ? decay : (real)1;
    real g[BLOCK];
    for (int64_t b = begin; b < end; b += BLOCK) {{
        const int64_t n = end - b < BLOCK ? end - b : BLOCK;
        for (int64_t i = 0; i < n; ++i) g[i] = gu ? gu[b + i] : (real)0;
        for (int64_t t = T - 1; t >= 0; --t) {{
            const real* ht = h + t * N + b;
            const real* gst = gs + t * N + b;
            real* ght = gh + t * N + b;
            const int final_h = DELAYED && t == T - 1;
            for (int64_t i = 0; i < n; ++i) {{
                const real hv = ht[i];
                const real fire = FIRES(hv, vth) ? (real)1 : (real)0;
                const real sg = surrogate(hv - vth, w);
                /* d(carried state)/dh: the leak-and-reset path plus, unless detached, the spike's */
                const real jac = (HARD ? leak * ((real)1 - fire) : leak)
                               + (DETACH ? (real)0 : (HARD ? vreset - leak * hv : -vth) * sg);
                const real grad_h = gst[i] * sg + (final_h ? g[i] : g[i] * jac);
                ght[i] = scale * grad_h;
                g[i] = DELAYED ? grad_h : decay * grad_h;
            }}
        }}
    }}
}}
"""

_DTYPES = {torch.float32: ("float", ctypes.c_float), torch.float64: ("double", ctypes.c_double)}


@functools.lru_cache(maxsize=1)
def _compiler() -> str | None:
    for candidate in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if candidate and shutil.which(candidate):
            return candidate
    return None


def compiler_available() -> bool:
    return _compiler() is not None


@functools.lru_cache(maxsize=1)
def _compiler_identity(compiler: str) -> str:
    """The compiler's resolved path and version banner (part of the cache key)."""
    path = os.path.realpath(shutil.which(compiler) or compiler)
    try:
        banner = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        banner = ""
    return f"{path}\n{banner}"


@functools.lru_cache(maxsize=1)
def _machine_tag() -> str:
    """What a ``-march=native`` binary depends on: the CPU's feature flags."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        flags = platform.processor()
    return platform.machine() + flags


def _sources(spec: NeuronSpec, dtype: torch.dtype) -> tuple[str, str]:
    """C sources of the forward and the backward translation units."""
    header = _HEADER.format(
        real=_DTYPES[dtype][0],
        hard=int(spec.hard_reset),
        detach=int(spec.detach_reset),
        delayed=int(spec.delayed),
        fires="(h) > (vth)" if spec.strict else "(h) >= (vth)",
    )
    return header + _FORWARD.format(), header + _BACKWARD.format(derivative=c_expression(spec.surrogate.derivative))


_FLAGS = ["-O3", "-march=native", "-fPIC"]
# Forward: no FMA contraction (bit-exact h). Backward: fast-math, compiled only (-c): linking
# with -ffast-math would pull in crtfastmath.o and flush denormals process-wide.
_FORWARD_FLAGS = ["-ffp-contract=off"]
_BACKWARD_FLAGS = ["-ffast-math"]


def _run_compiler(cmd: list[str]) -> None:
    """Run one compiler command; raises BuildError with its first error line."""
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or [f"exit status {result.returncode}"]
        first = next((line for line in lines if "error" in line), lines[0])
        raise BuildError(f"compiling the CPU kernel failed ({cmd[0]}: {first.strip()[:300]})")


def _compile(compiler: str, sources: tuple[str, str], library: Path) -> None:
    """Build ``library`` from the two sources, using its (private, empty) folder for the objects."""
    objects = []
    for name, source, extra in zip(("forward", "backward"), sources, (_FORWARD_FLAGS, _BACKWARD_FLAGS)):
        source_file, object_file = library.parent / f"{name}.c", library.parent / f"{name}.o"
        source_file.write_text(source)
        _run_compiler([compiler, *_FLAGS, *extra, "-c", str(source_file), "-o", str(object_file)])
        objects.append(str(object_file))
    _run_compiler([compiler, "-shared", *objects, "-o", str(library), "-lm"])


@functools.lru_cache(maxsize=None)
def load_kernel(spec: NeuronSpec, dtype: torch.dtype):
    """Compile (once, cached on disk) and load the kernel for ``spec``; None if impossible (one warning)."""
    compiler = _compiler()
    if compiler is None:
        return None
    sources = _sources(spec, dtype)
    flags = [*_FLAGS, *_FORWARD_FLAGS, *_BACKWARD_FLAGS]
    key = hashlib.sha256("\0".join([*sources, _compiler_identity(compiler), *flags, _machine_tag()]).encode())
    key = key.hexdigest()
    lib = load_library(cache_dir(), f"lif_{key[:24]}", key, functools.partial(_compile, compiler, sources))
    if lib is None:
        return None
    real = _DTYPES[dtype][1]
    ptr, i64 = ctypes.c_void_p, ctypes.c_int64
    lib.lif_forward.argtypes = [ptr, ptr, ptr, ptr, ptr, real, ptr, i64, i64, i64, i64, real, real, real, real]
    lib.lif_forward.restype = None
    lib.lif_backward.argtypes = [ptr, ptr, ptr, ptr, i64, i64, i64, i64, real, real, real, real, real]
    lib.lif_backward.restype = None
    return lib


def _scalar(value) -> bool:
    return not isinstance(value, Tensor) or value.dim() == 0


def supports(x: Tensor, spec: NeuronSpec, decay, input_scale, v_th, width, v_init) -> bool:
    """True when the compiled kernel can run this call (else use the torch kernel)."""
    if x.device.type != "cpu" or x.dtype not in _DTYPES:
        return False
    if not all(_scalar(v) for v in (decay, input_scale, v_th, width)):
        return False
    if isinstance(v_init, Tensor) and v_init.dim() and v_init.shape != x.shape[1:]:
        return False
    return load_kernel(spec, x.dtype) is not None


@functools.lru_cache(maxsize=1)
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=max(os.cpu_count() or 1, 1), thread_name_prefix="spikeforge-lif")


def _chunks(n: int) -> list[tuple[int, int]]:
    """``[0, n)`` split into one range per thread (torch's thread count; small inputs: one; empty: none)."""
    threads = max(min(torch.get_num_threads(), n // 16384), 1)
    step = max(-(-n // threads), 1)  # n = 0 (empty batch): no chunks
    step += -step % 64
    return [(b, min(b + step, n)) for b in range(0, n, step)]


def _parallel(function, chunks: list[tuple[int, int]], arguments) -> None:
    """Run ``function(*arguments(k, begin, end))`` for every chunk ``k``, on the thread pool."""
    if len(chunks) == 1:
        function(*arguments(0, *chunks[0]))
        return
    futures = [_pool().submit(function, *arguments(k, b, e)) for k, (b, e) in enumerate(chunks)]
    for f in futures:
        f.result()


def _float(value) -> float:
    return float(value.detach()) if isinstance(value, Tensor) else float(value)


def cpu_forward(x: Tensor, spec: NeuronSpec, decay, input_scale, v_th, v_init, keep_h: bool):
    """Compiled forward; same contract as :func:`.fused.forward_loop` (counts come for free)."""
    lib = load_kernel(spec, x.dtype)
    x = dense(x)
    steps = x.shape[0]
    n = x[0].numel()
    spikes = torch.empty_like(x)
    h = torch.empty_like(x) if keep_h else None
    u = torch.empty_like(x[0])
    v0 = (like(v_init.detach().to(x.dtype).expand_as(x[0]), x[0])
          if isinstance(v_init, Tensor) and v_init.dim() else None)
    v0s = 0.0 if v0 is not None else _float(v_init)
    scalars = (_float(decay), _float(input_scale), _float(v_th), spec.v_reset)
    chunks = _chunks(n)
    counts = torch.empty(len(chunks), steps, dtype=torch.int64)
    _parallel(
        lib.lif_forward,
        chunks,
        lambda k, b, e: (x.data_ptr(), spikes.data_ptr(), h.data_ptr() if h is not None else None, u.data_ptr(),
                         v0.data_ptr() if v0 is not None else None, v0s, counts[k].data_ptr(), steps, n, b, e,
                         *scalars),
    )
    return spikes, h, u, counts.sum(0)


def cpu_bptt(grad_spikes: Tensor, grad_u_final, h: Tensor, s: Tensor, spec: NeuronSpec, decay, v_th, width,
             scale=1.0) -> Tensor:
    """Compiled backward recurrence; same contract as :func:`.fused.bptt`."""
    lib = load_kernel(spec, h.dtype)
    gs = like(grad_spikes.to(h.dtype), h)
    gu = like(grad_u_final.to(h.dtype), h[0]) if grad_u_final is not None else None
    grad_h = torch.empty_like(h)
    steps, n = h.shape[0], h[0].numel()
    scalars = (_float(decay), _float(v_th), spec.v_reset, _float(width), _float(scale))
    _parallel(
        lib.lif_backward,
        _chunks(n),
        lambda k, b, e: (gs.data_ptr(), gu.data_ptr() if gu is not None else None, h.data_ptr(), grad_h.data_ptr(),
                      steps, n, b, e, *scalars),
    )
    return grad_h


#: The compiled loops, for :class:`.fused.Multistep`.
CPU_LOOPS = SimpleNamespace(forward=cpu_forward, bptt=cpu_bptt)
