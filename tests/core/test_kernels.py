"""Fused kernels against the reference kernel, the reference against finite differences, and
every kernel against the surrogate formulas at exact ties and window edges."""

import pytest
import torch
from hypothesis import given, settings
from kernel_cases import (
    CASES,
    PARAMS,
    SHAPES,
    assert_matches_reference,
    convert,
    formula_case,
    make_inputs,
    run,
)

from spikeforge import surrogate as sg
from spikeforge.core.kernels import NeuronSpec, cpu, cpu_multistep, fused_multistep, reference_multistep


@settings(max_examples=120, deadline=None)
@given(**CASES)
def test_fused_matches_reference(seed, steps, shape, dtype, surrogate, hard, v_reset, detach_reset, strict, timing,
                                 learnable, per_channel):
    spec = NeuronSpec(surrogate, hard, v_reset if hard else 0.0, detach_reset, strict, timing)
    x, values = make_inputs(seed, steps, shape, dtype, learnable, per_channel)
    reference = run(reference_multistep, x, values, spec, seed)
    kernels = [fused_multistep]
    if cpu.supports(x, spec, *(values[k] for k in PARAMS)):
        kernels.append(cpu_multistep)
    for kernel in kernels:
        assert_matches_reference(reference, run(kernel, x, values, spec, seed), dtype, kernel.__name__)


@pytest.mark.skipif(not cpu.compiler_available(), reason="no C compiler")
def test_compiled_kernel_is_used_by_auto_on_cpu_and_splits_work_across_threads():
    spec = NeuronSpec(sg.Triangle, True, 0.0, False, False)
    x = torch.randn(4, 70_000, dtype=torch.float64)  # large enough to be split over threads
    assert cpu.supports(x, spec, 0.5, 1.0, 1.0, torch.tensor(1.0), 0.0)
    assert not cpu.supports(x.half(), spec, 0.5, 1.0, 1.0, torch.tensor(1.0), 0.0)  # bfloat16 yes, float16 no
    assert not cpu.supports(x, spec, torch.full((4, 70_000), 0.5), 1.0, 1.0, torch.tensor(1.0), 0.0)  # per step
    values = dict(zip(PARAMS, (0.5, 1.0, 1.0, torch.tensor(1.0, dtype=torch.float64), 0.0)))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        s_cpu, u_cpu, g_cpu = run(cpu_multistep, x, values, spec, 0)
    finally:
        torch.set_num_threads(threads)
    s_ref, u_ref, g_ref = run(fused_multistep, x, values, spec, 0)
    assert torch.equal(s_cpu, s_ref)
    torch.testing.assert_close(u_cpu, u_ref)
    torch.testing.assert_close(g_cpu["x"], g_ref["x"])


def test_cpu_backend_refuses_what_it_cannot_run():
    import spikeforge as sf

    with pytest.raises(ValueError, match="backend='cpu' needs float32/float64 CPU tensors"):
        sf.LIF(backend="cpu")(torch.ones(2, 3), width=torch.ones(2, 3))  # a surrogate width per step


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_input_runs_the_recurrence_in_float32(dtype):
    """Mixed precision hands the neuron half-precision currents: the membrane must still be
    integrated in float32 (bit-equal to a float32 run on the same rounded input)."""
    import spikeforge as sf

    x = (torch.randn(6, 4, 33, generator=torch.Generator().manual_seed(0)) + 0.5).to(dtype).requires_grad_()
    x32 = x.detach().float().requires_grad_()
    neuron = sf.LIF(decay=0.9, v_th=1.0)
    spikes, spikes32 = neuron(x), neuron(x32)
    assert spikes.dtype == dtype
    torch.testing.assert_close(spikes.float(), spikes32, rtol=0, atol=0)
    upstream = torch.randn(spikes.shape, generator=torch.Generator().manual_seed(1)).to(dtype).float()
    (spikes.float() * upstream).sum().backward()
    (spikes32 * upstream).sum().backward()
    assert x.grad.dtype == dtype
    torch.testing.assert_close(x.grad.float(), x32.grad.to(dtype).float(), rtol=0, atol=0)


def test_fused_bfloat16_within_tolerance_of_float32():
    spec = NeuronSpec(sg.Triangle, True, 0.0, False, False)
    x, values = make_inputs(3, 8, (4, 64), torch.float32, {"decay", "v_th"}, False)
    s32, _, g32 = run(fused_multistep, x, values, spec, 3)
    s16, _, g16 = run(fused_multistep, x.bfloat16(), convert(values, lambda t: t.bfloat16()), spec, 3)
    assert (s16.float() == s32).float().mean() > 0.97
    for name in g32:
        rel = (g16[name].float() - g32[name]).norm() / g32[name].norm()
        assert rel < 0.1, name


@pytest.mark.parametrize("surrogate", SHAPES)
@pytest.mark.parametrize("hard", [True, False])
@pytest.mark.parametrize("timing", ["now", "next_step"])
def test_reference_gradients_match_finite_differences_of_smooth_version(surrogate, hard, timing):
    """With the primitive as the forward, the reference is a smooth map: gradcheck every input."""
    spec = NeuronSpec(surrogate, hard, 0.1 if hard else 0.0, False, False, timing)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(5, 3, 2, generator=gen, dtype=torch.float64) + 0.5
    args = [
        x.requires_grad_(),
        torch.tensor(0.7, dtype=torch.float64, requires_grad=True),
        torch.tensor(0.9, dtype=torch.float64, requires_grad=True),
        torch.tensor(0.6, dtype=torch.float64, requires_grad=True),
        torch.tensor(1.3, dtype=torch.float64, requires_grad=True),
        torch.full((3, 2), 0.2, dtype=torch.float64, requires_grad=True),
    ]

    def smooth(x, decay, scale, v_th, width, v_init):
        return reference_multistep(x, spec, decay, scale, v_th, width, v_init, smooth=True)

    assert torch.autograd.gradcheck(smooth, args, eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("surrogate", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("v_th", [0.0, 1.0])
def test_every_backend_follows_the_surrogate_formula_at_ties_and_window_edges(surrogate, dtype, v_th):
    """One step, loss = sum of spikes: dL/dx is the surrogate at z = x - v_th, exactly at the
    threshold and at the window edges +- 1 ulp as well (no subgradient of abs or clamp)."""
    x, w, expected, tol = formula_case(surrogate, dtype, v_th)
    spec = NeuronSpec(surrogate, True, 0.0, False, False)
    kernels = [reference_multistep, fused_multistep] + ([cpu_multistep] if cpu.compiler_available() else [])
    for kernel in kernels:
        xx = x.clone().requires_grad_()
        kernel(xx, spec, 0.5, 1.0, v_th, w, 0.0)[0].sum().backward()
        torch.testing.assert_close(xx.grad[0], expected, rtol=tol, atol=tol,
                                   msg=lambda m, kernel=kernel: f"{kernel.__name__}: {m}")


def test_no_graph_without_grad_and_state_does_not_grow():
    spec = NeuronSpec(sg.Triangle, True, 0.0, False, False)
    x = torch.randn(64, 10)
    with torch.no_grad():
        s, u = fused_multistep(x, spec, 0.5, 1.0, 1.0, torch.tensor(1.0), 0.0)
    assert s.grad_fn is None and u.shape == (10,)
    s_ref, u_ref = reference_multistep(x, spec, 0.5, 1.0, 1.0, torch.tensor(1.0), 0.0)
    assert torch.equal(s, s_ref) and torch.allclose(u, u_ref)


def test_hard_reset_gradient_by_hand():
    """Two steps, decay 0.5, v_th 1, triangle(1), loss s0 + s1, x = (1.5, 0.2).

    h0 = 1.5 fires (sg0 = 0.5) and resets u0 = 0; h1 = 0.2 (sg1 = 0.2).
    dL/dx1 = 0.2; dL/du0 = 0.5 * 0.2 = 0.1. Through the reset, du0/dh0 =
    (1 - s0) + (0 - h0) * sg0 = -0.75, so dL/dx0 = 0.5 + 0.1 * -0.75 = 0.425;
    with the reset detached du0/dh0 = 0 and dL/dx0 = 0.5.
    """
    for detach, expected in ((False, [0.425, 0.2]), (True, [0.5, 0.2])):
        spec = NeuronSpec(sg.Triangle, True, 0.0, detach, False)
        for kernel in (fused_multistep, reference_multistep) + ((cpu_multistep,) if cpu.compiler_available() else ()):
            x = torch.tensor([[1.5], [0.2]], dtype=torch.float64, requires_grad=True)
            s, u = kernel(x, spec, 0.5, 1.0, 1.0, torch.tensor(1.0, dtype=torch.float64), 0.0)
            assert s[:, 0].tolist() == [1.0, 0.0] and u.item() == pytest.approx(0.2)
            s.sum().backward()
            torch.testing.assert_close(x.grad[:, 0], torch.tensor(expected, dtype=torch.float64))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_fused_on_cuda_matches_cpu_reference():
    spec = NeuronSpec(sg.Sigmoid, True, 0.0, False, False)
    x, values = make_inputs(0, 6, (8, 16), torch.float32, {"decay", "v_th"}, False)
    s_ref, _, g_ref = run(reference_multistep, x, values, spec, 0)
    s_gpu, _, g_gpu = run(fused_multistep, x.cuda(), convert(values, lambda t: t.cuda()), spec, 0)
    assert torch.equal(s_gpu.cpu(), s_ref)
    for name in g_ref:
        torch.testing.assert_close(g_gpu[name].cpu(), g_ref[name], rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not cpu.compiler_available(), reason="no C compiler")
def test_compiled_kernel_runs_on_channels_last_memory_without_copies():
    import spikeforge as sf

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3 * 4, 5, 6, 7, generator=gen).contiguous(memory_format=torch.channels_last).requires_grad_()
    lif = sf.LIF(decay=0.6, backend="cpu")
    lif.timesteps = 3
    out = lif(x)
    assert out.is_contiguous(memory_format=torch.channels_last)
    g = torch.randn(out.shape, generator=gen)
    out.backward(g)
    x_ref = x.detach().contiguous().requires_grad_()
    ref = sf.LIF(decay=0.6, backend="reference")
    ref.timesteps = 3
    out_ref = ref(x_ref)
    out_ref.backward(g)
    assert torch.equal(out, out_ref)
    torch.testing.assert_close(x.grad, x_ref.grad)
