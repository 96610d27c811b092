"""Where a model runs: the values of --device and ScoreOptions.device, shared by every backend.

Its own module so that base.py (which opens the backends) and the backends need not import each other.
"""

DEVICES = ("auto", "cpu", "cuda")
