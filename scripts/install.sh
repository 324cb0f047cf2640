#!/usr/bin/env bash
# Create the virtual environment and install paretoforge with its test extra.
#
# torch comes first, chosen for the machine: with an NVIDIA GPU, PyPI's default build (CUDA);
# without one, a CPU-only build -- from a local wheelhouse when pip is configured with one
# (find-links), else from PyTorch's CPU index -- so that no multi-GB CUDA build is downloaded.
set -euo pipefail
VENV="${1:-.venv}"
PYTHON="${PYTHON:-python3}"

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip

has_cuda() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }
torch_version() { "$PY" -c 'import importlib.metadata as m; print(m.version("torch"))' 2>/dev/null; }
torch_is_cpu() { "$PY" -c 'import torch, sys; sys.exit(torch.version.cuda is not None)' 2>/dev/null; }

if ! torch_version >/dev/null; then
  if has_cuda; then
    echo "install.sh: NVIDIA GPU found: installing the CUDA build of torch"
    "$PY" -m pip install "torch>=2.4"
  elif "$PY" -m pip install -q --no-index --no-deps "torch>=2.4" 2>/dev/null && torch_is_cpu; then
    echo "install.sh: no GPU: installed the local CPU build torch $(torch_version)"
    "$PY" -m pip install -q "torch==$(torch_version)"   # its dependencies
  else
    "$PY" -m pip uninstall -q -y torch 2>/dev/null || true
    echo "install.sh: no GPU: installing the CPU build of torch from PyTorch's CPU index"
    "$PY" -m pip install "torch>=2.4" --index-url https://download.pytorch.org/whl/cpu \
      --extra-index-url https://pypi.org/simple
  fi
fi
"$PY" -m pip install -q -e ".[test]"
echo "install.sh: ready: torch $(torch_version) ($(torch_is_cpu && echo CPU build || echo CUDA build))"
