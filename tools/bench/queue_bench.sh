#!/usr/bin/env bash
# Claims per second and claim latency (p50, p99) of the PostgreSQL job store with 1, 4 and 16
# concurrent workers, beside the SQLite store (gridit-queue-bench). Starts a throwaway PostgreSQL
# server (Debian's postgresql package; GRIDIT_PG_BIN names another bin folder) with its default,
# durable settings (fsync, synchronous_commit on), as a production server has them, on a
# temporary folder of the same disk as the SQLite runs, and removes it afterwards.
#
#   swift build -c release --product gridit-queue-bench   (BENCH=path runs another build)
#   tools/bench/queue_bench.sh [gridit-queue-bench options: --jobs 2000 --workers 1,4,16 --repeats 3 --json FILE]
set -euo pipefail
cd "$(dirname "$0")/../.."
bench=${BENCH:-.build/release/gridit-queue-bench}
[ -x "$bench" ] || { echo "build it first: swift build -c release --product gridit-queue-bench" >&2; exit 1; }
bin=${GRIDIT_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
[ -x "$bin/postgres" ] || { echo "no PostgreSQL server binaries (apt-get install postgresql, or set GRIDIT_PG_BIN)" >&2; exit 1; }
dir=$(mktemp -d /tmp/queue-bench-pg-XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# PostgreSQL refuses to run as root: as the postgres user then.
as=()
if [ "$(id -u)" = 0 ]; then chown postgres: "$dir"; as=(setpriv --reuid postgres --regid postgres --init-groups --); fi
"${as[@]}" "$bin/initdb" -D "$dir/data" -U gridit --auth=trust --encoding=UTF8 --locale=C >/dev/null
"${as[@]}" "$bin/postgres" -D "$dir/data" -p "$port" -k "$dir" -c listen_addresses=127.0.0.1 \
    -c max_connections=100 >"$dir/server.log" 2>&1 &
server=$!
trap 'kill -INT $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" && break; sleep 0.2; done
echo "# $("$bin/postgres" --version), default settings (fsync on); $(nproc) CPUs; load: $(cut -d' ' -f1-3 /proc/loadavg)"
"$bench" --database "postgres://gridit@127.0.0.1:$port/postgres?sslmode=disable" "$@"
