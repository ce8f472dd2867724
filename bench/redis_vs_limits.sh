#!/usr/bin/env bash
# Redis backend: portcullis RedisLimiter vs Python `limits` (moving window,
# Redis storage) on one redis-server on a free loopback port, with 1, 8 and
# 64 concurrent clients. Usage: bench/redis_vs_limits.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-5}
VENV=${LIMITS_VENV:-/tmp/limits-venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -c 'import limits, redis' 2>/dev/null || "$VENV/bin/pip" install -q limits redis
cargo build --release -q -p portcullis-bench --features redis --bin redis_fleet
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
DIR=$(mktemp -d)
redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$DIR" --daemonize no >"$DIR/redis.log" 2>&1 &
RPID=$!
trap 'kill $RPID 2>/dev/null; wait $RPID 2>/dev/null; rm -rf "$DIR"' EXIT
for _ in $(seq 50); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
URL="redis://127.0.0.1:$PORT/0"
echo "# redis-server $(redis-server --version | awk '{print $3}') on 127.0.0.1:$PORT, ${SECS}s per row, $(nproc) cores"
target/release/redis_fleet "$URL" "$SECS" 1 8 64
"$VENV/bin/python" bench/limits_redis.py "$URL" "$SECS" 1 8 64
"$VENV/bin/python" -c 'import limits; print("# limits", limits.__version__)'
