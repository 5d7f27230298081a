#!/usr/bin/env bash
# Create .venv and install peftlab with its test and Hugging Face extras.
# torch is installed first and pinned: on a machine without an NVIDIA GPU this is the CPU build
# (on this project's machines `pip install torch==2.13.0` finds it on disk; elsewhere set
# PEFTLAB_TORCH_INDEX to PyTorch's CPU wheel index), so no multi-GB CUDA build is pulled.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${PEFTLAB_TORCH_SPEC:-torch==2.13.0}"

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip install --disable-pip-version-check -q)
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    echo "setup: installing $TORCH_SPEC"
    "${PIP[@]}" "$TORCH_SPEC" ${PEFTLAB_TORCH_INDEX:+--index-url "$PEFTLAB_TORCH_INDEX"}
fi
echo "setup: installing peftlab[dev,hf]"
"${PIP[@]}" -e ".[dev,hf]"
.venv/bin/python -c "import torch, peftlab; print(f'setup: peftlab {peftlab.__version__}, torch {torch.__version__}, cuda {torch.cuda.is_available()}')"
