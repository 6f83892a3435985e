"""Model registry, activation factory and their errors."""

import subprocess
import sys

import pytest
import torch
from torch import nn

import spikeforge as sf
from spikeforge import models
from spikeforge.models import activations

EXPECTED = {
    "vggsnn", "vgg11", "vgg16", "resnet18", "resnet19", "resnet20", "resnet34",
    "sew_resnet18", "sew_resnet34", "spiking_resnet34",
}


def test_list_models():
    assert set(models.list_models()) >= EXPECTED
    assert not hasattr(models, "list")  # one name: list_models


def test_unknown_model_lists_available():
    with pytest.raises(ValueError, match=r"unknown model 'resnet99'.*resnet18.*vggsnn"):
        models.create("resnet99")


def test_unknown_neuron_lists_available():
    with pytest.raises(ValueError, match=r"unknown neuron 'lifx'.*'if'.*'lif'.*'plif'.*'relu'"):
        models.create("resnet20", neuron="lifx")
    with pytest.raises(TypeError, match="neuron must be"):
        models.create("resnet20", neuron=3)


def test_unknown_model_option_is_an_error():
    with pytest.raises(TypeError, match="no_such_option"):
        models.create("resnet20", neuron="relu", no_such_option=1)
    with pytest.raises(ValueError, match="stem must be"):
        models.create("resnet18", neuron="relu", stem="tiny")
    with pytest.raises(ValueError, match="head must be"):
        models.create("vgg11", neuron="relu", head="huge")


QCFS_BEFORE_AND_AFTER_CONVERT = """
import spikeforge as sf
from spikeforge import models
print("qcfs" in models.list_activations())
try:
    models.create("resnet20", neuron="qcfs")
except ValueError as err:
    print(err)
import spikeforge.convert
print("qcfs" in models.list_activations(), isinstance(models.create("resnet20", neuron="qcfs"), sf.SpikingNetwork))
"""


def test_qcfs_is_registered_by_importing_the_conversion_module():
    """A fresh interpreter: before ``import spikeforge.convert`` one line tells to import it; after, an ANN."""
    run = subprocess.run([sys.executable, "-c", QCFS_BEFORE_AND_AFTER_CONVERT], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [
        "False",
        "neuron='qcfs' is not registered yet: import spikeforge.convert first (it registers 'qcfs')",
        "True False",
    ]


def test_lif_defaults_follow_tet():
    net = models.create("resnet20", neuron="lif")
    cells = sf.neurons(net)
    assert cells and all(isinstance(n, sf.LIF) for n in cells)
    for n in cells:
        assert n.decay == 0.5 and n.v_th == 1.0 and n.spec.hard_reset and n.spec.strict
        assert not n.spec.detach_reset
        assert isinstance(n.surrogate, sf.surrogate.Triangle) and float(n.surrogate.width) == 1.0
    assert len({id(n.surrogate) for n in cells}) == len(cells)  # no shared surrogate


def test_neuron_kwargs_override_and_modules_are_copied_per_place():
    width = sf.surrogate.Rectangle(1.0, learnable=True)
    net = models.create("resnet20", neuron="if", neuron_kwargs=dict(v_th=0.5, surrogate=width, strict=False))
    cells = sf.neurons(net)
    assert all(isinstance(n, sf.IF) and n.v_th == 0.5 and not n.spec.strict for n in cells)
    surrogates = [n.surrogate for n in cells]
    assert len({id(s) for s in surrogates}) == len(cells) and all(s is not width for s in surrogates)
    assert all(isinstance(s.width, nn.Parameter) for s in surrogates)


def test_plif_has_one_learnable_decay_per_place():
    net = models.create("resnet20", neuron="plif", neuron_kwargs=dict(decay=0.2))
    cells = sf.neurons(net)
    assert all(isinstance(n, sf.ParametricLIF) for n in cells)
    assert all(abs(n.decay.item() - 0.2) < 1e-6 for n in cells)


def test_every_activation_place_has_its_own_module(build_on_meta):
    net = build_on_meta("resnet19", neuron="lif")
    places = [m for _, m in net.named_modules(remove_duplicate=False) if isinstance(m, sf.SpikingNeuron)]
    # stem 1 + 8 blocks x 2 + hidden FC 1
    assert len(places) == 18 and len({id(m) for m in places}) == 18


def test_vgg16_cifar_has_15_activations(build_on_meta):
    ann = build_on_meta("vgg16", neuron="relu")  # spec: 15 QCFS layers (13 conv + 2 FC)
    assert sum(isinstance(m, nn.ReLU) for m in ann.modules()) == 15


def test_callable_neurons():
    snn = models.create("resnet20", neuron=lambda: sf.LIF(decay=0.3), timesteps=3)
    assert isinstance(snn, sf.SpikingNetwork) and snn.timesteps == 3
    assert all(n.decay == 0.3 for n in sf.neurons(snn))
    snn = models.create("resnet20", neuron=sf.LIF, neuron_kwargs=dict(decay=0.25))
    assert all(n.decay == 0.25 for n in sf.neurons(snn))
    ann = models.create("resnet20", neuron=nn.SiLU)
    assert not isinstance(ann, sf.SpikingNetwork)
    assert ann(torch.randn(2, 3, 8, 8)).shape == (2, 10)
    shared = nn.ReLU()
    with pytest.raises(ValueError, match="new module at every call"):
        models.create("resnet20", neuron=lambda: shared)
    with pytest.raises(TypeError, match="not an nn.Module"):
        models.create("resnet20", neuron=lambda: 1.0)


def test_register_a_model_and_an_activation(monkeypatch):
    monkeypatch.setattr("spikeforge.models.registry._MODELS", dict(models.registry._MODELS))
    monkeypatch.setattr(activations, "_ACTIVATIONS", dict(activations._ACTIVATIONS))

    @models.register("tiny")
    def tiny(act, num_classes=10):
        return nn.Sequential(nn.Flatten(), nn.Linear(12, 8), act(), nn.Linear(8, num_classes))

    with pytest.raises(ValueError, match="already registered"):
        models.register("tiny", tiny)
    models.register_activation("clip", nn.Hardtanh, spiking=False, allows_maxpool=False, defaults=dict(min_val=0.0))
    with pytest.raises(ValueError, match="already registered"):
        models.register_activation("clip", nn.Hardtanh, spiking=False)
    net = models.create("tiny", num_classes=3, neuron="clip")
    assert net[2].min_val == 0.0 and net(torch.randn(5, 3, 2, 2)).shape == (5, 3)
    assert models.create("tiny", neuron="lif", timesteps=2)(torch.randn(5, 3, 2, 2)).shape == (2, 5, 10)

    # A conversion-style activation forbids max-pooling: the ImageNet stem then average-pools.
    with torch.device("meta"):
        stem_pool = models.create("resnet18", neuron="clip", stem="imagenet").stem[1]
    assert isinstance(stem_pool, nn.AvgPool2d)
    assert (stem_pool.kernel_size, stem_pool.stride, stem_pool.padding) == (3, 2, 1)
    with pytest.raises(ValueError, match="forbids max-pooling"):
        models.create("vgg11", neuron="clip", pool="max")
    with pytest.raises(ValueError, match="forbids max-pooling"):
        models.create("resnet18", neuron="clip", stem="imagenet", pool="max")


def test_pool_choice(build_on_meta):
    assert isinstance(build_on_meta("resnet18", neuron="relu", stem="imagenet").stem[1], nn.MaxPool2d)
    snn = build_on_meta("resnet18", neuron="lif", stem="imagenet", pool="avg")
    assert isinstance(snn.backbone.stem[1], nn.AvgPool2d)
    vgg = build_on_meta("vgg11", neuron="relu")
    assert any(isinstance(m, nn.AvgPool2d) for m in vgg.modules())
    assert not any(isinstance(m, nn.MaxPool2d) for m in vgg.modules())
    vgg = build_on_meta("vgg11", neuron="relu", pool="max")
    assert not any(isinstance(m, nn.AvgPool2d) for m in vgg.modules())
    with pytest.raises(ValueError, match="pool must be"):
        models.create("vgg11", neuron="relu", pool="min")


def test_residual_blocks_apply_post_add_activation_as_a_module(build_on_meta):
    from spikeforge.models.resnet import BasicBlock

    net = build_on_meta("resnet18", neuron="relu")
    blocks = [m for m in net.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 8 and all(isinstance(b.act, nn.ReLU) for b in blocks)


def test_mean_over_time_gives_ann_shaped_logits_and_trains_with_sdt():
    from spikeforge.train.losses import sdt_loss

    torch.manual_seed(0)
    per_step = models.create("digits_cnn", num_classes=10, timesteps=3).eval()
    mean = models.create("digits_cnn", num_classes=10, timesteps=3, mean_over_time=True).eval()
    mean.load_state_dict(per_step.state_dict())
    x, labels = torch.rand(5, 1, 8, 8), torch.arange(5)
    steps_out, mean_out = per_step(x), mean(x)
    assert steps_out.shape == (3, 5, 10) and mean_out.shape == (5, 10)
    torch.testing.assert_close(mean_out, steps_out.mean(0))
    torch.testing.assert_close(sdt_loss(mean_out, labels), sdt_loss(steps_out, labels))
    with pytest.raises(ValueError, match="runs its own time steps.*mean_over_time does not apply"):
        models.create("spikedhs_stereo", mean_over_time=True)


@pytest.mark.parametrize("value", [True, "imagenet"])
def test_pretrained_weights_are_refused_with_the_way_to_load_a_checkpoint(value):
    with pytest.raises(ValueError, match=r"does not download weights.*spikeforge train.*load_trained"):
        models.create("resnet19", pretrained=value)
    assert isinstance(models.create("digits_cnn", pretrained=False), sf.SpikingNetwork)
