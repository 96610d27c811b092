"""The two-view model: the distilled student's whole-image view plus native-resolution crops for iqa.

    pixels [N, 3, 224, 224]  the whole image, stretched (what the student was trained on)
    crops  [N, K, 3, 224, 224]  K crops of the full-resolution image (see perceptlite.backends.preprocess.crop_boxes)
      -> scores [N, 3] (iaa, iqa, ista) on 0-100

One backbone pass covers the whole view and the crops together. `ista` is the student's own head on the
whole view; `iaa` blends the student's iaa head with a ridge on the whole view's block statistics
(export/wholeview/aesthetics.py), through a monotone calibration onto the spread of human ratings;
`iqa` is a small MLP head, learnt from human mean opinion scores and distortion ladders, on the crops'
multi-scale statistics averaged over the crops.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from export.common.network import BN_EPS, STAGES, TAP_BLOCKS, Student, build_student, pooled_stats

from .calibration import PiecewiseLinear

# The iqa head reads the mean and standard deviation of every block's output (16 blocks, 2 x 1,808 = 3,616 numbers),
# not only the student's five taps nor the 1280-d head features. Measured on the dev photos (5-fold,
# ridge, middle-row crops): five taps 0.798 SRCC, every block 0.808; the 1280-d head features 0.790;
# without the last block 0.72.
BLOCK_CHANNELS = tuple(cout for repeats, *_, cout in STAGES for _ in range(repeats))
IQA_FEATURES = 2 * sum(BLOCK_CHANNELS)
CROP_SIZE = 224
# Crop cells on a 3 x 3 grid: the middle row. Measured on the dev photos (5-fold SRCC, frozen
# features + ridge): centre only 0.774, the middle row 0.798, all 9 cells 0.797, the "plus" (centre and
# the middle of each edge) 0.805, the 4 corners 0.713 (corners mostly see out-of-focus surroundings).
# The row costs 4 backbone passes per image with the whole view, the plus 6: speed decides (0.2.0 used the plus, 0.3.0 the row).
CROP_GRID = (3, 3)
CROP_CELLS = ((1, 0), (1, 1), (1, 2))
CROP_LAYOUT = "three cells of the middle row (left, centre, right)"
# The crops' working size: a photo longer than this is judged as if downscaled to it, about the size a
# laptop shows a photo fitted to its window. At 100 % of a 2,560-4,000 px photo the crops saw softness no
# viewer sees (the same clean wallpapers: 71 mean iqa at 500 px, 50 at their own 2,560, 44 at 4,000);
# 0.3.0's head with this cap, not refitted: 56 at every size from 1,536 up, and every 4,000-px ladder
# -0.819 or lower. Lower caps (768, 1,024, 1,280) took the JPEG ladders to -0.58..-0.73 with that head.
CROP_MAX_SIDE = 1536
# The whole view is box-reduced by an integer factor down to 1x its size, then bicubic: 5 ms instead of
# 12 ms for a 2-MP photo, 0.7/255 mean difference (export/README.md).
WHOLE_VIEW_DRAFT_FACTOR = 1.0


# One hidden layer: a linear head read strong noise on smooth or defocused regions as detail and scored
# it higher (noise ladders of held-out wallpapers at 4,000 px: -0.71); with 32 hidden units they fall
# (-0.99) at the same cross-validated SRCC (0.781 vs 0.780) and a better PLCC (0.827 vs 0.811).
IQA_HIDDEN = 32


class IqaHead(nn.Module):
    """Standardised crop features -> a small MLP onto the mean-opinion-score scale (0-100)."""

    def __init__(self, features: int = IQA_FEATURES, hidden: int = IQA_HIDDEN):
        super().__init__()
        self.register_buffer("feature_mean", torch.zeros(features))
        self.register_buffer("feature_std", torch.ones(features))
        self.net = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net((features - self.feature_mean) / self.feature_std)[:, 0]


class IaaBlend(nn.Module):
    """The student's raw iaa and the whole view's block statistics -> the blended raw iaa (before calibration)."""

    def __init__(
        self, mean: np.ndarray, std: np.ndarray, coef: np.ndarray, intercept: float, weight: float, raw_std: float, ridge_std: float
    ):
        super().__init__()
        self.ridge = nn.Linear(len(coef), 1)
        with torch.no_grad():  # standardisation folded into the ridge's weights
            scaled = torch.from_numpy(np.asarray(coef / std, dtype=np.float32))
            self.ridge.weight.copy_(scaled[None])
            self.ridge.bias.fill_(float(intercept - np.dot(mean / std, coef)))
        self.raw_scale = (1.0 - weight) / raw_std
        self.ridge_scale = weight / ridge_std

    @classmethod
    def load(cls, path: str | Path) -> IaaBlend:
        fit = np.load(path)
        return cls(
            fit["mean"],
            fit["std"],
            fit["coef"],
            float(fit["intercept"]),
            float(fit["weight"]),
            float(fit["raw_std"]),
            float(fit["ridge_std"]),
        )

    def forward(self, raw_iaa: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
        return self.raw_scale * raw_iaa + self.ridge_scale * self.ridge(blocks)[:, 0]


class PerceptModel(nn.Module):
    """pixels + crops -> scores [N, 3] on 0-100 (iaa, iqa, ista)."""

    def __init__(self, student: Student, iqa_head: IqaHead, iaa_blend: IaaBlend, iaa_knots: Sequence[tuple[float, float]]):
        super().__init__()
        self.student = student
        self.iqa_head = iqa_head
        self.iaa_blend = iaa_blend
        self.iaa_curve = PiecewiseLinear(iaa_knots)

    def forward(self, pixels: torch.Tensor, crops: torch.Tensor) -> torch.Tensor:
        count, views = pixels.shape[0], crops.shape[1]
        features, blocks = student_and_block_features(self.student, torch.cat([pixels, crops.flatten(0, 1)], dim=0), head_rows=count)
        student_scores = self.student.heads(features)
        crop_features = blocks[count:].reshape(count, views, IQA_FEATURES).mean(dim=1)
        iqa = torch.clamp(self.iqa_head(crop_features), 0.0, 100.0)
        iaa = self.iaa_curve(self.iaa_blend(student_scores[:, 0], blocks[:count]))
        return torch.stack([iaa, iqa, student_scores[:, 2]], dim=1)


def student_and_block_features(student: Student, pixels: torch.Tensor, head_rows: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One backbone pass: the student's own features [N, FEATURE_DIM] and every block's statistics [N, IQA_FEATURES].

    `head_rows`: only the first rows need the student's features (the crops read block statistics
    alone), which spares the 1280-channel head convolution for the rest (about 5 % of a pass).
    """
    backbone = student.backbone
    x = backbone.stem(pixels)
    blocks = []
    for block in backbone._blocks:
        x = block(x)
        blocks.append(pooled_stats(x))
    rows = slice(None) if head_rows is None else slice(0, head_rows)
    taps = [blocks[index][rows] for index in TAP_BLOCKS]
    # The student's head features: mean only, as Student.features_from computes them.
    features = torch.cat([*taps, backbone.head(x[rows]).mean(dim=(2, 3))], dim=1)
    return features, torch.cat(blocks, dim=1)


def load_student_weights(path: str | Path) -> Student:
    """The distilled student from `export.distill`'s student.pt, or from an exported student ONNX file."""
    path = Path(path)
    if path.suffix == ".onnx":
        return student_from_onnx(path)
    from export.distill.train import load_student

    return load_student(path)


def student_from_onnx(path: str | Path) -> Student:
    """Rebuild a student from its ONNX export, where each batch norm was folded into its convolution.

    The folded weight and bias go into the conv; the batch norm becomes the identity (mean 0,
    variance 1 - eps, weight 1) with the folded bias as its shift.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    initializers = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    convs = [node for node in model.graph.node if node.op_type == "Conv"]
    student = build_student(pretrained=False)
    pairs = _conv_bn_pairs(student)
    if len(pairs) != len(convs):
        raise ValueError(f"{path}: {len(convs)} convolutions, a student has {len(pairs)}: not a student export")
    with torch.no_grad():
        for (conv, bn), node in zip(pairs, convs):
            weight, bias = initializers[node.input[1]], initializers[node.input[2]]
            if tuple(conv.weight.shape) != weight.shape:
                raise ValueError(f"{path}: convolution {node.name} has shape {weight.shape}, expected {tuple(conv.weight.shape)}")
            conv.weight.copy_(torch.from_numpy(np.array(weight)))
            bn.weight.fill_(1.0)
            bn.bias.copy_(torch.from_numpy(np.array(bias)))
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - BN_EPS)
        heads = {
            name.removeprefix("heads."): torch.from_numpy(np.array(v)) for name, v in initializers.items() if name.startswith("heads.")
        }
        student.heads.load_state_dict(heads, strict=True)
    return student.eval()


def _conv_bn_pairs(student: Student) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
    """Every (conv, batch norm) of the backbone in execution order, as the ONNX export lists them."""
    backbone = student.backbone
    pairs = [(backbone._conv_stem, backbone._bn0)]
    for block in backbone._blocks:
        if block.has_expand:
            pairs.append((block._expand_conv, block._bn0))
        pairs += [(block._depthwise_conv, block._bn1), (block._project_conv, block._bn2)]
    pairs.append((backbone._conv_head, backbone._bn1))
    return pairs


class StudentFeatures(nn.Module):
    """The student's features and every block's statistics, exported on their own to cache them fast with ONNX Runtime."""

    def __init__(self, student: Student):
        super().__init__()
        self.student = student

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return student_and_block_features(self.student, pixels)


def export_features_onnx(student: Student, path: str | Path) -> Path:
    """Write the feature extractor as ONNX (dynamic batch, 224 x 224)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        StudentFeatures(student).eval(),
        (torch.zeros(1, 3, CROP_SIZE, CROP_SIZE),),
        str(path),
        input_names=["pixels"],
        output_names=["features", "blocks"],
        dynamic_axes={"pixels": {0: "batch"}, "features": {0: "batch"}, "blocks": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    return path


def export_model_onnx(model: PerceptModel, path: str | Path, crops: int = len(CROP_CELLS)) -> Path:
    """Write the two-input model as ONNX (dynamic batch)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = torch.zeros(1, 3, CROP_SIZE, CROP_SIZE)
    crop_views = torch.zeros(1, crops, 3, CROP_SIZE, CROP_SIZE)
    torch.onnx.export(
        model.eval(),
        (pixels, crop_views),
        str(path),
        input_names=["pixels", "crops"],
        output_names=["scores"],
        dynamic_axes={"pixels": {0: "batch"}, "crops": {0: "batch"}, "scores": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    return path


def input_spec():
    """The package's input contract, as the runtime reads it (perceptlite.package.manifest.InputSpec)."""
    from export.distill.train import INPUT_MEAN, INPUT_STD
    from perceptlite.package.manifest import CropSpec, InputSpec

    crops = CropSpec(size=CROP_SIZE, grid=CROP_GRID, cells=CROP_CELLS, max_side=CROP_MAX_SIDE)
    return InputSpec(
        size=(CROP_SIZE, CROP_SIZE),
        resize="stretch",
        interpolation="bicubic",
        mean=INPUT_MEAN,
        std=INPUT_STD,
        draft_factor=WHOLE_VIEW_DRAFT_FACTOR,
        crops=crops,
    )
