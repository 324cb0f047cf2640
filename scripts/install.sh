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

install_torch_deps() { "$PY" -m pip install -q "torch==$(torch_version)"; }

if ! torch_version >/dev/null; then
  if has_cuda; then
    echo "install.sh: NVIDIA GPU found: installing the CUDA build of torch"
    "$PY" -m pip install "torch>=2.4"
  else
    # A CPU wheel from a configured local wheelhouse (find-links), if there is one.
    if "$PY" -m pip install -q --no-index --no-deps "torch>=2.4" 2>/dev/null; then
      install_torch_deps
      if torch_is_cpu; then
        echo "install.sh: no GPU: installed the local CPU build torch $(torch_version)"
      else
        "$PY" -m pip uninstall -q -y torch
      fi
    fi
    if ! torch_version >/dev/null; then
      # PyTorch's CPU index only: falling back to PyPI would pull a multi-GB CUDA build.
      echo "install.sh: no GPU: installing the CPU build of torch from PyTorch's CPU index"
      if ! "$PY" -m pip install --retries 2 --timeout 60 --no-deps "torch>=2.4" \
          --index-url https://download.pytorch.org/whl/cpu; then
        echo "install.sh: could not reach PyTorch's CPU index; install a CPU build of torch" \
             "into $VENV yourself (pip install torch --index-url" \
             "https://download.pytorch.org/whl/cpu) and run this again" >&2
        exit 1
      fi
      install_torch_deps
    fi
  fi
fi
"$PY" -m pip install -q -e ".[test]"
echo "install.sh: ready: torch $(torch_version) ($(torch_is_cpu && echo CPU build || echo CUDA build))"
