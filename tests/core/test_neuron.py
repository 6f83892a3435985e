"""Neuron modules: analytic dynamics, peer equivalence, options, bad input."""

import math

import pytest
import torch

import spikeforge as sf
from spikeforge import surrogate as sg

BACKENDS = ["reference", "fused"]


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
    with pytest.raises(ValueError, match=r"time-first tensor \[T, \.\.\.\]"):
        sf.LIF()(torch.ones(3))


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
