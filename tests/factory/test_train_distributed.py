"""export/train under torchrun: 2 CPU processes (gloo, FSDP) on the tiny checkpoint: they train what one process
trains, write sharded step checkpoints (one file per rank, no whole-state file) and resume from them after a kill."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from test_train_stage1 import (  # noqa: E402,F401  (two_torch_threads: autouse)
    assert_same_trained_state,
    dataset_args,
    run_killed_after_first_checkpoint,
    trained_tensors,
    two_torch_threads,
    write_mixed_data,
)

from export.train import train  # noqa: E402
from export.train.checkpoints import read_step_tensors  # noqa: E402

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


def assert_sharded_step(folder: Path, processes: int) -> None:
    """A complete sharded step checkpoint: one shard file per rank, each with only part of the state, and nothing else."""
    shards = [f"__{rank}_0.distcp" for rank in range(processes)]
    assert sorted(p.name for p in folder.iterdir()) == sorted([".metadata", "progress.json", *shards]), folder
    if processes == 1:
        return
    stored = tensor_bytes_per_file(folder)
    whole = sum(t.numel() * t.element_size() for t in read_step_tensors(folder).values())
    assert sum(stored.values()) == whole and sorted(stored) == sorted(shards)
    for shard in shards:
        # Every rank stores its own part of each sharded tensor, never the whole state.
        assert 0.4 * whole < stored[shard] < 0.6 * whole, (shard, stored, whole)


def tensor_bytes_per_file(folder: Path) -> dict[str, int]:
    """Per shard file, the bytes of tensor data it holds, from the checkpoint's own index (`.metadata`):
    file sizes would also count the per-tensor framing, which outweighs the data of small tensors (LoRA)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    metadata = dcp.FileSystemReader(str(folder)).read_metadata()
    stored: dict[str, int] = {}
    for key, entry in metadata.state_dict_metadata.items():
        if not isinstance(entry, TensorStorageMetadata):
            continue
        element = torch.empty(0, dtype=entry.properties.dtype).element_size()
        for chunk in entry.chunks:
            index = dcp.metadata.MetadataIndex(key, chunk.offsets)
            file = metadata.storage_data[index].relative_path
            stored[file] = stored.get(file, 0) + element * math.prod(chunk.sizes)
    return stored


def no_whole_state_file(run: Path) -> bool:
    return not [p for p in run.rglob("*") if p.suffix in (".pt", ".bin", ".pth")]


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

    assert layout(tmp_path / "one") == layout(tmp_path / "two")
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == sorted(p.name for p in (tmp_path / "two").iterdir())
    for step in (1, 2):
        assert_sharded_step(tmp_path / "one" / "checkpoints" / f"step-{step:07d}", processes=1)
        assert_sharded_step(tmp_path / "two" / "checkpoints" / f"step-{step:07d}", processes=2)
    assert no_whole_state_file(tmp_path / "two")
    # Same update: FSDP averages the two halves' gradients into the one-process gradient. Only summation order
    # differs; AdamW magnifies that where a gradient is ~0 (measured: at most 1.5e-4 on 0.003% of the elements).
    from safetensors.torch import load_file

    start = load_file(str(unipercept_tiny_checkpoint / "model.safetensors"))
    one, two = trained_tensors(tmp_path / "one", 2), trained_tensors(tmp_path / "two", 2)
    assert one.keys() == two.keys() and one
    for name, value in one.items():
        initial = start[name.removeprefix("model.")].float()
        assert float((value - two[name]).abs().max()) < 1e-3, name
        same_direction = torch.nn.functional.cosine_similarity((value - initial).flatten(), (two[name] - initial).flatten(), dim=0)
        assert float(same_direction) > 0.999, name
    optimizer_keys = {
        run: {k for k in read_step_tensors(tmp_path / run / "checkpoints/step-0000002") if k.startswith("optimizer.")}
        for run in ("one", "two")
    }
    assert optimizer_keys["one"] == optimizer_keys["two"] and optimizer_keys["one"]

    # The two-process run resumes on one process: the shards are resharded at load.
    assert train.main(["--output", str(tmp_path / "two"), "--batch-size", "4", *base, "--steps", "3", "--resume"]) == 0
    assert_sharded_step(tmp_path / "two" / "checkpoints" / "step-0000003", processes=1)


def test_two_process_run_resumes_from_its_shards_after_a_kill(unipercept_tiny_checkpoint: Path, mixed_data, tmp_path: Path) -> None:
    """SIGKILL torchrun and both workers after the first sharded checkpoint; `--resume` on 2 processes continues the same run."""
    args = [
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
        "--batch-size",
        "2",
        "--grad-accum",
        "1",
        "--workers",
        "0",
        "--steps",
        "3",
        "--save-every",
        "1",
        "--keep-last",
        "1",
        "--log-every",
        "1",
    ]
    straight = torchrun("export.train.train", ["--output", str(tmp_path / "straight"), *args])
    assert straight.returncode == 0, straight.stderr[-4000:]
    command = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "export.train.train"]
    run_killed_after_first_checkpoint([*command, "--output", str(tmp_path / "killed"), *args], tmp_path / "killed", threads=1)
    assert not (tmp_path / "killed" / "model.safetensors").exists()
    resumed = torchrun("export.train.train", ["--output", str(tmp_path / "killed"), *args, "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "resumed from" in resumed.stderr and "written by 2 process(es)" in resumed.stderr
    assert "step 3/3" in resumed.stderr and "step 1/3" not in resumed.stderr
    # Same processes, same samples, same reduction order: the interrupted run lands on the uninterrupted one.
    assert_same_trained_state(tmp_path / "straight", tmp_path / "killed", step=3, atol=1e-6)
    assert_sharded_step(tmp_path / "killed" / "checkpoints" / "step-0000003", processes=2)
    assert [p.name for p in (tmp_path / "killed" / "checkpoints").iterdir()] == ["step-0000003"]  # --keep-last 1
    assert no_whole_state_file(tmp_path / "killed")
    from safetensors.torch import load_file

    final = {run: load_file(str(tmp_path / run / "model.safetensors")) for run in ("straight", "killed")}
    for key, value in final["straight"].items():
        assert torch.allclose(value.float(), final["killed"][key].float(), atol=1e-6), key


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
    assert_sharded_step(tmp_path / "grpo" / "checkpoints" / "step-0000002", processes=2)
    assert layout(tmp_path / "grpo")["tensors"] == layout(unipercept_tiny_checkpoint)["tensors"]
    start, trained = (
        load_file(str(unipercept_tiny_checkpoint / "model.safetensors")),
        load_file(str(tmp_path / "grpo" / "model.safetensors")),
    )
    key = "language_model.model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(start[key], trained[key])  # the adapters, merged into the original weight names
    assert torch.equal(start["mlp1.1.weight"], trained["mlp1.1.weight"])
    # The last step's shards (2 ranks, LoRA) exported in one process give the final model, adapters merged alike.
    from export.train.export_step import export_step

    exported = load_file(str(export_step(tmp_path / "grpo" / "checkpoints" / "step-0000002", tmp_path / "exported") / "model.safetensors"))
    assert exported.keys() == trained.keys() and not torch.equal(exported[key], start[key])
    for name, value in trained.items():
        # B @ A may be summed in another order on this process's threads: one bf16 step of difference at most.
        assert torch.allclose(exported[name].float(), value.float(), rtol=1e-2, atol=1e-6), name
