"""llama.cpp's conversion tools, obtained offline-safely from the pinned llama-cpp-python sdist.

The `llama-cpp-python` source distribution on PyPI vendors llama.cpp, including
`convert_hf_to_gguf.py`, the `gguf` Python package (`gguf-py/`) and the Qwen2 vocabulary file
`models/ggml-vocab-qwen2.gguf`. The built wheel has none of these, so the factory downloads the
sdist once through pip (the package registry) and unpacks it into a cache folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
SDIST_NAME = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}"


def cache_dir() -> Path:
    root = os.environ.get("PERCEPTLITE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "perceptlite"
    )
    return Path(root)


def llama_cpp_dir() -> Path:
    """The vendored llama.cpp source tree, downloading and unpacking the sdist on first use."""
    target = cache_dir() / SDIST_NAME
    tree = target / "vendor" / "llama.cpp"
    if (tree / "convert_hf_to_gguf.py").is_file():
        return tree
    cache_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        archive = _find_sdist(Path(tmp))
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        os.replace(Path(tmp) / SDIST_NAME, target) if not target.exists() else None
    if not (tree / "convert_hf_to_gguf.py").is_file():
        raise RuntimeError(f"{target}: the llama-cpp-python sdist has no vendor/llama.cpp/convert_hf_to_gguf.py")
    return tree


def _find_sdist(download_to: Path) -> Path:
    local = os.environ.get("PERCEPTLITE_LLAMA_SDIST")
    if local and Path(local).is_file():
        return Path(local)
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary",
        ":all:",
        "--quiet",
        "-d",
        str(download_to),
        f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}",
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    archives = sorted(download_to.glob(f"{SDIST_NAME}.tar.gz"))
    if result.returncode != 0 or not archives:
        raise RuntimeError(
            f"could not download llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION} source from the package "
            f"registry: {result.stderr.strip().splitlines()[-1] if result.stderr.strip() else 'no archive'}"
        )
    return archives[0]


def converter_script() -> Path:
    return llama_cpp_dir() / "convert_hf_to_gguf.py"


def gguf_py_dir() -> Path:
    """Put this folder first on sys.path (or PYTHONPATH) to import the matching `gguf` package."""
    return llama_cpp_dir() / "gguf-py"


def qwen2_vocab_file() -> Path:
    return llama_cpp_dir() / "models" / "ggml-vocab-qwen2.gguf"


def import_gguf():
    """Import the `gguf` package that matches the pinned converter."""
    path = str(gguf_py_dir())
    if path not in sys.path:
        sys.path.insert(0, path)
    import gguf  # noqa: PLC0415

    return gguf
