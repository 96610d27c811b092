"""Model packages: the manifest parsed and validated whole (manifest), found by name or folder (registry),
and the files an ONNX graph reads besides itself (onnx_files)."""
