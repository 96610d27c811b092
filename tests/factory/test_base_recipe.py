"""The bundled package's recipe (export/base/): the combined graph, and the whole recipe on a few real photos."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from export.base.crop_network import imagenet_crop_net
from export.base.export import runtime_inputs
from export.base.package_model import build_package_onnx, max_difference
from export.base.photos import rated_photos
from perceptlite.package.manifest import load_package

REPO = Path(__file__).resolve().parents[2]
BUNDLED = REPO / "models" / "perceptlite-base"


@pytest.fixture(scope="module")
def crop_net():
    torch.manual_seed(0)
    net = imagenet_crop_net(3)
    with torch.no_grad():  # a head that is not the identity of anything the source computes
        for parameter in net.head.parameters():
            parameter.normal_(0, 0.05)
        net.head[-1].bias.fill_(50.0)
    return net.eval()


def test_combined_graph_keeps_the_whole_view_and_takes_iqa_from_the_crop_network(tmp_path, crop_net):
    combined = build_package_onnx(BUNDLED / "model.onnx", crop_net, tmp_path / "model.onnx")
    inputs = runtime_inputs([path for path, _ in rated_photos()[:3]])
    worst = max_difference(combined, BUNDLED / "model.onnx", crop_net, inputs)
    assert worst["iaa"] == 0.0 and worst["ista"] == 0.0  # the same nodes, the same numbers
    assert worst["iqa"] < 0.05
    graph = onnx.load(str(combined)).graph
    crops = next(i for i in graph.input if i.name == "crops")
    assert crops.type.tensor_type.shape.dim[1].dim_param == "views"  # any number of crops
    # Combining again (the bundled package is the next run's source) gives the same graph, not two crop networks.
    again = build_package_onnx(combined, crop_net, tmp_path / "again.onnx")
    assert len(onnx.load(str(again)).graph.node) == len(graph.node)
    assert max_difference(again, BUNDLED / "model.onnx", crop_net, inputs[:1])["iqa"] < 0.05


def _recipe(step: str, work: Path, out: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    where = ["--out", str(out)] if out else []
    return subprocess.run(
        [sys.executable, "-m", "export.base", step, "--smoke", "--work", str(work), *where],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )


def test_smoke_recipe_builds_a_package_the_runtime_scores_with(tmp_path, corpus_dir):
    work, out = tmp_path / "work", tmp_path / "package"
    first = _recipe("all", work, out)
    assert first.returncode == 0, first.stderr[-3000:]
    for step in ("iqa-cv:", "iqa-train:", "export:", "package:"):
        assert step in first.stderr  # every step says how long it took
    manifest = json.loads((out / "perceptlite.json").read_text())
    cv = manifest["fidelity"]["human_cross_validated"]
    assert cv["pooled"]["photos"] == 16 and set(cv["per_fold"]) == {"0", "1"}
    # The package's own layout (the middle row) is one of the layouts the CV also scores: the same numbers.
    assert cv["crop_layouts"]["middle-row"] == cv["pooled"] and set(cv["crop_layouts"]) >= {"centre", "grid-3x3"}
    assert manifest["provenance"]["command"].startswith("python -m export.base all")
    card = (out / "MODEL_CARD.md").read_text()
    assert card.index("cross-validated") < card.index("## What it is")  # the card leads with the honest number
    load_package(out).verify()

    photo = sorted((corpus_dir / "bsds500" / "val").glob("*.jpg"))[0]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    scored = subprocess.run(
        [sys.executable, "-m", "perceptlite", "score", str(photo), "-m", str(out), "--json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert scored.returncode == 0, scored.stderr
    record = json.loads(scored.stdout)[0]
    assert 0.0 <= record["iqa"] <= 100.0 and np.isfinite(record["iaa"])

    # A rerun resumes: nothing is trained again, the folds and the checkpoint are the same files.
    stamps = {p: p.stat().st_mtime_ns for p in [work / "iqa" / "checkpoint.pt", *sorted((work / "iqa-cv").glob("fold-*.json"))]}
    again = _recipe("iqa-cv", work)
    assert again.returncode == 0, again.stderr[-2000:]
    again = _recipe("iqa-train", work)
    assert again.returncode == 0, again.stderr[-2000:]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_a_killed_cross_validation_resumes_at_the_fold_it_was_in(tmp_path):
    import signal
    import time

    work = tmp_path / "work"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "export.base", "iqa-cv", "--smoke", "--work", str(work)]
    run = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first_fold = work / "iqa-cv" / "fold-0.json"
    deadline = time.time() + 900
    while not first_fold.is_file() and run.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert first_fold.is_file(), "the first fold never finished"
    run.send_signal(signal.SIGKILL)  # no chance to clean up: whatever is on disk is all a rerun gets
    run.wait(timeout=60)
    if (work / "iqa-cv" / "summary.json").is_file():
        pytest.skip("the run finished before it could be killed")
    stamp = first_fold.stat().st_mtime_ns
    again = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "fold 1/2: training" not in again.stderr and "fold 2/2: training" in again.stderr  # only the unfinished fold trains
    assert first_fold.stat().st_mtime_ns == stamp
    assert json.loads((work / "iqa-cv" / "summary.json").read_text())["photos"] == 16
    assert not list((work / "iqa-cv").glob("*.partial"))


def test_a_checkpoint_from_other_settings_is_refused_in_one_line(tmp_path):
    work = tmp_path / "work"
    (work / "iqa").mkdir(parents=True)
    torch.save(
        {"signature": {"config": {}, "rated": [], "unrated": []}, "epoch": 1, "net": {}, "optimizer": {}, "history": []},
        work / "iqa" / "checkpoint.pt",
    )
    result = _recipe("iqa-train", work)
    assert result.returncode == 1
    assert "made with other photos or settings" in result.stderr and "Traceback" not in result.stderr


def test_own_ratings_fit_the_head_and_write_a_package_score_loads(tmp_path):
    images = tmp_path / "photos"
    images.mkdir()
    rows = ["file,score"]
    for path, mos in rated_photos()[:12]:
        (images / path.name).write_bytes(path.read_bytes())
        rows.append(f"{path.name},{mos}")
    rows += ["missing.jpg,50", f"{rated_photos()[0][0].name},not-a-number"]
    table = tmp_path / "ratings.csv"
    table.write_text("\n".join(rows) + "\n")
    out = tmp_path / "mine"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run(
        [sys.executable, "-m", "export.base", "own-ratings", str(images), str(table), "--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "missing.jpg: no such file" in run.stderr and "is not a number; skipped" in run.stderr  # one line each, the run goes on
    cv = json.loads(run.stdout)
    assert cv["photos"] == 12 and -1.0 <= cv["srcc"] <= 1.0 and len(cv["ridge_alpha_per_fold"]) == 5

    manifest = json.loads((out / "perceptlite.json").read_text())
    assert manifest["name"] == "perceptlite-base-own" and manifest["fidelity"]["human_cross_validated"]["photos"] == 12
    scored = subprocess.run(
        [sys.executable, "-m", "perceptlite", "score", str(images), "-m", str(out), "--json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert scored.returncode == 0, scored.stderr
    records = {Path(r["path"]).name: r for r in json.loads(scored.stdout)}
    bundled = subprocess.run(
        [sys.executable, "-m", "perceptlite", "score", str(images), "--json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    original = {Path(r["path"]).name: r for r in json.loads(bundled.stdout)}
    assert all(0.0 <= r["iqa"] <= 100.0 for r in records.values())
    assert any(abs(records[n]["iqa"] - original[n]["iqa"]) > 0.1 for n in records)  # iqa is the new head's
    assert all(abs(records[n]["iaa"] - original[n]["iaa"]) < 1e-3 for n in records)  # the whole view is untouched

    again = subprocess.run(
        [sys.executable, "-m", "export.base", "own-ratings", str(images), str(table), "--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert again.returncode == 1 and "not empty" in again.stderr  # an existing package is never replaced


def test_the_polish_cycle_resumes_where_it_stopped_and_ends_as_a_straight_run(tmp_path):
    from dataclasses import replace

    from export.base.iqa_training import RatedPhoto, Trainer, TrainingConfig, UnratedPhoto
    from export.base.photos import professional_training_photos

    rated = [RatedPhoto(path, mos) for path, mos in rated_photos()[:8]]
    unrated = [UnratedPhoto(professional_training_photos()[0], True)]
    config = TrainingConfig(
        epochs=1, polish_epochs=1, photos_per_step=4, damage_per_step=1, probe_steps=5, stored_sizes=(500,), polish_crops_per_photo=3
    )

    class Stop(Exception):
        pass

    def stop_after_first_epoch(line: str) -> None:
        if "epoch 1/2" in line:
            raise Stop

    straight = Trainer(rated, unrated, config, tmp_path / "straight", log=lambda _: None).fit()
    with pytest.raises(Stop):
        Trainer(rated, unrated, config, tmp_path / "stopped", log=stop_after_first_epoch).fit()
    after_one = {k: v.clone() for k, v in torch.load(tmp_path / "stopped" / "checkpoint.pt", weights_only=True)["net"].items()}
    lines: list[str] = []
    resumed = Trainer(rated, unrated, config, tmp_path / "stopped", log=lines.append).fit()

    assert any("resuming" in line for line in lines) and not any("epoch 1/2" in line for line in lines)
    assert any("epoch 2/2" in line for line in lines)
    for name, value in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value, atol=1e-6, rtol=0)
    head = next(k for k in after_one if k.startswith("head") and k.endswith("weight"))
    assert not torch.equal(after_one[head], resumed.state_dict()[head])  # the polish epoch trained the head
    with pytest.raises(Exception, match="other photos or settings"):
        Trainer(rated, unrated, replace(config, polish_lr_scale=0.5), tmp_path / "stopped", log=lambda _: None).fit()
