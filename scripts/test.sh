#!/usr/bin/env bash
# Set up .venv (scripts/setup.sh) and run the whole test suite: unit tests, and every notebook
# executed and compared with its committed outputs (nbval).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest tests notebooks --nbval --nbval-current-env \
    --nbval-sanitize-with notebooks/sanitize.cfg --durations=15 "$@"
