#!/usr/bin/env bash
# Issue 19: decisions per second for one client hammering while blocked,
# through the fleet engine with and without its local cache of standing
# denials, on one redis-server on a free loopback port, with 1 and 8
# concurrent clients. Usage: bench/denial_cache.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-5}
cargo build --release -q -p portcullis-bench --features redis --bin denial_cache
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
DIR=$(mktemp -d)
redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$DIR" --daemonize no >"$DIR/redis.log" 2>&1 &
RPID=$!
trap 'kill $RPID 2>/dev/null; wait $RPID 2>/dev/null; rm -rf "$DIR"' EXIT
for _ in $(seq 50); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
URL="redis://127.0.0.1:$PORT/0"
echo "# redis-server $(redis-server --version | awk '{print $3}') on 127.0.0.1:$PORT, ${SECS}s per row, $(nproc) cores"
target/release/denial_cache "$URL" "$SECS" 1 8
echo "# evalsha calls: $(redis-cli -p "$PORT" info commandstats | grep -o 'cmdstat_evalsha:calls=[0-9]*')"
