"""`perceptlite ask IMAGE "question" --model PACKAGE`: ask UniPercept (a gguf package) about one image."""

from __future__ import annotations

import click

from ..decode import DecodeError, decode_file
from ..errors import PerceptliteError
from ..manifest import ModelPackageError
from ..registry import load_model


@click.command("ask")
@click.argument("image", type=click.Path(dir_okay=False))
@click.argument("question")
@click.option("-m", "--model", required=True, help="A gguf model package: name or folder (ask needs UniPercept itself).")
@click.option("--choices", "choices", default=None, metavar="LETTERS", help="Multiple choice: use UniPercept's VQA prompt and answer with one of these letters, e.g. ABCD.")
@click.option("--variant", default=None, help="Weight variant of the package (f16, q8_0, q4_k_m); default: the package's.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True, help="Offload layers to the GPU when llama.cpp was built with one.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads for llama.cpp (default: half the cores).")
@click.option("--max-tokens", type=click.IntRange(min=1), default=64, show_default=True, help="Longest free-form answer, in tokens.")
@click.option("-v", "--verbose", is_flag=True, help="Show llama.cpp's own log lines.")
def command(image: str, question: str, model: str, choices: str | None, variant: str | None, device: str, threads: int | None, max_tokens: int, verbose: bool) -> None:
    """Answer QUESTION about IMAGE (greedy, short); with --choices, print the chosen letter."""
    try:
        package = load_model(model)
        if package.backend != "gguf":
            raise PerceptliteError(f"{package.path}: ask needs a gguf package (UniPercept itself); this one is {package.backend}")
        from ..gguf_backend import GgufBackend

        with GgufBackend(package, device=device, threads=threads, variant=variant, verbose=verbose) as backend:
            pixels = backend.prepare(_decode(image))
            if choices:
                answer = backend.choose(pixels, question, _letters(choices))
            else:
                answer = backend.ask(pixels, question, max_tokens=max_tokens)
    except (PerceptliteError, ModelPackageError) as exc:
        raise click.ClickException(str(exc)) from None
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
