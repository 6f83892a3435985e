"""A disk cache of integrated frames, keyed by everything that determines them.

One entry is a folder ``<cache_dir>/<name>-<key>/`` holding ``frames.npy``
(``float32 [N, T, C, H, W]``, opened memory-mapped) and ``settings.json`` (the
settings the key was made from, for people). The key is a hash of the
settings: integration options, sensor size, split, and the list of source
recordings with their byte sizes, so changing any of them builds a new entry.
Entries are written into a temporary folder and renamed into place, so a
reader never sees half an entry and concurrent builders cannot clash (the
first rename wins).

The default folder is ``$SPIKEFORGE_CACHE/frames`` (``~/.cache/spikeforge/frames``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

__all__ = ["default_cache_dir", "settings_key", "cached_frames"]

#: Bump when the integration code changes what it produces for the same settings.
CACHE_FORMAT = 1


def default_cache_dir() -> Path:
    """``$SPIKEFORGE_CACHE/frames``, default ``~/.cache/spikeforge/frames``."""
    return Path(os.environ.get("SPIKEFORGE_CACHE", Path.home() / ".cache" / "spikeforge")) / "frames"


def settings_key(settings: dict) -> str:
    """16 hex digits of the SHA-256 of ``settings`` as canonical JSON (plus the cache format)."""
    text = json.dumps({"cache_format": CACHE_FORMAT, **settings}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _is_complete(path: Path, shape: tuple[int, ...]) -> bool:
    try:
        frames = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return False
    return frames.shape == shape and frames.dtype == np.float32


def cached_frames(cache_dir: str | os.PathLike, name: str, settings: dict, shape: tuple[int, ...],
                  make: Callable[[int], np.ndarray]) -> Path:
    """Path of ``frames.npy`` with ``float32 shape = [N, ...]``, row ``i`` = ``make(i)``; built once per settings.

    ``make`` is called for ``i = 0 .. N-1`` in order (so it can reuse a file
    read for the previous row) only when no complete entry exists yet.
    """
    cache_dir = Path(cache_dir).expanduser()
    entry = cache_dir / f"{name}-{settings_key(settings)}"
    target = entry / "frames.npy"
    if _is_complete(target, shape):
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=cache_dir))
    try:
        frames = np.lib.format.open_memmap(tmp / "frames.npy", mode="w+", dtype=np.float32, shape=shape)
        for i in range(shape[0]):
            frames[i] = make(i)
        frames.flush()
        del frames
        (tmp / "settings.json").write_text(json.dumps(settings, indent=1, sort_keys=True))
        if entry.exists():  # an incomplete or damaged entry: replace it
            shutil.rmtree(entry, ignore_errors=True)
        try:
            os.rename(tmp, entry)
        except OSError:
            if not _is_complete(target, shape):  # not a lost race with another builder
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
