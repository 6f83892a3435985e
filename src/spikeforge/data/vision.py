"""Static-image data sets through torchvision: CIFAR-10/100 and ImageNet.

The transforms are the ones the reproduced papers train with:

- CIFAR train: ``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip``, optional
  ``AutoAugment`` (torchvision's CIFAR10 policy, also used for CIFAR-100 as in
  the QCFS/SRP code), ``ToTensor``, ``Normalize`` and optional ``Cutout`` (one
  square hole, applied to the normalised tensor, so the hole is the mean
  colour). CIFAR test: ``ToTensor`` + ``Normalize``.
- ImageNet train: ``RandomResizedCrop(224)`` + flip; val: ``Resize(256)`` +
  ``CenterCrop(224)``; ImageNet normalisation.

``transform=`` runs after all of that, on every item: on the normalised
``float32`` tensor (``[3, 32, 32]`` for CIFAR, after Cutout when it is on;
``[3, 224, 224]`` for ImageNet), in both splits. ``target_transform=`` runs on
each int label. Both take the specs of :mod:`spikeforge.data.transforms` (a
callable, a list of them, or a name of :data:`IMAGE_TRANSFORMS` such as
``{name: cutout, size: 8}``), so a recipe can name them in ``data.options``.
``in_memory=True`` refuses them (it prepares whole batches, not items).

Nothing is downloaded unless ``download=True``. A missing, incomplete or
corrupt set raises :class:`DatasetNotFoundError` (or its subclass
:class:`DatasetCorruptError`) with a one-line message naming the folder and the
files expected there. A CIFAR root that holds only the original archive
(``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz``) is extracted once, in
place and atomically, before loading.

torchvision is imported when a data set is built, not when this module is.
"""

from __future__ import annotations

import gzip
import os
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import DatasetCorruptError, DatasetNotFoundError
from .memory import MemoryImageSet
from .transforms import Compose, build_transform

__all__ = [
    "CIFAR10_MEAN", "CIFAR10_STD", "CIFAR100_MEAN", "CIFAR100_STD",
    "IMAGENET_MEAN", "IMAGENET_STD",
    "Cutout", "IMAGE_TRANSFORMS", "cifar_transform", "imagenet_transform",
    "cifar10", "cifar100", "imagenet",
]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR100_STD = (0.2675, 0.2565, 0.2761)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Cutout:
    """Zero one ``size`` x ``size`` square of a tensor image ``[..., H, W]``.

    The square's centre is uniform over the image and the square is clipped at
    the borders (DeVries & Taylor 2017), so near an edge less than ``size**2``
    pixels are zeroed. The input is not modified; a copy is returned. Random
    numbers come from torch (``generator`` if given), which DataLoader workers
    seed independently.
    """

    def __init__(self, size: int, generator: torch.Generator | None = None) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"Cutout size must be a non-negative int, got {size!r}")
        self.size = size
        self.generator = generator

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if not isinstance(img, torch.Tensor) or img.dim() < 2:
            raise TypeError("Cutout expects a tensor image [..., H, W]; put it after ToTensor")
        if self.size == 0:
            return img
        h, w = img.shape[-2:]
        cy = int(torch.randint(0, h, (1,), generator=self.generator))
        cx = int(torch.randint(0, w, (1,), generator=self.generator))
        y0, x0 = cy - self.size // 2, cx - self.size // 2
        out = img.clone()
        out[..., max(y0, 0) : max(y0 + self.size, 0), max(x0, 0) : max(x0 + self.size, 0)] = 0
        return out

    def __repr__(self) -> str:
        return f"Cutout(size={self.size})"


#: Image transforms (tensor ``[C, H, W]`` -> tensor) a recipe can name as ``transform``.
IMAGE_TRANSFORMS: dict[str, Callable[..., Callable]] = {"cutout": Cutout}


def with_user_transforms(pipeline: Callable | None, transform, target_transform) -> tuple[Callable | None,
                                                                                          Callable | None]:
    """``(pipeline then transform, target_transform)`` from the user's specs (:mod:`.transforms`,
    names from :data:`IMAGE_TRANSFORMS`); ValueError naming the argument for a bad spec."""
    user = build_transform(transform, IMAGE_TRANSFORMS, "transform")
    if pipeline is not None:
        user = pipeline if user is None else Compose([pipeline, user])
    return user, build_transform(target_transform, {}, "target_transform")


def cifar_transform(train: bool, mean: tuple[float, ...], std: tuple[float, ...],
                    augment: bool = True, autoaugment: bool = False, cutout: int = 0):
    """The CIFAR transform pipeline (see the module doc)."""
    from torchvision import transforms as T

    steps: list[Any] = []
    if train and augment:
        steps += [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()]
        if autoaugment:
            steps.append(T.AutoAugment(T.AutoAugmentPolicy.CIFAR10))
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    if train and augment and cutout:
        steps.append(Cutout(cutout))
    return T.Compose(steps)


def imagenet_transform(train: bool, augment: bool = True):
    """ImageNet: RandomResizedCrop(224)+flip for training, Resize(256)+CenterCrop(224) else."""
    from torchvision import transforms as T

    if train and augment:
        steps: list[Any] = [T.RandomResizedCrop(224), T.RandomHorizontalFlip()]
    else:
        steps = [T.Resize(256), T.CenterCrop(224)]
    return T.Compose(steps + [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


# ---------------------------------------------------------------------------
# CIFAR


@dataclass(frozen=True)
class _CifarSpec:
    title: str          # "CIFAR-10"
    tv_class: str       # torchvision class name
    folder: str         # folder inside root
    archive: str        # original archive name
    files: tuple[str, ...]
    files_brief: str    # the files, compactly, for messages
    mean: tuple[float, ...]
    std: tuple[float, ...]


_CIFAR10 = _CifarSpec(
    "CIFAR-10", "CIFAR10", "cifar-10-batches-py", "cifar-10-python.tar.gz",
    tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta"),
    "{data_batch_1..5,test_batch,batches.meta}", CIFAR10_MEAN, CIFAR10_STD)
_CIFAR100 = _CifarSpec(
    "CIFAR-100", "CIFAR100", "cifar-100-python", "cifar-100-python.tar.gz",
    ("train", "test", "meta"), "{train,test,meta}", CIFAR100_MEAN, CIFAR100_STD)


def _resolve_root(root: str | os.PathLike | None, title: str) -> Path:
    if root is None:
        raise ValueError(f"{title} needs a data root (a folder); pass root=... or --data-root")
    return Path(root).expanduser()


def _extract_archive(spec: _CifarSpec, root: Path) -> None:
    """Extract ``root/spec.archive`` to ``root/spec.folder`` atomically.

    The archive is unpacked into a fresh temporary folder next to the target and
    the data folder is renamed into place, so a reader never sees a half
    extracted folder and concurrent extractions cannot clash: the first rename
    wins and the others discard their copy.
    """
    archive, target = root / spec.archive, root / spec.folder
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{spec.folder}.extract-", dir=root))
    except OSError as err:
        raise DatasetNotFoundError(
            f"{spec.title}: cannot extract {archive} in place ({err.strerror or err}); extract it "
            f"yourself so that {target}/{spec.files_brief} exist", path=root) from err
    try:
        try:
            # One streaming pass: a gzip stream cannot seek back cheaply.
            with tarfile.open(archive, "r|gz") as tar:
                for member in tar:
                    if member.name != spec.folder and not member.name.startswith(spec.folder + "/"):
                        continue
                    if not (member.isfile() or member.isdir()) or ".." in Path(member.name).parts:
                        raise tarfile.TarError(f"unexpected member {member.name!r}")
                    if hasattr(tarfile, "data_filter"):
                        tar.extract(member, tmp, filter="data")
                    else:  # Python without extraction filters; the member was checked above
                        tar.extract(member, tmp)
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as err:
            raise DatasetCorruptError(
                f"{spec.title}: archive {archive} is corrupt ({type(err).__name__}: {err}); "
                f"replace it with the original {spec.archive} or pass download=True",
                path=archive) from err
        except OSError as err:  # permissions, disk full ...
            raise DatasetNotFoundError(
                f"{spec.title}: cannot extract {archive} into {root} ({type(err).__name__}: {err}); "
                f"extract it yourself so that {target}/{spec.files_brief} exist", path=root) from err
        missing = [f for f in spec.files if not (tmp / spec.folder / f).is_file()]
        if missing:
            raise DatasetCorruptError(
                f"{spec.title}: archive {archive} does not contain {spec.folder}/{spec.files_brief} "
                f"(missing {', '.join(missing)}); replace it with the original {spec.archive}",
                path=archive)
        try:
            os.rename(tmp / spec.folder, target)
        except OSError as err:
            if not target.is_dir():  # not a lost race with another extraction
                raise DatasetNotFoundError(
                    f"{spec.title}: cannot move the extracted {spec.folder} into {root} "
                    f"({type(err).__name__}: {err})", path=root) from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _locate_cifar(spec: _CifarSpec, root: Path) -> Path:
    """Return the root torchvision should load from; extract the archive if needed."""
    # Accept the data folder itself as root (".../cifar-10-batches-py").
    if root.name == spec.folder and not (root / spec.folder).exists() and (root / spec.files[0]).is_file():
        root = root.parent
    folder = root / spec.folder
    if not folder.exists() and (root / spec.archive).is_file():
        _extract_archive(spec, root)
    missing = [f for f in spec.files if not (folder / f).is_file()]
    if len(missing) == len(spec.files):
        raise DatasetNotFoundError(
            f"{spec.title} not found in {root}: expected {folder}/{spec.files_brief} "
            f"(or the archive {root / spec.archive}); pass download=True or point --data-root at it",
            path=root)
    if missing:
        raise DatasetNotFoundError(
            f"{spec.title} incomplete in {folder}: missing {', '.join(missing)} of "
            f"{spec.files_brief}; pass download=True or restore the files", path=folder)
    return root


def _diagnose_corrupt(spec: _CifarSpec, tv_cls: type, root: Path, err: BaseException) -> DatasetCorruptError:
    """Name the file that fails torchvision's md5 check."""
    from torchvision.datasets.utils import check_integrity

    folder = root / spec.folder
    if not folder.is_dir():  # e.g. a downloaded archive failed its md5 before extraction
        return DatasetCorruptError(f"{spec.title} in {root}: {type(err).__name__}: {err}; delete "
                                   f"{root / spec.archive} and try again", path=root)
    expected = list(tv_cls.train_list) + list(tv_cls.test_list) + [[tv_cls.meta["filename"], tv_cls.meta["md5"]]]
    bad = [name for name, md5 in expected if not check_integrity(str(folder / name), md5)]
    what = (f"{', '.join(str(folder / b) for b in bad)} fail{'s' if len(bad) == 1 else ''} the md5 check"
            if bad else f"its files cannot be read ({type(err).__name__}: {err})")
    hint = (f"delete {folder} and re-extract {root / spec.archive}" if (root / spec.archive).is_file()
            else "delete the folder and pass download=True")
    return DatasetCorruptError(f"{spec.title} in {folder} is corrupt: {what}; {hint}", path=folder)


def _cifar(spec: _CifarSpec, root, train: bool, augment: bool, autoaugment: bool, cutout: int, download: bool,
           in_memory: bool = False, transform=None, target_transform=None):
    if in_memory:
        if transform is not None or target_transform is not None or autoaugment or cutout:
            raise ValueError(f"{spec.title}: in_memory=True does crop and flip only, on whole batches; it cannot "
                             "be combined with transform, target_transform, autoaugment or cutout")
        tv_set = _cifar(spec, root, train, False, False, 0, download)
        return MemoryImageSet(torch.from_numpy(tv_set.data), tv_set.targets, spec.mean, spec.std,
                              augment=train and augment, channels_last_input=True, classes=tv_set.classes)
    import torchvision.datasets as tvd

    transform, target_transform = with_user_transforms(
        cifar_transform(train, spec.mean, spec.std, augment, autoaugment, cutout), transform, target_transform)
    root = _resolve_root(root, spec.title)
    tv_cls = getattr(tvd, spec.tv_class)
    if download:
        try:
            root.mkdir(parents=True, exist_ok=True)
            return tv_cls(str(root), train=train, transform=transform, target_transform=target_transform,
                          download=True)
        except DatasetNotFoundError:
            raise
        except OSError as err:  # URLError, HTTP errors, disk full ...
            raise DatasetNotFoundError(
                f"{spec.title}: download into {root} failed ({type(err).__name__}: {err}); "
                f"put {spec.archive} or {spec.folder}/ there yourself", path=root) from err
        except RuntimeError as err:  # torchvision: downloaded file fails its md5
            raise _diagnose_corrupt(spec, tv_cls, root, err) from err
    root = _locate_cifar(spec, root)
    try:
        return tv_cls(str(root), train=train, transform=transform, target_transform=target_transform, download=False)
    except Exception as err:  # noqa: BLE001 - md5 RuntimeError, pickle/EOF errors: one cause
        raise _diagnose_corrupt(spec, tv_cls, root, err) from err


def cifar10(root, train: bool = True, augment: bool = True, autoaugment: bool = False,
            cutout: int = 0, download: bool = False, in_memory: bool = False, *, transform=None,
            target_transform=None):
    """CIFAR-10 as a ``torchvision.datasets.CIFAR10`` with the standard transforms.

    ``root`` holds ``cifar-10-batches-py/`` (or the original
    ``cifar-10-python.tar.gz``, extracted once in place). ``augment`` switches
    the training augmentation (crop + flip, plus ``autoaugment`` and a
    ``cutout`` hole of that many pixels); the test split is never augmented.
    ``in_memory=True`` returns a :class:`~spikeforge.data.memory.MemoryImageSet`
    instead: the same crop, flip and normalisation done on whole batches on the
    training device (no PIL, no worker processes). ``transform`` (on the
    normalised tensor, after Cutout) and ``target_transform``: see the module doc.
    """
    return _cifar(_CIFAR10, root, train, augment, autoaugment, cutout, download, in_memory, transform,
                  target_transform)


def cifar100(root, train: bool = True, augment: bool = True, autoaugment: bool = False,
             cutout: int = 0, download: bool = False, in_memory: bool = False, *, transform=None,
             target_transform=None):
    """CIFAR-100 as a ``torchvision.datasets.CIFAR100``; same options as :func:`cifar10`."""
    return _cifar(_CIFAR100, root, train, augment, autoaugment, cutout, download, in_memory, transform,
                  target_transform)


# ---------------------------------------------------------------------------
# ImageNet


def imagenet(root, train: bool = True, augment: bool = True, download: bool = False, *, transform=None,
             target_transform=None):
    """ImageNet-1k through ``torchvision.datasets.ImageFolder`` on ``root/train`` or ``root/val``.

    Both splits must be in ImageFolder layout (one sub-folder per class, e.g.
    ``val/n01440764/ILSVRC2012_val_00000293.JPEG``). ImageNet cannot be
    downloaded automatically; ``download=True`` is refused with a ValueError.
    ``transform`` (on the normalised ``[3, 224, 224]`` tensor) and
    ``target_transform``: see the module doc.
    """
    from torchvision.datasets import ImageFolder

    transform, target_transform = with_user_transforms(imagenet_transform(train, augment), transform,
                                                       target_transform)

    if download:
        raise ValueError("ImageNet cannot be downloaded automatically (its licence needs a "
                         "sign-in at image-net.org); prepare root/train and root/val and pass "
                         "download=False")
    root = _resolve_root(root, "ImageNet")
    split = root / ("train" if train else "val")
    expect = (f"expected {split}/<class>/<image>.JPEG (ImageFolder layout: one folder per "
              "class, val sorted into class folders too); ImageNet is not downloaded, "
              "point --data-root at it")
    if not split.is_dir():
        raise DatasetNotFoundError(f"ImageNet not found in {root}: {expect}", path=root)
    try:
        return ImageFolder(str(split), transform=transform, target_transform=target_transform)
    except FileNotFoundError as err:  # no class folders / no images
        raise DatasetNotFoundError(f"ImageNet: no images in {split}: {expect}", path=split) from err
