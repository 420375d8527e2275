#!/usr/bin/env bash
# Installs griditd and griditctl as a systemd service (Debian/Ubuntu, run as root):
#   swift build -c release --product griditd --product griditctl && sudo systemd/install.sh
# Options: --bin-dir DIR (where the built binaries are; default .build/release),
#          --no-start (install only), DESTDIR=... in the environment (staging for packages).
set -euo pipefail
cd "$(dirname "$0")/.."
bin_dir=.build/release
start=1
while (($#)); do
    case "$1" in
        --bin-dir) bin_dir=$2; shift 2 ;;
        --no-start) start=0; shift ;;
        *) echo "usage: $0 [--bin-dir DIR] [--no-start]" >&2; exit 2 ;;
    esac
done
dest=${DESTDIR:-}
for b in griditd griditctl; do
    [ -x "$bin_dir/$b" ] || { echo "$bin_dir/$b is missing: swift build -c release --product $b" >&2; exit 1; }
done
if [ -z "$dest" ] && [ "$(id -u)" -ne 0 ]; then echo "run as root (or set DESTDIR)" >&2; exit 1; fi

install -D -m 0755 "$bin_dir/griditd" "$dest/usr/local/bin/griditd"
install -D -m 0755 "$bin_dir/griditctl" "$dest/usr/local/bin/griditctl"
install -D -m 0644 systemd/griditd.service "$dest/etc/systemd/system/griditd.service"
install -D -m 0644 systemd/griditd.socket "$dest/etc/systemd/system/griditd.socket"
install -D -m 0644 systemd/gridit.sysusers.conf "$dest/etc/sysusers.d/gridit.conf"
install -D -m 0644 systemd/gridit.tmpfiles.conf "$dest/etc/tmpfiles.d/gridit.conf"
install -D -m 0644 README.md "$dest/usr/local/share/doc/gridit/README.md"
# Not active: the drop-in for the PostgreSQL job queue (docs/CLUSTER.md says where it goes).
install -D -m 0644 systemd/griditd-postgres.conf "$dest/usr/local/share/doc/gridit/griditd-postgres.conf"
# Shell completions, as each binary writes them (bash-completion, zsh and fish look under /usr/local/share).
share=$dest/usr/local/share
install -d "$share/bash-completion/completions" "$share/zsh/site-functions" "$share/fish/vendor_completions.d"
for b in griditd griditctl; do
    "$bin_dir/$b" --generate-completion-script bash >"$share/bash-completion/completions/$b"
    "$bin_dir/$b" --generate-completion-script zsh >"$share/zsh/site-functions/_$b"
    "$bin_dir/$b" --generate-completion-script fish >"$share/fish/vendor_completions.d/$b.fish"
done
# The settings file: installed once, never over an operator's edits.
[ -e "$dest/etc/gridit/griditd.conf" ] || install -D -m 0644 systemd/griditd.conf "$dest/etc/gridit/griditd.conf"
[ -n "$dest" ] && { echo "staged under $dest"; exit 0; }

systemd-sysusers /etc/sysusers.d/gridit.conf
systemd-tmpfiles --create /etc/tmpfiles.d/gridit.conf
systemctl daemon-reload
if ((start)); then
    systemctl enable --now griditd.socket
    systemctl enable --now griditd.service
    echo "griditd is running: griditctl status (users need the 'gridit' group: usermod -aG gridit USER)"
else
    echo "installed; start with: systemctl enable --now griditd.socket griditd.service"
fi
