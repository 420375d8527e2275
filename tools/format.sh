#!/usr/bin/env bash
# The Swift sources in one format: swift-format (part of the Swift toolchain) with the
# repository's .swift-format, over Package.swift, Sources and Tests.
#   tools/format.sh           rewrites every file in place
#   tools/format.sh --check   changes nothing; exits non-zero if a file is not as the formatter
#                             would write it, or breaks one of the configured rules (the test command)
set -euo pipefail
cd "$(dirname "$0")/.."
paths=(Package.swift Sources Tests)
case "${1:-}" in
    "") exec swift format format --configuration .swift-format --in-place --recursive --parallel "${paths[@]}" ;;
    --check) exec swift format lint --configuration .swift-format --strict --recursive --parallel "${paths[@]}" ;;
    *) echo "usage: tools/format.sh [--check]" >&2; exit 2 ;;
esac
