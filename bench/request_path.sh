#!/usr/bin/env bash
# The request path, same machine, same run, interleaved rounds, a warm-up
# before every measured run (BENCHMARKS.md, "The request path"):
#   proxy  wrk through `portcullis serve` in proxy mode and through nginx
#          `limit_req`, both in front of the same upstream (an nginx worker
#          answering `200 ok`);
#   demo   portcullis's own demo `GET /` against `hello`, a bare hyper
#          server with one runtime per core (bench/src/bin/hello.rs);
#   fa     forward-auth: nginx `auth_request` -> portcullis `/check` ->
#          upstream, against nginx `limit_req` alone;
#   open   latency at a fixed rate (bench/src/bin/openloop.rs, measured from
#          each request's intended send time) at 50 % (OPEN_FRACTIONS="0.5",
#          e.g. "0.25 0.5") of the median nginx `limit_req` rate of the
#          closed-loop rounds, for nginx, the proxy and forward-auth.
# Both nginx servers in front listen with `reuseport` (one socket per
# worker), as portcullis does.
# Each closed-loop run prints requests/s, p99, and each server's CPU time per
# request (utime + stime of the process and its children from /proc over
# the run, divided by the requests wrk completed). Quotas are high enough
# never to deny (the non-2xx count proves it).
# Not in CI. Needs nginx and wrk (apt-get install nginx wrk).
# Everything is built with the `dist` profile, the shipped server's (fat
# LTO, one codegen unit: Cargo.toml), and read from target/dist/.
# Usage: bench/request_path.sh [SECONDS] [ROUNDS] [CONNECTIONS]
#   SECTIONS="proxy demo fa open" (default: all) picks the parts to run.
#   EXTRA="base=/tmp/portcullis-old ..." adds more portcullis binaries in
#   proxy mode to the proxy rounds (e.g. an older build, to measure a change).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
ROUNDS=${2:-3}
CONNS=${3:-64}
SECTIONS=${SECTIONS:-proxy demo fa open}
WARM=${WARM:-2}
command -v nginx >/dev/null && command -v wrk >/dev/null || {
  echo "needs nginx and wrk" >&2
  exit 1
}
cargo build --profile dist -q -p portcullis-server --bin portcullis \
  -p portcullis-bench --features portcullis-bench/http --bin hello --bin openloop
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# all ports from one call, every socket held open until all are chosen (two
# separate calls can be handed the same port)
free_ports() { python3 -c 'import socket,sys
ss=[socket.socket() for _ in range(int(sys.argv[1]))]
for s in ss: s.bind(("127.0.0.1",0))
print(" ".join(str(s.getsockname()[1]) for s in ss))' "$1"; }
read -r UP NG PC PD HE FA FC <<<"$(free_ports 7)"
DIR=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT
declare -A PID # name -> pid whose CPU is counted

nginx_conf() { # name workers http-block-body
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
  PID[$1]=$!
}

# The upstream.
nginx_conf upstream 1 "server { listen 127.0.0.1:$UP; location / { return 200 \"ok\n\"; } }"
# nginx with limit_req (a rate no run reaches) in front of it.
LIMIT_REQ="
  limit_req_zone \$binary_remote_addr zone=perip:10m rate=1000000r/s;
  upstream app { server 127.0.0.1:$UP; keepalive 64; }"
PROXY_TO_APP="
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$remote_addr;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_pass http://app;"
nginx_conf nginx 2 "$LIMIT_REQ
  server {
    listen 127.0.0.1:$NG reuseport;
    location / {
      limit_req zone=perip burst=1000000 nodelay;$PROXY_TO_APP
    }
  }"
# nginx auth_request -> portcullis /check (keep-alive) -> upstream.
nginx_conf fa 2 "
  upstream app { server 127.0.0.1:$UP; keepalive 64; }
  upstream portcullis { server 127.0.0.1:$FC; keepalive 64; }
  server {
    listen 127.0.0.1:$FA reuseport;
    location / {
      auth_request /_portcullis;$PROXY_TO_APP
    }
    location = /_portcullis {
      internal;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_pass http://portcullis/check;
      proxy_pass_request_body off;
      proxy_set_header Content-Length \"\";
      proxy_set_header X-Real-IP \$remote_addr;
      proxy_set_header X-Original-Method \$request_method;
      proxy_set_header X-Original-URI \$request_uri;
    }
  }"

# portcullis: 64 requests per 50 µs per address (the most one window
# holds), so wrk's single address is never denied.
portcullis() { # name port extra-toml
  cat >"$DIR/$1.toml" <<EOF
[server]
listen = "127.0.0.1:$2"
max_connections_per_ip = 4096
$3
[store]
kind = "memory"
[requests]
max_requests = 64
window = "50us"
$4
EOF
  PORTCULLIS_LOG=warn ${BIN:-target/dist/portcullis} serve --config "$DIR/$1.toml" &
  PIDS+=($!)
  PID[$1]=$!
}
portcullis proxy "$PC" "" "[upstream]
url = \"http://127.0.0.1:$UP\""
portcullis demo "$PD" "" ""
declare -A EXTRA_PORT
for e in ${EXTRA:-}; do
  EXTRA_PORT[${e%%=*}]=$(free_port)
  BIN=${e#*=} portcullis "${e%%=*}" "${EXTRA_PORT[${e%%=*}]}" "" "[upstream]
url = \"http://127.0.0.1:$UP\""
done
portcullis check "$FC" 'trusted_proxies = ["127.0.0.1/32"]
client_ip_header = "X-Real-IP"' ""
target/dist/hello "127.0.0.1:$HE" 2>/dev/null &
PIDS+=($!)
PID[hello]=$!
for p in $UP $NG $PC $PD $HE $FA "${EXTRA_PORT[@]}"; do
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$p/" >/dev/null && break; sleep 0.1; done
done

# CPU ticks (utime + stime) of a process and its children processes.
ticks() {
  local sum=0 p
  for p in "$1" $(pgrep -P "$1" || true); do
    sum=$((sum + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$sum"
}
HZ=$(getconf CLK_TCK)
# servers... : "name=ticks" of each named server, now.
snapshot() {
  local s
  for s in "$@"; do printf '%s=%s ' "$s" "$(ticks "${PID[$s]}")"; done
}
# snapshot : " name=ticks" each server spent since that snapshot.
spent() {
  local kv
  for kv in $1; do printf ' %s=%s' "${kv%%=*}" $(($(ticks "${PID[${kv%%=*}]}") - ${kv#*=})); done
}

# name url server-names... : one warm-up, then a measured wrk run.
run() {
  local name=$1 url=$2 out rps p99 non2xx reqs t0 cpu
  shift 2
  wrk -t2 -c"$CONNS" -d"${WARM}s" "$url" >/dev/null
  t0=$(snapshot "$@")
  out=$(wrk -t2 -c"$CONNS" -d"${SECS}s" --latency "$url")
  cpu=$(spent "$t0")
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
  p99=$(python3 -c "import sys; v=sys.argv[1]; u={'us':1e-3,'ms':1,'s':1e3}; n=v.rstrip('usm'); print(float(n)*u[v[len(n):]])" "$p99")
  echo "$name $rps $p99 ${non2xx:-0} $reqs$cpu" | tee -a "$DIR/results"
}

# name url rate server-names... : an open-loop run (its own warm-up
# seconds included), with each server's CPU ticks over the whole run.
open_run() {
  local name=$1 url=$2 rate=$3 out t0 cpu
  shift 3
  t0=$(snapshot "$@")
  out=$(target/dist/openloop "$url" "$rate" $((SECS + WARM)) "$CONNS" 2 "$WARM")
  cpu=$(spent "$t0")
  echo "open-$name $out$cpu" | tee -a "$DIR/open"
}

echo "# $(nproc) cores, load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# wrk -t2 -c$CONNS -d${SECS}s (after a ${WARM}s warm-up), $ROUNDS interleaved rounds (proxy part: order rotated each round)"
echo "# columns: name rps p99_ms non2xx requests cpu_ticks_per_process (HZ=$HZ)"
for r in $(seq "$ROUNDS"); do
  for sec in $SECTIONS; do
    case $sec in
      proxy)
        # Each round starts one server later (nginx first, then the
        # proxy first, ...): no server always runs right after the same
        # one, so a drift of the VM's speed within a round favours none.
        order=("nginx $NG" "proxy $PC")
        for e in ${EXTRA:-}; do order+=("${e%%=*} ${EXTRA_PORT[${e%%=*}]}"); done
        for i in $(seq 0 $((${#order[@]} - 1))); do
          read -r n port <<<"${order[$(((i + r - 1) % ${#order[@]}))]}"
          run "$n" "http://127.0.0.1:$port/" "$n" upstream
        done
        ;;
      demo)
        run hello "http://127.0.0.1:$HE/" hello
        run demo "http://127.0.0.1:$PD/" demo
        ;;
      fa)
        [[ " $SECTIONS " == *" proxy "* ]] || run nginx "http://127.0.0.1:$NG/" nginx upstream
        run fa "http://127.0.0.1:$FA/" fa check upstream
        ;;
    esac
  done
done
python3 - "$DIR/results" "$HZ" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
hz = float(sys.argv[2])
names = list(dict.fromkeys(r[0] for r in rows))
med = lambda n, i: statistics.median(float(r[i]) for r in rows if r[0] == n)
def cpu(n):
    # median CPU µs per request of each counted process
    per = {}
    for r in rows:
        if r[0] != n:
            continue
        for kv in r[5:]:
            k, v = kv.split("=")
            per.setdefault(k, []).append(float(v) / hz * 1e6 / float(r[4]))
    return {k: statistics.median(v) for k, v in per.items()}
for n in names:
    c = ", ".join(f"{k} {v:.1f} µs" for k, v in cpu(n).items())
    print(f"median {n}: {med(n, 1):.0f} rps, p99 {med(n, 2):.2f} ms, non-2xx {sum(int(r[3]) for r in rows if r[0] == n)}; CPU/request: {c}")
def ratio(a, b, what):
    if a in names and b in names:
        print(f"ratio {a}/{b}: rps {med(a, 1) / med(b, 1):.2f}x, p99 {med(a, 2) / med(b, 2):.2f}x ({what})")
ratio("proxy", "nginx", "proxy mode vs nginx limit_req")
ratio("demo", "hello", "demo GET / vs bare hyper")
ratio("fa", "nginx", "nginx auth_request + portcullis vs nginx limit_req")
for n in names:
    if n not in ("nginx", "proxy", "hello", "demo", "fa"):
        ratio(n, "nginx", f"{n} in proxy mode vs nginx limit_req")
if "nginx" in names:
    open(sys.argv[1] + ".nginx", "w").write(f"{med('nginx', 1):.0f}")
EOF
if [[ " $SECTIONS " == *" open "* && -f "$DIR/results.nginx" ]]; then
  echo "# open loop, $CONNS connections, ${SECS}s after ${WARM}s warm-up"
  echo "# columns: name target_rps done_rps sent ok non2xx errors p50_us p99_us p999_us max_us cpu_ticks_per_process (HZ=$HZ)"
  for f in ${OPEN_FRACTIONS:-0.5}; do
    RATE=$(python3 -c "print(int($(cat "$DIR/results.nginx") * $f))")
    for r in $(seq "$ROUNDS"); do
      open_run "nginx@$f" "http://127.0.0.1:$NG/" "$RATE" nginx upstream
      open_run "proxy@$f" "http://127.0.0.1:$PC/" "$RATE" proxy upstream
      if [[ " $SECTIONS " == *" fa "* ]]; then open_run "fa@$f" "http://127.0.0.1:$FA/" "$RATE" fa check upstream; fi
    done
  done
  python3 - "$DIR/open" "$HZ" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
hz = float(sys.argv[2])
for n in dict.fromkeys(r[0] for r in rows):
    m = lambda i: statistics.median(float(r[i]) for r in rows if r[0] == n)
    # CPU µs per request of each counted process (ticks over the whole
    # run, warm-up included, over every request sent)
    per = {}
    for r in rows:
        if r[0] == n:
            for kv in r[11:]:
                k, v = kv.split("=")
                per.setdefault(k, []).append(float(v) / hz * 1e6 / float(r[3]))
    c = ", ".join(f"{k} {statistics.median(v):.1f} µs" for k, v in per.items())
    print(f"median {n}: p50 {m(7):.0f} µs, p99 {m(8):.0f} µs, p99.9 {m(9):.0f} µs (done {m(2):.0f} rps, errors+non-2xx {sum(int(r[5]) + int(r[6]) for r in rows if r[0] == n)}); CPU/request: {c}")
# each server's percentiles over nginx's of the same round and rate
for n in dict.fromkeys(r[0] for r in rows):
    kind, at = n.split("@")
    if kind == "open-nginx":
        continue
    base = [r for r in rows if r[0] == "open-nginx@" + at]
    mine = [r for r in rows if r[0] == n]
    if not base or len(base) != len(mine):
        continue
    ratio = lambda i: statistics.median(float(b[i]) / float(a[i]) for a, b in zip(base, mine) if float(a[i]) > 0)
    print(f"paired {n} / open-nginx@{at}, median of the rounds: p50 {ratio(7):.2f}x, p99 {ratio(8):.2f}x, p99.9 {ratio(9):.2f}x")
EOF
fi
