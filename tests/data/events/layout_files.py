"""The folder layouts of CIFAR10-DVS, N-MNIST and DVS128 Gesture (:mod:`spikeforge.data.events.layouts`),
written in ``tmp_path`` from real recordings in ``../shared/data``.

N-MNIST layouts hold copies of real recordings of the shared subset. CIFAR10-DVS and
DVS128 Gesture cannot be obtained here: their files are written in the documented
formats (event_files.py) from slices of a real 128x128 crop of the DVXplorer
recording. The converted files are written from the format descriptions with numpy:
SpikingJelly's ``.npz`` (``t, x, y, p``; CIFAR10-DVS in SpikingJelly's orientation
``x = 127 - y_raw, y = 127 - x_raw, p = 1 - p_raw``) and tonic's DVS128 Gesture
``.npy`` (``[N, 4]`` columns ``x, y, p, t`` in ms).
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
from event_files import (
    aedat3_packet,
    aedat3_word,
    dvs128_address,
    shared_file,
    write_aedat2,
    write_aedat3,
    write_aedat4,
)

from spikeforge.data.events import CIFAR10DVS_CLASSES, read_aedat4

#: one labelled window per (recording, class) of the DVS128 Gesture recordings written here
GESTURE_RECORDINGS = {"user01_fluorescent": (1, 5, 11), "user02_led": (3, 4), "user24_led": (2, 11)}


def real_dvs128_chunks(count: int, size: int) -> list[np.ndarray]:
    """``count`` consecutive slices of ``size`` events of the DVXplorer recording's central 128x128 crop,
    as ``[n, 4]`` int64 arrays of columns x, y, t (us, from 0), p."""
    with warnings.catch_warnings():  # the recording's IMU and trigger streams are skipped
        warnings.simplefilter("ignore", UserWarning)
        events = read_aedat4(shared_file("event-samples/dvxplorer_320x240.aedat4"))
    crop = events[(events["x"] >= 96) & (events["x"] < 224) & (events["y"] >= 56) & (events["y"] < 184)]
    table = np.stack([crop["x"] - 96, crop["y"] - 56, crop["t"] - crop["t"][0], crop["p"]], axis=1).astype(np.int64)
    assert len(table) >= count * size, f"the crop holds {len(table)} events, fewer than {count} x {size}"
    return [table[i * size:(i + 1) * size] for i in range(count)]


def _save_npz(path: Path, x, y, t, p) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, t=t, x=x, y=y, p=p)


# ----------------------------------------------------------------------------- CIFAR10-DVS


def write_cifar10dvs(root: Path, layout: str, per_class: int = 2) -> Path:
    """``per_class`` recordings ``cifar10_<class>_<i>`` per class in ``layout``; returns ``root``."""
    chunks = iter(real_dvs128_chunks(len(CIFAR10DVS_CLASSES) * per_class, 150))
    folder = {"original": root, "tonic": root / "CIFAR10DVS", "spikingjelly": root / "extract",
              "spikingjelly-npz": root / "events_np"}[layout]
    for name in CIFAR10DVS_CLASSES:
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            x, y, t, p = next(chunks).T
            stem = folder / name / f"cifar10_{name}_{i}"
            if layout == "tonic":
                write_aedat4(stem.with_suffix(".aedat4"), [(0, list(zip(t, x, y, p != 0, strict=True)))],
                             streams={0: ("EVTS", (128, 128))})
            elif layout == "spikingjelly-npz":
                _save_npz(stem.with_suffix(".npz"), x=127 - y, y=x, t=t, p=1 - p)
            else:  # DVS128 addresses hold the raw column, which readers flip to 127 - x
                write_aedat2(stem.with_suffix(".aedat"),
                             [(dvs128_address(127 - a, b, c), d) for a, b, c, d in zip(x, y, p, t, strict=True)])
    return root


# ----------------------------------------------------------------------------- N-MNIST


def nmnist_samples(train: int, test: int) -> list[tuple[str, str, int, Path]]:
    """(split "train"/"test", sample id, label, real file) of the first recordings of the shared subset."""
    folder = shared_file("nmnist-small")
    samples = []
    for split, listing, n in (("train", "train1K.txt", train), ("test", "test100.txt", test)):
        rows = [line.split() for line in (folder / listing).read_text().splitlines() if line[:1].isdigit()]
        samples += [(split, sample, int(label), folder / f"{sample}.bs2") for sample, label in rows[:n]]
    return samples


def write_nmnist(root: Path, layout: str, train: int = 12, test: int = 6) -> Path:
    """The first ``train`` / ``test`` recordings of the shared subset in ``layout``; returns ``root``."""
    samples = nmnist_samples(train, test)
    if layout == "lists":
        root.mkdir(parents=True, exist_ok=True)
        for split in ("train", "test"):
            rows = "".join(f"{s}\t{label}\n" for sp, s, label, _ in samples if sp == split)
            (root / f"{split}.txt").write_text("#sample\t#class\n" + rows)
        for _, sample, _, path in samples:
            shutil.copy(path, root / f"{sample}.bs2")
        return root
    for split, sample, label, path in samples:
        if layout == "spikingjelly-npz":  # 5 bytes per event: x, y, p << 7 | t bits 22-16, t bits 15-0
            raw = np.frombuffer(path.read_bytes(), dtype=np.uint8).reshape(-1, 5).astype(np.int64)
            t = (raw[:, 2] & 0x7F) << 16 | raw[:, 3] << 8 | raw[:, 4]
            _save_npz(root / "events_np" / split / str(label) / f"{sample}.npz", raw[:, 0], raw[:, 1], t,
                      raw[:, 2] >> 7)
            continue
        base = {"original": root, "tonic": root / "NMNIST", "spikingjelly": root / "extract"}[layout]
        target = base / split.capitalize() / str(label) / f"{sample}.bin"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    return root


# ----------------------------------------------------------------------------- DVS128 Gesture


def write_gesture(root: Path, layout: str) -> Path:
    """:data:`GESTURE_RECORDINGS` in ``layout``, each window 100 real events; returns ``root``."""
    chunks = iter(real_dvs128_chunks(sum(map(len, GESTURE_RECORDINGS.values())), 100))
    for recording, classes in GESTURE_RECORDINGS.items():
        user = int(recording[4:6])
        split = "test" if user >= 24 else "train"
        windows, events = [], []
        for k, label in enumerate(classes):
            chunk = next(chunks).copy()
            chunk[:, 2] += 1_000_000 * (k + 1) - chunk[0, 2]   # window k spans [1e6 (k+1), t_last + 1)
            windows.append((label, int(chunk[0, 2]), int(chunk[-1, 2]) + 1))
            events.append(chunk)
            x, y, t, p = chunk.T
            if layout == "tonic":
                folder = root / "DVSGesture" / f"ibmGesture{split.capitalize()}" / recording
                folder.mkdir(parents=True, exist_ok=True)
                np.save(folder / f"{label - 1}.npy", np.stack([x, y, p, t // 1000], axis=1))  # t in whole ms
            elif layout == "spikingjelly-npz":
                _save_npz(root / "events_np" / split / str(label - 1) / f"{recording}_0.npz", x, y, t, p)
        if layout in ("original", "spikingjelly"):
            folder = root if layout == "original" else root / "extract" / "DvsGesture"
            folder.mkdir(parents=True, exist_ok=True)
            x, y, t, p = np.concatenate(events).T
            write_aedat3(folder / f"{recording}.aedat",
                         [aedat3_packet([(aedat3_word(a, b, c), d) for a, b, c, d in zip(x, y, p, t, strict=True)])])
            (folder / f"{recording}_labels.csv").write_text(
                "class,startTime_usec,endTime_usec\n" + "".join(f"{c},{s},{e}\n" for c, s, e in windows))
    return root
