"""Parameter counts against independent references: torchvision and hand arithmetic."""

import pytest
import torch
import torchvision


def n_params(module):
    return sum(p.numel() for p in module.parameters())


# --- hand arithmetic ------------------------------------------------------------------------

def conv(c_in, c_out, k, bias=False):
    return c_in * c_out * k * k + (c_out if bias else 0)


def bn(c):
    return 2 * c  # weight and bias


def fc(n_in, n_out):
    return n_in * n_out + n_out


def basic_block(c_in, c_out, stride):
    """conv3x3-BN-conv3x3-BN, plus a conv1x1-BN shortcut when the shape changes."""
    total = conv(c_in, c_out, 3) + bn(c_out) + conv(c_out, c_out, 3) + bn(c_out)
    if stride != 1 or c_in != c_out:
        total += conv(c_in, c_out, 1) + bn(c_out)
    return total


def stages(c_in, widths, depths):
    total = 0
    for i, (width, depth) in enumerate(zip(widths, depths)):
        for j in range(depth):
            total += basic_block(c_in, width, 2 if (i > 0 and j == 0) else 1)
            c_in = width
    return total


def test_resnet20_by_hand(build_on_meta):
    expected = (
        conv(3, 16, 3) + bn(16)                      # stem:      432 + 32
        + stages(16, (16, 32, 64), (3, 3, 3))        # 14016 + 51648 + 205696
        + fc(64, 10)                                 # 650
    )
    assert expected == 272_474  # ~0.27M, the genuine CIFAR ResNet-20 with 1x1-conv shortcuts
    count = n_params(build_on_meta("resnet20", num_classes=10, neuron="relu"))
    print(f"ResNet-20 (CIFAR-10): {count:,} parameters")
    assert count == expected


@pytest.mark.parametrize("stem_channels", [64, 128])
def test_resnet19_by_hand(stem_channels, build_on_meta):
    expected = (
        conv(3, stem_channels, 3) + bn(stem_channels)
        + stages(stem_channels, (128, 256, 512), (3, 3, 2))
        + fc(512, 256) + fc(256, 10)
    )
    count = n_params(build_on_meta("resnet19", num_classes=10, neuron="relu", stem_channels=stem_channels))
    print(f"ResNet-19 (stem {stem_channels}, CIFAR-10): {count:,} parameters")
    assert count == expected


def test_cifar_fast_by_hand(build_on_meta):
    expected = conv(3, 24, 3) + bn(24) + fc(256, 10)
    for c_in, width in [(24, 64), (64, 128), (128, 256)]:
        expected += conv(c_in, width, 3) + bn(width) + conv(width, width, 3) + bn(width)
    assert n_params(build_on_meta("cifar_fast", num_classes=10, neuron="relu")) == expected == 1_161_666


def test_vggsnn_by_hand(build_on_meta):
    widths = [64, 128, 256, 256, 512, 512, 512, 512]
    expected, c_in = 0, 2
    for width in widths:
        expected += conv(c_in, width, 3, bias=True) + bn(width)
        c_in = width
    expected += fc(512 * 3 * 3, 10)
    count = n_params(build_on_meta("vggsnn", num_classes=10, neuron="relu"))
    print(f"VGGSNN (DVS-CIFAR10, 2x48x48): {count:,} parameters")
    assert count == expected == 9_271_498


# --- torchvision as the reference --------------------------------------------------------------

@pytest.mark.parametrize(
    "name, options, reference",
    [
        ("resnet18", dict(stem="imagenet"), "resnet18"),
        ("resnet34", dict(stem="imagenet"), "resnet34"),
        ("spiking_resnet34", {}, "resnet34"),
        ("sew_resnet18", {}, "resnet18"),  # SEW adds only parameter-free activations
        ("sew_resnet34", {}, "resnet34"),
        ("vgg11", dict(head="imagenet"), "vgg11_bn"),
        ("vgg16", dict(head="imagenet"), "vgg16_bn"),
    ],
)
def test_imagenet_variants_match_torchvision(name, options, reference, build_on_meta):
    ours = build_on_meta(name, num_classes=1000, neuron="relu", **options)
    with torch.device("meta"):
        theirs = getattr(torchvision.models, reference)(weights=None, num_classes=1000)
    assert n_params(ours) == n_params(theirs)
    # The same tensors up to naming: compare the sorted shapes.
    assert sorted(tuple(p.shape) for p in ours.parameters()) == sorted(tuple(p.shape) for p in theirs.parameters())


def test_cifar_stem_differs_only_in_the_first_conv(build_on_meta):
    cifar = n_params(build_on_meta("resnet18", num_classes=10, neuron="relu"))
    imagenet = n_params(build_on_meta("resnet18", num_classes=10, neuron="relu", stem="imagenet"))
    assert imagenet - cifar == conv(3, 64, 7) - conv(3, 64, 3)
