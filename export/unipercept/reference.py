"""The UniPercept reference scorer: Visual Rating and VQA exactly as UniPercept does them (torch + transformers).

A checkpoint folder in InternVL's original layout (`config.json` with `architectures: ["InternVLChatModel"]`,
weights under `vision_model.`, `mlp1.`, `language_model.`) is loaded offline:

- when `config.json` has an `auto_map` (the real UniPercept / InternVL checkpoints), the checkpoint's own
  modeling code is used through `trust_remote_code`, but only when the user asks for it
  (`--trust-checkpoint-code`, or PERCEPTLITE_TRUST_CHECKPOINT_CODE=1 for the teacher); a message names
  the Python files that will run, and without the flag loading stops with a one-line error;
- otherwise (the generated test checkpoint, see `export.unipercept.tiny`) the weights go into `InternVLChat` below: a
  line-for-line port of InternVL's InternViT + pixel shuffle + `mlp1` projector, with transformers' own
  `Qwen2ForCausalLM` as the language model, exactly as InternVL's `InternVLChatModel` composes them. Module
  names equal the checkpoint's weight names, so a checkpoint loads and saves without any renaming.

Rating: 448x448 bicubic stretch, ImageNet normalisation, the InternVL-2.5 chat template with the checkpoint's
system message, UniPercept's rating prompt byte for byte, one forward pass, softmax over the 101 score tokens,
expected value. The prompt is split after the image so the image prefix is encoded once and its KV cache is
reused for iaa, iqa and ista.
"""

from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from perceptlite.unipercept_prompts import AXIS_DESCRIPTIONS, RATING_TEMPLATE, VQA_TEMPLATE, vqa_answer  # the one copy of the prompts

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SIZE = 448
NUM_IMAGE_TOKENS = 256

IMG_START_TOKEN = "<img>"
IMG_END_TOKEN = "</img>"
IMG_CONTEXT_TOKEN = "<IMG_CONTEXT>"

# InternVL's `internvl2_5` conversation template, used when the checkpoint has no `system_message`.
DEFAULT_SYSTEM_MESSAGE = "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。"

# Set to 1 to let checkpoints run their own modelling code where no --trust-checkpoint-code flag reaches.
TRUST_CODE_ENV = "PERCEPTLITE_TRUST_CHECKPOINT_CODE"

AXES = tuple(AXIS_DESCRIPTIONS)


def _score_token(score: int) -> str:
    for first, start in (("e", 76), ("d", 51), ("c", 26), ("a", 0)):
        if score >= start:
            return first + chr(ord("a") + score - start)
    raise ValueError(score)


# The 101 score tokens, index = score: aa..az (0-25), ca..cy (26-50), da..dy (51-75), ea..ey (76-100).
SCORE_TOKENS = tuple(_score_token(i) for i in range(101))


def rating_prompt(axis: str) -> str:
    """UniPercept's Visual Rating question for `axis` (iaa, iqa or ista), without the `<image>` tag."""
    return RATING_TEMPLATE.format(desc=AXIS_DESCRIPTIONS[axis])


def vqa_prompt(question: str) -> str:
    """UniPercept's multiple-choice VQA question, without the `<image>` tag."""
    return VQA_TEMPLATE.format(question=question)


def chat_question(question: str) -> str:
    """A free question as InternVL's chat() asks it after the image: `<image>\\n{question}`, without the `<image>` tag."""
    return "\n" + question


def image_tokens(num_image_tokens: int = NUM_IMAGE_TOKENS) -> str:
    """What `<image>` expands to: <img> + N x <IMG_CONTEXT> + </img>."""
    return IMG_START_TOKEN + IMG_CONTEXT_TOKEN * num_image_tokens + IMG_END_TOKEN


def build_prompt(system_message: str, question: str, num_image_tokens: int = NUM_IMAGE_TOKENS) -> str:
    """The full InternVL-2.5 chat prompt for an image question (`<image>` directly before `question`)."""
    return (
        f"<|im_start|>system\n{system_message}<|im_end|>\n<|im_start|>user\n"
        f"{image_tokens(num_image_tokens)}{question}<|im_end|>\n<|im_start|>assistant\n"
    )


def split_prompt(system_message: str, question: str, num_image_tokens: int = NUM_IMAGE_TOKENS) -> tuple[str, str]:
    """`build_prompt` cut after `</img>`: the shared image prefix and the question suffix."""
    prefix = f"<|im_start|>system\n{system_message}<|im_end|>\n<|im_start|>user\n{image_tokens(num_image_tokens)}"
    suffix = f"{question}<|im_end|>\n<|im_start|>assistant\n"
    return prefix, suffix


def preprocess(image: Image.Image | str | Path) -> torch.Tensor:
    """Image -> (1, 3, 448, 448) float32: RGB, 448x448 bicubic stretch, ImageNet normalisation."""
    if not isinstance(image, Image.Image):
        with Image.open(image) as opened:
            image = opened.convert("RGB")
    image = image.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC)
    array = np.asarray(image, dtype=np.float32) / 255.0
    array = (array - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
    return torch.from_numpy(array.transpose(2, 0, 1).copy()).unsqueeze(0)


def expected_score(score_logits: torch.Tensor) -> torch.Tensor:
    """Token as score: softmax over the 101 score-token logits, expected value sum(p_i * i) in [0, 100]."""
    probabilities = torch.softmax(score_logits.float(), dim=-1)
    return probabilities @ torch.arange(101, dtype=torch.float32, device=probabilities.device)


# ---------------------------------------------------------------------------------------------------------------
# InternVL's vision tower and projector (original layout), ported from InternVL's modeling_intern_vit.py.


class InternVisionEmbeddings(nn.Module):
    def __init__(self, config: dict):
        super().__init__()
        dim, patch, size = config["hidden_size"], config["patch_size"], config["image_size"]
        self.grid = size // patch
        self.class_embedding = nn.Parameter(torch.zeros(1, 1, dim))
        self.patch_embedding = nn.Conv2d(config.get("num_channels", 3), dim, kernel_size=patch, stride=patch)
        self.position_embedding = nn.Parameter(torch.zeros(1, self.grid * self.grid + 1, dim))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        dtype = self.patch_embedding.weight.dtype
        patches = self.patch_embedding(pixel_values.to(dtype))
        batch, _, height, width = patches.shape
        patches = patches.flatten(2).transpose(1, 2)
        embeddings = torch.cat([self.class_embedding.expand(batch, 1, -1).to(dtype), patches], dim=1)
        grid_positions = self.position_embedding[:, 1:, :]
        if (height, width) != (self.grid, self.grid):
            grid = grid_positions.float().reshape(1, self.grid, self.grid, -1).permute(0, 3, 1, 2)
            grid = F.interpolate(grid, size=(height, width), mode="bicubic", align_corners=False)
            grid_positions = grid.reshape(1, -1, height * width).permute(0, 2, 1).to(dtype)
        positions = torch.cat([self.position_embedding[:, :1, :], grid_positions], dim=1)
        return embeddings + positions.to(dtype)


class InternRMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def _norm(config: dict, dim: int) -> nn.Module:
    eps = config.get("layer_norm_eps", 1e-6)
    return InternRMSNorm(dim, eps) if config.get("norm_type", "rms_norm") == "rms_norm" else nn.LayerNorm(dim, eps=eps)


class InternAttention(nn.Module):
    def __init__(self, config: dict):
        super().__init__()
        dim = config["hidden_size"]
        self.num_heads = config["num_attention_heads"]
        self.scale = (dim // self.num_heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=config.get("qkv_bias", True))
        self.qk_normalization = config.get("qk_normalization", False)
        if self.qk_normalization:
            self.q_norm = InternRMSNorm(dim, config.get("layer_norm_eps", 1e-6))
            self.k_norm = InternRMSNorm(dim, config.get("layer_norm_eps", 1e-6))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        qkv = self.qkv(x).reshape(batch, length, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if self.qk_normalization:
            b, h, n, d = q.shape
            q = self.q_norm(q.transpose(1, 2).flatten(-2, -1)).view(b, n, h, d).transpose(1, 2)
            k = self.k_norm(k.transpose(1, 2).flatten(-2, -1)).view(b, n, h, d).transpose(1, 2)
        # softmax(q k^T * scale) v, as InternVL's naive attention; SDPA computes the same thing faster.
        context = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self.proj(context.transpose(1, 2).reshape(batch, length, dim))


class InternMLP(nn.Module):
    def __init__(self, config: dict):
        super().__init__()
        from transformers.activations import ACT2FN

        self.act = ACT2FN[config.get("hidden_act", "gelu")]
        self.fc1 = nn.Linear(config["hidden_size"], config["intermediate_size"])
        self.fc2 = nn.Linear(config["intermediate_size"], config["hidden_size"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class InternVisionEncoderLayer(nn.Module):
    def __init__(self, config: dict):
        super().__init__()
        dim = config["hidden_size"]
        self.attn = InternAttention(config)
        self.mlp = InternMLP(config)
        self.norm1 = _norm(config, dim)
        self.norm2 = _norm(config, dim)
        self.ls1 = nn.Parameter(config.get("initializer_factor", 1.0) * torch.ones(dim))
        self.ls2 = nn.Parameter(config.get("initializer_factor", 1.0) * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x).to(x.dtype)) * self.ls1
        return x + self.mlp(self.norm2(x).to(x.dtype)) * self.ls2


class InternVisionEncoder(nn.Module):
    def __init__(self, config: dict):
        super().__init__()
        self.layers = nn.ModuleList(InternVisionEncoderLayer(config) for _ in range(config["num_hidden_layers"]))
        self.gradient_checkpointing = False

    def forward(self, x: torch.Tensor, select_layer: int = -1) -> torch.Tensor:
        hidden_states = [x]
        for layer in self.layers:
            if self.gradient_checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(layer, x, use_reentrant=False)
            else:
                x = layer(x)
            hidden_states.append(x)
        return hidden_states[select_layer]


class InternVisionModel(nn.Module):
    def __init__(self, config: dict):
        super().__init__()
        self.embeddings = InternVisionEmbeddings(config)
        self.encoder = InternVisionEncoder(config)

    def forward(self, pixel_values: torch.Tensor, select_layer: int = -1) -> torch.Tensor:
        return self.encoder(self.embeddings(pixel_values), select_layer)


def pixel_shuffle(x: torch.Tensor, scale_factor: float = 0.5, ps_version: str = "v2") -> torch.Tensor:
    """InternVL's pixel shuffle: (N, W, H, C) -> (N, W*s, H*s, C/s^2); 'v1' leaves the result transposed."""
    n, w, h, c = x.size()
    x = x.view(n, w, int(h * scale_factor), int(c / scale_factor))
    x = x.permute(0, 2, 1, 3).contiguous()
    x = x.view(n, int(h * scale_factor), int(w * scale_factor), int(c / (scale_factor * scale_factor)))
    if ps_version != "v1":
        x = x.permute(0, 2, 1, 3).contiguous()
    return x


def qwen2_config(llm_config: dict):
    """transformers' Qwen2Config from a checkpoint's `llm_config` dict."""
    from transformers import Qwen2Config

    fields = {k: v for k, v in llm_config.items() if k not in ("architectures", "model_type", "torch_dtype")}
    config = Qwen2Config(**fields)
    config._attn_implementation = "eager" if llm_config.get("attn_implementation") == "eager" else "sdpa"
    return config


class InternVLChat(nn.Module):
    """InternVLChatModel's inference/training graph: InternViT -> pixel shuffle -> mlp1 -> Qwen2ForCausalLM."""

    def __init__(self, config: dict):
        super().__init__()
        from transformers import Qwen2ForCausalLM

        self.config = config
        vision, llm = config["vision_config"], config["llm_config"]
        if llm["architectures"][0] != "Qwen2ForCausalLM":
            raise ValueError(f"llm_config architecture {llm['architectures'][0]} is not supported (Qwen2ForCausalLM only)")
        self.select_layer = config.get("select_layer", -1)
        self.downsample_ratio = config.get("downsample_ratio", 0.5)
        self.ps_version = config.get("ps_version", "v1")
        image_size = config.get("force_image_size") or vision["image_size"]
        self.num_image_token = int((image_size // vision["patch_size"]) ** 2 * self.downsample_ratio**2)
        self.vision_model = InternVisionModel(vision)
        self.language_model = Qwen2ForCausalLM(qwen2_config(llm))
        merged = vision["hidden_size"] * int(1 / self.downsample_ratio) ** 2
        self.mlp1 = nn.Sequential(
            nn.LayerNorm(merged), nn.Linear(merged, llm["hidden_size"]), nn.GELU(), nn.Linear(llm["hidden_size"], llm["hidden_size"])
        )

    def extract_feature(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, 3, 448, 448) -> (N, 256, llm hidden) image embeddings, as InternVLChatModel.extract_feature."""
        vit_embeds = self.vision_model(pixel_values, self.select_layer)[:, 1:, :]
        side = int(vit_embeds.shape[1] ** 0.5)
        vit_embeds = vit_embeds.reshape(vit_embeds.shape[0], side, side, -1)
        vit_embeds = pixel_shuffle(vit_embeds, self.downsample_ratio, self.ps_version)
        vit_embeds = vit_embeds.reshape(vit_embeds.shape[0], -1, vit_embeds.shape[-1])
        return self.mlp1(vit_embeds)


def read_config(checkpoint_dir: str | Path) -> dict:
    """A checkpoint's config.json as a dict, with a one-line error when it is missing or not InternVL."""
    path = Path(checkpoint_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; point at a UniPercept/InternVL checkpoint folder")
    config = json.loads(path.read_text(encoding="utf-8"))
    if "InternVLChatModel" not in config.get("architectures", []):
        raise ValueError(f"{path}: architectures is {config.get('architectures')}, expected ['InternVLChatModel']")
    return config


def system_message(checkpoint_dir: str | Path) -> str:
    """The system message a checkpoint rates with: its config's `system_message`, else InternVL's default."""
    return read_config(checkpoint_dir).get("system_message") or DEFAULT_SYSTEM_MESSAGE


def _load_state_dict(checkpoint_dir: Path, dtype: torch.dtype, prefixes: tuple[str, ...] = ("",)) -> dict:
    from safetensors import safe_open

    index = checkpoint_dir / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    missing = [name for name in files if not (checkpoint_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{checkpoint_dir / missing[0]}: weight file not found; the checkpoint is incomplete")
    state = {}
    for name in files:
        with safe_open(str(checkpoint_dir / name), framework="pt") as weights:
            state.update({k: weights.get_tensor(k).to(dtype) for k in weights.keys() if k.startswith(prefixes)})
    return state


IMAGE_HALF = ("vision_model.", "mlp1.")


def load_image_encoder(checkpoint_dir: str | Path, dtype: torch.dtype = torch.float32) -> InternVLChat:
    """InternVLChat with only its image half loaded (InternViT and mlp1; the language model stays on the meta
    device, unallocated): ``extract_feature`` works, at the memory cost of the 0.3B vision tower alone.
    Uses this port even for a checkpoint that carries its own code (same weight names, same computation)."""
    checkpoint_dir = Path(checkpoint_dir)
    state = _load_state_dict(checkpoint_dir, dtype, IMAGE_HALF)
    with torch.device("meta"):
        model = InternVLChat(read_config(checkpoint_dir))
    result = model.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in result.missing_keys if k.startswith(IMAGE_HALF)]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"{checkpoint_dir}: image weights do not match config.json (missing {missing[:3]}, unexpected {result.unexpected_keys[:3]})"
        )
    return model.eval()


class CheckpointCodeRefused(ValueError):
    """A checkpoint that needs its own Python code, which the user has not allowed."""


def allow_checkpoint_code(checkpoint_dir: Path, trust: bool | None) -> None:
    """Refuse (CheckpointCodeRefused) unless the user allowed it; otherwise say which files will run."""
    files = sorted(path.name for path in checkpoint_dir.glob("*.py")) or ["(code named by auto_map)"]
    if not (trust or (trust is None and os.environ.get(TRUST_CODE_ENV) == "1")):
        raise CheckpointCodeRefused(
            f"{checkpoint_dir}: this checkpoint carries its own modelling code ({', '.join(files)}), which runs only "
            f"when you allow it: pass --trust-checkpoint-code (or set {TRUST_CODE_ENV}=1)"
        )
    print(f"running the checkpoint's own modelling code from {checkpoint_dir}: {', '.join(files)}", file=sys.stderr)


def load_internvl(
    checkpoint_dir: str | Path, dtype: torch.dtype = torch.float32, device: str = "cpu", trust_checkpoint_code: bool | None = None
) -> nn.Module:
    """Load a checkpoint in InternVL's original layout, offline; its own modeling code when it carries one
    and the user allowed it (`trust_checkpoint_code`, default: the PERCEPTLITE_TRUST_CHECKPOINT_CODE variable)."""
    checkpoint_dir = Path(checkpoint_dir)
    config = read_config(checkpoint_dir)
    if "auto_map" in config:
        from transformers import AutoModel

        allow_checkpoint_code(checkpoint_dir, trust_checkpoint_code)

        model = AutoModel.from_pretrained(
            str(checkpoint_dir),
            torch_dtype=dtype,
            trust_remote_code=True,
            local_files_only=True,
            low_cpu_mem_usage=True,
            use_flash_attn=False,
        )
        return model.eval().to(device)
    state = _load_state_dict(checkpoint_dir, dtype)
    with torch.device("meta"):
        model = InternVLChat(config)
    tied = config["llm_config"].get("tie_word_embeddings", False) and "language_model.lm_head.weight" not in state
    result = model.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in result.missing_keys if not (tied and k == "language_model.lm_head.weight")]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"{checkpoint_dir}: weights do not match config.json (missing {missing[:3]}, unexpected {result.unexpected_keys[:3]})"
        )
    if tied:
        model.language_model.lm_head.weight = model.language_model.model.embed_tokens.weight
    _rebuild_rotary_embedding(model.language_model)
    return model.eval().to(device)


def _rebuild_rotary_embedding(language_model: nn.Module) -> None:
    # Rotary frequencies are a non-persistent buffer: recompute them after the meta-device construction.
    from transformers.models.qwen2.modeling_qwen2 import Qwen2RotaryEmbedding

    language_model.model.rotary_emb = Qwen2RotaryEmbedding(config=language_model.config)


def score_token_ids(tokenizer) -> list[int]:
    """Ids of the 101 score tokens; raises if any of them is not exactly one token of `tokenizer`."""
    ids = []
    for text in SCORE_TOKENS:
        encoded = tokenizer.encode(text, add_special_tokens=False)
        if len(encoded) != 1:
            raise ValueError(f"score string {text!r} is {len(encoded)} tokens in this tokenizer, expected exactly 1")
        ids.append(encoded[0])
    return ids


class ReferenceScorer:
    """UniPercept's Visual Rating and VQA on a checkpoint folder, in torch (the numeric reference)."""

    def __init__(
        self, checkpoint_dir: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32, trust_checkpoint_code: bool | None = None
    ):
        from transformers import AutoTokenizer

        self.checkpoint_dir = Path(checkpoint_dir)
        self.config = read_config(self.checkpoint_dir)
        self.device = torch.device(device)
        self.dtype = dtype
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.checkpoint_dir), local_files_only=True, trust_remote_code=False)
        self.score_ids = torch.tensor(score_token_ids(self.tokenizer), device=self.device)
        self.img_context_id = self.tokenizer.convert_tokens_to_ids(IMG_CONTEXT_TOKEN)
        self.im_end_id = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.model = load_internvl(self.checkpoint_dir, dtype=dtype, device=device, trust_checkpoint_code=trust_checkpoint_code)
        self.model.img_context_token_id = self.img_context_id  # the remote code reads it in its own methods
        self.num_image_tokens = int(self.model.num_image_token)
        self.system_message = system_message(self.checkpoint_dir)

    @property
    def language_model(self) -> nn.Module:
        return self.model.language_model

    def _ids(self, text: str) -> torch.Tensor:
        return torch.tensor([self.tokenizer.encode(text, add_special_tokens=False)], device=self.device)

    def image_embeddings(self, image) -> torch.Tensor:
        """(1, num_image_tokens, hidden) embeddings of one image: preprocess -> InternViT -> pixel shuffle -> mlp1."""
        pixel_values = preprocess(image).to(self.device, self.dtype)
        return self.model.extract_feature(pixel_values)

    def _prefix_embeddings(self, ids: torch.Tensor, image_embeds: torch.Tensor) -> torch.Tensor:
        embeds = self.language_model.get_input_embeddings()(ids)
        mask = ids == self.img_context_id
        if int(mask.sum()) != image_embeds.shape[0] * image_embeds.shape[1]:
            raise ValueError(f"prompt has {int(mask.sum())} {IMG_CONTEXT_TOKEN} tokens, image has {image_embeds.shape[1]}")
        embeds = embeds.clone()
        embeds[mask] = image_embeds.reshape(-1, embeds.shape[-1]).to(embeds.dtype)
        return embeds

    @torch.inference_mode()
    def encode_image_prefix(self, image):
        """Run system prompt + image once; returns the KV cache to continue from."""
        prefix, _ = split_prompt(self.system_message, "", self.num_image_tokens)
        ids = self._ids(prefix)
        embeds = self._prefix_embeddings(ids, self.image_embeddings(image))
        return self.language_model(inputs_embeds=embeds, use_cache=True, logits_to_keep=1).past_key_values

    @torch.inference_mode()
    def _continue(self, cache, text: str) -> torch.Tensor:
        """Feed `text` after a copy of `cache`; the float32 logits of its last position (full vocabulary)."""
        output = self.language_model(input_ids=self._ids(text), past_key_values=copy.deepcopy(cache), use_cache=True, logits_to_keep=1)
        return output.logits[0, -1].float()

    def _question_suffix(self, question: str) -> str:
        return split_prompt(self.system_message, question, self.num_image_tokens)[1]

    def score_token_logits(self, image, axis: str) -> torch.Tensor:
        """The full-vocabulary logits at the last prompt position of `axis`'s rating prompt (float32)."""
        return self._continue(self.encode_image_prefix(image), self._question_suffix(rating_prompt(axis)))

    def rate(self, image, axes: tuple[str, ...] = AXES) -> dict[str, float]:
        """{axis: 0-100} for one image (path or PIL image): the image prefix is encoded once for all axes."""
        cache = self.encode_image_prefix(image)
        scores = {}
        for axis in axes:
            logits = self._continue(cache, self._question_suffix(rating_prompt(axis)))
            scores[axis] = float(expected_score(logits[self.score_ids]))
        return scores

    @torch.inference_mode()
    def rate_full_prompt(self, image, axis: str) -> float:
        """One rating with one forward over the whole prompt (no cache reuse), as UniPercept's own code does it."""
        ids = self._ids(build_prompt(self.system_message, rating_prompt(axis), self.num_image_tokens))
        embeds = self._prefix_embeddings(ids, self.image_embeddings(image))
        logits = self.language_model(inputs_embeds=embeds, logits_to_keep=1).logits[0, -1].float()
        return float(expected_score(logits[self.score_ids]))

    @torch.inference_mode()
    def reply(self, image, question: str, max_new_tokens: int = 16) -> str:
        """Greedy reply to a free question about the image (`<image>\\n` + question, as InternVL's chat())."""
        cache = self.encode_image_prefix(image)
        ids = self._ids(self._question_suffix(chat_question(question)))
        generated: list[int] = []
        for _ in range(max_new_tokens):
            output = self.language_model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
            cache = output.past_key_values
            next_id = int(output.logits[0, -1].argmax())
            if next_id in (self.im_end_id, self.tokenizer.convert_tokens_to_ids("<|endoftext|>")):
                break
            generated.append(next_id)
            ids = torch.tensor([[next_id]], device=self.device)
        return self.tokenizer.decode(generated, skip_special_tokens=True).strip()

    def ask(self, image, question: str) -> str:
        """UniPercept VQA as eval_vqa.py reads it: the first character of the greedy reply to the
        multiple-choice prompt, upper-cased ('' if empty)."""
        return vqa_answer(self.reply(image, vqa_prompt(question), max_new_tokens=4))


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m export.unipercept.reference", description="Rate images with a UniPercept checkpoint.")
    parser.add_argument("checkpoint", type=Path, help="checkpoint folder (InternVL original layout)")
    parser.add_argument("images", nargs="+", type=Path, help="image files to rate")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--bf16", action="store_true", help="run in bfloat16 (as UniPercept does on GPU)")
    parser.add_argument(
        "--trust-checkpoint-code", action="store_true", help="allow a checkpoint with auto_map to run its own Python modelling code"
    )
    args = parser.parse_args(argv)
    try:
        dtype = torch.bfloat16 if args.bf16 else torch.float32
        scorer = ReferenceScorer(args.checkpoint, device=args.device, dtype=dtype, trust_checkpoint_code=args.trust_checkpoint_code or None)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for path in args.images:
        scores = scorer.rate(path)
        print(json.dumps({"image": str(path), **{k: round(v, 3) for k, v in scores.items()}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
