#!/usr/bin/env bash
# Set up .venv (scripts/setup.sh) and open JupyterLab on the notebooks.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/jupyter lab notebooks/ "$@"
