#!/usr/bin/env bash
# Instructions per check_request under callgrind: each mode runs with N and
# 2N calls; collection is limited to the measured loop (--toggle-collect),
# and (Ir(2N) - Ir(N)) / N is the cost of one call, loop entry cancelled.
# Usage: bench/icount.sh [N]   (default 10000; at most 20000 for cold modes)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000}
cargo build --release -q -p portcullis-bench --features governor --bin icount
BIN=target/release/icount
ir() { # total instructions of one run
    valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        --toggle-collect='*icount::measured*' "$BIN" "$1" "$2" 2>&1 \
        | sed -n 's/.*Collected : *\([0-9]*\).*/\1/p'
}
printf '%-16s %14s %14s %12s\n' mode "Ir(N=$N)" "Ir(2N)" "Ir/call"
for mode in core-hot core-hot-allow core-cold core-evict host-hot host-cold governor-hot governor-cold; do
    a=$(ir "$mode" "$N"); b=$(ir "$mode" $((2 * N)))
    printf '%-16s %14s %14s %12.1f\n' "$mode" "$a" "$b" "$(echo "($b - $a) / $N" | bc -l)"
done
