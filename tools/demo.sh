#!/usr/bin/env bash
# The main job, end to end, as a user runs it on one machine without root or systemd: build
# griditd and griditctl (release), start griditd in the foreground on a local state directory,
# import the bundled pipeline, generate a 128-frame sequence, print where the frames are, and stop
# griditd. Run it again and it reuses the state directory and the imported model.
#
#   tools/demo.sh [PIPELINE.json]      (default: models/moving-digits/pipeline.json)
#
# Environment: GRIDIT_DEMO_DIR (state directory, default .demo/state in the checkout),
# GRIDIT_DEMO_LENGTH (frames, default 128), GRIDIT_DEMO_SEED (default 7).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
pipeline=${1:-models/moving-digits/pipeline.json}
state=${GRIDIT_DEMO_DIR:-$root/.demo/state}
length=${GRIDIT_DEMO_LENGTH:-128}
seed=${GRIDIT_DEMO_SEED:-7}

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
fail() { printf 'demo: %s\n' "$*" >&2; exit 1; }

[ -f "$pipeline" ] || fail "no pipeline at '$pipeline'. The bundled one is models/moving-digits/pipeline.json; \
pass another pipeline.json as the first argument (tools/demo.sh PATH/pipeline.json)."
pipeline=$(cd "$(dirname "$pipeline")" && pwd)/$(basename "$pipeline")
json() { python3 -c "import json, sys; v = json.load(sys.stdin).get('$1'); print(v if v else '')"; }
# The version's name: the pipeline's "name" field, tag latest.
name=$(json name <"$pipeline")
model="${name:-demo}:latest"

say "building griditd and griditctl (release)"
swift build -c release --product griditd
swift build -c release --product griditctl
bin=$(swift build -c release --show-bin-path)

# The socket lives in a fresh short folder (Unix socket paths are limited to 107 bytes).
run=$(mktemp -d "${TMPDIR:-/tmp}/gridit-demo.XXXXXX")
socket=$run/griditd.sock
log=$run/griditd.log
daemon=""
cleanup() {
    status=$?
    if [ -n "$daemon" ] && kill -0 "$daemon" 2>/dev/null; then
        kill -TERM "$daemon" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$daemon" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$daemon" 2>/dev/null || true
        wait "$daemon" 2>/dev/null || true
    fi
    if [ "$status" -ne 0 ] && [ -s "$log" ]; then
        echo "--- the last lines griditd logged ($log is removed now) ---" >&2
        tail -n 20 "$log" >&2
    fi
    rm -rf "$run"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$state"
say "starting griditd on $state"
"$bin/griditd" serve --state-dir "$state" --socket "$socket" >"$log" 2>&1 &
daemon=$!
export GRIDIT_SOCKET=$socket
ctl="$bin/griditctl"
for _ in $(seq 1 300); do
    kill -0 "$daemon" 2>/dev/null || fail "griditd exited before it was ready"
    "$ctl" status >/dev/null 2>&1 && break
    sleep 0.1
done
"$ctl" status >/dev/null || fail "griditd did not answer on $socket within 30 s"

before=$("$ctl" models show "$model" --json 2>/dev/null | json digest || true)
say "importing $pipeline as $model"
"$ctl" models import "$pipeline" --name "$model" --link copy >/dev/null
after=$("$ctl" models show "$model" --json | json digest)
if [ -n "$before" ] && [ "$before" = "$after" ]; then
    echo "$model is already in the store ($after)" >&2
else
    echo "$model = $after" >&2
fi

say "griditctl submit --length $length --seed $seed --model $model --wait"
started=$(date +%s)
output=$("$ctl" submit --length "$length" --seed "$seed" --model "$model" --wait)
seconds=$(($(date +%s) - started))

frames=$(find "$output/frames" -name 'frame_*.png' | wc -l)
cat <<EOF

$frames frames in ${seconds}s:
  frames         $output/frames/frame_00000.png ... frame_$(printf '%05d' $((frames - 1))).png
  preview        $output/preview.apng
  contact sheet  $output/contact_sheet.png
  provenance     $output/sequence.json (seed, model digest, settings, SHA-256 of every frame)
EOF
say "stopping griditd"
