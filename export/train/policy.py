"""The model being trained, wrapped so that every use of it is one forward call (what FSDP needs), and its prompts.

`Policy` holds the InternVL-layout model; `Policy.forward(mode, ...)` computes logits at chosen positions of
teacher-forced sequences ("logits") or samples replies ("sample"), optionally as the frozen reference (LoRA
adapters off). `Prompts` turns samples into token ids exactly as the reference scorer (export/unipercept/reference.py) does.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from export.unipercept.reference import (
    AXES,
    DEFAULT_SYSTEM_MESSAGE,
    IMG_CONTEXT_TOKEN,
    build_prompt,
    chat_question,
    load_internvl,
    rating_prompt,
    read_config,
    score_token_ids,
    vqa_prompt,
)

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class ModelOptions:
    """Which parts train, how (LoRA rank), and the memory savers."""

    train: tuple[str, ...] = ("mlp1", "llm")
    lora_rank: int = 0
    lora_alpha: int | None = None
    lora_dropout: float = 0.05
    gradient_checkpointing: bool = False

    @property
    def lora_scaling(self) -> float:
        return (self.lora_alpha or 2 * self.lora_rank) / self.lora_rank if self.lora_rank > 0 else 0.0


def load_trainable_model(checkpoint: Path, options: ModelOptions, dtype: torch.dtype, device: str) -> nn.Module:
    """Load the checkpoint, freeze what is not trained, add LoRA to the LLM if asked."""
    model = load_internvl(checkpoint, dtype=dtype, device=device)
    model.train()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    language_model = model.language_model
    if options.gradient_checkpointing:
        language_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.vision_model.encoder.gradient_checkpointing = True
    language_model.config.use_cache = False
    if "vision" in options.train:
        model.vision_model.requires_grad_(True)
    if "mlp1" in options.train:
        model.mlp1.requires_grad_(True)
    if "llm" in options.train:
        if options.lora_rank > 0:
            model.language_model = _with_lora(language_model, options)
        else:
            language_model.requires_grad_(True)
    if "llm-layers" in options.train:  # the decoder layers and final norm only: no vocabulary-sized matrices
        for name, parameter in language_model.named_parameters():
            if "embed_tokens" not in name and "lm_head" not in name:
                parameter.requires_grad_(True)
    return model


def _with_lora(language_model: nn.Module, options: ModelOptions) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=options.lora_rank,
        lora_alpha=options.lora_alpha or 2 * options.lora_rank,
        lora_dropout=options.lora_dropout,
        target_modules=LORA_TARGETS,
    )
    wrapped = get_peft_model(language_model, lora)
    for name, parameter in wrapped.named_parameters():
        if "lora_" in name:
            parameter.data = parameter.data.float()  # adapters train in float32 on a bf16 base
    return wrapped


def only_lora_trains(model: nn.Module) -> bool:
    """True when every trained parameter is a LoRA adapter (then the reference is the model with adapters off)."""
    trained = [name for name, p in model.named_parameters() if p.requires_grad]
    return bool(trained) and all(".lora_" in name for name in trained)


class Policy(nn.Module):
    """The InternVL model behind one `forward(mode, ...)`, so FSDP's hooks see every use of the weights."""

    def __init__(self, model: nn.Module, img_context_id: int):
        super().__init__()
        self.model = model
        self.img_context_id = img_context_id
        model.img_context_token_id = img_context_id  # the checkpoints' own code reads it

    def forward(self, mode: str, *, reference: bool = False, **inputs):
        with self._adapters_off() if reference else contextlib.nullcontext():
            if mode == "logits":
                return self._logits_at(**inputs)
            if mode == "sample":
                return self._sample(**inputs)
        raise ValueError(f"unknown mode {mode!r}")

    def _adapters_off(self):
        language_model = self.model.language_model
        return language_model.disable_adapter() if hasattr(language_model, "disable_adapter") else contextlib.nullcontext()

    def _embed(self, pixel_values: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings with each row's image embeddings scattered over its <IMG_CONTEXT> positions."""
        image_embeds = self.model.extract_feature(pixel_values)
        if image_embeds.shape[0] == 1 and input_ids.shape[0] > 1:  # one image under several sequences (rollouts)
            image_embeds = image_embeds.expand(input_ids.shape[0], -1, -1)
        embeds = self.model.language_model.get_input_embeddings()(input_ids)
        mask = (input_ids == self.img_context_id).unsqueeze(-1)
        return embeds.masked_scatter(mask, image_embeds.to(embeds.dtype).reshape(-1))

    def _decoder(self):
        return self.model.language_model.get_decoder()

    def _head(self):
        return self.model.language_model.get_output_embeddings()

    def _logits_at(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Float32 full-vocabulary logits at `positions` ((K, 2): row, index) of right-padded sequences.

        Right padding needs no attention mask: causal attention never lets a real position see a later pad.
        """
        hidden = self._decoder()(inputs_embeds=self._embed(pixel_values, input_ids), use_cache=False).last_hidden_state
        return self._head()(hidden[positions[:, 0], positions[:, 1]]).float()

    @torch.no_grad()
    def _sample(
        self,
        pixel_values: torch.Tensor,
        prompt_ids: torch.Tensor,
        count: int,
        max_new_tokens: int,
        temperature: float,
        stop_ids: list[int],
        generator: torch.Generator,
    ) -> torch.Tensor:
        """`count` sampled replies to one prompt: (count, T) token ids, each ending with a stop id or cut at T."""
        embeds = self._embed(pixel_values, prompt_ids).expand(count, -1, -1)
        decoder, head = self._decoder(), self._head()
        output = decoder(inputs_embeds=embeds, use_cache=True)
        cache, hidden = output.past_key_values, output.last_hidden_state[:, -1]
        stop = torch.tensor(stop_ids, device=prompt_ids.device)
        finished = torch.zeros(count, dtype=torch.bool, device=prompt_ids.device)
        tokens = []
        for _ in range(max_new_tokens):
            probabilities = torch.softmax(head(hidden).float() / temperature, dim=-1)
            token = torch.multinomial(probabilities, 1, generator=generator).squeeze(1)
            token = torch.where(finished, stop[0], token)
            tokens.append(token)
            finished |= torch.isin(token, stop)
            if bool(finished.all()):
                break
            output = decoder(
                inputs_embeds=self.model.language_model.get_input_embeddings()(token[:, None]), past_key_values=cache, use_cache=True
            )
            cache, hidden = output.past_key_values, output.last_hidden_state[:, -1]
        return torch.stack(tokens, dim=1)


class Prompts:
    """Token ids of UniPercept's prompts for a checkpoint's tokenizer: rating per axis, VQA and free questions."""

    def __init__(self, checkpoint: Path, num_image_tokens: int):
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(checkpoint), local_files_only=True)
        self.system = read_config(checkpoint).get("system_message") or DEFAULT_SYSTEM_MESSAGE
        self.num_image_tokens = num_image_tokens
        self.rating_ids = {axis: self._encode(build_prompt(self.system, rating_prompt(axis), num_image_tokens)) for axis in AXES}
        self.score_ids = score_token_ids(self.tokenizer)
        self.img_context_id = self.tokenizer.convert_tokens_to_ids(IMG_CONTEXT_TOKEN)
        self.im_end_id = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.im_end_id
        self.stop_ids = [self.im_end_id] + [
            i for i in [self.tokenizer.convert_tokens_to_ids("<|endoftext|>")] if isinstance(i, int) and i != self.im_end_id
        ]

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def question_text(self, sample) -> str:
        """The user question after the image, exactly as the reference scorer asks it."""
        if sample.task == "rating":
            return rating_prompt(sample.axis)
        if sample.task == "mcq":
            return chat_question(vqa_prompt(sample.question))
        return chat_question(sample.question)

    def prompt_ids(self, sample) -> list[int]:
        if sample.task == "rating":
            return self.rating_ids[sample.axis]
        return self._encode(build_prompt(self.system, self.question_text(sample), self.num_image_tokens))

    def answer_ids(self, answer: str) -> list[int]:
        """The assistant turn's tokens: the answer, then <|im_end|>."""
        return self._encode(answer) + [self.im_end_id]

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()


def pad_right(rows: list[list[int]], pad_id: int, device) -> torch.Tensor:
    """(B, max length) tensor of token ids, right-padded."""
    width = max(len(row) for row in rows)
    return torch.tensor([row + [pad_id] * (width - len(row)) for row in rows], device=device)
