"""Model runtimes behind one interface (base.Backend): ONNX Runtime (onnx) and llama.cpp (gguf). Each owns its
input contract: how to decode for it, how to prepare a decoded image (preprocess for ONNX)."""
