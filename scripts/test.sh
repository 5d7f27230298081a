#!/usr/bin/env bash
# Set up .venv (scripts/setup.sh) and run the whole test suite: unit tests, the docstring examples of
# peftlab (--doctest-modules), and every notebook executed and compared with its committed outputs
# (nbval; the notebooks' jupytext sources in notebooks/src are not test modules).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PEFTLAB_SCALE=cpu  # the compared notebooks run their CPU setting, on any machine (peftlab/scale.py)
exec .venv/bin/python -m pytest tests peftlab notebooks --doctest-modules --ignore=notebooks/src \
    --nbval --nbval-current-env \
    --nbval-sanitize-with notebooks/sanitize.cfg --durations=15 "$@"
