"""Shared fixtures: paths to ../shared/data and tiny synthetic GeoTIFFs."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("GLOG_v", "3")  # keep MindSpore quiet

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ROADSEG_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; tests that need it skip with a reason where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real reference data not found at {SHARED_DATA} (set ROADSEG_SHARED_DATA)")
    return SHARED_DATA
