"""`perceptlite filter`: selection, printing, copy/move/link with hostile names, conflicts, dry-run."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from _dataset_fixtures import build_tiny_package, make_images, run_cli

from perceptlite.datasets.file_actions import FileActionError, TargetFolder, safe_relative

HOSTILE_NAMES = [
    "line\nbreak.png",
    "-rf.png",
    "a..b..png",
    "x...jpg",
    " leading space.png",
    "\\etc\\passwd.png",
    "C:\\Windows\\x.png",
    "<b>tag<.png",
    "quote\"'.png",
]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return build_tiny_package(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture()
def photos(tmp_path) -> Path:
    """A folder of real images, some in subfolders, some with hostile names (not hidden: no leading dot)."""
    root = tmp_path / "photos"
    make_images(root, 12)
    sources = make_images(tmp_path / "raw", len(HOSTILE_NAMES), start=40, subfolders=0)
    (root / "a..").mkdir()
    (root / "-n").mkdir()
    for index, (source, name) in enumerate(zip(sources, HOSTILE_NAMES)):
        folder = root / ("a.." if index % 3 == 0 else "-n" if index % 3 == 1 else "")
        source.replace(folder / name)
    return root


def score_file(tmp_path: Path, model: Path, photos: Path) -> tuple[Path, list[dict]]:
    output = tmp_path / "scores.jsonl"
    run_cli("score", photos, "-m", model, "--jsonl", "-o", output)
    records = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert len(records) == 12 + len(HOSTILE_NAMES) and all(r["error"] is None for r in records)
    return output, records


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file() and not p.is_symlink()}


def test_where_prints_matching_paths_in_input_order(tmp_path, model, photos):
    scores, records = score_file(tmp_path, model, photos)
    expected = [r["path"] for r in records if r["iaa"] >= 45 and (r["iqa"] < 60 or not r["ista"] > 50)]
    assert 0 < len(expected) < len(records)
    where = "iaa >= 45 and (iqa < 60 or not ista > 50)"
    run = run_cli("filter", "--from-scores", scores, "--where", where, "-0")
    assert run.stdout.split("\0")[:-1] == expected
    rescored = run_cli("filter", photos, "-m", model, "--where", where, "-0")  # scoring again gives the same
    assert rescored.stdout == run.stdout
    newline = run_cli("filter", "--from-scores", scores, "--where", where)
    if any("\n" in path for path in expected):
        assert "use -0" in newline.stderr


def test_top_and_bottom_rank_by_axis(tmp_path, model, photos):
    scores, records = score_file(tmp_path, model, photos)
    best = sorted(records, key=lambda r: r["iqa"], reverse=True)[:4]
    run = run_cli("filter", "--from-scores", scores, "--top", "4", "--by", "iqa", "-0")
    assert run.stdout.split("\0")[:-1] == [r["path"] for r in best]
    kept = [r for r in records if r["iaa"] > 40]
    worst = sorted(kept, key=lambda r: r["ista"])[:3]
    run = run_cli("filter", "--from-scores", scores, "--where", "iaa > 40", "--bottom", "3", "--by", "ista", "-0")
    assert run.stdout.split("\0")[:-1] == [r["path"] for r in worst]


def test_copy_keeps_relative_paths_and_bytes_for_hostile_names(tmp_path, model, photos):
    scores, records = score_file(tmp_path, model, photos)
    before = snapshot(photos)
    outside_before = sorted(p.name for p in tmp_path.iterdir())
    target = tmp_path / "picked"
    run_cli("filter", photos, "--from-scores", scores, "--where", "iaa >= 0", "--copy-to", target)
    assert snapshot(target) == before  # every file, same relative path, same bytes
    assert snapshot(photos) == before  # sources untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(outside_before + ["picked"])
    assert not list(target.rglob(".pl-*"))


def test_move_copies_then_deletes_sources(tmp_path, model, photos):
    scores, records = score_file(tmp_path, model, photos)
    before = snapshot(photos)
    chosen = [r["path"] for r in records if r["iqa"] >= 50]
    assert chosen
    target = tmp_path / "moved"
    run = run_cli("filter", photos, "--from-scores", scores, "--where", "iqa >= 50", "--move-to", target)
    assert f"moved {len(chosen)} file(s)" in run.stderr
    moved = snapshot(target)
    assert len(moved) == len(chosen)
    for path in chosen:
        relative = os.path.relpath(path, photos)
        assert moved[relative] == before[relative]
        assert not os.path.exists(path)
    assert len(snapshot(photos)) == len(before) - len(chosen)


@pytest.mark.parametrize("link_type", ["symlink", "hardlink"])
def test_link_points_at_the_sources(tmp_path, model, photos, link_type):
    scores, records = score_file(tmp_path, model, photos)
    target = tmp_path / "links"
    run_cli("filter", photos, "--from-scores", scores, "--top", "5", "--by", "iaa", "--link-to", target, "--link-type", link_type)
    best = sorted(records, key=lambda r: r["iaa"], reverse=True)[:5]
    for record in best:
        link = target / os.path.relpath(record["path"], photos)
        if link_type == "symlink":
            assert link.is_symlink() and os.readlink(link) == os.path.abspath(record["path"])
        else:
            assert not link.is_symlink() and os.path.samefile(link, record["path"])


def test_conflicts_error_skip_rename(tmp_path, model, photos):
    scores, records = score_file(tmp_path, model, photos)
    target = tmp_path / "out"
    existing = target / os.path.relpath(records[0]["path"], photos)
    existing.parent.mkdir(parents=True)
    existing.write_bytes(b"mine")
    args = ["filter", photos, "--from-scores", scores, "--where", "iaa >= 0", "--copy-to", target]

    run = run_cli(*args, check=False)  # default: error, and nothing is done at all
    assert run.returncode != 0 and "already exists" in run.stderr and "Traceback" not in run.stderr
    assert snapshot(target) == {os.path.relpath(existing, target): b"mine"}

    dry = run_cli(*args, "--dry-run", "--on-conflict", "rename")
    assert snapshot(target) == {os.path.relpath(existing, target): b"mine"}
    assert "-1" in dry.stdout

    run_cli(*args, "--on-conflict", "skip")
    assert existing.read_bytes() == b"mine"
    assert len(snapshot(target)) == len(records)

    run_cli(*args, "--on-conflict", "rename")
    copies = snapshot(target)
    assert existing.read_bytes() == b"mine"
    assert len(copies) == 2 * len(records)
    stem, suffix = os.path.splitext(existing.name)
    assert (existing.parent / f"{stem}-1{suffix}").read_bytes() == Path(records[0]["path"]).read_bytes()


def test_two_sources_with_one_destination_conflict(tmp_path, model):
    first, second = tmp_path / "a", tmp_path / "b"
    make_images(first, 2, subfolders=0)
    make_images(second, 2, subfolders=0)  # the same names
    run = run_cli("filter", first, second, "-m", model, "--where", "iaa >= 0", "--copy-to", tmp_path / "out", check=False)
    assert run.returncode != 0 and "two files would get this name" in run.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_dry_run_changes_nothing(tmp_path, model, photos):
    scores, records = score_file(tmp_path, model, photos)
    before = snapshot(photos)
    run = run_cli("filter", photos, "--from-scores", scores, "--where", "iaa >= 0", "--move-to", tmp_path / "dest", "--dry-run")
    assert not (tmp_path / "dest").exists()
    assert snapshot(photos) == before
    assert run.stdout.count("move: ") == len(records)


def test_score_records_never_place_files_outside_the_target(tmp_path, model):
    """Records from a score file with '..' and absolute paths still land inside the target."""
    work = tmp_path / "work"
    inner = make_images(work / "deep" / "inner", 1, subfolders=0)[0]
    outer = make_images(tmp_path / "elsewhere", 1, start=5, subfolders=0)[0]
    scores = work / "scores.jsonl"
    records = [
        {"path": "deep/inner/../../../elsewhere/" + outer.name, "iaa": 80, "iqa": 80, "ista": 80, "width": 24, "height": 24, "error": None},
        {"path": str(inner), "iaa": 70, "iqa": 70, "ista": 70, "width": 24, "height": 24, "error": None},
    ]
    scores.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    target = work / "target"
    run_cli("filter", "--from-scores", scores, "--where", "iaa > 50", "--copy-to", target, cwd=work)
    placed = snapshot(target)
    assert sorted(placed) == sorted([f"elsewhere/{outer.name}", f"work/deep/inner/{inner.name}"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "work"]
    # with a root folder given, records outside it are not selected at all
    run = run_cli("filter", work / "deep", "--from-scores", scores, "--where", "iaa > 50", "-0", cwd=work)
    assert run.stdout == str(inner) + "\0"


def test_a_symlink_planted_in_the_target_is_not_followed(tmp_path, model, photos):
    scores, _ = score_file(tmp_path, model, photos)
    target = tmp_path / "target"
    target.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (target / "part0").symlink_to(outside)
    run = run_cli("filter", photos, "--from-scores", scores, "--where", "iaa >= 0", "--copy-to", target, check=False)
    assert run.returncode != 0 and "refusing to write through it" in run.stderr
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("relative", ["../x.png", "a/../../x.png", "/etc/x.png", "", ".", "a//b.png", "a/./b.png"])
def test_unsafe_destinations_are_refused(tmp_path, relative):
    source = make_images(tmp_path, 1, subfolders=0)[0]
    with pytest.raises(FileActionError):
        safe_relative(relative)
    with TargetFolder(tmp_path / "t") as target, pytest.raises(FileActionError):
        target.copy(str(source), relative)
    assert list((tmp_path / "t").iterdir()) == []


def test_usage_errors_are_one_line(tmp_path, model, photos):
    scores, _ = score_file(tmp_path, model, photos)
    for args, fragment in [
        (["--where", "iaa >>= 3"], "--where"),
        (["--top", "3"], "--by"),
        (["--where", "iaa > 1", "--copy-to", "a", "--move-to", "b"], "one of"),
        ([], "--where"),
    ]:
        run = run_cli("filter", "--from-scores", scores, *args, check=False)
        assert run.returncode != 0 and fragment in run.stderr and "Traceback" not in run.stderr, run.stderr
    missing = run_cli("filter", "--from-scores", tmp_path / "nope.jsonl", "--where", "iaa > 1", check=False)
    assert missing.returncode != 0 and "nope.jsonl" in missing.stderr and "Traceback" not in missing.stderr
    shutil.rmtree(photos)


@pytest.mark.parametrize("action", ["--move-to", "--copy-to", None])
def test_a_record_through_a_symlink_and_dotdot_is_judged_by_the_file_it_names(tmp_path, action):
    """filter PATHS acts only on files inside PATHS as the system resolves them: photos/sub/link/../x
    reads as photos/sub/x, but with link -> elsewhere/deep it names elsewhere/x, outside PATHS."""
    photos, elsewhere = tmp_path / "photos", tmp_path / "elsewhere"
    (photos / "sub").mkdir(parents=True)
    (elsewhere / "deep").mkdir(parents=True)
    (elsewhere / "secret.jpg").write_bytes(b"not yours")
    (photos / "inside.jpg").write_bytes(b"yours")
    (photos / "sub" / "link").symlink_to(elsewhere / "deep", target_is_directory=True)
    sneaky = f"{photos}/sub/link/../secret.jpg"
    record = {"iaa": 50.0, "iqa": 50.0, "ista": 50.0, "width": 10, "height": 10, "error": None}
    scores = tmp_path / "scores.jsonl"
    scores.write_text("".join(json.dumps({"path": path, **record}) + "\n" for path in (sneaky, str(photos / "inside.jpg"))))
    target = tmp_path / "picked"
    extra = [action, str(target)] if action else []
    run = run_cli("filter", photos, "--from-scores", scores, "--where", "iaa >= 0", *extra)
    assert run.returncode == 0, run.stderr
    assert (elsewhere / "secret.jpg").read_bytes() == b"not yours"
    if action is None:
        assert run.stdout.splitlines() == [str(photos / "inside.jpg")]
    else:
        assert sorted(os.listdir(target)) == ["inside.jpg"]
        assert (photos / "inside.jpg").exists() == (action == "--copy-to")
