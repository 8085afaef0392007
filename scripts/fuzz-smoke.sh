#!/usr/bin/env bash
# Fuzz smoke test: runs every wire-protocol fuzz target for a bounded time.
#
#   scripts/fuzz-smoke.sh [SECONDS]      (default: 15 seconds per target)
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). Works on stable Rust because
# targets are built with `--sanitizer none`. Each target starts from its
# committed seed corpus (fuzz/corpus/<target>, read-only here); new inputs go
# to a scratch directory that is deleted afterwards, so the committed corpus
# is left as it is. Exits non-zero if any target crashes, hangs or leaks
# memory; the reproducer is kept in fuzz/artifacts/<target>/.
set -euo pipefail

seconds="${1:-15}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -eq 0 ]; then
    echo "usage: $0 [SECONDS]  (a positive number of seconds per target)" >&2
    exit 2
fi

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root/fuzz"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is not installed; run: cargo install cargo-fuzz" >&2
    exit 2
fi

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

echo "building fuzz targets"
cargo fuzz build --sanitizer none

mapfile -t targets < <(cargo fuzz list)
failed=()
for target in "${targets[@]}"; do
    mkdir -p "$scratch/$target" "corpus/$target"
    log="$scratch/$target.log"
    printf '%-16s %ss ... ' "$target" "$seconds"
    if cargo fuzz run "$target" --sanitizer none "$scratch/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -max_len=8192 -print_final_stats=1 \
        >"$log" 2>&1; then
        runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
        echo "ok (${runs:-?} runs)"
    else
        echo "FAILED"
        tail -n 40 "$log" >&2
        failed+=("$target")
    fi
done

if [ "${#failed[@]}" -ne 0 ]; then
    echo "fuzz smoke failed: ${failed[*]} (reproducers in fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz smoke passed: ${#targets[@]} targets, ${seconds}s each"
