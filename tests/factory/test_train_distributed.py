"""export/train under torchrun: 2 CPU processes (gloo, FSDP) write what one process writes, on the tiny checkpoint."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from test_train_stage1 import dataset_args, two_torch_threads, write_mixed_data  # noqa: E402,F401  (two_torch_threads: autouse)

from export.train import train  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def mixed_data(tmp_path_factory) -> dict[str, Path]:
    return write_mixed_data(tmp_path_factory.mktemp("mixed"))


def torchrun(module: str, args: list[str]) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc-per-node 2 -m MODULE ARGS` (torchrun is torch.distributed.run)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", module, *args]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    # The timeout only guards against a hung collective; nothing asserts on durations.
    return subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=1800)


def layout(folder: Path) -> dict:
    """File names, and per tensor its dtype and shape, of a checkpoint folder."""
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "pt") as handle:
        tensors = {key: (str(handle.get_slice(key).get_dtype()), tuple(handle.get_slice(key).get_shape())) for key in handle.keys()}
    return {"files": sorted(p.name for p in folder.iterdir() if p.is_file()), "tensors": tensors}


def test_two_process_fsdp_run_writes_the_one_process_checkpoint(unipercept_tiny_checkpoint: Path, mixed_data, tmp_path: Path) -> None:
    base = [
        "--checkpoint",
        str(unipercept_tiny_checkpoint),
        *dataset_args(mixed_data),
        "--device",
        "cpu",
        "--train",
        "mlp1,llm-layers",
        "--lr",
        "3e-3",
        "--warmup",
        "1",
        "--grad-accum",
        "1",
        "--workers",
        "0",
        "--save-every",
        "1",
        "--keep-last",
        "2",
        "--log-every",
        "1",
        "--sigma",
        "4",
    ]
    common = base + ["--steps", "2"]
    # The same 4 samples per step: one process x batch 4, or two processes x batch 2.
    assert train.main(["--output", str(tmp_path / "one"), "--batch-size", "4", *common]) == 0
    result = torchrun("export.train.train", ["--output", str(tmp_path / "two"), "--batch-size", "2", *common])
    assert result.returncode == 0, result.stderr[-4000:]
    assert "on 2 process(es)" in result.stderr and "step 2/2" in result.stderr

    for folder in ("", "checkpoints/step-0000001", "checkpoints/step-0000002"):
        assert layout(tmp_path / "one" / folder) == layout(tmp_path / "two" / folder), folder
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == sorted(p.name for p in (tmp_path / "two").iterdir())
    # Same update: FSDP averages the two halves' gradients into the one-process gradient. Only summation order
    # differs; AdamW magnifies that where a gradient is ~0 (measured: at most 1.5e-4 on 0.003% of the elements).
    from safetensors.torch import load_file

    start = load_file(str(unipercept_tiny_checkpoint / "model.safetensors"))
    one = torch.load(tmp_path / "one" / "checkpoints/step-0000002/trainer_state.pt", weights_only=True)
    two = torch.load(tmp_path / "two" / "checkpoints/step-0000002/trainer_state.pt", weights_only=True)
    assert one["trainable"].keys() == two["trainable"].keys()
    for name, value in one["trainable"].items():
        initial = start[name.removeprefix("model.")].float()
        assert float((value - two["trainable"][name]).abs().max()) < 1e-3, name
        same_direction = torch.nn.functional.cosine_similarity(
            (value - initial).flatten(), (two["trainable"][name] - initial).flatten(), dim=0
        )
        assert float(same_direction) > 0.999, name
    assert one["optimizer"]["state"].keys() == two["optimizer"]["state"].keys()

    # The two-process run resumes on one process (the trainer state holds whole tensors, not shards).
    assert train.main(["--output", str(tmp_path / "two"), "--batch-size", "4", *base, "--steps", "3", "--resume"]) == 0
    assert (tmp_path / "two" / "checkpoints" / "step-0000003" / "trainer_state.pt").is_file()


def test_two_process_grpo_mixes_ratings_and_generated_replies(unipercept_tiny_checkpoint: Path, mixed_data, tmp_path: Path) -> None:
    """Ranks roll out different kinds of prompts (one forward vs a generated reply) without a collective mismatch.

    LoRA on the LLM, as the 8-GPU config runs stage 2: the KL reference is the sharded model with adapters off.
    """
    pytest.importorskip("peft")
    from safetensors.torch import load_file

    args = [
        "--checkpoint",
        str(unipercept_tiny_checkpoint),
        "--output",
        str(tmp_path / "grpo"),
        *dataset_args(mixed_data),
        "--device",
        "cpu",
        "--train",
        "llm",
        "--lora-rank",
        "4",
        "--lr",
        "1e-2",
        "--batch-size",
        "2",
        "--grad-accum",
        "1",
        "--workers",
        "0",
        "--steps",
        "2",
        "--save-every",
        "2",
        "--log-every",
        "1",
        "--group-size",
        "4",
        "--max-new-tokens",
        "3",
    ]
    result = torchrun("export.train.grpo", args)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "step 2/2" in result.stderr and "reward" in result.stderr
    assert (tmp_path / "grpo" / "checkpoints" / "step-0000002" / "trainer_state.pt").is_file()
    assert layout(tmp_path / "grpo")["tensors"] == layout(unipercept_tiny_checkpoint)["tensors"]
    start, trained = (
        load_file(str(unipercept_tiny_checkpoint / "model.safetensors")),
        load_file(str(tmp_path / "grpo" / "model.safetensors")),
    )
    key = "language_model.model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(start[key], trained[key])  # the adapters, merged into the original weight names
    assert torch.equal(start["mlp1.1.weight"], trained["mlp1.1.weight"])
