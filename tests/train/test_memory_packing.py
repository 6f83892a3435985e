"""Training with spikes saved as bits (``memory.pack_spikes``, :mod:`spikeforge.core.packing`) is
bit-identical to training without: the gradients and the weights after several optimiser steps of every
zoo model (but the stereo network) and the search supernet, and the trainer's weights over TIT stages and
in mixed precision. Each packed run is checked to have packed something."""

from contextlib import nullcontext

import pytest
import torch
import torch.nn.functional as F
from test_trainer import Blobs, config, quiet
from zoo_inputs import INPUTS

from spikeforge import models
from spikeforge.core import packing
from spikeforge.core.packing import pack_spikes
from spikeforge.core.time import SpikingNetwork
from spikeforge.runtime.config import ConfigError, MemoryConfig, StageConfig
from spikeforge.search.supernet import SearchNetwork
from spikeforge.train import Trainer
from spikeforge.train.config import build_config

T, B, K, STEPS = 2, 2, 5, 3


def build(name: str):
    """``(spiking network, input channels, input side)`` of a zoo model or the search supernet."""
    if name == "supernet":
        return SpikingNetwork(SearchNetwork(K, layers=3, levels=3, base_channels=2), timesteps=T), 3, 16
    if name == "spikedhs":
        return models.create("spikedhs", K, timesteps=T, base_channels=2), 3, 32
    channels, side, options = INPUTS[name]
    return models.create(name, num_classes=K, neuron="lif", timesteps=T, **options), channels, side


@pytest.fixture
def encodes(monkeypatch):
    """The number of spike tensors packed so far."""
    calls = []
    encode = packing._encode
    monkeypatch.setattr(packing, "_encode", lambda root: calls.append(root.numel()) or encode(root))
    return calls


def train(name: str, pack: bool):
    """The gradients of every step and the final state of ``STEPS`` SGD steps on random batches."""
    torch.manual_seed(0)
    net, channels, side = build(name)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    gen = torch.Generator().manual_seed(1)
    grads = []
    for _ in range(STEPS):
        x = torch.rand(B, channels, side, side, generator=gen) * 2
        y = torch.randint(0, K, (B,), generator=gen)
        with pack_spikes() if pack else nullcontext():
            out = net(x)
            loss = F.cross_entropy((out[0] if isinstance(out, tuple) else out).mean(0), y)  # (logits, aux)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grads.append([p.grad.clone() for p in net.parameters() if p.grad is not None])
        opt.step()
    return grads, net.state_dict()


@pytest.mark.parametrize("name", sorted(INPUTS) + ["spikedhs", "supernet"])
def test_zoo_gradients_and_weights_are_bit_identical_with_packing(name, encodes):
    grads, state = train(name, pack=False)
    assert not encodes
    packed_grads, packed_state = train(name, pack=True)
    assert encodes, "nothing was packed"
    for step, (got, want) in enumerate(zip(packed_grads, grads, strict=True)):
        assert len(got) == len(want) and all(torch.equal(a, b) for a, b in zip(got, want)), f"step {step + 1}"
    assert packed_state.keys() == state.keys()
    assert all(torch.equal(packed_state[k], state[k]) for k in state), "weights or buffers differ"


@pytest.mark.parametrize("amp", [False, True])
def test_trainer_packs_when_asked_with_the_same_weights_over_tit_stages(tmp_path, encodes, amp):
    if amp and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        pytest.skip("this CPU has no native bfloat16")
    weights = {}
    for pack in (False, True):
        memory = MemoryConfig(pack_spikes=pack)
        trainer = Trainer(config(stages=[StageConfig(1, 2), StageConfig(1, 3)], amp=amp, memory=memory),
                          tmp_path / str(pack), datasets=(Blobs(), Blobs(seed=1)), log=quiet)
        trainer.fit()
        weights[pack] = trainer.model.state_dict()
        assert bool(encodes) == pack
    assert all(torch.equal(weights[True][k], weights[False][k]) for k in weights[False])


def test_recipe_switch():
    assert build_config().memory.pack_spikes is True
    assert build_config(overrides=["memory.pack_spikes=false"]).memory.pack_spikes is False
    with pytest.raises(ConfigError, match="memory.pack_spikes: expected bool"):
        build_config(overrides=["memory.pack_spikes=1"])
