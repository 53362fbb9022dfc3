#!/usr/bin/env bash
# Installs everything Haven's tests, test bed and demo need on a fresh
# Debian machine, after saying what and why. Idempotent: packages already
# present are left alone. Installing a package with a system service
# (libvirtd, etcd) would enable and start it; Haven needs neither running
# (the agents embed etcd; the libvirt demo starts a libvirtd per test-bed
# host), so the services this script's installs enabled are disabled again.
set -euo pipefail
declare -A why=(
  [qemu-system-x86]="runs the guests"
  [qemu-utils]="qemu-img, disk images"
  [busybox-static]="the tiny test guest's userland"
  [cpio]="packs the test guest's initrd"
  [xz-utils]="unpacks the test guest's kernel"
  [libvirt-daemon-system]="the libvirt driver and its tests (service left disabled)"
  [libvirt-clients]="virsh, for the libvirt tests"
  [etcd-server]="tests against an external etcd (service left disabled)"
  [etcd-client]="etcdctl, for those tests"
  [fence-agents]="fence_* agents (fence_dummy, fence_ipmilan...)"
  [systemd-container]="systemd-nspawn, for the package install tests"
  [chromium]="headless browser of the web UI tests (with its GTK libraries)"
  [chromium-driver]="drives it"
  [iproute2]="test bed: network namespaces"
  [iptables]="test bed: network faults"
  [procps]="ps, pkill for the test bed"
  [psmisc]="fuser for the test bed"
  [util-linux]="nsenter, unshare for the test bed"
  [ca-certificates]="HTTPS to the Go module proxy"
  [curl]="downloads"
)
pkgs=(
  qemu-system-x86 qemu-utils busybox-static cpio xz-utils
  libvirt-daemon-system libvirt-clients
  etcd-server etcd-client
  fence-agents
  systemd-container
  chromium chromium-driver
  iproute2 iptables procps psmisc util-linux
  ca-certificates curl
)
units=(libvirtd.service libvirtd.socket virtqemud.service virtqemud.socket etcd.service)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps.sh: installing ${#missing[@]} Debian packages (with their dependencies):"
  for p in "${missing[@]}"; do printf '  %-22s %s\n' "$p" "${why[$p]}"; done
  # Which services are enabled before, to disable only those this install enables.
  systemd=false
  [ -d /run/systemd/system ] && systemd=true
  declare -A before=()
  if $systemd; then
    for u in "${units[@]}"; do
      before[$u]=$(systemctl is-enabled "$u" 2>/dev/null || true)
    done
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
  if $systemd; then
    for u in "${units[@]}"; do
      now=$(systemctl is-enabled "$u" 2>/dev/null || true)
      if [ "$now" = enabled ] && [ "${before[$u]}" != enabled ]; then
        echo "deps.sh: $u was enabled by its package; Haven does not need it: disabling and stopping it"
        $SUDO systemctl disable --now "$u" >/dev/null 2>&1 || true
      fi
    done
  fi
fi
# The qemu driver runs guests as this unprivileged user (qemu -runas).
if ! id -u haven-qemu >/dev/null 2>&1; then
  echo "deps.sh: adding the system user haven-qemu (the qemu driver runs guests as it)"
  grp=(--user-group); getent group kvm >/dev/null && grp=(--gid kvm)
  $SUDO useradd --system --no-create-home --shell /usr/sbin/nologin "${grp[@]}" haven-qemu
fi
cd "$(dirname "$0")/.."
go mod download
