"""The full-model training recipe (export/train) on the tiny checkpoint: scores move, checkpoints resume and load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from export.train import train  # noqa: E402
from export.unipercept import reference as unipercept  # noqa: E402
from export.unipercept import tiny  # noqa: E402

torch.set_num_threads(2)
TARGETS = [10, 90, 15, 85]


@pytest.fixture(scope="module")
def vr_dataset(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("vr")
    images = tiny.synthetic_images(root / "images", count=len(TARGETS), seed=3)
    # gt_score on a 1-5 scale, as KADID's: the dataset spec maps it to 0-100.
    records = [{"image": p.name, "gt_score": 1 + 4 * t / 100} for p, t in zip(images, TARGETS)]
    (root / "vr.json").write_text(json.dumps(records), encoding="utf-8")
    return root / "vr.json", root / "images"


def _mean_error(checkpoint: Path, images: Path) -> float:
    scorer = unipercept.ReferenceScorer(checkpoint)
    paths = sorted(images.glob("*.png"))
    return sum(abs(scorer.rate(p, ("iaa",))["iaa"] - t) for p, t in zip(paths, TARGETS)) / len(TARGETS)


def test_dataset_spec_rescales_to_0_100(vr_dataset) -> None:
    vr, images = vr_dataset
    spec = train.DatasetSpec.parse(f"json={vr},images={images},axis=iaa,min=1,max=5")
    assert [round(s.target, 6) for s in train.load_samples(spec)] == TARGETS
    with pytest.raises(ValueError, match="axis must be one of"):
        train.DatasetSpec.parse(f"json={vr},images={images},axis=beauty")
    label = train.soft_label(37.5, 2.0)
    assert float(label.sum()) == pytest.approx(1.0) and int(label.argmax()) in (37, 38)
    assert float(unipercept.expected_score(torch.log(label))) == pytest.approx(37.5, abs=0.05)


def test_a_few_steps_move_scores_toward_targets_and_resume(unipercept_tiny_checkpoint: Path, vr_dataset, tmp_path: Path, capsys) -> None:
    vr, images = vr_dataset
    common = [
        "--checkpoint",
        str(unipercept_tiny_checkpoint),
        "--output",
        str(tmp_path / "run"),
        "--dataset",
        f"json={vr},images={images},axis=iaa,min=1,max=5",
        "--device",
        "cpu",
        "--train",
        "mlp1,llm-layers",
        "--lr",
        "3e-3",
        "--warmup",
        "2",
        "--batch-size",
        "4",
        "--grad-accum",
        "1",
        "--workers",
        "0",
        "--save-every",
        "4",
        "--log-every",
        "1",
        "--sigma",
        "4",
    ]
    assert train.main(common + ["--steps", "8"]) == 0
    step4 = tmp_path / "run" / "checkpoints" / "step-0000004"
    # A step checkpoint is the sharded trainer state (one process here: one shard file), not a model folder.
    assert sorted(p.name for p in step4.iterdir()) == [".metadata", "__0_0.distcp", "progress.json"]
    # ... which export_step turns into a checkpoint folder the reference scorer loads.
    from export.train.export_step import main as export_step

    assert export_step([str(step4), str(tmp_path / "step4")]) == 0
    assert unipercept.ReferenceScorer(tmp_path / "step4").rate(images / "synthetic_00.png").keys() == {"iaa", "iqa", "ista"}

    assert train.main(common + ["--steps", "10", "--resume"]) == 0
    log = capsys.readouterr().err
    assert "resumed from" in log and "step 10/10" in log and "step 5/10" not in log.split("resumed from")[1]
    before = _mean_error(unipercept_tiny_checkpoint, images)
    after = _mean_error(tmp_path / "run", images)
    assert after < before - 5.0, (before, after)
    # The final folder is a complete checkpoint in the original layout (tokenizer and all).
    names = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json"} <= names


def test_lora_run_saves_merged_weights_under_original_names(unipercept_tiny_checkpoint: Path, vr_dataset, tmp_path: Path) -> None:
    pytest.importorskip("peft")
    from safetensors.torch import load_file

    vr, images = vr_dataset
    status = train.main(
        [
            "--checkpoint",
            str(unipercept_tiny_checkpoint),
            "--output",
            str(tmp_path / "lora"),
            "--dataset",
            f"json={vr},images={images},axis=iaa,min=1,max=5",
            "--device",
            "cpu",
            "--lora-rank",
            "4",
            "--train",
            "mlp1,llm",
            "--lr",
            "1e-2",
            "--warmup",
            "1",
            "--steps",
            "2",
            "--batch-size",
            "2",
            "--workers",
            "0",
            "--grad-accum",
            "1",
            "--save-every",
            "0",
        ]
    )
    assert status == 0
    original = load_file(str(unipercept_tiny_checkpoint / "model.safetensors"))
    trained = load_file(str(tmp_path / "lora" / "model.safetensors"))
    assert trained.keys() == original.keys()
    key = "language_model.model.layers.0.self_attn.q_proj.weight"
    assert trained[key].dtype == original[key].dtype and not torch.equal(trained[key], original[key])
    assert torch.equal(trained["vision_model.encoder.layers.0.attn.qkv.weight"], original["vision_model.encoder.layers.0.attn.qkv.weight"])


def test_bad_dataset_is_a_one_line_error(unipercept_tiny_checkpoint: Path, tmp_path: Path, capsys) -> None:
    status = train.main(
        [
            "--checkpoint",
            str(unipercept_tiny_checkpoint),
            "--output",
            str(tmp_path / "x"),
            "--dataset",
            f"json={tmp_path / 'missing.json'},images={tmp_path},axis=iqa",
            "--device",
            "cpu",
        ]
    )
    assert status == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
