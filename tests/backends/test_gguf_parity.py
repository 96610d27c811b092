"""GGUF export + llama.cpp backend against the torch reference scorer, on the tiny UniPercept checkpoint.

Real files all the way: llama.cpp's pinned converter writes the GGUFs, llama.cpp's quantiser makes
Q8_0/Q4_K_M, llama-cpp-python (mtmd) runs them, and export.unipercept.reference.ReferenceScorer is the truth.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install 'perceptlite[gguf]')")
torch = pytest.importorskip("torch")
scipy_stats = pytest.importorskip("scipy.stats")

from export.unipercept import gguf as gguf_export  # noqa: E402
from export.unipercept import reference as unipercept  # noqa: E402
from perceptlite.backends.gguf import VQA_INSTRUCTION, GgufBackend  # noqa: E402
from perceptlite.package.manifest import AXES, ModelPackageError, load_package, sha256_file, write_package  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
IMAGENET_MEAN = [0.485, 0.456, 0.406]
F16_TOLERANCE = 1.0
Q8_TOLERANCE = 2.5
MIN_SRCC = 0.95
PARITY_IMAGES = 10
TIE = 0.01  # logits closer than this may swap places (bf16-trained weights, F16 activations)


@pytest.fixture(scope="module")
def checkpoint(unipercept_sensitive_checkpoint: Path, tmp_path_factory) -> Path:
    """The image-sensitive tiny checkpoint, seen through symlinks without its preprocessor_config.json.

    Dropping that file makes the export take its own path (an ImageNet preprocessor config in a
    temporary overlay), which a real UniPercept checkpoint needs.
    """
    folder = tmp_path_factory.mktemp("checkpoint") / "unipercept-tiny"
    folder.mkdir()
    for item in Path(unipercept_sensitive_checkpoint).iterdir():
        if item.name != "preprocessor_config.json":
            (folder / item.name).symlink_to(item.resolve())
    return folder


@pytest.fixture(scope="module")
def package(checkpoint: Path, tmp_path_factory) -> Path:
    before = sorted(p.name for p in checkpoint.iterdir())
    out = tmp_path_factory.mktemp("gguf") / "unipercept-tiny-gguf"
    assert gguf_export.main([str(checkpoint), str(out), "--quant", "f16,q8_0,q4_k_m", "--default", "q8_0", "--threads", "2"]) == 0
    assert sorted(p.name for p in checkpoint.iterdir()) == before, "the export must not touch the checkpoint folder"
    return out


@pytest.fixture(scope="module")
def images(corpus_dir: Path) -> list[Image.Image]:
    """Ten different real photos: ImageNet samples and BSDS500 scenes."""
    paths = sorted((corpus_dir / "imagenet-sample").glob("*.JPEG"))[::97][:5]
    paths += sorted((corpus_dir / "bsds500" / "val").glob("*.jpg"))[::17][: PARITY_IMAGES - len(paths)]
    assert len(paths) == PARITY_IMAGES
    loaded = []
    for path in paths:
        with Image.open(path) as image:
            loaded.append(image.convert("RGB"))
    return loaded


@pytest.fixture(scope="module")
def reference(checkpoint: Path):
    torch.set_num_threads(2)
    return unipercept.ReferenceScorer(checkpoint)


@pytest.fixture(scope="module")
def reference_scores(reference, images) -> list[dict[str, float]]:
    return [reference.rate(image) for image in images]


@pytest.fixture(scope="module")
def backends(package: Path):
    loaded = load_package(package)
    opened = {variant: GgufBackend(loaded, device="cpu", threads=2, variant=variant) for variant in ("f16", "q8_0")}
    yield opened
    for backend in opened.values():
        backend.close()


def _gguf_scores(backend: GgufBackend, images) -> list[dict[str, float]]:
    return [backend.rate(backend.prepare(image)) for image in images]


# -- the package ---------------------------------------------------------------------------------


def test_package_manifest(package: Path, checkpoint: Path, reference) -> None:
    loaded = load_package(package)
    loaded.verify()  # checks every sha256
    assert loaded.backend == "gguf"
    assert loaded.variants == {v: f"model-{v}.gguf" for v in ("f16", "q8_0", "q4_k_m")}
    assert loaded.default_variant == "q8_0"
    spec = loaded.raw["gguf"]
    assert spec["mmproj"] == "mmproj-f16.gguf" and spec["image_size"] == 448
    assert spec["score_token_ids"] == [int(i) for i in reference.score_ids]
    assert spec["rating_prompts"] == {axis: unipercept.rating_prompt(axis) for axis in AXES}
    assert spec["system_message"] == reference.system_message
    assert loaded.input.size == (448, 448) and loaded.input.resize == "stretch" and loaded.input.interpolation == "bicubic"
    source = loaded.raw["provenance"]["source_checkpoint"]
    assert source["config_sha256"] == sha256_file(checkpoint / "config.json")
    assert (package / "MODEL_CARD.md").read_text().startswith("# unipercept-tiny-gguf")
    assert not list(package.parent.glob(".*partial*")), "no staging folder is left behind"


def test_gguf_metadata(package: Path, checkpoint: Path) -> None:
    gguf = gguf_export.llama_cpp_source.import_gguf()
    config = json.loads((checkpoint / "config.json").read_text())
    mmproj = gguf.GGUFReader(str(package / "mmproj-f16.gguf"))
    fields = mmproj.fields
    assert fields["clip.projector_type"].contents() == "internvl"
    assert fields["clip.has_vision_encoder"].contents() is True
    assert fields["clip.vision.image_size"].contents() == 448
    assert fields["clip.vision.patch_size"].contents() == 14
    assert fields["clip.vision.projector.scale_factor"].contents() == 2
    assert fields["clip.vision.block_count"].contents() == config["vision_config"]["num_hidden_layers"]
    assert np.allclose(fields["clip.vision.image_mean"].contents(), IMAGENET_MEAN)
    assert np.allclose(fields["clip.vision.image_std"].contents(), [0.229, 0.224, 0.225])
    expected_file_types = {"f16": 1, "q8_0": 7, "q4_k_m": 15}  # llama_ftype values
    for variant, file_type in expected_file_types.items():
        text, tokens = gguf_export.text_model_vocabulary(package / f"model-{variant}.gguf", [151644, 151665, 151667])
        assert text["general.architecture"] == "qwen2"
        assert text["tokenizer.ggml.pre"] == "qwen2"
        assert text["general.file_type"] == str(file_type)
        assert text["qwen2.embedding_length"] == str(config["llm_config"]["hidden_size"])
        assert tokens == ["<|im_start|>", "<img>", "<IMG_CONTEXT>"]
    sizes = [(package / f"model-{v}.gguf").stat().st_size for v in ("f16", "q8_0", "q4_k_m")]
    assert sizes[0] > sizes[1] > sizes[2]


def test_every_variant_loads_in_llama_cpp(package: Path, images) -> None:
    loaded = load_package(package)
    with GgufBackend(loaded, device="cpu", threads=2, variant="q4_k_m") as backend:
        scores = backend.rate(backend.prepare(images[0]))
    assert set(scores) == set(AXES) and all(0.0 <= s <= 100.0 for s in scores.values())


# -- parity --------------------------------------------------------------------------------------


def test_prompt_tokens_match_reference_tokenizer(backends, reference) -> None:
    """llama.cpp tokenizes each question after the image exactly as the checkpoint's tokenizer does."""
    backend = backends["f16"]
    for axis in AXES:
        suffix = unipercept.split_prompt(reference.system_message, unipercept.rating_prompt(axis))[1]
        assert backend._rating_suffixes[axis] == reference.tokenizer.encode(suffix, add_special_tokens=False), axis


def test_image_embeddings_match_reference(backends, reference, images) -> None:
    """The mmproj (InternViT + pixel shuffle + mlp1) reproduces the reference's image tokens."""
    backend = backends["f16"]
    for image in images[:3]:
        ours = backend.image_embeddings(backend.prepare(image))
        theirs = reference.image_embeddings(image)[0].detach().float().numpy()
        assert ours.shape == theirs.shape == (256, theirs.shape[1])
        assert np.corrcoef(ours.ravel(), theirs.ravel())[0, 1] > 0.9999
        assert np.abs(ours - theirs).max() < 0.02 * np.abs(theirs).max()


@pytest.mark.parametrize("variant, tolerance", [("f16", F16_TOLERANCE), ("q8_0", Q8_TOLERANCE)])
def test_scores_match_reference(backends, images, reference_scores, variant: str, tolerance: float) -> None:
    ours = _gguf_scores(backends[variant], images)
    worst = max(abs(o[a] - r[a]) for o, r in zip(ours, reference_scores) for a in AXES)
    assert worst <= tolerance, f"{variant}: largest difference {worst:.3f} points (allowed {tolerance})"
    for axis in AXES:
        theirs = [r[axis] for r in reference_scores]
        assert np.ptp(theirs) > 2.0, f"{axis}: reference scores barely vary across images; the fixture is not image-sensitive"
        srcc = scipy_stats.spearmanr([o[axis] for o in ours], theirs).statistic
        assert srcc >= MIN_SRCC, f"{variant} {axis}: SRCC {srcc:.3f} < {MIN_SRCC}"


def test_top5_score_tokens_agree(backends, reference, images) -> None:
    """Same five best score tokens at the last position; a swap is allowed only across a near tie."""
    backend = backends["f16"]
    for image in images[:4]:
        for axis in AXES:
            theirs = reference.score_token_logits(image, axis)[reference.score_ids].numpy()
            ours = backend.score_token_logits(backend.prepare(image), axis)
            assert np.abs(ours - theirs).max() < 0.05, axis
            fifth = np.sort(theirs)[-5]
            differ = set(np.argsort(-ours)[:5]) ^ set(np.argsort(-theirs)[:5])
            assert all(abs(theirs[i] - fifth) < TIE for i in differ), (axis, differ)


def test_prefix_reuse_equals_separate_prompts(backends, images) -> None:
    backend = backends["q8_0"]
    pixels = backend.prepare(images[1])
    together = backend.rate(pixels)
    for axis in AXES:
        assert backend.rate(pixels, axes=[axis])[axis] == pytest.approx(together[axis], abs=1e-3)


# -- questions -----------------------------------------------------------------------------------


def test_vqa_prompt_is_unipercepts(reference) -> None:
    assert VQA_INSTRUCTION.format(question="Q?") == unipercept.vqa_prompt("Q?")


def test_choose_reads_out_as_eval_vqa_or_by_logits(backends, images) -> None:
    """The default read-out may be any character (the tiny model's reply is not a letter); the
    logit read-out is always one of the allowed options."""
    backend = backends["q8_0"]
    question = "How is the exposure of this photo?\nA. Overexposed\nB. Underexposed\nC. Well exposed\nD. Cannot tell"
    pixels = backend.prepare(images[2])
    reply = backend.ask(pixels, VQA_INSTRUCTION.format(question=question), max_tokens=4)
    assert backend.choose(pixels, question) == reply.strip().upper()[:1]
    assert backend.choose(pixels, question, protocol="logits") in "ABCD"
    assert backend.choose(pixels, question, letters="AB", protocol="logits") in "AB"


def test_free_answer_matches_reference_greedy_reply(backends, reference, images) -> None:
    backend = backends["f16"]
    ours = backend.ask(backend.prepare(images[3]), "What is in this picture?", max_tokens=2)
    theirs = reference.reply(images[3], "What is in this picture?", max_new_tokens=2)
    assert ours == theirs


# -- failures a user can cause --------------------------------------------------------------------


def _copy_package(package: Path, target: Path) -> Path:
    shutil.copytree(package, target)
    return target


def test_corrupted_gguf_is_refused_by_its_hash(package: Path, tmp_path: Path) -> None:
    copy = _copy_package(package, tmp_path / "pkg")
    with open(copy / "mmproj-f16.gguf", "r+b") as handle:
        handle.seek(5000)
        handle.write(b"\xff" * 16)
    loaded = load_package(copy)  # reads the manifest; a file's hash is checked when it is opened
    with pytest.raises(ModelPackageError, match="mmproj-f16.gguf fails its sha256 check"):
        GgufBackend(loaded, device="cpu", threads=1)
    with pytest.raises(ModelPackageError, match="mmproj-f16.gguf fails its sha256 check"):
        loaded.verify()


@pytest.mark.parametrize(
    "name, damage, reason",
    [
        ("model-q8_0.gguf", lambda data: data[: len(data) // 3], "not within the file bounds"),
        ("mmproj-f16.gguf", lambda data: b"junk" + data[4:], "invalid magic"),
    ],
)
def test_gguf_that_llama_cpp_cannot_load_is_refused(package: Path, tmp_path: Path, name: str, damage, reason: str) -> None:
    copy = _copy_package(package, tmp_path / "pkg")
    target = copy / name
    target.write_bytes(damage(target.read_bytes()))  # then re-hashed, so only llama.cpp can notice
    manifest = json.loads((copy / "perceptlite.json").read_text())
    write_package(copy, {**manifest, "files": list(manifest["files"])}, (copy / "MODEL_CARD.md").read_text())
    with pytest.raises(ModelPackageError) as caught:
        GgufBackend(load_package(copy), device="cpu", threads=1)
    message = str(caught.value)
    assert f"{name}: llama.cpp cannot load this GGUF file" in message and reason in message
    assert "\n" not in message


def test_missing_llama_cpp_python_gives_install_command(package: Path) -> None:
    code = (
        "import sys; sys.modules['llama_cpp'] = None\n"
        "from perceptlite.package.manifest import load_package\n"
        "from perceptlite.backends.base import load_backend\n"
        f"load_backend(load_package({str(package)!r}, verify=False))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode != 0
    assert "pip install" in result.stderr and "perceptlite[gguf]" in result.stderr


def test_export_refuses_non_empty_output(checkpoint: Path, package: Path, capsys) -> None:
    before = {p.name: sha256_file(p) for p in package.iterdir()}
    assert gguf_export.main([str(checkpoint), str(package)]) == 1
    err = capsys.readouterr().err.strip()
    assert "already exists and is not empty" in err and "\n" not in err
    assert {p.name: sha256_file(p) for p in package.iterdir()} == before


# -- the command line ------------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "perceptlite", *args], capture_output=True, text=True, cwd=REPO, env=env, timeout=300)


def test_cli_score_with_gguf_package(package: Path, corpus_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for path in sorted((corpus_dir / "bsds500" / "test").glob("*.jpg"))[:2]:
        shutil.copy(path, folder / path.name)
    out = tmp_path / "scores.jsonl"
    result = _cli("score", str(folder), "--model", str(package), "--device", "cpu", "--jsonl", "-o", str(out))
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 2
    for record in records:
        assert record.get("error") is None
        assert all(0.0 <= record[axis] <= 100.0 for axis in AXES)


def test_cli_ask_multiple_choice(package: Path, corpus_dir: Path) -> None:
    image = sorted((corpus_dir / "bsds500" / "test").glob("*.jpg"))[0]
    question = "Is the image sharp?\nA. Yes\nB. No\nC. Partly\nD. Cannot tell"
    args = ("ask", str(image), question, "--model", str(package), "--choices", "ABCD", "--variant", "q8_0")
    by_logits = _cli(*args, "--vqa-protocol", "logits")
    assert by_logits.returncode == 0, by_logits.stderr
    assert by_logits.stdout.strip() in ("A", "B", "C", "D")
    generated = _cli(*args)  # eval_vqa.py's read-out: one character, upper-cased, whatever it is
    assert generated.returncode == 0, generated.stderr
    answer = generated.stdout.rstrip("\n")
    assert len(answer) <= 1 and answer == answer.upper()


def test_cli_ask_refuses_a_missing_image(package: Path, tmp_path: Path) -> None:
    result = _cli("ask", str(tmp_path / "nope.jpg"), "What?", "--model", str(package))
    assert result.returncode != 0
    assert "nope.jpg" in result.stderr and "Traceback" not in result.stderr
