#!/usr/bin/env bash
# Packet load-balancing benchmarks (issue 4; results and how to read them: docs/BENCHMARKS.md):
#
#   1. fast path: the forwarder's XDP program per packet against a bare XDP_TX program, both
#      through BPF_PROG_TEST_RUN in the same run (crates/forwarder/tests/microbench.rs);
#   2. one namespace topology (client → router → LB unit → 3 hosts with nginx, iperf3 on
#      host0) measured for each configuration in turn: direct to the hosts (the limit),
#      switchyard lb all-in-one at tc, xdp+tc and xdp, nftables DNAT, HAProxy TCP mode;
#      keep-alive requests/s (1 KiB, 64 KiB), new connections/s, one-stream bulk (iperf3),
#      p50/p99 latency, CPU per request, memory per tracked flow; medians of repeats.
#
# Usage: sudo bench/packet.sh [--quick]     (--quick: 2 s windows, one repeat, ~2 minutes;
#                                            full: 10 s windows, 3 repeats, ~15 minutes)
# Extra arguments after --quick are passed to packet-bench (see `packet-bench --help`),
# e.g. --configs direct,tc,nftables or --seconds 5 --repeats 5.
# Needs root, nginx, wrk, iperf3, haproxy, nftables, ethtool. Everything shares the
# machine's cores with whatever else runs: keep it otherwise idle (the report prints the
# load average before and after).
set -euo pipefail
cd "$(dirname "$0")/.."

quick=()
if [ "${1:-}" = "--quick" ]; then
  shift
  quick=(--quick)
fi

echo "# bench/packet.sh ${quick[*]} — $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), kernel $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"

if [ "$(id -u)" -ne 0 ]; then
  echo
  echo "SKIPPED: the benchmark needs root for BPF and network namespaces (sudo $0 ${quick[*]})"
  exit 0
fi
for tool in nginx wrk iperf3 haproxy nft ethtool; do
  command -v "$tool" >/dev/null || { echo "missing: $tool (apt-get install nginx-light wrk iperf3 haproxy nftables ethtool)"; exit 1; }
done

cargo build --quiet --release --locked -p switchyard -p switchyard-bench

echo
echo "## Fast path: forwarder XDP program vs bare XDP_TX (BPF_PROG_TEST_RUN, ns per packet)"
cargo test --quiet --release --locked -p switchyard-forwarder --test microbench -- --ignored --nocapture 2>&1 |
  grep -E 'ns/packet|routes installed|hit runs' || echo "(microbench failed; run it alone to see why)"

echo
echo "## Request rates, bulk, latency, CPU and memory per flow (real processes, namespaces)"
target/release/packet-bench --switchyard target/release/switchyard "${quick[@]}" "$@"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
