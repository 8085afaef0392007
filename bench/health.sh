#!/usr/bin/env bash
# Health and load benchmarks (issue 3; results and how to read them: docs/BENCHMARKS.md):
#
#   1. allotment cost: criterion micro-benchmark of TokenAllotment::draw,
#      PercentageAllotment::draw and ConsolidatedCache::allot (no root needed);
#   2. propagation latency of a health change from the agent to every LB unit, through the
#      local API and through a TCP check: 2 `switchyard lb` units and 3 hosts running
#      `switchyard agent`, release build, in a namespace topology (root needed);
#   3. control bandwidth of one host with 100 rows to 2 units in steady state.
#
# Usage: sudo bench/health.sh [--quick]     (--quick: small counts, about a minute)
# Extra arguments after --quick are passed to health-bench (see `health-bench --help`).
# Everything shares the machine's cores with whatever else runs: keep it otherwise idle.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=()
criterion=()
if [ "${1:-}" = "--quick" ]; then
  shift
  quick=(--quick)
  criterion=(--warm-up-time 0.2 --measurement-time 0.5)
fi

echo "# bench/health.sh ${quick[*]} — $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), kernel $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"

echo
echo "## Allotment cost (criterion, ns per call)"
cargo bench --quiet --locked -p switchyard-health --bench allotment -- "${criterion[@]}" 2>&1 |
  grep -E '^[a-z_]+/[0-9]+ +time:|^[a-z_]+/[0-9]+$|^ +time:' || true

if [ "$(id -u)" -ne 0 ]; then
  echo
  echo "SKIPPED propagation and bandwidth: they need root for network namespaces (sudo $0 ${quick[*]})"
  exit 0
fi

echo
echo "## Propagation latency and control bandwidth (real processes, namespaces)"
cargo build --quiet --release --locked -p switchyard -p switchyard-bench
target/release/health-bench --switchyard target/release/switchyard "${quick[@]}" "$@"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
