"""LSG neuron: tied width, gradients, and agreement of the kernels."""

import math

import pytest
import torch

import spikeforge as sf
from spikeforge import models
from spikeforge import surrogate as sg


def test_initial_width_and_decay_match_the_paper():
    neuron = sf.LSGLIF()
    assert neuron.decay.item() == pytest.approx(0.2)
    assert neuron.decay_logit.item() == pytest.approx(math.log(0.2 / 0.8))
    assert neuron.surrogate_width().item() == pytest.approx(1.0198, abs=1e-4)  # 2 * 0.5 * sqrt(1.04)


@pytest.mark.parametrize("backend", ["reference", "fused", "auto"])
def test_b_learns_and_width_has_no_gradient(backend):
    neuron = sf.LSGLIF(backend=backend)
    x = torch.rand(4, 16, 32) * 1.5
    neuron(x).sum().backward()
    assert neuron.decay_logit.grad is not None and neuron.decay_logit.grad.abs().item() > 0
    assert not neuron.surrogate_width().requires_grad
    assert neuron.surrogate.width.grad is None


def test_backends_agree_on_spikes_and_gradients():
    x = torch.rand(6, 8, 50, dtype=torch.float64) * 1.5
    results = []
    for backend in ("reference", "fused", "auto"):
        torch.manual_seed(0)
        neuron = sf.LSGLIF(backend=backend).double()
        xx = x.clone().requires_grad_()
        s = neuron(xx)
        (s * torch.linspace(-1, 1, s.numel(), dtype=torch.float64).view_as(s)).sum().backward()
        results.append((s.detach(), xx.grad, neuron.decay_logit.grad))
    for other in results[1:]:
        assert torch.equal(results[0][0], other[0])
        torch.testing.assert_close(other[1], results[0][1])
        torch.testing.assert_close(other[2], results[0][2])


def test_width_follows_the_learned_decay():
    neuron = sf.LSGLIF()
    with torch.no_grad():
        neuron.decay_logit.fill_(math.log(0.8 / 0.2))
    assert neuron.surrogate_width().item() == pytest.approx(2 * 0.5 * math.sqrt(1 + 0.64))


def test_lsg_is_a_zoo_activation_and_refuses_other_shapes():
    net = models.create("digits_cnn", neuron="lsg", timesteps=2)
    lsg = [m for m in net.modules() if isinstance(m, sf.LSGLIF)]
    assert len(lsg) == 2 and all(m.v_th == 0.5 for m in lsg)
    with pytest.raises(TypeError, match="ties the width of a Rectangle"):
        sf.LSGLIF(surrogate=sg.Triangle(1.0))


def test_window_fraction_counts_membranes_inside_the_rectangle():
    # One step from rest: h = x. Rectangle(width 1) around v_th = 0.5: window (0, 1).
    neuron = sf.LIF(decay=0.2, v_th=0.5, surrogate=sg.Rectangle(1.0))
    neuron.record_window = True
    x = torch.tensor([[-0.5, 0.1, 0.4, 0.9, 1.2, 2.0, 0.99, 0.0]])
    neuron(x)
    assert neuron.window_fraction == pytest.approx(4 / 8)  # 0.1, 0.4, 0.9, 0.99 (|h - 0.5| < 0.5)
    lsg = sf.LSGLIF()  # width 1.0198: 0.0 and 1.0 boundaries just inside
    lsg.record_window = True
    lsg(torch.tensor([[0.0, 1.0, -0.02, 1.02]]))
    assert lsg.window_fraction == pytest.approx(2 / 4)
