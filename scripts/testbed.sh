#!/usr/bin/env bash
# Haven's test bed by hand: several hosts on this machine as network
# namespaces, with fault injection. A thin wrapper: it builds cmd/testbed
# (the same Go package the tests use, internal/testbed) and runs it.
#
#   scripts/testbed.sh up [N] [--leg]      build N hosts (default 3)
#   scripts/testbed.sh status              hosts, addresses, power, processes
#   scripts/testbed.sh exec h1 bash        a shell inside host h1
#   scripts/testbed.sh poweroff h2 | poweron h2 | cut h2 | restore h2
#   scripts/testbed.sh partition "h1,h2/h3" | heal
#   scripts/testbed.sh down                tear the bed down
#
# Run scripts/testbed.sh --help for every command; docs/testbed.md for more.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
if [ "$(id -u)" != 0 ]; then
	echo "testbed.sh: the test bed needs root (network namespaces, iptables): run it with sudo" >&2
	exit 1
fi
bin="${HAVEN_TESTBED_BIN:-${TMPDIR:-/tmp}/haven-testbed-bin/testbed}"
mkdir -p "$(dirname "$bin")"
(cd "$repo" && GOFLAGS="${GOFLAGS:--mod=mod}" go build -o "$bin" ./cmd/testbed)
export HAVEN_FENCE_TESTBED="$repo/scripts/fence_testbed"
exec "$bin" "$@"
