"""The distillation's work folder: one name per file its steps write."""

from __future__ import annotations

from pathlib import Path

DEFAULT_WORK = Path("artifacts/distill")
WORK_FILES = {
    "labels": "labels.jsonl",  # label: the teachers' scores, one record per sample
    "features": "features",  # train: the frozen trunk's cached features
    "student": "student.pt",  # train: the student's weights
    "student_summary": "student.json",  # train: what it trained on (written beside student.pt)
}
