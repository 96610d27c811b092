"""Teachers that label images for distillation; `load_teacher(name)` is the one entry point."""

from __future__ import annotations

from .base import AXES, Teacher

TEACHER_NAMES = ("nima", "iqa-synthetic", "ista", "unipercept:<checkpoint folder>")


def load_teacher(name: str) -> Teacher:
    """Build a teacher by name: "nima", "iqa-synthetic", "ista" or "unipercept:<checkpoint folder>"."""
    if name == "nima":
        from .nima import NimaTeacher

        return NimaTeacher()
    if name == "iqa-synthetic":
        from .iqa import SyntheticIqaTeacher

        return SyntheticIqaTeacher()
    if name == "ista":
        from .ista import StructureTextureTeacher

        return StructureTextureTeacher()
    if name.startswith("unipercept:"):
        from . import unipercept  # written by the UniPercept work; heavy imports stay lazy

        return unipercept.UniPerceptTeacher(name.split(":", 1)[1])
    raise ValueError(f"unknown teacher {name!r}; choose one of {', '.join(TEACHER_NAMES)}")


__all__ = ["AXES", "TEACHER_NAMES", "Teacher", "load_teacher"]
