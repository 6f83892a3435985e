"""QCFS -> IF conversion: exactness at constant input, deep nets vs a step-by-step reference,
BN keep vs fold, unsupported layers, chunked simulation."""

import pytest
import torch
from helpers import randomise, reference_logits
from torch import nn

import spikeforge as sf
from spikeforge import models
from spikeforge.convert import QCFS, ConversionError, ScaledIF, simulate, to_snn


@pytest.mark.parametrize("levels", [2, 4, 8])
def test_constant_input_rate_equals_qcfs_at_t_equals_l(levels):
    torch.manual_seed(levels)
    lam = 1.3
    net = nn.Sequential(nn.Linear(16, 32), QCFS(levels, lam)).double().eval()
    x = torch.randn(4000, 16, dtype=torch.float64)
    ann_out = net(x)
    snn = to_snn(net, timesteps=levels, bn="keep")
    # a static [B, F] batch: the same backbone in a SpikingNetwork with static_ndim=2
    out = sf.SpikingNetwork(snn.backbone, timesteps=levels, static_ndim=2)(x)  # [T, B, 32]
    assert out.shape == (levels, 4000, 32)
    assert torch.allclose(out.mean(0), ann_out, atol=1e-12, rtol=0)
    # all regimes occur: silent, clipped at theta, and in between
    theta = net[1].threshold
    assert ((ann_out > 0) & (ann_out < theta)).any() and (ann_out == theta).any() and (ann_out == 0).any()


def test_scaled_if_matches_qcfs_for_many_constant_currents():
    torch.manual_seed(0)
    lam, levels = 2.0, 4
    z = (torch.rand(100_000, dtype=torch.float64) * 1.6 - 0.3) * lam
    cell = ScaledIF(lam)
    out = cell(z.expand(levels, -1).contiguous())
    assert torch.equal(out.mean(0), QCFS(levels, lam).double()(z).detach())


def _small_convnet(act):
    return nn.Sequential(
        models.layers.ConvBNAct(3, 6, act),
        nn.AvgPool2d(2),
        models.resnet.BasicBlock(6, 8, 2, act),
        models.resnet.BasicBlock(8, 8, 1, act),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 12),
        nn.BatchNorm1d(12),
        act(),
        nn.Dropout(0.5),
        nn.Linear(12, 5),
    )


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    act = models.activation_factory("qcfs", {"levels": 4})
    small = randomise(_small_convnet(act), seed=1).double()
    resnet = randomise(models.create("resnet20", 10, neuron="qcfs"), seed=2, lam_range=(0.3, 1.0)).double()
    return {"small": small, "resnet20": resnet}


@pytest.mark.parametrize("name, bn", [("small", "keep"), ("small", "fold"), ("resnet20", "keep"), ("resnet20", "fold")])
def test_deep_net_matches_step_by_step_reference(nets, name, bn):
    ann = nets[name]
    torch.manual_seed(3)
    images = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    steps = 12
    ref = reference_logits(ann, images, steps)
    snn = to_snn(ann, timesteps=steps, bn=bn)
    out = snn(images)
    assert out.shape == ref.shape
    assert torch.allclose(out, ref, atol=1e-9, rtol=1e-9)
    # the network actually spikes somewhere, but not everywhere
    rates = [c.firing_rate for c in snn.modules() if isinstance(c, ScaledIF)]
    assert max(rates) > 0 and min(rates) < 1


def test_bn_keep_and_fold_give_same_logits(nets):
    ann = nets["resnet20"]
    images = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    keep, fold = to_snn(ann, 8, bn="keep"), to_snn(ann, 8, bn="fold")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fold.modules())
    assert torch.allclose(keep(images), fold(images), atol=1e-9)
    # float32 too, with a float tolerance
    act = models.activation_factory("qcfs", {"levels": 4})
    ann32 = randomise(_small_convnet(act), seed=5)
    x32 = images.float()
    a, b = to_snn(ann32, 8, bn="keep")(x32), to_snn(ann32, 8, bn="fold")(x32)
    assert (a - b).abs().max() < 1e-4 * max(1.0, a.abs().max().item())
    assert not any(isinstance(m, nn.BatchNorm1d) for m in to_snn(ann32, 2, bn="fold").modules())


def test_conversion_leaves_ann_untouched_and_copies_thresholds(nets):
    ann = nets["small"]
    before = {k: v.clone() for k, v in ann.state_dict().items()}
    snn = to_snn(ann, 4, bn="fold")
    after = ann.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    lams = [m.threshold for m in ann.modules() if isinstance(m, QCFS)]
    cells = [m for m in snn.modules() if isinstance(m, ScaledIF)]
    assert [c.theta for c in cells] == lams
    assert all(c.v_th == c.theta and c.v_init == c.theta / 2 for c in cells)
    assert isinstance(snn, sf.SpikingNetwork) and not snn.training


@pytest.mark.parametrize(
    "bad, name",
    [(nn.MaxPool2d(2), "MaxPool2d"), (nn.ReLU(), "ReLU"), (nn.GELU(), "GELU")],
)
def test_unsupported_layer_is_named(bad, name):
    act = models.activation_factory("qcfs")
    net = nn.Sequential(nn.Conv2d(3, 4, 3), act(), nn.Sequential(nn.Identity(), bad), nn.Flatten(), nn.LazyLinear(2))
    with pytest.raises(ConversionError, match=rf"2\.1 \({name}\)"):
        to_snn(net, 4)
    with pytest.raises(ConversionError, match="MaxPool2d"):
        to_snn(models.create("vgg11", 10, neuron=lambda: QCFS(), pool="max"), 4)
    with pytest.raises(ConversionError, match="no QCFS"):
        to_snn(nn.Sequential(nn.Linear(2, 2)), 4)
    with pytest.raises(ValueError, match="bn"):
        to_snn(nn.Sequential(nn.Linear(2, 2), QCFS()), 4, bn="merge")


@pytest.mark.parametrize("chunk", [1, 4, 7])
def test_chunked_equals_one_shot(nets, chunk):
    ann = nets["small"]
    images = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    snn = to_snn(ann, timesteps=14)
    one_shot = snn(images)
    chunked = simulate(snn, images, 14, chunk=chunk)
    assert torch.allclose(chunked, one_shot, atol=1e-10, rtol=0)
    # and the state scope left nothing behind: a plain call starts from v_init again
    assert torch.equal(snn(images), one_shot)
