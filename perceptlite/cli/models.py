"""`perceptlite models`: list model packages; `perceptlite models show NAME` summarises one.

Exit codes: 0 done, 2 a package that cannot be found or loaded (missing, bad manifest, hash mismatch).
"""

from __future__ import annotations

import json

import click

from ..package.manifest import load_package
from ..package.registry import DEFAULT_MODEL, MODEL_PATH_ENV, iter_packages, resolve_model
from ..records.names import display_name, escape_unsafe
from .options import exits_on_errors


@click.group("models", invoke_without_command=True)
@click.option(
    "--path",
    "extra",
    multiple=True,
    type=click.Path(exists=True, file_okay=False),
    metavar="FOLDER",
    help="Also list packages in FOLDER (a package or a folder of packages).",
)
@click.pass_context
def command(ctx: click.Context, extra: tuple[str, ...]) -> None:
    """List the bundled model packages, those on PERCEPTLITE_MODEL_PATH and those given."""
    if ctx.invoked_subcommand is not None:
        return
    entries = list(iter_packages(extra))
    if not entries:
        click.echo(f"no model packages found (none bundled; add folders with --path or {MODEL_PATH_ENV})")
        return
    width = max(len(e.name) for e in entries)
    for entry in entries:
        default = " (default)" if entry.name == DEFAULT_MODEL and entry.source == "bundled" else ""
        # Manifests are not trusted text: control characters are escaped before they reach a terminal.
        click.echo(
            escape_unsafe(f"{entry.name:<{width}}  {entry.version:<8} {entry.backend:<5} {entry.source:<8} {entry.description}{default}")
        )
        click.echo(f"{'':<{width}}  {display_name(str(entry.path))}")


@command.command("show")
@click.argument("model", metavar="NAME|FOLDER")
@click.option("--json", "as_json", is_flag=True, help="Print the whole manifest as JSON.")
@exits_on_errors
def show(model: str, as_json: bool) -> None:
    """Summarise a package's manifest (and check its files' hashes)."""
    package = load_package(resolve_model(model))
    package.verify()
    raw = package.raw
    if as_json:
        click.echo(json.dumps(raw, indent=2))  # ASCII: every control character is escaped
        return
    spec = package.input
    lines = [
        f"name:        {package.name} {package.version}",
        f"description: {raw.get('description', '')}",
        f"path:        {package.path}",
        f"backend:     {package.backend}",
        f"variants:    {_variants(package)}",
        f"input:       {spec.size[1]}x{spec.size[0]} {spec.resize}, {spec.interpolation}, mean {list(spec.mean)}, std {list(spec.std)}",
        "outputs:     " + ", ".join(f"{axis}={o.tensor}[{o.index}]*{o.scale:g}{o.offset:+g}" for axis, o in package.outputs.items()),
        "files:       " + ", ".join(f"{name} ({entry.get('bytes', 0) / 1e6:.1f} MB)" for name, entry in package.files.items()),
        "hashes:      ok (sha256 of every file checked)",
    ]
    for section in ("provenance", "fidelity"):
        for key, value in (raw.get(section) or {}).items():
            text = value if isinstance(value, str) else json.dumps(value)
            lines.append(f"{section}.{key}: {text}"[:400])
    click.echo("\n".join(escape_unsafe(line) for line in lines))


def _variants(package) -> str:
    variants = package.variants
    if not variants:
        return "-"
    default = package.default_variant or next(iter(variants))
    return ", ".join(f"{v}={f}" + (" (default)" if v == default else "") for v, f in variants.items())
