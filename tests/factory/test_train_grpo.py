"""Stage 2 of export/train (GRPO) on the tiny checkpoint (CPU): rewards, advantages, reward rises, LoRA reference, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

torch = pytest.importorskip("torch")

from test_train_stage1 import assert_same_trained_state, run_killed_after_first_checkpoint, two_torch_threads  # noqa: E402,F401  (two_torch_threads: autouse)

from export.train import grpo, rewards  # noqa: E402
from export.unipercept import reference as unipercept  # noqa: E402
from export.unipercept import tiny  # noqa: E402

TOY_TARGETS = [70, 80]  # a toy rating task: two images rated high


@pytest.fixture(scope="module")
def toy_task(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("toy")
    images = tiny.synthetic_images(root / "images", count=len(TOY_TARGETS), seed=5)
    (root / "vr.json").write_text(json.dumps([{"image": p.name, "gt_score": t} for p, t in zip(images, TOY_TARGETS)]))
    questions = [
        {"image": p.name, "question": "Is the image noisy?\nA. yes\nB. no\nC. a little\nD. cannot tell", "answer": "B"} for p in images
    ]
    (root / "mcq.json").write_text(json.dumps(questions))
    (root / "text.json").write_text(json.dumps([{"image": p.name, "question": "Describe it.", "answer": "flat"} for p in images]))
    return {"images": root / "images", "vr": root / "vr.json", "mcq": root / "mcq.json", "text": root / "text.json"}


def expected_reward(checkpoint: Path, images: Path) -> float:
    """Mean over the toy images of E[reward] under the checkpoint's rating distribution (exact, no sampling)."""
    scorer = unipercept.ReferenceScorer(checkpoint)
    table = torch.tensor([[rewards.rating_reward(k, t) for k in range(101)] for t in TOY_TARGETS])
    total = 0.0
    for row, path in enumerate(sorted(images.glob("*.png"))):
        probabilities = torch.softmax(scorer.score_token_logits(path, "iaa")[scorer.score_ids], dim=-1)
        total += float(probabilities @ table[row])
    return total / len(TOY_TARGETS)


def test_rating_reward_is_the_papers_adaptive_gaussian() -> None:
    # UniPercept's Figure 6: prediction error 5, 10, 20, 50 -> reward 0.827, 0.475, 0.059, 0.000.
    for error, shown in ((5, 0.827), (10, 0.475), (20, 0.059), (50, 0.0)):
        assert round(rewards.rating_reward(33.6 + error, 33.6), 3) == shown
    assert rewards.rating_reward(40, 40) == 1.0
    assert rewards.choice_reward(" B. no", "B") == 1.0 and rewards.choice_reward("A", "B") == 0.0
    assert rewards.text_answer_reward("The texture is flat.", "flat texture") == pytest.approx(0.8)
    assert rewards.format_reward("flat", terminated=True) == 1.0 and rewards.format_reward("flat", terminated=False) == 0.0
    advantages = rewards.group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]))
    assert torch.allclose(advantages, torch.tensor([1.0, -1.0, -1.0, 1.0]), atol=1e-3)
    assert torch.equal(rewards.group_advantages(torch.ones(4)), torch.zeros(4))


def grpo_args(checkpoint: Path, output: Path, *datasets: str) -> list[str]:
    return [
        "--checkpoint",
        str(checkpoint),
        "--output",
        str(output),
        *[a for d in datasets for a in ("--dataset", d)],
        "--device",
        "cpu",
        "--workers",
        "0",
        "--log-every",
        "1",
        "--group-size",
        "8",
        "--batch-size",
        "2",
        "--grad-accum",
        "1",
    ]


def test_grpo_raises_the_mean_reward_on_a_toy_rating_task(unipercept_tiny_checkpoint: Path, toy_task, tmp_path: Path, capsys) -> None:
    before = expected_reward(unipercept_tiny_checkpoint, toy_task["images"])
    args = grpo_args(
        unipercept_tiny_checkpoint, tmp_path / "grpo", f"json={toy_task['vr']},images={toy_task['images']},axis=iaa,min=0,max=100"
    )
    assert (
        grpo.main(args + ["--train", "mlp1,llm-layers", "--lr", "3e-3", "--steps", "8", "--save-every", "0", "--updates-per-step", "2"])
        == 0
    )
    log = capsys.readouterr().err
    assert "step 8/8" in log and "reward" in log and "kl" in log and "clipped" in log
    after = expected_reward(tmp_path / "grpo", toy_task["images"])
    print(f"GRPO toy rating task: mean expected reward {before:.3f} -> {after:.3f}")
    assert after > before + 0.05, (before, after)


def test_lora_reference_is_the_base_with_adapters_off(unipercept_tiny_checkpoint: Path, toy_task, tmp_path: Path, capsys) -> None:
    pytest.importorskip("peft")
    from export.train.data import DatasetSpec
    from export.train.engine import Engine, TrainOptions

    spec = DatasetSpec.parse(f"json={toy_task['mcq']},images={toy_task['images']}")
    options = TrainOptions(
        checkpoint=unipercept_tiny_checkpoint,
        output=tmp_path / "unused",
        datasets=[spec],
        train=("llm",),
        lora_rank=4,
        device="cpu",
        workers=0,
        bf16=False,
    )
    engine = Engine(options, lora_dropout=0.0, needs_reference=True)
    assert engine.reference is None  # LoRA-only training: no second copy of the weights
    stage = grpo.TaskAlignedRL(grpo.GrpoSettings(group_size=4, max_new_tokens=3))
    stage.score_ids = torch.tensor(engine.prompts.score_ids)
    sample = engine.mixture.sources[0][0]
    rollout = stage._rollouts(engine, 0, [sample])[0]
    assert rollout.actions.shape[0] == 4 and set(rollout.rewards.tolist()) <= {0.0, 1.0}
    # LoRA's B starts at zero: the policy equals the reference, so the KL term starts at exactly zero.
    assert torch.allclose(rollout.old_log_probs, rollout.reference_log_probs, atol=1e-6)
    with torch.no_grad():
        next(p for n, p in engine.policy.named_parameters() if "lora_B" in n).add_(0.5)
    moved = stage._answer_log_probs(engine.policy, rollout)
    assert not torch.allclose(moved, rollout.old_log_probs, atol=1e-4)
    assert torch.allclose(stage._answer_log_probs(engine.policy, rollout, reference=True), rollout.reference_log_probs, atol=1e-6)


def test_grpo_on_questions_resumes_after_a_kill(unipercept_tiny_checkpoint: Path, toy_task, tmp_path: Path, capsys) -> None:
    datasets = [
        f"json={toy_task['vr']},images={toy_task['images']},axis=iaa,min=0,max=100",
        f"json={toy_task['mcq']},images={toy_task['images']}",
        f"json={toy_task['text']},images={toy_task['images']}",
    ]
    common = [
        "--train",
        "mlp1,llm-layers",
        "--lr",
        "1e-3",
        "--steps",
        "3",
        "--save-every",
        "1",
        "--max-new-tokens",
        "4",
        "--group-size",
        "4",
    ]
    assert grpo.main(grpo_args(unipercept_tiny_checkpoint, tmp_path / "straight", *datasets) + common) == 0
    killed = grpo_args(unipercept_tiny_checkpoint, tmp_path / "killed", *datasets) + common
    run_killed_after_first_checkpoint(["-m", "export.train.grpo", *killed], tmp_path / "killed")
    capsys.readouterr()
    assert grpo.main(killed + ["--resume"]) == 0
    log = capsys.readouterr().err
    assert "resumed from" in log and "step 3/3" in log
    assert_same_trained_state(tmp_path / "straight", tmp_path / "killed", step=3)

    # The output is a checkpoint like the original: a distillation teacher, and (with llama.cpp) a GGUF package.
    from export.teachers import load_teacher

    labels = load_teacher(f"unipercept:{tmp_path / 'killed'}").label(Image.open(toy_task["images"] / "synthetic_00.png"))
    assert labels.keys() == {"iaa", "iqa", "ista"}
    pytest.importorskip("llama_cpp")
    from export.unipercept import gguf

    assert gguf.main([str(tmp_path / "killed"), str(tmp_path / "package"), "--quant", "f16", "--default", "f16"]) == 0
    manifest = json.loads((tmp_path / "package" / "perceptlite.json").read_text())
    assert manifest["gguf"]["rating_prompts"] == {axis: unipercept.rating_prompt(axis) for axis in unipercept.AXES}
