#!/usr/bin/env bash
# The whole switchyard test suite: formatting, lints, unit/property/integration tests
# (network-namespace tests need root: they skip with a reason when not root, and fail
# instead when CI=true), the example configurations, a bounded fuzz smoke run of every
# protocol decoder, and a check that nothing the tests created is left behind.
#
# Usage: bash scripts/test.sh            (FUZZ_SECONDS=N to change the fuzz time per target)
set -uo pipefail
cd "$(dirname "$0")/.."

log=$(mktemp)
trap 'rm -f "$log"' EXIT
failures=()
step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all --check || failures+=("fmt")

step "cargo clippy (all targets, warnings denied)"
cargo clippy --workspace --all-targets --locked -- -D warnings || failures+=("clippy")

step "cargo test"
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$log"
[ "${PIPESTATUS[0]}" -eq 0 ] || failures+=("cargo test")

step "check-config on every example"
if cargo run --quiet --locked -p switchyard -- check-config examples/*.toml; then :; else failures+=("examples"); fi

step "fuzz smoke (${FUZZ_SECONDS:-10}s per target)"
if cargo fuzz --version >/dev/null 2>&1; then
  bash scripts/fuzz-smoke.sh "${FUZZ_SECONDS:-10}" || failures+=("fuzz")
elif [ "${CI:-}" = "true" ]; then
  echo "cargo-fuzz is not installed"; failures+=("fuzz (cargo-fuzz missing)")
else
  echo "SKIPPED fuzz smoke: cargo-fuzz is not installed (cargo install cargo-fuzz)"
fi

step "leftovers (namespaces, processes)"
bash scripts/check-leftovers.sh || failures+=("leftovers")

passed=$(awk '/^test result:/ { for (i = 1; i <= NF; i++) if ($(i+1) ~ /^passed/) s += $i } END { print s + 0 }' "$log")
failed=$(awk '/^test result:/ { for (i = 1; i <= NF; i++) if ($(i+1) ~ /^failed/) s += $i } END { print s + 0 }' "$log")
skipped=$(grep -c '^SKIPPED' "$log" || true)
echo
if [ ${#failures[@]} -gt 0 ]; then
  echo "FAILED steps: ${failures[*]}"
  echo "summary: $passed passed, $((failed > 0 ? failed : ${#failures[@]})) failed, $skipped skipped"
  exit 1
fi
echo "summary: $passed passed, $failed failed, $skipped skipped"
