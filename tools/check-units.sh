#!/usr/bin/env bash
# CI gate for the systemd units: `systemd-analyze verify`, and the exposure score of
# `systemd-analyze security` at most 1.0 (--threshold is on the 0-100 scale). Both run offline,
# so they work in a container without a running systemd.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v systemd-analyze >/dev/null || { echo "systemd-analyze missing: run tools/install-deps.sh" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp systemd/griditd.service systemd/griditd.socket "$tmp/"
# verify checks that ExecStart= exists; the unit names the installed path, so point it at the
# build (or any executable) for the check.
binary=$(pwd)/.build/debug/griditd
[ -x "$binary" ] || binary=$(command -v true)
sed -i "s|^ExecStart=/usr/local/bin/griditd|ExecStart=$binary|" "$tmp/griditd.service"
systemd-analyze verify --man=no "$tmp/griditd.socket" "$tmp/griditd.service"
systemd-analyze security --offline=true --threshold=10 --no-pager "$tmp/griditd.service" | tail -n 1
# The PostgreSQL drop-in (network to the database only) must load on top of the unit too.
mkdir "$tmp/griditd.service.d"
cp systemd/griditd-postgres.conf "$tmp/griditd.service.d/postgres.conf"
systemd-analyze verify --man=no "$tmp/griditd.socket" "$tmp/griditd.service"
echo "systemd units: verify ok, security gate ok"
