"""Multi-step neuron kernels and the backend choice.

- ``reference``: plain autograd loop (the test oracle).
- ``fused``: one autograd node with a hand-written backward, torch operations, any device.
- ``cpu``: the same autograd node with both time loops compiled from generated C
  (float32/float64 CPU tensors, parameters per layer, channel or neuron).
- ``triton``: the same autograd node with both time loops as generated Triton kernels
  (CUDA tensors, float32/float64, per-neuron parameters too; needs the optional ``triton``
  package; CPU tensors only in Triton's interpreter, ``TRITON_INTERPRET=1``).
- ``auto``: ``triton`` for CUDA tensors and ``cpu`` for CPU ones where they apply, else ``fused``.

Half-precision inputs (``float16``/``bfloat16``, as mixed precision produces them) run the
recurrence in float32, so the membrane potential is not rounded step after step; the spikes
come back in the input's dtype (0, 1 and NaN are exact in it). The compiled CPU loops read
``bfloat16`` inputs and the Triton loops ``float16`` and ``bfloat16`` ones (the Triton loops only when no
neuron parameter wants a gradient), and write their spikes and input gradient in that dtype directly (the
same values as converting to float32 and back, without the two extra passes each way). Integer and bool inputs run
in float32 too and give float32 spikes (a spike can be NaN); complex inputs are refused.
Every backend gives the same spikes, non-finite membranes included (see
:mod:`spikeforge.core.neuron`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import cpu, triton_loops
from .fused import TORCH_LOOPS, fused_multistep, fused_multistep_counted
from .reference import reference_multistep
from .spec import NeuronSpec

BACKENDS = {"auto", "reference", "fused", "cpu", "triton"}

__all__ = ["NeuronSpec", "BACKENDS", "compute_dtype", "run_multistep", "fused_multistep", "reference_multistep",
           "cpu_multistep", "triton_multistep"]


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the recurrence runs in for inputs of ``dtype``: float32 for half precision,
    integers and bool, else ``dtype`` itself (float32/float64)."""
    if dtype.is_complex:
        raise TypeError(f"spiking neurons need real inputs, got {dtype}")
    if dtype in (torch.float16, torch.bfloat16) or not dtype.is_floating_point:
        return torch.float32
    return dtype


def cpu_multistep(x: Tensor, spec: NeuronSpec, decay, input_scale, v_th, width, v_init):
    """The fused kernel with compiled C loops; raises if this call cannot use them."""
    return _cpu_counted(x, spec, decay, input_scale, v_th, width, v_init)[:2]


def _cpu_counted(x: Tensor, spec: NeuronSpec, decay, input_scale, v_th, width, v_init):
    if not cpu.supports(x, spec, decay, input_scale, v_th, width, v_init):
        raise ValueError(
            "backend='cpu' needs float32/float64 CPU tensors, neuron parameters that broadcast to one time step "
            "and a C compiler (use backend='auto' to fall back to torch operations)"
        )
    return fused_multistep_counted(x, spec, decay, input_scale, v_th, width, v_init, loops=cpu.CPU_LOOPS)


def triton_multistep(x: Tensor, spec: NeuronSpec, decay, input_scale, v_th, width, v_init):
    """The fused kernel with Triton loops; raises if this call cannot use them."""
    return _triton_counted(x, spec, decay, input_scale, v_th, width, v_init)[:2]


def _triton_counted(x: Tensor, spec: NeuronSpec, decay, input_scale, v_th, width, v_init):
    triton_loops.require_triton()
    if x.device.type != "cuda" and not triton_loops.interpreting():
        raise ValueError(f"backend='triton' needs CUDA tensors, got {x.device.type} ones (CPU tensors run only in "
                         "Triton's interpreter: TRITON_INTERPRET=1)")
    if not triton_loops.supports(x, spec, decay, input_scale, v_th, width, v_init):
        raise ValueError(
            "backend='triton' needs float32/float64 tensors and neuron parameters that broadcast to one time step "
            "(use backend='auto' to fall back to torch operations)"
        )
    return fused_multistep_counted(x, spec, decay, input_scale, v_th, width, v_init, loops=triton_loops.TRITON_LOOPS)


def _auto_loops(x: Tensor, spec: NeuronSpec, decay, input_scale, v_th, width, v_init):
    """The loops of ``backend="auto"``: Triton for CUDA tensors, compiled C for CPU ones, where they apply."""
    if x.device.type == "cuda" and triton_loops.supports(x, spec, decay, input_scale, v_th, width, v_init):
        return triton_loops.TRITON_LOOPS
    if cpu.supports(x, spec, decay, input_scale, v_th, width, v_init):
        return cpu.CPU_LOOPS
    return TORCH_LOOPS


def _reads_half(x: Tensor, spec: NeuronSpec, decay, input_scale, v_th, width, v_init, backend: str) -> bool:
    """Whether the loops ``backend`` runs for the half-precision ``x`` read and write its dtype themselves: the
    compiled C and Triton loops, where they support the call."""
    values = (decay, input_scale, v_th, width, v_init)
    if backend == "auto":
        return _auto_loops(x, spec, *values) is not TORCH_LOOPS
    supports = {"cpu": cpu.supports, "triton": triton_loops.supports}.get(backend)
    return supports is not None and supports(x, spec, *values)


def run_multistep(x: Tensor, spec: NeuronSpec, decay, input_scale, v_th, width, v_init, backend: str = "auto"):
    """Run the recurrence over ``x[T, ...]`` with the chosen backend.

    Returns ``(spikes, u_final, counts)``; ``counts[T]`` are the spikes per step
    when the kernel counted them on the way (compiled C and Triton kernels), else None.
    """
    if x.shape[0] < 1:
        raise ValueError("a multi-step neuron needs at least one time step (x.shape[0] >= 1)")
    dtype = compute_dtype(x.dtype)
    # half precision goes as it is to the loops that read and write it (bfloat16 on the CPU, float16/bfloat16
    # in Triton); other half-precision inputs run in float32 copies
    if dtype != x.dtype and not _reads_half(x, spec, decay, input_scale, v_th, width, v_init, backend):
        spikes, u_final, counts = run_multistep(x.to(dtype), spec, decay, input_scale, v_th, width, v_init, backend)
        return (spikes.to(x.dtype) if x.dtype.is_floating_point else spikes), u_final, counts
    if backend == "reference":
        return (*reference_multistep(x, spec, decay, input_scale, v_th, width, v_init), None)
    if backend == "cpu":
        return _cpu_counted(x, spec, decay, input_scale, v_th, width, v_init)
    if backend == "triton":
        return _triton_counted(x, spec, decay, input_scale, v_th, width, v_init)
    loops = _auto_loops(x, spec, decay, input_scale, v_th, width, v_init) if backend == "auto" else TORCH_LOOPS
    return fused_multistep_counted(x, spec, decay, input_scale, v_th, width, v_init, loops=loops)
