"""Compiled CPU kernel: the two sequential loops of the recurrence in C.

Each element's whole time loop runs in registers, a block of elements at a
time (all ``T`` steps of one block, then the next). The forward reads ``x`` once
and writes the spikes once (and ``h`` once, only when a learnable parameter's
gradient needs it); the backward reads the upstream gradient and ``x`` once,
recomputes the block's ``h`` into a cache-sized scratch with the forward's own
compiled arithmetic (bit-identical), and writes ``dL/dx`` once: 8 bytes per
element and step forward, 12 backward (float32), against 16 for a plain copy of
the input and of the gradient. Large outputs go to memory with non-temporal
stores (no read of the lines they overwrite), and each step's run of a block is
prefetched one step ahead.

The C source is generated per configuration (surrogate shape, reset mode and
timing, detach, strictness, dtype): the surrogate derivative is the shape's own Python
definition evaluated on symbols (:mod:`.codegen`). It is compiled once with the
system C compiler (``cc``/``gcc``, found on ``PATH`` or in ``$CC``), cached in
``$SPIKEFORGE_CACHE/kernels`` (default ``~/.cache/spikeforge/kernels``; verified
before loading, see :mod:`.cache`), loaded with ctypes and run on
``torch.get_num_threads()`` threads: torch's own OpenMP threads where it is built
with OpenMP, else a thread pool (:mod:`.host`). Without a working
compiler the ``auto`` backend falls back to the torch-operation kernel.

Handles float32/float64 CPU tensors, and bfloat16 ones (mixed precision: read and written as
bfloat16, the state and ``h`` in float32); each neuron parameter may be a float or a
tensor that broadcasts to one time step (per layer, per channel, per neuron), read
compactly (a channel's value is not repeated over its plane in memory, see
:func:`_params`). :func:`supports` tells whether a call qualifies. Large outputs
(spikes, ``h``, ``dL/dh``) go on a few reused memory blocks (:func:`.host.empty_like`):
a fresh one would cost a page fault per page (unless malloc keeps freed memory itself:
:func:`.host.pool_large_outputs`).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import math
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import Tensor

from .cache import cache_dir, load_library
from .codegen import c_expression
from .host import OPENMP_EXPORT_C, RANGES_C, empty_like, parallel, thread_ranges
from .layout import dense, fits_step, like
from .spec import NeuronSpec
from .toolchain import (
    FLAGS,
    build_with_openmp,
    compiler_available,
    compiler_identity,
    machine_tag,
    openmp_tag,
    run_compiler,
)
from .toolchain import compiler as find_compiler

__all__ = ["supports", "compiler_available", "CPU_LOOPS", "load_kernel"]

_HEADER = r"""
#include <stdint.h>
#include <string.h>
#include <tgmath.h>
#if defined(__AVX__)
#include <immintrin.h>
#endif
typedef {real} real;
/* How x, the spikes, dL/ds and dL/dx are stored: as real, or (BF16) as bfloat16 bit patterns. */
#define BF16 {bf16}
#if BF16
typedef uint16_t io;
#else
typedef real io;
#endif

#define HARD {hard}
#define DETACH {detach}
#define DELAYED {delayed}
#define FIRES(h, vth) ({fires})
enum {{ BLOCK = 512 }};

/* A neuron parameter: element i of a step (in memory order) has value[(i / inner) % period]. One value
   for all: period 1; per channel of [C, H, W] steps: period C, inner H * W; per neuron: period N, inner 1. */
typedef struct {{ const real* value; int64_t inner, period; }} param;

/* A batch norm fused in front of the recurrence: the input current of element i is alpha * y[i] + beta (plus
   residual[i] when given, e.g. a block's shortcut, itself normalised as ralpha * residual[i] + rbeta when
   rnorm), with alpha, beta the per-channel affine of the normalisation; mean, rmean: the batch means, for the
   backward's centred sums. NULL where a call has no normalisation. */
typedef struct {{ param alpha, beta, mean; const io* residual; param ralpha, rbeta, rmean; int rnorm; }} norm;

/* Ask the memory for the n elements from p ahead of their use (to be read / to be written): a block's
   step is one short run of memory, T runs far apart, too short for the hardware prefetcher to ramp up. */
static inline void prefetch_read(const void* p, int64_t bytes)
{{
    for (int64_t j = 0; j < bytes; j += 64) __builtin_prefetch((const char*)p + j, 0, 1);
}}

/* bytes from src to dst. With stream, by non-temporal stores where the CPU has them: dst's cache lines
   are written without being read first, which halves the traffic of a large output not read again soon. */
static inline void store_row(void* dst, const void* src, int64_t bytes, int stream)
{{
#if defined(__AVX__)
    if (stream) {{
        char* d = dst;
        const char* c = src;
        int64_t i = 0;
        for (; i < bytes && ((uintptr_t)(d + i) & 31); ++i) d[i] = c[i];
        for (; i + 32 <= bytes; i += 32)
            _mm256_stream_si256((__m256i*)(d + i), _mm256_loadu_si256((const __m256i*)(c + i)));
        for (; i < bytes; ++i) d[i] = c[i];
        return;
    }}
#endif
    memcpy(dst, src, (size_t)bytes);
}}

/* A stored value as real, and a spike (0, 1 or NaN: exact) or a gradient as stored (bfloat16: rounded to
   nearest even as torch's conversion does; NaN stays NaN). */
static inline real load(io v)
{{
#if BF16
    union {{ uint32_t u; float f; }} c = {{ (uint32_t)v << 16 }};
    return c.f;
#else
    return v;
#endif
}}
static inline io store_spike(real s)
{{
#if BF16
    union {{ float f; uint32_t u; }} c = {{ s }};
    return (io)(c.u >> 16);  /* 0 and 1 exactly; a NaN spike is a quiet NaN (arithmetic made it): stays NaN */
#else
    return s;
#endif
}}
static inline io store_grad(real g)
{{
#if BF16
    union {{ float f; uint32_t u; }} c = {{ g }};
    return g != g ? (io)0x7FC0 : (io)((c.u + 0x7FFF + ((c.u >> 16) & 1)) >> 16);
#else
    return g;
#endif
}}

/* Order the non-temporal stores of this call before whatever reads the outputs next. */
static inline void store_fence(void)
{{
#if defined(__AVX__)
    _mm_sfence();
#endif
}}

/* The values of p for the n elements from b on, run by run: a run of consecutive values when each element
   has its own (inner 1, e.g. per channel of a channels-last step), else a run of one value repeated. */
static void gather(const param* p, int64_t b, int64_t n, real* out)
{{
    int64_t r = b % p->inner, j = b / p->inner % p->period;
    if (p->period == 1) {{
        for (int64_t i = 0; i < n; ++i) out[i] = p->value[0];
        return;
    }}
    for (int64_t i = 0; i < n;) {{
        if (p->inner == 1) {{
            const int64_t run = n - i < p->period - j ? n - i : p->period - j;
            for (int64_t q = 0; q < run; ++q) out[i + q] = p->value[j + q];
            i += run;
            j = j + run == p->period ? 0 : j + run;
        }} else {{
            const int64_t run = n - i < p->inner - r ? n - i : p->inner - r;
            for (int64_t q = 0; q < run; ++q) out[i + q] = p->value[j];
            i += run;
            r += run;
            if (r == p->inner) {{
                r = 0;
                if (++j == p->period) j = 0;
            }}
        }}
    }}
}}

/* The input current of element i of a step: x[i], or with a fused normalisation (NRM 1; NRM 2: with a
   residual; NRM 3: with a normalised residual) alpha[i] * x[i] + beta[i] (+ r[i], or + ra[i] * r[i] + rb[i]).
   a: alpha, beta, ralpha, rbeta of the block's elements. Inlined with NRM constant. */
static inline real drive(const io* xt, const io* rt, real (*a)[BLOCK], int64_t i, const int nrm)
{{
    if (!nrm) return load(xt[i]);
    const real v = a[0][i] * load(xt[i]) + a[1][i];
    if (nrm == 1) return v;
    return nrm == 2 ? v + load(rt[i]) : v + (a[2][i] * load(rt[i]) + a[3][i]);
}}

/* NRM of a call: 0 without normalisation, 1 with, 2 with a residual too, 3 with a normalised residual. */
static inline int norm_kind(const norm* nm) {{ return nm ? (nm->residual ? (nm->rnorm ? 3 : 2) : 1) : 0; }}

/* The affines of elements [b, b + n) into a (see drive). */
static void gather_norm(const norm* nm, int nrm, int64_t b, int64_t n, real (*a)[BLOCK])
{{
    gather(&nm->alpha, b, n, a[0]);
    gather(&nm->beta, b, n, a[1]);
    if (nrm == 3) {{
        gather(&nm->ralpha, b, n, a[2]);
        gather(&nm->rbeta, b, n, a[3]);
    }}
}}
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

/* The time loop of the n elements from x, s, h (NULL: not kept) on, steps N apart, carried state u[n].
   Element i's parameters are decay[i * k], scale[i * k], vth[i * k]: k = 0 (the same for all, held in
   registers) or 1 (one each); inlined with k constant. Adds the spikes of step t to counts[t]. */
static inline __attribute__((always_inline)) void
forward_steps(const io* x, const io* r, io* s, real* h, real* u, int64_t* counts, int64_t T, int64_t N, int64_t n,
              const real* decay, const real* scale, const real* vth, real vreset, const int64_t k, int stream,
              real (*a)[BLOCK], const int nrm)
{{
    io srow[BLOCK];  /* one step of the block, in cache, then stored */
    real hrow[BLOCK];
    for (int64_t t = 0; t < T; ++t) {{
        const io* xt = x + t * N;
        const io* rt = nrm >= 2 ? r + t * N : 0;
        int32_t fired = 0;  /* n <= BLOCK: 32 bits, narrower vector sums */
        if (t + 1 < T) {{
            prefetch_read(xt + N, n * (int64_t)sizeof(io));
            if (nrm >= 2) prefetch_read(rt + N, n * (int64_t)sizeof(io));
        }}
        if (h) {{
            for (int64_t i = 0; i < n; ++i) {{
                real spike;
                hrow[i] = membrane(u[i], drive(xt, rt, a, i, nrm), decay[i * k], scale[i * k], vth[i * k], vreset);
                fired += step(hrow[i], &spike, u + i, vth[i * k], vreset);
                srow[i] = store_spike(spike);
            }}
            store_row(h + t * N, hrow, n * (int64_t)sizeof(real), stream);
        }} else {{
            for (int64_t i = 0; i < n; ++i) {{
                real spike;
                fired += step(membrane(u[i], drive(xt, rt, a, i, nrm), decay[i * k], scale[i * k], vth[i * k],
                                       vreset), &spike, u + i, vth[i * k], vreset);
                srow[i] = store_spike(spike);
            }}
        }}
        store_row(s + t * N, srow, n * (int64_t)sizeof(io), stream);
        counts[t] += fired;
    }}
}}

/* forward_steps with NRM as a constant (norm_kind of the call). */
#define FORWARD_STEPS(K, ...) \
    (nrm == 0 ? forward_steps(__VA_ARGS__, K, stream, a, 0) \
     : nrm == 1 ? forward_steps(__VA_ARGS__, K, stream, a, 1) \
     : nrm == 2 ? forward_steps(__VA_ARGS__, K, stream, a, 2) \
     : forward_steps(__VA_ARGS__, K, stream, a, 3))

/* x, s, h: [T][N]; elements [begin, end) of each step. h may be NULL (inference), u_out (the final state) too.
   p: decay, input scale, threshold, initial membrane. counts[t] receives the spikes of step t in this range.
   stream: store s and h with non-temporal stores (see store_row). nm: a fused normalisation of x, or NULL. */
static void forward_range(const io* x, io* s, real* h, real* u_out, int64_t* counts,
                          int64_t T, int64_t N, int64_t begin, int64_t end, const param* p, real vreset, int stream,
                          const norm* nm)
{{
    real u[BLOCK], decay[BLOCK], scale[BLOCK], vth[BLOCK], a[4][BLOCK];
    const int uniform = p[0].period == 1 && p[1].period == 1 && p[2].period == 1, nrm = norm_kind(nm);
    const real decay0 = p[0].value[0], scale0 = p[1].value[0], vth0 = p[2].value[0];
    const io* r = nrm >= 2 ? nm->residual : 0;
    for (int64_t t = 0; t < T; ++t) counts[t] = 0;
    for (int64_t b = begin; b < end; b += BLOCK) {{
        const int64_t n = end - b < BLOCK ? end - b : BLOCK;
        gather(p + 3, b, n, u);
        if (nrm) gather_norm(nm, nrm, b, n, a);
        if (uniform) {{
            FORWARD_STEPS(0, x + b, r ? r + b : 0, s + b, h ? h + b : 0, u, counts, T, N, n, &decay0, &scale0, &vth0,
                          vreset);
        }} else {{
            gather(p, b, n, decay);
            gather(p + 1, b, n, scale);
            gather(p + 2, b, n, vth);
            FORWARD_STEPS(1, x + b, r ? r + b : 0, s + b, h ? h + b : 0, u, counts, T, N, n, decay, scale, vth, vreset);
        }}
        if (u_out)
            for (int64_t i = 0; i < n; ++i) u_out[b + i] = u[i];
    }}
    store_fence();
}}

/* forward_range over the ranges of bounds (FOR_RANGES), range k's counts at counts + k * counts_stride. */
void lif_forward(const io* x, io* s, real* h, real* u_out, int64_t* counts, int64_t counts_stride,
                 int64_t T, int64_t N, const int64_t* bounds, int64_t nranges, const param* p, real vreset,
                 int stream, const norm* nm)
{{
    FOR_RANGES(forward_range(x, s, h, u_out, counts + k * counts_stride, T, N, begin, end, p, vreset, stream, nm))
}}

/* The time loop again, keeping only h: into h[T][n] (steps n apart) for the n elements from x on. */
static inline __attribute__((always_inline)) void
membrane_steps(const io* x, const io* r, real* h, real* u, int64_t T, int64_t N, int64_t n,
               const real* decay, const real* scale, const real* vth, real vreset, const int64_t k,
               real (*a)[BLOCK], const int nrm)
{{
    for (int64_t t = 0; t < T; ++t) {{
        const io* xt = x + t * N;
        const io* rt = nrm >= 2 ? r + t * N : 0;
        real* ht = h + t * n;
        if (t + 1 < T) {{
            prefetch_read(xt + N, n * (int64_t)sizeof(io));
            if (nrm >= 2) prefetch_read(rt + N, n * (int64_t)sizeof(io));
        }}
        for (int64_t i = 0; i < n; ++i) {{
            real spike;
            ht[i] = membrane(u[i], drive(xt, rt, a, i, nrm), decay[i * k], scale[i * k], vth[i * k], vreset);
            step(ht[i], &spike, u + i, vth[i * k], vreset);
        }}
    }}
}}

/* membrane_steps with NRM as a constant. */
#define MEMBRANE_STEPS(K, ...) \
    (nrm == 0 ? membrane_steps(__VA_ARGS__, K, a, 0) \
     : nrm == 1 ? membrane_steps(__VA_ARGS__, K, a, 1) \
     : nrm == 2 ? membrane_steps(__VA_ARGS__, K, a, 2) \
     : membrane_steps(__VA_ARGS__, K, a, 3))

/* h of elements [b, b + n) of x ([T][N]; n <= BLOCK) into h[T][n], for the backward: compiled here, with
   the forward's arithmetic, so it is bit-identical to the h the forward computed. p, nm as in lif_forward. */
void lif_membrane(const io* x, real* h, int64_t T, int64_t N, int64_t b, int64_t n, const param* p, real vreset,
                  const norm* nm)
{{
    real u[BLOCK], decay[BLOCK], scale[BLOCK], vth[BLOCK], a[4][BLOCK];
    const int nrm = norm_kind(nm);
    const io* r = nrm >= 2 ? nm->residual : 0;
    gather(p + 3, b, n, u);
    if (nrm) gather_norm(nm, nrm, b, n, a);
    if (p[0].period == 1 && p[1].period == 1 && p[2].period == 1) {{
        const real decay0 = p[0].value[0], scale0 = p[1].value[0], vth0 = p[2].value[0];
        MEMBRANE_STEPS(0, x + b, r ? r + b : 0, h, u, T, N, n, &decay0, &scale0, &vth0, vreset);
        return;
    }}
    gather(p, b, n, decay);
    gather(p + 1, b, n, scale);
    gather(p + 2, b, n, vth);
    MEMBRANE_STEPS(1, x + b, r ? r + b : 0, h, u, T, N, n, decay, scale, vth, vreset);
}}
"""

# Backward: fast-math lets the compiler vectorise exp/tanh of the surrogate (libmvec).
_BACKWARD = r"""
#include <stdlib.h>

static inline real surrogate(real x, real w) {{ return {derivative}; }}

void lif_membrane(const io* x, real* h, int64_t T, int64_t N, int64_t b, int64_t n, const param* p, real vreset,
                  const norm* nm);

/* out[j] += acc[i] for the n elements from b on, j the index of element i's value in p (its channel); run by
   run as gather reads them. For accumulators of type TYPE (real, double). */
#define DEFINE_FOLD(NAME, TYPE) \
static void NAME(const param* p, int64_t b, int64_t n, const TYPE* acc, double* out) \
{{ \
    int64_t r = b % p->inner, j = b / p->inner % p->period; \
    for (int64_t i = 0; i < n;) {{ \
        if (p->inner == 1 && p->period > 1) {{ \
            const int64_t run = n - i < p->period - j ? n - i : p->period - j; \
            for (int64_t q = 0; q < run; ++q) out[j + q] += acc[i + q]; \
            i += run; \
            j = j + run == p->period ? 0 : j + run; \
        }} else {{ \
            const int64_t run = n - i < p->inner - r ? n - i : p->inner - r; \
            double sum = 0; \
            for (int64_t q = 0; q < run; ++q) sum += acc[i + q]; \
            out[j] += sum; \
            i += run; \
            r += run; \
            if (r == p->inner) {{ \
                r = 0; \
                if (++j == p->period) j = 0; \
            }} \
        }} \
    }} \
}}
DEFINE_FOLD(fold, real)
DEFINE_FOLD(fold_double, double)

/* The reverse time loop of the n elements from gs, h, gh on; gs and gh steps N apart, h steps hN apart;
   g[n]: dL/d(final state) in, scratch after. Element i's parameters are decay[i * k], vth[i * k], w[i * k],
   scale[i * k], k = 0 or 1 as in forward_steps. g carries dL/du_t (immediate reset) or dL/dh_{{t+1}}
   (DELAYED: the final state is h). With NRM (a fused normalisation of the input y, steps N apart), adds
   dL/dx and dL/dx * (y - mean) over the steps into acc1[n], acc2[n]; with NRM 3 (a normalised residual r, steps
   N apart) dL/dx * (r - rmean) into acc3[n]. */
static inline __attribute__((always_inline)) void
backward_steps(const io* gs, const real* h, int64_t hN, io* gh, real* g, int64_t T, int64_t N, int64_t n,
               const real* decay, const real* vth, const real* w, const real* scale, real vreset, const int64_t k,
               int stream, const io* y, const real* mean, real* acc1, real* acc2, const io* r, const real* rmean,
               real* acc3, const int nrm)
{{
    io ght[BLOCK];  /* one step of the block, in cache, then stored */
    for (int64_t t = T - 1; t >= 0; --t) {{
        const real* ht = h + t * hN;
        const io* gst = gs + t * N;
        const io* yt = nrm ? y + t * N : 0;
        const io* rt = nrm == 3 ? r + t * N : 0;
        const int final_h = DELAYED && t == T - 1;
        if (t > 0) {{
            prefetch_read(gst - N, n * (int64_t)sizeof(io));
            if (hN == N) prefetch_read(ht - hN, n * (int64_t)sizeof(real));
        }}
        for (int64_t i = 0; i < n; ++i) {{
            const real hv = ht[i], th = vth[i * k], leak = DELAYED ? decay[i * k] : (real)1;
            const real fire = FIRES(hv, th) ? (real)1 : (real)0;
            const real sg = surrogate(hv - th, w[i * k]);
            /* d(carried state)/dh: the leak-and-reset path plus, unless detached, the spike's */
            const real jac = (HARD ? leak * ((real)1 - fire) : leak)
                           + (DETACH ? (real)0 : (HARD ? vreset - leak * hv : -th) * sg);
            const real grad_h = load(gst[i]) * sg + (final_h ? g[i] : g[i] * jac);
            const real grad_x = scale[i * k] * grad_h;
            ght[i] = store_grad(grad_x);
            g[i] = DELAYED ? grad_h : decay[i * k] * grad_h;
            if (nrm) {{
                acc1[i] += grad_x;
                acc2[i] += grad_x * (load(yt[i]) - mean[i]);
            }}
            if (nrm == 3) acc3[i] += grad_x * (load(rt[i]) - rmean[i]);
        }}
        store_row(gh + t * N, ght, n * (int64_t)sizeof(io), stream);
    }}
}}

/* backward_steps with NRM as a constant. */
#define BACKWARD_STEPS(K, ...) \
    (!nm ? backward_steps(__VA_ARGS__, K, stream, y, mean, acc1, acc2, r, rmean, acc3, 0) \
     : !nm->rnorm ? backward_steps(__VA_ARGS__, K, stream, y, mean, acc1, acc2, r, rmean, acc3, 1) \
     : backward_steps(__VA_ARGS__, K, stream, y, mean, acc1, acc2, r, rmean, acc3, 3))

/* The backward of the n elements from b on (n <= BLOCK), h steps hN apart from h. p: decay, threshold,
   surrogate width, input scale. With nm (the fused normalisation of the input y), adds the channel sums of
   dL/dx and dL/dx * (y - mean) to sums[0][C], sums[1][C], and with a normalised residual r those of
   dL/dx * (r - rmean) to sums[2][C]. */
static void backward_block(const io* gs, const real* gu, const real* h, int64_t hN, io* gh, int64_t T,
                           int64_t N, int64_t b, int64_t n, const param* p, real vreset, int stream,
                           const io* y, const norm* nm, double* sums)
{{
    real g[BLOCK], decay[BLOCK], vth[BLOCK], w[BLOCK], scale[BLOCK], mean[BLOCK], rmean[BLOCK];
    real acc1[BLOCK], acc2[BLOCK], acc3[BLOCK];  /* over the T steps of one element: few terms, summed in real */
    const io* r = nm && nm->rnorm ? nm->residual + b : 0;
    for (int64_t i = 0; i < n; ++i) g[i] = gu ? gu[b + i] : (real)0;
    if (nm) {{
        gather(&nm->mean, b, n, mean);
        for (int64_t i = 0; i < n; ++i) acc1[i] = acc2[i] = acc3[i] = 0;
        y += b;
        if (r) gather(&nm->rmean, b, n, rmean);
    }}
    if (p[0].period == 1 && p[1].period == 1 && p[2].period == 1 && p[3].period == 1) {{
        const real decay0 = p[0].value[0], vth0 = p[1].value[0], w0 = p[2].value[0], scale0 = p[3].value[0];
        BACKWARD_STEPS(0, gs + b, h, hN, gh + b, g, T, N, n, &decay0, &vth0, &w0, &scale0, vreset);
    }} else {{
        gather(p, b, n, decay);
        gather(p + 1, b, n, vth);
        gather(p + 2, b, n, w);
        gather(p + 3, b, n, scale);
        BACKWARD_STEPS(1, gs + b, h, hN, gh + b, g, T, N, n, decay, vth, w, scale, vreset);
    }}
    if (nm) {{
        fold(&nm->mean, b, n, acc1, sums);
        fold(&nm->mean, b, n, acc2, sums + nm->mean.period);
        if (r) fold(&nm->mean, b, n, acc3, sums + 2 * nm->mean.period);
    }}
}}

/* scale * dL/dh (gh) for every step from dL/ds (gs), h (all [T][N]) and dL/d(final state) (gu[N], may be
   NULL); elements [begin, end) of each step (lif_backward: of every range of bounds). p: decay, threshold,
   surrogate width, input scale. stream: store gh with non-temporal stores. lif_backward returns 0. */
static void backward_range(const io* gs, const real* gu, const real* h, io* gh,
                           int64_t T, int64_t N, int64_t begin, int64_t end, const param* p, real vreset, int stream)
{{
    for (int64_t b = begin; b < end; b += BLOCK) {{
        const int64_t n = end - b < BLOCK ? end - b : BLOCK;
        backward_block(gs, gu, h + b, N, gh, T, N, b, n, p, vreset, stream, 0, 0, 0);
    }}
    store_fence();
}}
int lif_backward(const io* gs, const real* gu, const real* h, io* gh,
                 int64_t T, int64_t N, const int64_t* bounds, int64_t nranges, const param* p, real vreset, int stream)
{{
    FOR_RANGES(backward_range(gs, gu, h, gh, T, N, begin, end, p, vreset, stream))
    return 0;
}}

/* The same from the input x instead of h: each block's h is recomputed (lif_membrane) into a scratch
   [T][n] small enough to stay in cache (SCRATCH bytes). p: decay, input scale, threshold, initial
   membrane (as lif_forward), then surrogate width. nm: the forward's fused normalisation of x (or NULL);
   with it, sums[3][C] receives the channel sums of dL/d(alpha x + beta), of that times (x - mean), and (with a
   normalised residual) of that times (residual - rmean).
   Returns 0, or 1 when the scratch cannot be allocated. */
enum {{ SCRATCH = 256 * 1024 }};
static int backward_input_range(const io* gs, const real* gu, const io* x, io* gh,
                                int64_t T, int64_t N, int64_t begin, int64_t end, const param* p, real vreset,
                                int stream, const norm* nm, double* sums)
{{
    int64_t block = SCRATCH / (T * (int64_t)sizeof(real)) / 16 * 16;
    block = block < 16 ? 16 : block > BLOCK ? BLOCK : block;
    real* h = malloc((size_t)(T * block) * sizeof(real));
    if (!h) return 1;
    const param order[4] = {{ p[0], p[2], p[4], p[1] }};  /* decay, threshold, width, input scale */
    for (int64_t b = begin; b < end; b += block) {{
        const int64_t n = end - b < block ? end - b : block;
        lif_membrane(x, h, T, N, b, n, p, vreset, nm);
        backward_block(gs, gu, h, n, gh, T, N, b, n, order, vreset, stream, x, nm, sums);
    }}
    free(h);
    store_fence();
    return 0;
}}

/* backward_input_range over the ranges of bounds (FOR_RANGES), range k's sums at sums + k * sums_stride (with nm). */
int lif_backward_input(const io* gs, const real* gu, const io* x, io* gh,
                       int64_t T, int64_t N, const int64_t* bounds, int64_t nranges, const param* p, real vreset,
                       int stream, const norm* nm, double* sums, int64_t sums_stride)
{{
    int failed = 0;
    FOR_RANGES_FAILED(backward_input_range(gs, gu, x, gh, T, N, begin, end, p, vreset, stream, nm,
                                           nm ? sums + k * sums_stride : 0))
    return failed;
}}

/* Channel sums of a and of a * (b - centre) over elements [begin, end) of every step of a[T][N], b[T][N] into
   out[0][C], out[1][C] (channel of an element: its value index in the param centre); in double. */
static void channel_sums_range(const io* a, const io* b, int64_t T, int64_t N, int64_t begin, int64_t end,
                               const param* centre, double* out)
{{
    double acc1[BLOCK], acc2[BLOCK];  /* in double: a variance is the difference of two such sums */
    real c[BLOCK];
    for (int64_t s = begin; s < end; s += BLOCK) {{
        const int64_t n = end - s < BLOCK ? end - s : BLOCK;
        gather(centre, s, n, c);
        for (int64_t i = 0; i < n; ++i) acc1[i] = acc2[i] = 0;
        for (int64_t t = 0; t < T; ++t) {{
            const io* at = a + t * N + s;
            const io* bt = b + t * N + s;
            if (t + 1 < T) {{
                prefetch_read(at + N, n * (int64_t)sizeof(io));
                if (b != a) prefetch_read(bt + N, n * (int64_t)sizeof(io));
            }}
            for (int64_t i = 0; i < n; ++i) {{
                const double v = load(at[i]);
                acc1[i] += v;
                acc2[i] += v * ((double)load(bt[i]) - c[i]);
            }}
        }}
        fold_double(centre, s, n, acc1, out);
        fold_double(centre, s, n, acc2, out + centre->period);
    }}
}}

/* channel_sums_range over the ranges of bounds (FOR_RANGES), range k's sums at out + k * out_stride. */
void channel_sums(const io* a, const io* b, int64_t T, int64_t N, const int64_t* bounds, int64_t nranges,
                  const param* centre, double* out, int64_t out_stride)
{{
    FOR_RANGES(channel_sums_range(a, b, T, N, begin, end, centre, out + k * out_stride))
}}

/* The input gradient of a batch norm from its output gradient gx, elements [begin, end) of every step
   ([T][N]): gy = alpha (gx - m1 - (y - mean) m2), per channel (c: alpha, m1, mean, m2). gy may be gx. */
static void norm_input_grad_range(const io* gx, const io* y, io* gy, int64_t T, int64_t N, int64_t begin,
                                  int64_t end, const param* c, int stream)
{{
    real alpha[BLOCK], m1[BLOCK], mean[BLOCK], m2[BLOCK];
    io row[BLOCK];
    for (int64_t b = begin; b < end; b += BLOCK) {{
        const int64_t n = end - b < BLOCK ? end - b : BLOCK;
        gather(c, b, n, alpha);
        gather(c + 1, b, n, m1);
        gather(c + 2, b, n, mean);
        gather(c + 3, b, n, m2);
        for (int64_t t = 0; t < T; ++t) {{
            const io* gxt = gx + t * N + b;
            const io* yt = y + t * N + b;
            if (t + 1 < T) {{
                prefetch_read(gxt + N, n * (int64_t)sizeof(io));
                prefetch_read(yt + N, n * (int64_t)sizeof(io));
            }}
            for (int64_t i = 0; i < n; ++i)
                row[i] = store_grad(alpha[i] * (load(gxt[i]) - m1[i] - (load(yt[i]) - mean[i]) * m2[i]));
            store_row(gy + t * N + b, row, n * (int64_t)sizeof(io), stream);
        }}
    }}
    store_fence();
}}

/* norm_input_grad_range over the ranges of bounds (FOR_RANGES). */
void norm_input_grad(const io* gx, const io* y, io* gy, int64_t T, int64_t N, const int64_t* bounds,
                     int64_t nranges, const param* c, int stream)
{{
    FOR_RANGES(norm_input_grad_range(gx, y, gy, T, N, begin, end, c, stream))
}}
"""

#: Input dtype -> (the C type and the ctypes type of the arithmetic, the torch dtype of the state and of ``h``).
#: bfloat16 inputs (mixed precision) are read and their spikes and input gradient written as bfloat16.
_DTYPES = {
    torch.float32: ("float", ctypes.c_float, torch.float32),
    torch.float64: ("double", ctypes.c_double, torch.float64),
    torch.bfloat16: ("float", ctypes.c_float, torch.float32),
}


def _sources(spec: NeuronSpec, dtype: torch.dtype) -> tuple[str, str]:
    """C sources of the forward and the backward translation units."""
    header = _HEADER.format(
        real=_DTYPES[dtype][0],
        bf16=int(dtype == torch.bfloat16),
        hard=int(spec.hard_reset),
        detach=int(spec.detach_reset),
        delayed=int(spec.delayed),
        fires="(h) > (vth)" if spec.strict else "(h) >= (vth)",
    ) + RANGES_C
    return (header + _FORWARD.format() + OPENMP_EXPORT_C,
            header + _BACKWARD.format(derivative=c_expression(spec.surrogate.derivative)))


# Forward: no FMA contraction (bit-exact h). Backward: fast-math, compiled only (-c): linking
# with -ffast-math would pull in crtfastmath.o and flush denormals process-wide.
_FORWARD_FLAGS = ["-ffp-contract=off"]
_BACKWARD_FLAGS = ["-ffast-math"]


def _compile(compiler: str, sources: tuple[str, str], library: Path) -> None:
    """Build ``library`` from the two sources (with OpenMP where it applies: :func:`.toolchain.build_with_openmp`),
    using its (private, empty) folder for the objects."""

    def build(openmp: list[str]) -> None:
        objects = []
        for name, source, extra in zip(("forward", "backward"), sources, (_FORWARD_FLAGS, _BACKWARD_FLAGS)):
            source_file, object_file = library.parent / f"{name}.c", library.parent / f"{name}.o"
            source_file.write_text(source)
            run_compiler([compiler, *FLAGS, *extra, *openmp, "-c", str(source_file), "-o", str(object_file)])
            objects.append(str(object_file))
        run_compiler([compiler, *openmp, "-shared", *objects, "-o", str(library), "-lm"])

    build_with_openmp(build)


@functools.lru_cache(maxsize=None)
def load_kernel(spec: NeuronSpec, dtype: torch.dtype):
    """Compile (once, cached on disk) and load the kernel for ``spec``; None if impossible (one warning)."""
    compiler = find_compiler()
    if compiler is None:
        return None
    sources = _sources(spec, dtype)
    flags = [*FLAGS, *_FORWARD_FLAGS, *_BACKWARD_FLAGS]
    key = "\0".join([*sources, compiler_identity(compiler), *flags, machine_tag(), openmp_tag()])
    key = hashlib.sha256(key.encode()).hexdigest()
    lib = load_library(cache_dir(), f"lif_{key[:24]}", key, functools.partial(_compile, compiler, sources))
    if lib is None:
        return None
    real = _DTYPES[dtype][1]
    ptr, i64 = ctypes.c_void_p, ctypes.c_int64
    lib.lif_forward.argtypes = [ptr, ptr, ptr, ptr, ptr, i64, i64, i64, ptr, i64, ptr, real, ctypes.c_int, ptr]
    lib.lif_forward.restype = None
    lib.lif_backward.argtypes = [ptr, ptr, ptr, ptr, i64, i64, ptr, i64, ptr, real, ctypes.c_int]
    lib.lif_backward_input.argtypes = [ptr, ptr, ptr, ptr, i64, i64, ptr, i64, ptr, real, ctypes.c_int, ptr, ptr, i64]
    lib.lif_backward.restype = lib.lif_backward_input.restype = ctypes.c_int
    lib.channel_sums.argtypes = [ptr, ptr, i64, i64, ptr, i64, ptr, ptr, i64]
    lib.channel_sums.restype = None
    lib.norm_input_grad.argtypes = [ptr, ptr, ptr, i64, i64, ptr, i64, ptr, ctypes.c_int]
    lib.norm_input_grad.restype = None
    lib.openmp = bool(lib.kernel_openmp())
    return lib


def supports(x: Tensor, spec: NeuronSpec, decay, input_scale, v_th, width, v_init) -> bool:
    """True when the compiled kernel can run this call (else use the torch kernel): float32/float64/bfloat16
    CPU tensors, every parameter a float or a tensor broadcastable to one step (per layer, channel, neuron).
    With bfloat16 the state and ``h`` are float32, and so are the parameter gradients' reductions."""
    if x.device.type != "cpu" or x.dtype not in _DTYPES:
        return False
    if not all(fits_step(v, x.shape[1:]) for v in (decay, input_scale, v_th, width, v_init)):
        return False
    return load_kernel(spec, x.dtype) is not None


class _Param(ctypes.Structure):
    """The C ``param``: element ``i`` of a step (in memory order) has ``value[(i / inner) % period]``."""

    _fields_ = [("value", ctypes.c_void_p), ("inner", ctypes.c_int64), ("period", ctypes.c_int64)]


def _memory_order(step: Tensor) -> list[int]:
    """The dims of ``step`` from the outermost in memory to the innermost, then those of size 1."""
    order = sorted((d for d in range(step.dim()) if step.shape[d] > 1), key=lambda d: -step.stride(d))
    return order + [d for d in range(step.dim()) if d not in order]


def _params(values, step: Tensor):
    """The C ``param[len(values)]`` of neuron parameters for steps laid out like ``step`` (``x[0]``, not empty).

    A tensor parameter varies along some dims of the step; in memory order, the run of dims from the
    outermost to the innermost of those holds ``period`` values (stored compactly, in memory order), each
    repeated for the ``inner`` elements of the dims inside the run: a channel's value for its whole
    ``H x W`` plane (``[C, 1, 1]``, channels first), one value per element for a per-neuron parameter.
    One value is a C number. The array keeps what it points to (``.values``).
    """
    _, real, dtype = _DTYPES[step.dtype]
    params, kept = [], []
    for value in values:
        if not isinstance(value, Tensor) or value.numel() == 1:
            kept.append(real(float(value)))
            params.append(_Param(ctypes.addressof(kept[-1]), 1, 1))
            continue
        full = value.detach().to(dtype).expand(step.shape).permute(_memory_order(step))
        varying = [k for k in range(step.dim()) if full.shape[k] > 1 and full.stride(k) != 0]
        first, last = varying[0], varying[-1]
        index = [0] * full.dim()
        index[first:last + 1] = [slice(None)] * (last + 1 - first)
        kept.append(full[tuple(index)].reshape(-1).contiguous())
        params.append(_Param(kept[-1].data_ptr(), math.prod(full.shape[last + 1:]), kept[-1].numel()))
    array = (_Param * len(params))(*params)
    array.values = kept
    return array


#: Outputs from this size on (bytes) are stored with non-temporal stores: far larger than the caches, they
#: are not read back soon, and writing a cache line without reading it first saves a third of the traffic.
_STREAM_BYTES = 32 << 20


def _streams(t: Tensor) -> int:
    """1 when the outputs of a kernel call on ``t`` go to memory with non-temporal stores (see ``store_row``)."""
    return int(t.numel() * t.element_size() >= _STREAM_BYTES)


class _Norm(ctypes.Structure):
    """The C ``norm``: a batch norm fused in front of the recurrence (per-channel ``alpha``, ``beta``, ``mean``
    as :class:`_Param`), the residual's address or None, and the residual's own normalisation (``rnorm`` 1)."""

    _fields_ = [("alpha", _Param), ("beta", _Param), ("mean", _Param), ("residual", ctypes.c_void_p),
                ("ralpha", _Param), ("rbeta", _Param), ("rmean", _Param), ("rnorm", ctypes.c_int)]


def fused_norm(alpha: Tensor, beta: Tensor, mean: Tensor, residual: Tensor | None, step: Tensor,
               residual_norm: tuple[Tensor, Tensor, Tensor] | None = None) -> _Norm:
    """The C ``norm`` of input currents ``alpha * y + beta (+ residual)`` for steps laid out like ``step``
    (``y[0]``); ``alpha``, ``beta``, ``mean`` broadcast to one step (``[C, 1, 1]`` for ``[B, C, H, W]``), the
    residual is laid out like ``y``; ``residual_norm``: ``(alpha, beta, mean)`` of the residual's own
    normalisation (it then contributes ``alpha * residual + beta``). Keeps what it points to (``.kept``)."""
    params = _params((alpha, beta, mean, *(residual_norm or (alpha, beta, mean))), step)
    norm = _Norm(params[0], params[1], params[2], residual.data_ptr() if residual is not None else None,
                 params[3], params[4], params[5], int(residual_norm is not None))
    norm.kept = (params, residual)
    return norm


def cpu_forward(x: Tensor, spec: NeuronSpec, decay, input_scale, v_th, v_init, keep_h: bool,
                norm: _Norm | None = None, final: bool = True):
    """Compiled forward; same contract as :func:`.fused.forward_loop` (counts come for free). ``norm``
    (:func:`fused_norm`): the input currents are ``alpha * x + beta (+ residual)`` instead of ``x``;
    ``final=False``: the final state is not written (None returned for it)."""
    lib = load_kernel(spec, x.dtype)
    x = dense(x)
    steps = x.shape[0]
    n = x[0].numel()
    state = _DTYPES[x.dtype][2]
    spikes = empty_like(x)
    h = empty_like(x, state) if keep_h else None
    u = torch.empty_like(x[0], dtype=state) if final else None  # one step: small, and not a block's size to keep
    ranges = thread_ranges(n)
    # one row per thread, each on cache lines of its own (torch aligns allocations to 64 bytes): threads
    # adding to counters on one shared line would pass the line back and forth on every block and step
    counts = torch.empty(len(ranges), -(-steps // 8) * 8, dtype=torch.int64)[:, :steps]
    if not ranges:  # an empty batch
        return spikes, h, u, counts.sum(0)
    params = _params((decay, input_scale, v_th, v_init), x[0])
    parallel(
        lib.lif_forward,
        ranges,
        lambda k, bounds, count: (x.data_ptr(), spikes.data_ptr(), h.data_ptr() if h is not None else None,
                                  u.data_ptr() if u is not None else None, counts[k].data_ptr(), counts.stride(0),
                                  steps, n, bounds, count, params, spec.v_reset, _streams(x),
                                  ctypes.byref(norm) if norm is not None else None),
        lib.openmp,
    )
    return spikes, h, u, counts.sum(0)


def _backward(lib, function, grad_spikes: Tensor, grad_u_final, state: Tensor, params, spec: NeuronSpec,
              extra=lambda k: ()) -> Tensor:
    """Run a compiled backward ``function`` of ``lib`` over ``state`` (``h`` or ``x``, ``[T, ...]``); returns its
    ``dL/dh`` output, laid out like ``state``. ``extra(k)``: further arguments of the call starting at range ``k``."""
    gs = like(grad_spikes.to(state.dtype), state)
    gu = like(grad_u_final.to(_DTYPES[state.dtype][2]), state[0]) if grad_u_final is not None else None
    grad_h = empty_like(state)
    steps, n = state.shape[0], state[0].numel()
    ranges = thread_ranges(n)
    if not ranges:  # an empty batch
        return grad_h
    params = _params(params, state[0])
    stream = _streams(state)
    failed = parallel(function, ranges,
                      lambda k, bounds, count: (gs.data_ptr(), gu.data_ptr() if gu is not None else None,
                                                state.data_ptr(), grad_h.data_ptr(), steps, n, bounds, count,
                                                params, spec.v_reset, stream, *extra(k)),
                      lib.openmp)
    if any(failed):
        raise MemoryError("the CPU neuron kernel could not allocate its backward scratch memory")
    return grad_h


def cpu_bptt(grad_spikes: Tensor, grad_u_final, h: Tensor, s: Tensor, spec: NeuronSpec, decay, v_th, width,
             scale=1.0) -> Tensor:
    """Compiled backward recurrence; same contract as :func:`.fused.bptt`."""
    lib = load_kernel(spec, h.dtype)
    return _backward(lib, lib.lif_backward, grad_spikes, grad_u_final, h, (decay, v_th, width, scale), spec)


def cpu_bptt_from_input(grad_spikes: Tensor, grad_u_final, x: Tensor, spec: NeuronSpec, decay, input_scale, v_th,
                        width, v_init) -> Tensor:
    """The input gradient ``dL/dx`` from the forward's input ``x[T, ...]``: each block of neurons recomputes
    its ``h`` (bit-identical to the forward's) in a cache-sized scratch, so the forward keeps no ``h``."""
    return cpu_norm_bptt(grad_spikes, grad_u_final, dense(x), spec, (decay, input_scale, v_th, v_init, width))[0]


def cpu_norm_bptt(grad_spikes: Tensor, grad_u_final, x: Tensor, spec: NeuronSpec, values, norm: _Norm | None = None):
    """:func:`cpu_bptt_from_input` (``values``: decay, input scale, threshold, initial membrane, width) on a dense
    ``x``, through the forward's fused normalisation ``norm`` if given. Returns ``(dL/d(input current),
    sums)``: with ``norm``, ``sums[3, C]`` (float64) are the channel sums of that gradient and of it times
    ``x - mean`` (and ``sums[2]`` of it times ``residual - rmean`` with a normalised residual; zero without);
    else None."""
    lib = load_kernel(spec, x.dtype)
    count = len(thread_ranges(x[0].numel()))
    sums = torch.zeros(max(count, 1), 3, norm.mean.period, dtype=torch.float64) if norm is not None else None
    extra = ((lambda k: (ctypes.byref(norm), sums[k].data_ptr(), sums.stride(0))) if norm is not None
             else (lambda k: (None, None, 0)))
    grad = _backward(lib, lib.lif_backward_input, grad_spikes, grad_u_final, x, values, spec, extra)
    return grad, sums.sum(0) if sums is not None else None


def channel_sums(a: Tensor, b: Tensor, centre: Tensor, spec: NeuronSpec) -> Tensor:
    """Channel sums of ``a`` and of ``a * (b - centre)`` over all steps of dense ``a[T, ...]``, ``b[T, ...]`` laid out
    alike: ``[2, C]`` float64. ``centre``: one value per channel, broadcasting to one step (``[C, 1, 1]`` for
    ``[B, C, H, W]``)."""
    lib = load_kernel(spec, a.dtype)
    ranges = thread_ranges(a[0].numel())
    layout = _params((centre,), a[0])
    sums = torch.zeros(max(len(ranges), 1), 2, layout[0].period, dtype=torch.float64)
    parallel(lib.channel_sums, ranges,
             lambda k, bounds, count: (a.data_ptr(), b.data_ptr(), a.shape[0], a[0].numel(), bounds, count, layout,
                                       sums[k].data_ptr(), sums.stride(0)),
             lib.openmp)
    return sums.sum(0)


def norm_input_grad(grad_x: Tensor, y: Tensor, coefficients, spec: NeuronSpec, out: Tensor) -> Tensor:
    """``out = alpha (grad_x - m1 - (y - mean) m2)`` per channel (``coefficients``: alpha, m1, mean, m2, each
    broadcasting to one step) for dense ``grad_x``, ``y``, ``out`` laid out alike (``out`` may be ``grad_x``)."""
    lib = load_kernel(spec, y.dtype)
    params = _params(coefficients, y[0])
    stream = _streams(y)
    parallel(lib.norm_input_grad, thread_ranges(y[0].numel()),
             lambda k, bounds, count: (grad_x.data_ptr(), y.data_ptr(), out.data_ptr(), y.shape[0], y[0].numel(),
                                       bounds, count, params, stream),
             lib.openmp)
    return out


#: The compiled loops, for :class:`.fused.Multistep`.
CPU_LOOPS = SimpleNamespace(forward=cpu_forward, bptt=cpu_bptt, bptt_from_input=cpu_bptt_from_input,
                            recomputes=lambda x: True)
