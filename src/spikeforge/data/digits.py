"""The embedded demo data set: UCI optical-recognition handwritten digits.

1,797 grey images of 8x8 pixels with integer values 0..16, ten classes
(Alpaydin & Kaynak 1998; the copy scikit-learn ships). The data live inside the
package (``embedded/digits.npz``, about 45 kB), so examples, the smoke test and
CI train on real data with no download and no network.

Split (fixed, stratified, no random numbers involved): the samples of each
class are taken in file order and every fifth one (the 5th, 10th, 15th, ... of
that class) goes to the test set, the rest to the training set. That is
1,442 train / 355 test samples (80.2% / 19.8%), 34..36 test samples per class,
identical on every machine and every version of torch and numpy.

Images are scaled to [0, 1] and, by default, upsampled to 16x16 with bilinear
interpolation (``align_corners=False``). A factor of two makes every output
pixel an exact dyadic mix (weights 1/16, 3/16, 9/16) of input values k/16, so
the float tensors are bit-identical everywhere. 16x16 leaves room for two
conv + pool stages; a small spiking CNN reaches >= 95% test accuracy on it in
a few epochs on one CPU core.

``transform`` runs on each item's image (the ``float32 [1, size, size]`` tensor
in [0, 1], after the upsampling) and ``target_transform`` on its int label;
both take the specs of :mod:`spikeforge.data.transforms` (e.g. ``{name:
cutout, size: 4}``), as the vision sets do.
"""

from __future__ import annotations

import functools
import hashlib
import io
from collections.abc import Callable
from importlib import resources

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import Dataset

from .errors import DatasetCorruptError, DatasetNotFoundError
from .vision import with_user_transforms

__all__ = ["Digits", "digits", "digits_split", "DIGITS_NUM_SAMPLES", "DIGITS_TEST_EVERY"]

DIGITS_NUM_SAMPLES = 1797
#: Every ``DIGITS_TEST_EVERY``-th sample of each class (in file order) is a test sample.
DIGITS_TEST_EVERY = 5
_FILE = "embedded/digits.npz"
# sha256 of images.tobytes() + labels.tobytes() (uint8 [1797, 8, 8] and uint8 [1797]).
_SHA256 = "87ff0c9e40dc7e2c0e34e7257799c2e3f3aec1a016363bb11cad869ec428a826"


@functools.lru_cache(maxsize=1)
def _load_raw() -> tuple[np.ndarray, np.ndarray]:
    """Read and verify the embedded file; returns read-only uint8 images and labels."""
    ref = resources.files(__package__).joinpath(_FILE)
    try:
        blob = ref.read_bytes()
    except (FileNotFoundError, NotADirectoryError) as err:
        raise DatasetNotFoundError(
            f"embedded digits data not found: expected {ref} inside the spikeforge "
            "package; reinstall spikeforge", path=str(ref)) from err
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
            images, labels = npz["images"], npz["labels"]
    except Exception as err:  # zip, zlib and key errors all mean the same thing here
        raise DatasetCorruptError(
            f"embedded digits data {ref} cannot be read ({type(err).__name__}); "
            "reinstall spikeforge", path=str(ref)) from err
    digest = hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()
    if (images.dtype != np.uint8 or labels.dtype != np.uint8
            or images.shape != (DIGITS_NUM_SAMPLES, 8, 8) or digest != _SHA256):
        raise DatasetCorruptError(
            f"embedded digits data {ref} fails its checksum (expected uint8 images "
            f"[{DIGITS_NUM_SAMPLES}, 8, 8] and labels with sha256 {_SHA256[:12]}...); "
            "reinstall spikeforge", path=str(ref))
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def digits_split(train: bool) -> np.ndarray:
    """Indices (into the 1,797 samples, ascending) of the training or test split."""
    _, labels = _load_raw()
    test = np.zeros(len(labels), dtype=bool)
    for c in range(10):
        members = np.flatnonzero(labels == c)
        test[members[DIGITS_TEST_EVERY - 1 :: DIGITS_TEST_EVERY]] = True
    return np.flatnonzero(~test if train else test)


class Digits(Dataset):
    """The embedded digits split as float images ``[1, size, size]`` in [0, 1].

    Items are ``(image, label)`` with an int label, like torchvision data sets.
    ``data`` ([N, 1, size, size] float32), ``targets`` ([N] int64) and
    ``indices`` (positions in the original 1,797-sample file) are public.
    """

    classes = tuple(str(d) for d in range(10))

    def __init__(self, train: bool = True, size: int = 16,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 target_transform: Callable[[int], object] | None = None) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"digits: size must be a positive int (8 = original), got {size!r}")
        images, labels = _load_raw()
        idx = digits_split(train)
        x = torch.from_numpy(images[idx].astype(np.float32)).unsqueeze(1) / 16.0
        if size != 8:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        self.train = train
        self.size = size
        self.transform, self.target_transform = with_user_transforms(None, transform, target_transform)
        self.indices = idx
        self.data = x.contiguous()
        self.targets = torch.from_numpy(labels[idx].astype(np.int64))

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, object]:
        x = self.data[i]
        if self.transform is not None:
            x = self.transform(x)
        y = int(self.targets[i])
        return x, y if self.target_transform is None else self.target_transform(y)

    def __repr__(self) -> str:
        split = "train" if self.train else "test"
        return f"Digits(split={split}, samples={len(self)}, shape=[1, {self.size}, {self.size}])"


def digits(train: bool = True, root: object = None, size: int = 16,
           transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
           download: bool = False, target_transform: Callable[[int], object] | None = None) -> Digits:
    """The embedded handwritten-digits split (see the module doc for the split).

    ``root`` and ``download`` are accepted so that every data set builder takes
    the same common arguments (a recipe's data root and download flag); both
    are ignored, the digits always come from the copy inside the package.
    ``size`` is the output side length: 16 (default) upsamples 8x8 -> 16x16
    bilinearly, 8 keeps the original grid.
    """
    del root, download
    return Digits(train=train, size=size, transform=transform, target_transform=target_transform)
