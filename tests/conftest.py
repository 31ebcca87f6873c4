"""Shared fixtures: where the real samples are, and a skip when they are absent."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"

# tests/helpers.py (the dcm2niix oracle and grid comparisons) is importable as `helpers`.
if str(REPO / "tests") not in sys.path:
    sys.path.insert(0, str(REPO / "tests"))


@pytest.fixture
def shared_data() -> Path:
    """The ../shared/data folder; skips the test when it is absent."""
    if not SHARED.is_dir():
        pytest.skip("../shared/data not found: real-data tests need the shared samples")
    return SHARED


@pytest.fixture(scope="session")
def shared_data_session() -> Path:
    """The ../shared/data folder for session-scoped fixtures; skips when it is absent."""
    if not SHARED.is_dir():
        pytest.skip("../shared/data not found: real-data tests need the shared samples")
    return SHARED
