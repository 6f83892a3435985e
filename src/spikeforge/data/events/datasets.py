"""CIFAR10-DVS, N-MNIST and DVS128 Gesture as frame-sequence data sets ``(float32 [T, 2, H, W], label)``.

Batch them time-first for a model with the set's ``loader`` (a plain DataLoader
stacks ``[B, T, ...]``, which a model would read with batch and time swapped)::

    train = cifar10dvs("~/data/CIFAR10-DVS", train=True)
    for frames, labels in train.loader(batch_size=32, shuffle=True):   # frames [10, 32, 2, 48, 48]
        logits = net(frames)                                           # [T, B, K]

Automatic download is not implemented: ``download=True`` is refused with a
ValueError, and ``root`` must hold the extracted files in the layout each
class documents. A
missing set raises :class:`~spikeforge.data.DatasetNotFoundError`; a corrupt
recording raises :class:`~spikeforge.data.events.EventFileError` naming the
file and the byte offset. Frames are integrated on first use and cached (see
:mod:`.cache`); ``cache_dir`` picks the cache folder.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import DatasetNotFoundError
from .aedat2 import DVS128_SIZE, read_aedat2
from .aedat3 import read_aedat3, read_gesture_labels
from .arrays import EventFileError
from .atis import NMNIST_SIZE, read_atis_bin
from .augment import FlipRoll
from .frameset import EventFrames, FrameSettings, Recording

__all__ = [
    "CIFAR10DVS", "NMNIST", "DVSGesture", "cifar10dvs", "nmnist", "dvs_gesture",
    "CIFAR10DVS_CLASSES", "GESTURE_CLASSES", "GESTURE_TEST_USERS",
]

CIFAR10DVS_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
#: The DVS128 Gesture classes 1-11 of the label CSVs, in order (labels 0-10 here).
GESTURE_CLASSES = ("hand_clapping", "right_hand_wave", "left_hand_wave", "right_arm_clockwise",
                   "right_arm_counter_clockwise", "left_arm_clockwise", "left_arm_counter_clockwise",
                   "arm_roll", "air_drums", "air_guitar", "other_gestures")
#: Users 24-29 are the test set, users 1-23 the training set (the authors' trials_to_test/train split).
GESTURE_TEST_USERS = range(24, 30)

_TRAILING_INDEX = re.compile(r"(\d+)$")


def _no_download(title: str, download: bool) -> None:
    if download:
        raise ValueError(f"{title} cannot be downloaded automatically; download and extract it yourself "
                         "and point root (--data-root) at it")


def _root(root, title: str) -> Path:
    if root is None:
        raise ValueError(f"{title} needs a data root (a folder); pass root=... or --data-root")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetNotFoundError(f"{title} not found: {root} is not a folder", path=root)
    return root


# ---------------------------------------------------------------------------
# CIFAR10-DVS


def cifar10dvs_split(root: Path) -> tuple[list[Recording], list[Recording]]:
    """(train, test) recordings: per class, the first 90% by file index train, the rest test (900/100)."""
    expected = (f"expected the ten class folders {{{','.join(CIFAR10DVS_CLASSES)}}}/ each holding "
                "cifar10_<class>_<index>.aedat (AEDAT 2.0, 1,000 per class); CIFAR10-DVS is not "
                "downloaded automatically, point --data-root at it")
    missing = [c for c in CIFAR10DVS_CLASSES if not (root / c).is_dir() or not any((root / c).glob("*.aedat"))]
    if missing:
        raise DatasetNotFoundError(f"CIFAR10-DVS not found in {root} (no .aedat files for "
                                   f"{', '.join(missing)}): {expected}", path=root)
    train, test = [], []
    for label, name in enumerate(CIFAR10DVS_CLASSES):
        files = []
        for path in (root / name).glob("*.aedat"):
            match = _TRAILING_INDEX.search(path.stem)
            if match is None:
                raise DatasetNotFoundError(f"CIFAR10-DVS: {path} has no index at the end of its name: {expected}",
                                           path=path)
            files.append((int(match.group(1)), path))
        files.sort()
        cut = len(files) * 9 // 10
        train += [Recording(p, label) for _, p in files[:cut]]
        test += [Recording(p, label) for _, p in files[cut:]]
    return train, test


class CIFAR10DVS(EventFrames):
    """CIFAR10-DVS (Li et al. 2017): 10 classes x 1,000 DVS128 recordings, 128x128, as TET uses it.

    Layout: ``root/<class>/cifar10_<class>_<index>.aedat`` (AEDAT 2.0), the
    ten CIFAR-10 class names as folders. Split (fixed): within each class the
    recordings sorted by the index at the end of the file name, the first 90%
    train and the rest test: 900/100 per class, 9,000/1,000 in all (TET's
    split). Frames (TET): ``frames=10`` slices of equal event count, each
    divided by its maximum, resized to 48x48. Deviation from TET's code: no
    8-bit quantisation before the resize, and polarity is a true channel
    with true counts (TET's released preprocessing sends both polarities to one channel and
    records occupancy, not counts). Training augmentation
    (``augment``): random horizontal flip and a cyclic shift of up to
    ``max_shift`` = 5 pixels along each axis (:class:`FlipRoll`).

    Batches: ``CIFAR10DVS(root).loader(32, shuffle=True)`` yields time-first
    ``(frames [10, 32, 2, 48, 48], labels [32])`` (``collate_fn`` for your own DataLoader).
    """

    def __init__(self, root, train: bool = True, frames: int = 10, split_by: str = "count", size=48,
                 normalize: str = "max", augment: bool = True, max_shift: int = 5, cache_dir=None) -> None:
        root = _root(root, "CIFAR10-DVS")
        train_set, test_set = cifar10dvs_split(root)
        split = "train" if train else "test"
        super().__init__(f"cifar10dvs-{split}", train_set if train else test_set, CIFAR10DVS_CLASSES,
                         DVS128_SIZE, FrameSettings(frames, split_by, size, normalize), read_aedat2, root,
                         cache_dir, FlipRoll(max_shift) if train and augment else None)


def cifar10dvs(root, train: bool = True, frames: int = 10, split_by: str = "count", size=48,
               normalize: str = "max", augment: bool = True, max_shift: int = 5, cache_dir=None,
               download: bool = False) -> CIFAR10DVS:
    """CIFAR10-DVS frames ``[T, 2, 48, 48]`` with TET's split and augmentation (see :class:`CIFAR10DVS`)."""
    _no_download("CIFAR10-DVS", download)
    return CIFAR10DVS(root, train, frames, split_by, size, normalize, augment, max_shift, cache_dir)


# ---------------------------------------------------------------------------
# N-MNIST


def _label_list(path: Path) -> list[tuple[str, int]]:
    """``sample<whitespace>class`` lines of a label list; ``#`` lines are comments."""
    pairs, offset = [], 0
    for number, line in enumerate(path.read_bytes().decode("latin-1").splitlines(keepends=True), start=1):
        fields = line.split()
        if fields and not fields[0].startswith("#"):
            if len(fields) != 2 or not fields[1].isdigit() or not 0 <= int(fields[1]) <= 9:
                raise EventFileError(path, offset, f"line {number} is not 'sample<TAB>class' with a class 0-9: "
                                                   f"{line.strip()!r}")
            pairs.append((fields[0], int(fields[1])))
        offset += len(line)
    return pairs


def nmnist_recordings(root: Path, train: bool) -> list[Recording]:
    """The recordings of one split, from either layout :class:`NMNIST` accepts."""
    split = "Train" if train else "Test"
    expected = ("expected Train/<digit>/<id>.bin and Test/<digit>/<id>.bin (the official archives "
                "extracted), or label lists train*.txt and test*.txt ('sample<TAB>class' lines) beside "
                "<sample>.bin or <sample>.bs2 files; N-MNIST is not downloaded automatically")
    if (root / split).is_dir():
        recordings = [Recording(p, int(p.parent.name))
                      for p in sorted((root / split).glob("[0-9]/*.bin"), key=lambda p: (p.parent.name, p.name))]
        if not recordings:
            raise DatasetNotFoundError(f"N-MNIST: no recordings in {root / split}: {expected}", path=root / split)
        return recordings
    lists = sorted(root.glob(f"{split.lower()}*.txt"))
    if len(lists) != 1:
        found = f"{len(lists)} label lists {[p.name for p in lists]}" if lists else f"no {split} folder or label list"
        raise DatasetNotFoundError(f"N-MNIST not found in {root} ({found}): {expected}", path=root)
    recordings = []
    for sample, label in _label_list(lists[0]):
        path = next((root / f"{sample}{s}" for s in (".bin", ".bs2") if (root / f"{sample}{s}").is_file()), None)
        if path is None:
            raise DatasetNotFoundError(f"N-MNIST: {lists[0]} lists sample {sample} but neither {root / sample}.bin "
                                       f"nor .bs2 exists", path=root)
        recordings.append(Recording(path, label))
    return recordings


class NMNIST(EventFrames):
    """N-MNIST (Orchard et al. 2015): MNIST digits seen by an ATIS in three saccades, 34x34, ~300 ms.

    Layout, either of:

    - ``root/Train/<digit>/<id>.bin`` and ``root/Test/<digit>/<id>.bin`` (the
      official archives extracted; 60,000 / 10,000 recordings);
    - label lists ``root/train*.txt`` and ``root/test*.txt`` (one each; lines
      ``sample<TAB>class``, ``#`` comments) beside ``root/<sample>.bin`` or
      ``.bs2`` files: the layout of the 1,100-recording subset in the
      project's shared data.

    Frames: ``frames=10`` slices of equal duration (``split_by="time"``) over
    each recording, each divided by its maximum, at the sensor size 34x34
    unless ``size`` is given. ``max_shift > 0`` adds a random cyclic shift of
    up to that many pixels to training samples (no flips: digits are not
    mirror symmetric).

    Batches: ``NMNIST(root).loader(32, shuffle=True)`` yields time-first
    ``(frames [10, 32, 2, 34, 34], labels [32])`` (``collate_fn`` for your own DataLoader).
    """

    def __init__(self, root, train: bool = True, frames: int = 10, split_by: str = "time", size=None,
                 normalize: str = "max", max_shift: int = 0, cache_dir=None) -> None:
        root = _root(root, "N-MNIST")
        split = "train" if train else "test"
        super().__init__(f"nmnist-{split}", nmnist_recordings(root, train), [str(d) for d in range(10)],
                         NMNIST_SIZE, FrameSettings(frames, split_by, size, normalize), read_atis_bin, root,
                         cache_dir, FlipRoll(max_shift, flip=False) if train and max_shift else None)


def nmnist(root, train: bool = True, frames: int = 10, split_by: str = "time", size=None, normalize: str = "max",
           max_shift: int = 0, cache_dir=None, download: bool = False) -> NMNIST:
    """N-MNIST frames ``[T, 2, 34, 34]`` (or ``size``); see :class:`NMNIST`."""
    _no_download("N-MNIST", download)
    return NMNIST(root, train, frames, split_by, size, normalize, max_shift, cache_dir)


# ---------------------------------------------------------------------------
# DVS128 Gesture

_GESTURE_USER = re.compile(r"^user(\d+)_")


def gesture_recordings(root: Path, train: bool) -> list[Recording]:
    """One recording per labelled gesture: (file, class - 1, [start, end) microseconds from the CSV)."""
    folder = root / "DvsGesture" if (root / "DvsGesture").is_dir() else root
    files = sorted(folder.glob("user*.aedat"))
    if not files:
        raise DatasetNotFoundError(
            f"DVS128 Gesture not found in {root}: expected user<NN>_<lighting>.aedat (AEDAT 3.1) with "
            f"user<NN>_<lighting>_labels.csv beside them, in root or root/DvsGesture; DVS128 Gesture is "
            "not downloaded automatically", path=root)
    recordings = []
    for path in files:
        match = _GESTURE_USER.match(path.name)
        if match is None or (int(match.group(1)) in GESTURE_TEST_USERS) == train:
            continue
        labels = path.with_name(f"{path.stem}_labels.csv")
        if not labels.is_file():
            raise DatasetNotFoundError(f"DVS128 Gesture: {labels} is missing (the labels of {path.name})", path=labels)
        recordings += [Recording(path, int(c) - 1, (int(s), int(e))) for c, s, e in read_gesture_labels(labels)]
    if not recordings:
        users = "1-23" if train else f"{GESTURE_TEST_USERS.start}-{GESTURE_TEST_USERS.stop - 1}"
        raise DatasetNotFoundError(f"DVS128 Gesture: no labelled recordings of users {users} in {folder}", path=folder)
    return recordings


class DVSGesture(EventFrames):
    """DVS128 Gesture (Amir et al. 2017): 11 gestures by 29 users under several lightings, 128x128.

    Layout: ``root/user<NN>_<lighting>.aedat`` (AEDAT 3.1) with
    ``user<NN>_<lighting>_labels.csv`` beside each (or all of it in
    ``root/DvsGesture/``, as the official archive extracts). Each CSV row is
    one sample: the events with ``start <= t < end``. Split: users 1-23
    train, users 24-29 test. Frames: ``frames=16`` slices of equal event
    count, each divided by its maximum, 128x128 unless ``size`` is given.

    Batches: ``DVSGesture(root).loader(16, shuffle=True)`` yields time-first
    ``(frames [16, 16, 2, 128, 128], labels [16])`` (``collate_fn`` for your own DataLoader).
    """

    def __init__(self, root, train: bool = True, frames: int = 16, split_by: str = "count", size=None,
                 normalize: str = "max", cache_dir=None) -> None:
        root = _root(root, "DVS128 Gesture")
        split = "train" if train else "test"
        super().__init__(f"dvsgesture-{split}", gesture_recordings(root, train), GESTURE_CLASSES, DVS128_SIZE,
                         FrameSettings(frames, split_by, size, normalize), read_aedat3, root, cache_dir)


def dvs_gesture(root, train: bool = True, frames: int = 16, split_by: str = "count", size=None,
                normalize: str = "max", cache_dir=None, download: bool = False) -> DVSGesture:
    """DVS128 Gesture frames ``[T, 2, 128, 128]`` (or ``size``); see :class:`DVSGesture`."""
    _no_download("DVS128 Gesture", download)
    return DVSGesture(root, train, frames, split_by, size, normalize, cache_dir)
