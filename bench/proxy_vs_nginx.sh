#!/usr/bin/env bash
# Proxy mode: wrk through `portcullis serve` ([upstream], memory store) and
# through nginx with `limit_req`, both proxying the same upstream (a third
# nginx answering `200 ok`), quotas high enough never to deny, interleaved
# runs. Prints requests/s and p99 latency per run and the medians' ratios.
# Not in CI. Needs nginx and wrk (apt-get install nginx wrk).
# Usage: bench/proxy_vs_nginx.sh [SECONDS] [ROUNDS] [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
ROUNDS=${2:-3}
CONNS=${3:-64}
command -v nginx >/dev/null && command -v wrk >/dev/null || {
  echo "needs nginx and wrk" >&2
  exit 1
}
cargo build --release -q -p portcullis-server --bin portcullis
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP=$(free_port) NG=$(free_port) PC=$(free_port)
DIR=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT

nginx_conf() { # name workers server-block
  mkdir -p "$DIR/$1"
  cat >"$DIR/$1/nginx.conf" <<EOF
daemon off;
user root;
worker_processes $2;
pid $DIR/$1/nginx.pid;
error_log $DIR/$1/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $DIR/$1/body;
  proxy_temp_path $DIR/$1/proxy;
  fastcgi_temp_path $DIR/$1/fastcgi;
  uwsgi_temp_path $DIR/$1/uwsgi;
  scgi_temp_path $DIR/$1/scgi;
  $3
}
EOF
  nginx -p "$DIR/$1" -c "$DIR/$1/nginx.conf" &
  PIDS+=($!)
}

# The upstream.
nginx_conf upstream 1 "server { listen 127.0.0.1:$UP; location / { return 200 \"ok\n\"; } }"
# nginx with limit_req (a rate no run reaches) in front of it.
nginx_conf limiter 2 "
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
# portcullis in proxy mode: 64 requests per 50 µs per address (the most
# one window holds), so wrk's single address is never denied.
cat >"$DIR/portcullis.toml" <<EOF
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
PORTCULLIS_LOG=warn target/release/portcullis serve --config "$DIR/portcullis.toml" &
PIDS+=($!)
for p in $UP $NG $PC; do
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$p/" >/dev/null && break; sleep 0.1; done
done

run() { # name url
  local out rps p99 non2xx
  out=$(wrk -t2 -c"$CONNS" -d"${SECS}s" --latency "$2")
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
  # p99 in ms.
  p99=$(python3 -c "import sys; v=sys.argv[1]; u={'us':1e-3,'ms':1,'s':1e3}; n=v.rstrip('usm'); print(float(n)*u[v[len(n):]])" "$p99")
  echo "$1 $rps $p99 ${non2xx:-0}" | tee -a "$DIR/results"
}
echo "# $(nproc) cores, wrk -t2 -c$CONNS -d${SECS}s, $ROUNDS interleaved rounds; columns: name rps p99_ms non2xx"
for r in $(seq "$ROUNDS"); do
  run nginx "http://127.0.0.1:$NG/"
  run portcullis "http://127.0.0.1:$PC/"
done
python3 - "$DIR/results" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
med = lambda n, i: statistics.median(float(r[i]) for r in rows if r[0] == n)
for n in ("nginx", "portcullis"):
    print(f"median {n}: {med(n, 1):.0f} rps, p99 {med(n, 2):.2f} ms, non-2xx {sum(int(r[3]) for r in rows if r[0] == n)}")
print(f"ratio portcullis/nginx: rps {med('portcullis', 1) / med('nginx', 1):.2f}x, p99 {med('portcullis', 2) / med('nginx', 2):.2f}x")
EOF
