"""Fixtures for the data tests.

Real CIFAR-10 comes from ``<repo>/../shared/data/cifar-10-python.tar.gz`` when
that folder exists (it does on the project's CI machines, never for users);
tests that need it skip otherwise. The archive is extracted once into a cache
outside the clone (``$SPIKEFORGE_TEST_CACHE/cifar10``, default
``~/.cache/spikeforge-test/cifar10``) by spikeforge's own reader, whose
extraction is atomic, so parallel or concurrent runs cannot clash.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
SHARED_CIFAR10 = REPO.parent / "shared" / "data" / CIFAR10_ARCHIVE


def _cache_dir() -> Path:
    return Path(os.environ.get("SPIKEFORGE_TEST_CACHE") or "~/.cache/spikeforge-test").expanduser()


@pytest.fixture(scope="session")
def cifar10_root() -> Path:
    """A folder holding an extracted ``cifar-10-batches-py`` (skip if unavailable)."""
    if not SHARED_CIFAR10.is_file():
        pytest.skip(f"real CIFAR-10 not available ({SHARED_CIFAR10} is absent)")
    from spikeforge.data import DatasetCorruptError, cifar10

    cache = _cache_dir() / "cifar10"
    folder = cache / "cifar-10-batches-py"
    if not folder.is_dir():
        cache.mkdir(parents=True, exist_ok=True)
        link = cache / CIFAR10_ARCHIVE
        if not link.exists():  # absent, or a stale link to a moved checkout
            tmp = cache / f".{CIFAR10_ARCHIVE}.{os.getpid()}"
            tmp.unlink(missing_ok=True)
            os.symlink(SHARED_CIFAR10, tmp)
            os.replace(tmp, link)
    try:
        cifar10(cache, train=False)  # extracts the archive on first use
    except DatasetCorruptError:
        shutil.rmtree(folder, ignore_errors=True)  # a damaged cache: rebuild it once
        cifar10(cache, train=False)
    return cache
