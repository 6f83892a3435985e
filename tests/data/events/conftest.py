"""Fixtures for the event-data tests; helpers and file writers live in ``event_files.py``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def cache_dir(tmp_path) -> Path:
    """A fresh frame cache folder per test."""
    return tmp_path / "frame-cache"
