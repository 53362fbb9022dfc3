#!/usr/bin/env bash
# Haven's demo cluster on one machine: three hosts (network namespaces of the
# test bed, docs/testbed.md), one `haven agent` each with the QEMU driver, a
# fence device for every host (fence_testbed) and a few tiny test guests,
# some in a failover domain. Then pull a plug and watch the guests come back.
#
#   scripts/demo.sh up       install packages, build, start the cluster
#   scripts/demo.sh up --libvirt
#                            the same with a libvirtd of its own on every host
#                            and the agents on the libvirt driver
#   scripts/demo.sh status   hosts, guests, recent events
#   scripts/demo.sh down     stop everything the demo started, remove the bed
#
# Needs root (namespaces, iptables) on Debian 12 with Go installed. See
# docs/demo.md for a guided tour.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
state=/run/haven-demo
haven="$repo/bin/haven"
port=7400

die() { echo "demo.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "the demo builds network namespaces: run it as root (sudo scripts/demo.sh ${1:-up})"

# scripts/testbed.sh builds cmd/testbed here; the libvirt variant's boot
# scripts call it from inside the hosts.
export HAVEN_TESTBED_BIN="$repo/bin/testbed"
testbed() { "$repo/scripts/testbed.sh" "$@"; }

# The environment the haven CLI needs to reach the demo cluster from this
# machine (through the bed's root leg, never the default route).
load_env() {
	[ -f "$state/env" ] || die "no demo is up (run scripts/demo.sh up)"
	# shellcheck disable=SC1091
	. "$state/env"
	export HAVEN_SERVER HAVEN_TOKEN HAVEN_CACERT HAVEN_TESTBED
}

wait_for() { # wait_for SECONDS WHAT COMMAND...
	local n=$(($1 * 10)) what=$2
	shift 2
	until "$@" >/dev/null 2>&1; do
		n=$((n - 1))
		[ "$n" -gt 0 ] || die "timed out waiting for $what"
		sleep 0.1
	done
}

up() {
	local hv=qemu
	case "${1:-}" in
	"") ;;
	--libvirt) hv=libvirt ;;
	*) die "up takes no argument but --libvirt, not '$1'" ;;
	esac
	if [ -f "$state/env" ]; then
		echo "A demo is already up; here it is (scripts/demo.sh down to start over)."
		status
		return
	fi
	echo "==> Packages (scripts/deps.sh)"
	"$repo/scripts/deps.sh"
	echo "==> Building bin/haven"
	(cd "$repo" && GOFLAGS="${GOFLAGS:--mod=mod}" go build -o bin/haven ./cmd/haven)
	echo "==> Test guest (scripts/build-test-guest.sh)"
	"$repo/scripts/build-test-guest.sh"
	guestdir="${HAVEN_TESTGUEST_DIR:-/var/cache/haven/testguest}"

	echo "==> Three hosts as network namespaces (scripts/testbed.sh up 3 --leg)"
	out=$(testbed up 3 --leg)
	echo "$out"
	bed=$(sed -n 's/^test bed \(hvn[0-9]*\) up: dir \([^,]*\), shared \(.*\)$/\1/p' <<<"$out")
	dir=$(sed -n 's/^test bed \(hvn[0-9]*\) up: dir \([^,]*\), shared \(.*\)$/\2/p' <<<"$out")
	shared=$(sed -n 's/^test bed \(hvn[0-9]*\) up: dir \([^,]*\), shared \(.*\)$/\3/p' <<<"$out")
	[ -n "$bed" ] && [ -d "$dir" ] || die "could not read the bed's name from: $out"
	export HAVEN_TESTBED=$bed
	subnet=$(sed -n 's/.*"subnet": *"\([0-9.]*\)\.0\/24".*/\1/p' "$dir/bed.json")
	[ -n "$subnet" ] || die "could not read the bed's subnet from $dir/bed.json"
	mkdir -p "$state"
	echo "HAVEN_TESTBED=$bed" >"$state/env"
	echo "DEMO_HYPERVISOR=$hv" >>"$state/env"

	# Each host gets an agent script; it is also the host's boot script, so
	# `scripts/testbed.sh poweron hN` (or a fence "on") brings the agent back
	# with its data dir. No watchdog device: the demo fences with
	# fence_testbed, and the machine's real watchdog must never be armed.
	# With --libvirt the script first boots the host's own libvirtd.
	for i in 1 2 3; do
		h=h$i
		addr=$subnet.$i
		boot_libvirt=""
		if [ "$hv" = libvirt ]; then
			boot_libvirt="\"$HAVEN_TESTBED_BIN\" libvirt $h --bed $bed >>\"$dir/host/$h/agent.log\" 2>&1 || echo \"libvirt did not start on $h\" >>\"$dir/host/$h/agent.log\""
		fi
		cat >"$dir/host/$h/agent.sh" <<-EOF
			#!/bin/sh
			$boot_libvirt
			exec "$haven" agent --node $h --data-dir "$dir/host/$h/work/haven" \\
			  --listen $addr:$port --peer-listen $addr:$((port + 1)) \\
			  --hypervisor $hv --watchdog-device= --fence-agent-dir "$repo/scripts" "\$@" >>"$dir/host/$h/agent.log" 2>&1
		EOF
		chmod 755 "$dir/host/$h/agent.sh"
		cp "$dir/host/$h/agent.sh" "$dir/host/$h/boot"
	done

	echo "==> Starting the agents"
	testbed start h1 --role agent -- "$dir/host/h1/agent.sh" --init >/dev/null
	wait_for 60 "h1's agent" grep -q 'msg="agent ready"' "$dir/host/h1/agent.log"
	wait_for 10 "h1's join token" grep -q -- '--token hvj\.' "$dir/host/h1/agent.log"
	join=$(grep -o -- '--token hvj\.[^ ]*' "$dir/host/h1/agent.log" | head -1 | cut -d' ' -f2)
	for h in h2 h3; do
		testbed start $h --role agent -- "$dir/host/$h/agent.sh" --join "https://$subnet.1:$port" --token "$join" >/dev/null
		wait_for 60 "$h's agent" grep -q 'msg="agent ready"' "$dir/host/$h/agent.log"
	done
	# Every host's API: the CLI tries the next when one does not answer.
	cat >>"$state/env" <<-EOF
		HAVEN_SERVER=https://$subnet.1:$port,https://$subnet.2:$port,https://$subnet.3:$port
		HAVEN_TOKEN=$(cat "$dir/host/h1/work/haven/admin.token")
		HAVEN_CACERT=$dir/host/h1/work/haven/pki/ca.crt
		DEMO_DIR=$dir
		DEMO_SHARED=$shared
		DEMO_SUBNET=$subnet
	EOF
	load_env

	echo "==> Fencing: one fence_testbed device for the three hosts"
	cat >"$state/fence.json" <<-EOF
		{"devices": [{"name": "bed", "agent": "$repo/scripts/fence_testbed",
		  "params": {"testbed_dir": "$dir"},
		  "plugs": {"h1": "h1", "h2": "h2", "h3": "h3"}}],
		 "levels": {"h1": [{"devices": ["bed"]}], "h2": [{"devices": ["bed"]}], "h3": [{"devices": ["bed"]}]}}
	EOF
	"$haven" fence set "$state/fence.json"

	echo "==> Shared storage: the bed's shared directory, seen by every host"
	"$haven" pool add shared --path "$shared" --shared
	# Every file a guest names must be in a pool: the test guest's kernel too.
	"$haven" pool add testguest --path "$guestdir"

	echo "==> A failover domain and three guests"
	"$haven" domain create web --member h1 --member h2 --member h3 --ordered
	for g in web1 web2 db1; do
		truncate -s 1M "$shared/$g.img"
		dom=""
		[ "$g" = db1 ] || dom="\"domain\": \"web\","
		cat >"$state/$g.json" <<-EOF
			{"name": "$g", "memory": "128MiB", "vcpus": 1, $dom "migratable": true,
			 "disks": [{"path": "$shared/$g.img", "format": "raw", "no_image_lock": true}],
			 "boot": {"kernel": "$guestdir/vmlinux", "initrd": "$guestdir/initrd.gz",
			          "cmdline": "console=ttyS0 panic=-1 quiet"},
			 "serial_log": "$shared/$g.serial"}
		EOF
		"$haven" guest create -f "$state/$g.json" >/dev/null
	done
	echo "==> Waiting for the guests to run"
	wait_for 120 "the guests to run" all_running
	status
	cat <<-EOF

		Haven demo is up (agents on the $hv driver).
		  Web UI and API:  https://$subnet.1:$port/   (also https://$subnet.2:$port/, https://$subnet.3:$port/)
		                   reached through this machine's leg on the bed ($subnet.254); the
		                   certificate is the cluster's own CA: $HAVEN_CACERT
		  Admin token:     $HAVEN_TOKEN
		  CLI:             . $state/env; export HAVEN_SERVER HAVEN_TOKEN HAVEN_CACERT HAVEN_TESTBED
		                   $haven status; $haven guest list; $haven events -f

		web1 and web2 prefer h1 (domain "web": h1, then h2, then h3); db1 goes anywhere.
		Pull the plug on a host and watch its guests come back elsewhere:
		  scripts/testbed.sh poweroff h1
		  scripts/demo.sh status          (again after ~10 s)
		  scripts/testbed.sh poweron h1   (its guests go home by live migration)
		Other faults: scripts/testbed.sh cut h2 | restore h2 | partition "h1/h2,h3" | heal | agentkill h3
		Stop it all:   scripts/demo.sh down
	EOF
}

all_running() {
	local n
	n=$("$haven" guest list -o json | grep -c '"running": true') || true
	[ "$n" -ge 3 ]
}

status() {
	load_env
	testbed status || true
	echo
	# HAVEN_SERVER names every host: the CLI skips one whose plug was pulled.
	timeout 10 "$haven" status || true
	echo
	timeout 10 "$haven" guest list || true
	echo
	echo "Recent events:"
	timeout 10 "$haven" events -n 12 || true
}

down() {
	if [ -f "$state/env" ]; then
		# shellcheck disable=SC1091
		. "$state/env"
		testbed down --bed "$HAVEN_TESTBED" || true
		rm -rf "$state"
		# The test bed's parent dirs, once no other bed uses them.
		rmdir --ignore-fail-on-non-empty /run/haven-testbed /var/tmp/haven-testbed 2>/dev/null || true
		echo "demo down"
	else
		echo "no demo is up"
	fi
}

case "${1:-}" in
up) up "${2:-}" ;;
status) status ;;
down) down ;;
*)
	echo "usage: scripts/demo.sh up [--libvirt] | status | down" >&2
	exit 2
	;;
esac
