"""A disk cache of integrated frames, keyed by everything that determines them.

One entry is a folder ``<cache_dir>/<name>-<key>/`` holding ``frames.npy``
(``float32 [N, T, C, H, W]``, opened memory-mapped), ``settings.json`` (the
settings the key was made from, for people) and ``digest.json`` (the BLAKE2b
digest of ``frames.npy``). The key is a hash of the settings: integration
options, sensor size, split, and the identity of every source recording (its
size, modification time in ns and inode, so an edit in place builds a new
entry). An entry is used only when ``frames.npy`` has the expected shape and
its digest matches ``digest.json``; otherwise (a damaged, truncated or replaced
file) it is rebuilt with one warning. Entries are written into a temporary
folder (files fsynced) and renamed into place, so a reader never sees half an
entry and concurrent builders cannot clash (the first rename wins).

The default folder is ``$SPIKEFORGE_CACHE/frames`` (``~/.cache/spikeforge/frames``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

__all__ = ["default_cache_dir", "settings_key", "file_digest", "cached_frames"]

#: Bump when the integration code changes what it produces for the same settings.
CACHE_FORMAT = 2
DIGEST_FILE = "digest.json"


def default_cache_dir() -> Path:
    """``$SPIKEFORGE_CACHE/frames``, default ``~/.cache/spikeforge/frames``."""
    return Path(os.environ.get("SPIKEFORGE_CACHE", Path.home() / ".cache" / "spikeforge")) / "frames"


def settings_key(settings: dict) -> str:
    """16 hex digits of the SHA-256 of ``settings`` as canonical JSON (plus the cache format)."""
    text = json.dumps({"cache_format": CACHE_FORMAT, **settings}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_digest(path: Path, chunk: int = 1 << 24) -> str:
    """BLAKE2b hex digest of a file's bytes, read in chunks of ``chunk`` bytes."""
    digest = hashlib.blake2b()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _problem(entry: Path, shape: tuple[int, ...]) -> str | None:
    """Why the entry cannot be used (None: it is complete and intact)."""
    target = entry / "frames.npy"
    try:
        frames = np.load(target, mmap_mode="r")
        recorded = json.loads((entry / DIGEST_FILE).read_text())["blake2b"]
    except (OSError, ValueError, KeyError, TypeError):
        return "missing, truncated or without its digest"
    if frames.shape != shape or frames.dtype != np.float32:
        return f"holds {frames.dtype} {frames.shape}, expected float32 {shape}"
    del frames
    if file_digest(target) != recorded:
        return "its bytes do not match the digest recorded when it was built"
    return None


def _write_synced(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def cached_frames(cache_dir: str | os.PathLike, name: str, settings: dict, shape: tuple[int, ...],
                  make: Callable[[int], np.ndarray]) -> Path:
    """Path of ``frames.npy`` with ``float32 shape = [N, ...]``, row ``i`` = ``make(i)``; built once per settings.

    ``make`` is called for ``i = 0 .. N-1`` in order (so it can reuse a file
    read for the previous row) only when no complete entry exists yet.
    """
    cache_dir = Path(cache_dir).expanduser()
    entry = cache_dir / f"{name}-{settings_key(settings)}"
    target = entry / "frames.npy"
    problem = _problem(entry, shape) if entry.exists() else "absent"
    if problem is None:
        return target
    if entry.exists():
        warnings.warn(f"frame cache {target}: {problem}; rebuilding it", stacklevel=2)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=cache_dir))
    try:
        frames = np.lib.format.open_memmap(tmp / "frames.npy", mode="w+", dtype=np.float32, shape=shape)
        for i in range(shape[0]):
            frames[i] = make(i)
        frames.flush()
        del frames
        with open(tmp / "frames.npy", "rb+") as f:
            os.fsync(f.fileno())
        _write_synced(tmp / "settings.json", json.dumps(settings, indent=1, sort_keys=True))
        _write_synced(tmp / DIGEST_FILE, json.dumps({"blake2b": file_digest(tmp / "frames.npy")}))
        if entry.exists():  # an incomplete or damaged entry: replace it
            shutil.rmtree(entry, ignore_errors=True)
        try:
            os.rename(tmp, entry)
        except OSError:
            if _problem(entry, shape) is not None:  # not a lost race with another builder
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
