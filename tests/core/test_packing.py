"""Spike packing (spikeforge.core.packing): what autograd saves inside ``pack_spikes`` comes back with
exactly the saved values, spikes are stored as bits, and only tensors known to hold spikes are.

The oracle is autograd without packing: ``(s * w).sum()`` saves ``s`` for ``w``'s gradient, which is
then ``s`` itself, so a packed and decoded ``s`` must give a bit-identical ``w.grad`` (NaN where ``s``
is NaN). Whether a tensor was packed is seen in the saved tensor autograd hands back: packed ones are
decoded into new memory, kept ones are the tensor itself.
"""

import warnings
from contextlib import nullcontext

import pytest
import torch

import spikeforge as sf
from spikeforge.core import packing
from spikeforge.core.packing import holds_spikes, mark_spikes, pack_spikes

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def every_pattern(dtype, device="cpu"):
    """``[2051]``: every byte value as 8 spikes, NaN spikes of both signs, and a tail of 3 (not a whole byte)."""
    bits = torch.arange(256).unsqueeze(1).bitwise_right_shift(torch.arange(8)).bitwise_and(1)
    s = torch.cat([bits.reshape(-1), torch.tensor([1, 0, 1])]).to(dtype=dtype, device=device)
    s[::7] = float("nan")
    s[3::11] = -float("nan")
    return s


def saved_by_mul(s, pack: bool):
    """``(w.grad, the tensor autograd saved for it)`` of ``(s * w).sum()``, run with or without packing."""
    w = torch.ones_like(s, requires_grad=True)
    with pack_spikes() if pack else nullcontext():
        y = s * w
    saved = y.grad_fn._saved_self
    (grad,) = torch.autograd.grad(y.sum(), w)
    return grad, saved


def assert_identical(got, want):
    assert got.dtype == want.dtype and got.shape == want.shape
    assert torch.equal(got.isnan(), want.isnan())
    assert torch.equal(got.nan_to_num(7.0), want.nan_to_num(7.0))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_bit_pattern_and_nan_comes_back_exactly(dtype, device):
    s = mark_spikes(every_pattern(dtype, device))
    grad, saved = saved_by_mul(s, pack=True)
    want, _ = saved_by_mul(s, pack=False)
    assert saved.data_ptr() != s.data_ptr(), "a marked tensor was not packed"
    assert_identical(saved, s)
    assert_identical(grad, want)
    assert grad.device == s.device


@pytest.mark.parametrize("n", [1, 7, 8, 9, 64, 65, 1000])
def test_every_size_comes_back_exactly(n):
    s = mark_spikes((torch.rand(n, generator=torch.Generator().manual_seed(n)) < 0.3).float())
    grad, saved = saved_by_mul(s, pack=True)
    assert saved.data_ptr() != s.data_ptr() and torch.equal(saved, s) and torch.equal(grad, s)


def test_spikes_are_stored_as_two_bits_each():
    s = mark_spikes(every_pattern(torch.float32))
    saved_by_mul(s, pack=True)
    _, planes = getattr(s, packing._PACKED)
    assert planes.bits.dtype == torch.uint8 and planes.bits.shape == (2, -(-s.numel() // 8))


def test_unmarked_tensors_are_kept_as_they_are():
    s = torch.tensor([0.0, 1.0, 1.0, 0.0])  # binary, but nobody said so: values are never scanned
    _, saved = saved_by_mul(s, pack=True)
    assert saved.data_ptr() == s.data_ptr()


def test_an_in_place_change_unmarks():
    s = mark_spikes(torch.tensor([0.0, 1.0, 1.0, 0.0]))
    s.mul_(0.5)
    assert not holds_spikes(s)
    grad, saved = saved_by_mul(s, pack=True)
    assert saved.data_ptr() == s.data_ptr()
    assert torch.equal(grad, torch.tensor([0.0, 0.5, 0.5, 0.0]))


def test_a_change_after_packing_packs_again():
    s = mark_spikes(torch.tensor([0.0, 1.0, 1.0, 0.0]))
    saved_by_mul(s, pack=True)
    s.copy_(torch.tensor([1.0, 0.0, 0.0, 1.0]))
    mark_spikes(s)
    _, saved = saved_by_mul(s, pack=True)
    assert torch.equal(saved, s)


def test_scaled_neuron_outputs_are_not_held_and_round_trip():
    x = torch.rand(3, 2, 5) * 3
    for scale, held in ((1.0, True), (0.75, False)):
        out = sf.IF(v_th=1.0, output_scale=scale)(x.clone().requires_grad_())
        assert holds_spikes(out) is held
        grad, saved = saved_by_mul(out, pack=True)
        assert torch.equal(saved, out) and torch.equal(grad, out.detach())


def test_a_slice_of_a_larger_tensor_is_not_marked():
    whole = torch.tensor([0.0, 1.0, 2.5, 7.0])
    part = mark_spikes(whole[:2])
    assert not holds_spikes(part) and not holds_spikes(whole)


@pytest.mark.parametrize("view", [
    lambda s: s.view(-1, *s.shape[2:]),  # what a convolution sees: [T*B, C, H, W]
    lambda s: s.reshape(s.shape[0], -1),
    lambda s: s.transpose(1, 3),  # non-contiguous
    lambda s: s[1:, :, ::2],  # a strided part
    lambda s: s.permute(2, 0, 3, 1, 4).unsqueeze(1),
])
def test_views_of_a_neuron_output_are_packed_and_come_back_exactly(view):
    x = torch.randn(3, 2, 4, 5, 6) + 1
    out = sf.LIF(decay=0.5)(x.requires_grad_())
    v = view(out)
    assert holds_spikes(v)
    grad, saved = saved_by_mul(v, pack=True)
    assert saved.data_ptr() != v.data_ptr()
    assert saved.shape == v.shape and saved.stride() == v.stride()
    assert_identical(saved, v)
    assert_identical(grad, saved_by_mul(v, pack=False)[0])


def test_a_view_in_another_dtype_is_kept():
    s = mark_spikes(torch.tensor([0.0, 1.0, 1.0, 0.0]))
    assert not holds_spikes(s.view(torch.int32))


def test_a_tensor_saved_twice_is_packed_once(monkeypatch):
    calls = []
    encode = packing._encode
    monkeypatch.setattr(packing, "_encode", lambda root: calls.append(root) or encode(root))
    x = torch.randn(2, 3, 4, 8, 8)
    conv = torch.nn.Conv2d(4, 4, 3, padding=1)
    w = torch.randn(4, 8, 8, requires_grad=True)

    def run(pack):
        conv.zero_grad()
        s = sf.LIF()(x.clone().requires_grad_())
        with pack_spikes() if pack else nullcontext():
            folded = s.view(-1, 4, 8, 8)
            loss = (conv(folded) * folded).sum() + (folded * w).sum()  # saved by the conv and by two muls
        loss.backward()
        return conv.weight.grad.clone(), w.grad.clone()

    want = run(False)
    w.grad = None
    got = run(True)
    assert len(calls) == 1
    assert all(torch.equal(a, b) for a, b in zip(got, want))


def test_a_kernel_saving_its_own_spikes_saves_bits():
    """A learnable threshold makes the kernel keep its spikes for the backward."""
    lif = sf.LIF(learn_threshold=True, backend="fused")
    x = torch.randn(4, 3, 16).requires_grad_()
    with pack_spikes():
        out = lif(x)
    spikes = [t for t in out.grad_fn.saved_tensors if t is not None and t.shape == out.shape and torch.equal(t, out)]
    assert spikes, "the kernel saves its spikes: expected them among its saved tensors"
    assert all(t.data_ptr() != out.data_ptr() for t in spikes)


@pytest.mark.parametrize("backend", ["reference", "fused", "auto"])
@pytest.mark.parametrize("learn", [False, True])
def test_neuron_and_conv_gradients_are_bit_identical(backend, learn):
    torch.manual_seed(0)
    x = torch.randn(3, 2, 6, 6, 4).permute(0, 1, 4, 2, 3)  # [T, B, C, H, W], channels last: non-contiguous
    x[1, 0, 2, 3, 3] = float("nan")  # NaN spikes from here on
    conv = torch.nn.Conv2d(4, 5, 3)
    lif = sf.LIF(learn_threshold=learn, learn_decay=learn, backend=backend)

    def grads(pack):
        for p in (*conv.parameters(), *lif.parameters()):
            p.grad = None
        leaf = x.clone().requires_grad_()
        with pack_spikes() if pack else nullcontext():
            s = lif(leaf).flatten(0, 1)
            assert holds_spikes(s)
            out = conv(s)
        out.nansum().backward()
        return [leaf.grad, *(p.grad for p in (*conv.parameters(), *lif.parameters()))]

    for got, want in zip(grads(True), grads(False), strict=True):
        assert_identical(got, want)


@pytest.mark.parametrize("device", DEVICES)
def test_autocast_spikes_are_packed_with_their_dtype(device):
    dtype = torch.bfloat16 if device == "cpu" else torch.float16
    torch.manual_seed(0)
    conv_in, conv_out = torch.nn.Conv2d(3, 4, 3).to(device), torch.nn.Conv2d(4, 4, 3).to(device)
    lif = sf.LIF()
    x = torch.randn(2, 3, 3, 10, 10, device=device)

    def grads(pack):
        conv_in.zero_grad()
        conv_out.zero_grad()
        with pack_spikes() if pack else nullcontext(), torch.autocast(device, dtype=dtype):
            h = conv_in(x.flatten(0, 1))
            s = lif(h.view(2, 3, *h.shape[1:]))
            assert s.dtype == dtype and holds_spikes(s.flatten(0, 1))
            loss = conv_out(s.flatten(0, 1)).float().square().mean()
        loss.backward()
        return [p.grad for p in (*conv_in.parameters(), *conv_out.parameters())]

    for got, want in zip(grads(True), grads(False), strict=True):
        assert torch.equal(got, want)


def test_empty_tensors_are_kept():
    s = mark_spikes(torch.zeros(0, 3))
    assert not holds_spikes(s)


def _packing_active() -> bool:
    return torch._C._autograd._top_saved_tensors_default_hooks(False) is not None


class _Probe(torch.nn.Module):
    """Records whether the packer is active in its forward and in the backward of its output; may raise."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(3))
        self.seen: list[tuple[str, bool]] = []
        self.fail = False

    def forward(self, x):
        self.seen.append(("forward", _packing_active()))
        if self.fail:
            raise RuntimeError("a forward that fails")
        out = x * self.weight
        out.register_hook(lambda grad: self.seen.append(("backward", _packing_active())))
        return out


def test_pack_spikes_in_is_active_in_the_module_s_forward_only():
    """Outside the forward (e.g. DDP's collectives before it and in backward) no hooks are active."""
    probe = _Probe()
    with sf.pack_spikes_in(probe):
        assert not _packing_active()
        out = probe(torch.ones(3))
        assert not _packing_active()
        out.sum().backward()
        probe.fail = True
        with pytest.raises(RuntimeError, match="a forward that fails"):
            probe(torch.ones(3))
        assert not _packing_active()  # left even though the forward raised
    probe.fail = False
    probe(torch.ones(3))  # closed: the hooks are gone
    assert probe.seen == [("forward", True), ("backward", False), ("forward", True), ("forward", False)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("n", [1, 7, 8, 9, 1000, 65537])
def test_the_compiled_codec_writes_the_planes_and_values_of_torch_operations(dtype, n):
    if packing.codec.load_codec() is None:
        pytest.skip("no C compiler")
    g = torch.Generator().manual_seed(n)
    x = (torch.rand(n, generator=g) > 0.5).to(dtype)
    x[torch.rand(n, generator=g) > 0.9] = float("nan")
    compiled, reference = packing._encode(x), packing._encode_with_torch(x)
    assert torch.equal(compiled.bits, reference.bits)
    decoded = packing._decode(compiled)
    assert decoded.dtype == dtype and decoded.shape == (n,)
    assert torch.equal(decoded.view(torch.uint8), packing._decode_with_torch(reference).view(torch.uint8))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_compiled_codec_on_two_threads(dtype, two_kernel_threads):
    if packing.codec.load_codec() is None:
        pytest.skip("no C compiler")
    n = 8 * 40000 + 5  # 40001 bytes per plane: two ranges
    g = torch.Generator().manual_seed(5)
    x = (torch.rand(n, generator=g) > 0.5).to(dtype)
    x[torch.rand(n, generator=g) > 0.9] = float("nan")
    compiled, reference = packing._encode(x), packing._encode_with_torch(x)
    assert torch.equal(compiled.bits, reference.bits)
    assert torch.equal(packing._decode(compiled).view(torch.uint8), x.view(torch.uint8))


def test_pack_spikes_in_stays_balanced_when_another_pre_hook_raises():
    probe = _Probe()

    def failing(module, args):
        raise RuntimeError("a pre-hook that fails")

    probe.register_forward_pre_hook(failing)
    with sf.pack_spikes_in(probe), warnings.catch_warnings():
        warnings.simplefilter("error")  # torch turns an exception in the forward hook into a warning
        with pytest.raises(RuntimeError, match="a pre-hook that fails"):
            probe(torch.ones(3))
        assert not _packing_active()
