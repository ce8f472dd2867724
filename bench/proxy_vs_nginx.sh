#!/usr/bin/env bash
# Proxy mode vs nginx `limit_req` only: the `proxy` part of
# bench/request_path.sh (which see). Not in CI. Needs nginx and wrk.
# Usage: bench/proxy_vs_nginx.sh [SECONDS] [ROUNDS] [CONNECTIONS]
SECTIONS=proxy exec "$(dirname "$0")/request_path.sh" "$@"
