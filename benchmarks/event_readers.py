"""Throughput of spikeforge's event-file readers, and of the peer readers of each format that import.

Inputs (``--events`` generated events per synthetic file, written to a temporary folder):

- ``aedat2``: a DVS128 AEDAT 2.0 recording (no CIFAR10-DVS file is available here);
- ``aedat2-davis``: a DAVIS346 AEDAT 2.0 recording (DVS events only);
- ``nmnist``: every ``.bs2``/``.bin`` file in ``--nmnist`` (default: the 1,100 real recordings in
  ``../shared/data/nmnist-small`` when that folder exists, else 200 synthetic files of 4,000 events);
- ``aedat4``: the two real AEDAT 4.0 recordings in ``../shared/data/event-samples`` (118,630 events);
  ``spikeforge`` decodes through the ``aedat`` package when it imports, ``spikeforge-parser`` with
  spikeforge's own parser;
- ``dat``, ``evt2``, ``evt3``: Prophesee CD events on a 1280x720 sensor over 10 s (EVT 3.0 written with
  one EVT_ADDR_X word per event, no vectors);
- ``stmnist``: the real ST-MNIST recording (2,346 events; no peer reader is installed here).

Peers: tonic (AEDAT 2.0, N-MNIST, AEDAT 4), aedat and dv-processing (AEDAT 4), expelliarmus (Prophesee).
Each is skipped with the reason when it does not import. tonic's AEDAT 2.0 DVS128 row reads raw
records and adds the same address decoding in numpy. expelliarmus 1.1's EVT 3.0 timestamps differ
from the EVT 3.0 layout after the first EVT_TIME_HIGH change (it also counts EVT_TIME_LOW drops), so
its ``evt3`` row is a speed reference only.

Each reader reads all inputs once to warm the page cache, then ``--repeats`` times; the median time
gives events per second (file reading and decoding to ``x, y, t, p`` included).

    python benchmarks/event_readers.py            # about a minute
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
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from spikeforge.data.events import read_aedat2, read_aedat4, read_atis_bin, read_prophesee, read_stmnist

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
SHARED_NMNIST = SHARED / "nmnist-small"
RESULTS = Path(__file__).resolve().parent / "results" / "event_readers.json"
Reader = Callable[[Path], np.ndarray]


def random_events(n: int, size: tuple[int, int], duration_us: int, seed: int = 0) -> dict[str, np.ndarray]:
    """``n`` uniform random events on a ``size`` (height, width) sensor, times sorted over ``duration_us``."""
    rng = np.random.default_rng(seed)
    return {"t": np.sort(rng.integers(0, duration_us, n)), "x": rng.integers(0, size[1], n),
            "y": rng.integers(0, size[0], n), "p": rng.integers(0, 2, n)}


def write_jaer(path: Path, chip: str, address: np.ndarray, t: np.ndarray) -> Path:
    """An AEDAT 2.0 file: jAER header naming ``chip``, then big-endian uint32 address + int32 t records."""
    records = np.empty(address.size, dtype=[("address", ">u4"), ("t", ">i4")])
    records["address"], records["t"] = address, t
    path.write_bytes(f"#!AER-DAT2.0\r\n# AEChip: {chip}\r\n".encode() + records.tobytes())
    return path


def write_dvs128_aedat2(path: Path, n: int, seed: int = 0) -> Path:
    """A DVS128 AEDAT 2.0 file of ``n`` random events over about one second."""
    e = random_events(n, (128, 128), 1_000_000, seed)
    return write_jaer(path, "ch.unizh.ini.jaer.chip.retina.DVS128", e["p"] | (e["x"] << 1) | (e["y"] << 8), e["t"])


def write_davis346_aedat2(path: Path, n: int, seed: int = 0) -> Path:
    """A DAVIS346 AEDAT 2.0 file of ``n`` random DVS events (y bits 22-30, x 12-21, polarity bit 11)."""
    e = random_events(n, (260, 346), 1_000_000, seed)
    address = (e["y"] << 22) | (e["x"] << 12) | (e["p"] << 11)
    return write_jaer(path, "eu.seebetter.ini.chips.davis.Davis346red", address, e["t"])


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


def changed(values: np.ndarray) -> np.ndarray:
    """True where ``values`` differs from the previous entry (and at the first)."""
    return np.r_[True, values[1:] != values[:-1]]


def write_prophesee_files(folder: Path, n: int, seed: int = 0) -> dict[str, Path]:
    """``.dat``, EVT 2.0 and EVT 3.0 files of the same ``n`` random CD events (1280x720, 10 s).

    The ``.raw`` words are built as one row per event (its state words, then its event word) and a mask
    of the words to write; the row-major selection keeps file order.
    """
    e = random_events(n, (720, 1280), 10_000_000, seed)
    t, x, y, p = e["t"], e["x"], e["y"], e["p"]
    dat = np.empty(n, dtype=[("t", "<u4"), ("word", "<u4")])
    dat["t"], dat["word"] = t, x | (y << 14) | (p << 28)
    paths = {"dat": folder / "cd.dat", "evt2": folder / "evt2.raw", "evt3": folder / "evt3.raw"}
    paths["dat"].write_bytes(b"% Data file containing CD events\n% Version 2\n% Width 1280\n% Height 720\n"
                             b"\x0c\x08" + dat.tobytes())
    evt2 = np.stack([(8 << 28) | (t >> 6), (p << 28) | ((t & 0x3F) << 22) | (x << 11) | y], axis=1)
    words2 = evt2[np.stack([changed(t >> 6), np.ones(n, bool)], axis=1)].astype("<u4")
    paths["evt2"].write_bytes(b"% evt 2.0\n% format EVT2;height=720;width=1280\n% end\n" + words2.tobytes())
    high, low = (t >> 12) & 0xFFF, t & 0xFFF
    evt3 = np.stack([(8 << 12) | high, (6 << 12) | low, y, (2 << 12) | (p << 11) | x], axis=1)
    keep3 = np.stack([changed(t >> 12), changed(t), changed(y), np.ones(n, bool)], axis=1)
    paths["evt3"].write_bytes(b"% evt 3.0\n% format EVT3;height=720;width=1280\n% end\n"
                              + evt3[keep3].astype("<u2").tobytes())
    return paths


def tonic_readers() -> dict[str, Reader]:
    import tonic.io

    dtype = np.dtype([("x", "<i2"), ("y", "<i2"), ("t", "<i8"), ("p", "<i1")])

    def aedat2(path: Path) -> np.ndarray:
        header = tonic.io.read_aedat_header_from_file(str(path))
        raw = tonic.io.get_aer_events_from_file(str(path), header[0], header[1])
        address = raw["address"]
        events = np.empty(len(raw), dtype=dtype)
        events["x"], events["y"] = 127 - ((address >> 1) & 0x7F), (address >> 8) & 0x7F
        events["t"], events["p"] = raw["timeStamp"], address & 1
        return events

    return {"aedat2": aedat2, "aedat2-davis": lambda path: tonic.io.read_davis_346(str(path))[2],
            "nmnist": lambda path: tonic.io.read_mnist_file(str(path), dtype=dtype),
            "aedat4": lambda path: tonic.io.read_aedat4(str(path))}


def aedat_readers() -> dict[str, Reader]:
    import aedat

    def aedat4(path: Path) -> np.ndarray:
        return np.concatenate([p["events"] for p in aedat.Decoder(path) if "events" in p])

    return {"aedat4": aedat4}


def dv_processing_readers() -> dict[str, Reader]:
    import dv_processing

    def aedat4(path: Path) -> np.ndarray:
        recording = dv_processing.io.MonoCameraRecording(str(path))
        batches = []
        while recording.isRunning():
            batch = recording.getNextEventBatch()
            if batch is not None:
                batches.append(batch.numpy())
        return np.concatenate(batches)

    return {"aedat4": aedat4}


def expelliarmus_readers() -> dict[str, Reader]:
    from expelliarmus import Wizard

    return {fmt: Wizard(encoding=fmt).read for fmt in ("dat", "evt2", "evt3")}


PEERS = {"tonic": tonic_readers, "aedat": aedat_readers, "dv_processing": dv_processing_readers,
         "expelliarmus": expelliarmus_readers}
OURS: dict[str, dict[str, Reader]] = {
    "aedat2": {"spikeforge": read_aedat2}, "aedat2-davis": {"spikeforge": read_aedat2},
    "nmnist": {"spikeforge": read_atis_bin},
    "aedat4": {"spikeforge": read_aedat4, "spikeforge-parser": lambda path: read_aedat4(path, decoder="spikeforge")},
    "dat": {"spikeforge": read_prophesee}, "evt2": {"spikeforge": read_prophesee},
    "evt3": {"spikeforge": read_prophesee}, "stmnist": {"spikeforge": read_stmnist},
}


def measure(read: Reader, paths: list[Path], repeats: int) -> dict:
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


def gather_inputs(tmp: Path, args) -> tuple[dict[str, list[Path]], dict[str, str]]:
    """Input files per format, and why a format is left out."""
    inputs = {"aedat2": [write_dvs128_aedat2(tmp / "dvs128.aedat", args.events)],
              "aedat2-davis": [write_davis346_aedat2(tmp / "davis346.aedat", args.events)]}
    if args.nmnist is not None:
        inputs["nmnist"] = sorted(p for p in args.nmnist.iterdir() if p.suffix in (".bin", ".bs2"))
    else:
        (tmp / "nmnist").mkdir()
        inputs["nmnist"] = write_nmnist_files(tmp / "nmnist", 200, 4000)
    if args.quick:
        inputs["nmnist"] = inputs["nmnist"][:50]
    left_out = {}
    samples = SHARED / "event-samples"
    for fmt, names in (("aedat4", ["davis346_346x260.aedat4", "dvxplorer_320x240.aedat4"]),
                       ("stmnist", ["sample_stmnist.mat"])):
        if samples.is_dir():
            inputs[fmt] = [samples / name for name in names]
        else:
            left_out[fmt] = f"{samples} is absent"
    inputs.update({fmt: [path] for fmt, path in write_prophesee_files(tmp, args.events).items()})
    return inputs, left_out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2_000_000, help="events in each generated file")
    parser.add_argument("--nmnist", type=Path, default=SHARED_NMNIST if SHARED_NMNIST.is_dir() else None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="100k events, 50 N-MNIST files, 2 repeats")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.repeats = 100_000, 2
    warnings.filterwarnings("ignore", message="AEDAT 4 recording with")  # the skipped-streams note

    peers, skipped = {}, {}
    for name, load in PEERS.items():
        try:
            peers[name] = load()
        except Exception as err:  # noqa: BLE001 - any import failure means "skip this peer"
            skipped[name] = f"{type(err).__name__}: {err}"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        inputs, left_out = gather_inputs(Path(tmp), args)
        for fmt, paths in inputs.items():
            readers = {**OURS[fmt], **{name: r[fmt] for name, r in peers.items() if fmt in r}}
            for name, read in readers.items():
                rows.append({"format": fmt, "reader": name, **measure(read, paths, args.repeats)})

    print(f"{'format':13} {'reader':18} {'files':>6} {'events':>11} {'median s':>9} {'Mevents/s':>10}")
    for r in rows:
        print(f"{r['format']:13} {r['reader']:18} {r['files']:6d} {r['events']:11,d} {r['seconds']:9.4f} "
              f"{r['events_per_s'] / 1e6:10.2f}")
    for name, why in {**skipped, **left_out}.items():
        print(f"{name}: skipped ({why})")
    result = {"rows": rows, "nmnist_source": str(args.nmnist) if args.nmnist else "synthetic",
              "events_per_generated_file": args.events, "repeats": args.repeats,
              "peers_skipped": skipped or None, "formats_left_out": left_out or None,
              "python": sys.version.split()[0], "numpy": np.__version__}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
