"""`perceptlite filter`: select images by their scores, then print, copy, move or link them.

Exit codes: 0 done, 1 done but some files have no scores (they match nothing), 2 usage, model or
input errors (nothing was copied, moved or linked when the error was found before acting).
"""

from __future__ import annotations

import os
import sys

import click

from ..datasets.file_actions import CONFLICT_POLICIES, LINK_TYPES, FileActionError, TargetFolder, execute, plan, relative_to_root, resolved
from ..datasets.query import FIELDS, compile_where
from ..records import ScoreResult
from ..records.names import display_name
from ..records.text import stdout_text
from .options import EXIT_OK, EXIT_SOME_FAILED, Scoring, exits_on_errors, fail, require_stdout, scoring_options
from .sources import from_scores_option, gather_results

PAST_TENSE = {"copy": "copied", "move": "moved", "link": "linked"}


def select(results: list[ScoreResult], where: str | None, top: int | None, bottom: int | None, by: str | None) -> list[ScoreResult]:
    """Scored records matching `where`; with top/bottom, the N highest/lowest by `by`, best first."""
    predicate = compile_where(where) if where else (lambda record: True)
    chosen = [result for result in results if result.error is None and predicate(result.as_dict())]
    if top is not None or bottom is not None:
        if by is None:
            raise ValueError("--top/--bottom need an axis (--by)")
        axis = by
        ranked = [result for result in chosen if getattr(result, axis) is not None]
        ranked.sort(key=lambda result: getattr(result, axis), reverse=top is not None)
        chosen = ranked[: top if top is not None else bottom]
    return chosen


def destinations(results: list[ScoreResult], roots: tuple[str, ...]) -> list[tuple[str, str]]:
    """(source, path inside the target) pairs, keeping each file's path below its root folder.

    Without roots (scores from a file), the root is the deepest folder common to all sources.
    """
    if roots:
        bases = list(roots)
    else:
        folders = [os.path.dirname(resolved(result.file)) for result in results]
        bases = [os.path.commonpath(folders)] if folders else []
    pairs = []
    for result in results:
        relative = relative_to_root(result.file, bases)
        if relative is None:
            raise FileActionError(f"{result.file!r}: not inside any of {', '.join(map(repr, bases))}; refusing to place it")
        pairs.append((result.file, relative))
    return pairs


@click.command("filter")
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--where", "where", help='Condition on iaa, iqa, ista, width, height, e.g. "iqa >= 60 and iaa >= 50".')
@click.option("--top", type=click.IntRange(min=1), help="Keep the N highest by --by (after --where).")
@click.option("--bottom", type=click.IntRange(min=1), help="Keep the N lowest by --by (after --where).")
@click.option("--by", type=click.Choice(FIELDS), help="Axis for --top/--bottom.")
@click.option("--copy-to", type=click.Path(file_okay=False), help="Copy the selected files here, keeping their relative folders.")
@click.option("--move-to", type=click.Path(file_okay=False), help="Move the selected files here (copy, fsync, then delete the source).")
@click.option("--link-to", type=click.Path(file_okay=False), help="Link the selected files here (see --link-type).")
@click.option("--link-type", type=click.Choice(LINK_TYPES), default="symlink", show_default=True, help="Kind of link for --link-to.")
@click.option(
    "--on-conflict",
    type=click.Choice(CONFLICT_POLICIES),
    default="error",
    show_default=True,
    help="When a destination exists: stop before doing anything, skip the file, or add -1, -2, ... to its name.",
)
@click.option("--dry-run", is_flag=True, help="Show what would be copied/moved/linked; change nothing.")
@click.option("-0", "--null", "null", is_flag=True, help="Separate printed paths with NUL instead of newline (for xargs -0).")
@from_scores_option
@scoring_options
@exits_on_errors
def command(
    paths, where, top, bottom, by, copy_to, move_to, link_to, link_type, on_conflict, dry_run, null, from_scores, scoring: Scoring
) -> None:
    """Select images (PATHS, or the records of --from-scores) whose scores match; print their paths or act on them."""
    targets = [(name, folder) for name, folder in (("copy", copy_to), ("move", move_to), ("link", link_to)) if folder]
    if len(targets) > 1:
        raise click.UsageError("choose one of --copy-to, --move-to, --link-to")
    if top is not None and bottom is not None:
        raise click.UsageError("choose one of --top, --bottom")
    if (top is not None or bottom is not None) and by is None:
        raise click.UsageError("--top/--bottom need --by AXIS")
    if not where and top is None and bottom is None:
        raise click.UsageError("give --where EXPRESSION and/or --top/--bottom N --by AXIS")
    if not targets:
        require_stdout()
    try:
        if where:
            compile_where(where)  # a syntax error stops us before any scoring
        results = gather_results(paths, from_scores, scoring)
        failed = sum(1 for result in results if result.error is not None)
        if failed:
            click.echo(f"perceptlite: {failed} file(s) have no scores (failed to decode) and match nothing", err=True)
        chosen = select(results, where, top, bottom, by)
        if not targets:
            _print_paths(chosen, null)
        else:
            action, folder = targets[0]
            _act(chosen, paths, action, folder, link_type, on_conflict, dry_run, scoring.quiet)
    except OSError as exc:  # e.g. permission denied or a full disk in the target
        if isinstance(exc, BrokenPipeError):
            raise  # `filter ... | head -1`: the command group ends quietly (141)
        fail(f"{exc.filename or (copy_to or move_to or link_to)}: {exc.strerror or exc}")
    sys.exit(EXIT_SOME_FAILED if failed else EXIT_OK)


def _require_scored_files(chosen: list[ScoreResult]) -> None:
    """Act only on files that are there under the exact name that was scored; refuse before acting."""
    missing = [result.file for result in chosen if not os.path.isfile(result.file)]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise FileActionError(f"{display_name(missing[0])}{more}: scored but no longer a file under that name; nothing was done")


def _print_paths(chosen: list[ScoreResult], null: bool) -> None:
    """Paths for a pipe exactly as they are (newline- or NUL-separated); on a terminal, in the
    display form that shows control characters and undecodable bytes as escapes."""
    if not null and any("\n" in result.file for result in chosen):
        click.echo("warning: some paths contain a newline; use -0 to separate paths unambiguously", err=True)
    terminal = sys.stdout.isatty()
    with stdout_text() as out:
        for result in chosen:
            out.write((display_name(result.file) if terminal else result.file) + ("\0" if null else "\n"))


def _act(
    chosen: list[ScoreResult],
    roots: tuple[str, ...],
    action: str,
    folder: str,
    link_type: str,
    on_conflict: str,
    dry_run: bool,
    quiet: bool = False,
) -> None:
    _require_scored_files(chosen)
    pairs = destinations(chosen, roots)
    with TargetFolder(folder, create=not dry_run) as target:
        entries = plan(pairs, target, on_conflict)
        if dry_run:
            for entry in entries:
                verb = "skip (exists)" if entry.skip else action
                click.echo(f"{verb}: {entry.source!r} -> {target.display(entry.relative)!r}")
            return
        done = skipped = 0
        for entry in entries:
            if entry.skip or execute(entry, target, action, on_conflict, link_type).skip:
                skipped += 1
            else:
                done += 1
    note = f", skipped {skipped} that already existed" if skipped else ""
    if not quiet:
        click.echo(f"{PAST_TENSE[action]} {done} file(s) to {display_name(folder)}{note}", err=True)
