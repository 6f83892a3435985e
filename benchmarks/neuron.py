"""Benchmark spikeforge's multi-step LIF layer against SpikingJelly, snnTorch and Norse.

Our backends: ``reference`` (autograd loop), ``fused`` (torch operations,
hand-written backward), ``triton`` (both time loops as Triton kernels; CUDA
only) and ``auto`` (what users get: the Triton loops on CUDA, the compiled C
loops on CPU when a C compiler is available; the default baseline of all
ratios). SpikingJelly runs its default implementation and, on CUDA, also its
Triton and torch ones side by side (``spikingjelly-triton``, ``spikingjelly-torch``).

Every implementation runs the same neuron on a time-first input ``[T, B, 128, 16, 16]``::

    h_t = 0.5 * u_{t-1} + 0.5 * x_t      (u_{-1} = 0)
    s_t = H(h_t - 1)                     surrogate gradient: d/dz sigmoid(4 z)
    u_t = h_t * (1 - s_t)                hard reset to 0, gradient flows through the reset

The script first checks that all implementations produce the same spikes and
input gradients as our fused backend, then times forward (``torch.no_grad``)
and forward+backward (``spikes.backward(g)``) in interleaved rounds, measures
the peak extra memory of forward+backward, and compares everything with a
memory-traffic floor (a plain tensor copy of the same bytes).

    python benchmarks/neuron.py                      # full run (several minutes on CPU)
    python benchmarks/neuron.py --quick --no-memory  # smoke run
    python benchmarks/neuron.py --device cuda        # on a GPU (torch.cuda.synchronize around every timed call)

Results are printed and written to ``benchmarks/results/neuron.json``;
``benchmarks/README.md`` explains every column. Peer libraries are optional.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import importlib.metadata
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor
from train_step import check_device  # the one-line --device check both benchmarks share

# ---------------------------------------------------------------------------
# The common neuron. Every peer is configured to compute exactly this.
# ---------------------------------------------------------------------------
DECAY = 0.5  # leak per step
INPUT_SCALE = 0.5  # gain on the input; SpikingJelly and Norse tie it to 1 - DECAY
V_TH = 1.0
V_RESET = 0.0  # snnTorch's reset_mechanism="zero" can only reset to 0
ALPHA = 4.0  # sigmoid surrogate: derivative of sigmoid(ALPHA * (h - V_TH))
assert INPUT_SCALE == 1.0 - DECAY and V_RESET == 0.0, "the peer configurations below rely on this"

FEATURES = (128, 16, 16)  # one time step is [batch, *FEATURES]
QUICK_FEATURES = (16, 8, 8)
INPUT_MEAN = 0.8  # x ~ N(0.8, 1): about 19% of the neurons fire per step
WARMUP_ROUNDS = 1
RESULTS = Path(__file__).resolve().parent / "results" / "neuron.json"
MEMORY_METHOD_CPU = (
    "peak RSS increase of one forward+backward in a fresh subprocess: baseline = current RSS after "
    "imports, a tiny warm-up call and allocating the inputs (x, g); the RSS high-water mark is then "
    "reset (/proc/self/clear_refs) and read back (VmHWM in /proc/self/status) after the call. "
    "The subprocess runs with MALLOC_MMAP_THRESHOLD_=65536 so that freed tensors go back to the OS "
    "and RSS follows live tensor memory. Includes the returned spikes and x.grad."
)
MEMORY_METHOD_CUDA = (
    "torch.cuda.max_memory_allocated() during one forward+backward (after torch.cuda.reset_peak_memory_stats()) "
    "minus memory_allocated() before it (inputs allocated; one full-size warm-up call first, in the same "
    "process). Includes the returned spikes and x.grad."
)


# ---------------------------------------------------------------------------
# Implementations
# ---------------------------------------------------------------------------
Runner = Callable[[Tensor], Tensor]  # x[T, ...] -> spikes[T, ...], no state kept between calls


@dataclass(frozen=True)
class Impl:
    """One benchmarked implementation of the common neuron.

    ``strict`` is the value of our own ``strict`` option that reproduces the
    implementation's threshold comparison (``h > v_th`` vs ``h >= v_th``); the
    agreement check compares it against our fused neuron built with that value.
    An implementation without an input gain is fed ``input_gain * x``, computed
    outside the timed region; its input gradient is multiplied by the same
    factor to compare it with ours (chain rule).
    """

    key: str
    package: str  # distribution / import name, for the availability check and the version
    setup: str  # how it is configured, printed and stored in the JSON
    build: Callable[[torch.device], Runner]
    strict: bool = False
    input_gain: float = 1.0


def our_lif(backend: str, strict: bool, device: torch.device) -> torch.nn.Module:
    """Our LIF with the common configuration (record_rate left at its default, as users get it)."""
    import spikeforge as sf

    return sf.LIF(
        decay=DECAY,
        input_scale=INPUT_SCALE,
        v_th=V_TH,
        reset="hard",
        v_reset=V_RESET,
        detach_reset=False,
        strict=strict,
        v_init=0.0,
        surrogate=sf.surrogate.Sigmoid(alpha=ALPHA),
        backend=backend,
    ).to(device)


def build_ours(backend: str) -> Callable[[torch.device], Runner]:
    """Builder for our neuron; timed with ``strict=False`` (strict only swaps ``ge`` for ``gt``, same cost)."""
    return lambda device: our_lif(backend, strict=False, device=device)


def spikingjelly_cuda_choice(device: torch.device, implementation: str):
    """SpikingJelly 2.0's CUDA LIF implementation named ``implementation`` (``"auto"``: its own default choice),
    with the object and key it is installed under: ``(selection, index, choice)``.

    SpikingJelly 2.0 has no ``backend=`` argument and no CuPy backend: its LIF op chooses a CUDA
    implementation once per process and device, from ``SJ_LIF_CUDA_IMPLEMENTATION`` (read at import;
    ``auto`` takes its native CUDA extension when it was built from source, else Triton, else ``torch``:
    the Python time loop with a hand-written backward it also runs on CPU), and looks the choice up on
    every forward and every backward call. To time several in one process, the choice for
    ``implementation`` is made by SpikingJelly's own selection with the request set to that name, and
    each runner installs its choice before its forward, so the backward that follows uses it too. This
    touches the private ``spikingjelly._ops.lif._selection`` (read from 2.0.0); if that changes, the
    forced variants are skipped with a note and ``SJ_LIF_CUDA_IMPLEMENTATION`` still chooses for the
    plain ``spikingjelly`` one.
    """
    from spikingjelly._ops import lif as sj_lif

    selection = sj_lif._selection
    index = torch.cuda.current_device() if device.index is None else device.index
    default = selection._get_cuda_selection(device)
    if implementation == "auto":
        return selection, index, default
    requested = selection._requested
    try:
        selection._requested = implementation
        selection._selections.pop(index, None)
        chosen = selection._get_cuda_selection(device)
    finally:
        selection._requested = requested
        selection._selections[index] = default
    if chosen.name == default.name:
        raise RuntimeError(f"SpikingJelly's default already is its {default.name} implementation (spikingjelly)")
    return selection, index, chosen


def build_spikingjelly(device: torch.device, implementation: str = "auto") -> Runner:
    """SpikingJelly 2.x ``LIFNode``: ``h = v + (x - (v - v_reset)) / tau`` = 0.5 v + 0.5 x for tau = 2.

    On CPU it always runs its torch implementation (Python time loop, hand-written
    backward). On CUDA, ``implementation`` picks one of its kernels, see
    :func:`spikingjelly_cuda_choice`; the runner's ``implementation`` attribute
    names the one it runs. It fires on ``h >= v_th`` (our ``strict=False``) and
    keeps ``v`` between calls, so we reset it after each.
    """
    from spikingjelly.activation_based import functional, neuron, surrogate

    install, name = (lambda: None), "torch (CPU)"
    if device.type == "cuda":
        selection, index, choice = spikingjelly_cuda_choice(device, implementation)
        install, name = partial(selection._selections.__setitem__, index, choice), choice.name
    elif implementation != "auto":
        raise RuntimeError(f"SpikingJelly's {implementation} implementation is CUDA only; on CPU see spikingjelly")

    node = neuron.LIFNode(
        tau=1.0 / (1.0 - DECAY),
        decay_input=True,  # input gain 1/tau = INPUT_SCALE
        v_threshold=V_TH,
        v_reset=V_RESET,
        surrogate_function=surrogate.Sigmoid(alpha=ALPHA),
        detach_reset=False,
        step_mode="m",
    ).to(device)

    def run(x: Tensor) -> Tensor:
        install()  # for this forward and the backward that follows
        spikes = node(x)
        functional.reset_net(node)
        return spikes

    run.implementation = name
    return run


def loop_over_time(step, x: Tensor, state) -> Tensor:
    """Run a single-step peer cell ``step(x_t, state) -> (spike, state)`` over ``x[T, ...]``."""
    spikes = []
    for x_t in x:
        spike, state = step(x_t, state)
        spikes.append(spike)
    return torch.stack(spikes)


def build_snntorch(device: torch.device) -> Runner:
    """snnTorch ``Leaky`` looped over T: ``mem = beta * mem + input``, spike on ``mem > threshold``.

    It has no input gain, so it receives ``0.5 * x`` (prepared outside the
    timed region). ``reset_mechanism="zero"`` with ``reset_delay=False`` resets
    in the same step through the (surrogate-differentiable) spike, i.e. our
    hard reset without ``detach_reset``; the default ``reset_delay=True``
    gives the same spikes but a detached reset. ``>``: our ``strict=True``.
    """
    import snntorch
    from snntorch import surrogate

    leaky = snntorch.Leaky(
        beta=DECAY,
        threshold=V_TH,
        spike_grad=surrogate.sigmoid(slope=ALPHA),
        reset_mechanism="zero",
        reset_delay=False,
    ).to(device)

    return lambda x: loop_over_time(leaky, x, torch.zeros_like(x[0]))  # fresh state each call, like ours


def build_norse(device: torch.device) -> Runner:
    """Norse ``LIFBoxCell`` looped over T: ``v + dt * tau_mem_inv * (x + v_leak - v)``, spike on ``v > v_th``.

    ``dt * tau_mem_inv = 0.5`` gives decay 0.5 and input gain 0.5 (``dt = 1``
    avoids rounding in ``0.001 * 500``). Its reset ``(1 - z) v + z v_reset``
    is differentiable through ``z`` (our ``detach_reset=False``); ``>``: our
    ``strict=True``. ``method="tanh"`` with ``alpha = ALPHA / 2`` has the
    derivative ``1 - tanh(2 z)^2``, which equals ``4 sigmoid(4 z)(1 - sigmoid(4 z))``.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script deprecation inside norse
        from norse.torch import LIFBoxCell, LIFBoxParameters

    def const(value: float) -> Tensor:
        return torch.tensor(value, device=device)

    params = LIFBoxParameters(
        tau_mem_inv=const(1.0 - DECAY),
        v_leak=const(0.0),
        v_th=const(V_TH),
        v_reset=const(V_RESET),
        method="tanh",
        alpha=ALPHA / 2,
    )
    cell = LIFBoxCell(params, dt=1.0).to(device)

    return lambda x: loop_over_time(cell, x, None)  # fresh state (v = v_leak = 0) each call


IMPLS = [
    Impl("ours-reference", "spikeforge", "sf.LIF(backend='reference'), strict=False", build_ours("reference")),
    Impl("ours-fused", "spikeforge", "sf.LIF(backend='fused'), strict=False", build_ours("fused")),
    Impl(
        "ours-triton",
        "spikeforge",
        "sf.LIF(backend='triton'): Triton time loops, CUDA only; strict=False",
        build_ours("triton"),
    ),
    Impl(
        "ours-auto",
        "spikeforge",
        "sf.LIF(backend='auto'): Triton loops on CUDA, compiled C loops on CPU with a C compiler, else fused; "
        "strict=False",
        build_ours("auto"),
    ),
    Impl(
        "spikingjelly",
        "spikingjelly",
        "LIFNode(tau=2.0, decay_input=True, v_threshold=1, v_reset=0, Sigmoid(alpha=4), detach_reset=False, "
        "step_mode='m') + functional.reset_net after each call, its default implementation "
        "(SJ_LIF_CUDA_IMPLEMENTATION); matches ours strict=False",
        build_spikingjelly,
        strict=False,
    ),
    Impl(
        "spikingjelly-triton",
        "spikingjelly",
        "the same LIFNode on SpikingJelly's Triton kernels (CUDA only)",
        partial(build_spikingjelly, implementation="triton"),
        strict=False,
    ),
    Impl(
        "spikingjelly-torch",
        "spikingjelly",
        "the same LIFNode on SpikingJelly's torch implementation (Python time loop, hand-written backward; "
        "CUDA only, on CPU it is what spikingjelly runs)",
        partial(build_spikingjelly, implementation="torch"),
        strict=False,
    ),
    Impl(
        "snntorch",
        "snntorch",
        "Leaky(beta=0.5, threshold=1, spike_grad=sigmoid(slope=4), reset_mechanism='zero', reset_delay=False) "
        "looped over T, fed 0.5*x; matches ours strict=True",
        build_snntorch,
        strict=True,
        input_gain=INPUT_SCALE,
    ),
    Impl(
        "norse",
        "norse",
        "LIFBoxCell(LIFBoxParameters(tau_mem_inv=0.5, v_leak=0, v_th=1, v_reset=0, method='tanh', alpha=2), "
        "dt=1) looped over T; matches ours strict=True",
        build_norse,
        strict=True,
    ),
]
OURS = ("ours-reference", "ours-fused", "ours-triton", "ours-auto")
DEFAULT_BASELINE = "ours-auto"  # the backend users get; ratios are taken against it (--baseline to change)
FLOOR = "copy-floor"


def package_version(package: str) -> str:
    """Installed version of a distribution, or '?'."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def load_impls(device: torch.device, baseline: str, keys=None) -> tuple[list[Impl], dict[str, Runner]]:
    """The implementations (those named in ``keys``, default all) that import, build and run a tiny
    input here, with their runners.

    Prints a note for each one skipped (peer not installed, backend unavailable).
    """
    impls, runners = [], {}
    for impl in IMPLS:
        if keys is not None and impl.key not in keys:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                importlib.import_module(impl.package)
                run = impl.build(device)
                forward(run, torch.zeros(2, 1, 4, device=device))
        except Exception as err:  # a broken peer install must not stop the benchmark
            print(f"note: skipping {impl.key}: {type(err).__name__}: {err}")
            continue
        impls.append(impl)
        runners[impl.key] = run
    if baseline not in runners:
        sys.exit(f"the baseline {baseline} is not usable: nothing to compare against")
    return impls, runners


# ---------------------------------------------------------------------------
# Inputs and single calls
# ---------------------------------------------------------------------------
def make_inputs(steps: int, batch: int, features, device, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Input ``x ~ N(INPUT_MEAN, 1)`` and upstream gradient ``g ~ N(0, 1)``, built without temporaries."""
    gen = torch.Generator(device=device).manual_seed(seed + steps)
    shape = (steps, batch, *features)
    x = torch.randn(shape, generator=gen, device=device).add_(INPUT_MEAN)
    g = torch.randn(shape, generator=gen, device=device)
    return x, g


def make_tie_input(steps: int, batch: int, features, device, seed: int = 0) -> Tensor:
    """Input on the grid k/4 in [-1, 2.75]: every implementation's arithmetic is then exact.

    With T <= 8 no rounding happens anywhere, so any spike mismatch is a
    convention difference; ``h == v_th`` occurs often, which exposes the
    threshold comparison (``>`` vs ``>=``).
    """
    gen = torch.Generator(device=device).manual_seed(seed)
    grid = torch.randint(-4, 12, (steps, batch, *features), generator=gen, device=device)
    return grid.to(torch.float32) / 4


def forward(run: Runner, x: Tensor) -> Tensor:
    """Forward pass only, without autograd."""
    with torch.no_grad():
        return run(x)


def forward_backward(run: Runner, leaf: Tensor, grad_out: Tensor) -> Tensor:
    """Forward pass and ``spikes.backward(grad_out)``; the caller clears ``leaf.grad`` beforehand."""
    spikes = run(leaf)
    spikes.backward(grad_out)
    return spikes


def prepared(x: Tensor, gain: float) -> Tensor:
    """The leaf an implementation is fed: ``gain * x`` (a fresh copy if gain is 1), requiring grad."""
    return (x * gain).detach().requires_grad_(True)


def synchronizer(device: torch.device) -> Callable[[], None]:
    """Function that waits for queued device work (a no-op on CPU)."""
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


# ---------------------------------------------------------------------------
# Agreement check
# ---------------------------------------------------------------------------
def spikes_and_grad(run: Runner, x: Tensor, grad_out: Tensor, gain: float) -> tuple[Tensor, Tensor]:
    """Spikes and ``d(spikes . grad_out)/dx`` of an implementation fed ``gain * x``."""
    leaf = prepared(x, gain)
    spikes = forward_backward(run, leaf, grad_out)
    return spikes.detach(), leaf.grad * gain


def check_agreement(impls, runners, x: Tensor, grad_out: Tensor, device, label: str) -> list[dict]:
    """Compare every implementation's spikes and input gradient with our fused neuron under its conventions.

    The oracle is our fused backend built with the implementation's ``strict``
    value. The gradient difference is ``max|g - g_ours| / max|g_ours|``.
    """
    oracles = {}
    rows = []
    for impl in impls:
        if impl.strict not in oracles:
            oracles[impl.strict] = spikes_and_grad(our_lif("fused", impl.strict, device), x, grad_out, 1.0)
        ref_spikes, ref_grad = oracles[impl.strict]
        spikes, grad = spikes_and_grad(runners[impl.key], x, grad_out, impl.input_gain)
        rows.append(
            {
                "input": label,
                "T": x.shape[0],
                "impl": impl.key,
                "ours_strict": impl.strict,
                "spikes": int(spikes.sum()),
                "spikes_ours": int(ref_spikes.sum()),
                "mismatches": int((spikes != ref_spikes).sum()),
                "grad_max_rel_diff": float((grad - ref_grad).abs().max() / ref_grad.abs().max()),
            }
        )
        del spikes, grad
    for strict in (False, True):  # both, to show how many spikes the comparison convention alone changes
        if strict not in oracles:
            oracles[strict] = spikes_and_grad(our_lif("fused", strict, device), x, grad_out, 1.0)
    rows.append(
        {
            "input": label,
            "T": x.shape[0],
            "impl": "ours strict=True vs strict=False",
            "spikes": int(oracles[True][0].sum()),
            "spikes_ours": int(oracles[False][0].sum()),
            "mismatches": int((oracles[True][0] != oracles[False][0]).sum()),
        }
    )
    return rows


def run_checks(impls, runners, timesteps, batch, features, device) -> list[dict]:
    """Agreement on the benchmark input for every T, and on the exact-arithmetic tie input."""
    rows = []
    for steps in timesteps:
        x, g = make_inputs(steps, batch, features, device)
        rows += check_agreement(impls, runners, x, g, device, "benchmark N(0.8, 1)")
        del x, g
        gc.collect()
    x = make_tie_input(min(8, max(timesteps)), batch, features, device)
    g = make_inputs(x.shape[0], batch, features, device)[1]
    rows += check_agreement(impls, runners, x, g, device, "exact grid k/4 (ties)")
    return rows


def print_checks(rows: list[dict]) -> None:
    """Readable agreement table."""
    print("\nAgreement with our fused backend under each implementation's conventions")
    columns = zip(("spikes", "ours", "mismatch", "grad rel diff"), (11, 11, 9, 14))
    print(f"{'input':<22} {'T':>3}  {'implementation':<34} " + " ".join(f"{name:>{width}}" for name, width in columns))
    for row in rows:
        grad = f"{row['grad_max_rel_diff']:.2e}" if "grad_max_rel_diff" in row else "-"
        print(
            f"{row['input']:<22} {row['T']:>3}  {row['impl']:<34} {row['spikes']:>11} {row['spikes_ours']:>11} "
            f"{row['mismatches']:>9} {grad:>14}"
        )
    print("(last row of each block: how many spikes the threshold comparison alone changes on that input)")


# ---------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------
@dataclass
class Case:
    """One timed call; ``leaf.grad`` (if any) is cleared before each call, outside the timed region."""

    call: Callable[[], object]
    leaf: Tensor | None = None


def time_case(case: Case, sync) -> float:
    """Wall time of one call in seconds; the result is freed outside the timed region."""
    if case.leaf is not None:
        case.leaf.grad = None
    sync()
    start = time.perf_counter()
    result = case.call()
    sync()
    elapsed = time.perf_counter() - start
    del result
    return elapsed


def build_cases(impls, runners, steps, batch, features, device) -> dict[tuple, Case]:
    """Timed cases for one T: each implementation forward and forward+backward, plus the copy floor."""
    x, g = make_inputs(steps, batch, features, device)
    out_x, out_g = torch.empty_like(x), torch.empty_like(g)
    cases = {
        (FLOOR, steps, "fwd"): Case(partial(out_x.copy_, x)),  # bytes read + written = input + output
        (FLOOR, steps, "fwd+bwd"): Case(lambda: (out_x.copy_(x), out_g.copy_(g))),  # + grad_out + grad_in
    }
    leaves = {}
    for impl in impls:
        if impl.input_gain not in leaves:
            leaves[impl.input_gain] = prepared(x, impl.input_gain)
        leaf = leaves[impl.input_gain]
        run = runners[impl.key]
        cases[(impl.key, steps, "fwd")] = Case(partial(forward, run, leaf.detach()))
        cases[(impl.key, steps, "fwd+bwd")] = Case(partial(forward_backward, run, leaf, g), leaf)
    return cases


def time_all(impls, runners, timesteps, batch, features, repeats, device, seed=0) -> dict[tuple, list[float]]:
    """Round-robin timing: every round runs every case once, in a freshly shuffled order.

    Interleaving spreads the machine's background noise over all
    implementations alike; the report uses the median over rounds.
    """
    cases = {}
    for steps in timesteps:
        cases.update(build_cases(impls, runners, steps, batch, features, device))
    keys = list(cases)
    times = {key: [] for key in keys}
    order = random.Random(seed)
    sync = synchronizer(device)
    rounds = WARMUP_ROUNDS + repeats
    for index in range(rounds):
        order.shuffle(keys)
        start = time.perf_counter()
        for key in keys:
            elapsed = time_case(cases[key], sync)
            if index >= WARMUP_ROUNDS:
                times[key].append(elapsed)
        kind = "warm-up" if index < WARMUP_ROUNDS else "timed"
        print(f"  round {index + 1}/{rounds} ({kind}) {time.perf_counter() - start:.1f} s", flush=True)
    return times


# ---------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------
def proc_status_bytes(field: str) -> int | None:
    """A ``kB`` field of /proc/self/status (Linux) in bytes, or None."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset the RSS high-water mark ``VmHWM`` to the current RSS (Linux ``clear_refs``); False if unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


def peak_rss() -> int:
    """Peak RSS in bytes: ``VmHWM`` on Linux, else ``ru_maxrss``.

    ``ru_maxrss`` is not used on Linux because a child started by fork+exec
    inherits its parent's peak in it, and ``clear_refs`` does not reset that.
    """
    hwm = proc_status_bytes("VmHWM")
    if hwm is not None:
        return hwm
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def memory_probe(key: str, steps: int, batch: int, features, device) -> dict:
    """Peak extra memory of one forward+backward of one implementation (run in its own process on CPU)."""
    (impl,) = [impl for impl in IMPLS if impl.key == key]
    run = impl.build(device)
    tiny_x, tiny_g = make_inputs(2, 2, features, device)  # first call: lazy initialisation, code paths
    forward_backward(run, prepared(tiny_x, impl.input_gain), tiny_g)
    x, g = make_inputs(steps, batch, features, device)
    leaf = prepared(x, impl.input_gain)
    del tiny_x, tiny_g
    gc.collect()
    if device.type == "cuda":  # the caching allocator does not hide peaks from max_memory_allocated: warm up full size
        forward_backward(run, leaf, g)
        leaf.grad = None
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        spikes = forward_backward(run, leaf, g)
        torch.cuda.synchronize()
        extra = torch.cuda.max_memory_allocated() - base
        del spikes
        return {"extra_bytes": extra, "exact_baseline": True}
    base = proc_status_bytes("VmRSS")
    exact = base is not None and reset_peak_rss()
    if not exact:  # no /proc: the measurement can only see a peak above the earlier one
        base = peak_rss()
    spikes = forward_backward(run, leaf, g)
    extra = peak_rss() - base
    del spikes
    return {"extra_bytes": extra, "exact_baseline": exact}


def run_probe(command: list[str], what: str, timeout: float) -> dict | None:
    """The JSON last line a memory probe ``command`` prints, run in a fresh process with
    ``MALLOC_MMAP_THRESHOLD_=65536`` (freed tensors go back to the OS); None, with a note, if it failed."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        print(f"note: {what} failed (exit code {proc.returncode}): {proc.stderr.strip()[-500:]}")
        return None
    return json.loads(lines[-1])


def measure_memory(impls, timesteps, batch, features, device) -> dict[tuple, dict]:
    """Peak extra memory for every (implementation, T); one fresh subprocess per measurement on CPU."""
    results = {}
    for steps in timesteps:
        for impl in impls:
            if device.type == "cuda":
                gc.collect()
                torch.cuda.empty_cache()
                results[(impl.key, steps)] = probe = memory_probe(impl.key, steps, batch, features, device)
                print(f"  memory {impl.key:<19} T={steps:<3} {probe['extra_bytes'] / 2**20:9.1f} MB", flush=True)
                continue
            command = [
                sys.executable, __file__, "--memory-probe", f"{impl.key}:{steps}", "--batch", str(batch),
                "--features", ",".join(map(str, features)), "--device", "cpu",
            ]  # fmt: skip
            probe = run_probe(command, f"memory probe {impl.key} T={steps}", timeout=900)
            if probe is None:
                continue
            results[(impl.key, steps)] = probe
            print(f"  memory {impl.key:<19} T={steps:<3} {probe['extra_bytes'] / 2**20:9.1f} MB", flush=True)
    return results


# ---------------------------------------------------------------------------
# Bytes model: what each pass must move through device memory (benchmarks/README.md, "Expected on a GPU")
# ---------------------------------------------------------------------------
# Bytes read + written per element and time step in float32, counted from the code, as
# (forward without grad, forward with grad, backward); per-call terms (initial and final state,
# parameters, spike counts: a few bytes per neuron, not per step) are left out. An estimate of DRAM
# traffic: a cache may absorb some of the step-sized temporaries of "fused".
MODEL_BYTES = {
    # out.copy_(x): x in, out out; forward+backward adds out_g.copy_(g)
    "copy": (8, 8, 8),
    # up to 16 steps: forward x in, spikes out; backward grad_spikes and x in, grad_x out (h recomputed in
    # registers); longer (or a learnable parameter, not benchmarked): forward writes h too, backward reads it
    "triton": (8, 8, 12),
    "triton-long": (8, 12, 12),
    # forward: 8 torch ops per step (76 B) + the spike-count pass (4 B); backward: 12 ops per step
    # (the final state's gradient is a materialised zero, so the last step has the carry ops too)
    "fused": (80, 80, 120),
    # SpikingJelly 2.0's Triton LIF (from its source): its forward stores h also without grad
    "spikingjelly-triton": (12, 12, 12),
}


def model_of(key: str, runner, device: torch.device) -> str | None:
    """The bytes model that applies to an implementation here, or None (not modelled)."""
    if key == FLOOR:
        return "copy"
    if key in ("ours-fused", "ours-triton"):
        return key.removeprefix("ours-")
    if key == "ours-auto" and device.type == "cuda":
        from spikeforge.core.kernels import triton_loops

        return "triton" if triton_loops.available() else "fused"
    if getattr(runner, "implementation", None) == "triton":
        return "spikingjelly-triton"
    return None


def model_bytes(model: str, mode: str, steps: int) -> int:
    """Bytes per element and time step of a ``fwd`` (no grad) or ``fwd+bwd`` pass of ``steps`` under ``model``."""
    from spikeforge.core.kernels.triton_loops import MAX_RECOMPUTED_STEPS

    if model == "triton" and steps > MAX_RECOMPUTED_STEPS:
        model = "triton-long"
    inference, training, backward = MODEL_BYTES[model]
    return inference if mode == "fwd" else training + backward


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------
def summarize(impls, timesteps, batch, features, times, memory, baseline: str, models=None) -> list[dict]:
    """One row per (T, implementation) with medians, floor ratios and ratios to the baseline (one of ours).

    ``models`` maps keys to their bytes model (:data:`MODEL_BYTES`): such rows also get the model's
    bytes, its expected ``/floor`` and the bandwidth the measured time implies under it.
    """
    models = models or {}
    rows = []
    for steps in timesteps:
        median = {
            (key, mode): statistics.median(times[(key, steps, mode)])
            for key in [FLOOR] + [impl.key for impl in impls]
            for mode in ("fwd", "fwd+bwd")
        }
        base_mem = memory.get((baseline, steps), {}).get("extra_bytes")
        for key in [FLOOR] + [impl.key for impl in impls]:
            row = {"T": steps, "impl": key, "input_shape": [steps, batch, *features]}
            for mode in ("fwd", "fwd+bwd"):
                value = median[(key, mode)]
                row[f"{mode}_ms"] = value * 1e3
                row[f"{mode}_ms_min"] = min(times[(key, steps, mode)]) * 1e3
                row[f"{mode}_ms_all"] = [t * 1e3 for t in times[(key, steps, mode)]]
                row[f"{mode}_over_floor"] = value / median[(FLOOR, mode)]
                base = median.get((baseline, mode))
                row[f"{mode}_this_over_baseline"] = value / base if base and key != FLOOR else None
            model = models.get(key)
            if model is not None:
                row["model"] = model
                elements = torch.Size(row["input_shape"]).numel()
                for mode in ("fwd", "fwd+bwd"):
                    size = model_bytes(model, mode, steps)
                    row[f"{mode}_model_bytes_per_element_step"] = size
                    row[f"{mode}_model_over_floor"] = size / model_bytes("copy", mode, steps)
                    row[f"{mode}_model_gb_per_s"] = size * elements / median[(key, mode)] / 1e9
            mem = memory.get((key, steps), {}).get("extra_bytes")
            row["peak_extra_mb"] = mem / 2**20 if mem is not None else None
            row["baseline_mem_over_this"] = base_mem / mem if mem and base_mem is not None else None
            rows.append(row)
    return rows


def fmt(value, spec: str) -> str:
    """Format a number, or '-' for None."""
    return "-" if value is None else format(value, spec)


def ms(value: float) -> str:
    """Milliseconds in 8 characters: three decimals below 10 ms (GPU and smoke-run times), else one."""
    return f"{value:8.3f}" if value < 10 else f"{value:8.1f}"


def print_table(rows: list[dict], timesteps, baseline: str) -> None:
    """Readable results table, one block per T."""
    head = (
        f"{'implementation':<19} | {'fwd ms':>8} {'/floor':>7} {'/base':>7} | "
        f"{'f+b ms':>8} {'/floor':>7} {'/base':>7} | {'peak MB':>8} {'base/it':>8}"
    )
    for steps in timesteps:
        block = [row for row in rows if row["T"] == steps]
        shape = block[0]["input_shape"]
        size = torch.Size(shape).numel() * 4 / 2**20
        print(f"\nT = {steps}: x {shape} float32 ({size:.1f} MB); spikes and grad_input add {2 * size:.1f} MB")
        print(head)
        print("-" * len(head))
        for row in block:
            print(
                f"{row['impl']:<19} | {ms(row['fwd_ms'])} {row['fwd_over_floor']:7.1f} "
                f"{fmt(row['fwd_this_over_baseline'], '7.2f'):>7} | {ms(row['fwd+bwd_ms'])} "
                f"{row['fwd+bwd_over_floor']:7.1f} {fmt(row['fwd+bwd_this_over_baseline'], '7.2f'):>7} | "
                f"{fmt(row['peak_extra_mb'], '8.1f'):>8} {fmt(row['baseline_mem_over_this'], '8.2f'):>8}"
            )
    print(
        f"\nbaseline = {baseline}. ms: median wall time; /floor: time / copy-floor time of the same bytes;\n"
        "/base: time / baseline time (> 1: the baseline is faster); peak MB: peak extra memory of "
        "forward+backward;\nbase/it: baseline peak / this peak (< 1: the baseline uses less)."
    )


def print_model(rows: list[dict], timesteps) -> None:
    """The bytes model beside the measurement, for the implementations it covers."""
    if not any("model" in row for row in rows):
        return
    print(
        "\nBytes model (float32, bytes read + written per element and time step, counted from the code; "
        "benchmarks/README.md):\nB: the model's bytes; model: its expected /floor; measured: /floor above; "
        "GB/s: the model's bytes / measured time\n(for copy-floor: the copy bandwidth reached)."
    )
    head = (
        f"{'T':>3} {'implementation':<19} | {'fwd B':>6} {'model':>6} {'measured':>8} {'GB/s':>7} | "
        f"{'f+b B':>6} {'model':>6} {'measured':>8} {'GB/s':>7}"
    )
    print(head)
    print("-" * len(head))
    for steps in timesteps:
        for row in rows:
            if row["T"] != steps or "model" not in row:
                continue
            cells = [
                f"{row[f'{mode}_model_bytes_per_element_step']:6.1f} {row[f'{mode}_model_over_floor']:6.2f} "
                f"{row[f'{mode}_over_floor']:8.2f} {row[f'{mode}_model_gb_per_s']:7.1f}"
                for mode in ("fwd", "fwd+bwd")
            ]
            print(f"{steps:>3} {row['impl']:<19} | {cells[0]} | {cells[1]}")


def environment(device: torch.device, impls, runners) -> dict:
    """Versions and machine facts stored with the results."""
    packages = {impl.package for impl in impls} | {"triton"}
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "versions": {package: package_version(package) for package in sorted(packages)},
        # which of its kernels a peer with several ran (SpikingJelly's CUDA implementations)
        "runs": {key: run.implementation for key, run in runners.items() if hasattr(run, "implementation")},
        # The CPU timings depend strongly on how freed memory is recycled (page faults on fresh memory).
        "allocator_env": {k: v for k, v in os.environ.items() if k.startswith(("MALLOC_", "THP_", "LD_PRELOAD"))},
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = {
            "name": props.name,
            "capability": f"{props.major}.{props.minor}",
            "memory_gib": round(props.total_memory / 2**30, 1),
            "multiprocessors": props.multi_processor_count,
            "cuda": torch.version.cuda,
        }
    return info


def profile_ours(backend: str, steps: int, batch: int, features, device, calls: int = 3) -> None:
    """Print the torch.profiler op table of one of our backends: ``calls`` forward+backward passes at ``steps``."""
    from torch.profiler import ProfilerActivity, profile

    run = our_lif(backend, strict=False, device=device)
    x, g = make_inputs(steps, batch, features, device)
    leaf = prepared(x, 1.0)
    for _ in range(2):
        leaf.grad = None
        forward_backward(run, leaf, g)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(calls):
            leaf.grad = None
            forward_backward(run, leaf, g)
        synchronizer(device)()
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(f"\nProfile of ours-{backend} forward+backward, T={steps}, x {list(x.shape)}, totals over {calls} calls")
    print(prof.key_averages().table(sort_by=sort, row_limit=20))


# ---------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    """Command-line flags; ``--quick`` only changes the values not given explicitly."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--timesteps", type=lambda s: [int(v) for v in s.split(",")], default=None,
                        help="comma-separated T values (default 4,8,16,32; quick: 4,8)")  # fmt: skip
    parser.add_argument("--batch", type=int, default=None, help="batch size B (default 32; quick: 4)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed rounds; the median is reported (default 11; quick: 3)")  # fmt: skip
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--quick", action="store_true", help="small shapes and few repeats, for a smoke run")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument("--impls", type=lambda s: s.split(","), default=None,
                        help="comma-separated implementation keys to run (default all; include the baseline)")
    parser.add_argument("--baseline", choices=OURS, default=DEFAULT_BASELINE,
                        help=f"our backend the ratio columns compare with (default {DEFAULT_BASELINE})")
    parser.add_argument("--profile", action="store_true",
                        help="also profile ours-fused and ours-auto forward+backward (T=16)")  # fmt: skip
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"JSON output (default {RESULTS})")
    parser.add_argument("--features", type=lambda s: tuple(int(v) for v in s.split(",")), default=None,
                        help=argparse.SUPPRESS)  # fmt: skip
    parser.add_argument("--memory-probe", default=None, help=argparse.SUPPRESS)  # internal: "KEY:T"
    args = parser.parse_args(argv)
    defaults = {"timesteps": [4, 8], "batch": 4, "repeats": 3, "features": QUICK_FEATURES} if args.quick else {
        "timesteps": [4, 8, 16, 32], "batch": 32, "repeats": 11, "features": FEATURES}  # fmt: skip
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    check_device(device)
    if args.memory_probe:
        key, steps = args.memory_probe.split(":")
        print(json.dumps(memory_probe(key, int(steps), args.batch, args.features, device)))
        return

    unknown = set(args.impls or ()) - {impl.key for impl in IMPLS}
    if unknown:
        sys.exit(f"--impls: unknown {sorted(unknown)}; known: {[impl.key for impl in IMPLS]}")
    impls, runners = load_impls(device, args.baseline, args.impls)
    env = environment(device, impls, runners)
    where = f"{device} ({env['gpu']['name']}, CUDA {env['gpu']['cuda']})" if device.type == "cuda" else str(device)
    print(f"torch {env['torch']} on {where}, {env['torch_threads']} threads; versions {env['versions']}")
    print("neuron: h = 0.5 u + 0.5 x, spike h >= 1 (or > 1, see strict), hard reset to 0, sigmoid(4) surrogate")
    for impl in impls:
        runs = env["runs"].get(impl.key)
        print(f"  {impl.key:<19} {impl.setup}" + (f" [runs: {runs}]" if runs else ""))

    print("\nChecking agreement ...", flush=True)
    checks = run_checks(impls, runners, args.timesteps, args.batch, args.features, device)
    print_checks(checks)

    print(f"\nTiming: {WARMUP_ROUNDS} warm-up + {args.repeats} timed rounds, cases shuffled each round", flush=True)
    load_before = os.getloadavg()
    times = time_all(impls, runners, args.timesteps, args.batch, args.features, args.repeats, device)
    env["load_average_1min"] = {"before_timing": load_before[0], "after_timing": os.getloadavg()[0]}
    print(f"load average (1 min) before / after timing: {load_before[0]:.2f} / {os.getloadavg()[0]:.2f}")
    gc.collect()
    memory = {}
    if not args.no_memory:
        print("Measuring peak memory of forward+backward ...", flush=True)
        memory = measure_memory(impls, args.timesteps, args.batch, args.features, device)
    models = {key: model_of(key, runners.get(key), device) for key in [FLOOR] + [impl.key for impl in impls]}
    models = {key: model for key, model in models.items() if model is not None}
    rows = summarize(impls, args.timesteps, args.batch, args.features, times, memory, args.baseline, models)
    print_table(rows, args.timesteps, args.baseline)
    print_model(rows, args.timesteps)
    method = None if args.no_memory else (MEMORY_METHOD_CUDA if device.type == "cuda" else MEMORY_METHOD_CPU)
    if method:
        print(f"memory method: {method}")

    report = {
        "environment": env,
        "neuron": {"decay": DECAY, "input_scale": INPUT_SCALE, "v_th": V_TH, "v_reset": V_RESET,
                   "reset": "hard", "detach_reset": False, "surrogate": f"sigmoid(alpha={ALPHA})",
                   "input": f"x ~ N({INPUT_MEAN}, 1), g ~ N(0, 1)"},  # fmt: skip
        "implementations": {impl.key: impl.setup for impl in impls},
        "settings": {"timesteps": args.timesteps, "batch": args.batch, "features": list(args.features),
                     "repeats": args.repeats, "warmup_rounds": WARMUP_ROUNDS, "statistic": "median",
                     "baseline": args.baseline},  # fmt: skip
        "floor": "fwd: out.copy_(x); fwd+bwd: out.copy_(x) and out_g.copy_(g) into preallocated buffers",
        "timing": "time.perf_counter around each call, with torch.cuda.synchronize() before and after on CUDA",
        "bytes_model": {
            "note": "bytes read + written per element and time step (float32), counted from the code; "
            "see benchmarks/README.md",
            "bytes": {name: dict(zip(("fwd_no_grad", "fwd_grad", "bwd"), b)) for name, b in MODEL_BYTES.items()},
            "applied": models,
        },
        "memory_method": method,
        "checks": checks,
        "results": rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.output}")
    if args.profile:
        for backend in ("fused", "auto"):
            profile_ours(backend, 16, args.batch, args.features, device)


if __name__ == "__main__":
    main()
