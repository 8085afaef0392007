#!/usr/bin/env bash
# Request-routing benchmark (issue 6; results and how to read them: docs/BENCHMARKS.md):
# one namespace topology (client → router → LB unit namespace → 3 hosts with nginx serving
# 1 KiB and 64 KiB files, plain and TLS) measured for each configuration in turn: direct
# to the hosts (the limit), switchyard's request router (`switchyard lb` with the router
# role: http on the VIP, https with an ECDSA P-256 certificate made at run time), HAProxy
# `mode http` and nginx `proxy_pass` with keep-alive upstreams; keep-alive requests/s
# (1 KiB, 64 KiB), new connections/s, TLS handshakes/s, p50/p99 latency, CPU per request,
# memory per idle client connection; medians of repeats.
#
# Usage: sudo bench/router.sh [--quick]     (--quick: 2 s windows, one repeat, ~2 minutes;
#                                            full: 10 s windows, 3 repeats, ~10 minutes)
# Extra arguments after --quick are passed to router-bench (see `router-bench --help`),
# e.g. --configs direct,switchyard --metrics keep-alive-1k,tls --seconds 5.
# Needs root, nginx, wrk, haproxy, openssl. Everything shares the machine's cores with
# whatever else runs: keep it otherwise idle (the report prints the load average before
# and after).
set -euo pipefail
cd "$(dirname "$0")/.."

quick=()
if [ "${1:-}" = "--quick" ]; then
  shift
  quick=(--quick)
fi

echo "# bench/router.sh ${quick[*]} — $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), kernel $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"

if [ "$(id -u)" -ne 0 ]; then
  echo
  echo "SKIPPED: the benchmark needs root for network namespaces (sudo $0 ${quick[*]})"
  exit 0
fi
for tool in nginx wrk haproxy openssl; do
  command -v "$tool" >/dev/null || { echo "missing: $tool (apt-get install nginx-light wrk haproxy openssl)"; exit 1; }
done

target="${CARGO_TARGET_DIR:-target}"
cargo build --quiet --release --locked -p switchyard -p switchyard-bench

echo
echo "## Request routing: rates, latency, CPU per request, memory per idle connection"
"$target/release/router-bench" --switchyard "$target/release/switchyard" "${quick[@]}" "$@"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
