"""The ONNX backend and the Python API (`Scorer`) on real ONNX Runtime sessions."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from _runtime_fixtures import expected_scores, make_package, tiny_package  # noqa: F401
from PIL import Image

from perceptlite import Scorer, ScoreResult
from perceptlite.backends.onnx import choose_providers
from perceptlite.errors import DeviceError, ModelNotFoundError
from perceptlite.package.manifest import ModelPackageError
from perceptlite.package.registry import DEFAULT_MODEL, MODEL_PATH_ENV, iter_packages, resolve_model


def _photo(seed: int, width=96, height=80) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=3)
    noise = rng.integers(-40, 40, size=(height, width, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def scorer(tiny_package) -> Scorer:
    return Scorer(tiny_package, device="cpu", threads=1, jobs=4, batch_size=3)


def test_scores_match_the_graph(scorer):
    image = _photo(1, 64, 64)  # already the input size: no resampling
    result = scorer.score(image)
    assert isinstance(result, ScoreResult) and result.ok
    np.testing.assert_allclose([result.iaa, result.iqa, result.ista], expected_scores(image), atol=1e-3)
    assert (result.width, result.height, result.path, result.error) == (64, 64, None, None)


def test_path_pil_and_array_agree(scorer, tmp_path):
    array = _photo(2)
    path = tmp_path / "photo.png"
    Image.fromarray(array).save(path)
    by_path = scorer.score(path)
    by_pil = scorer.score(Image.fromarray(array))
    by_array = scorer.score(array)
    assert by_path.path == str(path) and (by_path.width, by_path.height) == (96, 80)
    for axis in ("iaa", "iqa", "ista"):
        assert getattr(by_path, axis) == pytest.approx(getattr(by_pil, axis), abs=1e-4)
        assert getattr(by_array, axis) == pytest.approx(getattr(by_pil, axis), abs=1e-4)


def test_scores_depend_on_the_image(scorer):
    dark = scorer.score(np.full((64, 64, 3), 20, np.uint8))
    bright = scorer.score(np.full((64, 64, 3), 230, np.uint8))
    assert dark.iaa != pytest.approx(bright.iaa, abs=1.0)
    assert all(0 <= v <= 100 for v in (dark.iaa, dark.iqa, dark.ista, bright.iaa, bright.iqa, bright.ista))


def test_result_is_frozen_and_bad_files_do_not_raise(scorer, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_text("not an image")
    result = scorer.score(broken)
    assert not result.ok and result.iaa is None and "not an image" in result.error
    with pytest.raises(AttributeError):
        result.iaa = 1.0  # type: ignore[misc]
    with pytest.raises(ValueError):
        scorer.score(np.zeros((4, 4), np.float64))


def test_score_many_keeps_input_order_with_many_workers(tiny_package, tmp_path):
    scorer = Scorer(tiny_package, device="cpu", threads=1, jobs=8, batch_size=4)
    paths = []
    for i in range(40):
        # Different sizes make decode times differ, so workers finish out of order.
        path = tmp_path / f"{i:03d}.png"
        Image.fromarray(_photo(i, 40 + (37 * i) % 300, 50 + (53 * i) % 200)).save(path)
        paths.append(path)
    (tmp_path / "017.png").write_bytes(b"")  # a failure in the middle keeps its place too
    results = list(scorer.score_many(paths))
    assert [r.path for r in results] == [str(p) for p in paths]
    assert results[17].error and all(r.ok for i, r in enumerate(results) if i != 17)
    singles = [scorer.score(p) for p in paths[:6]]
    assert [r.iaa for r in results[:6]] == pytest.approx([r.iaa for r in singles], abs=1e-4)


def test_score_many_mixed_inputs_and_laziness(scorer):
    images = [_photo(i) for i in range(7)]
    mixed = [images[0], Image.fromarray(images[1])] + images[2:]
    results = list(scorer.score_many(mixed))
    assert len(results) == 7 and all(r.ok for r in results)
    stream = scorer.score_many(_photo(i) for i in range(10**9))  # an endless source
    first = next(stream)
    assert first.ok
    stream.close()


@pytest.mark.parametrize("threads", [1, 2])
def test_two_threads_share_one_scorer(tiny_package, threads):
    """One run at a time (threads=1) or two side by side (threads=2): the same scores from either thread."""
    scorer = Scorer(tiny_package, device="cpu", threads=threads, jobs=4)
    assert scorer.backend.parallel_runs == threads
    images = [_photo(i) for i in range(12)]
    reference = [scorer.score(image).iqa for image in images]
    outcomes: dict[int, list] = {}

    def work(worker: int) -> None:
        outcomes[worker] = [scorer.score(image).iqa for image in images] + [r.iqa for r in scorer.score_many(images)]

    threads = [threading.Thread(target=work, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for worker in range(2):
        assert outcomes[worker] == pytest.approx(reference + reference, abs=1e-4)


def test_cpu_runs_side_by_side_in_the_workers(tiny_package, tmp_path):
    """On CPU, one image per run: up to `threads` single-threaded runs at once, each in the worker that
    decoded it; the scores, their order and the failures are the same as batched inference's."""
    side_by_side = Scorer(tiny_package, device="cpu", threads=3, jobs=3)
    batched = Scorer(tiny_package, device="cpu", threads=3, jobs=3, batch_size=4)
    assert side_by_side.backend.parallel_runs == 3 and side_by_side.batch_size == 1
    assert side_by_side.backend.session.get_session_options().intra_op_num_threads == 1
    assert batched.backend.parallel_runs == 1
    assert batched.backend.session.get_session_options().intra_op_num_threads == 3
    assert Scorer(tiny_package, device="cpu", threads=1).backend.parallel_runs == 1
    one_worker = Scorer(tiny_package, device="cpu", threads=3, jobs=1)  # as RayScorer runs: the one run gets every thread
    assert one_worker.backend.parallel_runs == 1 and one_worker.backend.session.get_session_options().intra_op_num_threads == 3
    images = [_photo(i, 40 + 23 * i, 60) for i in range(15)]
    paths = []
    for i, image in enumerate(images):
        paths.append(tmp_path / f"{i:02d}.png")
        Image.fromarray(image).save(paths[-1])
    paths[6].write_bytes(b"not a png")
    results = list(side_by_side.score_many(paths))
    reference = list(batched.score_many(paths))
    assert [r.path for r in results] == [str(p) for p in paths]
    assert [r.ok for r in results] == [i != 6 for i in range(15)]
    assert results[6].error == reference[6].error
    for mine, theirs in zip(results, reference):
        assert (mine.iaa, mine.iqa, mine.ista) == pytest.approx((theirs.iaa, theirs.iqa, theirs.ista), abs=1e-4)
    single = side_by_side.score(paths[0])
    assert (single.iaa, single.iqa, single.ista) == pytest.approx((results[0].iaa, results[0].iqa, results[0].ista), abs=1e-4)


def test_fixed_batch_models_and_variants(tmp_path):
    package = make_package(tmp_path / "fixed", size=(32, 32), batch=1, int8_variant=True)
    fixed = Scorer(package, device="cpu", threads=1, batch_size=5)
    images = [_photo(i, 32, 32) for i in range(7)]
    results = list(fixed.score_many(images))
    np.testing.assert_allclose([r.ista for r in results], [expected_scores(i)[2] for i in images], atol=1e-3)
    int8 = Scorer(package, device="cpu", variant="int8")
    assert int8.score(images[0]).iaa != pytest.approx(results[0].iaa, abs=1e-3)
    with pytest.raises(ModelPackageError, match="no variant 'q4'"):
        Scorer(package, variant="q4")


def test_corrupt_package_is_refused(tmp_path):
    package = make_package(tmp_path / "corrupt")
    data = bytearray((package / "model.onnx").read_bytes())
    data[-1] ^= 0xFF
    (package / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelPackageError, match="sha256"):
        Scorer(package)


def test_registry_names_and_folders(tmp_path, monkeypatch):
    make_package(tmp_path / "extra" / "alpha", name="alpha")
    monkeypatch.setenv(MODEL_PATH_ENV, str(tmp_path / "extra"))
    assert resolve_model("alpha") == tmp_path / "extra" / "alpha"
    assert any(e.name == "alpha" and e.source == "env" for e in iter_packages())
    assert Scorer("alpha", device="cpu").package.name == "alpha"
    with pytest.raises(ModelNotFoundError, match="no model package named 'beta'"):
        resolve_model("beta")
    with pytest.raises(ModelNotFoundError, match="no such model package folder"):
        resolve_model("./not/here")
    if not any(e.name == DEFAULT_MODEL for e in iter_packages()):
        with pytest.raises(ModelNotFoundError, match="no bundled model is installed"):
            resolve_model(None)


def test_device_choice():
    assert choose_providers("cpu", ["CUDAExecutionProvider", "CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert choose_providers("auto", ["CoreMLExecutionProvider", "CPUExecutionProvider"])[0] == "CoreMLExecutionProvider"
    assert choose_providers("auto", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert choose_providers("cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"])[0] == "CUDAExecutionProvider"
    with pytest.raises(DeviceError, match="no CUDA provider"):
        choose_providers("cuda", ["CPUExecutionProvider"])


def test_graph_and_manifest_sizes_must_agree(tmp_path):
    import json

    package = make_package(tmp_path / "mismatch", size=(32, 32))
    manifest = json.loads((package / "perceptlite.json").read_text())
    manifest["input"]["size"] = [48, 48]
    (package / "perceptlite.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelPackageError, match="input.size is 48x48"):
        Scorer(package, device="cpu")


def test_options_dataclass_and_bytes_input(tiny_package, tmp_path):
    """ScoreOptions is the one set of knobs; keywords replace its fields; encoded bytes score like their file."""
    from perceptlite import ScoreOptions

    options = ScoreOptions(device="cpu", threads=1, batch_size=2, jobs=2)
    scorer = Scorer(tiny_package, options, batch_size=3)
    assert scorer.options == ScoreOptions(device="cpu", threads=1, batch_size=3, jobs=2) and scorer.batch_size == 3
    path = tmp_path / "photo.jpg"
    Image.fromarray(_photo(7, 200, 150)).save(path, quality=90)  # big enough for JPEG draft decoding
    by_path = scorer.score(path)
    by_bytes = scorer.score(path.read_bytes())
    assert by_bytes.path is None and (by_bytes.width, by_bytes.height) == (200, 150)
    assert by_bytes.scores() == pytest.approx(by_path.scores(), abs=1e-6)
    many = list(scorer.score_many([path.read_bytes(), b"", b"not an image", bytearray(path.read_bytes())]))
    assert [r.ok for r in many] == [True, False, False, True]
    assert many[1].error == "empty file (0 bytes)" and "not an image" in many[2].error
    with pytest.raises(TypeError):
        Scorer(tiny_package, no_such_option=1)


def test_max_pixels_above_pillows_guard_without_touching_it(tiny_package, monkeypatch):
    """max_pixels works through the options alone: above Pillow's own guard, a file Pillow would
    refuse is scored (and the guard is left as it was); at or below it, our one-line reason."""
    import io

    buffer = io.BytesIO()
    Image.fromarray(_photo(8, 120, 100)).save(buffer, "PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)  # Pillow refuses > 4000 pixels
    assert Scorer(tiny_package, device="cpu", max_pixels=20_000).score(buffer.getvalue()).ok
    assert Image.MAX_IMAGE_PIXELS == 2000
    refused = Scorer(tiny_package, device="cpu", max_pixels=4000).score(buffer.getvalue())
    assert "megapixels" in refused.error and "max-pixels" in refused.error


def test_loading_hashes_only_the_files_it_opens(tmp_path):
    package_dir = make_package(tmp_path / "two", int8_variant=True)
    data = bytearray((package_dir / "model.int8.onnx").read_bytes())
    data[-1] ^= 0xFF
    (package_dir / "model.int8.onnx").write_bytes(bytes(data))  # the variant this run does not open
    assert Scorer(package_dir, device="cpu", variant="fp32").score(_photo(9)).ok
    with pytest.raises(ModelPackageError, match="model.int8.onnx fails its sha256"):
        Scorer(package_dir, device="cpu", variant="int8")
    from perceptlite.package.manifest import load_package

    with pytest.raises(ModelPackageError, match="model.int8.onnx fails its sha256"):
        load_package(package_dir).verify()  # what `perceptlite models show` does
