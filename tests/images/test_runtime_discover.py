"""Discovery: deterministic streaming order, extensions, hidden files, links, shards."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from perceptlite.images.discover import iter_image_files, parse_shard


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


@pytest.fixture()
def tree(tmp_path) -> Path:
    root = tmp_path / "photos"
    for name in [
        "b.jpg",
        "a.JPG",
        "c.Jpeg",
        "notes.txt",
        "d.png",
        "e.WEBP",
        "f.bmp",
        "g.TIFF",
        "h.tif",
        "i.gif",
        "sub/z.jpg",
        "sub/deeper/y.png",
        "sub2/x.jpeg",
        ".hidden.jpg",
        ".cache/k.jpg",
        "ünïcødé 照片.jpg",
    ]:
        _touch(root / name)
    return root


def _relative(paths, root):
    return [os.path.relpath(p, root) for p in paths]


def test_order_extensions_and_recursion(tree):
    found = _relative(iter_image_files([tree]), tree)
    assert found == [
        "a.JPG",
        "b.jpg",
        "c.Jpeg",
        "d.png",
        "e.WEBP",
        "f.bmp",
        "g.TIFF",
        "h.tif",
        "i.gif",
        "sub/deeper/y.png",
        "sub/z.jpg",
        "sub2/x.jpeg",
        "ünïcødé 照片.jpg",
    ]
    assert found == _relative(iter_image_files([tree]), tree)  # deterministic


def test_no_recursion_and_hidden(tree):
    flat = _relative(iter_image_files([tree], recursive=False), tree)
    assert "sub/z.jpg" not in flat and "b.jpg" in flat
    with_hidden = _relative(iter_image_files([tree], hidden=True), tree)
    assert ".hidden.jpg" in with_hidden and ".cache/k.jpg" in with_hidden


def test_files_given_directly_are_kept_in_argument_order(tree):
    files = [tree / "notes.txt", tree / "b.jpg", tree / ".hidden.jpg"]
    assert list(iter_image_files(files)) == [str(f) for f in files]


def test_symlink_loops_and_dangling_links(tree):
    (tree / "sub" / "loop").symlink_to(tree, target_is_directory=True)
    (tree / "self.jpg").symlink_to(tree / "self.jpg")
    (tree / "dangling.jpg").symlink_to(tree / "missing.jpg")
    found = _relative(iter_image_files([tree]), tree)
    assert len(found) == len(set(os.path.realpath(tree / p) for p in found))  # nothing twice
    assert "dangling.jpg" in found and "self.jpg" in found  # yielded; decoding reports why
    assert found.count("b.jpg") == 1


def test_unreadable_folder_is_reported(tmp_path):
    _touch(tmp_path / "a.jpg")
    folder = tmp_path / "gone"
    folder.mkdir()
    errors = []
    generator = iter_image_files([tmp_path], on_error=lambda path, reason: errors.append((path, reason)))
    assert next(generator) == str(tmp_path / "a.jpg")
    folder.rmdir()  # vanishes between listing its parent and entering it
    assert list(generator) == []
    assert errors and errors[0][0] == str(folder) and "\n" not in errors[0][1]


def test_streams_without_listing_everything(tmp_path):
    for i in range(50):
        _touch(tmp_path / f"d{i:02d}" / "p.jpg")
    generator = iter_image_files([tmp_path])
    assert next(generator).endswith(os.path.join("d00", "p.jpg"))


@pytest.mark.parametrize("count", [1, 3, 4])
def test_shards_partition_the_files(tree, count):
    everything = list(iter_image_files([tree]))
    shards = [list(iter_image_files([tree], shard=(i, count))) for i in range(count)]
    assert sorted(sum(shards, [])) == sorted(everything)
    assert sum(len(s) for s in shards) == len(everything)
    for shard in shards:  # each shard keeps the global order
        assert shard == [p for p in everything if p in shard]


def test_shard_is_stable_under_different_roots(tree):
    a = _relative(iter_image_files([tree], shard=(1, 3)), tree)
    b = _relative(iter_image_files([str(tree) + os.sep], shard=(1, 3)), tree)
    assert a == b


@pytest.mark.parametrize("text", ["3/3", "1", "a/b", "-1/2", "0/0"])
def test_bad_shards(text):
    with pytest.raises(ValueError, match="--shard"):
        parse_shard(text)
    assert parse_shard("2/5") == (2, 5)
