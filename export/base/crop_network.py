"""The iqa network: EfficientNet-Lite0 over native-resolution crops, fine-tuned end to end.

    crops [N, K, 3, 224, 224] -> every block's channel mean and standard deviation, averaged over the K crops
      -> a one-hidden-layer MLP -> iqa [N] on the mean-opinion-score scale (0-100)

The same readout as the frozen head it replaces (every block's statistics, mean over crops), so a linear
probe on frozen ImageNet features starts it well and fine-tuning moves the whole trunk from there (LP-FT).
Batch norms keep their ImageNet running statistics: batches of a few photos cannot estimate them.
The first `frozen_blocks` blocks (and the stem) keep their ImageNet weights: they see edges and noise at
strides 2-4, where most of a CPU step's time goes, and their statistics still feed the head. Tensors are
channels-last: on CPU, torch's depthwise convolutions run 6-8x faster forward and backward in that layout.
"""

from __future__ import annotations

import torch
from torch import nn

from export.common.network import STAGES, Backbone, load_imagenet_backbone, pooled_stats

BLOCK_CHANNELS = tuple(cout for repeats, *_, cout in STAGES for _ in range(repeats))
BLOCK_FEATURES = 2 * sum(BLOCK_CHANNELS)
HIDDEN = 32


class CropIqaNet(nn.Module):
    """crops [N, K, 3, S, S] (normalised with mean/std 0.5) -> iqa [N]."""

    def __init__(self, hidden: int = HIDDEN, frozen_blocks: int = 0):
        super().__init__()
        self.backbone = Backbone()
        self.frozen_blocks = frozen_blocks
        self.register_buffer("feature_mean", torch.zeros(BLOCK_FEATURES))
        self.register_buffer("feature_std", torch.ones(BLOCK_FEATURES))
        self.head = nn.Sequential(nn.Linear(BLOCK_FEATURES, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def block_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """[M, 3, S, S] -> every block's statistics [M, BLOCK_FEATURES] (the trunk's head conv is never run)."""
        x = pixels.contiguous(memory_format=torch.channels_last)
        stats = []
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.frozen_blocks == 0):
            x = self.backbone.stem(x)
        for index, block in enumerate(self.backbone._blocks):
            with torch.set_grad_enabled(torch.is_grad_enabled() and index >= self.frozen_blocks):
                x = block(x)
                stats.append(pooled_stats(x))
        return torch.cat(stats, dim=1)

    def trainable_backbone(self) -> list[nn.Parameter]:
        """The backbone parameters fine-tuning moves: every block from `frozen_blocks` on."""
        return [p for block in self.backbone._blocks[self.frozen_blocks :] for p in block.parameters()]

    def score_features(self, features: torch.Tensor) -> torch.Tensor:
        """Crop-pooled block statistics [N, BLOCK_FEATURES] -> iqa [N]."""
        return self.head((features - self.feature_mean) / self.feature_std)[:, 0]

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        count, views = crops.shape[:2]
        features = self.block_features(crops.flatten(0, 1)).reshape(count, views, BLOCK_FEATURES).mean(dim=1)
        return self.score_features(features)

    def train(self, mode: bool = True) -> CropIqaNet:
        """Train mode everywhere except the batch norms, which keep their running statistics."""
        super().train(mode)
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eval()
        return self


def imagenet_crop_net(frozen_blocks: int = 0) -> CropIqaNet:
    """A crop network with the ImageNet EfficientNet-Lite0 trunk and an untrained head."""
    net = CropIqaNet(frozen_blocks=frozen_blocks)
    load_imagenet_backbone(net.backbone)
    return net.to(memory_format=torch.channels_last).eval()
