#!/usr/bin/env bash
# Installs everything Haven's tests and test bed need on a fresh Debian machine.
# Idempotent: packages already present are left alone.
set -euo pipefail
pkgs=(
  qemu-system-x86 qemu-utils busybox-static cpio xz-utils
  libvirt-daemon-system libvirt-clients
  etcd-server etcd-client
  fence-agents
  chromium chromium-driver
  iproute2 iptables procps psmisc util-linux
  ca-certificates curl
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# The qemu driver runs guests as this unprivileged user (qemu -runas).
if ! id -u haven-qemu >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  grp=(--user-group); getent group kvm >/dev/null && grp=(--gid kvm)
  $SUDO useradd --system --no-create-home --shell /usr/sbin/nologin "${grp[@]}" haven-qemu
fi
cd "$(dirname "$0")/.."
go mod download
