"""Exported graphs read by other simulators give spikeforge's spikes (skipped when a peer is absent).

Where the readers agree with NIR's semantics (see the README, "Export to NIR"):

- snnTorch 1.0 (``import_from_nir``) reads nir.LIF with forward Euler at dt = 1e-4 and folds ``r``
  into its threshold: LIF networks with hard reset to 0 and v_init = 0 agree. It reads nir.IF as a
  leaky neuron (beta 0.9), so IF networks do not.
- Norse 1.1 (``from_nir``) uses forward Euler at the dt it is given but ignores ``r`` and ``v_reset``
  and has no AvgPool2d: LIF networks with ``input_scale = 1 - decay`` (r = 1), IF networks with
  ``input_scale = 1`` (it adds the input each step), reset to 0 and no pooling agree.
"""

import logging
import warnings

import pytest
import torch
from torch import nn

import spikeforge as sf
from spikeforge import models

nir = pytest.importorskip("nir")
from nir_helpers import randomise_bn, run_peer  # noqa: E402

from spikeforge.export import to_nir  # noqa: E402


def spiking_net(pool: bool, **lif) -> sf.SpikingNetwork:
    """conv -> BN -> LIF (-> 2x2 average pool) -> flatten -> linear -> LIF on ``[B, 1, 16, 16]``; spikes out."""
    torch.manual_seed(0)
    layers = [nn.Conv2d(1, 4, 3, stride=1 if pool else 2, padding=1), nn.BatchNorm2d(4), sf.LIF(**lif)]
    layers += [nn.AvgPool2d(2)] if pool else []
    layers += [nn.Flatten(), nn.Linear(4 * 8 * 8, 6), sf.LIF(**lif)]
    backbone = randomise_bn(nn.Sequential(*layers))
    with torch.no_grad():
        backbone[0].weight.mul_(3)
        backbone[-2].weight.normal_(0, 0.3)
        backbone[-2].bias.fill_(0.4)
    return sf.SpikingNetwork(backbone, timesteps=8).eval()


def frames(steps=8, batch=3):
    return torch.rand(steps, batch, 1, 16, 16, generator=torch.Generator().manual_seed(1)) * 2


@pytest.fixture(scope="module")
def snntorch_reader():
    pytest.importorskip("snntorch")
    pytest.importorskip("nirtorch")
    from snntorch.import_nir import import_from_nir

    return import_from_nir


@pytest.fixture(scope="module")
def norse_reader():
    pytest.importorskip("nirtorch")
    norse = pytest.importorskip("norse.torch")
    logging.getLogger().setLevel(logging.ERROR)

    def load(graph):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return norse.from_nir(graph, dt=1e-4, ignore_warnings=True)

    return load


@pytest.mark.parametrize("lif", [{"decay": 0.5, "strict": True}, {"decay": 0.2, "input_scale": 0.5, "v_th": 0.8,
                                                                   "strict": True}])
def test_snntorch_reproduces_lif_spikes(snntorch_reader, lif):
    net, x = spiking_net(pool=True, **lif), frames()
    with torch.no_grad():
        ours = net(x)
    theirs = run_peer(snntorch_reader, to_nir(net, x[0]), x)
    assert 0 < ours.mean() < 1 and torch.equal(theirs, ours)


def test_snntorch_reproduces_a_zoo_model(snntorch_reader):
    torch.manual_seed(3)
    net = randomise_bn(models.create("digits_cnn", 10, neuron="lif", timesteps=6, width=4))
    x = frames(6, 2)
    with torch.no_grad():
        ours = net(x)
    theirs = run_peer(snntorch_reader, to_nir(net, x[0]), x)
    # Logits, not spikes: the readout of one sample at a time rounds differently (~1e-7); one spike
    # more or less would move a logit by a whole weight (~0.1).
    assert (theirs - ours).abs().max() < 1e-6


@pytest.mark.parametrize("neuron", [{"decay": 0.5, "input_scale": "complement", "v_th": 0.6},  # LIF, r = 1
                                    {"decay": 1.0, "v_th": 1.0, "strict": True}])  # IF: Norse adds the input per step
def test_norse_reproduces_lif_and_if_spikes(norse_reader, neuron):
    net, x = spiking_net(pool=False, **neuron), frames()
    with torch.no_grad():
        ours = net(x)
    theirs = run_peer(norse_reader, to_nir(net, x[0]), x)
    assert 0 < ours.mean() < 1 and torch.equal(theirs, ours)
