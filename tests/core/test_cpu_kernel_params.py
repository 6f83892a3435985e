"""The compiled CPU kernel with per-channel and per-neuron parameters against the reference: every option,
odd sizes, one and many steps, channels split by blocks and threads, channels-last memory, parameters of any
broadcast shape; the backend choice; and the reuse of the memory blocks of ``h`` and ``dL/dh``, never while
a tensor lives on them."""

import pytest
import torch
from kernel_cases import PARAMS, RESETS, SHAPES, assert_matches_reference, make_unit_inputs, run

import spikeforge as sf
from spikeforge import surrogate as sg
from spikeforge.core import kernels
from spikeforge.core.kernels import NeuronSpec, cpu, cpu_multistep, host, reference_multistep, run_multistep
from spikeforge.core.kernels.fused import TORCH_LOOPS

pytestmark = pytest.mark.skipif(not cpu.compiler_available(), reason="no C compiler")

OPTIONS = [(reset, detach, strict, timing) for reset in RESETS for detach in (False, True) for strict in (False, True)
           for timing in ("now", "next_step")]


def check(spec, x, values, seed, label):
    assert cpu.supports(x, spec, *(values[k] for k in PARAMS))
    reference = run(reference_multistep, x, values, spec, seed)
    assert_matches_reference(reference, run(cpu_multistep, x, values, spec, seed), x.dtype, label)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layout", ["channel", "neuron"])
@pytest.mark.parametrize("reset, detach, strict, timing", OPTIONS)
def test_every_option_matches_reference(reset, detach, strict, timing, layout, dtype):
    """Each option with all parameters learnable (their gradients: the shared reductions), then none
    learnable (only the input gradient, which the kernel scales per element as it writes it)."""
    case = OPTIONS.index((reset, detach, strict, timing))
    spec = NeuronSpec(SHAPES[case % len(SHAPES)], *RESETS[reset], detach, strict, timing)
    for learnable in (PARAMS, ()):
        x, values = make_unit_inputs(case, 5, (3, 7, 5), dtype, layout, learnable)
        check(spec, x, values, case, f"{layout}, learnable={learnable}")


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("reset, detach, strict, timing", OPTIONS)
def test_bfloat16_is_read_and_written_directly_and_equals_the_float32_round_trip(monkeypatch, reset, detach, strict,
                                                                                 timing, stream):
    """Mixed precision: the compiled loops take bfloat16 ``x`` (per-channel parameters, none learnable) and
    give bfloat16 spikes and input gradient, equal to converting ``x`` to float32, running the float32 kernel
    and converting back (spikes exactly, NaN membranes included; the gradient rounded to nearest even, the
    same but for an odd last bit where the two compiled backward loops round differently)."""
    monkeypatch.setattr(cpu, "_STREAM_BYTES", 0 if stream else cpu._STREAM_BYTES)
    case = OPTIONS.index((reset, detach, strict, timing))
    spec = NeuronSpec(SHAPES[case % len(SHAPES)], *RESETS[reset], detach, strict, timing)
    x, values = make_unit_inputs(case, 7, (3, 5, 41), torch.float32, "channel", ())
    x = x.to(torch.bfloat16)
    x[2, 1, 3, 0] = float("nan")
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(case)).to(torch.bfloat16)
    params = [values[k] for k in PARAMS]
    seen = []
    monkeypatch.setattr(cpu.CPU_LOOPS, "forward", lambda x, *a: seen.append(x.dtype) or cpu.cpu_forward(x, *a))
    leaf = x.clone().requires_grad_()
    spikes = run_multistep(leaf, spec, *params, backend="auto")[0]
    spikes.backward(g)
    leaf32 = x.float().requires_grad_()
    spikes32 = run_multistep(leaf32, spec, *params, backend="cpu")[0]
    spikes32.to(torch.bfloat16).backward(g)
    assert seen == [torch.bfloat16, torch.float32] and spikes.dtype == leaf.grad.dtype == torch.bfloat16
    assert spikes.isnan().any()
    torch.testing.assert_close(spikes, spikes32.to(torch.bfloat16), rtol=0, atol=0, equal_nan=True)
    finite = ~spikes.isnan().any(0)  # the gradient through a NaN membrane is unspecified (fast-math backward)
    grad, grad32 = leaf.grad[:, finite].float(), leaf32.grad.to(torch.bfloat16)[:, finite].float()
    torch.testing.assert_close(grad, grad32, rtol=2**-7, atol=0)  # one bfloat16 step: fast-math's last bits
    assert (grad == grad32).float().mean() > 0.99


@pytest.mark.parametrize("timing", ["now", "next_step"])
def test_bfloat16_with_learnable_parameters_equals_the_float32_round_trip(timing):
    """Mixed precision with every parameter learnable (per channel): bfloat16 in and out, the state, h and
    the parameters' gradients in float32, equal bit for bit to converting x to float32, running the float32
    kernel and converting the spikes back."""
    spec = NeuronSpec(sg.Sigmoid, True, -0.1, False, False, timing)
    x, values = make_unit_inputs(3, 5, (3, 4, 37), torch.float32, "channel", PARAMS)
    x = x.to(torch.bfloat16)
    assert cpu.supports(x, spec, *(values[k] for k in PARAMS))
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(2)).to(torch.bfloat16)
    results = []
    for leaf in (x.clone().requires_grad_(), x.float().requires_grad_()):
        params = {k: v.detach().clone().requires_grad_() for k, v in values.items()}
        spikes = run_multistep(leaf, spec, *(params[k] for k in PARAMS), backend="cpu")[0]
        spikes.to(torch.bfloat16).backward(g)
        results.append((spikes, leaf.grad.to(torch.bfloat16), [params[k].grad for k in PARAMS]))
    (spikes, grad, grads), (spikes32, grad32, grads32) = results
    assert spikes.dtype == torch.bfloat16 and all(p.dtype == torch.float32 for p in grads)
    assert torch.equal(spikes, spikes32.to(torch.bfloat16)) and torch.equal(grad, grad32)
    for name, got, want in zip(PARAMS, grads, grads32):
        assert torch.equal(got, want), name


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("timing", ["now", "next_step"])
def test_streamed_stores_match_reference_on_unaligned_rows(monkeypatch, timing, dtype):
    """Outputs from ``_STREAM_BYTES`` on go out by non-temporal stores; forced on for a small input whose
    steps of 1,113 elements start at every alignment (a scalar head, vectors, a scalar tail), with ``h`` kept
    (learnable parameters) and recomputed (none learnable), the results still match the reference."""
    monkeypatch.setattr(cpu, "_STREAM_BYTES", 0)
    spec = NeuronSpec(sg.Sigmoid, True, -0.2, False, False, timing)
    for learnable in (PARAMS, ()):
        x, values = make_unit_inputs(7, 6, (3, 7, 53), dtype, "channel", learnable)
        assert cpu._streams(x) == 1
        check(spec, x, values, 7, f"streamed, learnable={learnable}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", PARAMS)
@pytest.mark.parametrize("timing", ["now", "next_step"])
def test_one_parameter_per_neuron_among_floats_matches_reference(timing, name, dtype):
    """The kernel keeps parameters that are one value in registers: one that is not must still be read per
    element (learnable or not), with the others floats or one-element tensors."""
    spec = NeuronSpec(sg.Triangle, True, 0.0, False, False, timing)
    for learnable in ({name}, set()):
        x, values = make_unit_inputs(PARAMS.index(name), 4, (2, 7, 3), dtype, "neuron", learnable)
        values = {k: v if k == name else v.detach().mean() if k == "width" else v.mean().item()
                  for k, v in values.items()}
        check(spec, x, values, 0, f"{name}, learnable={learnable}")


@pytest.mark.parametrize("steps", [1, 40])
@pytest.mark.parametrize("timing", ["now", "next_step"])
@pytest.mark.parametrize("layout", ["channel", "neuron"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_one_step_and_many_steps_match_reference(steps, timing, layout, dtype):
    """558 neurons per step: a block of 512 ends inside a channel of 31."""
    spec = NeuronSpec(sg.ATan, True, -0.2, False, False, timing)
    x, values = make_unit_inputs(steps, steps, (2, 9, 31), dtype, layout)
    check(spec, x, values, steps, f"T={steps}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_channels_split_across_blocks_and_threads_match_reference(dtype, two_kernel_threads):
    spec = NeuronSpec(sg.Triangle, False, 0.0, False, True)
    x, values = make_unit_inputs(3, 3, (3, 13, 1031), dtype, "channel")  # 40209 neurons: two threads
    assert len(host.thread_ranges(x[0].numel())) == 2
    check(spec, x, values, 3, f"two threads, {two_kernel_threads}")


@pytest.mark.parametrize("layout", ["channel", "neuron"])
def test_channels_last_memory_matches_reference(layout):
    """Steps ``[B, C, H, W]`` in channels-last memory, run without a copy: the kernel reads a channel's
    parameter at every C-th element (a per-neuron one in memory order)."""
    spec = NeuronSpec(sg.Sigmoid, True, 0.0, False, False)
    x, values = make_unit_inputs(5, 4, (3, 5, 7, 2), torch.float64, layout)
    x = x.reshape(12, 5, 7, 2).contiguous(memory_format=torch.channels_last).reshape(4, 3, 5, 7, 2)
    assert x[0].is_contiguous(memory_format=torch.channels_last)
    check(spec, x, values, 5, "channels-last")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("timing", ["now", "next_step"])
def test_parameters_of_any_broadcast_shape_match_reference(timing, dtype):
    """Each parameter varies along other dims of the step ``[3, 4, 1, 5, 6]``: a channel, a middle dim, two dims
    apart (with the dim between them: repeated values), the innermost dim, the outermost dim."""
    spec = NeuronSpec(sg.DSpike, False, 0.0, False, False, timing)
    gen = torch.Generator().manual_seed(11)
    x = (torch.randn(6, 3, 4, 1, 5, 6, generator=gen, dtype=torch.float64) * 1.2 + 0.6).to(dtype)
    shapes = {"decay": (4, 1, 1, 1), "input_scale": (5, 1), "v_th": (4, 1, 1, 6), "width": (6,),
              "v_init": (3, 1, 1, 1, 1)}
    base = {"decay": 0.6, "input_scale": 0.9, "v_th": 0.8, "width": 1.1, "v_init": 0.1}
    values = {name: (base[name] * (1 + 0.2 * torch.rand(shape, generator=gen, dtype=torch.float64)))
              .to(dtype).requires_grad_() for name, shape in shapes.items()}
    check(spec, x, values, 11, "mixed")


def test_auto_picks_the_compiled_kernel_when_parameters_broadcast_to_one_step():
    spec = NeuronSpec(sg.Triangle)
    x = torch.ones(2, 3, 4)
    per_unit = (torch.full((3, 1), 0.5), 1.0, torch.ones(3, 4), torch.ones(4), torch.zeros(3, 1))
    assert kernels._auto_loops(x, spec, *per_unit) is cpu.CPU_LOOPS
    over_time = torch.full((2, 3, 4), 0.5)  # one value per step and neuron: not one step's shape
    assert not cpu.supports(x, spec, over_time, 1.0, 1.0, 1.0, 0.0)
    assert kernels._auto_loops(x, spec, over_time, 1.0, 1.0, 1.0, 0.0) is TORCH_LOOPS
    with pytest.raises(ValueError, match="^backend='cpu' needs float32/float64 CPU tensors, neuron parameters"):
        run_multistep(x, spec, over_time, 1.0, 1.0, 1.0, 0.0, "cpu")
    spikes = sf.LIF(backend="cpu")(torch.full((2, 3), 0.75), width=torch.ones(3))  # a per-neuron surrogate width
    assert spikes.tolist() == [[0.0] * 3, [1.0] * 3]


def saved_h(spikes):
    """The membrane ``h`` the autograd node of ``spikes`` keeps."""
    return spikes.grad_fn.saved_tensors[0]


@pytest.fixture(autouse=True)
def _large_outputs_pooled(monkeypatch):
    """The kernel's reused blocks on, as in a process that has not handed freed memory to malloc's reuse (a
    trainer built earlier in this test process may have)."""
    monkeypatch.setattr(host, "_pooling", True)


def on_block(t) -> bool:
    """Whether ``t`` lives on one of the kernel's reused memory blocks (their storages are not resizable)."""
    return not t.untyped_storage().resizable()


def test_blocks_are_reused_once_nothing_holds_them_and_never_before():
    spec = NeuronSpec(sg.Sigmoid)
    x = torch.randn(4, 70_000, generator=torch.Generator().manual_seed(0)) + 0.6  # 1.1 MB per tensor
    scale = torch.full((70_000,), 0.7, requires_grad=True)  # learnable: the node keeps h and the spikes

    def call():
        leaf = x.clone().requires_grad_()
        return leaf, cpu_multistep(leaf, spec, 0.5, scale, 1.0, torch.tensor(1.0), 0.0)[0]

    first_x, first = call()
    assert on_block(first) and on_block(saved_h(first))
    h_block = saved_h(first).data_ptr()
    second_x, second = call()  # the first call's spikes and h are in use: other blocks
    assert {second.data_ptr(), saved_h(second).data_ptr()}.isdisjoint({first.data_ptr(), h_block})
    first.backward(torch.ones_like(first))  # releases h; the input gradient stays with first_x
    assert on_block(first_x.grad) and first_x.grad.data_ptr() != h_block
    in_use = {first.data_ptr(), second.data_ptr(), saved_h(second).data_ptr(), first_x.grad.data_ptr()}
    kept = first_x.grad.clone()
    third_x, third = call()
    third_blocks = {third.data_ptr(), saved_h(third).data_ptr()}
    assert h_block in third_blocks and third_blocks.isdisjoint(in_use)  # free again: reused; the rest never
    third.backward(torch.ones_like(third))
    second.backward(torch.ones_like(second))
    assert first_x.grad.data_ptr() not in (second_x.grad.data_ptr(), third_x.grad.data_ptr())
    assert torch.equal(first_x.grad, kept) and torch.equal(second_x.grad, kept) and torch.equal(third_x.grad, kept)
    small = torch.randn(4, 1000).requires_grad_()
    assert not on_block(cpu_multistep(small, spec, 0.5, 0.7, 1.0, 1.0, 0.0)[0])


def test_only_the_input_wanting_a_gradient_saves_the_input_alone_and_matches_the_saved_h_path():
    """With fixed parameters the node keeps ``x`` only (no ``h``, no spikes) and the backward recomputes
    ``h``; its gradient equals the one of the path that keeps ``h`` (a parameter wanting a gradient)."""
    spec = NeuronSpec(sg.Sigmoid, False, 0.0, False, False, "now")
    x = torch.randn(300, 3, 200, generator=torch.Generator().manual_seed(3)) + 0.6  # long T: blocks of 208 of 600
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(4))
    leaf = x.clone().requires_grad_()
    spikes = cpu_multistep(leaf, spec, 0.5, 0.7, torch.full((3, 1), 1.1), 1.0, 0.2)[0]
    saved = [t for t in spikes.grad_fn.saved_tensors if t is not None]
    assert len(saved) == 2 and saved[0].data_ptr() == leaf.data_ptr()  # x and the per-channel threshold
    spikes.backward(g)
    with_h = x.clone().requires_grad_()
    v_th = torch.full((3, 1), 1.1, requires_grad=True)
    spikes_h = cpu_multistep(with_h, spec, 0.5, 0.7, v_th, 1.0, 0.2)[0]
    assert spikes_h.grad_fn.saved_tensors[0].shape == x.shape and torch.equal(spikes, spikes_h.detach())
    spikes_h.backward(g)
    assert torch.equal(leaf.grad, with_h.grad)


def test_a_retained_graph_keeps_its_block_and_the_pool_stays_small():
    """While a graph is retained its ``h`` is never handed out again, however many calls come between the
    two backward passes; beyond the pool's size the tensors come from torch."""
    spec = NeuronSpec(sg.Erf, False, 0.0, False, False, "next_step")
    x = (torch.randn(3, 5, 30_000, generator=torch.Generator().manual_seed(1)) + 0.6).requires_grad_()
    v_th = torch.full((5, 1), 0.9, requires_grad=True)
    spikes, _ = cpu_multistep(x, spec, 0.6, 0.8, v_th, torch.tensor(1.0), 0.0)
    g = torch.randn(spikes.shape, generator=torch.Generator().manual_seed(2))
    first = torch.autograd.grad(spikes, (x, v_th), g, retain_graph=True)
    others = [cpu_multistep(x.detach().clone().requires_grad_(), spec, 0.6, 0.8, v_th, torch.tensor(1.0), 0.0)[0]
              for _ in range(host._MAX_BLOCKS + 2)]
    assert len(host._BLOCKS) <= host._MAX_BLOCKS
    assert not on_block(saved_h(others[-1]))  # every block is in use
    storages = {saved_h(s).data_ptr() for s in [spikes, *others]}
    assert len(storages) == len(others) + 1
    second = torch.autograd.grad(spikes, (x, v_th), g)
    assert all(torch.equal(a, b) for a, b in zip(first, second))


def test_the_pool_keeps_at_most_its_byte_budget_and_gives_unused_blocks_back(monkeypatch):
    """Blocks beyond ``_MAX_BYTES`` are not kept (unused ones are dropped first, least recently used); and
    ``release_buffers`` drops every block no tensor lives on."""
    spec = NeuronSpec(sg.Erf, False, 0.0, False, False, "now")
    monkeypatch.setattr(host, "_BLOCKS", [])
    x = torch.randn(2, 1, 200_000).requires_grad_()  # spikes: 1.6 MB, one block
    monkeypatch.setattr(host, "_MAX_BYTES", 2 * x.numel() * x.element_size())
    alive = [cpu_multistep(x, spec, 0.5, 1.0, 1.0, 1.0, 0.0)[0] for _ in range(3)]  # three spike tensors
    assert [on_block(s) for s in alive] == [True, True, False]  # the third is over the budget
    del alive
    bigger = torch.randn(3, 1, 200_000).requires_grad_()  # a new size: unused blocks make room for it
    kept = cpu_multistep(bigger, spec, 0.5, 1.0, 1.0, 1.0, 0.0)[0]
    assert on_block(kept) and sum(len(b) for b, _ in host._BLOCKS) <= host._MAX_BYTES
    host.release_buffers()
    assert len(host._BLOCKS) == 1  # only the block of the spikes still held
    del kept
    host.release_buffers()
    assert host._BLOCKS == []


def test_blocks_of_a_size_no_longer_asked_for_are_given_back(monkeypatch):
    """Unused blocks of a size the last ``_RECENT`` pooled allocations did not ask for are dropped; a size asked
    for again within them finds its block."""
    monkeypatch.setattr(host, "_BLOCKS", [])
    small, large = (1 << 18,), (1 << 19,)  # 1 and 2 MiB of float32
    first = host.empty_strided(small, (1,), torch.float32)
    address = first.data_ptr()
    del first  # unused from now on
    others = [host.empty_strided(large, (1,), torch.float32) for _ in range(host._RECENT - 1)]
    again = host.empty_strided(small, (1,), torch.float32)
    assert again.data_ptr() == address  # its size was asked for recently enough: reused
    del again, others
    for _ in range(host._RECENT):
        host.empty_strided(large, (1,), torch.float32)  # unused at once: the same block each time
    assert {len(b) for b, _ in host._BLOCKS} == {8 << 20 >> 2}  # blocks of the large size only
