"""The Triton kernels against the reference: every option, odd sizes, one and many steps, ties and
window edges, non-finite membranes, and the backend choice.

Without a GPU the kernels run on CPU tensors in Triton's interpreter: the module's fixture sets
``TRITON_INTERPRET=1`` for these tests only. The kernels are decorated when their generated module
first loads, and they use only Triton builtins and their own helpers, so the interpreter works
even when ``triton.language`` was imported earlier by something else. With a GPU the same tests
run the compiled kernels on it. The interpreter is slow: the shapes are small.
"""

import itertools
import sys

import pytest
import torch
from hypothesis import given, settings
from kernel_cases import (
    CASES,
    COLUMNS,
    PARAMS,
    RESETS,
    SHAPES,
    assert_matches_reference,
    convert,
    expected_rule,
    formula_case,
    make_inputs,
    run,
)

import spikeforge as sf
from spikeforge import surrogate as sg
from spikeforge.core.kernels import NeuronSpec, reference_multistep, run_multistep, triton_loops, triton_multistep
from spikeforge.optional import MissingDependency

pytestmark = pytest.mark.skipif(not triton_loops.available(), reason="triton is not installed")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True, scope="module")
def _interpreter_without_gpu():
    """Triton's interpreter for CPU tensors, for this module's tests only."""
    with pytest.MonkeyPatch.context() as patch:
        if DEVICE == "cpu":
            patch.setenv("TRITON_INTERPRET", "1")
        yield


def on_device(x, values):
    return x.to(DEVICE), convert(values, lambda t: t.to(DEVICE))


def check(spec, seed, steps, shape, dtype, learnable, per_channel):
    x, values = make_inputs(seed, steps, shape, dtype, learnable, per_channel)
    reference = run(reference_multistep, x, values, spec, seed)
    assert_matches_reference(reference, run(triton_multistep, *on_device(x, values), spec, seed), dtype, "triton")


OPTIONS = [(reset, detach, strict, timing) for reset in RESETS for detach in (False, True) for strict in (False, True)
           for timing in ("now", "next_step")]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reset, detach, strict, timing", OPTIONS)
def test_every_option_matches_reference(reset, detach, strict, timing, dtype):
    """Each option set twice: all parameters learnable and per channel or per neuron (odd sizes),
    then none learnable (only the input gradient, which the kernel scales as it writes)."""
    case = OPTIONS.index((reset, detach, strict, timing))
    spec = NeuronSpec(SHAPES[case % len(SHAPES)], *RESETS[reset], detach, strict, timing)
    check(spec, case, 5, (3, 7), dtype, set(PARAMS), True)
    check(spec, case, 4, (5,), dtype, set(), False)


@pytest.mark.parametrize("steps", [1, 64])
@pytest.mark.parametrize("reset, timing", [("hard-to-minus-quarter", "now"), ("soft", "next_step")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_one_step_and_many_steps_match_reference(steps, reset, timing, dtype):
    spec = NeuronSpec(sg.Sigmoid, *RESETS[reset], False, False, timing)
    check(spec, steps, steps, (3, 11), dtype, {"decay", "v_th", "v_init"}, True)


@pytest.mark.parametrize("reset", RESETS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_an_initial_membrane_above_threshold_is_reset_at_the_first_step(reset, dtype):
    spec = NeuronSpec(sg.ATan, *RESETS[reset], False, False, "next_step")
    x, values = make_inputs(7, 3, (2, 9), dtype, set(PARAMS), True)
    values["v_init"] = torch.linspace(0.5, 1.2, 18, dtype=dtype).reshape(2, 9).requires_grad_()
    assert_matches_reference(run(reference_multistep, x, values, spec, 7),
                             run(triton_multistep, *on_device(x, values), spec, 7), dtype, "triton")


@settings(max_examples=60, deadline=None)
@given(**CASES)
def test_random_cases_match_reference(seed, steps, shape, dtype, surrogate, hard, v_reset, detach_reset, strict, timing,
                                      learnable, per_channel):
    spec = NeuronSpec(surrogate, hard, v_reset if hard else 0.0, detach_reset, strict, timing)
    check(spec, seed, steps, shape, dtype, learnable, per_channel)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_surrogate_follows_its_formula_at_ties_and_window_edges(dtype):
    for surrogate, v_th in itertools.product(SHAPES, [0.0, 1.0]):
        x, w, expected, tol = formula_case(surrogate, dtype, v_th)
        x = x.to(DEVICE).requires_grad_()
        triton_multistep(x, NeuronSpec(surrogate), 0.5, 1.0, v_th, w.to(DEVICE), 0.0)[0].sum().backward()
        torch.testing.assert_close(x.grad[0].cpu(), expected, rtol=tol, atol=tol, msg=surrogate.__name__)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the interpreter's numpy on inf - inf
@pytest.mark.parametrize("reset", RESETS)
@pytest.mark.parametrize("timing", ["now", "next_step"])
def test_inf_and_nan_follow_the_documented_rule(reset, timing):
    for strict, decay, dtype, grad in itertools.product((False, True), (0.5, 1.0), (torch.float32, torch.float64),
                                                        (False, True)):
        spec = NeuronSpec(sg.Triangle, *RESETS[reset], False, strict, timing)
        want_spikes, want_state = expected_rule(reset, timing, strict, decay)
        x = torch.tensor(COLUMNS, dtype=dtype, device=DEVICE).T.contiguous().requires_grad_(grad)
        w = torch.tensor(1.0, dtype=dtype, device=DEVICE)
        spikes, state, counts = run_multistep(x, spec, decay, 1.0, 1.0, w, 0.0, "triton")
        where = f"strict={strict}, decay={decay}, {dtype}, grad={grad}"
        torch.testing.assert_close(spikes.detach().cpu().double(), want_spikes, rtol=0, atol=0, equal_nan=True,
                                   msg=lambda m, where=where: f"{where}: spikes differ from the rule\n{m}")
        torch.testing.assert_close(state.detach().cpu().double(), want_state, rtol=0, atol=0, equal_nan=True,
                                   msg=lambda m, where=where: f"{where}: final state differs from the rule\n{m}")
        assert counts.tolist() == (want_spikes == 1).sum(1).tolist(), where


def test_a_nan_input_makes_the_loss_nan_and_is_not_counted_as_a_spike():
    x = torch.full((6, 2, 5), 0.75, device=DEVICE)
    x[2, 1, 3] = float("nan")
    neuron = sf.LIF(decay=0.5, backend="triton")
    spikes = neuron(x.requires_grad_())
    assert spikes[:, 1, 3].isnan().tolist() == [False, False, True, True, True, True]
    assert torch.isnan(spikes.sum())
    assert neuron.spike_counts.tolist() == spikes.detach().nansum(dim=(1, 2)).tolist()
    spikes.sum().backward()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("reset, detach, strict, timing", OPTIONS[::3])
def test_half_precision_is_read_and_written_directly_and_equals_the_float32_round_trip(monkeypatch, dtype, reset,
                                                                                       detach, strict, timing):
    """Mixed precision: the kernels take float16/bfloat16 ``x`` (per-channel and per-neuron parameters, none
    learnable) and give spikes and input gradient in its dtype, equal to converting ``x`` to float32, running
    the float32 kernels and converting back: spikes exactly (a NaN membrane too), the gradient rounded to
    nearest even as torch's conversion does."""
    case = OPTIONS.index((reset, detach, strict, timing))
    spec = NeuronSpec(SHAPES[case % len(SHAPES)], *RESETS[reset], detach, strict, timing)
    x, values = make_inputs(case, 6, (3, 9), torch.float32, set(), True)
    values = convert(values, lambda t: t.to(DEVICE)) | {"v_init": torch.linspace(0, 0.3, 27, device=DEVICE).view(3, 9)}
    x = x.to(dtype).to(DEVICE)
    x[2, 1, 3] = float("nan")
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(case)).to(dtype).to(DEVICE)
    params = [values[k] for k in PARAMS]
    seen = []
    forward = triton_loops.triton_forward
    monkeypatch.setattr(triton_loops.TRITON_LOOPS, "forward", lambda x, *a: seen.append(x.dtype) or forward(x, *a))
    leaf = x.clone().requires_grad_()
    spikes = run_multistep(leaf, spec, *params, backend="triton")[0]
    spikes.backward(g)
    leaf32 = x.float().requires_grad_()
    spikes32 = run_multistep(leaf32, spec, *params, backend="triton")[0]
    spikes32.to(dtype).backward(g)
    assert seen == [dtype, torch.float32] and spikes.dtype == leaf.grad.dtype == dtype
    assert spikes.isnan().any()
    torch.testing.assert_close(spikes, spikes32.to(dtype), rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(leaf.grad, leaf32.grad.to(dtype), rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("steps, learnable, keeps_h", [(1, set(), False), (16, set(), False), (17, set(), True),
                                                      (4, {"v_th"}, True)])
def test_up_to_16_steps_the_backward_recomputes_h_from_the_input(monkeypatch, steps, learnable, keeps_h):
    """The forward writes no h when the backward can recompute it (at most 16 steps, no learnable parameter);
    either way the results are the reference's."""
    kept = []
    forward = triton_loops.triton_forward
    monkeypatch.setattr(triton_loops.TRITON_LOOPS, "forward", lambda *a: kept.append(a[-1]) or forward(*a))
    spec = NeuronSpec(sg.ATan, True, -0.25, False, False, "next_step" if steps % 2 else "now")
    check(spec, steps, steps, (3, 13), torch.float32, learnable, True)
    assert kept == [keeps_h]


def test_half_precision_with_a_learnable_parameter_takes_the_float32_path():
    x = torch.randn(4, 2, 30, device=DEVICE).half()
    v_th = torch.full((2, 1), 0.9, device=DEVICE, requires_grad=True)
    spec = NeuronSpec(sg.Triangle)
    assert not triton_loops.supports(x, spec, 0.5, 1.0, v_th, 1.0, 0.0)
    assert triton_loops.supports(x, spec, 0.5, 1.0, v_th.detach(), 1.0, 0.0)
    spikes = run_multistep(x.clone().requires_grad_(), spec, 0.5, 1.0, v_th, 1.0, 0.0, "triton")[0]
    spikes.sum().backward()
    assert spikes.dtype == torch.float16 and v_th.grad is not None


def test_half_precision_runs_in_float32_channels_last_and_empty_batches():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2 * 3, 4, 5, 3, generator=gen).contiguous(memory_format=torch.channels_last).to(DEVICE)
    lif = sf.LIF(decay=0.6, backend="triton")
    lif.timesteps = 2
    out = lif(x.bfloat16())
    assert out.dtype == torch.bfloat16
    assert torch.equal(out.float(), lif(x.bfloat16().float()))
    ref = sf.LIF(decay=0.6, backend="reference")
    ref.timesteps = 2
    assert torch.equal(lif(x), ref(x.contiguous()))
    spikes, _, counts = run_multistep(torch.ones(3, 0, 4, device=DEVICE), NeuronSpec(sg.Triangle), 0.5, 1.0, 1.0,
                                      1.0, 0.0, "triton")
    assert spikes.shape == (3, 0, 4) and counts.tolist() == [0, 0, 0]


def test_backend_choice(monkeypatch):
    spec = NeuronSpec(sg.Triangle)
    x = torch.ones(2, 3, device=DEVICE)
    assert (triton_loops.supports(x, spec, 0.5, 1.0, torch.ones(3, device=DEVICE), 1.0, torch.zeros(1))
            and not triton_loops.supports(x, spec, 0.5, 1.0, torch.ones(2, 3), 1.0, 0.0))  # not one step's shape
    with pytest.raises(ValueError, match="^backend='triton' needs float32/float64 tensors and neuron parameters"):
        run_multistep(x, spec, 0.5, 1.0, torch.ones(4), 1.0, 0.0, "triton")
    cpu_x = torch.ones(2, 3)
    assert triton_loops.TRITON_LOOPS is not _auto_loops(cpu_x, spec)  # the interpreter is never chosen by itself
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="^backend='triton' needs CUDA tensors, got cpu ones"):
        run_multistep(cpu_x, spec, 0.5, 1.0, 1.0, 1.0, 0.0, "triton")
    monkeypatch.setitem(sys.modules, "triton", None)  # as if not installed
    with pytest.raises(MissingDependency, match="backend='triton' needs the 'triton' package: pip install triton"):
        run_multistep(cpu_x, spec, 0.5, 1.0, 1.0, 1.0, 0.0, "triton")


def _auto_loops(x, spec):
    from spikeforge.core import kernels

    return kernels._auto_loops(x, spec, 0.5, 1.0, 1.0, 1.0, 0.0)


@pytest.mark.skipif(DEVICE != "cuda", reason="no CUDA device")
def test_auto_runs_triton_on_cuda():
    assert _auto_loops(torch.ones(2, 3, device="cuda"), NeuronSpec(sg.Triangle)) is triton_loops.TRITON_LOOPS


@pytest.mark.parametrize("io, state", [("fp32", "fp32"), ("fp64", "fp64"), ("fp16", "fp32"), ("bf16", "fp32")])
def test_kernels_compile_for_a_cuda_gpu(monkeypatch, io, state):
    """Triton's compiler to PTX and a cubin for sm_80, which needs no GPU: what the interpreter cannot
    catch (types of loop-carried values, constexpr branches, lowering) fails here. ``io``: the dtype of the
    input, spikes and gradients; ``state``: of h, the final state and the parameters."""
    from triton import compile as triton_compile
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    pointers = dict(lif_forward=("x", "s", "h", "u_out", "decay", "scale", "vth", "v0"),
                    lif_backward=("gs", "gu", "state", "gh", "decay", "scale", "vth", "v0", "width"))
    io_pointers = {"x", "s", "gs", "gh"}
    # Every surrogate; all four reset modes and timings; each per-neuron and mode flag both ways.
    modes = itertools.cycle(itertools.product((True, False), (True, False)))
    for case, (surrogate, (hard, delayed)) in enumerate(zip(SHAPES, modes)):
        flag = case % 2 == 0
        kernels = triton_loops.load_kernels(surrogate)
        common = dict(HARD=hard, DELAYED=delayed, STRICT=flag, V_RESET=-0.25 if hard else 0.0, BLOCK=256)
        launches = [
            (kernels.lif_forward, dict(KEEP_H=flag, DECAY_N=flag, SCALE_N=not flag, VTH_N=flag, V0_N=not flag),
             dict(enable_fp_fusion=False)),
            (kernels.lif_backward, dict(DETACH=not flag, HAS_GU=flag, DECAY_N=not flag, VTH_N=flag, WIDTH_N=flag,
                                        SCALE_N=not flag, V0_N=False, FROM_INPUT=False, T_PAD=2), {}),
            (kernels.lif_backward, dict(DETACH=flag, HAS_GU=not flag, DECAY_N=flag, SCALE_N=not flag, VTH_N=not flag,
                                        V0_N=flag, WIDTH_N=flag, FROM_INPUT=True, T_PAD=16),
             dict(enable_fp_fusion=False)),
        ]
        for kernel, constants, options in launches:
            constants = {**common, **constants}
            pointer_names = pointers[kernel.fn.__name__]
            io_names = io_pointers | ({"state"} if constants.get("FROM_INPUT") else set())  # x, else h
            signature = {name: "constexpr" if name in constants
                         else f"*{io if name in io_names else state}" if name in pointer_names
                         else "*i64" if name == "counts" else "i32" for name in kernel.arg_names}
            source = ASTSource(kernel, signature, {(kernel.arg_names.index(k),): v for k, v in constants.items()})
            compiled = triton_compile(source, target=GPUTarget("cuda", 80, 32), options=dict(num_warps=2, **options))
            assert compiled.asm["cubin"]
