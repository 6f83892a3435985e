"""Multi-step neuron kernels and the backend choice.

``reference``: plain autograd loop (the test oracle). ``fused``: one autograd
node with a hand-written backward, plain torch operations, any device.
``auto`` picks the fastest kernel available for the input's device.
"""

from __future__ import annotations

from torch import Tensor

from .fused import fused_multistep
from .reference import reference_multistep
from .spec import NeuronSpec

KERNELS = {"reference": reference_multistep, "fused": fused_multistep}
BACKENDS = {"auto", *KERNELS}

__all__ = ["NeuronSpec", "BACKENDS", "run_multistep", "fused_multistep", "reference_multistep"]


def run_multistep(x: Tensor, spec: NeuronSpec, decay, input_scale, v_th, width, v_init, backend: str = "auto"):
    """Run the recurrence over ``x[T, ...]`` with the chosen backend; returns ``(spikes, u_final)``."""
    if x.shape[0] < 1:
        raise ValueError("a multi-step neuron needs at least one time step (x.shape[0] >= 1)")
    kernel = KERNELS["fused" if backend == "auto" else backend]
    return kernel(x, spec, decay, input_scale, v_th, width, v_init)
