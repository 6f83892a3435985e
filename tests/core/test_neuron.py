"""Neuron modules: analytic dynamics, peer equivalence, options, bad input."""

import math

import pytest
import torch
from torch import nn

import spikeforge as sf
from spikeforge import surrogate as sg
from spikeforge.core.kernels import cpu

BACKENDS = ["reference", "fused"]
ALL_BACKENDS = BACKENDS + (["cpu"] if cpu.compiler_available() else [])


@pytest.mark.parametrize("backend", BACKENDS)
def test_lif_constant_input_fires_at_analytic_times(backend):
    # decay 0.5, input 0.6, v_th 1, hard reset: h = 0.6, 0.9, 1.05 (fire), 0.6, 0.9, 1.05 (fire)...
    lif = sf.LIF(decay=0.5, v_th=1.0, backend=backend)
    s = lif(torch.full((9, 1), 0.6, dtype=torch.float64))
    assert s[:, 0].tolist() == [0, 0, 1] * 3


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("steps", [1, 4, 32])
def test_if_soft_reset_half_threshold_counts_spikes_like_qcfs(backend, steps):
    """IF, soft reset, v_init = v_th/2, constant input c: count = clip(floor(T c / v_th + 1/2), 0, T)."""
    v_th = 0.8
    c = torch.linspace(-0.3, 1.2, 301, dtype=torch.float64)
    neuron = sf.IF(v_th=v_th, reset="soft", v_init=v_th / 2, backend=backend)
    counts = neuron(c.expand(steps, -1).contiguous()).sum(0)
    expected = torch.clamp(torch.floor(steps * c / v_th + 0.5), 0, steps)
    # Exclude inputs that land within rounding of a bin edge.
    edge = ((steps * c / v_th + 0.5) - torch.round(steps * c / v_th + 0.5)).abs() < 1e-9
    assert torch.equal(counts[~edge], expected[~edge])


@pytest.mark.parametrize("backend", BACKENDS)
def test_output_scale_multiplies_the_spikes_after_the_recurrence(backend):
    """``output_scale`` changes what is emitted, in values and gradients, not the dynamics or the spike counts."""
    x = (torch.rand(6, 4, 5, dtype=torch.float64) * 2).requires_grad_()
    plain, scaled = (sf.IF(v_th=0.8, reset="soft", backend=backend, output_scale=s) for s in (1.0, 2.5))
    spikes, out = plain(x), scaled(x)
    assert torch.equal(out, spikes * 2.5) and spikes.sum() > 0
    assert torch.equal(plain.spike_counts, scaled.spike_counts)
    (grad_plain,) = torch.autograd.grad(spikes.sum() * 2.5, x)
    (grad_scaled,) = torch.autograd.grad(out.sum(), x)
    torch.testing.assert_close(grad_scaled, grad_plain)
    step, _ = scaled.step(x[0].detach(), scaled.initial_state(x[0]))
    assert torch.equal(step, spikes[0].detach() * 2.5)
    assert "output_scale=2.5" in repr(scaled) and "output_scale" not in repr(plain)


@pytest.mark.parametrize("backend", BACKENDS)
def test_strict_comparison(backend):
    x = torch.ones(1, 3)
    assert sf.LIF(v_th=1.0, strict=False, backend=backend)(x).sum() == 3
    assert sf.LIF(v_th=1.0, strict=True, backend=backend)(x).sum() == 0


def test_no_state_survives_a_call():
    lif = sf.LIF(decay=0.9)
    x = torch.rand(6, 4, 5)
    assert torch.equal(lif(x), lif(x))


def test_matches_a_slow_python_simulation_of_the_documented_recurrence():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(12, 7, generator=gen, dtype=torch.float64)
    neuron = sf.LIF(decay=0.7, input_scale=0.4, v_th=0.3, reset="hard", v_reset=-0.1, v_init=0.05)
    s = neuron(x)
    for i in range(7):
        u = 0.05
        for t in range(12):
            h = 0.7 * u + 0.4 * x[t, i].item()
            fire = h >= 0.3
            assert s[t, i].item() == float(fire)
            u = -0.1 if fire else h


def test_spikingjelly_lifnode_equivalence():
    """SpikingJelly LIFNode(tau) = LIF(decay=1-1/tau, input_scale=1/tau): same spikes and input gradients."""
    neuron_mod = pytest.importorskip("spikingjelly.activation_based.neuron")
    functional = pytest.importorskip("spikingjelly.activation_based.functional")
    surrogate_mod = pytest.importorskip("spikingjelly.activation_based.surrogate")
    tau = 2.0
    peer = neuron_mod.LIFNode(tau=tau, step_mode="m", surrogate_function=surrogate_mod.Sigmoid(alpha=4.0))
    ours = sf.LIF(decay=1 - 1 / tau, input_scale=1 / tau, surrogate=sg.Sigmoid(4.0))
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(8, 16, 20, generator=gen, dtype=torch.float64) * 2 + 1
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    s_peer = peer(x1)
    functional.reset_net(peer)
    s_ours = ours(x2)
    assert torch.equal(s_peer, s_ours)
    g = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    s_peer.backward(g)
    s_ours.backward(g)
    torch.testing.assert_close(x2.grad, x1.grad)


def test_learnable_decay_threshold_and_width_receive_gradients():
    neuron = sf.LIF(decay=0.3, learn_decay=True, learn_threshold=True, surrogate=sg.Sigmoid(4.0, learnable=True))
    names = {n for n, _ in neuron.named_parameters()}
    assert names == {"decay_logit", "v_th", "surrogate.width"}
    assert neuron.decay.item() == pytest.approx(0.3)
    neuron(torch.rand(5, 3, 4) * 2).sum().backward()
    for p in neuron.parameters():
        assert p.grad is not None and p.grad.abs().item() > 0


def test_parametric_lif_complement_input_scale():
    plif = sf.ParametricLIF(decay=0.5, input_scale="complement")
    assert plif.decay.item() == pytest.approx(0.5) and plif.input_scale.item() == pytest.approx(0.5)
    x = torch.rand(6, 10) * 3
    fixed = sf.LIF(decay=0.5, input_scale=0.5)
    assert torch.equal(plif(x), fixed(x))
    with pytest.raises(TypeError, match="always learns"):
        sf.ParametricLIF(learn_decay=False)


def test_if_rejects_decay():
    with pytest.raises(TypeError, match="IF has no leak"):
        sf.IF(decay=0.5)


@pytest.mark.parametrize("backend", ["reference", "fused", "auto"])
@pytest.mark.parametrize("grad", [False, True])
def test_firing_rate_is_recorded_per_step(backend, grad):
    neuron = sf.LIF(backend=backend)
    assert neuron.firing_rate is None
    x = (torch.rand(4, 8, 5000) * 3).requires_grad_(grad)  # large enough to split across threads
    s = neuron(x)
    assert neuron.firing_rate == pytest.approx(s.mean().item())
    assert neuron.spike_counts.tolist() == s.detach().sum(dim=(1, 2)).tolist()


def test_bad_arguments_give_clear_errors():
    with pytest.raises(ValueError, match="reset must be"):
        sf.LIF(reset="zero")
    with pytest.raises(ValueError, match="backend must be one of"):
        sf.LIF(backend="cupy")
    with pytest.raises(ValueError, match="learnable decay must lie strictly between 0 and 1"):
        sf.LIF(decay=1.0, learn_decay=True)
    with pytest.raises(TypeError, match="surrogate must be"):
        sf.LIF(surrogate=torch.sigmoid)
    with pytest.raises(ValueError, match="unknown surrogate 'box'"):
        sf.LIF(surrogate="box")
    with pytest.raises(TypeError, match="surrogate triangle: .*unexpected keyword"):
        sf.LIF(surrogate={"name": "triangle", "alpha": 2.0})
    with pytest.raises(ValueError, match=r"time-first tensor \[T, B, \.\.\.\].*layer.step"):
        sf.LIF()(torch.ones(3))
    with pytest.raises(ValueError, match="reset_timing must be 'now' or 'next_step'"):
        sf.LIF(reset_timing="later")


def test_repr_names_the_configuration():
    text = repr(sf.IF(v_th=2.0, reset="soft", v_init=1.0))
    assert "reset=soft" in text and "v_th=2" in text and "Triangle(gamma=1)" in text


@pytest.mark.parametrize("backend", BACKENDS)
def test_learnable_decay_stays_in_unit_interval(backend):
    neuron = sf.ParametricLIF(decay=0.2, backend=backend)
    opt = torch.optim.SGD(neuron.parameters(), lr=5.0)
    for _ in range(5):
        opt.zero_grad()
        neuron(torch.rand(4, 32) * 2).sum().backward()
        opt.step()
        assert 0.0 < neuron.decay.item() < 1.0 and math.isfinite(neuron.decay.item())


def test_surrogate_from_recipe_mapping():
    neuron = sf.LIF(surrogate={"name": "dspike", "b": 5.0, "learnable": True})
    assert isinstance(neuron.surrogate, sg.DSpike) and neuron.surrogate.width.item() == 5.0
    assert neuron.surrogate.learnable
    assert isinstance(sf.LIF(surrogate="atan").surrogate, sg.ATan)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("reset", ["hard", "soft"])
def test_next_step_reset_matches_a_slow_python_simulation(backend, reset):
    """reset_timing="next_step": the reset of a spike lands after the next step's leak, undecayed."""
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(12, 7, generator=gen, dtype=torch.float64) * 0.8 + 0.5
    neuron = sf.LIF(decay=0.7, input_scale=0.9, v_th=0.6, reset=reset, v_reset=-0.1, v_init=0.7,
                    reset_timing="next_step", backend=backend)
    with sf.state_scope(neuron) as state:
        s = neuron(x)
    for i in range(7):
        h = 0.7  # v_init above threshold: reset at the first step
        for t in range(12):
            fired = h >= 0.6
            if reset == "soft":
                h = 0.7 * h + 0.9 * x[t, i].item() - 0.6 * fired
            else:
                h = -0.1 + 0.9 * x[t, i].item() if fired else 0.7 * h + 0.9 * x[t, i].item()
            assert s[t, i].item() == float(h >= 0.6)
        assert state[neuron][i].item() == pytest.approx(h)  # the carried state is h itself


def test_next_step_soft_reset_by_hand():
    """decay 0.5, v_th 1, x = (1.5, 1.0): h0 = 1.5 fires; next_step: h1 = 0.5 * 1.5 + 1.0 - 1 = 0.75
    (silent); now: h1 = 0.5 (1.5 - 1) + 1.0 = 1.25 (fires), u1 = 0.25. Loss s0 + s1, Triangle(1),
    reset detached: dL/dx1 = sg(h1 - 1) = 0.75, dL/dx0 = sg(h0 - 1) + 0.5 * 0.75 = 0.875."""
    x = torch.tensor([[1.5], [1.0]], dtype=torch.float64, requires_grad=True)
    lif = sf.LIF(decay=0.5, reset="soft", reset_timing="next_step", detach_reset=True)
    with sf.state_scope(lif) as state:
        s = lif(x)
    s.sum().backward()
    assert s[:, 0].tolist() == [1.0, 0.0] and state[lif].item() == pytest.approx(0.75)
    torch.testing.assert_close(x.grad[:, 0], torch.tensor([0.875, 0.75], dtype=torch.float64))
    now = sf.LIF(decay=0.5, reset="soft")
    with sf.state_scope(now) as state:
        assert now(x.detach())[:, 0].tolist() == [1.0, 1.0]
    assert state[now].item() == pytest.approx(0.25)


STEP_OPTIONS = [
    dict(reset="hard"),
    dict(reset="hard", v_reset=-0.2, strict=True),
    dict(reset="soft"),
    dict(reset="soft", detach_reset=True),
    dict(reset="soft", reset_timing="next_step"),
    dict(reset="hard", v_reset=0.1, reset_timing="next_step", strict=True),
]


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("options", STEP_OPTIONS)
def test_single_steps_equal_the_multistep_run_in_values_and_gradients(backend, options):
    """``neuron.step`` in a loop = one multi-step call: spikes, final state and every gradient."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(7, 3, 5, generator=gen, dtype=torch.float64) + 0.6
    grad_s = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    grad_u = torch.randn(x.shape[1:], generator=gen, dtype=torch.float64)

    def run(stepwise):
        neuron = sf.LIF(decay=0.7, v_th=0.9, v_init=0.2, learn_decay=True, learn_threshold=True,
                        surrogate=sg.Sigmoid(3.0, learnable=True), backend=backend, **options).double()
        xx = x.clone().requires_grad_()
        if stepwise:
            state, spikes = neuron.initial_state(xx[0]), []
            for x_t in xx:
                s, state = neuron.step(x_t, state)
                spikes.append(s)
            spikes = torch.stack(spikes)
        else:
            with sf.state_scope(neuron, carry=False, detach=False) as scope:
                spikes = neuron(xx)
            state = scope[neuron]
        ((spikes * grad_s).sum() + (state * grad_u).sum()).backward()
        return spikes.detach(), state.detach(), [xx.grad] + [p.grad for p in neuron.parameters()]

    s_whole, u_whole, g_whole = run(False)
    s_step, u_step, g_step = run(True)
    assert torch.equal(s_step, s_whole) and 0 < s_whole.mean() < 1
    torch.testing.assert_close(u_step, u_whole)
    for a, b in zip(g_step, g_whole):
        torch.testing.assert_close(a, b)


def test_step_checks_its_state_and_half_precision_state_is_float32():
    lif = sf.LIF()
    x0 = torch.rand(4, 3, dtype=torch.bfloat16)
    state = lif.initial_state(x0)
    assert state.dtype == torch.float32 and state.shape == (4, 3) and torch.all(state == 0)
    s, state = lif.step(x0 * 3, state)
    assert s.dtype == torch.bfloat16 and state.dtype == torch.float32
    with pytest.raises(ValueError, match=r"state of shape \(4, 3\) does not match the input step \(2, 3\)"):
        lif.step(torch.rand(2, 3), state)


def test_backbone_called_without_its_network_is_refused():
    """After running folded inside a SpikingNetwork, a neuron given a tensor of that folded rank
    directly (the backbone called on [B, C, H, W]) would read B as T: refused with a hint."""
    backbone = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), sf.LIF())
    net = sf.SpikingNetwork(backbone, timesteps=2)
    images = torch.rand(4, 2, 5, 5)
    assert net(images).shape == (2, 4, 3, 5, 5)
    with pytest.raises(ValueError, match=r"shape \(4, 3, 5, 5\) without a time dimension.*call the SpikingNetwork"):
        backbone(images)
    assert backbone[1](torch.rand(2, 4, 3, 5, 5)).shape == (2, 4, 3, 5, 5)  # [T, B, C, H, W] directly is fine


def _two_layer_weights(seed):
    torch.manual_seed(seed)
    fc1, fc2 = nn.Linear(20, 64), nn.Linear(64, 64)
    with torch.no_grad():
        fc2.weight.mul_(3)  # both layers fire at 20-30%
    return fc1, fc2


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_snntorch_leaky_network_reproduced_spike_for_spike(backend):
    """snnTorch ``Leaky(beta)`` (reset by subtraction one step late, strict threshold, detached
    reset, ATan(2)) = ``LIF(decay=beta, reset="soft", reset_timing="next_step", strict=True,
    detach_reset=True, surrogate=ATan(2.0))``: 8,192 spikes of a two-layer network equal and the
    gradients within float32 rounding."""
    snn = pytest.importorskip("snntorch")
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(16, 4, 20, generator=gen) * 6
    upstream = torch.randn(16, 4, 64, generator=gen)

    def peer():
        fc1, fc2 = _two_layer_weights(0)
        lif1, lif2 = snn.Leaky(beta=0.8), snn.Leaky(beta=0.8)
        xx = x.clone().requires_grad_()
        s1, s2 = [], []
        for x_t in xx:
            s1.append(lif1(fc1(x_t))[0])
            s2.append(lif2(fc2(s1[-1]))[0])
        return xx, fc1, fc2, torch.stack(s1), torch.stack(s2)

    def ours(timing):
        fc1, fc2 = _two_layer_weights(0)
        options = dict(decay=0.8, reset="soft", reset_timing=timing, strict=True, detach_reset=True,
                       surrogate=sg.ATan(2.0), backend=backend)
        xx = x.clone().requires_grad_()
        s1 = sf.LIF(**options)(fc1(xx))
        return xx, fc1, fc2, s1, sf.LIF(**options)(fc2(s1))

    runs = [peer(), ours("next_step")]
    for *_, s2 in runs:
        (s2 * upstream).sum().backward()
    (_, *_, p1, p2), (_, *_, o1, o2) = runs
    assert p1.numel() + p2.numel() == 8192 and 0.1 < torch.cat([p1, p2]).mean() < 0.9
    assert torch.equal(o1, p1) and torch.equal(o2, p2)
    for a, b in zip(runs[1][:3], runs[0][:3]):
        grad_a = a.grad if isinstance(a, torch.Tensor) else a.weight.grad
        grad_b = b.grad if isinstance(b, torch.Tensor) else b.weight.grad
        torch.testing.assert_close(grad_a, grad_b, rtol=1e-4, atol=1e-5 * grad_b.abs().max().item())
    _, _, _, n1, n2 = ours("now")
    assert not torch.equal(torch.cat([n1, n2]), torch.cat([p1, p2]))  # the timing is what differs


@pytest.mark.parametrize("backend", ALL_BACKENDS + ["auto"])
@pytest.mark.parametrize("timing", ["now", "next_step"])
def test_empty_batch_gives_empty_spikes_and_an_empty_time_axis_is_refused(backend, timing):
    neuron = sf.LIF(backend=backend, reset_timing=timing, learn_threshold=True)
    x = torch.zeros(4, 0, 3, requires_grad=True)
    with sf.state_scope(neuron) as state:
        spikes = neuron(x)
    assert spikes.shape == (4, 0, 3) and state[neuron].shape == (0, 3)
    spikes.sum().backward()
    assert x.grad.shape == (4, 0, 3) and neuron.v_th.grad == 0
    assert neuron.firing_rate is None and neuron.spike_counts.tolist() == [0, 0, 0, 0]
    with pytest.raises(ValueError, match=r"needs at least one time step \(x.shape\[0\] >= 1\)"):
        neuron(torch.zeros(0, 2, 3))


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8, torch.bool])
def test_integer_and_bool_inputs_run_in_float32_in_every_backend(dtype):
    """Integer and bool inputs give the float32 run on the same values, float32 spikes, everywhere."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 2 if dtype == torch.bool else 4, (6, 3, 5), generator=gen).to(dtype)
    expected = sf.LIF(decay=0.5, backend="reference")(x.float())
    assert 0 < expected.mean() < 1
    for backend in ALL_BACKENDS + ["auto"]:
        neuron = sf.LIF(decay=0.5, backend=backend)
        spikes = neuron(x)
        assert spikes.dtype == torch.float32, f"{backend}: spikes in {spikes.dtype}"
        assert torch.equal(spikes, expected), f"{backend}: spikes differ from the float32 run"
        state = neuron.initial_state(x[0])
        assert state.dtype == torch.float32 and torch.equal(neuron.step(x[0], state)[0], expected[0])


def test_complex_input_is_refused_in_one_line():
    with pytest.raises(TypeError, match="spiking neurons need real inputs, got torch.complex64"):
        sf.LIF()(torch.ones(2, 3, dtype=torch.complex64))
