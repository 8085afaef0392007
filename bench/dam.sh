#!/usr/bin/env bash
# DAM benchmark (issue 5; results and how to read them: docs/BENCHMARKS.md, "Session
# tracking (DAM)"): three `Dam` machines (replication level 1, default settings) on an
# in-process network that seals and opens every message as a switchyard_wire frame, driven
# in real time on one thread. Add and query throughput and latency with 1,000,000 atoms,
# memory per atom, and the time to restore the replication level after a unit dies.
#
# It measures the machines and the codec, not a real network (no sockets, no processes).
# Needs no root. Takes about a minute with a warm build (and about 1.1 GB of memory).
#
# Usage: bench/dam.sh [--quick]      (--quick: 20,000 atoms, a few seconds)
# Extra arguments are passed to dam-bench (see `dam-bench --help`: --atoms, --batch,
# --latency-samples, --queries, --phase-limit, --pace-pushes, --pace-scan).
# Everything shares the machine's cores with whatever else runs: keep it otherwise idle.
set -euo pipefail
cd "$(dirname "$0")/.."

target="${CARGO_TARGET_DIR:-target}"
echo "# bench/dam.sh $* — $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), kernel $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo
cargo build --quiet --release --locked -p switchyard-bench --bin dam-bench
timeout 900 "$target/release/dam-bench" "$@"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
