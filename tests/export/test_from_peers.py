"""from_nir on graphs written by other tools, run against the tool's own network stepped by hand
(skipped per tool when it is not installed): snnTorch's and SpikingJelly's ``export_to_nir``, Norse's ``to_nir``.

snnTorch and Norse write through nirtorch, which keeps the sample's batch of 1 in the Input and Output
types; SpikingJelly does not.
"""

import contextlib
import io
import warnings

import pytest
import torch
from torch import nn

nir = pytest.importorskip("nir")
from spikeforge.export import from_nir  # noqa: E402

T, B = 8, 3


def frames(*shape, scale=2.0):
    return torch.rand(T, B, *shape, generator=torch.Generator().manual_seed(1)) * scale


def record_layers(module: nn.Module, kinds: tuple) -> list[torch.Tensor]:
    """Outputs of every layer of ``kinds`` in ``module``, appended in call order."""
    outputs = []
    for m in module.modules():
        if isinstance(m, kinds):
            m.register_forward_hook(lambda _m, _i, out: outputs.append(out.detach().clone()))
    return outputs


# --- snnTorch ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def snntorch():
    pytest.importorskip("nirtorch")
    return pytest.importorskip("snntorch")


def snntorch_net(snn, reset: str, per_neuron: bool) -> nn.Sequential:
    """conv -> Leaky -> flatten -> linear -> Leaky on ``[B, 2, 8, 8]``; per-neuron (uniform) beta and threshold
    with ``per_neuron`` (what export_to_nir's type check needs with ``ignore_dims``)."""
    torch.manual_seed(0)

    def leaky(shape, **kwargs):
        beta, threshold = (torch.full(shape, 0.5), torch.full(shape, 1.0)) if per_neuron else (0.5, 1.0)
        return snn.Leaky(beta=beta, threshold=threshold, reset_mechanism=reset, init_hidden=True, **kwargs)

    net = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), leaky((4, 8, 8)), nn.Flatten(), nn.Linear(256, 5),
                        leaky((5,), output=True))
    with torch.no_grad():
        net[0].weight.mul_(3)
        net[3].weight.normal_(0, 0.3)
        net[3].bias.fill_(0.4)
    return net


def snntorch_export(net, batched: bool, monkeypatch) -> "nir.NIRGraph":
    """``export_to_nir`` on a batch of one. With ``batched``, the sample's batch stays in the graph's types;
    export_to_nir's closing ``graph.infer_types()`` (nir 1.0.8) cannot run on such a graph and raises, so it is
    skipped: the graph is the one export_to_nir builds before that check."""
    from snntorch.export_nir import export_to_nir

    if batched:
        monkeypatch.setattr(nir.NIRGraph, "infer_types", lambda self: None)
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():  # "[WARNING] module not implemented"
        warnings.simplefilter("ignore", DeprecationWarning)
        return export_to_nir(net, torch.rand(1, 2, 8, 8), ignore_dims=None if batched else [0])


def run_snntorch(net, x) -> torch.Tensor:
    from snntorch import utils

    utils.reset(net)
    with torch.no_grad():
        return torch.stack([net(x_t)[0] for x_t in x])


@pytest.mark.parametrize("batched", [True, False], ids=["batched-types", "ignore_dims"])
@pytest.mark.parametrize("reset", ["zero", "subtract"])
def test_snntorch_export_runs_like_snntorch(snntorch, monkeypatch, batched, reset):
    net = snntorch_net(snntorch, reset, per_neuron=not batched)
    graph = snntorch_export(net, batched, monkeypatch)
    assert (list(graph.nodes["input"].input_type["input"]) == [1, 2, 8, 8]) == batched
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours = from_nir(graph)
    assert [str(w.message).count("batch of 1") for w in caught] == ([1] if batched else [])

    x = frames(2, 8, 8)
    synaptic = (nn.Conv2d, nn.Linear)
    synaptic_ours, synaptic_theirs = record_layers(ours, synaptic), record_layers(net, synaptic)
    with torch.no_grad():
        spikes = ours(x)
    theirs = run_snntorch(net, x)
    assert spikes.shape == theirs.shape == (T, B, 5) and 0 < float(spikes.mean()) < 1
    conv_ours, conv_theirs = synaptic_ours[0], torch.cat(synaptic_theirs[0::2])  # snnTorch: conv, linear per step
    torch.testing.assert_close(conv_ours, conv_theirs, rtol=1e-5, atol=1e-6)
    if reset == "zero":  # NIR's reset to v_reset = 0: the same dynamics at every step
        torch.testing.assert_close(synaptic_ours[1], torch.cat(synaptic_theirs[1::2]), rtol=1e-5, atol=1e-6)
        assert torch.equal(spikes, theirs)
    else:  # snnTorch subtracts the threshold (and one step late); the graph says reset to 0: equal until a reset
        assert torch.equal(spikes[0], theirs[0]) and not torch.equal(spikes, theirs)


# --- SpikingJelly ------------------------------------------------------------------------------------------

def test_spikingjelly_export_runs_like_spikingjelly():
    pytest.importorskip("spikingjelly")
    from spikingjelly.activation_based import functional, layer, neuron
    from spikingjelly.activation_based.nir_exchange.to_nir import export_to_nir

    torch.manual_seed(0)
    net = nn.Sequential(layer.Conv2d(2, 4, 3, padding=1), neuron.LIFNode(tau=2.0), layer.Flatten(),
                        layer.Linear(256, 5), neuron.LIFNode(tau=2.0))
    functional.set_step_mode(net, "m")
    with torch.no_grad():
        net[0].weight.mul_(3)
        net[3].bias.fill_(0.8)
        graph = export_to_nir(net, torch.rand(1, 1, 2, 8, 8))
        functional.reset_net(net)
        x = frames(2, 8, 8, scale=3.0)
        theirs = net(x)
        spikes = from_nir(graph)(x)
    assert 0 < float(spikes.mean()) < 1 and torch.equal(spikes, theirs)


# --- Norse -------------------------------------------------------------------------------------------------

def test_norse_export_runs_like_norse():
    pytest.importorskip("nirtorch")
    norse = pytest.importorskip("norse.torch")
    from norse.torch.utils.export_nir import to_nir

    torch.manual_seed(0)
    net = norse.SequentialState(nn.Linear(16, 8), norse.LIFBoxCell(), nn.Linear(8, 5), norse.LIFBoxCell())
    with torch.no_grad():
        net[0].bias.fill_(1.5)
        net[2].weight.mul_(4)
        net[2].bias.fill_(2.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        graph = to_nir(net, torch.rand(1, 16))
    # Norse 1.1 writes tau = dt / tau_mem_inv (1e-5 s at its dt = 1e-3) instead of 1 / tau_mem_inv:
    # at spikeforge's dt = dt_norse ** 2 the graph gives Norse's decay 1 - dt tau_mem_inv = 0.9 again.
    with pytest.warns(UserWarning, match=r"Input input \[1, 16\] .* batch of 1"):
        ours = from_nir(graph, dt=1e-3 ** 2)
    x = frames(16, scale=3.0)
    with torch.no_grad():
        spikes = ours(x)
        state, theirs = None, []
        for x_t in x:
            z, state = net(x_t, state)
            theirs.append(z)
    assert 0 < float(spikes.mean()) < 1 and torch.equal(spikes, torch.stack(theirs))
