"""Generate a tiny random checkpoint with UniPercept's architecture and file layout (a test fixture).

    python -m export.unipercept.tiny OUT_DIR [--seed 0] [--trained]

The folder looks like the real UniPercept / InternVL3 checkpoint, only small: `config.json`
(`InternVLChatModel` with an InternViT `vision_config` and a Qwen2 `llm_config`), `model.safetensors` with the
original weight names (`vision_model.`, `mlp1.`, `language_model.`), `preprocessor_config.json` and the real
Qwen2 tokenizer (rebuilt offline from llama.cpp's `ggml-vocab-qwen2.gguf`) plus InternVL's added tokens at
InternVL3's ids. llama.cpp's converter accepts it (text model and `--mmproj`), and `export.unipercept.reference` scores
with it. `--trained` also fine-tunes it briefly (see `make_image_sensitive_checkpoint`) so that its ratings
depend on the image.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

# Sizes: the llama.cpp helper needs LLM input dims that are multiples of 256 so Q4_K_M quantises without fallback.
VISION_CONFIG = {
    "architectures": ["InternVisionModel"],
    "model_type": "intern_vit_6b",
    "attention_dropout": 0.0,
    "drop_path_rate": 0.0,
    "dropout": 0.0,
    "hidden_act": "gelu",
    "hidden_size": 64,
    "image_size": 448,
    "initializer_factor": 0.1,
    "initializer_range": 0.02,
    "intermediate_size": 256,
    "layer_norm_eps": 1e-06,
    "norm_type": "layer_norm",
    "num_attention_heads": 4,
    "num_channels": 3,
    "num_hidden_layers": 4,  # >= 4: llama.cpp maps mlp1.3 through the block index
    "patch_size": 14,
    "qk_normalization": False,
    "qkv_bias": True,
    "use_flash_attn": False,
}

LLM_CONFIG = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "hidden_act": "silu",
    "hidden_size": 256,
    "initializer_range": 0.02,
    "intermediate_size": 512,
    "max_position_embeddings": 32768,
    "max_window_layers": 2,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "sliding_window": None,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "use_sliding_window": False,
    "vocab_size": 151674,
}

# Qwen2.5's added tokens (ids 151643..151664; True = special), then InternVL's (151665..151673).
QWEN25_ADDED_TOKENS = [
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
]
INTERNVL_ADDED_TOKENS = ["<img>", "</img>", "<IMG_CONTEXT>", "<quad>", "</quad>", "<ref>", "</ref>", "<box>", "</box>"]
FIRST_ADDED_ID = 151643

# Qwen2's pre-tokenizer split (tokenizer.json of every Qwen2/2.5 model).
QWEN2_SPLIT_PATTERN = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"

CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\n"
    + "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。"
    + "<|im_end|>\n' }}{% endif %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def checkpoint_config() -> dict:
    """config.json of the tiny checkpoint, shaped like InternVL3's."""
    from export.unipercept.reference import DEFAULT_SYSTEM_MESSAGE

    return {
        "architectures": ["InternVLChatModel"],
        "model_type": "internvl_chat",
        "downsample_ratio": 0.5,
        "dynamic_image_size": True,
        "force_image_size": 448,
        "hidden_size": LLM_CONFIG["hidden_size"],
        "llm_config": dict(LLM_CONFIG),
        "max_dynamic_patch": 12,
        "min_dynamic_patch": 1,
        "pad2square": False,
        "ps_version": "v2",
        "select_layer": -1,
        "system_message": DEFAULT_SYSTEM_MESSAGE,
        "template": "internvl2_5",
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.37.2",
        "use_backbone_lora": 0,
        "use_llm_lora": 0,
        "use_thumbnail": True,
        "vision_config": dict(VISION_CONFIG),
    }


def write_tokenizer(out_dir: Path) -> None:
    """Write the real Qwen2 byte-level BPE tokenizer (+ InternVL's added tokens) into `out_dir`, offline."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import Qwen2TokenizerFast

    from export.unipercept import llama_cpp_source

    gguf = llama_cpp_source.import_gguf()
    reader = gguf.GGUFReader(str(llama_cpp_source.qwen2_vocab_file()))
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    token_types = reader.fields["tokenizer.ggml.token_type"].contents()
    merges = reader.fields["tokenizer.ggml.merges"].contents()
    normal = gguf.TokenType.NORMAL
    vocab = {token: i for i, (token, kind) in enumerate(zip(tokens, token_types)) if kind == normal}
    if len(vocab) != FIRST_ADDED_ID or tokens[FIRST_ADDED_ID] != "<|endoftext|>":
        raise RuntimeError(f"{llama_cpp_source.qwen2_vocab_file()}: not the Qwen2 vocabulary this script expects")

    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[tuple(m.split(" ")) for m in merges], fuse_unk=False, byte_fallback=False))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tokenizer.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    added = QWEN25_ADDED_TOKENS + [(token, True) for token in INTERNVL_ADDED_TOKENS]
    for content, special in added:  # one at a time so that ids follow the list order
        tokenizer.add_tokens([AddedToken(content, special=special, normalized=False, lstrip=False, rstrip=False)])
    for offset, (content, _) in enumerate(added):
        if tokenizer.token_to_id(content) != FIRST_ADDED_ID + offset:
            raise RuntimeError(f"added token {content} did not get id {FIRST_ADDED_ID + offset}")

    fast = Qwen2TokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        additional_special_tokens=[t for t, special in added if special and t not in ("<|endoftext|>", "<|im_end|>")],
        errors="replace",
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
        model_max_length=16384,
        chat_template=CHAT_TEMPLATE,
    )
    fast.save_pretrained(str(out_dir), save_jinja_files=False)  # chat template inside tokenizer_config.json, as InternVL ships it
    _write_slow_tokenizer_files(out_dir, vocab, merges)


def _write_slow_tokenizer_files(out_dir: Path, vocab: dict, merges: list) -> None:
    # vocab.json + merges.txt as Qwen2 checkpoints ship them (UniPercept loads the slow tokenizer).
    (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


def write_preprocessor_config(out_dir: Path) -> None:
    from export.unipercept.reference import IMAGENET_MEAN, IMAGENET_STD

    config = {
        "crop_size": 448,
        "do_center_crop": True,
        "do_normalize": True,
        "do_resize": True,
        "feature_extractor_type": "CLIPFeatureExtractor",
        "image_mean": list(IMAGENET_MEAN),
        "image_std": list(IMAGENET_STD),
        "resample": 3,
        "size": 448,
    }
    (out_dir / "preprocessor_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def random_weights(config: dict, seed: int) -> dict:
    """Seeded random weights for `config`, under the checkpoint's original names."""
    import torch

    from export.unipercept.reference import InternVLChat

    torch.manual_seed(seed)
    model = InternVLChat(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith((".ls1", ".ls2")):  # layer scale: non-trivial, so parity tests exercise it
                parameter.copy_(0.5 + torch.rand(parameter.shape, generator=generator))
            elif "norm" in name or name.startswith("mlp1.0."):
                base = 1.0 if name.endswith("weight") else 0.0
                parameter.copy_(base + 0.1 * torch.randn(parameter.shape, generator=generator))
            elif name.endswith(("class_embedding", "position_embedding")):
                parameter.copy_(0.2 * torch.randn(parameter.shape, generator=generator))
            else:
                parameter.copy_(0.05 * torch.randn(parameter.shape, generator=generator))
    return {name: tensor.detach().to(torch.bfloat16).contiguous() for name, tensor in model.state_dict().items()}


def generate(out_dir: str | Path, seed: int = 0) -> Path:
    """Write a tiny random UniPercept-layout checkpoint to `out_dir` and return its path."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = checkpoint_config()
    (out_dir / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out_dir / "generation_config.json").write_text(
        json.dumps({"eos_token_id": [151645, 151643], "pad_token_id": 151643}, indent=2) + "\n", encoding="utf-8"
    )
    save_file(random_weights(config, seed), str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    write_preprocessor_config(out_dir)
    write_tokenizer(out_dir)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.unipercept.tiny", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="folder to write the checkpoint into (must be empty or absent)")
    parser.add_argument("--seed", type=int, default=0, help="random seed for the weights")
    parser.add_argument("--trained", action="store_true", help="also fine-tune it briefly so its ratings depend on the image")
    args = parser.parse_args(argv)
    if args.out_dir.exists() and any(args.out_dir.iterdir()):
        print(f"{args.out_dir}: folder is not empty; choose a new folder", file=sys.stderr)
        return 2
    if args.trained:
        make_image_sensitive_checkpoint(args.out_dir, seed=args.seed)
    else:
        generate(args.out_dir, seed=args.seed)
    print(f"wrote {args.out_dir}")
    return 0


# Training targets (0-100) of the image-sensitive checkpoint, one per synthetic image, spread out on purpose.
SENSITIVITY_TARGETS = [90, 10, 70, 30, 50, 95, 5, 60]


def synthetic_images(out_dir: Path, count: int = 8, seed: int = 0) -> list[Path]:
    """`count` visually distinct 160x120 PNGs (flat colours, gradients, stripes, noise), seeded."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:120, 0:160].astype(np.float32)
    paths = []
    for index in range(count):
        kind = index % 4
        colour = rng.uniform(0, 255, size=3)
        if kind == 0:
            array = np.broadcast_to(colour, (120, 160, 3))
        elif kind == 1:
            array = (x / 159.0)[..., None] * colour + (1 - x / 159.0)[..., None] * (255 - colour)
        elif kind == 2:
            period = 4 + 6 * index
            array = (np.sin(2 * np.pi * (x + y * index) / period) > 0)[..., None] * colour
        else:
            array = rng.uniform(0, 255, size=(120, 160, 3)) * (index / count) + colour * (1 - index / count)
        path = out_dir / f"synthetic_{index:02d}.png"
        Image.fromarray(np.clip(array, 0, 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def make_image_sensitive_checkpoint(out_dir: str | Path, seed: int = 0, steps: int = 24, base: str | Path | None = None) -> Path:
    """Generate the tiny checkpoint and fine-tune it briefly so its scores differ across images (CPU, ~1-2 min).

    The recipe of export.train trains the projector and the LLM's decoder layers (vision frozen) on eight
    synthetic images with spread-out targets; the result lands in `out_dir` (same layout), with the images in
    `training_images/` and their targets in `training_images/iaa.json` (VR format). `base`: start from this
    random checkpoint (from `generate`) instead of generating one.
    """
    import tempfile

    from export.train.train import DatasetSpec, TrainOptions, run_training

    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="tiny-train-") as work:
        work = Path(work)
        base = Path(base) if base is not None else generate(work / "random", seed=seed)
        images = synthetic_images(work / "images", len(SENSITIVITY_TARGETS), seed)
        # Only the iaa prompt is trained (the fastest way to image sensitivity on a CPU); the iqa and ista
        # prompts differ from it by a word, so their scores follow the same images.
        records = [{"image": p.name, "gt_score": t} for p, t in zip(images, SENSITIVITY_TARGETS)]
        (work / "iaa.json").write_text(json.dumps(records), encoding="utf-8")
        datasets = [DatasetSpec(work / "iaa.json", work / "images", "iaa", 0.0, 100.0)]
        options = TrainOptions(
            checkpoint=base,
            output=work / "run",
            datasets=datasets,
            steps=steps,
            batch_size=4,
            grad_accum=1,
            lr=3e-3,
            warmup=5,
            sigma=4.0,
            train=("mlp1", "llm-layers"),
            device="cpu",
            bf16=False,
            save_every=0,
            seed=seed,
            workers=0,
            log_every=10,
        )
        run_training(options)
        out_dir.mkdir(parents=True, exist_ok=True)
        for path in (work / "run").iterdir():
            if path.is_file():
                shutil.copy2(path, out_dir / path.name)
        shutil.copytree(work / "images", out_dir / "training_images", dirs_exist_ok=True)
        shutil.copy2(work / "iaa.json", out_dir / "training_images" / "iaa.json")
    return out_dir


if __name__ == "__main__":
    sys.exit(main())
