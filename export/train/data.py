"""Training data for both stages: rating files and question-answering files, mixed with per-source weights.

Rating (VR) files: JSON lists of {"image", "gt_score"}, each source on its own scale (mapped linearly to 0-100).
Question-answering files: JSON lists of {"image", "question", "answer"}; an answer that is one letter A-D is a
multiple-choice question (asked with UniPercept's VQA instruction, checked on the first character of the reply),
anything else is a free-text question (asked as InternVL's chat() asks it).

The order of samples is a pure function of (seed, epoch), so a run that resumes at step s reads exactly the
samples an uninterrupted run would have read, whatever the number of processes.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from export.unipercept.reference import AXES

TASKS = ("rating", "mcq", "text")
CHOICE_LETTER = re.compile(r"^[A-D]$")


@dataclass
class DatasetSpec:
    """One JSON file, its image folder, its task and (rating) axis and score range, and its mixing weight."""

    json: Path
    images: Path
    axis: str | None = None
    low: float | None = None
    high: float | None = None
    weight: float = 1.0
    task: str | None = None  # rating, mcq, text; None: rating when axis= is given, else read from the records

    @classmethod
    def parse(cls, text: str) -> DatasetSpec:
        """Parse 'json=FILE,images=DIR[,axis=iqa][,min=1,max=5][,weight=1][,task=rating|mcq|text]'."""
        fields = dict(part.split("=", 1) for part in text.split(",") if "=" in part)
        missing = [key for key in ("json", "images") if key not in fields]
        if missing:
            raise ValueError(f"--dataset {text!r}: missing {', '.join(missing)} (json=FILE,images=DIR[,axis=iaa|iqa|ista])")
        task = fields.get("task") or ("rating" if "axis" in fields else None)
        if task is not None and task not in TASKS:
            raise ValueError(f"--dataset {text!r}: task must be one of {', '.join(TASKS)}")
        if task == "rating" and fields.get("axis") not in AXES:
            raise ValueError(f"--dataset {text!r}: axis must be one of {', '.join(AXES)}")
        weight = float(fields.get("weight", 1.0))
        if weight <= 0:
            raise ValueError(f"--dataset {text!r}: weight must be positive")
        low, high = fields.get("min"), fields.get("max")
        return cls(
            Path(fields["json"]),
            Path(fields["images"]),
            fields.get("axis"),
            float(low) if low is not None else None,
            float(high) if high is not None else None,
            weight,
            task,
        )


@dataclass
class Sample:
    """One training sample: an image and either a rating target (0-100) on an axis or a question and its answer."""

    image: Path
    task: str  # rating, mcq, text
    axis: str | None = None
    target: float | None = None  # rating: 0-100
    question: str | None = None
    answer: str | None = None


def _read_records(spec: DatasetSpec) -> list[dict]:
    if not spec.json.is_file():
        raise FileNotFoundError(f"{spec.json}: not found; pass a JSON list of samples")
    records = json.loads(spec.json.read_text(encoding="utf-8"))
    if not isinstance(records, list) or not records:
        raise ValueError(f"{spec.json}: expected a non-empty JSON list")
    return records


def _rating_samples(spec: DatasetSpec, records: list[dict]) -> list[Sample]:
    if any("gt_score" not in r for r in records):
        raise ValueError(f"{spec.json}: a rating file needs gt_score in every record")
    scores = [float(r["gt_score"]) for r in records]
    low = spec.low if spec.low is not None else min(scores)
    high = spec.high if spec.high is not None else max(scores)
    if high <= low:
        raise ValueError(f"{spec.json}: score range {low}..{high} is empty; pass min= and max=")
    seen_low, seen_high = min(scores), max(scores)
    if seen_low < low or seen_high > high:
        # A rating outside the declared scale means the scale is wrong (e.g. max=100 for a 0-10 file); clipping would hide it.
        raise ValueError(
            f"{spec.json}: ratings span {seen_low:g}..{seen_high:g}, outside the declared "
            f"min={low:g}..max={high:g}; pass the file's own scale as min= and max="
        )
    return [
        Sample(spec.images / r["image"], "rating", axis=spec.axis, target=(score - low) / (high - low) * 100.0)
        for r, score in zip(records, scores)
    ]


def _qa_samples(spec: DatasetSpec, records: list[dict]) -> list[Sample]:
    if any("question" not in r or "answer" not in r for r in records):
        raise ValueError(f"{spec.json}: a question-answering file needs question and answer in every record")
    samples = []
    for record in records:
        answer = str(record["answer"]).strip()
        task = spec.task or ("mcq" if CHOICE_LETTER.match(answer) else "text")
        if task == "mcq" and not CHOICE_LETTER.match(answer):
            raise ValueError(f"{spec.json}: multiple-choice answer {answer!r} is not one letter A-D")
        samples.append(Sample(spec.images / record["image"], task, question=str(record["question"]), answer=answer))
    return samples


def load_samples(spec: DatasetSpec) -> list[Sample]:
    """The samples of one source (not yet weighted)."""
    records = _read_records(spec)
    task = spec.task or ("rating" if "gt_score" in records[0] else None)
    if task == "rating":
        if spec.axis not in AXES:
            raise ValueError(f"{spec.json}: a rating file needs axis=iaa|iqa|ista")
        return _rating_samples(spec, records)
    return _qa_samples(spec, records)


class Mixture:
    """All sources of a run; epoch e is a seeded shuffle of each source's weighted share.

    A source of n samples and weight w contributes round(w * n) samples per epoch: whole passes over the source
    for the integer part, a seeded subset (different every epoch) for the fraction.
    """

    def __init__(self, specs: list[DatasetSpec], seed: int):
        self.sources = [load_samples(spec) for spec in specs]
        self.weights = [spec.weight for spec in specs]
        self.seed = seed
        if not any(self.sources):
            raise ValueError("no training samples: the --dataset files are empty")
        self.epoch_length = sum(max(1, round(w * len(s))) for w, s in zip(self.weights, self.sources))
        self._cached: tuple[int, list[Sample]] | None = None

    def epoch(self, epoch: int) -> list[Sample]:
        if self._cached is not None and self._cached[0] == epoch:
            return self._cached[1]
        rng = random.Random(self.seed * 100003 + epoch)
        chosen: list[Sample] = []
        for weight, source in zip(self.weights, self.sources):
            share = max(1, round(weight * len(source)))
            whole, rest = divmod(share, len(source))
            chosen += source * whole + rng.sample(source, rest)
        rng.shuffle(chosen)
        self._cached = (epoch, chosen)
        return chosen

    def step_samples(self, step: int, per_step: int) -> list[Sample]:
        """The `per_step` samples of optimizer step `step` (0-based), crossing epoch boundaries as needed."""
        first = step * per_step
        samples: list[Sample] = []
        while len(samples) < per_step:
            epoch, offset = divmod(first + len(samples), self.epoch_length)
            samples += self.epoch(epoch)[offset : offset + per_step - len(samples)]
        return samples

    def counts(self) -> dict[str, int]:
        """How many samples of each task one epoch holds (for the start-up log line)."""
        totals: dict[str, int] = {}
        for weight, source in zip(self.weights, self.sources):
            share = max(1, round(weight * len(source)))
            for task in TASKS:
                n = sum(1 for s in source if s.task == task)
                if n:
                    totals[task] = totals.get(task, 0) + round(share * n / len(source))
        return totals
