"""Every registered model builds for every activation and maps inputs to the right shape.

Spiking models also have exactly the ANN's parameters (plus one learnable
decay per neuron for PLIF).
"""

import pytest
import torch
from zoo_inputs import INPUTS, SPIKING_ONLY

import spikeforge as sf
from spikeforge import models

T, B, K = 2, 2, 7


def test_every_registered_model_has_a_tiny_input():
    assert set(models.list_models()) == set(INPUTS) | SPIKING_ONLY


@pytest.mark.parametrize("neuron", ["lif", "if", "plif", "relu"])
@pytest.mark.parametrize("name", sorted(INPUTS))
def test_output_shape_and_parameters(name, neuron, build_on_meta):
    channels, side, options = INPUTS[name]
    torch.manual_seed(0)
    net = models.create(name, num_classes=K, neuron=neuron, timesteps=T, **options)
    x = torch.rand(B, channels, side, side)
    with torch.no_grad():
        out = net(x)
    spiking = neuron != "relu"
    assert out.shape == ((T, B, K) if spiking else (B, K))
    assert torch.isfinite(out).all()

    reference = build_on_meta(name, num_classes=K, neuron="relu", **options)
    expected = {k: v.shape for k, v in reference.named_parameters()}
    got = {k.removeprefix("backbone."): v.shape for k, v in net.named_parameters()}
    if neuron == "plif":
        decays = {k for k in got if k.endswith("decay_logit")}
        assert len(decays) == len(sf.neurons(net)) > 0
        got = {k: v for k, v in got.items() if k not in decays}
    assert got == expected


def test_vggsnn_on_a_dvs_sequence():
    """TET's VGGSNN: a [T=10, B=2, 2, 48, 48] event-frame sequence gives [10, 2, 10] logits."""
    net = models.create("vggsnn", num_classes=10, neuron="lif")
    with torch.no_grad():
        out = net(torch.rand(10, 2, 2, 48, 48).round())
    assert out.shape == (10, 2, 10)
    assert net.backbone.head[1].in_features == 512 * 3 * 3


def test_timesteps_of_a_spiking_model_can_change():
    net = models.create("resnet20", neuron="lif", timesteps=3)
    with torch.no_grad():
        assert net(torch.rand(2, 3, 8, 8)).shape == (3, 2, 10)
        net.timesteps = 1
        assert net(torch.rand(2, 3, 8, 8)).shape == (1, 2, 10)
