#!/usr/bin/env bash
# Lists what switchyard-testbed left behind: network namespaces named with the testbed prefix
# (sy-<pid hex>-<counter>-<role>, in /run/netns) and processes whose environment carries the
# SWITCHYARD_TESTBED marker. Prints them and exits 1 if any remain; else prints "no leftovers".
# Only reports: it removes and kills nothing (cleanup: `ip netns del NAME`, `kill PID`).
#
# Usage: bash scripts/check-leftovers.sh
set -u

found=0
name_re='^sy-[0-9a-f]+-[0-9]+-'

if [ -d /run/netns ]; then
  for path in /run/netns/*; do
    [ -e "$path" ] || continue
    name=${path##*/}
    if [[ $name =~ $name_re ]]; then
      echo "leftover namespace: $name"
      found=1
    fi
  done
fi

for environ in /proc/[0-9]*/environ; do
  pid=${environ#/proc/}
  pid=${pid%/environ}
  [ "$pid" = "$$" ] && continue
  marker=$(tr '\0' '\n' 2>/dev/null <"$environ" | grep -m1 '^SWITCHYARD_TESTBED=') || continue
  cmdline=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline")
  echo "leftover process: pid $pid ($marker): ${cmdline:-?}"
  found=1
done

if [ "$found" -eq 0 ]; then
  echo "no leftovers"
  exit 0
fi
exit 1
