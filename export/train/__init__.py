"""The full-model training recipe for UniPercept-layout checkpoints (GPU machine; see README.md)."""
