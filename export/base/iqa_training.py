"""Train the iqa crop network end to end: a linear probe on frozen features, then fine-tuning (LP-FT).

Each fine-tuning step sees three things, and the loss has one term for each:
  people     a few rated photos, each as the mean of `crops_per_photo` random native-resolution crops:
             L1 to its mean opinion score, plus a hinge on every pair of them that people ordered
  damage     random crops of unrated photos stored at 500-4,000 px, clean and with two strengths of one
             synthetic damage (or a mixture): clean > faint > strong, by a margin
  clean      the clean crops of professional photographs are held at the top of the scale: a hinge
             below `clean_floor` (shallow depth of field, sky and smooth surfaces are not defects)
Every photo list, seed and setting is in `TrainingConfig`; the epoch's state is checkpointed so a killed
run resumes where it stopped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from export.common.errors import FactoryError

from .crop_network import CropIqaNet, imagenet_crop_net
from .crop_sampling import damage_at, damaged_views, draw_kinds, random_crops


@dataclass(frozen=True)
class RatedPhoto:
    path: Path
    mos: float


@dataclass(frozen=True)
class UnratedPhoto:
    path: Path
    professional: bool  # a clean professional photograph: its clean crops are held at the top of the scale


@dataclass(frozen=True)
class TrainingConfig:
    epochs: int = 6
    photos_per_step: int = 8
    crops_per_photo: int = 1
    damage_per_step: int = 4
    frozen_blocks: int = 3
    backbone_lr: float = 1e-4
    head_lr: float = 1e-5
    weight_decay: float = 1e-4
    pair_weight: float = 0.5  # the people's pairwise hinge, relative to L1
    damage_weight: float = 1.0
    clean_weight: float = 0.5
    damage_margin: float = 2.0  # points between clean, faint and strong damage
    pair_margin: float = 0.0
    min_mos_gap: float = 5.0  # pairs of rated photos closer than this are not ranked
    clean_floor: float = 75.0
    stored_sizes: tuple[int, ...] = (500, 1000, 1536, 2500, 4000)
    probe_steps: int = 400
    probe_weight_decay: float = 1e-2
    # A second, short cosine cycle after `epochs`: each rated photo is read through several random crops at
    # once, whose features are averaged as the runtime averages its crops, at a fraction of the peak rates.
    polish_epochs: int = 0
    polish_crops_per_photo: int = 3
    polish_lr_scale: float = 0.3
    seed: int = 0


@dataclass
class EpochLog:
    epoch: int
    seconds: float
    loss: float
    terms: dict[str, float] = field(default_factory=dict)


class TrainingError(FactoryError, RuntimeError):
    """A training run cannot go on (bad inputs, a checkpoint from another configuration)."""


def _load(path: Path, max_side: int | None = None) -> Image.Image:
    from perceptlite.images.decode import decode_file

    image = decode_file(path).image.convert("RGB")
    if max_side and max(image.size) > max_side:
        factor = max_side / max(image.size)
        image = image.resize((round(image.width * factor), round(image.height * factor)), Image.Resampling.LANCZOS)
    return image


def frozen_features(net: CropIqaNet, crops: Sequence[np.ndarray], batch: int = 24) -> np.ndarray:
    """Crop-pooled block statistics of each photo's crops [K, 3, S, S] -> [N, D], without gradients."""
    out = []
    with torch.no_grad():
        for start in range(0, len(crops), max(1, batch // max(1, len(crops[0])))):
            chunk = crops[start : start + max(1, batch // max(1, len(crops[0])))]
            views = torch.from_numpy(np.stack(chunk))
            feats = net.block_features(views.flatten(0, 1)).reshape(len(chunk), views.shape[1], -1).mean(dim=1)
            out.append(feats.numpy())
    return np.concatenate(out)


def linear_probe(net: CropIqaNet, features: np.ndarray, mos: np.ndarray, config: TrainingConfig) -> None:
    """Set the feature standardisation and fit the head on frozen features (full batch, Adam, L1 + decay)."""
    mean, std = features.mean(axis=0), features.std(axis=0) + 1e-6
    net.feature_mean.copy_(torch.from_numpy(mean.astype(np.float32)))
    net.feature_std.copy_(torch.from_numpy(std.astype(np.float32)))
    torch.manual_seed(config.seed)
    for layer in net.head:
        if isinstance(layer, torch.nn.Linear):
            layer.reset_parameters()
    with torch.no_grad():
        net.head[-1].bias.fill_(float(mos.mean()))
    x, y = torch.from_numpy(features.astype(np.float32)), torch.from_numpy(mos.astype(np.float32))
    optimizer = torch.optim.AdamW(net.head.parameters(), lr=1e-3, weight_decay=config.probe_weight_decay)
    for _ in range(config.probe_steps):
        optimizer.zero_grad()
        loss = (net.score_features(x) - y).abs().mean()
        loss.backward()
        optimizer.step()


def _people_terms(pred: torch.Tensor, mos: torch.Tensor, config: TrainingConfig) -> tuple[torch.Tensor, torch.Tensor]:
    l1 = (pred - mos).abs().mean()
    gap = mos[:, None] - mos[None, :]
    ordered = gap > config.min_mos_gap
    if not ordered.any():
        return l1, pred.new_zeros(())
    diff = pred[:, None] - pred[None, :]
    return l1, torch.relu(config.pair_margin - diff[ordered]).mean()


class Trainer:
    """One fine-tuning run: `fit()` trains (resuming from `folder`), `net` is the result."""

    def __init__(
        self,
        rated: Sequence[RatedPhoto],
        unrated: Sequence[UnratedPhoto],
        config: TrainingConfig,
        folder: Path,
        log: Callable[[str], None] = print,
    ):
        if len(rated) < 2:
            raise TrainingError(f"{len(rated)} rated photos: need at least 2")
        self.rated, self.unrated, self.config, self.folder, self.log = list(rated), list(unrated), config, Path(folder), log
        self.folder.mkdir(parents=True, exist_ok=True)
        # Real photos drive some activations and gradients into denormal floats, which made a CPU step 5-7x slower.
        torch.set_flush_denormal(True)
        self.net = imagenet_crop_net(config.frozen_blocks)
        self._rated_images: list[Image.Image] | None = None
        self._unrated_images: list[Image.Image] | None = None

    # -- data -------------------------------------------------------------------------------------
    def rated_images(self) -> list[Image.Image]:
        if self._rated_images is None:
            self._rated_images = [_load(p.path) for p in self.rated]
        return self._rated_images

    def unrated_images(self) -> list[Image.Image]:
        # High-resolution sources are kept at 4,000 px at most: the largest stored size a crop is cut at.
        if self._unrated_images is None:
            self._unrated_images = [_load(p.path, max(self.config.stored_sizes)) for p in self.unrated]
        return self._unrated_images

    # -- checkpoints ------------------------------------------------------------------------------
    @property
    def checkpoint(self) -> Path:
        return self.folder / "checkpoint.pt"

    def _signature(self) -> dict:
        return {"config": asdict(self.config), "rated": [p.path.name for p in self.rated], "unrated": [str(p.path) for p in self.unrated]}

    def _save(self, epoch: int, optimizer: torch.optim.Optimizer, history: list[EpochLog]) -> None:
        state = {
            "signature": self._signature(),
            "epoch": epoch,
            "net": self.net.state_dict(),
            "optimizer": optimizer.state_dict(),
            "history": [asdict(h) for h in history],
        }
        partial = self.checkpoint.with_name("checkpoint.partial.pt")
        torch.save(state, partial)
        partial.replace(self.checkpoint)

    def _resume(self, optimizer: torch.optim.Optimizer) -> tuple[int, list[EpochLog]]:
        if not self.checkpoint.is_file():
            return 0, []
        state = torch.load(self.checkpoint, map_location="cpu", weights_only=True)
        if json.loads(json.dumps(state["signature"])) != json.loads(json.dumps(self._signature())):  # tuples saved, lists compared
            raise TrainingError(f"{self.checkpoint}: made with other photos or settings; delete {self.folder} to start again")
        self.net.load_state_dict(state["net"])
        optimizer.load_state_dict(state["optimizer"])
        self.log(f"  resuming {self.checkpoint} after epoch {state['epoch']}")
        return state["epoch"], [EpochLog(**h) for h in state["history"]]

    # -- training ---------------------------------------------------------------------------------
    def _probe(self) -> None:
        from export.wholeview.model import input_spec
        from perceptlite.backends.preprocess import prepare_crops

        spec = input_spec()
        started = time.time()
        crops = [prepare_crops(image, spec) for image in self.rated_images()]
        features = frozen_features(self.net, crops)
        linear_probe(self.net, features, np.array([p.mos for p in self.rated]), self.config)
        self.log(f"  linear probe on {len(crops)} photos: {time.time() - started:.0f} s")

    def _optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        return torch.optim.AdamW(
            [{"params": self.net.trainable_backbone(), "lr": c.backbone_lr}, {"params": self.net.head.parameters(), "lr": c.head_lr}],
            weight_decay=c.weight_decay,
        )

    def _step_batch(self, rng: np.random.Generator, order: np.ndarray, start: int, crops_per_photo: int) -> tuple[torch.Tensor, ...]:
        c = self.config
        images = self.rated_images()
        picked = order[start : start + c.photos_per_step]
        people = np.stack([random_crops(images[i], crops_per_photo, rng) for i in picked])
        mos = np.array([self.rated[i].mos for i in picked], np.float32)
        triplets, professional = [], []
        if self.unrated and c.damage_per_step:
            sources = self.unrated_images()
            for _ in range(c.damage_per_step):
                index = int(rng.integers(len(sources)))
                faint = float(rng.uniform(0.0, 0.5))
                strong = float(rng.uniform(faint + 0.25, 1.0))
                kinds = draw_kinds(rng)
                size = int(rng.choice(c.stored_sizes))
                triplets.append(damaged_views(sources[index], size, [damage_at(kinds, faint), damage_at(kinds, strong)], rng))
                professional.append(self.unrated[index].professional)
        damage = torch.from_numpy(np.stack(triplets)) if triplets else torch.zeros((0, 3, 3, 224, 224))
        return torch.from_numpy(people), torch.from_numpy(mos), damage, torch.tensor(professional, dtype=torch.bool)

    def _loss(
        self, people: torch.Tensor, mos: torch.Tensor, damage: torch.Tensor, professional: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.config
        count = people.shape[0]
        views = torch.cat([people.flatten(0, 1), damage.flatten(0, 1)])
        features = self.net.block_features(views)
        people_features = features[: count * people.shape[1]].reshape(count, people.shape[1], -1).mean(dim=1)
        pred = self.net.score_features(people_features)
        l1, pairs = _people_terms(pred, mos, c)
        loss = l1 + c.pair_weight * pairs
        terms = {"l1": l1.item(), "pairs": pairs.item()}
        if damage.shape[0]:
            scores = self.net.score_features(features[count * people.shape[1] :]).reshape(damage.shape[0], 3)
            ranking = (
                torch.relu(c.damage_margin - (scores[:, 0] - scores[:, 1])) + torch.relu(c.damage_margin - (scores[:, 1] - scores[:, 2]))
            ).mean()
            clean = torch.relu(c.clean_floor - scores[professional, 0]).mean() if professional.any() else scores.new_zeros(())
            loss = loss + c.damage_weight * ranking + c.clean_weight * clean
            terms |= {"damage": ranking.item(), "clean": clean.item()}
        return loss, terms

    def fit(self) -> CropIqaNet:
        """Train for `config.epochs` (then `polish_epochs`) epochs, resuming a checkpoint in `folder`; the network."""
        c = self.config
        optimizer = self._optimizer()
        done, history = self._resume(optimizer)
        if done == 0 and not self.checkpoint.is_file():
            self._probe()
        steps_per_epoch = max(1, len(self.rated) // c.photos_per_step)
        for phase_start, phase_epochs, lr_scale, crops in (
            (0, c.epochs, 1.0, c.crops_per_photo),
            (c.epochs, c.polish_epochs, c.polish_lr_scale, c.polish_crops_per_photo),
        ):
            if phase_epochs and done < phase_start + phase_epochs:
                self._run_phase(optimizer, history, phase_start, phase_epochs, max(done, phase_start), lr_scale, crops, steps_per_epoch)
                done = phase_start + phase_epochs
        self.history = history
        return self.net.eval()

    def _run_phase(
        self,
        optimizer: torch.optim.Optimizer,
        history: list[EpochLog],
        phase_start: int,
        phase_epochs: int,
        first_epoch: int,
        lr_scale: float,
        crops_per_photo: int,
        steps_per_epoch: int,
    ) -> None:
        """Epochs `first_epoch` up to `phase_start + phase_epochs` of one cosine cycle from `lr_scale` x the peak rates."""
        c = self.config
        peaks = [c.backbone_lr * lr_scale, c.head_lr * lr_scale]
        total = phase_epochs * steps_per_epoch

        def set_rates(step: int) -> None:
            factor = float(0.5 * (1 + np.cos(np.pi * min(1.0, step / total))))
            for group, peak in zip(optimizer.param_groups, peaks):
                group["lr"] = peak * factor

        total_epochs = c.epochs + c.polish_epochs
        for epoch in range(first_epoch, phase_start + phase_epochs):
            rng = np.random.default_rng([c.seed, epoch])
            torch.manual_seed(c.seed * 1000 + epoch)
            order = rng.permutation(len(self.rated))
            started, totals = time.time(), {}
            self.net.train()
            for step in range(steps_per_epoch):
                set_rates((epoch - phase_start) * steps_per_epoch + step)
                loss, terms = self._loss(*self._step_batch(rng, order, step * c.photos_per_step, crops_per_photo))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                for key, value in {"loss": loss.item(), **terms}.items():
                    totals[key] = totals.get(key, 0.0) + value / steps_per_epoch
            self.net.eval()
            entry = EpochLog(
                epoch + 1, round(time.time() - started, 1), round(totals.pop("loss"), 3), {k: round(v, 3) for k, v in totals.items()}
            )
            history.append(entry)
            self._save(epoch + 1, optimizer, history)
            self.log(f"  epoch {entry.epoch}/{total_epochs}: {entry.seconds:.0f} s, loss {entry.loss} {entry.terms}")


# Other crop layouts the cross-validation also scores (3x3 grid cells), to show what fewer or more crops cost.
CROP_LAYOUTS: dict[str, tuple[tuple[int, int], ...]] = {
    "centre": ((1, 1),),
    "middle-two": ((1, 0), (1, 2)),
    "middle-row": ((1, 0), (1, 1), (1, 2)),
    "grid-3x3": tuple((r, c) for r in range(3) for c in range(3)),
}


def predict(net: CropIqaNet, images: Sequence[Image.Image], batch: int = 8, cells: tuple[tuple[int, int], ...] | None = None) -> np.ndarray:
    """iqa of each photo through the runtime's own crops (perceptlite.backends.preprocess.prepare_crops);
    `cells`: other cells of the package's crop grid than its own."""
    from dataclasses import replace

    from export.wholeview.model import input_spec
    from perceptlite.backends.preprocess import prepare_crops

    spec = input_spec()
    if cells is not None:
        spec = replace(spec, crops=replace(spec.crops, cells=cells))
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            crops = np.stack([prepare_crops(image, spec) for image in images[start : start + batch]])
            out.append(torch.clamp(net(torch.from_numpy(crops)), 0, 100).numpy())
    return np.concatenate(out) if out else np.zeros(0)
