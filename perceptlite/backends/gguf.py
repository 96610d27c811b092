"""The llama.cpp backend: UniPercept itself (GGUF text model + mmproj) through llama-cpp-python.

Per image the shared prefix (system message + image) is evaluated once; each rating question is
then evaluated on top of that cached prefix (the KV cache is trimmed back to the prefix between
questions). The score is UniPercept's "token as score": softmax over the logits of the 101 score
tokens (``aa``..``ey``) at the last prompt position, then the expected value.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from PIL import Image

from ..errors import DeviceError, ImageInferenceError
from ..package.manifest import GgufSpec, ModelPackage, ModelPackageError
from ..unipercept_prompts import VQA_TEMPLATE as VQA_INSTRUCTION  # UniPercept's multiple-choice instruction
from ..unipercept_prompts import option_letters, vqa_answer
from . import vision_probe
from .devices import DEVICES
from .gguf_metadata import GgufMetadataError, read_gguf_metadata
from .preprocess import Region

INSTALL_HINT = 'CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install "perceptlite[gguf]"'
CHAT_TEMPLATE = "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
CONTEXT_TOKENS = 2048
BATCH_TOKENS = 512
VQA_PROTOCOLS = ("generate", "logits")
VQA_REPLY_TOKENS = 4  # the read-out keeps one character
_GGML_LOG_LEVEL_ERROR = 4  # enum ggml_log_level: NONE, DEBUG, INFO, WARN, ERROR, CONT


class _LlamaLogs:
    """Route llama.cpp and mtmd log lines: silent unless verbose, remembering the first error."""

    def __init__(self, llama_cpp: Any, mtmd_cpp: Any) -> None:
        self.verbose = False
        self.last_error = ""
        self._callback = llama_cpp.llama_log_callback(self._log)  # keep a reference alive
        llama_cpp.llama_log_set(self._callback, ctypes.c_void_p(0))
        mtmd_cpp.mtmd_log_set(self._callback, ctypes.c_void_p(0))
        mtmd_cpp.mtmd_helper_log_set(self._callback, ctypes.c_void_p(0))

    def _log(self, level: int, text: bytes, user_data: Any) -> None:
        line = text.decode("utf-8", "replace")
        if level == _GGML_LOG_LEVEL_ERROR and line.strip() and not self.last_error:
            self.last_error = line.strip()
        if self.verbose:
            sys.stderr.write(line)


_logs: _LlamaLogs | None = None


def import_llama_cpp() -> tuple[Any, Any]:
    """Import llama-cpp-python (and its mtmd bindings) or fail with the install command."""
    global _logs
    try:
        import llama_cpp
        import llama_cpp.mtmd_cpp as mtmd_cpp
    except ImportError:
        raise ModelPackageError(f"GGUF models need llama-cpp-python; install it with: {INSTALL_HINT}") from None
    if _logs is None:
        _logs = _LlamaLogs(llama_cpp, mtmd_cpp)
    return llama_cpp, mtmd_cpp


def gpu_offload_available() -> bool:
    """True when this llama-cpp-python build has a GPU backend (CUDA, Metal, Vulkan...)."""
    llama_cpp, _ = import_llama_cpp()
    return bool(llama_cpp.llama_supports_gpu_offload())


class GgufBackend:
    """Score images with a gguf model package through llama.cpp (one image at a time).

    Its input contract is UniPercept's own preprocessing: every image is decoded at full resolution
    (``draft_size`` None: no JPEG draft decode, no box reduce, whatever the manifest's ``input``
    says), then ``prepare`` resizes it to the projector's square, bicubic, in one step.
    """

    batch_size = 1
    parallel_runs = 1  # one llama.cpp context
    # UniPercept resizes the full-resolution image; a draft decode would change the 448x448 pixels.
    draft_size: int | None = None

    def __init__(
        self,
        package: ModelPackage,
        device: str = "auto",
        threads: int | None = None,
        variant: str | None = None,
        verbose: bool = False,
    ) -> None:
        self.package = package
        if package.gguf is None:
            raise ModelPackageError(f"{package.path}: a gguf package needs a 'gguf' section in its manifest")
        self._spec: GgufSpec = package.gguf
        self._llama_cpp, self._mtmd = import_llama_cpp()
        assert _logs is not None
        _logs.verbose = verbose
        self.image_size = self._spec.image_size
        self.score_token_ids = np.asarray(self._spec.score_token_ids, dtype=np.int64)
        # Health check: the share of the softmax (whole vocabulary) that falls on the 101 score tokens,
        # per axis for the last image rated, and the lowest seen since the backend was opened.
        self.score_mass: dict[str, float] = {}
        self.lowest_score_mass: float | None = None
        self.offload = self._choose_offload(device)
        self.model_path = package.variant_file(variant)
        self.mmproj_path = package.open_file(self._spec.mmproj)
        self._llama = self._load_text_model(threads, verbose)
        self._mtmd_ctx = self._load_projector(verbose)
        self._check_score_tokens()
        self._marker = self._mtmd.mtmd_default_marker().decode("utf-8")
        self._closing_on_error(self._check_vision_probe)
        self._rating_suffixes = {axis: self._tokenize(self._question_tail(self._spec.rating_prompts[axis])) for axis in package.axes}

    # -- loading ---------------------------------------------------------------------------------

    def _choose_offload(self, device: str) -> bool:
        if device not in DEVICES:
            raise DeviceError(f"unknown device {device!r} for a gguf model (use auto, cpu or cuda)")
        if device == "cpu":
            return False
        supported = bool(self._llama_cpp.llama_supports_gpu_offload())
        if device == "cuda" and not supported:
            raise DeviceError(
                "--device cuda: this llama-cpp-python build has no GPU backend; rebuild it with "
                'CMAKE_ARGS="-DGGML_CUDA=on" (see docs/gguf.md) or use --device cpu'
            )
        return supported

    def _load_text_model(self, threads: int | None, verbose: bool) -> Any:
        if _logs is not None:
            _logs.last_error = ""
        try:
            return self._llama_cpp.Llama(
                model_path=str(self.model_path),
                n_ctx=CONTEXT_TOKENS,
                n_batch=BATCH_TOKENS,
                n_ubatch=BATCH_TOKENS,
                n_threads=threads,
                n_threads_batch=threads,
                n_gpu_layers=-1 if self.offload else 0,
                logits_all=False,
                verbose=verbose,
            )
        except (ValueError, RuntimeError) as exc:
            raise ModelPackageError(self._load_failure(self.model_path, exc)) from None

    def _load_projector(self, verbose: bool) -> Any:
        if _logs is not None:
            _logs.last_error = ""
        params = self._mtmd.mtmd_context_params_default()
        params.use_gpu = self.offload
        params.print_timings = verbose
        params.n_threads = self._llama.n_threads
        params.warmup = False
        ctx = self._mtmd.mtmd_init_from_file(str(self.mmproj_path).encode(), self._llama.model, params)
        if not ctx:
            raise ModelPackageError(self._load_failure(self.mmproj_path, None))
        if not self._mtmd.mtmd_support_vision(ctx):
            self._mtmd.mtmd_free(ctx)
            raise ModelPackageError(f"{self.mmproj_path}: this mmproj has no vision encoder")
        return ctx

    @staticmethod
    def _load_failure(path: Any, exc: Exception | None) -> str:
        reason = (_logs.last_error if _logs else "") or (str(exc) if exc else "")
        reason = f" ({reason})" if reason else ""
        return f"{path}: llama.cpp cannot load this GGUF file{reason}; re-export or re-download the model package"

    def _closing_on_error(self, check: Any) -> None:
        try:
            check()
        except BaseException:
            self.close()
            raise

    def _check_vision_probe(self) -> None:
        """Refuse an mmproj whose position-embedding fix is not recorded, or that this llama.cpp does not
        run as the export's reference did (its InternVL graph changed): the scores would drift silently."""
        path = self.mmproj_path
        try:
            metadata = read_gguf_metadata(path)
        except GgufMetadataError as exc:
            raise ModelPackageError(str(exc)) from None
        order, expected = metadata.get(vision_probe.POSITION_ORDER_KEY), metadata.get(vision_probe.PROBE_KEY)
        if order != vision_probe.POSITION_ORDER or expected is None:
            raise ModelPackageError(
                f"{path}: no record of the InternVL position-embedding fix ({vision_probe.POSITION_ORDER_KEY}); "
                "re-export the package with python -m export.unipercept.gguf"
            )
        pixels = vision_probe.probe_pixels(self.image_size)
        agreement = vision_probe.compare_sketches(vision_probe.feature_sketch(self.image_embeddings(pixels)), expected)
        if not agreement.holds:
            tested = metadata.get(vision_probe.LLAMA_CPP_KEY, "?")
            raise ModelPackageError(
                f"{path}: llama.cpp (llama-cpp-python {getattr(self._llama_cpp, '__version__', '?')}) does not reproduce "
                f"the image features recorded at export (probe correlation {agreement.correlation:.4f}, relative error "
                f"{agreement.relative_error:.3f}); its InternVL graph is not the one the position fix was made for "
                f"(llama-cpp-python {tested}): install that version or re-export"
            )
        self.probe_agreement = agreement

    def _check_score_tokens(self) -> None:
        vocab_size = self._llama.n_vocab()
        if int(self.score_token_ids.max()) >= vocab_size:
            raise ModelPackageError(f"{self.model_path}: score token ids exceed the vocabulary ({vocab_size})")
        first = self._llama.detokenize([int(self.score_token_ids[0])]).decode("utf-8", "replace")
        last = self._llama.detokenize([int(self.score_token_ids[-1])]).decode("utf-8", "replace")
        if (first, last) != ("aa", "ey"):
            raise ModelPackageError(
                f"{self.package.path}: score tokens decode to {first!r}..{last!r}, expected 'aa'..'ey' "
                "(manifest and GGUF vocabulary disagree)"
            )

    def close(self) -> None:
        """Free the llama.cpp model, context and projector."""
        if getattr(self, "_mtmd_ctx", None):
            self._mtmd.mtmd_free(self._mtmd_ctx)
            self._mtmd_ctx = None
        llama = getattr(self, "_llama", None)
        if llama is not None:
            llama.close()
            self._llama = None

    def __enter__(self) -> GgufBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- backend interface -----------------------------------------------------------------------

    def prepare(self, image: Image.Image, region: Region | None = None) -> np.ndarray:
        """Resize the image (its `region`, to the closest whole pixels) to image_size x image_size, bicubic,
        aspect ignored (so mtmd does not tile)."""
        if region is not None:
            image = image.crop((round(region[0]), round(region[1]), round(region[2]), round(region[3])))
        size = (self.image_size, self.image_size)
        resized = image.convert("RGB").resize(size, Image.Resampling.BICUBIC)
        return np.ascontiguousarray(np.asarray(resized, dtype=np.uint8))

    def infer(self, batch: Sequence[np.ndarray]) -> list[dict[str, float]]:
        """Scores per prepared image; raises ImageInferenceError for an image llama.cpp cannot
        evaluate or whose score-token mass is below the package's floor (the pipeline then gives
        that image an error record and goes on)."""
        return [self._checked_rate(pixels) for pixels in batch]

    def _checked_rate(self, pixels: np.ndarray) -> dict[str, float]:
        try:
            scores = self.rate(pixels)
        except RuntimeError as exc:  # llama.cpp / mtmd failed on this image; the context stays usable
            raise ImageInferenceError(f"llama.cpp could not score this image ({exc})") from None
        axis, mass = min(self.score_mass.items(), key=lambda item: item[1])
        if mass < self._spec.min_score_mass:
            raise ImageInferenceError(
                f"the model puts only {mass:.3g} of its probability on the 101 score tokens ({axis}), "
                f"below the package's min_score_mass {self._spec.min_score_mass:g}; no scores"
            )
        return scores

    # -- rating ----------------------------------------------------------------------------------

    def rate(self, pixels: np.ndarray, axes: Sequence[str] | None = None) -> dict[str, float]:
        """Scores 0-100 for one prepared image; the image prefix is evaluated once for all axes.
        Sets ``score_mass`` (per axis) as a health check."""
        prefix = self._eval_image_prefix(pixels)
        scores, self.score_mass = {}, {}
        for axis in axes or self.package.axes:
            logits = self._last_logits_after(prefix, self._rating_suffixes[axis])
            scores[axis] = expected_score(logits[self.score_token_ids].astype(np.float64))
            self.score_mass[axis] = score_token_mass(logits, self.score_token_ids)
        lowest = min(self.score_mass.values())
        self.lowest_score_mass = lowest if self.lowest_score_mass is None else min(lowest, self.lowest_score_mass)
        return scores

    def score_token_logits(self, pixels: np.ndarray, axis: str) -> np.ndarray:
        """The 101 score-token logits (scores 0..100) at the last position of one rating prompt."""
        prefix = self._eval_image_prefix(pixels)
        return self._score_logits_after(prefix, self._rating_suffixes[axis])

    def _score_logits_after(self, prefix_length: int, suffix: list[int]) -> np.ndarray:
        return self._last_logits_after(prefix_length, suffix)[self.score_token_ids].astype(np.float64)

    def _last_logits_after(self, prefix_length: int, suffix: list[int]) -> np.ndarray:
        # Llama.eval first drops every cached position >= n_tokens: the KV cache goes back to the prefix.
        self._llama.n_tokens = prefix_length
        self._llama.eval(suffix)
        return self._last_logits()

    def _last_logits(self) -> np.ndarray:
        pointer = self._llama_cpp.llama_get_logits_ith(self._llama.ctx, -1)
        return np.ctypeslib.as_array(pointer, shape=(self._llama.n_vocab(),)).copy()

    def _question_tail(self, question: str) -> str:
        """What follows the image in the chat prompt: the question and the assistant header."""
        full = CHAT_TEMPLATE.format(system=self._spec.system_message, user=self._marker + question)
        return full.split(self._marker, 1)[1]

    def _tokenize(self, text: str) -> list[int]:
        return self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def _eval_image_prefix(self, pixels: np.ndarray) -> int:
        """Evaluate system message + image (+ the image end tag); returns the prefix length."""
        head = CHAT_TEMPLATE.format(system=self._spec.system_message, user=self._marker)
        head = head.split(self._marker, 1)[0] + self._marker
        with self._image_chunks(pixels, head) as chunks:
            self._llama.n_tokens = 0
            for index in range(self._mtmd.mtmd_input_chunks_size(chunks)):
                self._eval_chunk(self._mtmd.mtmd_input_chunks_get(chunks, index))
        return self._llama.n_tokens

    def image_embeddings(self, pixels: np.ndarray) -> np.ndarray:
        """The projector's output for one prepared image: (image tokens, text hidden size) float32."""
        with self._image_chunks(pixels, self._marker) as chunks:
            for index in range(self._mtmd.mtmd_input_chunks_size(chunks)):
                chunk = self._mtmd.mtmd_input_chunks_get(chunks, index)
                if self._mtmd.mtmd_input_chunk_get_type(chunk) != self._mtmd.MTMD_INPUT_CHUNK_TYPE_IMAGE:
                    continue
                if self._mtmd.mtmd_encode_chunk(self._mtmd_ctx, chunk) != 0:
                    raise RuntimeError("llama.cpp could not encode the image")
                count = self._mtmd.mtmd_input_chunk_get_n_tokens(chunk)
                width = self._llama_cpp.llama_model_n_embd_inp(self._llama.model)
                output = self._mtmd.mtmd_get_output_embd(self._mtmd_ctx)
                return np.ctypeslib.as_array(output, shape=(count * width,)).reshape(count, width).copy()
        raise RuntimeError("mtmd produced no image chunk")

    @contextlib.contextmanager
    def _image_chunks(self, pixels: np.ndarray, text: str) -> Iterator[Any]:
        """mtmd's chunks (text / image tokens) for `text` whose marker stands for the image."""
        pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
        if pixels.ndim != 3 or pixels.shape[2] != 3:
            raise ValueError("expected an RGB array of shape (height, width, 3)")
        height, width = pixels.shape[:2]
        bitmap = self._mtmd.mtmd_bitmap_init(width, height, pixels.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)))
        chunks = self._mtmd.mtmd_input_chunks_init()
        try:
            prompt = self._mtmd.mtmd_input_text()
            encoded = text.encode("utf-8")
            prompt.text, prompt.text_len = encoded, len(encoded)
            prompt.add_special, prompt.parse_special = True, True
            bitmaps = (self._mtmd.mtmd_bitmap_p_ctypes * 1)(bitmap)
            status = self._mtmd.mtmd_tokenize(self._mtmd_ctx, chunks, ctypes.byref(prompt), bitmaps, 1)
            if status != 0:
                raise RuntimeError(f"mtmd could not tokenize the image prompt (code {status})")
            yield chunks
        finally:
            self._mtmd.mtmd_input_chunks_free(chunks)
            self._mtmd.mtmd_bitmap_free(bitmap)

    def _eval_chunk(self, chunk: Any) -> None:
        if self._mtmd.mtmd_input_chunk_get_type(chunk) == self._mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT:
            count = ctypes.c_size_t()
            tokens = self._mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(count))
            self._llama.eval([tokens[i] for i in range(count.value)])
            return
        # The first text chunk already cleared the KV cache (Llama.eval drops positions >= n_tokens).
        new_position = self._llama_cpp.llama_pos(0)
        status = self._mtmd.mtmd_helper_eval_chunk_single(
            self._mtmd_ctx,
            self._llama.ctx,
            chunk,
            self._llama_cpp.llama_pos(self._llama.n_tokens),
            self._llama_cpp.llama_seq_id(0),
            self._llama.n_batch,
            False,
            ctypes.byref(new_position),
        )
        if status != 0:
            raise RuntimeError(f"llama.cpp could not evaluate the image (code {status})")
        self._llama.n_tokens = new_position.value

    # -- questions -------------------------------------------------------------------------------

    def ask(self, pixels: np.ndarray, question: str, max_tokens: int = 64) -> str:
        """Greedy answer to a free-form question about one prepared image ("<image>\n" + question)."""
        prefix = self._eval_image_prefix(pixels)
        logits = self._last_logits_after(prefix, self._tokenize(self._question_tail("\n" + question)))
        vocab = self._llama_cpp.llama_model_get_vocab(self._llama.model)
        answer: list[int] = []
        for _ in range(max_tokens):
            token = int(np.argmax(logits))
            if self._llama_cpp.llama_vocab_is_eog(vocab, token) or self._llama.n_tokens >= CONTEXT_TOKENS:
                break
            answer.append(token)
            self._llama.eval([token])
            logits = self._last_logits()
        return self._llama.detokenize(answer).decode("utf-8", "replace").strip()

    def choose(self, pixels: np.ndarray, question: str, letters: str | None = None, protocol: str = "generate") -> str:
        """UniPercept's multiple-choice answer to `question` (its options on lines "A. ...").

        ``protocol="generate"`` (the default) is the paper's evaluation (eval_vqa.py): a short greedy
        reply to the VQA prompt, its first character upper-cased (which may be no option letter at all).
        ``protocol="logits"``: the option letter with the highest logit at the first answer position,
        among those the question lists (and `letters` allows; ABCD when it lists none), never anything else.
        """
        prompt = VQA_INSTRUCTION.format(question=question)
        if protocol == "generate":
            return vqa_answer(self.ask(pixels, prompt, max_tokens=VQA_REPLY_TOKENS))
        if protocol != "logits":
            raise ValueError(f"unknown VQA protocol {protocol!r} (use {' or '.join(VQA_PROTOCOLS)})")
        listed = option_letters(question) or "ABCD"
        allowed = "".join(letter for letter in listed if letter in (letters or listed))
        if not allowed:
            raise ValueError(f"none of the letters {letters} is an option of this question ({listed})")
        prefix = self._eval_image_prefix(pixels)
        logits = self._last_logits_after(prefix, self._tokenize(self._question_tail("\n" + prompt)))  # "<image>\n" + question
        letter_ids = [self._single_token(letter) for letter in allowed]
        return allowed[int(np.argmax(logits[letter_ids]))]

    def _single_token(self, text: str) -> int:
        ids = self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        if len(ids) != 1:
            raise ValueError(f"{text!r} is not a single token of this model's vocabulary")
        return ids[0]


def score_token_mass(logits: np.ndarray, score_token_ids: np.ndarray) -> float:
    """The softmax probability (over the whole vocabulary) that falls on the score tokens."""
    logits = np.asarray(logits, dtype=np.float64)
    weights = np.exp(logits - logits.max())
    return float(weights[score_token_ids].sum() / weights.sum())


def expected_score(score_logits: np.ndarray) -> float:
    """UniPercept's token-as-score: softmax over the 101 score logits, then the expected value."""
    logits = np.asarray(score_logits, dtype=np.float64)
    weights = np.exp(logits - logits.max())
    weights /= weights.sum()
    return float(weights @ np.arange(len(weights), dtype=np.float64))
