"""Session fixtures for everything that needs a UniPercept-layout checkpoint (this area and the GGUF tests)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LOCAL_SDIST = Path("/tmp/llama/llama_cpp_python-0.3.36.tar.gz")


@pytest.fixture(scope="session")
def unipercept_tiny_checkpoint(tmp_path_factory) -> Path:
    """The tiny random checkpoint (export.unipercept.tiny.generate, seed 0); treat it as read-only."""
    pytest.importorskip("torch")
    if LOCAL_SDIST.is_file():  # saves the one-time sdist download where a copy is at hand
        os.environ.setdefault("PERCEPTLITE_LLAMA_SDIST", str(LOCAL_SDIST))
    from export.unipercept import tiny

    return tiny.generate(tmp_path_factory.mktemp("unipercept") / "tiny-random", seed=0)


@pytest.fixture(scope="session")
def unipercept_sensitive_checkpoint(unipercept_tiny_checkpoint: Path, tmp_path_factory) -> Path:
    """The tiny checkpoint after a short run of the training recipe: its scores depend on the image. Read-only."""
    import torch

    from export.unipercept import tiny

    threads = torch.get_num_threads()
    torch.set_num_threads(min(2, threads))
    try:
        return tiny.make_image_sensitive_checkpoint(
            tmp_path_factory.mktemp("unipercept") / "tiny-sensitive", seed=0, base=unipercept_tiny_checkpoint
        )
    finally:
        torch.set_num_threads(threads)
