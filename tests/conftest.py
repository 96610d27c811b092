"""Shared pytest configuration. Area-specific fixtures live in tests/_<area>_fixtures.py.

Tests mirror the runtime's folders (images, package, backends, records, datasets, cli); the factory's
tests live in tests/factory. Markers (registered in pyproject.toml) are given by place:

- ``factory``: everything under tests/factory (torch, transformers, the export/ tools);
- ``gguf``: test_gguf_*.py (llama.cpp on GGUF files converted from a torch checkpoint);
- ``browser``: tests that drive a real headless Chromium (marked in their file).

``pytest -m "not factory and not gguf and not browser"`` runs the runtime tests without importing
torch: files whose every marker is deselected are not even collected.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _unipercept_fixtures import unipercept_sensitive_checkpoint, unipercept_tiny_checkpoint  # noqa: F401

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
CORPUS = REPO.parent / "shared" / "corpus"


def markers_of(path: Path) -> set[str]:
    """The markers a test file gets from where it lives and what it is called."""
    marks = set()
    if TESTS / "factory" in path.parents:
        marks.add("factory")
    if path.name.startswith("test_gguf_"):
        marks.add("gguf")
    return marks


def _deselected(config: pytest.Config, marks: set[str]) -> bool:
    expression = config.getoption("markexpr", "")
    if not expression or not marks:
        return False
    from _pytest.mark.expression import Expression

    return not Expression.compile(expression).evaluate(lambda name: name in marks)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Do not import a test file that -m deselects by its place (keeps torch out of a runtime run)."""
    if collection_path.suffix == ".py" and _deselected(config, markers_of(collection_path)):
        return True
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for mark in markers_of(Path(str(item.path))):
            item.add_marker(mark)


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    """The shared photo corpus that CI lays beside the clone."""
    if not CORPUS.is_dir():
        pytest.skip(f"{CORPUS} is missing (CI places ../shared beside the clone)")
    return CORPUS
