"""Shared pytest configuration. Area-specific fixtures live in tests/_<area>_fixtures.py."""

from pathlib import Path

import pytest
from _unipercept_fixtures import unipercept_sensitive_checkpoint, unipercept_tiny_checkpoint  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus"


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    """The shared photo corpus that CI lays beside the clone."""
    if not CORPUS.is_dir():
        pytest.skip(f"{CORPUS} is missing (CI places ../shared beside the clone)")
    return CORPUS
