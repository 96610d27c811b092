"""`perceptlite ask IMAGE "question" --model PACKAGE`: ask UniPercept (a gguf package) about one image.

Exit codes: 0 answered, 2 usage, model or input errors (not a gguf package, an unreadable image).
"""

from __future__ import annotations

import click

from ..errors import PerceptliteError
from ..images.decode import DecodeError, decode_file
from ..package.registry import load_model
from .options import exits_on_errors, model_options


@click.command("ask")
@click.argument("image", type=click.Path(dir_okay=False))
@click.argument("question")
@model_options(required=True, help="A gguf model package: name or folder (ask needs UniPercept itself).")
@click.option(
    "--choices",
    "choices",
    default=None,
    metavar="LETTERS",
    help="Multiple choice: use UniPercept's VQA prompt; with --vqa-protocol logits, answer with one of these letters, e.g. ABCD.",
)
@click.option(
    "--vqa-protocol",
    type=click.Choice(["generate", "logits"]),
    default="generate",
    show_default=True,
    help="generate: the paper's read-out (greedy reply, first character upper-cased); logits: the --choices letter with the highest logit.",
)
@click.option("--max-tokens", type=click.IntRange(min=1), default=64, show_default=True, help="Longest free-form answer, in tokens.")
@click.option("-v", "--verbose", is_flag=True, help="Show llama.cpp's own log lines.")
@exits_on_errors
def command(
    image: str,
    question: str,
    model: str,
    variant: str | None,
    device: str,
    threads: int | None,
    choices: str | None,
    vqa_protocol: str,
    max_tokens: int,
    verbose: bool,
) -> None:
    """Answer QUESTION about IMAGE (greedy, short); with --choices, print the chosen letter."""
    package = load_model(model)
    if package.backend != "gguf":
        raise PerceptliteError(f"{package.path}: ask needs a gguf package (UniPercept itself); this one is {package.backend}")
    from ..backends.gguf import GgufBackend

    with GgufBackend(package, device=device, threads=threads, variant=variant, verbose=verbose) as backend:
        pixels = backend.prepare(_decode(image))
        if choices:
            try:
                answer = backend.choose(pixels, question, _letters(choices), protocol=vqa_protocol)
            except ValueError as exc:  # --choices names no option the question lists
                raise PerceptliteError(f"--choices {choices!r}: {exc}") from None
        else:
            answer = backend.ask(pixels, question, max_tokens=max_tokens)
    click.echo(answer)


def _decode(image: str):
    try:
        return decode_file(image).image
    except DecodeError as exc:
        raise PerceptliteError(f"{image}: {exc}") from None


def _letters(choices: str) -> str:
    letters = "".join(choices.replace(",", "").split()).upper()
    if not letters or not letters.isalpha() or len(set(letters)) != len(letters):
        raise PerceptliteError(f"--choices {choices!r}: give distinct option letters, e.g. ABCD")
    return letters
