from __future__ import annotations

from pathlib import Path

import pytest

from data_prep import real_data_dir


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The real annotations (../shared/data or $KITCHEN_DATA); skip when absent."""
    d = real_data_dir()
    if d is None:
        pytest.skip("real annotations not found (set KITCHEN_DATA or place ../shared/data)")
    return d
