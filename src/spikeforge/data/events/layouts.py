"""Where the recordings of CIFAR10-DVS, N-MNIST and DVS128 Gesture are: the folder layouts users keep.

Each set is read from the layout of its original archives or from the layout
tonic or SpikingJelly left after downloading it (``layout="auto"`` detects it,
trying the layouts in the order below; or name one). The split rules are the
same whatever the layout (CIFAR10-DVS: per class the first 90% by file index
train; N-MNIST and DVS128 Gesture: the archives' train/test folders, which for
DVS128 Gesture are users 1-23 / 24-29).

============  ====================  =========================================================
set           layout                files (under ``root``)
============  ====================  =========================================================
cifar10dvs    ``original``          ``<class>/cifar10_<class>_<index>.aedat`` (AEDAT 2.0)
cifar10dvs    ``tonic``             ``CIFAR10DVS/<class>/..._<index>.aedat4`` (AEDAT 4.0)
cifar10dvs    ``spikingjelly``      ``extract/<class>/..._<index>.aedat``
cifar10dvs    ``spikingjelly-npz``  ``events_np/<class>/..._<index>.npz``
nmnist        ``original``          ``Train/<digit>/<id>.bin``, ``Test/<digit>/<id>.bin``
nmnist        ``lists``             ``train*.txt``/``test*.txt`` label lists beside ``<sample>.bin``/``.bs2``
nmnist        ``tonic``             ``NMNIST/Train/<digit>/<id>.bin``, ``NMNIST/Test/...``
nmnist        ``spikingjelly``      ``extract/Train/<digit>/<id>.bin``, ``extract/Test/...``
nmnist        ``spikingjelly-npz``  ``events_np/train/<digit>/<id>.npz``, ``events_np/test/...``
dvsgesture    ``original``          ``user<NN>_<lighting>.aedat`` + ``_labels.csv`` (or in ``DvsGesture/``)
dvsgesture    ``tonic``             ``DVSGesture/ibmGestureTrain/user<NN>_<lighting>/<class>.npy``, ``ibmGestureTest``
dvsgesture    ``spikingjelly``      ``extract/DvsGesture/user<NN>_<lighting>.aedat`` + ``_labels.csv``
dvsgesture    ``spikingjelly-npz``  ``events_np/train/<class>/<recording>_<k>.npz``, ``events_np/test/...``
============  ====================  =========================================================

A tonic or SpikingJelly folder may also be given as ``root`` itself (e.g.
``root=".../NMNIST"`` or ``root=".../events_np"``). File contents:

- SpikingJelly's ``.npz``: arrays ``t`` (microseconds), ``x``, ``y``, ``p``.
  SpikingJelly reads CIFAR10-DVS rotated against the AEDAT files
  (``x = 127 - y_raw``, ``y = 127 - x_raw``, polarity inverted); its
  CIFAR10-DVS ``.npz`` are turned back to the orientation of
  :func:`~.aedat2.read_aedat2`, so every layout gives the same frames.
- tonic's DVS128 Gesture ``.npy``: an ``[N, 4]`` array of columns ``x, y, p, t``
  with ``t`` in milliseconds (read as ``t * 1000`` microseconds, as tonic does);
  one file per labelled gesture, the class (0-10) the number its name starts with.
- tonic's CIFAR10-DVS ``.aedat4``: read as stored (no flip); tonic's conversion
  of the AEDAT 2.0 originals could not be compared with them here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DatasetNotFoundError
from .aedat2 import read_aedat2
from .aedat3 import read_aedat3, read_gesture_labels
from .aedat4 import read_aedat4
from .arrays import EventFileError, make_events
from .atis import read_atis_bin
from .frameset import Recording

__all__ = ["LAYOUTS", "Source", "CIFAR10DVS_CLASSES", "GESTURE_CLASSES", "GESTURE_TEST_USERS",
           "cifar10dvs_source", "nmnist_source", "gesture_source",
           "read_npz_events", "read_spikingjelly_cifar10dvs", "read_tonic_gesture"]

#: The layout names each set accepts, in detection order (``layout="auto"`` tries them in this order).
LAYOUTS = {
    "cifar10dvs": ("original", "tonic", "spikingjelly", "spikingjelly-npz"),
    "nmnist": ("original", "lists", "tonic", "spikingjelly", "spikingjelly-npz"),
    "dvsgesture": ("original", "tonic", "spikingjelly", "spikingjelly-npz"),
}

CIFAR10DVS_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
#: The DVS128 Gesture classes 1-11 of the label CSVs, in order (labels 0-10 here).
GESTURE_CLASSES = ("hand_clapping", "right_hand_wave", "left_hand_wave", "right_arm_clockwise",
                   "right_arm_counter_clockwise", "left_arm_clockwise", "left_arm_counter_clockwise",
                   "arm_roll", "air_drums", "air_guitar", "other_gestures")
#: Users 24-29 are the test set, users 1-23 the training set (the authors' trials_to_test/train split).
GESTURE_TEST_USERS = range(24, 30)

_TRAILING_INDEX = re.compile(r"(\d+)$")
_LEADING_INDEX = re.compile(r"^(\d+)")
_GESTURE_USER = re.compile(r"^user(\d+)_")


@dataclass(frozen=True)
class Source:
    """The recordings of one split as a layout holds them: ``layout`` name, ``folder`` searched,
    ``recordings`` in item order and the ``reader`` (``path -> EVENT_DTYPE events``) of their files."""

    layout: str
    folder: Path
    recordings: list[Recording]
    reader: Callable[[Path], np.ndarray]


# ---------------------------------------------------------------------------
# readers of the converted files


def read_npz_events(path: Path) -> np.ndarray:
    """Events of a SpikingJelly ``.npz`` (arrays ``t`` in microseconds, ``x``, ``y``, ``p``) as EVENT_DTYPE."""
    try:
        with np.load(path) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError) as err:
        raise EventFileError(path, 0, f"not a readable .npz file ({err})") from None
    if not set("txyp") <= arrays.keys():
        raise EventFileError(path, 0, f"expected a SpikingJelly events .npz with arrays t, x, y, p; found "
                                      f"{sorted(arrays)}")
    try:
        return make_events(arrays["x"], arrays["y"], arrays["t"], arrays["p"] != 0)
    except ValueError as err:
        raise EventFileError(path, 0, str(err)) from None


def read_spikingjelly_cifar10dvs(path: Path) -> np.ndarray:
    """A SpikingJelly CIFAR10-DVS ``.npz`` in the orientation of :func:`~.aedat2.read_aedat2`
    (``x = y_sj``, ``y = 127 - x_sj``, ``p = 1 - p_sj``)."""
    sj = read_npz_events(path)
    return make_events(sj["y"], 127 - sj["x"].astype(np.int64), sj["t"], 1 - sj["p"])


def read_tonic_gesture(path: Path) -> np.ndarray:
    """A tonic DVS128 Gesture ``.npy`` (``[N, 4]`` columns ``x, y, p, t`` in ms) as EVENT_DTYPE (t in us)."""
    try:
        data = np.load(path)
    except (OSError, ValueError) as err:
        raise EventFileError(path, 0, f"not a readable .npy file ({err})") from None
    if data.ndim != 2 or data.shape[1] != 4:
        raise EventFileError(path, 0, f"expected tonic's [N, 4] array of columns x, y, p, t (ms), got shape "
                                      f"{data.shape}")
    ms = data[:, 3]
    t = ms * 1000 if ms.dtype.kind == "f" else ms.astype(np.int64) * 1000  # float: rounded down, as tonic does
    return make_events(data[:, 0], data[:, 1], t.astype(np.int64), data[:, 2] != 0)


# ---------------------------------------------------------------------------
# detection


def _first_folder(candidates: list[Path], holds: Callable[[Path], bool]) -> Path | None:
    return next((folder for folder in candidates if folder.is_dir() and holds(folder)), None)


def _resolve(title: str, root: Path, layout: str, names: tuple[str, ...], finders: dict) -> tuple[str, Path]:
    """``(layout name, folder)``: the named layout's folder, or the first layout found (``"auto"``)."""
    if layout != "auto" and layout not in names:
        raise ValueError(f"layout must be 'auto' or one of {', '.join(names)} for {title}, got {layout!r}")
    for name in names if layout == "auto" else (layout,):
        candidates, holds = finders[name]
        folder = _first_folder(candidates, holds)
        if folder is not None:
            return name, folder
    expected = "; ".join(f"{name}: {describe}" for name, describe in _EXPECTED[title].items()
                         if layout in ("auto", name))
    raise DatasetNotFoundError(f"{title} not found in {root} (layout {layout!r}); expected {expected}. "
                               f"{title} is not downloaded automatically: point --data-root at it", path=root)


_EXPECTED = {
    "CIFAR10-DVS": {
        "original": "<class>/cifar10_<class>_<index>.aedat for the ten CIFAR-10 classes",
        "tonic": "CIFAR10DVS/<class>/*_<index>.aedat4",
        "spikingjelly": "extract/<class>/*_<index>.aedat",
        "spikingjelly-npz": "events_np/<class>/*_<index>.npz",
    },
    "N-MNIST": {
        "original": "Train/<digit>/<id>.bin and Test/<digit>/<id>.bin",
        "lists": "label lists train*.txt and test*.txt ('sample<TAB>class' lines) beside <sample>.bin or .bs2",
        "tonic": "NMNIST/Train/<digit>/<id>.bin (NMNIST/Test for the test split)",
        "spikingjelly": "extract/Train/<digit>/<id>.bin (extract/Test)",
        "spikingjelly-npz": "events_np/train/<digit>/<id>.npz (events_np/test)",
    },
    "DVS128 Gesture": {
        "original": "user<NN>_<lighting>.aedat with user<NN>_<lighting>_labels.csv, in root or root/DvsGesture",
        "tonic": "DVSGesture/ibmGestureTrain/user<NN>_<lighting>/<class>.npy (ibmGestureTest for the test split)",
        "spikingjelly": "extract/DvsGesture/user<NN>_<lighting>.aedat with the _labels.csv",
        "spikingjelly-npz": "events_np/train/<class>/*.npz (events_np/test for the test split)",
    },
}


def _has(pattern: str) -> Callable[[Path], bool]:
    return lambda folder: next(folder.glob(pattern), None) is not None


# ---------------------------------------------------------------------------
# CIFAR10-DVS


def _indexed_class_files(folder: Path, suffix: str) -> tuple[list[Recording], list[Recording]]:
    """(train, test): per class folder, the files sorted by the index ending their name, the first 90% train."""
    missing = [c for c in CIFAR10DVS_CLASSES if next((folder / c).glob(f"*{suffix}"), None) is None]
    if missing:
        raise DatasetNotFoundError(f"CIFAR10-DVS: no {suffix} files in {folder} for {', '.join(missing)}: expected "
                                   f"the ten class folders {{{','.join(CIFAR10DVS_CLASSES)}}}/", path=folder)
    train, test = [], []
    for label, name in enumerate(CIFAR10DVS_CLASSES):
        files = []
        for path in (folder / name).glob(f"*{suffix}"):
            match = _TRAILING_INDEX.search(path.stem)
            if match is None:
                raise DatasetNotFoundError(f"CIFAR10-DVS: {path} has no index at the end of its name "
                                           f"(expected <name>_<index>{suffix})", path=path)
            files.append((int(match.group(1)), path))
        files.sort()
        cut = len(files) * 9 // 10
        train += [Recording(p, label) for _, p in files[:cut]]
        test += [Recording(p, label) for _, p in files[cut:]]
    return train, test


_CIFAR10DVS = {  # layout: (candidate folders under root, file suffix, reader)
    "original": ((".",), ".aedat", read_aedat2),
    "tonic": (("CIFAR10DVS", "."), ".aedat4", read_aedat4),
    "spikingjelly": (("extract",), ".aedat", read_aedat2),
    "spikingjelly-npz": (("events_np", "."), ".npz", read_spikingjelly_cifar10dvs),
}


def cifar10dvs_source(root: Path, train: bool, layout: str = "auto") -> Source:
    """The CIFAR10-DVS recordings of one split (900 / 100 per class of 1,000) in ``layout`` under ``root``."""
    finders = {name: ([root / sub for sub in subs], _has(f"airplane/*{suffix}"))
               for name, (subs, suffix, _) in _CIFAR10DVS.items()}
    name, folder = _resolve("CIFAR10-DVS", root, layout, LAYOUTS["cifar10dvs"], finders)
    _, suffix, reader = _CIFAR10DVS[name]
    train_set, test_set = _indexed_class_files(folder, suffix)
    return Source(name, folder, train_set if train else test_set, reader)


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


def _listed_recordings(root: Path, split: str) -> list[Recording]:
    lists = sorted(root.glob(f"{split}*.txt"))
    if len(lists) != 1:
        raise DatasetNotFoundError(f"N-MNIST: {len(lists)} label lists {[p.name for p in lists]} in {root}; "
                                   f"expected one {split}*.txt", path=root)
    recordings = []
    for sample, label in _label_list(lists[0]):
        path = next((root / f"{sample}{s}" for s in (".bin", ".bs2") if (root / f"{sample}{s}").is_file()), None)
        if path is None:
            raise DatasetNotFoundError(f"N-MNIST: {lists[0]} lists sample {sample} but neither {root / sample}.bin "
                                       f"nor .bs2 exists", path=root)
        recordings.append(Recording(path, label))
    return recordings


def _sample_order(path: Path) -> tuple[int, str, str]:
    """Sort key: the number ending the file name (the sample id), then the name and the class folder."""
    match = _TRAILING_INDEX.search(path.stem)
    return (int(match.group(1)) if match else -1, path.name, path.parent.name)


def _digit_folders(folder: Path, suffix: str) -> list[Recording]:
    """``<digit>/*<suffix>`` in sample-id order (the order of the label lists), whatever the class folder."""
    recordings = [Recording(p, int(p.parent.name)) for p in sorted(folder.glob(f"[0-9]/*{suffix}"), key=_sample_order)]
    if not recordings:
        raise DatasetNotFoundError(f"N-MNIST: no <digit>/*{suffix} recordings in {folder}", path=folder)
    return recordings


_NMNIST = {  # layout: (candidate folders under root, split folder names (train, test), file suffix, reader)
    "original": ((".",), ("Train", "Test"), ".bin", read_atis_bin),
    "tonic": (("NMNIST",), ("Train", "Test"), ".bin", read_atis_bin),
    "spikingjelly": (("extract",), ("Train", "Test"), ".bin", read_atis_bin),
    "spikingjelly-npz": (("events_np", "."), ("train", "test"), ".npz", read_npz_events),
}


def nmnist_source(root: Path, train: bool, layout: str = "auto") -> Source:
    """The N-MNIST recordings of one split in ``layout`` under ``root``."""
    finders = {name: ([root / sub for sub in subs], _has(f"{splits[0 if train else 1]}/[0-9]/*{suffix}"))
               for name, (subs, splits, suffix, _) in _NMNIST.items()}
    finders["lists"] = ([root], lambda folder: _has("train*.txt")(folder) and _has("test*.txt")(folder))
    name, folder = _resolve("N-MNIST", root, layout, LAYOUTS["nmnist"], finders)
    if name == "lists":
        return Source(name, folder, _listed_recordings(folder, "train" if train else "test"), read_atis_bin)
    _, splits, suffix, reader = _NMNIST[name]
    return Source(name, folder, _digit_folders(folder / splits[0 if train else 1], suffix), reader)


# ---------------------------------------------------------------------------
# DVS128 Gesture


def _user_in_split(name: str, train: bool) -> bool:
    match = _GESTURE_USER.match(name)
    return match is not None and (int(match.group(1)) in GESTURE_TEST_USERS) != train


def _labelled_recordings(folder: Path, train: bool) -> list[Recording]:
    """One recording per CSV row of each ``user*.aedat`` of the split: (file, class - 1, [start, end) us)."""
    recordings = []
    for path in sorted(folder.glob("user*.aedat")):
        if not _user_in_split(path.name, train):
            continue
        labels = path.with_name(f"{path.stem}_labels.csv")
        if not labels.is_file():
            raise DatasetNotFoundError(f"DVS128 Gesture: {labels} is missing (the labels of {path.name})", path=labels)
        recordings += [Recording(path, int(c) - 1, (int(s), int(e))) for c, s, e in read_gesture_labels(labels)]
    return recordings


def _tonic_gestures(folder: Path, train: bool) -> list[Recording]:
    """``ibmGesture{Train,Test}/user<NN>_<lighting>/<class>.npy``: one recording per file."""
    recordings = []
    for path in sorted((folder / ("ibmGestureTrain" if train else "ibmGestureTest")).glob("user*/*.npy")):
        match = _LEADING_INDEX.match(path.stem)
        if match is None or int(match.group(1)) >= len(GESTURE_CLASSES):
            raise DatasetNotFoundError(f"DVS128 Gesture: {path} is not named <class>.npy with a class 0-10",
                                       path=path)
        recordings.append(Recording(path, int(match.group(1))))
    return recordings


def _class_folders(folder: Path, train: bool) -> list[Recording]:
    """``{train,test}/<class>/*.npz`` (SpikingJelly): one recording per file."""
    split = folder / ("train" if train else "test")
    return [Recording(p, int(p.parent.name)) for p in sorted(split.glob("*/*.npz"), key=lambda p: (
        int(p.parent.name), p.name)) if p.parent.name.isdigit()]


_GESTURE = {  # layout: (candidate folders under root, marker pattern, recordings of a split, reader)
    "original": ((".", "DvsGesture"), "user*.aedat", _labelled_recordings, read_aedat3),
    "tonic": (("DVSGesture", "."), "ibmGesture{Split}/user*/*.npy", _tonic_gestures, read_tonic_gesture),
    "spikingjelly": (("extract/DvsGesture",), "user*.aedat", _labelled_recordings, read_aedat3),
    "spikingjelly-npz": (("events_np", "."), "{split}/*/*.npz", _class_folders, read_npz_events),
}


def gesture_source(root: Path, train: bool, layout: str = "auto") -> Source:
    """The DVS128 Gesture samples of one split (users 1-23 train, 24-29 test) in ``layout`` under ``root``."""
    split = "train" if train else "test"
    finders = {name: ([root / sub for sub in subs], _has(marker.format(split=split, Split=split.capitalize())))
               for name, (subs, marker, _, _) in _GESTURE.items()}
    name, folder = _resolve("DVS128 Gesture", root, layout, LAYOUTS["dvsgesture"], finders)
    _, _, recordings_of, reader = _GESTURE[name]
    recordings = recordings_of(folder, train)
    if not recordings:
        users = "1-23" if train else f"{GESTURE_TEST_USERS.start}-{GESTURE_TEST_USERS.stop - 1}"
        raise DatasetNotFoundError(f"DVS128 Gesture: no labelled recordings of users {users} in {folder} "
                                   f"({name} layout)", path=folder)
    return Source(name, folder, recordings, reader)
