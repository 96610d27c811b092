"""UniPercept itself: the torch reference scorer (`reference`), a small test checkpoint in its layout (`tiny`),
the GGUF conversion for llama.cpp (`gguf`, with `llama_cpp_source`), and SRCC/PLCC against rating files
(`evaluate`). Heavy imports stay inside those modules.
"""
