"""DGS: b follows the better temperature, the main model is untouched, combine mode is the LIF,
layer selection, the trainer hook and its recipe keys."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import spikeforge as sf
from spikeforge import models
from spikeforge.core.kernels.cpu import compiler_available
from spikeforge.core.time import SpikingNetwork
from spikeforge.runtime.config import ConfigError
from spikeforge.search.dgs import DGS, CandidateMixer, DGSCallback, find_searchable_layers
from spikeforge.surrogate import DSpike
from spikeforge.train import Trainer, build_config
from spikeforge.train.losses import sdt_loss

DELTAS = (-0.4, -0.2, 0.0, 0.2, 0.4)


class LinearLayer(nn.Sequential):
    """A searchable layer on vectors: Linear -> (BN1d | Identity) -> SpikeDHS LIF with Dspike(b)."""

    def __init__(self, d_in, d_out, b, bn=False):
        super().__init__()
        self.conv = nn.Linear(d_in, d_out)
        self.bn = nn.BatchNorm1d(d_out) if bn else nn.Identity()
        self.act = sf.LIF(decay=0.2, v_th=0.5, strict=True, surrogate=DSpike(b))


def toy_model(b, centre, spread, seed=0):
    """One searchable layer (8 -> 32) whose input currents sit near ``centre`` (spread ``spread``),
    then a linear readout; ``[B, 8] -> [T=4, B, 4]``."""
    torch.manual_seed(seed)
    layer = LinearLayer(8, 32, b)
    with torch.no_grad():
        layer.conv.weight.normal_(0.0, spread / 8**0.5)
        layer.conv.bias.fill_(centre)
    return SpikingNetwork(nn.Sequential(layer, nn.Linear(32, 4)), timesteps=4, static_ndim=2)


def toy_batches(n=256, batch=64):
    """Four classes given by a random linear teacher on Gaussian inputs."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n, 8, generator=gen)
    y = (x @ torch.randn(8, 4, generator=gen)).argmax(1)
    return [(x[i:i + batch], y[i:i + batch]) for i in range(0, n, batch)]


def loss_drop_after_one_step(b, centre, spread, batches, lr):
    """Reference: mean decrease of the loss after one SGD step of the layer trained with temperature ``b``."""
    drop = 0.0
    for x, y in batches:
        model = toy_model(b, centre, spread)
        optimizer = torch.optim.SGD(model.backbone[0].conv.parameters(), lr=lr)
        before = sdt_loss(model(x), y)
        before.backward()
        optimizer.step()
        with torch.no_grad():
            drop += (before - sdt_loss(model(x), y)).item() / len(batches)
    return drop


# Currents at the threshold favour a peaky surrogate (larger b); currents near the
# edge of Dspike's support (|u - 0.5| close to 0.5) favour a flat one (smaller b).
PROBLEMS = {"peaky wins": (0.5, 0.1, +1), "flat wins": (0.12, 0.05, -1)}


@pytest.mark.parametrize("problem", PROBLEMS)
def test_b_moves_towards_the_temperature_that_trains_better(problem):
    centre, spread, direction = PROBLEMS[problem]
    batches, lr = toy_batches(), 0.5
    drops = {d: loss_drop_after_one_step(3.0 + d, centre, spread, batches, lr) for d in (-0.4, 0.4)}
    assert direction * (drops[0.4] - drops[-0.4]) > 0.05 * abs(drops[0.4])  # the problem is as designed

    model = toy_model(3.0, centre, spread)
    dgs = DGS(model, layers="stem", minibatches=len(batches), momentum=0.0)
    trajectory = [3.0]
    for _ in range(2):
        weights = dgs.run_round(iter(batches), sdt_loss, lr)
        trajectory.append(dgs.temperatures()["backbone.0"])
    assert all(direction * (b1 - b0) > 0.1 for b0, b1 in zip(trajectory, trajectory[1:])), trajectory
    assert sum(weights["backbone.0"]) == pytest.approx(1.0)


def test_official_interleaved_order_moves_b_by_the_first_delta_whatever_the_data():
    centre, spread, _ = PROBLEMS["peaky wins"]
    model = toy_model(3.0, centre, spread)
    dgs = DGS(model, minibatches=4, momentum=0.0, step_order="interleaved")
    weights = dgs.run_round(iter(toy_batches()), sdt_loss, 0.5)["backbone.0"]
    assert weights == sorted(weights, reverse=True)  # ranked by position, not by merit
    assert dgs.temperatures()["backbone.0"] == pytest.approx(2.6)


@pytest.mark.parametrize("start, problem, bound", [(1.2, "flat wins", 1.0), (5.8, "peaky wins", 6.0)])
def test_b_stays_within_its_bounds(start, problem, bound):
    centre, spread, _ = PROBLEMS[problem]
    model = toy_model(start, centre, spread)
    dgs = DGS(model, minibatches=2, momentum=0.0, b_min=1.0, b_max=6.0)
    for _ in range(2):
        dgs.run_round(iter(toy_batches()), sdt_loss, 0.5)
        assert dgs.temperatures()["backbone.0"] == pytest.approx(bound)


def dspike_cnn():
    return models.create("cifar_cnn", neuron="lif", neuron_kwargs={"surrogate": {"name": "dspike", "b": 3.0}},
                         width=4, timesteps=2)


def test_round_changes_nothing_of_the_main_model_but_the_chosen_b():
    torch.manual_seed(0)
    model = dspike_cnn().train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    images, labels = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    sdt_loss(model(images), labels).backward()
    optimizer.step()  # the main optimiser now has momentum buffers
    state = {k: v.clone() for k, v in model.state_dict().items()}
    optim_state = optimizer.state_dict()
    momenta = [optimizer.state[p]["momentum_buffer"].clone() for p in model.parameters()]
    modules = {name: type(m) for name, m in model.named_modules()}

    dgs = DGS(model, layers="all", minibatches=2, weight_decay=5e-4)
    dgs.run_round(iter([(images, labels), (images.flip(0), labels.flip(0))]), sdt_loss, lr=0.1)

    widths = {f"{name}.act.surrogate.width" for name in dgs.layers}
    assert len(widths) == 7
    for key, value in model.state_dict().items():
        if key in widths:
            assert round(value.item() - 3.0, 5) in DELTAS, key
        else:
            assert torch.equal(value, state[key]), key
    assert {name: type(m) for name, m in model.named_modules()} == modules
    assert all(p.requires_grad for p in model.parameters())
    assert optimizer.state_dict()["param_groups"] == optim_state["param_groups"]
    for p, m in zip(model.parameters(), momenta):
        assert torch.equal(optimizer.state[p]["momentum_buffer"], m)
        assert p.grad is not None  # the main gradients were not cleared either


def hand_lif(current, decay=0.2, v_th=0.5):
    """SpikeDHS LIF on ``current[T, ...]``: u = decay u (1 - o) + I, o = u > v_th."""
    u, spikes = torch.zeros_like(current[0]), []
    for i_t in current:
        u = decay * u * (1 - spikes[-1]) + i_t if spikes else i_t
        spikes.append((u > v_th).to(current.dtype))
    return torch.stack(spikes)


def test_combine_mode_feeds_the_mixed_current_to_the_ordinary_lif():
    torch.manual_seed(0)
    steps, batch = 6, 5
    layer = LinearLayer(3, 7, 3.0, bn=True).double().train()
    mixer = CandidateMixer(layer.conv, layer.bn, 3)
    with torch.no_grad():
        for conv, bn in zip(mixer.convs, mixer.bns):
            conv.weight.normal_(0.0, 0.6)
            conv.bias.normal_(0.0, 0.2)
            bn.weight.uniform_(0.1, 0.4)
            bn.bias.uniform_(0.0, 0.3)
        mixer.alpha.copy_(torch.tensor([0.3, -0.2, 0.5]))
    layer.conv, layer.bn = mixer, nn.Identity()
    layer.act.timesteps = steps
    x = torch.rand(steps * batch, 3, dtype=torch.float64)

    mix = torch.softmax(torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64), 0)
    current = sum(
        w * F.batch_norm(F.linear(x, c.weight, c.bias), None, None, n.weight, n.bias, training=True)
        for w, c, n in zip(mix, mixer.convs, mixer.bns)
    ).detach().view(steps, batch, 7)
    expected = hand_lif(current)
    assert torch.equal(layer(x).view(steps, batch, 7), expected)
    no_leak_no_reset = (current.cumsum(0) > 0.5).double()  # the official combine mode (B7)
    assert not torch.equal(expected, no_leak_no_reset)

    mixer.mode = 1
    assert torch.equal(mixer(x), mixer.bns[1](mixer.convs[1](x)))


@pytest.mark.parametrize("backend", ["reference", "fused", "cpu"])
def test_setting_the_width_changes_the_surrogate_gradient(backend):
    if backend == "cpu" and not compiler_available():
        pytest.skip("no C compiler")
    neuron = sf.LIF(decay=0.2, v_th=0.5, strict=True, surrogate=DSpike(3.0), backend=backend)
    u = torch.linspace(0.05, 0.95, 10, dtype=torch.float64).view(1, 10)  # one step: dspike'(u - 0.5)
    grads = {}
    for b in (3.0, 5.0):
        neuron.surrogate.set_width(b)
        x = u.clone().requires_grad_()
        neuron(x).sum().backward()
        grads[b] = x.grad
        t = torch.tanh(b * (u - 0.5))
        torch.testing.assert_close(grads[b], b * (1 - t * t) / (2 * torch.tanh(torch.tensor(b / 2))))
    assert not torch.allclose(grads[3.0], grads[5.0])


def test_layer_selection_and_bad_choices():
    model = dspike_cnn()
    assert list(find_searchable_layers(model, "stem")) == ["backbone.0"]
    assert list(find_searchable_layers(model, "all")) == [f"backbone.{i}" for i in range(7)]
    assert list(find_searchable_layers(model, ["backbone.3", "backbone.1"])) == ["backbone.1", "backbone.3"]
    with pytest.raises(ValueError, match="no searchable layer"):
        find_searchable_layers(models.create("cifar_cnn", neuron="relu", width=4), "all")
    with pytest.raises(ValueError, match="no module named 'backbone.99'"):
        find_searchable_layers(model, ["backbone.99"])
    with pytest.raises(ValueError, match="'backbone.7' is not searchable"):
        find_searchable_layers(model, ["backbone.7"])
    with pytest.raises(ValueError, match="layers must be 'stem', 'all'"):
        find_searchable_layers(model, "first")
    learnable = models.create("cifar_cnn", neuron="lif", width=4,
                              neuron_kwargs={"surrogate": {"name": "dspike", "b": 3.0, "learnable": True}})
    with pytest.raises(ValueError, match="learnable"):
        find_searchable_layers(learnable, ["backbone.0"])
    with pytest.raises(ValueError, match="step_order must be"):
        DGS(model, step_order="random")
    with pytest.raises(ValueError, match=r"b_min \+ min\(deltas\) must be > 0"):
        DGS(model, b_min=0.2)


def test_trainer_runs_rounds_logs_b_per_epoch_and_plots(tmp_path, plots_expected):
    config = build_config("digits", [
        "epochs=2", "timesteps=2", "progress=false", "model.kwargs={width: 4}",
        "model.neuron_kwargs.surrogate={name: dspike, b: 3.0}",
        "dgs.enabled=true", "dgs.period=1", "dgs.minibatches=2", "dgs.layers=all",
    ])
    Trainer(config, tmp_path, log=lambda *a: None).fit()
    first, second = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert first["dgs_b"] == {"backbone.0": 3.0, "backbone.2": 3.0} and "dgs_weights" not in first
    assert set(second["dgs_weights"]) == set(second["dgs_b"]) == {"backbone.0", "backbone.2"}
    for name, b in second["dgs_b"].items():
        assert round(b - 3.0, 5) in DELTAS and sum(second["dgs_weights"][name]) == pytest.approx(1.0)
    assert (tmp_path / "dgs_b.png").exists() == plots_expected


class Bars(torch.utils.data.Dataset):
    """Three classes of 1x8x8 images: a bright column at a class-dependent place, plus noise."""

    num_classes = 3

    def __init__(self, n, seed):
        gen = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, 3, (n,), generator=gen)
        self.images = torch.rand(n, 1, 8, 8, generator=gen) * 0.3
        self.images[torch.arange(n), 0, :, 1 + 3 * self.labels] += 1.0

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i], int(self.labels[i])


def test_resume_through_rounds_is_exact(tmp_path):
    config = build_config(None, [
        "epochs=3", "timesteps=2", "progress=false", "data.batch_size=16", "model.kwargs={width: 4}",
        "model.neuron_kwargs={surrogate: {name: dspike, b: 3.0}}", "dgs.enabled=true", "dgs.period=1",
        "dgs.minibatches=2", "dgs.layers=all", "optim.weight_decay=0.0",
    ])
    data = (Bars(64, 0), Bars(32, 1))
    straight = Trainer(config, tmp_path / "a", datasets=data, log=lambda *a: None)
    straight.fit()
    first = Trainer(config, tmp_path / "b", datasets=data, log=lambda *a: None)
    first.total_epochs = 2  # stopped after a round, as a crash would
    first.fit()
    resumed = Trainer(config, tmp_path / "b", resume=True, datasets=data, log=lambda *a: None)
    dgs_of = lambda trainer: next(c.dgs for c in trainer.callbacks if isinstance(c, DGSCallback))  # noqa: E731
    assert dgs_of(resumed).temperatures() == dgs_of(first).temperatures()
    resumed.fit()
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    history = [json.loads(line)["dgs_b"] for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert history == [json.loads(line)["dgs_b"]
                       for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]


def test_recipe_keys_of_dgs_are_validated():
    config = build_config("digits", ["dgs.layers=[backbone.0]", "dgs.deltas=[-0.2, 0, 0.2]"])
    assert not config.dgs.enabled and config.dgs.layers == ["backbone.0"] and config.dgs.deltas == [-0.2, 0.0, 0.2]
    with pytest.raises(ConfigError, match="unknown key dgs.enable "):
        build_config("digits", ["dgs.enable=true"])
    with pytest.raises(ConfigError, match="dgs.period: expected int"):
        build_config("digits", ["dgs.period=often"])


def tiny_spikedhs():
    from spikeforge.models.spikedhs.genotype import GENOTYPES, Genotype

    published = GENOTYPES["spikedhs_cifar"]
    torch.manual_seed(0)
    return models.create("spikedhs", 10, timesteps=2, base_channels=2, genotype=Genotype(published.cell, (0, 1)))


def test_all_layers_of_a_spikedhs_net_are_its_stem_and_every_cell_node():
    net = tiny_spikedhs()
    names = list(find_searchable_layers(net, "all"))
    assert names == ["backbone.stem"] + [f"backbone.cells.{c}.nodes.{n}" for c in range(2) for n in range(3)]
    assert list(find_searchable_layers(net, "stem")) == ["backbone.stem"]
    node = find_searchable_layers(net, ["backbone.cells.0.nodes.1"])["backbone.cells.0.nodes.1"]
    assert node.temperature() == 3.0 and len(node.weighted) == 2  # edges s1 (snn_b5) and s0 (snn_b3)
    assert node.limits(1.0, 6.0) == (1.0, 4.0)  # keeps the snn_b5 edge at b + 2 <= 6
    with pytest.raises(ValueError, match="'backbone.cells.0' is not searchable"):
        find_searchable_layers(net, ["backbone.cells.0"])


def test_a_round_on_cell_nodes_moves_only_their_temperatures():
    net = tiny_spikedhs().train()
    images, labels = torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))
    state = {k: v.clone() for k, v in net.state_dict().items()}
    dgs = DGS(net, layers="all", minibatches=2)
    weights = dgs.run_round(iter([(images, labels), (images.flip(0), labels.flip(0))]), sdt_loss, lr=0.1)
    assert set(weights) == set(dgs.layers) and all(sum(w) == pytest.approx(1.0) for w in weights.values())
    moved = {f"{name}.shift" for name in dgs.layers if ".nodes." in name} | {"backbone.stem.act.surrogate.width"}
    for key, value in net.state_dict().items():
        if key in moved:
            start = 3.0 if key.endswith("width") else 0.0
            assert round(value.item() - start, 5) in DELTAS, key
        else:
            assert torch.equal(value, state[key]), key
    for name, b in dgs.temperatures().items():
        low, high = dgs.layers[name].limits(1.0, 6.0)
        assert low <= b <= high


def test_a_node_shift_offsets_the_temperature_of_every_edge():
    """A node with shift s gives each current the gradient of the SpikeDHS LIF at its own b + s."""
    from spikeforge.models.spikedhs.operations import SpikingNode, spikedhs_neuron

    torch.manual_seed(2)
    a, b = (torch.randn(5, 4, 7, requires_grad=True) for _ in range(2))
    weights = torch.randn(5, 4, 7)
    node = SpikingNode()
    node.shift.fill_(-0.4)
    (node([(a, 3.0), (b, 5.0)]) * weights).sum().backward()
    for current, temperature in ((a, 2.6), (b, 4.6)):
        total = (a + b).detach().requires_grad_(True)
        (spikedhs_neuron(temperature)(total) * weights).sum().backward()
        torch.testing.assert_close(current.grad, total.grad)


def test_edges_of_one_node_share_the_mixing_weights():
    from spikeforge.search.dgs import UnitMixers

    net = tiny_spikedhs()
    unit = find_searchable_layers(net, ["backbone.cells.1.nodes.2"])["backbone.cells.1.nodes.2"]
    group = UnitMixers(unit, 3)
    assert len(group.mixers) == 2 and all(m.alpha is group.alpha for m in group.mixers)
    assert len(group.candidate_parameters(0)) == 2 * 4  # conv weight + bias, bn weight + bias, per edge


def test_spikedhs_checkpoints_without_node_shifts_still_load():
    net = tiny_spikedhs()
    state = {k: v for k, v in net.state_dict().items() if not k.endswith(".shift")}
    with torch.no_grad():
        next(m for m in net.modules() if hasattr(m, "shift")).shift.fill_(0.4)
    net.load_state_dict(state)  # strict: a missing shift means "never moved"
    assert all(float(m.shift) == 0.0 for m in net.modules() if hasattr(m, "shift"))


def test_candidate_lr_overrides_the_rate_given_to_a_round(monkeypatch, tmp_path):
    seen = []
    real = torch.optim.SGD

    def recording_sgd(params, lr, **kwargs):
        seen.append(lr)
        return real(params, lr=lr, **kwargs)

    model = models.create("digits_cnn", num_classes=3, width=4,
                          neuron_kwargs={"surrogate": {"name": "dspike", "b": 3.0}})
    data = Bars(16, seed=0)
    batches = [(data.images[:8], data.labels[:8])] * 2
    loss_fn = lambda out, y: F.cross_entropy(out.mean(0), y)  # noqa: E731
    monkeypatch.setattr(torch.optim, "SGD", recording_sgd)
    DGS(model, minibatches=2).run_round(batches, loss_fn, lr=0.05)
    DGS(model, minibatches=2, candidate_lr=0.3).run_round(batches, loss_fn, lr=0.05)
    assert seen == [0.05] * len(DELTAS) + [0.3] * len(DELTAS)
    with pytest.raises(ValueError, match="candidate_lr must be > 0"):
        DGS(model, candidate_lr=0.0)
    config = build_config("digits", ["dgs.enabled=true", "dgs.candidate_lr=0.2"])
    assert DGS.from_config(model, config.dgs).candidate_lr == 0.2
