"""Pieces more than one factory stage uses: the backbone, damage at real sizes, graded distortions, int8, splits, images, errors."""
