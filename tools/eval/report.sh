#!/usr/bin/env bash
# The quality report of a moving-digits pipeline (tools/train/README.md, "Quality"), generated with
# the PyTorch sampler (tools/train/sample.py). Usage:
#   tools/eval/report.sh PIPELINE_DIR WORK_DIR [PYTHON]
# Writes WORK_DIR/<set>/seq_*/frames/*.png, WORK_DIR/*.json (one per table) and WORK_DIR/*.png
# (contact sheets), and prints the markdown tables. Sizes: N (sequences per set) and N16 may be
# overridden from the environment; the defaults are the ones the README's numbers used.
set -euo pipefail
cd "$(dirname "$0")/../.."
pl=${1:?pipeline folder}
work=${2:?work folder}
py=${3:-python3}
n128=${N128:-16}     # 128-frame sequences, full pipeline
n16=${N16:-32}       # 16-frame clips, stage 1 only
noff=${NOFF:-8}      # official-mode sequences
loff=${LOFF:-64}     # their length
mkdir -p "$work"
gen() { local name=$1; shift; [ -d "$work/$name" ] || "$py" tools/train/sample.py --pipeline "$pl" --out "$work/$name" --quiet "$@"; }
ev() { "$py" tools/eval/evaluate.py "$@"; }

echo "== metric validation: real vs real and corruptions (64 px, 16 frames)"
ev --validate --count 48 --length 16 --size 64 --json "$work/validate64.json" --sheet "$work/validate64.png"

echo "== full pipeline, 128 frames, gridit mode, pipeline defaults (64 px; drift = last 16 vs first 16)"
gen gridit128 --count "$n128" --length 128 --seed 1
ev --validate --gen "$work/gridit128" --name "gridit, defaults" --json "$work/gridit128.json" \
   --sheet "$work/gridit128.png"

echo "== stage 1 alone, 16-frame grids (16 px): samplers and steps"
gen s1_ddpm250 --count "$n16" --length 16 --seed 2 --no-sr --sampler ddpm --steps 250
gen s1_ddpm100 --count "$n16" --length 16 --seed 2 --no-sr --sampler ddpm --steps 100
gen s1_ddpm50 --count "$n16" --length 16 --seed 2 --no-sr --sampler ddpm --steps 50
gen s1_ddim50 --count "$n16" --length 16 --seed 2 --no-sr --sampler ddim --steps 50 --eta 0
ev --gen "$work/s1_ddpm250" --name "DDPM 250" --gen "$work/s1_ddpm100" --name "DDPM 100" \
   --gen "$work/s1_ddpm50" --name "DDPM 50" --gen "$work/s1_ddim50" --name "DDIM 50 (eta 0)" \
   --json "$work/stage1_16.json" --sheet "$work/stage1_16.png"

echo "== stage 1 alone, $loff frames (16 px): gridit vs official mode"
gen s1_gridit_long --count "$noff" --length "$loff" --seed 3 --no-sr
gen s1_official_long --count "$noff" --length "$loff" --seed 3 --no-sr --mode official
ev --gen "$work/s1_gridit_long" --name "gridit (defaults)" --gen "$work/s1_official_long" \
   --name "official (3 rows, in-betweening, defaults' sampler)" --json "$work/modes.json" --sheet "$work/modes.png"

echo "== stage 2 on exact held-out pairs"
"$py" tools/eval/sr_check.py --pipeline "$pl" --count 64 --json "$work/sr.json"
