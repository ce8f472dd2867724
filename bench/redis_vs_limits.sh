#!/usr/bin/env bash
# Redis backend: portcullis RedisLimiter vs Python `limits` (moving window,
# Redis storage) with 1, 8 and 64 concurrent clients, on one redis-server and
# then on a three-master Redis Cluster (three cluster-enabled redis-servers,
# no replicas), all on free loopback ports.
# Usage: bench/redis_vs_limits.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-5}
VENV=${LIMITS_VENV:-/tmp/limits-venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -c 'import limits, redis' 2>/dev/null || "$VENV/bin/pip" install -q limits redis
cargo build --release -q -p portcullis-bench --features redis --bin redis_fleet
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
DIR=$(mktemp -d)
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; rm -rf "$DIR"' EXIT
start_redis() { # PORT DIR [ARGS...]
  local port=$1 dir=$2; shift 2
  mkdir -p "$dir"
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" --daemonize no "$@" >"$dir/redis.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
}
echo "# redis-server $(redis-server --version | awk '{print $3}'), ${SECS}s per row, $(nproc) cores, $(uptime | sed 's/.*load average/load average/')"

PORT=$(free_port)
start_redis "$PORT" "$DIR/single"
URL="redis://127.0.0.1:$PORT/0"
echo "## one redis-server on 127.0.0.1:$PORT"
target/release/redis_fleet "$URL" "$SECS" 1 8 64
"$VENV/bin/python" bench/limits_redis.py "$URL" "$SECS" 1 8 64

NODES=()
for i in 1 2 3; do
  P=$(free_port)
  start_redis "$P" "$DIR/node$i" --cluster-enabled yes --cluster-config-file nodes.conf \
    --cluster-require-full-coverage no
  NODES+=("127.0.0.1:$P")
done
redis-cli --cluster create "${NODES[@]}" --cluster-replicas 0 --cluster-yes >"$DIR/create.log" 2>&1 || { cat "$DIR/create.log"; exit 1; }
for n in "${NODES[@]}"; do
  for _ in $(seq 100); do
    redis-cli -h "${n%:*}" -p "${n#*:}" cluster info | grep -q 'cluster_state:ok' && break
    sleep 0.1
  done
done
CURL="redis+cluster://$(IFS=,; echo "${NODES[*]}")"
echo "## three-master redis cluster ${NODES[*]}"
target/release/redis_fleet "$CURL" "$SECS" 1 8 64
"$VENV/bin/python" bench/limits_redis.py "$CURL" "$SECS" 1 8 64
"$VENV/bin/python" -c 'import limits; print("# limits", limits.__version__)'
