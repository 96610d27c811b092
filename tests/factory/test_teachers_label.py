"""The labeller: every axis per sample, resumable without duplicates, bad images skipped with a warning."""

import pytest
from _teachers_fixtures import PHOTOS, corpus_photo

from export.distill.label import iter_samples, read_records, sample_image
from export.distill.label_command import main
from export.teachers import load_teacher

TEACHERS = ["--teacher", "iqa-synthetic", "--teacher", "ista"]


@pytest.fixture()
def image_dir(tmp_path):
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    for i, p in enumerate(PHOTOS):
        corpus_photo(p, max_side=200).save(folder / ("sub" if i else "") / f"photo{i}.jpg", quality=95)
    return folder


def run(image_dir, out, *extra):
    return main([*TEACHERS, "--images", str(image_dir), "--out", str(out), "--distortions-per-image", "2", "--seed", "3", *extra])


def test_interrupted_run_resumes_without_duplicates(image_dir, tmp_path):
    out = tmp_path / "labels.jsonl"
    assert run(image_dir, out, "--limit", "4") == 0
    assert len(read_records(out)) == 4
    # Simulate a kill in the middle of writing a record.
    with open(out, "a") as f:
        f.write('{"key": "half a rec')
    assert run(image_dir, out) == 0
    records = read_records(out)
    keys = [r["key"] for r in records]
    assert len(keys) == len(set(keys)) == 3 * 3
    assert out.read_text().count("\n") == 9
    for r in records:
        assert 0 <= r["iqa"] <= 100 and 0 <= r["ista"] <= 100
        assert r["max_side"] == 512
        assert set(r["teachers"]) == {"iqa-synthetic", "ista"}
    assert sum(r["distortion"] is None for r in records) == 3
    assert all(r["iqa"] == 100.0 for r in records if r["distortion"] is None)
    assert all(r["iqa"] < 100.0 for r in records if r["distortion"] is not None)
    # A third run has nothing left to do and leaves the file as it was.
    before = out.read_bytes()
    assert run(image_dir, out) == 0
    assert out.read_bytes() == before


def test_sample_image_rebuilds_the_labelled_image(image_dir, tmp_path):
    out = tmp_path / "labels.jsonl"
    assert run(image_dir, out) == 0
    teacher = load_teacher("iqa-synthetic")
    record = next(r for r in read_records(out) if r["distortion"] is not None)
    clean = sample_image({**record, "distortion": None})
    again = teacher.label(sample_image(record), clean)["iqa"]
    assert again == pytest.approx(record["iqa"], abs=1e-3)
    assert list(sample_image(record).size) == record["size"]


def test_samples_are_fixed_by_seed(image_dir):
    a = [s.key for s in iter_samples([image_dir], 3, seed=1)]
    b = [s.key for s in iter_samples([image_dir], 3, seed=1)]
    c = [s.key for s in iter_samples([image_dir], 3, seed=2)]
    assert a == b and a != c and len(a) == 3 * 4


def test_bad_image_is_reported_and_the_run_goes_on(image_dir, tmp_path, capsys):
    (image_dir / "broken.jpg").write_bytes(b"not really a jpeg")
    out = tmp_path / "labels.jsonl"
    assert run(image_dir, out) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "broken.jpg" in warnings[0]
    assert "Traceback" not in err
    assert len(read_records(out)) == 9


def test_missing_folder_is_a_one_line_error(tmp_path, capsys):
    assert run(tmp_path / "nope", tmp_path / "labels.jsonl") == 2
    err = capsys.readouterr().err.strip()
    assert "nope" in err and "\n" not in err


def test_axis_claimed_twice_is_refused(image_dir, tmp_path, capsys):
    assert main(["--teacher", "ista", "--teacher", "ista", "--images", str(image_dir), "--out", str(tmp_path / "x.jsonl")]) == 2
    err = capsys.readouterr().err.strip()
    assert "axis ista" in err and "\n" not in err


@pytest.mark.parametrize("name", ["iqa-synthetic", "ista"])
def test_teachers_follow_the_interface(name):
    from export.teachers import Teacher

    teacher = load_teacher(name)
    assert isinstance(teacher, Teacher)
    info = teacher.describe()
    assert {"name", "axes", "what", "weights", "licence", "mapping"} <= set(info)
    assert info["name"] == teacher.name == name


def test_unknown_teacher_names_the_choices():
    with pytest.raises(ValueError, match="nima"):
        load_teacher("clip")


def test_views_are_labelled_clean_crops_that_rebuild_exactly(image_dir, tmp_path):
    out = tmp_path / "labels.jsonl"
    assert run(image_dir, out, "--views-per-image", "2") == 0
    records = read_records(out)
    views = [r for r in records if r.get("view")]
    assert len(records) == 3 * (1 + 2 + 2) and len(views) == 3 * 2
    assert len({r["key"] for r in records}) == len(records)
    ista = load_teacher("ista")
    for record in views:
        assert record["distortion"] is None and record["iqa"] == 100.0
        clean = sample_image({k: v for k, v in record.items() if k != "view"})
        image = sample_image(record)
        assert list(image.size) == record["size"]
        # A crop of 30-90 % of the picture's area, never the whole picture.
        share = image.width * image.height / (clean.width * clean.height)
        assert 0.25 < share < 0.95
        assert ista.label(image)["ista"] == pytest.approx(record["ista"], abs=1e-3)


def test_a_view_crops_its_fractional_box_and_mirrors_it():
    import numpy as np
    from PIL import Image

    from export.distill.label import apply_view

    pixels = np.arange(40 * 30 * 3, dtype=np.uint32).reshape(30, 40, 3) % 251
    image = Image.fromarray(pixels.astype(np.uint8))
    left_half = np.asarray(apply_view(image, {"box": [0.0, 0.0, 0.5, 1.0], "flip": False}))
    assert np.array_equal(left_half, pixels[:, :20].astype(np.uint8))
    mirrored = np.asarray(apply_view(image, {"box": [0.0, 0.0, 0.5, 1.0], "flip": True}))
    assert np.array_equal(mirrored, left_half[:, ::-1])


def test_views_leave_the_other_samples_and_their_keys_unchanged(image_dir):
    plain = [s.key for s in iter_samples([image_dir], 2, seed=3)]
    with_views = [s.key for s in iter_samples([image_dir], 2, seed=3, views_per_image=3)]
    assert [k for k in with_views if "|view|" not in k] == plain
    assert with_views == [s.key for s in iter_samples([image_dir], 2, seed=3, views_per_image=3)]
    assert len(with_views) - len(plain) == 3 * 3


def test_labelling_leaves_the_torch_thread_count_as_it_was(image_dir, tmp_path):
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert run(image_dir, tmp_path / "labels.jsonl", "--threads", "1") == 0
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
