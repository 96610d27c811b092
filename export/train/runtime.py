"""One process or many (torchrun): PyTorch FSDP (fully_shard, ZeRO-3-style sharding) when launched with torchrun.

    torchrun --nproc-per-node 8 -m export.train.train ...     # FSDP over 8 GPUs (NCCL)
    torchrun --nproc-per-node 2 -m export.train.train --device cpu ...   # 2 CPU processes (gloo), as the tests do

Every process holds a shard of every parameter, gradient and AdamW state; each decoder layer (and each vision
layer) is gathered just for its own forward/backward. Samples of a step are dealt out round-robin to the ranks,
each rank's loss is normalised by its share, and FSDP averages gradients, so the update equals the
single-process update on the same step's samples. Full (unsharded) state dicts are assembled on rank 0 only,
in CPU memory, for the checkpoint folders and `trainer_state.pt`.
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

    def full_optimizer_state(self, module: nn.Module, optimizer) -> dict:
        """The optimizer state keyed by parameter names, whole, on rank 0 (other ranks get {})."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=self.distributed)
        return get_optimizer_state_dict(module, optimizer, options=options)

    def load_trained(self, module: nn.Module, optimizer, parameters: dict, optimizer_state: dict) -> None:
        """Put saved trained parameters and optimizer state (read on rank 0) into every rank's shards."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_optimizer_state_dict

        options = StateDictOptions(full_state_dict=True, strict=False, broadcast_from_rank0=self.distributed)
        set_model_state_dict(module, parameters, options=options)
        set_optimizer_state_dict(module, optimizer, optimizer_state, options=options)


def _layers(policy: nn.Module) -> list[nn.Module]:
    """The repeated blocks FSDP shards one by one: the LLM's decoder layers and InternViT's encoder layers."""
    model = policy.model
    decoder = model.language_model.get_decoder()
    return list(model.vision_model.encoder.layers) + list(decoder.layers)
