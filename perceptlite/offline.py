"""perceptlite runs offline and leaves no trace outside the files a user names.

onnxruntime (1.32 and later) writes a telemetry database with a device id, the CPU model and the
Python path under ``~/.cache/Microsoft/`` as soon as it is imported, unless ``ORT_DISABLE_TELEMETRY``
is set. This module sets it, and is imported first by :mod:`perceptlite`, before anything imports
onnxruntime. A program that imported onnxruntime before perceptlite gets its telemetry events
switched off here, but the database may already be written: set ``ORT_DISABLE_TELEMETRY=1`` yourself.
"""

from __future__ import annotations

import os
import sys

os.environ["ORT_DISABLE_TELEMETRY"] = "1"
if "onnxruntime" in sys.modules:
    getattr(sys.modules["onnxruntime"], "disable_telemetry_events", lambda: None)()
