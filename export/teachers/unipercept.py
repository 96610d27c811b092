"""UniPercept itself as a distillation teacher: `--teacher unipercept:/path/to/checkpoint`."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from .base import AXES, clip_score


class UniPerceptTeacher:
    """Rates iaa, iqa and ista with the reference scorer (one image prefix, three rating questions)."""

    axes = AXES

    def __init__(self, checkpoint_dir: str | Path, device: str | None = None):
        import torch

        from export.unipercept.reference import ReferenceScorer

        checkpoint_dir = Path(checkpoint_dir)
        if not (checkpoint_dir / "config.json").is_file():
            raise FileNotFoundError(f"{checkpoint_dir}: no config.json; pass a UniPercept checkpoint folder")
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        # UniPercept runs in bf16 on GPU; float32 on CPU keeps CPU runs exact and reasonably fast.
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        self.scorer = ReferenceScorer(checkpoint_dir, device=device, dtype=dtype)
        self.checkpoint_dir = checkpoint_dir
        self.name = "unipercept"

    def label(self, image: Image.Image, reference: Image.Image | None = None) -> dict[str, float]:
        """{iaa, iqa, ista} in 0-100 for one image; `reference` is ignored (no-reference model)."""
        return {axis: clip_score(value) for axis, value in self.scorer.rate(image, self.axes).items()}

    def describe(self) -> dict:
        """Provenance for the model card."""
        return {
            "name": self.name,
            "axes": list(self.axes),
            "what": "UniPercept Visual Rating (InternVL-3 architecture), token-as-score expected value",
            "weights": str(self.checkpoint_dir.resolve()),
            "licence": "that of the checkpoint (see its folder); the published UniPercept weights are research-only",
            "preprocessing": "RGB, resize to 448x448 bicubic (aspect ignored), ImageNet mean/std",
            "mapping": "softmax over the 101 score tokens aa..ey at the last prompt position, expected value 0-100",
            "dtype": str(self.scorer.dtype).replace("torch.", ""),
        }
