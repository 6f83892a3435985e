"""Vision readers without the real data: errors, archive handling, Cutout, registry, ImageFolder."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest
import torch

from spikeforge.data import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    Cutout,
    DatasetCorruptError,
    DatasetNotFoundError,
    available_datasets,
    build_dataset,
    cifar10,
    cifar100,
    cifar_transform,
    dataset_info,
    imagenet,
)
from spikeforge.data.vision import _CIFAR10, _extract_archive

CIFAR10_FILES = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
                 "test_batch", "batches.meta"]


def _one_line(err: BaseException) -> str:
    msg = str(err)
    assert msg and "\n" not in msg, msg
    return msg


def _leftovers(root: Path) -> list[str]:
    return [p.name for p in root.iterdir() if p.name.startswith(".")]


# ----------------------------------------------------------------------------- errors


def test_error_type_is_a_file_not_found_error():
    err = DatasetNotFoundError("x not found in /a\nb", path="/a")
    assert isinstance(err, FileNotFoundError) and issubclass(DatasetCorruptError, DatasetNotFoundError)
    assert str(err) == "x not found in /a b" and err.path == "/a"


@pytest.mark.parametrize("train", [True, False])
def test_missing_cifar10_names_folder_and_files(tmp_path, train):
    root = tmp_path / "nowhere"
    with pytest.raises(DatasetNotFoundError) as info:
        cifar10(root, train=train)
    msg = _one_line(info.value)
    assert msg.startswith(f"CIFAR-10 not found in {root}:")
    assert f"{root}/cifar-10-batches-py/{{data_batch_1..5,test_batch,batches.meta}}" in msg
    assert "download=True" in msg and "--data-root" in msg
    assert not root.exists()  # nothing created, nothing downloaded


def test_missing_cifar100_names_its_files(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        cifar100(tmp_path)
    msg = _one_line(info.value)
    assert "CIFAR-100" in msg and f"{tmp_path}/cifar-100-python/{{train,test,meta}}" in msg


def test_incomplete_cifar10_lists_missing_files(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in CIFAR10_FILES[:-2]:
        (folder / name).write_bytes(b"x")
    with pytest.raises(DatasetNotFoundError) as info:
        cifar10(tmp_path)
    msg = _one_line(info.value)
    assert str(folder) in msg and "test_batch, batches.meta" in msg


def test_corrupt_cifar10_files_give_one_line_error(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in CIFAR10_FILES:
        (folder / name).write_bytes(b"\x80\x04 not a pickle")
    with pytest.raises(DatasetCorruptError) as info:
        cifar10(tmp_path, train=False)
    msg = _one_line(info.value)
    assert f"CIFAR-10 in {folder} is corrupt" in msg
    assert str(folder / "data_batch_1") in msg and "md5" in msg


def _write_archive(path: Path, files: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))


def test_archive_is_extracted_once_in_place(tmp_path):
    _write_archive(tmp_path / "cifar-10-python.tar.gz",
                   {f"cifar-10-batches-py/{n}": n.encode() for n in CIFAR10_FILES}
                   | {"cifar-10-batches-py/readme.html": b"<html/>"})
    # The dummy files are extracted, then fail torchvision's md5 check: clear error.
    with pytest.raises(DatasetCorruptError) as info:
        cifar10(tmp_path)
    msg = _one_line(info.value)
    assert "re-extract" in msg and str(tmp_path / "cifar-10-python.tar.gz") in msg
    folder = tmp_path / "cifar-10-batches-py"
    assert sorted(os.listdir(folder)) == sorted(CIFAR10_FILES + ["readme.html"])
    assert (folder / "test_batch").read_bytes() == b"test_batch"
    assert _leftovers(tmp_path) == []
    # An existing folder is never re-extracted (and a lost race is not an error).
    (folder / "test_batch").write_bytes(b"mine")
    with pytest.raises(DatasetCorruptError):
        cifar10(tmp_path)
    _extract_archive(_CIFAR10, tmp_path)
    assert (folder / "test_batch").read_bytes() == b"mine" and _leftovers(tmp_path) == []


def test_corrupt_archive(tmp_path):
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"\x1f\x8b\x08\x00 truncated gzip")
    with pytest.raises(DatasetCorruptError) as info:
        cifar10(tmp_path)
    msg = _one_line(info.value)
    assert "archive" in msg and "corrupt" in msg
    assert os.listdir(tmp_path) == ["cifar-10-python.tar.gz"]  # no half-extracted folder


def test_archive_without_the_data_folder(tmp_path):
    _write_archive(tmp_path / "cifar-10-python.tar.gz", {"something/else": b"1"})
    with pytest.raises(DatasetCorruptError, match="does not contain cifar-10-batches-py"):
        cifar10(tmp_path)
    assert os.listdir(tmp_path) == ["cifar-10-python.tar.gz"]


def test_archive_with_unsafe_member_is_refused(tmp_path):
    _write_archive(tmp_path / "cifar-10-python.tar.gz", {"cifar-10-batches-py/../../evil": b"1"})
    with pytest.raises(DatasetCorruptError):
        cifar10(tmp_path)
    assert not (tmp_path.parent / "evil").exists()


def test_root_is_required():
    with pytest.raises(ValueError, match="data root"):
        cifar10(None)


# ----------------------------------------------------------------------------- transforms


def test_cutout_zeroes_one_square():
    gen = torch.Generator().manual_seed(0)
    img = torch.full((3, 32, 32), 2.0)
    cut = Cutout(8, generator=gen)
    full = 0
    for _ in range(300):
        out = cut(img)
        zero = out == 0
        assert torch.equal(zero[0], zero[1]) and torch.equal(zero[0], zero[2])  # all channels
        rows = zero[0].any(1).nonzero().flatten()
        cols = zero[0].any(0).nonzero().flatten()
        h, w = len(rows), len(cols)
        assert 1 <= h <= 8 and 1 <= w <= 8
        # a contiguous rectangle: exactly h*w zeros inside its bounding box
        assert int(zero[0].sum()) == h * w
        assert int(rows[-1] - rows[0]) + 1 == h and int(cols[-1] - cols[0]) + 1 == w
        if h < 8:  # clipped by the top or bottom border
            assert rows[0] == 0 or rows[-1] == 31
        if w < 8:
            assert cols[0] == 0 or cols[-1] == 31
        full += int(zero[0].sum()) == 64
        assert torch.all(out[~zero] == 2.0)
    assert full > 100  # most holes lie fully inside a 32x32 image
    assert torch.all(img == 2.0)  # input untouched


def test_cutout_odd_size_and_zero():
    gen = torch.Generator().manual_seed(1)
    img = torch.ones(1, 64, 64)
    sizes = {int((Cutout(5, generator=gen)(img) == 0).sum()) for _ in range(50)}
    assert 25 in sizes and max(sizes) == 25
    assert Cutout(0)(img) is img
    with pytest.raises(ValueError):
        Cutout(-1)
    with pytest.raises(TypeError):
        Cutout(4)([[1.0]])


def test_cifar_transform_pipelines():
    names = lambda t: [type(s).__name__ for s in t.transforms]  # noqa: E731
    train = cifar_transform(True, CIFAR10_MEAN, CIFAR10_STD, autoaugment=True, cutout=16)
    assert names(train) == ["RandomCrop", "RandomHorizontalFlip", "AutoAugment", "ToTensor",
                             "Normalize", "Cutout"]
    assert train.transforms[0].padding == 4 and train.transforms[-1].size == 16
    assert names(cifar_transform(True, CIFAR10_MEAN, CIFAR10_STD)) == [
        "RandomCrop", "RandomHorizontalFlip", "ToTensor", "Normalize"]
    for t in (cifar_transform(False, CIFAR10_MEAN, CIFAR10_STD, autoaugment=True, cutout=16),
              cifar_transform(True, CIFAR10_MEAN, CIFAR10_STD, augment=False, cutout=16)):
        assert names(t) == ["ToTensor", "Normalize"]


# ----------------------------------------------------------------------------- registry


def test_registry_names_and_errors():
    assert available_datasets() == ["cifar10", "cifar100", "cifar10dvs", "digits", "dvsgesture", "imagenet", "mvsec",
                                    "nmnist"]
    assert dataset_info("CIFAR-100").num_classes == 100
    assert dataset_info("cifar_10").in_channels == 3
    assert set(dataset_info("cifar10").options) == {"augment", "autoaugment", "cutout", "download", "in_memory",
                                                    "transform", "target_transform"}
    with pytest.raises(ValueError) as info:
        build_dataset("mnist", "/data")
    msg = _one_line(info.value)
    assert "mnist" in msg and "cifar10, cifar100, cifar10dvs, digits, dvsgesture, imagenet, mvsec, nmnist" in msg
    with pytest.raises(ValueError, match="no option 'cutout'; options: augment, download"):
        build_dataset("imagenet", "/data", train=True, cutout=16)
    with pytest.raises(ValueError, match="cannot be downloaded"):
        build_dataset("imagenet", "/data", train=True, download=True)
    # the common arguments a recipe passes to every data set are accepted by all
    assert all({"download"} <= set(dataset_info(n).options) for n in available_datasets())
    assert len(build_dataset("digits", "/data", train=False, download=True)) == 355
    with pytest.raises(DatasetNotFoundError):
        build_dataset("cifar10", "/no/such/folder", train=False)


# ----------------------------------------------------------------------------- ImageNet layout


def _image_folder(root: Path, split: str) -> None:
    from PIL import Image

    for c, colour in enumerate([(255, 0, 0), (0, 0, 255)]):
        d = root / split / f"n0000000{c}"
        d.mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (300 + 20 * i, 260), colour).save(d / f"img_{i}.JPEG")


def test_imagenet_image_folder(tmp_path):
    _image_folder(tmp_path, "train")
    _image_folder(tmp_path, "val")
    train, val = imagenet(tmp_path, train=True), imagenet(tmp_path, train=False)
    assert len(train) == len(val) == 4 and train.classes == ["n00000000", "n00000001"]
    x, y = train[3]
    assert x.shape == (3, 224, 224) and y == 1
    a, b = val[0][0], val[0][0]
    assert a.shape == (3, 224, 224) and torch.equal(a, b)
    # pure red, ImageNet-normalised
    assert torch.allclose(a[:, 100, 100], torch.tensor([(1 - 0.485) / 0.229, -0.456 / 0.224, -0.406 / 0.225]),
                          atol=0.05)


def test_imagenet_missing_and_empty(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        imagenet(tmp_path, train=False)
    msg = _one_line(info.value)
    assert f"ImageNet not found in {tmp_path}" in msg and f"{tmp_path}/val/<class>/" in msg
    (tmp_path / "train").mkdir()
    with pytest.raises(DatasetNotFoundError) as info:
        imagenet(tmp_path, train=True)
    assert f"no images in {tmp_path}/train" in _one_line(info.value)


# ----------------------------------------------------------------------------- transform / target_transform


def test_imagenet_transform_runs_on_the_normalised_tensor(tmp_path):
    _image_folder(tmp_path, "val")
    val = imagenet(tmp_path, train=False, transform=lambda x: 2 * x, target_transform=lambda y: y + 100)
    red = torch.tensor([(1 - 0.485) / 0.229, -0.456 / 0.224, -0.406 / 0.225])  # pure red, ImageNet-normalised
    for i, want in enumerate([0, 0, 1, 1]):
        x, y = val[i]
        assert x.shape == (3, 224, 224) and y == want + 100
    assert torch.allclose(val[0][0][:, 100, 100], 2 * red, atol=0.1)
    cut = build_dataset("imagenet", tmp_path, train=False, transform={"name": "cutout", "size": 450})
    assert not cut[0][0].any()  # a hole covering the whole image, zeroed after the normalisation


def test_bad_transform_specs_are_refused_before_the_data_is_looked_for(tmp_path):
    missing = tmp_path / "nowhere"
    for name in ("cifar10", "cifar100", "imagenet"):
        with pytest.raises(ValueError) as info:
            build_dataset(name, missing, train=True, transform="cutot")
        assert _one_line(info.value) == ("transform must be a callable, one of cutout, {name: ..., <options>} or a "
                                         "list of these; got 'cutot'")
        with pytest.raises(ValueError, match=r"^target_transform\[1\] must be a callable or a list of callables; "
                                             "got 'onehot'$"):
            build_dataset(name, missing, train=False, target_transform=[int, "onehot"])
    with pytest.raises(ValueError, match="transform: cutout .*unexpected keyword argument 'side'"):
        cifar10(missing, transform={"name": "cutout", "side": 8})
    with pytest.raises(ValueError, match="in_memory=True .* cannot be combined with transform, target_transform"):
        cifar10(missing, in_memory=True, target_transform=int)


def test_named_and_listed_transforms_follow_the_sets_pipeline(tmp_path):
    _image_folder(tmp_path, "train")
    listed = imagenet(tmp_path, train=True, transform=[{"name": "cutout", "size": 4}, torch.neg])
    own, user = listed.transform.transforms
    assert [type(s).__name__ for s in own.transforms][-1] == "Normalize"
    assert isinstance(user.transforms[0], Cutout) and user.transforms[0].size == 4 and user.transforms[1] is torch.neg
    plain = imagenet(tmp_path, train=True).transform  # without one: the set's own pipeline, unwrapped
    assert [type(s).__name__ for s in plain.transforms] == [type(s).__name__ for s in own.transforms]
