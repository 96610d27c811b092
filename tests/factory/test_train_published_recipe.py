"""The recipe as the paper publishes it: GRPO's batch counted in completions (VLM-R1's reading) by default,
stage 1's rating target the score token itself, and the paper's Eq. 3 as printed on offer."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from test_train_grpo import toy_task  # noqa: E402,F401  (fixture)

from export.train import grpo, rewards, train  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "export" / "train" / "configs" / "unipercept-8b-8gpu.sh"
PAPER_NOTES = REPO / "docs" / "unipercept.md"


def _launches(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """Run the 8-GPU config with a `torchrun` on PATH that only writes down the command line it was given."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    torchrun = bin_dir / "torchrun"
    torchrun.write_text(f'#!/usr/bin/env bash\nprintf "%q " "$@" >> {tmp_path}/launches.txt\necho >> {tmp_path}/launches.txt\n')
    torchrun.chmod(0o755)
    variables = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "BASE": "/base",
        "DATA": "/data",
        "RUN": str(tmp_path / "run"),
        **env,
    }
    return subprocess.run(["bash", str(CONFIG)], capture_output=True, text=True, env=variables, timeout=60)


def _stage_arguments(tmp_path: Path, module: str) -> list[str]:
    for line in (tmp_path / "launches.txt").read_text().splitlines():
        words = shlex.split(line)
        if module in words:
            return words[words.index(module) + 1 :]
    raise AssertionError(f"{module} was never launched")


def _completions_per_step(args, gpus: int = 8) -> int:
    return args.batch_size * args.grad_accum * gpus * args.group_size


def test_grpo_batch_counts_completions_by_default(tmp_path: Path) -> None:
    result = _launches(tmp_path)
    assert result.returncode == 0, result.stderr
    args = grpo.build_parser().parse_args(_stage_arguments(tmp_path, "export.train.grpo"))
    assert _completions_per_step(args) == 128 and args.group_size == 8  # 16 prompts x 8, as VLM-R1 counts
    assert args.steps == 2 * 56000 // 16 and args.objective == "grpo"
    stage1 = train.build_parser().parse_args(_stage_arguments(tmp_path, "export.train.train"))
    assert stage1.batch_size * stage1.grad_accum * 8 == 128 and stage1.sigma == 0.0


def test_grpo_batch_can_count_prompts(tmp_path: Path) -> None:
    result = _launches(tmp_path, GRPO_BATCH="prompts")
    assert result.returncode == 0, result.stderr
    args = grpo.build_parser().parse_args(_stage_arguments(tmp_path, "export.train.grpo"))
    assert _completions_per_step(args) == 1024 and args.steps == 2 * 56000 // 128


def test_an_unknown_batch_reading_is_refused(tmp_path: Path) -> None:
    result = _launches(tmp_path, GRPO_BATCH="tokens")
    assert result.returncode == 2 and "GRPO_BATCH must be completions or prompts" in result.stderr
    assert not (tmp_path / "launches.txt").exists()


def test_stage1_targets_the_score_token_by_default() -> None:
    args = train.build_parser().parse_args(["--checkpoint", "c", "--output", "o", "--dataset", "json=a.json,images=i"])
    assert args.sigma == 0.0
    label = train.soft_label(37.6, args.sigma)
    assert label[38] == 1.0 and label.sum() == 1.0  # one-hot on the rounded score's token
    soft = train.soft_label(37.6, 2.0)  # the project's soft option stays available
    assert 0.1 < float(soft[38]) < 0.3 and float(soft.sum()) == pytest.approx(1.0)


def test_clipped_surrogate_grpo_and_eq3_as_printed() -> None:
    ratio = torch.tensor([[1.1], [0.7], [1.0]])
    advantages = torch.tensor([1.0, -1.0, 0.5])
    rewards = torch.tensor([0.2, 0.9, 0.0])
    standard = grpo.clipped_surrogate(ratio, advantages, rewards, clip=0.2)
    assert standard[:, 0].tolist() == pytest.approx([1.1, -0.8, 0.5])  # the second is clipped at 1 - 0.2
    printed = grpo.clipped_surrogate(ratio, advantages, rewards, clip=0.2, objective="eq3")
    assert printed[:, 0].tolist() == pytest.approx([0.22, -0.72, 0.0])
    with pytest.raises(ValueError, match="unknown objective"):
        grpo.clipped_surrogate(ratio, advantages, rewards, clip=0.2, objective="ppo")


def test_group_loss_follows_the_chosen_objective(unipercept_tiny_checkpoint: Path, toy_task, tmp_path: Path) -> None:  # noqa: F811
    """On-policy (ratio 1), one token per rating answer: GRPO's loss is -mean(A) (zero: advantages are centred),
    Eq. 3's is -mean(r A)."""
    from export.train.data import DatasetSpec
    from export.train.engine import Engine, TrainOptions

    spec = DatasetSpec.parse(f"json={toy_task['vr']},images={toy_task['images']},axis=iaa,min=0,max=100")
    options = TrainOptions(checkpoint=unipercept_tiny_checkpoint, output=tmp_path / "unused", datasets=[spec],
                           train=("mlp1",), device="cpu", workers=0, bf16=False)  # fmt: skip
    engine = Engine(options, lora_dropout=0.0, needs_reference=False)
    losses = {}
    for objective in grpo.OBJECTIVES:
        stage = grpo.TaskAlignedRL(grpo.GrpoSettings(group_size=8, beta=0.0, objective=objective))
        stage.score_ids = torch.tensor(engine.prompts.score_ids)
        rollout = stage._rollouts(engine, 0, [engine.mixture.sources[0][0]])[0]
        with torch.no_grad():
            losses[objective], _ = stage.group_loss(engine, rollout)
    assert rollout.rewards.std() > 0  # the test means something only when the group's rewards differ
    assert float(losses["grpo"]) == pytest.approx(-float(rollout.advantages.mean()), abs=1e-5)
    assert float(losses["eq3"]) == pytest.approx(-float((rollout.rewards * rollout.advantages).mean()), abs=1e-5)
    assert float(losses["eq3"]) < -1e-3


def test_the_docs_quote_the_reward_the_code_computes() -> None:
    """docs/unipercept.md's Fig. 6 examples (from the paper) are what rewards.rating_reward gives, and its
    Table 5 row "All" is the one that names all three axes, as perceptlite.reward weighs them by default."""
    import re

    from perceptlite import reward

    notes = PAPER_NOTES.read_text()
    examples = re.findall(r"(\d+) -> (?:reward )?(0\.\d{3})", notes.split("### The rating reward")[1].split("###")[0])
    assert [int(e) for e, _ in examples] == [5, 10, 20, 50]
    for error, value in examples:
        assert rewards.rating_reward(50.0 + int(error), 50.0) == pytest.approx(float(value), abs=5e-4)
    assert "| w/ UniPercept reward (All) | 22.67 | 10.93 | 4.33 | 6.19 | 65.52 | 74.24 | 77.04 | 59.08 |" in notes
    assert set(reward.DEFAULT_WEIGHTS) == {"iaa", "iqa", "ista"}
    assert "S_ISTA = min(S_ISTA, 100)" in notes and "Eq. 2" in notes and "Table 1" in notes
