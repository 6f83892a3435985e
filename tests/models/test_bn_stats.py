"""Batch norm statistics per time step (``bn_stats="per_step"``) against a reference that calls a plain
batch norm once per step, as the official SpikeDHS code does; eval mode equals folded statistics."""

import copy

import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

import spikeforge as sf
from spikeforge import models
from spikeforge.core.norm import PerStepBatchNorm, PerStepSyncBatchNorm, convert_sync_batchnorm, set_bn_stats
from spikeforge.models.spikedhs.genotype import GENOTYPES, Genotype
from spikeforge.search.config import SearchConfig, SupernetConfig
from spikeforge.search.dgs import DGS, CandidateMixer
from spikeforge.search.supernet import build_supernet
from spikeforge.train.losses import sdt_loss

PLAIN = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
PER_STEP = {1: sf.PerStepBatchNorm1d, 2: sf.PerStepBatchNorm2d, 3: sf.PerStepBatchNorm3d}
SPATIAL = {1: (), 2: (5, 4), 3: (3, 4, 2)}


def folded_input(steps, batch, dims, dtype, seed):
    """``[T*B, 3, *S]`` whose steps differ in mean and scale (so per-step and folded statistics differ)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(steps, batch, 3, *SPATIAL[dims], generator=gen, dtype=dtype)
    t = torch.arange(steps, dtype=dtype).view(-1, *[1] * (x.dim() - 1))
    return (x * (t + 1) + t).flatten(0, 1).requires_grad_(True)


def reference_per_step(bn: nn.Module, x, steps):
    """The official code's way: the plain layer called once per step ``[B, ...]`` of ``[T, B, ...]``."""
    return torch.stack([bn(x_t) for x_t in x.unflatten(0, (steps, -1))]).flatten(0, 1)


def paired(dims, dtype, momentum=0.1):
    """A plain batch norm with non-trivial affine weights and its per-step twin (same state)."""
    torch.manual_seed(0)
    plain = PLAIN[dims](3, momentum=momentum).to(dtype)
    with torch.no_grad():
        plain.weight.uniform_(0.5, 1.5)
        plain.bias.uniform_(-0.5, 0.5)
    per_step = PER_STEP[dims](3, momentum=momentum).to(dtype)
    per_step.load_state_dict(plain.state_dict())
    return plain, per_step


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_training_equals_one_plain_call_per_step(dims, dtype, steps, momentum):
    """Outputs, input and affine gradients and running statistics over several training steps."""
    plain, per_step = paired(dims, dtype, momentum)
    per_step.timesteps = steps
    for seed in range(3):
        x_ref, x = (folded_input(steps, 4, dims, dtype, seed) for _ in range(2))
        out_ref, out = reference_per_step(plain, x_ref, steps), per_step(x)
        torch.testing.assert_close(out, out_ref)
        grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(10 + seed), dtype=dtype)
        out_ref.backward(grad_out)
        out.backward(grad_out)
        torch.testing.assert_close(x.grad, x_ref.grad)
        torch.testing.assert_close(per_step.weight.grad, plain.weight.grad)
        torch.testing.assert_close(per_step.bias.grad, plain.bias.grad)
    torch.testing.assert_close(per_step.running_mean, plain.running_mean)
    torch.testing.assert_close(per_step.running_var, plain.running_var)
    assert int(per_step.num_batches_tracked) == int(plain.num_batches_tracked) == 3 * steps
    if steps > 1:  # the reference is not the folded layer
        folded = copy.deepcopy(plain)
        assert not torch.allclose(folded(x.detach()), out.detach(), atol=1e-3)


@pytest.mark.parametrize("dims", [2, 3])
def test_eval_mode_equals_folded_statistics(dims):
    plain, per_step = paired(dims, torch.float32)
    with torch.no_grad():
        plain.running_mean.uniform_(-1, 1)
        plain.running_var.uniform_(0.5, 2)
    per_step.load_state_dict(plain.state_dict())
    plain.eval()
    per_step.eval()
    per_step.timesteps = 3
    x = folded_input(3, 4, dims, torch.float32, 0)
    assert torch.equal(per_step(x), plain(x))
    assert torch.equal(per_step.running_mean, plain.running_mean)


def test_without_running_statistics_eval_mode_normalises_per_step_too():
    plain = nn.BatchNorm2d(3, track_running_stats=False).eval()
    per_step = sf.PerStepBatchNorm2d(3, track_running_stats=False).eval()
    per_step.timesteps = 3
    x = folded_input(3, 4, 2, torch.float32, 0)
    torch.testing.assert_close(per_step(x), reference_per_step(plain, x, 3))


def test_spiking_network_tells_batch_norms_their_steps():
    """Inside a SpikingNetwork the layer sees ``[T*B, ...]`` and normalises each step of a sequence alone;
    outside, it is the plain layer on one step."""
    plain, per_step = paired(2, torch.float32)
    seq = folded_input(3, 4, 2, torch.float32, 0).detach().unflatten(0, (3, 4))  # [T, B, C, H, W]
    out = sf.SpikingNetwork(per_step)(seq)
    torch.testing.assert_close(out, torch.stack([plain(x_t) for x_t in seq]))
    assert per_step.timesteps is None
    torch.testing.assert_close(per_step(seq[0]), plain(seq[0]))


def test_step_by_step_training_equals_the_multi_step_call_with_per_step_statistics():
    torch.manual_seed(0)
    net = sf.SpikingNetwork(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), sf.PerStepBatchNorm2d(4), sf.LIF()))
    seq = folded_input(3, 4, 2, torch.float32, 0).detach().unflatten(0, (3, 4))
    state, outputs = None, []
    for x_t in seq:
        out, state = net.step(x_t, state)
        outputs.append(out)
    torch.testing.assert_close(torch.stack(outputs), net(seq))


def test_channels_last_and_bfloat16_autocast_behave_as_the_reference():
    plain, per_step = paired(2, torch.float32)
    per_step.timesteps = 3
    conv = nn.Conv2d(3, 3, 3, padding=1)
    x = folded_input(3, 4, 2, torch.float32, 0).detach().contiguous(memory_format=torch.channels_last)
    out = per_step(x)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, reference_per_step(plain, x, 3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, out_ref = per_step(conv(x)), reference_per_step(plain, conv(x), 3)
    assert out.dtype == out_ref.dtype
    torch.testing.assert_close(out, out_ref)


def test_set_bn_stats_swaps_classes_and_keeps_parameters_and_buffers():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Sequential(nn.Flatten(), nn.BatchNorm1d(4)))
    weight, mean = model[1].weight, model[1].running_mean
    keys = list(model.state_dict())
    model.eval()
    set_bn_stats(model, "per_step")
    assert isinstance(model[1], sf.PerStepBatchNorm2d) and isinstance(model[2][1], sf.PerStepBatchNorm1d)
    assert model[1].weight is weight and model[1].running_mean is mean and not model[1].training
    assert list(model.state_dict()) == keys
    set_bn_stats(model, "folded")
    assert type(model[1]) is nn.BatchNorm2d and type(model[2][1]) is nn.BatchNorm1d and model[1].weight is weight
    with pytest.raises(ValueError, match="bn_stats must be one of folded, per_step"):
        set_bn_stats(model, "per-step")
    with pytest.raises(ValueError, match=r"batch norm 0 \(LazyBatchNorm2d\) has no per-step form"):
        set_bn_stats(nn.Sequential(nn.LazyBatchNorm2d()), "per_step")


def test_sync_conversion_keeps_per_step_statistics():
    model = set_bn_stats(nn.Sequential(nn.BatchNorm2d(3), nn.BatchNorm2d(3)), "per_step")
    model[1] = nn.BatchNorm2d(3)
    weight = model[0].weight
    convert_sync_batchnorm(model)
    assert type(model[0]) is PerStepSyncBatchNorm and type(model[1]) is nn.SyncBatchNorm
    assert model[0].weight is weight
    plain, _ = paired(2, torch.float32)
    model[0].load_state_dict(plain.state_dict())
    model[0].timesteps = 3
    x = folded_input(3, 4, 2, torch.float32, 0)
    torch.testing.assert_close(model[0](x), reference_per_step(plain, x, 3))  # one process: nothing to sync


def tiny_spikedhs(**kw):
    torch.manual_seed(0)
    genotype = Genotype(GENOTYPES["spikedhs_cifar"].cell, (0, 1))
    return models.create("spikedhs", 10, timesteps=3, base_channels=2, genotype=genotype, auxiliary=True, **kw)


def batch_norms(model):
    return [m for m in model.modules() if isinstance(m, _BatchNorm)]


def test_spikedhs_per_step_differs_in_training_and_equals_in_eval():
    folded, per_step = tiny_spikedhs(), tiny_spikedhs(bn_stats="per_step")
    per_step.load_state_dict(folded.state_dict())
    norms = batch_norms(per_step)
    assert len(norms) == len(batch_norms(folded)) > 0 and all(isinstance(m, PerStepBatchNorm) for m in norms)
    assert any(isinstance(m, nn.BatchNorm1d) for m in norms)  # the heads' BN1d too
    x = torch.randn(4, 3, 16, 16)
    logits, aux = per_step(x)
    assert not torch.allclose(logits, folded(x)[0])
    assert all(int(m.num_batches_tracked) == 3 for m in norms)  # one update per step
    folded.load_state_dict(per_step.state_dict())  # the same running statistics
    folded.eval()
    per_step.eval()
    with torch.no_grad():
        torch.testing.assert_close(per_step(x), folded(x))


def test_stereo_per_step_uses_3d_batch_norms_and_equals_folded_in_eval():
    options = dict(base_channels=2, max_disparity=12, timesteps=2)
    torch.manual_seed(0)
    folded = models.create("spikedhs_stereo", **options)
    per_step = models.create("spikedhs_stereo", bn_stats="per_step", **options)
    per_step.load_state_dict(folded.state_dict())
    assert any(isinstance(m, sf.PerStepBatchNorm3d) for m in per_step.modules())
    assert all(isinstance(m, PerStepBatchNorm) for m in batch_norms(per_step))
    views = torch.randn(2, 2, 5, 14, 17)
    with torch.no_grad():
        assert not torch.allclose(per_step(views).disparity, folded(views).disparity)
        folded.load_state_dict(per_step.state_dict())  # the same running statistics
        folded.eval()
        per_step.eval()
        torch.testing.assert_close(per_step(views).disparity, folded(views).disparity)


def test_create_refuses_per_step_statistics_without_time_and_unknown_values():
    with pytest.raises(ValueError, match="needs a spiking model"):
        models.create("vgg11", 10, neuron="relu", bn_stats="per_step")
    with pytest.raises(ValueError, match="bn_stats must be one of folded, per_step, got 'steps'"):
        models.create("spikedhs", 10, bn_stats="steps")


def test_zoo_models_take_the_option():
    net = models.create("resnet19", 10, timesteps=2, bn_stats="per_step")
    assert batch_norms(net) and all(isinstance(m, PerStepBatchNorm) for m in batch_norms(net))


def test_search_supernet_with_per_step_statistics_runs_forward_and_backward():
    config = SearchConfig(supernet=SupernetConfig(layers=2, levels=2, base_channels=2, bn_stats="per_step"),
                          timesteps=2)
    supernet, model = build_supernet(config, train_set=None)
    norms = batch_norms(supernet)
    assert norms and all(isinstance(m, PerStepBatchNorm) for m in norms)
    out = model(torch.randn(3, 3, 8, 8))
    out.sum().backward()
    assert out.shape == (2, 3, 10)
    assert all(int(m.num_batches_tracked) == 2 for m in norms)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in supernet.arch_parameters())


def test_dgs_candidate_copies_keep_per_step_statistics():
    """The copies are per-step layers and run once per step inside the model (T=3 updates per call)."""
    net = tiny_spikedhs(bn_stats="per_step")
    stem_bn = net.backbone.stem.bn
    seen = []

    def loss_fn(out, targets):
        mixer = net.backbone.stem.conv
        assert isinstance(mixer, CandidateMixer)
        seen.append((mixer.mode, [type(bn) for bn in mixer.bns], [int(bn.num_batches_tracked) for bn in mixer.bns]))
        return sdt_loss(out[0], targets)

    batches = [(torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,)))]
    DGS(net, layers="stem", minibatches=1).run_round(batches, loss_fn, lr=0.01)
    mode, types, counts = seen[0]
    start = int(stem_bn.num_batches_tracked)
    assert mode == 0 and types == [sf.PerStepBatchNorm2d] * 5
    assert counts == [start + 3] + [start] * 4


def test_fold_bn_and_nir_export_accept_per_step_layers():
    from spikeforge.models import fold_bn

    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), sf.LIF(), nn.AvgPool2d(2),
                             nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(16, 3))
    for bn in (backbone[1], backbone[4]):
        with torch.no_grad():
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
            bn.weight.uniform_(0.5, 1.5)
    folded = sf.SpikingNetwork(backbone, timesteps=2).eval()
    per_step = set_bn_stats(copy.deepcopy(folded), "per_step")
    x = torch.rand(3, 2, 4, 4)
    fused = copy.deepcopy(per_step)
    assert fold_bn(fused) == 1
    torch.testing.assert_close(fused(x), per_step(x))
    nir = pytest.importorskip("nir")
    from spikeforge.export import to_nir

    graphs = [to_nir(model, x) for model in (folded, per_step)]
    assert graphs[0].nodes.keys() == graphs[1].nodes.keys() and graphs[0].edges == graphs[1].edges
    for name, node in graphs[0].nodes.items():
        if isinstance(node, (nir.Conv2d, nir.Affine)):
            assert (node.weight == graphs[1].nodes[name].weight).all()


def test_spikedhs_recipes_train_and_search_with_per_step_statistics():
    """The official code calls every batch norm once per time step (specs/spikedhs.md 1.1)."""
    from spikeforge.runtime.config import list_recipes, load_recipe
    from spikeforge.search.config import build_search_config
    from spikeforge.train.config import build_config

    names = [name for name in list_recipes() if name.startswith("spikedhs-")]
    assert len(names) == 10
    for name in names:
        if "supernet" in load_recipe(name):
            assert build_search_config(name).supernet.bn_stats == "per_step", name
        else:
            assert build_config(name).model.kwargs["bn_stats"] == "per_step", name
