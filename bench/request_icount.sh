#!/usr/bin/env bash
# User-space instructions per proxied request, under callgrind (counts do
# not depend on the machine's load, unlike requests/s): `portcullis serve`
# in proxy mode (one worker) and nginx `limit_req` (one process, no master),
# each in front of the same upstream nginx, each sent N and 3N requests by
# bench/src/bin/openloop.rs over 4 connections in the same 10 seconds, so
# start-up and timer work cancel out: Ir/request = (Ir(3N) - Ir(N)) / 2N.
# Kernel time (the sockets) is not counted: see request_path.sh for CPU time.
# DEMO=1 also measures each binary's demo `GET /` (no upstream) and the
# bare hyper `hello` (bench/src/bin/hello.rs, one worker).
# Not in CI. Needs nginx and valgrind.
# Everything is built with the `dist` profile, the shipped server's (fat
# LTO, one codegen unit: Cargo.toml), and read from target/dist/.
# KEEP=dir keeps the callgrind files (cg.<name>.<n>) for a per-function
# difference: callgrind_annotate --inclusive=yes on the N and 3N files.
# Usage: [DEMO=1] [KEEP=dir] bench/request_icount.sh [N] [PORTCULLIS_BINARY...]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000}
shift || true
BINS=("$@")
for tool in nginx valgrind callgrind_annotate curl python3; do
  command -v "$tool" >/dev/null || {
    echo "needs $tool (apt-get install nginx valgrind curl python3)" >&2
    exit 1
  }
done
# Without mimalloc (feature `mimalloc`, on by default): under valgrind its
# arena reservation crashes the server. The system allocator's share of
# the instructions is a little larger.
cargo build --profile dist -q -p portcullis-server --no-default-features --bin portcullis
cp target/dist/portcullis target/dist/portcullis-callgrind
cargo build --profile dist -q -p portcullis-bench --features portcullis-bench/http --bin openloop --bin hello
[[ ${#BINS[@]} -gt 0 ]] || BINS=(target/dist/portcullis-callgrind)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP=$(free_port)
DIR=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [[ -n ${KEEP:-} ]]; then mkdir -p "$KEEP" && cp "$DIR"/cg.* "$KEEP"/; fi
  rm -rf "$DIR"
}
trap cleanup EXIT
nginx_conf() { # file master workers server-block
  cat >"$1" <<EOF
daemon off;
master_process $2;
user root;
worker_processes $3;
pid $1.pid;
error_log $1.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $DIR/body;
  proxy_temp_path $DIR/proxy;
  fastcgi_temp_path $DIR/fastcgi;
  uwsgi_temp_path $DIR/uwsgi;
  scgi_temp_path $DIR/scgi;
  $4
}
EOF
}
nginx_conf "$DIR/up.conf" on 1 "server { listen 127.0.0.1:$UP; location / { return 200 \"ok\n\"; } }"
nginx -p "$DIR" -c "$DIR/up.conf" &
PIDS+=($!)

wait_up() { for _ in $(seq 300); do curl -sf "http://127.0.0.1:$1/" >/dev/null && return; sleep 0.2; done; }
# name port command... : total Ir of the server while openloop sends $n requests.
measure() {
  local name=${1//\//_} port=$2 n=$3 vp
  shift 3
  valgrind --tool=callgrind --callgrind-out-file="$DIR/cg.$name.$n" "$@" 2>/dev/null &
  vp=$!
  wait_up "$port"
  target/dist/openloop "http://127.0.0.1:$port/" $((n / 10)) 10 4 1 0 >"$DIR/ol.$name.$n"
  kill -TERM "$vp"
  wait "$vp" || true
  # portcullis: the request workers' threads only (inclusive cost of
  # `workers::worker`): the main thread's start-up (argon2, the metrics
  # clock's calibration loop) runs for a time, not a count, and moved the
  # difference by up to 15 % between runs. nginx: the whole process.
  local w
  w=$(callgrind_annotate --auto=no --inclusive=yes --threshold=100 "$DIR/cg.$name.$n" 2>/dev/null |
    awk '/portcullis_server::workers::worker \[/ {gsub(",", "", $1); print $1; exit}')
  if [[ -n $w ]]; then echo "$w"; else awk '/^(summary|totals):/ {print $2; exit}' "$DIR/cg.$name.$n"; fi
}
wait_up "$UP"
row() { # name port command...
  local name=$1 port=$2 a b
  shift 2
  a=$(measure "$name" "$port" "$N" "$@")
  b=$(measure "$name" "$port" $((3 * N)) "$@")
  echo "$name: $(((b - a) / (2 * N))) instructions per request (Ir $a at N=$N, $b at 3N)"
}
NG=$(free_port)
nginx_conf "$DIR/ng.conf" off 1 "
  limit_req_zone \$binary_remote_addr zone=perip:10m rate=1000000r/s;
  upstream app { server 127.0.0.1:$UP; keepalive 64; }
  server {
    listen 127.0.0.1:$NG;
    location / {
      limit_req zone=perip burst=1000000 nodelay;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$remote_addr;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_pass http://app;
    }
  }"
row nginx "$NG" nginx -p "$DIR" -c "$DIR/ng.conf"
i=0
for bin in "${BINS[@]}"; do
  i=$((i + 1))
  PC=$(free_port)
  cat >"$DIR/pc$i.toml" <<EOF
[server]
listen = "127.0.0.1:$PC"
max_connections_per_ip = 4096
[store]
kind = "memory"
[requests]
max_requests = 64
window = "50us"
[upstream]
url = "http://127.0.0.1:$UP"
EOF
  # One worker where the binary knows the key (older builds do not).
  PORTCULLIS_SERVER__WORKERS=1 "$bin" serve --config "$DIR/pc$i.toml" >/dev/null 2>&1 &
  probe=$!
  sleep 1
  if kill -0 "$probe" 2>/dev/null; then
    kill "$probe"
    wait "$probe" || true
    export PORTCULLIS_SERVER__WORKERS=1
  else
    unset PORTCULLIS_SERVER__WORKERS
  fi
  PORTCULLIS_LOG=warn row "$bin" "$PC" "$bin" serve --config "$DIR/pc$i.toml"
done
[[ ${DEMO:-0} == 1 ]] || exit 0
HE=$(free_port)
row hello "$HE" target/dist/hello "127.0.0.1:$HE" 1
i=0
for bin in "${BINS[@]}"; do
  i=$((i + 1))
  PD=$(free_port)
  sed -e "s/^listen = .*/listen = \"127.0.0.1:$PD\"/" -e '/^\[upstream\]/,$d' "$DIR/pc$i.toml" >"$DIR/demo$i.toml"
  PORTCULLIS_LOG=warn row "demo:$bin" "$PD" "$bin" serve --config "$DIR/demo$i.toml"
done
