"""Fixtures for the dashboard tests: small synthetic stores written with the Store API."""

from __future__ import annotations

from pathlib import Path

import pytest
from synthetic_runs import write_synthetic_store


@pytest.fixture(scope="session")
def shared_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two runs × 5 checkpoints with every probe; tests must not write to it."""
    return write_synthetic_store(tmp_path_factory.mktemp("dashboard") / "shared.sqlite", n_steps=5, grid=9)


@pytest.fixture
def fresh_store(tmp_path: Path) -> Path:
    """Like ``shared_store`` but private to one test, which may append to it."""
    return write_synthetic_store(tmp_path / "fresh.sqlite", n_steps=5, grid=9)
