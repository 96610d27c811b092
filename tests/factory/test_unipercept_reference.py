"""The tiny UniPercept-layout checkpoint and the torch reference scorer (prompt bytes, decode, KV-cache reuse)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from export.unipercept import reference as unipercept  # noqa: E402
from export.unipercept.reference import AXES, SCORE_TOKENS  # noqa: E402

torch.set_num_threads(2)

EXPECTED_IAA_PROMPT = (
    "Rate the aesthetics score of the image in 0-100. In the output format, numbers are replaced by 2 corresponding "
    "letters, and the mapping relationship is: score 0 to 25: 0-aa, 1-ab, 2-ac, 3-ad, ... , 25-az, \n"
    "score 26 to 50: 26-ca, 27-cb, 28-cc, 29-cd, ..., 50-cy, \n"
    "score 51 to 75: 51-da, 52-db, 53-dc, 54-dd, ..., 75-dy, \n"
    "score 76 to 100: 76-ea, 77-eb, 73-ec, 74-ed, ..., 100-ey. \n"
    "The answer only outputs 2 corresponding letters."
)


@pytest.fixture(scope="module")
def scorer(unipercept_sensitive_checkpoint: Path):
    return unipercept.ReferenceScorer(unipercept_sensitive_checkpoint)


@pytest.fixture(scope="module")
def training_images(unipercept_sensitive_checkpoint: Path) -> list[tuple[Path, float]]:
    folder = unipercept_sensitive_checkpoint / "training_images"
    return [(folder / r["image"], r["gt_score"]) for r in json.loads((folder / "iaa.json").read_text())]


def test_tiny_checkpoint_has_unipercepts_layout(unipercept_tiny_checkpoint: Path) -> None:
    from safetensors import safe_open

    config = json.loads((unipercept_tiny_checkpoint / "config.json").read_text(encoding="utf-8"))
    assert config["architectures"] == ["InternVLChatModel"] and config["model_type"] == "internvl_chat"
    assert config["llm_config"]["architectures"] == ["Qwen2ForCausalLM"]
    vision = config["vision_config"]
    assert (vision["patch_size"], vision["image_size"], vision["norm_type"]) == (14, 448, "layer_norm")
    assert config["downsample_ratio"] == 0.5 and config["template"] == "internvl2_5"
    preprocessor = json.loads((unipercept_tiny_checkpoint / "preprocessor_config.json").read_text())
    assert preprocessor["image_mean"] == [0.485, 0.456, 0.406] and preprocessor["image_std"] == [0.229, 0.224, 0.225]
    with safe_open(str(unipercept_tiny_checkpoint / "model.safetensors"), "pt") as weights:
        names = set(weights.keys())
    assert {n.split(".")[0] for n in names} == {"vision_model", "mlp1", "language_model"}
    assert {n for n in names if n.startswith("mlp1.")} == {f"mlp1.{i}.{p}" for i in (0, 1, 3) for p in ("weight", "bias")}
    assert "vision_model.encoder.layers.0.attn.qkv.weight" in names and "vision_model.encoder.layers.0.ls1" in names
    assert "vision_model.embeddings.position_embedding" in names and "vision_model.embeddings.class_embedding" in names
    assert "language_model.model.embed_tokens.weight" in names and "language_model.lm_head.weight" in names


def test_generation_is_seeded(unipercept_tiny_checkpoint: Path) -> None:
    from safetensors.torch import load_file

    from export.unipercept import tiny

    first = load_file(str(unipercept_tiny_checkpoint / "model.safetensors"))
    again = tiny.random_weights(tiny.checkpoint_config(), seed=0)
    assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)
    other = tiny.random_weights(tiny.checkpoint_config(), seed=1)
    assert not torch.equal(first["mlp1.1.weight"], other["mlp1.1.weight"])
    layer_scale = first["vision_model.encoder.layers.0.ls1"].float()
    assert 0.5 <= float(layer_scale.min()) and float(layer_scale.max()) <= 1.5 and float(layer_scale.std()) > 0.1


def test_tokenizer_is_qwen2_with_internvl_tokens(scorer) -> None:
    tokenizer = scorer.tokenizer
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>")}
    assert ids == {"<|im_start|>": 151644, "<|im_end|>": 151645, "<img>": 151665, "</img>": 151666, "<IMG_CONTEXT>": 151667}
    assert [len(tokenizer.encode(s, add_special_tokens=False)) for s in SCORE_TOKENS] == [1] * 101
    assert tokenizer.encode("Hello world", add_special_tokens=False) == [9707, 1879]  # Qwen2's own ids


def test_score_tokens_and_prompt_bytes() -> None:
    assert len(SCORE_TOKENS) == 101
    assert SCORE_TOKENS[:3] == ("aa", "ab", "ac") and SCORE_TOKENS[25:28] == ("az", "ca", "cb")
    assert SCORE_TOKENS[50:52] == ("cy", "da") and SCORE_TOKENS[75:77] == ("dy", "ea") and SCORE_TOKENS[100] == "ey"
    assert unipercept.rating_prompt("iaa") == EXPECTED_IAA_PROMPT
    assert unipercept.rating_prompt("ista").startswith("Rate the structure and texture richness score of the image")
    assert unipercept.rating_prompt("iqa").startswith("Rate the quality score of the image in 0-100.")
    prompt = unipercept.build_prompt("SYS", "Q", num_image_tokens=3)
    assert prompt == (
        "<|im_start|>system\nSYS<|im_end|>\n<|im_start|>user\n"
        "<img><IMG_CONTEXT><IMG_CONTEXT><IMG_CONTEXT></img>Q<|im_end|>\n<|im_start|>assistant\n"
    )
    assert "".join(unipercept.split_prompt("SYS", "Q", 3)) == prompt
    assert unipercept.vqa_prompt("Q?") == (
        "Given the image and the following multiple-choice question, choose the best answer. Only reply with the "
        "letter (A, B, C, or D).\n\nQuestion:\n\nQ?"
    )


def test_prompt_tokenises_the_same_split_or_whole(scorer) -> None:
    question = unipercept.rating_prompt("iqa")
    whole = scorer.tokenizer.encode(unipercept.build_prompt(scorer.system_message, question), add_special_tokens=False)
    prefix, suffix = unipercept.split_prompt(scorer.system_message, question)
    assert whole == scorer.tokenizer.encode(prefix, add_special_tokens=False) + scorer.tokenizer.encode(suffix, add_special_tokens=False)
    assert whole.count(151667) == 256 and whole[-3:] == scorer.tokenizer.encode("<|im_start|>assistant\n")


def test_token_as_score_decode_on_a_controlled_logit_vector(scorer) -> None:
    logits = torch.full((scorer.language_model.config.vocab_size,), 5.0)  # large non-score logits must not matter
    logits[scorer.score_ids] = -1e4
    logits[scorer.score_ids[10]] = 0.0
    logits[scorer.score_ids[80]] = math.log(3.0)
    # p(10) = 1/4, p(80) = 3/4 -> 10 / 4 + 80 * 3 / 4 = 62.5
    assert float(unipercept.expected_score(logits[scorer.score_ids])) == pytest.approx(62.5, abs=1e-4)
    uniform = torch.zeros(101)
    assert float(unipercept.expected_score(uniform)) == pytest.approx(50.0, abs=1e-4)


def test_preprocess_is_448_bicubic_imagenet() -> None:
    from PIL import Image

    image = Image.new("RGB", (300, 120), (255, 0, 128))
    pixels = unipercept.preprocess(image)
    assert pixels.shape == (1, 3, 448, 448) and pixels.dtype == torch.float32
    expected = [(255 / 255 - 0.485) / 0.229, (0 - 0.456) / 0.224, (128 / 255 - 0.406) / 0.225]
    assert pixels[0, :, 200, 200].tolist() == pytest.approx(expected, abs=1e-5)


def test_kv_cache_reuse_equals_three_full_forwards(scorer, training_images) -> None:
    image = training_images[0][0]
    shared = scorer.rate(image)
    separate = {axis: scorer.rate_full_prompt(image, axis) for axis in AXES}
    assert shared == pytest.approx(separate, abs=1e-3)
    logits = scorer.score_token_logits(image, "iqa")
    assert logits.shape == (scorer.language_model.config.vocab_size,)
    assert float(unipercept.expected_score(logits[scorer.score_ids])) == pytest.approx(shared["iqa"], abs=1e-3)


def test_sensitive_checkpoint_rates_images_apart_and_near_targets(scorer, training_images, unipercept_tiny_checkpoint) -> None:
    targets = [target for _, target in training_images]
    rated = [scorer.rate(path, ("iaa",))["iaa"] for path, _ in training_images]
    assert max(rated) - min(rated) >= 20.0
    untrained = unipercept.ReferenceScorer(unipercept_tiny_checkpoint)
    before = [untrained.rate(path, ("iaa",))["iaa"] for path, _ in training_images]
    error_after = sum(abs(r - t) for r, t in zip(rated, targets)) / len(targets)
    error_before = sum(abs(b - t) for b, t in zip(before, targets)) / len(targets)
    assert error_after < error_before - 10.0, (before, rated, targets)


def test_vqa_answers_with_one_character(scorer, training_images) -> None:
    answer = scorer.ask(training_images[0][0], "Is the image sharp?\nA. yes\nB. no\nC. partly\nD. unknown")
    assert isinstance(answer, str) and len(answer) <= 1


def test_a_tokenizer_without_single_score_tokens_is_refused() -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    letters = {chr(c): i for i, c in enumerate(range(ord("a"), ord("z") + 1))}
    backend = Tokenizer(models.BPE(vocab=letters, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    with pytest.raises(ValueError, match="'aa' is 2 tokens"):
        unipercept.score_token_ids(PreTrainedTokenizerFast(tokenizer_object=backend))


def test_not_a_checkpoint_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="config.json: not found"):
        unipercept.ReferenceScorer(tmp_path)


def test_teacher_protocol(unipercept_sensitive_checkpoint: Path, scorer, training_images) -> None:
    from PIL import Image

    from export.teachers import Teacher, load_teacher

    teacher = load_teacher(f"unipercept:{unipercept_sensitive_checkpoint}")
    assert isinstance(teacher, Teacher) and teacher.axes == AXES
    with Image.open(training_images[1][0]) as image:
        labels = teacher.label(image.convert("RGB"))
    assert labels == pytest.approx(scorer.rate(training_images[1][0]), abs=1e-3)
    assert all(0.0 <= v <= 100.0 for v in labels.values())
    assert {"name", "axes", "weights", "mapping"} <= set(teacher.describe())


def test_llama_cpp_converter_recognises_the_tokenizer(unipercept_tiny_checkpoint: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    from export.unipercept import llama_cpp_source

    out = tmp_path / "vocab.gguf"
    env = {**__import__("os").environ, "PYTHONPATH": str(llama_cpp_source.gguf_py_dir())}
    result = subprocess.run(
        [sys.executable, str(llama_cpp_source.converter_script()), str(unipercept_tiny_checkpoint), "--vocab-only", "--outfile", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    reader = llama_cpp_source.import_gguf().GGUFReader(str(out))
    assert reader.fields["tokenizer.ggml.pre"].contents() == "qwen2"
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    assert tokens[151665:151668] == ["<img>", "</img>", "<IMG_CONTEXT>"]
