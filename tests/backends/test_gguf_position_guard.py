"""The guard for the InternVL position-embedding fix: the export records it in the mmproj's GGUF metadata with
a known answer (a probe image's features, from the torch reference), and the runtime verifies it at load.

Real files: the tiny image-sensitive checkpoint converted by llama.cpp's converter, the mmproj read back by
gguf-py and by perceptlite's own header reader, and llama.cpp (mtmd) computing the probe's features.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install 'perceptlite[gguf]')")
torch = pytest.importorskip("torch")

from export.unipercept import gguf as gguf_export  # noqa: E402
from export.unipercept import llama_cpp_source  # noqa: E402
from perceptlite.backends import vision_probe  # noqa: E402
from perceptlite.backends.gguf import GgufBackend  # noqa: E402
from perceptlite.backends.gguf_metadata import GgufMetadataError, read_gguf_metadata  # noqa: E402
from perceptlite.package.manifest import ModelPackageError, load_package, write_package  # noqa: E402

MMPROJ = "mmproj-f16.gguf"


@pytest.fixture(scope="module")
def package(unipercept_sensitive_checkpoint: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gguf") / "unipercept-tiny-gguf"
    assert gguf_export.main([str(unipercept_sensitive_checkpoint), str(out), "--quant", "f16", "--default", "f16", "--threads", "2"]) == 0
    return out


def _rehashed_copy(package: Path, target: Path, damage) -> Path:
    """A copy of the package whose mmproj `damage(path)` changed in place, its manifest re-hashed (so only the
    guard can notice)."""
    shutil.copytree(package, target)
    damage(target / MMPROJ)
    manifest = json.loads((target / "perceptlite.json").read_text())
    write_package(target, manifest, (target / "MODEL_CARD.md").read_text())
    return target


def _rows_in_internvit_order(mmproj: Path) -> None:
    """Undo the export's rotation: [CLS, patches] again, which is what the rotated rows amount to for a
    llama.cpp whose graph puts CLS first (the case the guard exists for)."""
    gguf = llama_cpp_source.import_gguf()
    reader = gguf.GGUFReader(str(mmproj), "r+")
    (tensor,) = [t for t in reader.tensors if t.name == "v.position_embd.weight"]
    rows = tensor.data.reshape(-1, int(tensor.shape[0]))
    rows[:] = np.roll(np.array(rows), 1, axis=0)
    reader.data.flush()
    del reader


def test_the_export_records_the_fix_in_the_mmproj(package: Path, unipercept_sensitive_checkpoint: Path) -> None:
    ours = read_gguf_metadata(package / MMPROJ)
    theirs = gguf_export.read_gguf_metadata(package / MMPROJ)  # gguf-py, the converter's own reader (scalars)
    for key in (vision_probe.POSITION_ORDER_KEY, vision_probe.LLAMA_CPP_KEY, "clip.projector_type"):
        assert ours[key] == theirs[key]
    assert ours[vision_probe.POSITION_ORDER_KEY] == "patches,cls"
    assert ours[vision_probe.LLAMA_CPP_KEY] == llama_cpp_source.LLAMA_CPP_PYTHON_VERSION
    sketch = ours[vision_probe.PROBE_KEY]
    assert sketch.dtype == np.float32 and sketch.shape == (256,)
    reference = gguf_export.reference_probe_sketch(unipercept_sensitive_checkpoint)
    np.testing.assert_allclose(sketch, reference, rtol=1e-6, atol=1e-7)
    assert np.std(sketch) > 1e-3  # the probe's features differ from token to token


def test_the_runtime_recomputes_the_probe_through_llama_cpp(package: Path) -> None:
    with GgufBackend(load_package(package), device="cpu", threads=2) as backend:
        agreement = backend.probe_agreement
        print(f"probe, fix in place: correlation {agreement.correlation:.6f}, relative error {agreement.relative_error:.5f}")
        assert agreement.correlation > 0.9999 and agreement.relative_error < 0.01
        assert backend.rate(backend.prepare(_photo())), "the backend still scores once the guard has passed"


def test_a_graph_that_no_longer_matches_the_fix_is_refused(package: Path, tmp_path: Path) -> None:
    copy = _rehashed_copy(package, tmp_path / "pkg", _rows_in_internvit_order)
    with pytest.raises(ModelPackageError) as caught:
        GgufBackend(load_package(copy), device="cpu", threads=2)
    message = str(caught.value)
    print(message)
    assert f"{MMPROJ}: llama.cpp" in message and "does not reproduce the image features" in message and "\n" not in message
    correlation = float(message.split("probe correlation ")[1].split(",")[0])
    assert correlation < vision_probe.MIN_CORRELATION


def test_an_mmproj_without_the_record_is_refused(package: Path, tmp_path: Path) -> None:
    keys = (vision_probe.POSITION_ORDER_KEY, vision_probe.PROBE_KEY, vision_probe.LLAMA_CPP_KEY)
    copy = _rehashed_copy(package, tmp_path / "pkg", lambda path: gguf_export.rewrite_gguf_metadata(path, {}, remove=keys))
    assert vision_probe.POSITION_ORDER_KEY not in read_gguf_metadata(copy / MMPROJ)
    with pytest.raises(ModelPackageError) as caught:
        GgufBackend(load_package(copy), device="cpu", threads=2)
    message = str(caught.value)
    assert "no record of the InternVL position-embedding fix" in message and "re-export" in message and "\n" not in message


def test_the_header_reader_refuses_what_is_not_gguf(tmp_path: Path, package: Path) -> None:
    text = tmp_path / "notes.gguf"
    text.write_text("not a model")
    with pytest.raises(GgufMetadataError, match="not a GGUF file"):
        read_gguf_metadata(text)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes((package / MMPROJ).read_bytes()[:200])
    with pytest.raises(GgufMetadataError, match="ends early"):
        read_gguf_metadata(cut)


def test_the_probe_image_is_fixed_bytes() -> None:
    pixels = vision_probe.probe_pixels()
    assert pixels.shape == (448, 448, 3) and pixels.dtype == np.uint8
    assert int(pixels.astype(np.int64).sum()) == 76_670_720  # the same bytes wherever it is computed
    assert not np.array_equal(pixels[:56, :56], pixels[:56, 56:112])  # neighbouring blocks differ


def _photo():
    from PIL import Image

    return Image.fromarray(vision_probe.probe_pixels()[::-1].copy())
