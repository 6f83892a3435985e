"""Memory of the fused kernel: the backward works on step-sized slices, so at most three full-size
(``[T, ...]``) tensors are alive at once in it (in fact only the input gradient), the forward keeps
only ``h`` and the spikes, and the gradients stay those of the reference for every option."""

import weakref

import pytest
import torch
from kernel_cases import PARAMS, SHAPES, assert_matches_reference, make_inputs
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from spikeforge.core.kernels import NeuronSpec, fused_multistep, reference_multistep

BACKWARD_BUDGET = 3  # full-size tensors alive at once in the backward (issue #22)


class FullSizeTensors(TorchDispatchMode):
    """Tracks the tensors of at least ``numel`` elements that torch operations allocate while active.

    An operation's output is a new allocation when its storage is none of the operation's inputs'
    (views, in-place and ``out=`` results are not); it stays alive while it or any view of it taken
    under the mode is. ``peak``: the most alive at once, seen after every operation.
    """

    def __init__(self, numel: int):
        super().__init__()
        self.numel = numel
        self.alive: dict[int, list[weakref.ref]] = {}  # storage address -> the tensors on it
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        out = func(*args, **kwargs)
        live = {ptr: [r for r in refs if r() is not None] for ptr, refs in self.alive.items()}
        self.alive = {ptr: refs for ptr, refs in live.items() if refs}  # before a freed address is reused
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor):
                continue
            ptr = t.untyped_storage().data_ptr()
            if ptr in self.alive:
                self.alive[ptr].append(weakref.ref(t))
            elif ptr not in inputs and t.numel() >= self.numel:
                self.alive[ptr] = [weakref.ref(t)]
        self.peak = max(self.peak, len(self.alive))
        return out


def run_counted(kernel, x, values, spec, seed):
    """Spikes, final state and gradients (upstream gradients handed to the node as they are), with the
    peak number of full-size tensors alive in the forward and in the backward."""
    xx = x.clone().requires_grad_()
    vals = {k: v.detach().clone().requires_grad_(v.requires_grad) if torch.is_tensor(v) else v
            for k, v in values.items()}
    with FullSizeTensors(x.numel()) as forward:
        s, u = kernel(xx, spec, *(vals[k] for k in PARAMS))
    gen = torch.Generator().manual_seed(seed + 1)
    gs, gu = (torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t.dtype) for t in (s, u))
    with FullSizeTensors(x.numel()) as backward:
        torch.autograd.backward((s, u), (gs, gu))
    grads = {"x": xx.grad} | {k: v.grad for k, v in vals.items() if torch.is_tensor(v) and v.requires_grad}
    return (s.detach(), u.detach(), grads), forward.peak, backward.peak


RESETS = {"hard": (True, 0.0), "hard-to-minus-0.2": (True, -0.2), "soft": (False, 0.0)}


@pytest.mark.parametrize("reset", RESETS)
@pytest.mark.parametrize("detach_reset", [False, True])
@pytest.mark.parametrize("timing", ["now", "next_step"])
@pytest.mark.parametrize("learnable", [(), PARAMS], ids=["input-only", "all-learnable"])
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_backward_keeps_at_most_three_full_size_tensors_and_matches_the_reference(
    reset, detach_reset, timing, learnable, per_channel, dtype
):
    hard, v_reset = RESETS[reset]
    seed = len(reset) + 2 * detach_reset + 4 * len(timing) + 8 * len(learnable) + 16 * per_channel
    surrogate = SHAPES[seed % len(SHAPES)]
    spec = NeuronSpec(surrogate, hard, v_reset, detach_reset, seed % 2 == 0, timing)
    x, values = make_inputs(seed, 6, [3, 4, 5], dtype, set(learnable), per_channel)
    values["input_scale"] = values["input_scale"] if learnable else 0.7  # a scale the loops must apply
    result, forward_peak, backward_peak = run_counted(fused_multistep, x, values, spec, seed)
    assert 1 <= backward_peak <= BACKWARD_BUDGET, f"{backward_peak} full-size tensors alive in the backward"
    assert forward_peak <= 2, f"the forward allocated {forward_peak} full-size tensors (spikes and h expected)"
    reference, _, _ = run_counted(reference_multistep, x, values, spec, seed)
    assert_matches_reference(reference, result, dtype, f"{surrogate.__name__}")


def test_inference_allocates_only_the_spikes():
    """Without autograd no per-step state is kept: the input scale is applied step by step too."""
    spec = NeuronSpec(SHAPES[0])
    x = torch.randn(16, 8, 10)
    with torch.no_grad(), FullSizeTensors(x.numel()) as counter:
        spikes, _ = fused_multistep(x, spec, 0.5, 0.7, 1.0, torch.tensor(1.0), 0.0)
    assert counter.peak == 1


def test_a_retained_graph_gives_the_same_gradients_twice():
    """The backward reads the saved membrane without overwriting it."""
    spec = NeuronSpec(SHAPES[2])
    x = (torch.randn(5, 4, 3) + 0.8).requires_grad_()
    v_th = torch.tensor(0.9, requires_grad=True)
    spikes, _ = fused_multistep(x, spec, 0.6, 0.8, v_th, torch.tensor(1.0), 0.0)
    g = torch.randn(spikes.shape)
    first = torch.autograd.grad(spikes, (x, v_th), g, retain_graph=True)
    second = torch.autograd.grad(spikes, (x, v_th), g)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
