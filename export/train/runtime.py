"""One process or many (torchrun): PyTorch FSDP (fully_shard, ZeRO-3-style sharding) when launched with torchrun.

    torchrun --nproc-per-node 8 -m export.train.train ...     # FSDP over 8 GPUs (NCCL)
    torchrun --nproc-per-node 2 -m export.train.train --device cpu ...   # 2 CPU processes (gloo), as the tests do

Every process holds a shard of every parameter, gradient and AdamW state; each decoder layer (and each vision
layer) is gathered just for its own forward/backward. Samples of a step are dealt out round-robin to the ranks,
each rank's loss is normalised by its share, and FSDP averages gradients, so the update equals the
single-process update on the same step's samples. Step checkpoints are sharded: each rank hands its own shards
to torch.distributed.checkpoint. Only the final model folder is assembled whole, once, on rank 0 in CPU memory.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class Runtime:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def start(cls, device: str) -> Runtime:
        """Join the torchrun process group when launched by torchrun (WORLD_SIZE > 1), else a single process."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls(0, 1, torch.device(device))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if device.startswith("cuda"):
            torch.cuda.set_device(local_rank)
            chosen = torch.device("cuda", local_rank)
        else:
            chosen = torch.device("cpu")
        if not dist.is_initialized():
            dist.init_process_group("nccl" if chosen.type == "cuda" else "gloo")
        return cls(dist.get_rank(), dist.get_world_size(), chosen)

    def stop(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()

    def log(self, message: str) -> None:
        if self.main:
            print(message, file=sys.stderr, flush=True)

    def my_share(self, items: list) -> list:
        """This rank's items of a step: every world-th one, starting at its rank."""
        return items[self.rank :: self.world]

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def means(self, window: dict[str, list[float]], keys: tuple[str, ...]) -> dict[str, float]:
        """Per key, the mean of its values over all ranks (one collective; keys a rank has no values for count 0)."""
        totals = torch.tensor([[sum(window.get(key, [])), len(window.get(key, []))] for key in keys], dtype=torch.float64)
        if self.distributed:
            dist.all_reduce(totals)
        return {key: float(total / count) for key, (total, count) in zip(keys, totals.tolist()) if count > 0}

    def shard(self, policy: nn.Module, bf16: bool) -> nn.Module:
        """Wrap `policy` with FSDP (one unit per decoder and vision layer, plus the root); no-op in one process."""
        if not self.distributed:
            return policy
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mixed = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else MixedPrecisionPolicy()
        for layer in _layers(policy):
            fully_shard(layer, mp_policy=mixed)
        fully_shard(policy, mp_policy=mixed)
        return policy

    @contextlib.contextmanager
    def gathered(self, *modules: nn.Module | None):
        """Keep the modules' weights whole on every rank for a while (GRPO's rollouts), then shard them again.

        FSDP gathers a unit's weights with a collective at each forward, so every rank must run the same forwards.
        Rollouts differ per rank (a rating is one forward, a generated reply one per token), so they run on weights
        gathered once up front: no collectives in between.
        """
        if not self.distributed:
            yield
            return
        from torch.distributed.fsdp import FSDPModule

        units = [unit for module in modules if module is not None for unit in module.modules() if isinstance(unit, FSDPModule)]
        for unit in units:
            unit.set_reshard_after_forward(False, recurse=False)
            unit.unshard()
        try:
            yield
        finally:
            for unit in units:
                unit.reshard()
                unit.set_reshard_after_forward(True, recurse=False)

    def full_state(self, module: nn.Module) -> dict[str, torch.Tensor]:
        """The module's whole state dict as plain CPU tensors: on rank 0 (other ranks get {})."""
        if not self.distributed:
            return {name: tensor.detach().cpu() for name, tensor in module.state_dict().items()}
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def trained_state(self, module: nn.Module, optimizer, names: list[str]) -> tuple[dict, list]:
        """This rank's shards of the trained parameters and of their optimizer state, and the optimizer's groups.

        The tensors are the live shards (no copy, no gather), keyed by parameter name: what a checkpoint stores
        and what a resume fills in place. The groups (learning rate, betas...) are not stored: they are the run's
        options, and keeping them out leaves only tensors in a checkpoint.
        """
        from torch.distributed.checkpoint.state_dict import get_state_dict

        model_state, optimizer_state = get_state_dict(module, optimizer)
        trained = {name: model_state[name] for name in names}
        return {"trained": trained, "optimizer": optimizer_state["state"]}, optimizer_state["param_groups"]

    def set_trained_state(self, module: nn.Module, optimizer, state: dict, groups: list) -> None:
        """Put a `trained_state` (filled from a checkpoint) back into the module's and the optimizer's shards.

        Loading already wrote into the live tensors where the state dict shares them (one process, FSDP's local
        shards); this hands the state over through the documented path, which also covers where it holds copies.
        """
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        set_state_dict(
            module,
            optimizer,
            model_state_dict=state["trained"],
            optim_state_dict={"state": state["optimizer"], "param_groups": groups},
            options=StateDictOptions(strict=False),
        )


def _layers(policy: nn.Module) -> list[nn.Module]:
    """The repeated blocks FSDP shards one by one: the LLM's decoder layers and InternViT's encoder layers."""
    model = policy.model
    decoder = model.language_model.get_decoder()
    return list(model.vision_model.encoder.layers) + list(decoder.layers)
