#!/usr/bin/env bash
# Measures Haven's real control plane at scale (test/controlplane): a real
# etcd, the manager in a process of its own, N simulated hosts running the
# real host side over an in-memory hypervisor. Prints, per size, the time
# from a lost host's fence result to all its guests ordered and to all of
# them reported running, the standby manager's takeover after a SIGKILL of
# the manager, the store size and the processes' RSS. Needs etcd for the
# 1,000-host size (scripts/deps.sh installs it). No root needed.
# Where a figure falls short, -cp.profile DIR (after the sizes, passed on to
# the test) writes CPU profiles of the manager and the hosts over the host
# loss and of each manager's takeover, and prints every process's CPU time
# and the etcd members' requests over the loss.
#
#   scripts/bench-controlplane.sh [SIZES [TEST FLAGS]]     (default: 64x8000,1000x50000)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
sizes=${1:-64x8000,1000x50000}
[ $# -gt 0 ] && shift
cd "$repo"
for size in ${sizes//,/ }; do
	hosts=${size%x*} guests=${size#*x}
	args=(-cp.hosts "$hosts" -cp.guests "$guests")
	case $size in
	64x8000) args+=(-cp.targets 1s,3s,3s) ;;
	# Longer leases, as docs/operations.md advises at this size; the
	# manager's election lease as an agent started with --lease-ttl 32s.
	1000x50000) args+=(-cp.external -cp.shm -cp.keepalive 4s -cp.lease-ttl 32s -cp.manager-ttl 32s
		-cp.etcd-heartbeat 300ms -cp.targets 5s,5s) ;;
	esac
	# nice -10, as the agents run (raising priority needs root; plain
	# priority otherwise).
	nice=(); [ "$(id -u)" = 0 ] && nice=(nice -n -10)
	"${nice[@]}" go test ./test/controlplane/ -count=1 -run '^TestControlPlane$' -timeout 60m -v "${args[@]}" "$@" | grep -v '^=== RUN'
done
