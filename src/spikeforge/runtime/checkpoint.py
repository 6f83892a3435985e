"""Checkpoints: atomic writes with a checksum, safe verified loads (``weights_only=True``), RNG capture
for exact resume.

A checkpoint carries the SHA-256 of its content (every tensor's bytes, dtype and shape, and every
other entry, in the order saved) as its ``sha256`` entry, written in the same file, so the two are
replaced by one rename and can never disagree after a crash. A load recomputes it: a file damaged on
disk (whose zip container torch reads without checking) is refused instead of resuming with damaged
weights. Checkpoints from before checksums load unverified.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import numpy as np
import torch

from .runfolder import atomic_write

__all__ = ["save_checkpoint", "load_checkpoint", "content_sha256", "rng_state", "set_rng_state"]

#: The entry holding a checkpoint's checksum.
CHECKSUM = "sha256"


def content_sha256(state) -> str:
    """SHA-256 (hex) of a checkpoint's content: tensors by dtype, shape and bytes; containers by their
    entries in order; numbers, strings, booleans and None by value; anything else by type."""
    digest = hashlib.sha256()
    _update(digest, state)
    return digest.hexdigest()


def _update(digest, value) -> None:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"tensor {tensor.dtype} {tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(value, dict):
        digest.update(f"dict {len(value)}\n".encode())
        for key, item in value.items():
            _update(digest, key)
            _update(digest, item)
    elif isinstance(value, (list, tuple)):
        digest.update(f"{type(value).__name__} {len(value)}\n".encode())
        for item in value:
            _update(digest, item)
    elif value is None or isinstance(value, (bool, int, float, str)):
        digest.update(f"{type(value).__name__} {value!r}\n".encode())
    else:
        digest.update(f"{type(value).__name__}\n".encode())


def save_checkpoint(state: dict, path: str | Path) -> None:
    """Write ``state`` with its checksum to ``path`` atomically: a crash mid-write leaves the old file
    intact, a failed write (disk full) raises a one-line :class:`~spikeforge.runtime.runfolder.WriteError`."""
    signed = {**state, CHECKSUM: content_sha256(state)}
    atomic_write(path, lambda f: torch.save(signed, f))


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load a checkpoint without unpickling arbitrary objects and check its checksum; one-line
    ValueError when unreadable or damaged."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # corrupt, truncated or not a torch file
        raise ValueError(f"checkpoint {path} is not a readable spikeforge checkpoint ({type(err).__name__})") from None
    expected = state.pop(CHECKSUM, None) if isinstance(state, dict) else None
    if expected is not None and content_sha256(state) != expected:
        raise ValueError(f"checkpoint {path}: checksum mismatch: the file is damaged")
    return state


def rng_state() -> dict:
    """Every RNG that training touches, in a ``weights_only``-loadable form."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(_tuples(state["python"]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(value):
    """``random.setstate`` needs tuples where a round trip may give lists."""
    if isinstance(value, (list, tuple)):
        return tuple(_tuples(v) for v in value)
    return value
