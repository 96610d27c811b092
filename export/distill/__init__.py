"""The distillation: teachers label images, a compact student learns their scores (`python -m export.distill`)."""
