"""CIFAR10-DVS, N-MNIST and DVS128 Gesture as frame-sequence data sets ``(float32 [T, 2, H, W], label)``.

Batch them time-first for a model with the set's ``loader`` (a plain DataLoader
stacks ``[B, T, ...]``, which a model would read with batch and time swapped)::

    train = cifar10dvs("~/data/CIFAR10-DVS", train=True)
    for frames, labels in train.loader(batch_size=32, shuffle=True):   # frames [10, 32, 2, 48, 48]
        logits = net(frames)                                           # [T, B, K]

Automatic download is not implemented: ``download=True`` is refused with a
ValueError, and ``root`` must hold the extracted files in one of the layouts
of :mod:`.layouts`: the original archives', tonic's or SpikingJelly's
(``layout="auto"`` detects it). A missing set raises
:class:`~spikeforge.data.DatasetNotFoundError`; a corrupt recording raises
:class:`~spikeforge.data.events.EventFileError` naming the file and the byte
offset. Frames are integrated on first use and cached (see :mod:`.cache`);
``cache_dir`` picks the cache folder. ``boundaries`` picks where frames start
and end (:mod:`.frames`: ``"spikeforge"``, or SpikingJelly's or tonic's rule).
Transforms (``augment``, ``transform``, ``event_transform``,
``target_transform``): :mod:`.transforms`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..errors import DatasetNotFoundError
from .aedat2 import DVS128_SIZE
from .atis import NMNIST_SIZE
from .augment import FlipRoll
from .frameset import EventFrames, FrameSettings
from .layouts import (
    CIFAR10DVS_CLASSES,
    GESTURE_CLASSES,
    GESTURE_TEST_USERS,
    Source,
    cifar10dvs_source,
    gesture_source,
    nmnist_source,
)
from .transforms import EVENT_TRANSFORMS, FRAME_TRANSFORMS, Compose, build_transform

__all__ = [
    "CIFAR10DVS", "NMNIST", "DVSGesture", "cifar10dvs", "nmnist", "dvs_gesture",
    "CIFAR10DVS_CLASSES", "GESTURE_CLASSES", "GESTURE_TEST_USERS",
]


def _root(root, title: str) -> Path:
    if root is None:
        raise ValueError(f"{title} needs a data root (a folder); pass root=... or --data-root")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetNotFoundError(f"{title} not found: {root} is not a folder", path=root)
    return root


class _EventSet(EventFrames):
    """What the three sets share: root, layout, download refusal and the transforms (:mod:`.transforms`)."""

    title: str
    key: str
    classes_of_set: tuple[str, ...]
    sensor: tuple[int, int]
    find: Callable[[Path, bool, str], Source]

    def __init__(self, root, train: bool, settings: FrameSettings, cache_dir, layout: str, augment,
                 builtin_augment: Callable | None, transform, event_transform, target_transform,
                 download: bool) -> None:
        if download:
            raise ValueError(f"{self.title} cannot be downloaded automatically; download and extract it "
                             "yourself and point root (--data-root) at it")
        root = _root(root, self.title)
        source = type(self).find(root, train, layout)
        self.layout = source.layout
        if augment is True:
            augment = builtin_augment
        frame_steps = [build_transform(augment or None, FRAME_TRANSFORMS, "augment") if train else None,
                       build_transform(transform, FRAME_TRANSFORMS, "transform")]
        frame_steps = [step for step in frame_steps if step is not None]
        super().__init__(f"{self.key}-{'train' if train else 'test'}", source.recordings, self.classes_of_set,
                         self.sensor, settings, source.reader, root, cache_dir,
                         Compose(frame_steps) if len(frame_steps) > 1 else next(iter(frame_steps), None),
                         event_transform=build_transform(event_transform, EVENT_TRANSFORMS, "event_transform"),
                         target_transform=build_transform(target_transform, {}, "target_transform"))


class CIFAR10DVS(_EventSet):
    """CIFAR10-DVS (Li et al. 2017): 10 classes x 1,000 DVS128 recordings, 128x128, as TET uses it.

    Layout (:mod:`.layouts`, ``layout="auto"`` detects it): the original
    ``root/<class>/cifar10_<class>_<index>.aedat`` (AEDAT 2.0), tonic's
    ``root/CIFAR10DVS/<class>/*.aedat4`` or SpikingJelly's ``root/extract/``
    (AEDAT 2.0) or ``root/events_np/`` (.npz). Split (fixed, every layout):
    within each class the recordings sorted by the index at the end of the file
    name, the first 90% train and the rest test: 900/100 per class, 9,000/1,000
    in all (TET's split). Frames (TET): ``frames=10`` slices of equal event
    count, each divided by its maximum, resized to 48x48; ``boundaries``
    picks the slice edges (the TET and LSG recipes use ``"spikingjelly"``).
    Deviation from TET's code: no 8-bit quantisation before the resize, and
    polarity is a true channel with true counts (TET's released preprocessing
    sends both polarities to one channel and records occupancy, not counts).
    Training augmentation (``augment=True``): random horizontal flip and a
    cyclic shift of up to ``max_shift`` = 5 pixels along each axis
    (:class:`FlipRoll`); ``augment`` may also name another frame transform.

    Batches: ``CIFAR10DVS(root).loader(32, shuffle=True)`` yields time-first
    ``(frames [10, 32, 2, 48, 48], labels [32])`` (``collate_fn`` for your own DataLoader).
    """

    title, key, classes_of_set, sensor = "CIFAR10-DVS", "cifar10dvs", CIFAR10DVS_CLASSES, DVS128_SIZE
    find = staticmethod(cifar10dvs_source)

    def __init__(self, root, train: bool = True, frames: int = 10, split_by: str = "count", size=48,
                 normalize: str = "max", augment=True, max_shift: int = 5, cache_dir=None, *,
                 layout: str = "auto", boundaries: str = "spikeforge", transform=None, event_transform=None,
                 target_transform=None, download: bool = False) -> None:
        super().__init__(root, train, FrameSettings(frames, split_by, size, normalize, boundaries), cache_dir,
                         layout, augment, FlipRoll(max_shift), transform, event_transform, target_transform,
                         download)


class NMNIST(_EventSet):
    """N-MNIST (Orchard et al. 2015): MNIST digits seen by an ATIS in three saccades, 34x34, ~300 ms.

    Layout (:mod:`.layouts`, ``layout="auto"`` detects it), any of:

    - ``original``: ``root/Train/<digit>/<id>.bin`` and ``root/Test/<digit>/<id>.bin``
      (the official archives extracted; 60,000 / 10,000 recordings);
    - ``lists``: label lists ``root/train*.txt`` and ``root/test*.txt`` (one each; lines
      ``sample<TAB>class``, ``#`` comments) beside ``root/<sample>.bin`` or
      ``.bs2`` files: the layout of the 1,100-recording subset in the
      project's shared data;
    - ``tonic``: ``root/NMNIST/Train/<digit>/<id>.bin`` (tonic's ``save_to`` folder);
    - ``spikingjelly``: ``root/extract/Train/...``; ``spikingjelly-npz``: ``root/events_np/train/<digit>/<id>.npz``.

    Frames: ``frames=10`` slices of equal duration (``split_by="time"``) over
    each recording, each divided by its maximum, at the sensor size 34x34
    unless ``size`` is given. Training augmentation (``augment=True``): a
    random cyclic shift of up to ``max_shift`` pixels if ``max_shift > 0``
    (no flips: digits are not mirror symmetric).

    Batches: ``NMNIST(root).loader(32, shuffle=True)`` yields time-first
    ``(frames [10, 32, 2, 34, 34], labels [32])`` (``collate_fn`` for your own DataLoader).
    """

    title, key, classes_of_set, sensor = "N-MNIST", "nmnist", tuple(str(d) for d in range(10)), NMNIST_SIZE
    find = staticmethod(nmnist_source)

    def __init__(self, root, train: bool = True, frames: int = 10, split_by: str = "time", size=None,
                 normalize: str = "max", max_shift: int = 0, cache_dir=None, *, augment=True,
                 layout: str = "auto", boundaries: str = "spikeforge", transform=None, event_transform=None,
                 target_transform=None, download: bool = False) -> None:
        super().__init__(root, train, FrameSettings(frames, split_by, size, normalize, boundaries), cache_dir,
                         layout, augment, FlipRoll(max_shift, flip=False) if max_shift else None, transform,
                         event_transform, target_transform, download)


class DVSGesture(_EventSet):
    """DVS128 Gesture (Amir et al. 2017): 11 gestures by 29 users under several lightings, 128x128.

    Layout (:mod:`.layouts`, ``layout="auto"`` detects it): the original
    ``root/user<NN>_<lighting>.aedat`` (AEDAT 3.1) with
    ``user<NN>_<lighting>_labels.csv`` beside each (or all of it in
    ``root/DvsGesture/``, as the official archive extracts; each CSV row is one
    sample: the events with ``start <= t < end``); tonic's
    ``root/DVSGesture/ibmGesture{Train,Test}/user<NN>_<lighting>/<class>.npy``
    (one file per sample, times in ms); SpikingJelly's ``root/extract/DvsGesture/``
    or ``root/events_np/{train,test}/<class>/*.npz``. Split: users 1-23
    train, users 24-29 test. Frames: ``frames=16`` slices of equal event
    count, each divided by its maximum, 128x128 unless ``size`` is given.
    ``augment`` names a training frame transform (none built in).

    Batches: ``DVSGesture(root).loader(16, shuffle=True)`` yields time-first
    ``(frames [16, 16, 2, 128, 128], labels [16])`` (``collate_fn`` for your own DataLoader).
    """

    title, key, classes_of_set, sensor = "DVS128 Gesture", "dvsgesture", GESTURE_CLASSES, DVS128_SIZE
    find = staticmethod(gesture_source)

    def __init__(self, root, train: bool = True, frames: int = 16, split_by: str = "count", size=None,
                 normalize: str = "max", cache_dir=None, *, augment=None, layout: str = "auto",
                 boundaries: str = "spikeforge", transform=None, event_transform=None, target_transform=None,
                 download: bool = False) -> None:
        super().__init__(root, train, FrameSettings(frames, split_by, size, normalize, boundaries), cache_dir,
                         layout, augment, None, transform, event_transform, target_transform, download)


#: The registry's builders (``build_dataset("cifar10dvs", root, train, **options)``): the classes themselves.
cifar10dvs, nmnist, dvs_gesture = CIFAR10DVS, NMNIST, DVSGesture
