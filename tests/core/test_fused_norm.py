"""Batch norm + neuron fused into one node (spikeforge.core.fused_norm) against the two modules run apart
(torch's batch norm, then our neuron): float64 results equal to rounding, the running statistics, and
when the fusion must not apply."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from spikeforge import models
from spikeforge.core.fused_norm import fusable, norm_fusion, normalize_and_fire
from spikeforge.core.kernels import cpu, host
from spikeforge.core.neuron import LIF, LSGLIF, ParametricLIF
from spikeforge.core.norm import set_bn_stats

pytestmark = pytest.mark.skipif(not cpu.compiler_available(), reason="no C compiler")

T = 3


def _inputs(shape, dtype, residual: bool, channels_last: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    y = (torch.randn(shape, generator=g, dtype=torch.float64) * 1.5 + 0.7).to(dtype)
    r = (torch.rand(shape, generator=g) > 0.6).to(dtype) if residual else None
    grad = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
    if channels_last:
        y = y.contiguous(memory_format=torch.channels_last)
        r = r.contiguous(memory_format=torch.channels_last) if r is not None else None
    return y, r, grad


def _layers(bn: nn.Module, neuron: nn.Module):
    with torch.no_grad():
        if bn.affine:
            bn.weight.uniform_(0.5, 1.5, generator=torch.Generator().manual_seed(1))
            bn.bias.uniform_(-0.4, 0.4, generator=torch.Generator().manual_seed(2))
    neuron.timesteps = T
    return bn, neuron


def _run(bn, neuron, y, r, grad, fused: bool, calls: int = 2, rbn=None):
    """``calls`` training calls (the running statistics move twice); gradients of the last one. ``rbn``: the
    residual's own batch norm."""
    bn, neuron, rbn = copy.deepcopy(bn), copy.deepcopy(neuron), copy.deepcopy(rbn)
    with norm_fusion(fused):
        for _ in range(calls):
            y_in = y.detach().clone().requires_grad_()
            r_in = r.detach().clone().requires_grad_() if r is not None else None
            assert fusable(bn, neuron, y_in, r_in, rbn) == fused
            for p in [*bn.parameters(), *neuron.parameters(), *(rbn.parameters() if rbn is not None else ())]:
                p.grad = None
            out = normalize_and_fire(bn, neuron, y_in, r_in, rbn)
            (out * grad).sum().backward()
    result = dict(spikes=out, grad_y=y_in.grad, grad_r=r_in.grad if r is not None else None,
                  grad_w=bn.weight.grad if bn.affine else None, grad_b=bn.bias.grad if bn.affine else None,
                  mean=bn.running_mean, var=bn.running_var, tracked=bn.num_batches_tracked,
                  counts=neuron.spike_counts, neuron=[p.grad for p in neuron.parameters()])
    if rbn is not None:
        result |= dict(grad_rw=rbn.weight.grad if rbn.affine else None, grad_rb=rbn.bias.grad if rbn.affine else None,
                       rmean=rbn.running_mean, rvar=rbn.running_var, rtracked=rbn.num_batches_tracked)
    return result


def _assert_same(fused: dict, plain: dict, rtol: float):
    assert torch.equal(fused["spikes"], plain["spikes"])
    assert torch.equal(fused["counts"], plain["counts"])
    assert len(fused["neuron"]) == len(plain["neuron"])
    for got, want in zip(fused["neuron"], plain["neuron"]):
        torch.testing.assert_close(got, want, rtol=rtol, atol=rtol * want.abs().max().item())
    for key in ("grad_y", "grad_r", "grad_w", "grad_b", "mean", "var", "tracked", "grad_rw", "grad_rb", "rmean", "rvar",
                "rtracked"):
        if plain.get(key) is None:
            assert fused.get(key) is None, key
            continue
        assert fused[key].dtype == plain[key].dtype, key
        torch.testing.assert_close(fused[key], plain[key], rtol=rtol, atol=rtol * plain[key].abs().max().item(),
                                   msg=key)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("residual", [False, True])
def test_batchnorm2d_and_lif_as_apart_in_float64(channels_last, residual):
    bn, neuron = _layers(nn.BatchNorm2d(5).double(), LIF(decay=0.5, v_th=0.6))
    y, r, grad = _inputs((T * 4, 5, 6, 7), torch.float64, residual, channels_last)
    _assert_same(_run(bn, neuron, y, r, grad, True), _run(bn, neuron, y, r, grad, False), rtol=1e-10)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("rbn", [nn.BatchNorm2d(5), nn.BatchNorm2d(5, affine=False, momentum=None)],
                         ids=["affine", "plain"])
@pytest.mark.parametrize("neuron", [LIF(decay=0.5, v_th=0.6), ParametricLIF(decay=0.4, v_th=0.6)], ids=["LIF", "PLIF"])
def test_a_normalised_residual_as_apart(rbn, neuron, channels_last):
    """``neuron(bn(y) + rbn(r))`` (a residual block's downsampling shortcut): both batch norms' gradients and
    running statistics as with the modules apart."""
    bn, neuron = _layers(nn.BatchNorm2d(5).double(), neuron.double())
    rbn, _ = _layers(rbn.double(), LIF())
    y, _, grad = _inputs((T * 4, 5, 6, 7), torch.float64, False, channels_last)
    r, _, _ = _inputs((T * 4, 5, 6, 7), torch.float64, False, channels_last, seed=3)
    fused = _run(bn, neuron, y, r, grad, True, rbn=rbn)
    plain = _run(bn, neuron, y, r, grad, False, rbn=rbn)
    assert fused["grad_r"] is not None and (fused["grad_rw"] is not None) == rbn.affine
    _assert_same(fused, plain, rtol=1e-10)


def test_two_threads_as_apart(two_kernel_threads):
    """Each step split into two ranges (statistics, forward, backward sums of both batch norms, input
    gradients): as apart."""
    bn, neuron = _layers(nn.BatchNorm2d(5).double(), LIF(decay=0.5, v_th=0.6))
    rbn, _ = _layers(nn.BatchNorm2d(5).double(), LIF())
    y, _, grad = _inputs((T * 4, 5, 48, 41), torch.float64, False, True)  # 39360 values per step: two ranges
    r, _, _ = _inputs((T * 4, 5, 48, 41), torch.float64, False, True, seed=3)
    assert len(host.thread_ranges(y[0:4].numel())) == 2
    _assert_same(_run(bn, neuron, y, r, grad, True, rbn=rbn), _run(bn, neuron, y, r, grad, False, rbn=rbn), 1e-10)


@pytest.mark.parametrize("bn", [
    nn.BatchNorm2d(4, affine=False),
    nn.BatchNorm2d(4, momentum=None),
    nn.BatchNorm2d(4, track_running_stats=False),
    nn.BatchNorm2d(4, eps=0.1),
], ids=["no-affine", "cumulative", "untracked", "eps"])
def test_batch_norm_options_as_apart(bn):
    bn, neuron = _layers(bn.double(), LIF(decay=0.25, v_th=0.5, reset="soft", surrogate="sigmoid"))
    y, r, grad = _inputs((T * 3, 4, 5, 5), torch.float64, True, False)
    fused, plain = _run(bn, neuron, y, r, grad, True, calls=3), _run(bn, neuron, y, r, grad, False, calls=3)
    _assert_same(fused, plain, rtol=1e-10)


@pytest.mark.parametrize("neuron", [
    ParametricLIF(decay=0.4, v_th=0.6),
    LSGLIF(),
    LIF(decay=0.5, v_th=0.8, learn_threshold=True, reset="soft"),
    LIF(decay=0.5, v_th=0.6, input_scale="complement", learn_decay=True),
], ids=["PLIF", "LSG", "threshold", "input-scale"])
def test_learnable_neuron_parameters_as_apart(neuron):
    """The neuron keeps its membrane; its parameter gradients and the batch norm's are those of the two apart."""
    bn, neuron = _layers(nn.BatchNorm2d(5).double(), neuron.double())
    y, r, grad = _inputs((T * 4, 5, 6, 7), torch.float64, True, True)
    fused, plain = _run(bn, neuron, y, r, grad, True), _run(bn, neuron, y, r, grad, False)
    assert fused["neuron"] and all(g is not None for g in fused["neuron"])
    _assert_same(fused, plain, rtol=1e-10)


@pytest.mark.parametrize("shape", [(T * 6, 7), (T * 2, 3, 9)], ids=["BatchNorm1d-features", "BatchNorm1d-sequence"])
def test_batchnorm1d_as_apart(shape):
    bn, neuron = _layers(nn.BatchNorm1d(shape[1]).double(), LIF(decay=0.5, v_th=0.3))
    y, r, grad = _inputs(shape, torch.float64, False, False)
    _assert_same(_run(bn, neuron, y, r, grad, True), _run(bn, neuron, y, r, grad, False), rtol=1e-10)


def test_float32_within_rounding():
    bn, neuron = _layers(nn.BatchNorm2d(8), LIF(decay=0.5, v_th=0.6))
    y, r, grad = _inputs((T * 8, 8, 8, 8), torch.float32, True, True)
    fused, plain = _run(bn, neuron, y, r, grad, True), _run(bn, neuron, y, r, grad, False)
    # x = alpha * y + beta is rounded otherwise than torch's batch norm: a membrane at the threshold may flip
    flips = (fused["spikes"] != plain["spikes"]).sum().item()
    assert flips <= 2
    if flips == 0:
        _assert_same(fused, plain, rtol=1e-4)


def test_bfloat16_reads_and_writes_bfloat16():
    """Mixed precision: y, the residual, the spikes and dL/dy in bfloat16; x is not rounded to bfloat16
    (the reference: batch norm and neuron in float64 on the same bfloat16 values)."""
    bn, neuron = _layers(nn.BatchNorm2d(6), LIF(decay=0.5, v_th=0.6))
    y, r, grad = _inputs((T * 8, 6, 8, 8), torch.bfloat16, True, True)
    fused = _run(bn, neuron, y, r, grad, True, calls=1)
    reference = _run(bn.double(), neuron, y.double(), r.double(), grad.double(), False, calls=1)
    assert fused["spikes"].dtype == fused["grad_y"].dtype == fused["grad_r"].dtype == torch.bfloat16
    assert fused["grad_w"].dtype == torch.float32
    assert (fused["spikes"].double() != reference["spikes"]).float().mean() < 1e-3
    torch.testing.assert_close(fused["mean"].double(), reference["mean"], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("neuron", [ParametricLIF(decay=0.4, v_th=0.6), LSGLIF(decay=0.3, v_th=0.5)],
                         ids=["PLIF", "LSG"])
def test_bfloat16_with_learnable_neuron_parameters(neuron):
    """Mixed precision with a learnable decay (and LSG's width tied to it): fused, y, the residual, the spikes
    and dL/dy in bfloat16, the neuron's and batch norm's gradients in float32; against batch norm and neuron
    in float64 on the same bfloat16 values (dL/dx reaches the batch norm rounded to bfloat16, as apart)."""
    bn, neuron = _layers(nn.BatchNorm2d(6), neuron)
    y, r, grad = _inputs((T * 8, 6, 8, 8), torch.bfloat16, True, True)
    assert fusable(bn, neuron, y, r)
    fused = _run(bn, neuron, y, r, grad, True, calls=1)
    reference = _run(bn.double(), neuron.double(), y.double(), r.double(), grad.double(), False, calls=1)
    assert fused["spikes"].dtype == fused["grad_y"].dtype == torch.bfloat16
    assert fused["grad_w"].dtype == torch.float32 and all(g.dtype == torch.float32 for g in fused["neuron"])
    assert (fused["spikes"].double() != reference["spikes"]).float().mean() < 1e-3
    for key in ("grad_y", "grad_r", "grad_w", "grad_b"):
        want = reference[key]
        torch.testing.assert_close(fused[key].double(), want, rtol=0.02, atol=0.02 * want.abs().max().item(), msg=key)
    for got, want in zip(fused["neuron"], reference["neuron"], strict=True):
        torch.testing.assert_close(got.double(), want, rtol=0.02, atol=0.02 * want.abs().max().item())


def test_one_value_per_channel_is_refused_as_by_batch_norm():
    bn, neuron = _layers(nn.BatchNorm1d(3), LIF())
    neuron.timesteps = 1
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        normalize_and_fire(bn, neuron, torch.randn(1, 3))


def test_where_the_fusion_does_not_apply():
    bn, neuron = _layers(nn.BatchNorm2d(4), LIF())
    y = torch.randn(T * 2, 4, 3, 3)
    assert fusable(bn, neuron, y)
    assert not fusable(bn.eval(), neuron, y)
    bn.train()
    assert not fusable(set_bn_stats(copy.deepcopy(bn), "per_step"), neuron, y)
    assert not fusable(bn, nn.ReLU(), y)
    learnable = _layers(nn.BatchNorm2d(4), ParametricLIF())[1]
    assert fusable(bn, learnable, y) and fusable(bn, learnable, y.bfloat16())
    assert not fusable(bn, neuron, y.half())
    assert not fusable(bn, neuron, y, torch.randn(T * 2, 4, 3, 3, dtype=torch.float64))  # residual of another dtype
    r = torch.randn(T * 2, 4, 3, 3)
    assert fusable(bn, neuron, y, r, nn.BatchNorm2d(4))
    assert not fusable(bn, neuron, y, None, nn.BatchNorm2d(4))  # a residual norm needs a residual
    assert not fusable(bn, neuron, y, r, nn.BatchNorm2d(4).eval())
    assert not fusable(bn, neuron, y, r, set_bn_stats(nn.BatchNorm2d(4), "per_step"))
    handle = neuron.register_forward_hook(lambda *args: None)
    assert not fusable(bn, neuron, y)
    handle.remove()
    with norm_fusion(False):
        assert not fusable(bn, neuron, y)
    assert fusable(bn, neuron, y)


def test_hooks_see_both_modules_when_they_are_hooked():
    """A hook on either module gets the plain path, so it sees the batch norm's output as before."""
    bn, neuron = _layers(nn.BatchNorm2d(4), LIF())
    seen = []
    bn.register_forward_hook(lambda module, args, out: seen.append(out.shape))
    normalize_and_fire(bn, neuron, torch.randn(T * 2, 4, 3, 3))
    assert seen == [torch.Size([T * 2, 4, 3, 3])]


@pytest.mark.parametrize("name, neuron", [("resnet19", "lif"), ("vgg11", "lif"), ("resnet19", "lsg")])
def test_zoo_model_gradients_with_and_without_fusion(name, neuron):
    """A whole network (ConvBNAct layers and residual blocks) in float64: same outputs and gradients."""
    torch.manual_seed(0)
    model = models.create(name, num_classes=10, neuron=neuron, timesteps=2).double()
    x = torch.randn(2, 3, 32 if name == "vgg11" else 8, 32 if name == "vgg11" else 8, dtype=torch.float64)
    results = []
    for fused in (True, False):
        net = copy.deepcopy(model)
        with norm_fusion(fused):
            out = net(x)
            out.square().sum().backward()
        results.append((out, {n: p.grad for n, p in net.named_parameters()},
                        {n: b.clone() for n, b in net.named_buffers()}))
    (out_f, grads_f, buffers_f), (out_p, grads_p, buffers_p) = results
    torch.testing.assert_close(out_f, out_p, rtol=1e-9, atol=1e-9)
    for n in grads_p:
        torch.testing.assert_close(grads_f[n], grads_p[n], rtol=1e-8, atol=1e-10, msg=n)
    for n in buffers_p:
        torch.testing.assert_close(buffers_f[n], buffers_p[n], rtol=1e-9, atol=1e-12, msg=n)
