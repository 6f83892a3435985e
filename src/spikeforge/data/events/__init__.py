"""Event-camera data: readers, frame integration, cached frame data sets, MVSEC stereo.

::

    from spikeforge.data.events import read_events, event_frames
    events = read_events("user01_fluorescent.aedat")         # structured (x, y, t[us], p)
    frames = event_frames(events, (128, 128), frames=10)     # float32 [10, 2, 128, 128]

    from spikeforge.data import build_dataset
    train = build_dataset("cifar10dvs", "~/data/CIFAR10-DVS", train=True)   # [10, 2, 48, 48] items
    for frames, labels in train.loader(batch_size=32, shuffle=True):        # time-first [10, 32, 2, 48, 48]
        ...

Readers: :func:`read_aedat2` (jAER AEDAT 2.0 with DVS128 addresses, as in
CIFAR10-DVS, or DAVIS240 / DAVIS346 addresses, from the ``# AEChip:`` line),
:func:`read_aedat3` (AEDAT 3.1: DVS128 Gesture, with :func:`read_gesture_labels`),
:func:`read_aedat4` (AEDAT 4.0: decoded by the ``aedat`` package when it
imports, else by our parser of the LZ4 / Zstandard packets),
:func:`read_prophesee` (Prophesee ``.dat`` and EVT 2.0 / EVT 3.0 ``.raw``),
:func:`read_stmnist` (ST-MNIST ``.mat``, through scipy), :func:`read_atis_bin`
(N-MNIST / N-Caltech101 ``.bin``), and :func:`read_events`, which picks one
from the file's first bytes. A truncated or corrupt file raises
:class:`EventFileError` naming the file and the byte offset. Data sets:
:class:`CIFAR10DVS`, :class:`NMNIST`, :class:`DVSGesture` (registered as
``cifar10dvs``, ``nmnist``, ``dvsgesture``) and :class:`MVSECStereo`; the first
three read the original, tonic's or SpikingJelly's folders (:data:`LAYOUTS`)
and take ``transform``, ``event_transform``, ``target_transform`` and
``augment`` (:mod:`.transforms`).
"""

from .aedat2 import DAVIS240_SIZE, DAVIS346_SIZE, DVS128_SIZE, read_aedat2
from .aedat3 import read_aedat3, read_gesture_labels
from .aedat4 import Aedat4Header, Aedat4Stream, read_aedat4, read_aedat4_header
from .arrays import EVENT_DTYPE, EventFileError, make_events
from .atis import NMNIST_SIZE, read_atis_bin
from .augment import DropEvents, FlipRoll
from .cache import cached_frames, default_cache_dir
from .datasets import (
    CIFAR10DVS,
    CIFAR10DVS_CLASSES,
    GESTURE_CLASSES,
    NMNIST,
    DVSGesture,
    cifar10dvs,
    dvs_gesture,
    nmnist,
)
from .frames import BOUNDARY_MODES, SensorSize, event_frames, normalize_frames, resize_frames
from .frameset import EventFrames, FrameSettings, Recording, time_first_collate
from .layouts import LAYOUTS
from .mvsec import (
    FOCAL_BASELINE,
    MVSEC_SIZE,
    MVSEC_SPLITS,
    MVSECRecording,
    MVSECStereo,
    count_frames,
    depth_to_disparity,
    disparity_to_depth,
    load_rectify_maps,
    rectify_events,
)
from .prophesee import PropheseeHeader, read_prophesee, read_prophesee_header
from .readers import read_events
from .stmnist import STMNIST_SIZE, read_stmnist
from .transforms import EVENT_TRANSFORMS, FRAME_TRANSFORMS, Compose, build_transform

__all__ = [
    "EVENT_DTYPE", "make_events", "EventFileError",
    "read_events", "read_aedat2", "read_aedat3", "read_gesture_labels", "read_aedat4", "read_aedat4_header",
    "Aedat4Header", "Aedat4Stream", "read_atis_bin", "DVS128_SIZE", "NMNIST_SIZE",
    "DAVIS240_SIZE", "DAVIS346_SIZE", "read_prophesee", "read_prophesee_header", "PropheseeHeader",
    "read_stmnist", "STMNIST_SIZE",
    "event_frames", "normalize_frames", "resize_frames", "cached_frames", "default_cache_dir",
    "FrameSettings", "Recording", "EventFrames", "FlipRoll", "time_first_collate",
    "CIFAR10DVS", "NMNIST", "DVSGesture", "cifar10dvs", "nmnist", "dvs_gesture",
    "CIFAR10DVS_CLASSES", "GESTURE_CLASSES",
    "SensorSize", "BOUNDARY_MODES", "LAYOUTS", "DropEvents", "Compose", "build_transform", "FRAME_TRANSFORMS",
    "EVENT_TRANSFORMS",
    "MVSECStereo", "MVSECRecording", "MVSEC_SIZE", "MVSEC_SPLITS", "FOCAL_BASELINE",
    "depth_to_disparity", "disparity_to_depth", "count_frames", "rectify_events", "load_rectify_maps",
]
