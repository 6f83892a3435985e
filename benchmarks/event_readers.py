"""Throughput of spikeforge's AEDAT 2.0 (DVS128) and N-MNIST readers, and tonic's where it imports.

Inputs:

- AEDAT 2.0: a DVS128 recording of ``--events`` random events written to a
  temporary folder (no CIFAR10-DVS file is available here; the format is
  the same);
- N-MNIST: every ``.bs2``/``.bin`` file in ``--nmnist`` (default: the
  1,100 real recordings in ``../shared/data/nmnist-small`` when that folder
  exists, else 200 synthetic files of 4,000 events).

Each reader reads all inputs once to warm the page cache, then ``--repeats``
times; the median time gives events per second (file reading and decoding to
``x, y, t, p`` included). tonic's readers return raw records for AEDAT 2.0,
so its row adds the same DVS128 address decoding in numpy. tonic is optional
and is skipped with the reason when ``import tonic`` fails (its package
imports importRosbag and other dataset dependencies at import time).

    python benchmarks/event_readers.py            # a few seconds
    python benchmarks/event_readers.py --quick    # smoke run

Results are printed and written to ``benchmarks/results/event_readers.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from spikeforge.data.events import read_aedat2, read_atis_bin

REPO = Path(__file__).resolve().parents[1]
SHARED_NMNIST = REPO.parent / "shared" / "data" / "nmnist-small"
RESULTS = Path(__file__).resolve().parent / "results" / "event_readers.json"


def write_dvs128_aedat2(path: Path, n: int, seed: int = 0) -> Path:
    """A DVS128 AEDAT 2.0 file of ``n`` random events over about one second."""
    rng = np.random.default_rng(seed)
    records = np.empty(n, dtype=[("address", ">u4"), ("t", ">i4")])
    records["address"] = rng.integers(0, 2, n) | (rng.integers(0, 128, n) << 1) | (rng.integers(0, 128, n) << 8)
    records["t"] = np.sort(rng.integers(0, 1_000_000, n))
    path.write_bytes(b"#!AER-DAT2.0\r\n# AEChip: ch.unizh.ini.jaer.chip.retina.DVS128\r\n" + records.tobytes())
    return path


def write_nmnist_files(folder: Path, files: int, n: int, seed: int = 0) -> list[Path]:
    """``files`` synthetic N-MNIST recordings of ``n`` events each (5-byte records)."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(files):
        t = np.sort(rng.integers(0, 300_000, n))
        raw = np.stack([rng.integers(0, 34, n), rng.integers(0, 34, n),
                        (rng.integers(0, 2, n) << 7) | (t >> 16), (t >> 8) & 0xFF, t & 0xFF], axis=1)
        paths.append(folder / f"{i}.bin")
        paths[-1].write_bytes(raw.astype(np.uint8).tobytes())
    return paths


def tonic_readers() -> tuple[dict[str, Callable[[Path], np.ndarray]], str]:
    """tonic's AEDAT 2.0 and N-MNIST readers, or ({}, why not)."""
    try:
        import tonic.io
    except Exception as err:  # noqa: BLE001 - any import failure means "skip tonic"
        return {}, f"{type(err).__name__}: {err}"

    dtype = np.dtype([("x", "<i2"), ("y", "<i2"), ("t", "<i8"), ("p", "<i1")])

    def aedat2(path: Path) -> np.ndarray:
        header = tonic.io.read_aedat_header_from_file(str(path))
        raw = tonic.io.get_aer_events_from_file(str(path), header[0], header[1])
        address = raw["address"]
        events = np.empty(len(raw), dtype=dtype)
        events["x"], events["y"] = 127 - ((address >> 1) & 0x7F), (address >> 8) & 0x7F
        events["t"], events["p"] = raw["timeStamp"], address & 1
        return events

    return {"aedat2": aedat2, "nmnist": lambda path: tonic.io.read_mnist_file(str(path), dtype=dtype)}, ""


def measure(read: Callable[[Path], np.ndarray], paths: list[Path], repeats: int) -> dict:
    """Median seconds to read every path, and events per second."""
    events = sum(len(read(p)) for p in paths)  # warm-up pass, also counts the events
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for p in paths:
            read(p)
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return {"events": events, "files": len(paths), "seconds": seconds, "events_per_s": events / seconds}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2_000_000, help="events in the AEDAT 2.0 file")
    parser.add_argument("--nmnist", type=Path, default=SHARED_NMNIST if SHARED_NMNIST.is_dir() else None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="100k events, 50 N-MNIST files, 2 repeats")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.repeats = 100_000, 2

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        inputs = {"aedat2": [write_dvs128_aedat2(tmp / "dvs128.aedat", args.events)]}
        if args.nmnist is not None:
            inputs["nmnist"] = sorted(p for p in args.nmnist.iterdir() if p.suffix in (".bin", ".bs2"))
            source = str(args.nmnist)
        else:
            (tmp / "nmnist").mkdir()
            inputs["nmnist"] = write_nmnist_files(tmp / "nmnist", 200, 4000)
            source = "synthetic"
        if args.quick:
            inputs["nmnist"] = inputs["nmnist"][:50]
        ours = {"aedat2": read_aedat2, "nmnist": read_atis_bin}
        theirs, skipped = tonic_readers()
        rows = []
        for fmt, paths in inputs.items():
            rows.append({"format": fmt, "reader": "spikeforge", **measure(ours[fmt], paths, args.repeats)})
            if fmt in theirs:
                rows.append({"format": fmt, "reader": "tonic", **measure(theirs[fmt], paths, args.repeats)})

    print(f"{'format':8} {'reader':11} {'files':>6} {'events':>11} {'median s':>9} {'Mevents/s':>10}")
    for r in rows:
        print(f"{r['format']:8} {r['reader']:11} {r['files']:6d} {r['events']:11,d} {r['seconds']:9.4f} "
              f"{r['events_per_s'] / 1e6:10.2f}")
    if skipped:
        print(f"tonic: skipped ({skipped})")
    result = {"rows": rows, "nmnist_source": source, "repeats": args.repeats, "tonic_skipped": skipped or None,
              "python": sys.version.split()[0], "numpy": np.__version__}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
