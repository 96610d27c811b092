"""export.unipercept.gguf refuses folders that are not a UniPercept checkpoint, with one line that names the problem."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from export.unipercept import gguf as gguf_export

INTERNVL_CONFIG = {
    "architectures": ["InternVLChatModel"],
    "llm_config": {"architectures": ["Qwen2ForCausalLM"], "hidden_size": 256},
    "vision_config": {"architectures": ["InternVisionModel"], "hidden_size": 64},
    "downsample_ratio": 0.5,
}


def _folder(tmp_path: Path, config: dict | str | None = INTERNVL_CONFIG, weights: bool = True, tokenizer: bool = True) -> Path:
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    if config is not None:
        (folder / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    if weights:
        (folder / "model.safetensors").write_bytes(b"\0" * 16)
    if tokenizer:
        (folder / "tokenizer.json").write_text("{}")
        (folder / "tokenizer_config.json").write_text("{}")
    return folder


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda tmp: tmp / "absent", "not a folder"),
        (lambda tmp: _folder(tmp, config=None), "no config.json"),
        (lambda tmp: _folder(tmp, config="{not json"), "unreadable JSON"),
        (lambda tmp: _folder(tmp, config={"architectures": ["LlamaForCausalLM"]}), "expected InternVLChatModel"),
        (lambda tmp: _folder(tmp, config={"architectures": ["InternVLChatModel"], "vision_config": {}}), "missing 'llm_config'"),
        (lambda tmp: _folder(tmp, weights=False), "no *.safetensors weights"),
        (lambda tmp: _folder(tmp, tokenizer=False), "tokenizer missing"),
    ],
)
def test_bad_checkpoint_folder(tmp_path: Path, capsys, make, expected: str) -> None:
    folder = make(tmp_path)
    before = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else None
    out = tmp_path / "package"
    assert gguf_export.main([str(folder), str(out)]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and expected in error and "\n" not in error
    assert not out.exists(), "nothing is written for a refused checkpoint"
    if before is not None:
        assert sorted(p.name for p in folder.iterdir()) == before


def test_unknown_quant_type_is_a_usage_error(tmp_path: Path, capsys) -> None:
    assert gguf_export.main([str(_folder(tmp_path)), str(tmp_path / "out"), "--quant", "q3_k"]) == 2
    assert "--quant accepts f16, q8_0, q4_k_m" in capsys.readouterr().err


def test_default_variant_must_be_built(tmp_path: Path, capsys) -> None:
    assert gguf_export.main([str(_folder(tmp_path)), str(tmp_path / "out"), "--quant", "f16", "--default", "q8_0"]) == 1
    assert "--default q8_0 is not among the variants f16" in capsys.readouterr().err
