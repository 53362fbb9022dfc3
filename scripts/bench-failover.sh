#!/usr/bin/env bash
# Measures Haven's failover with default timings on a 3-host test bed with a
# real QEMU test guest and fence_testbed: pull the plug on the guest's host,
# time detection, fencing, the start order and the guest running again
# elsewhere; the host then comes back and the guest goes home. Prints each
# round and the median and worst, per driver (agents on the QEMU driver, then
# on libvirt with a libvirtd per host). Needs root (network namespaces).
#
#   sudo scripts/bench-failover.sh [ROUNDS] [DRIVERS]   (default 5, qemu,libvirt)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
rounds=${1:-5}
drivers=${2:-qemu,libvirt}
[ "$(id -u)" = 0 ] || { echo "bench-failover.sh: needs root (the test bed): run it with sudo" >&2; exit 1; }
cd "$repo"
exec go test ./test/failover/ -run '^$' -bench '^BenchmarkHostPowerLoss$' -benchtime "${rounds}x" -timeout 60m -v -failover.hypervisors "$drivers"
