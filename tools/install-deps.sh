#!/usr/bin/env bash
# Installs the system libraries gridit builds against (Debian/Ubuntu). Idempotent; needs root
# (or sudo) only when something is missing. Swift itself must already be on PATH.
set -euo pipefail
# systemd: systemd-analyze for the unit checks (tools/check-units.sh); curl: the socket API examples;
# postgresql (Debian 12: 15): the server the PostgreSQL job store's tests start on a temporary
# folder (initdb + postgres, as the postgres user), never the packaged cluster.
packages=(libopenblas-dev libsqlite3-dev libsystemd-dev libarchive-dev libpng-dev zlib1g-dev pkg-config python3-venv systemd curl postgresql)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
command -v swift >/dev/null || { echo "swift is not on PATH: install the Swift 6 toolchain first" >&2; exit 1; }
