#!/usr/bin/env bash
# Builds Haven's tiny test guest from Debian packages only: an uncompressed
# kernel (vmlinux, about twice as fast to boot under TCG as vmlinuz) and a
# busybox initramfs whose /init prints a boot id and a counter on ttyS0 and,
# when the guest has a disk /dev/vda, keeps a record in the disk's first sector.
#
# Usage: scripts/build-test-guest.sh [OUTDIR]
#   OUTDIR defaults to $HAVEN_TESTGUEST_DIR, else /var/cache/haven/testguest.
# Produces OUTDIR/vmlinux, OUTDIR/initrd.gz and OUTDIR/STAMP; does nothing when
# they exist and the stamp matches this script's version. Never commit them.
#
# What the guest does (see docs/guests.md):
#   serial ttyS0:  "HAVEN-READY <bootid>" once, then "HAVEN-COUNT <bootid> <n>"
#                  about every second.
#   /dev/vda:      sector 0 overwritten about every 100 ms with
#                  "HAVEN <bootid> <n>\n" padded to 512 bytes with spaces, synced.
#   n is one sequence shared by both, kept in guest memory, so a live
#   migration continues it and a reboot starts a new boot id.
#   ACPI power button (QMP system_powerdown): syncs and powers off.
#   qemu-guest-agent: runs when the guest has its virtio-serial channel
#                  (org.qemu.guest_agent.0); prints "HAVEN-QGA <bootid>".
#   busybox httpd: serves "HAVEN-OK" on port 80 (loopback and any NIC);
#                  prints "HAVEN-HTTPD <bootid>".
#   a shell on ttyS0 (the serial console: haven guest console, the web UI).
#   haven-fault service|panic|hang (run through the guest agent, guest-exec):
#                  kills httpd / panics the kernel (sysrq c; pvpanic tells
#                  QEMU) / hangs the guest (every process stopped with
#                  SIGSTOP, then the kernel idles in suspend-to-idle).
set -euo pipefail

VERSION=8
OUT="${1:-${HAVEN_TESTGUEST_DIR:-/var/cache/haven/testguest}}"

if [ -f "$OUT/STAMP" ] && [ "$(cat "$OUT/STAMP")" = "$VERSION" ] &&
  [ -s "$OUT/vmlinux" ] && [ -s "$OUT/initrd.gz" ]; then
  echo "test guest already built in $OUT"
  exit 0
fi

for tool in apt-get apt-cache dpkg-deb cpio gzip xz grep; do
  command -v "$tool" >/dev/null || {
    echo "build-test-guest: $tool is missing; run scripts/deps.sh" >&2
    exit 1
  }
done

mkdir -p "$OUT"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/haven-testguest.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"

# The kernel package linux-image-amd64 points at, and static busybox.
KPKG="$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')"
if [ -z "$KPKG" ]; then
  echo "build-test-guest: cannot tell which kernel linux-image-amd64 depends on (apt-get update?)" >&2
  exit 1
fi
# qemu-guest-agent and the libraries it loads.
QGAPKGS="qemu-guest-agent libglib2.0-0 libnuma1 libudev1 liburing2 libc6 libpcre2-8-0 libcap2 libgcc-s1"
# shellcheck disable=SC2086
apt-get download "$KPKG" busybox-static $QGAPKGS >/dev/null 2>&1 || {
  echo "build-test-guest: apt-get download $KPKG busybox-static $QGAPKGS failed" >&2
  exit 1
}
mkdir kernel bb qga
dpkg-deb -x "$(ls "$KPKG"_*.deb)" kernel
dpkg-deb -x "$(ls busybox-static_*.deb)" bb
for p in $QGAPKGS; do
  dpkg-deb -x "$(ls "${p}"_*.deb)" qga
done

VMLINUZ="$(ls kernel/boot/vmlinuz-*)"
KVER="${VMLINUZ##*/vmlinuz-}"
MODDIR="kernel/lib/modules/$KVER/kernel"

# Uncompress vmlinuz: find the XZ stream's magic and decode from there. xz
# complains about the trailer after the stream; the ELF it wrote is complete.
OFFSETS="$(LC_ALL=C grep -obUaP '\xFD7zXZ\x00' "$VMLINUZ" | cut -d: -f1 || true)"
ok=""
for off in $OFFSETS; do
  tail -c +"$((off + 1))" "$VMLINUZ" | xz -dc >vmlinux 2>/dev/null || true
  if [ "$(head -c 4 vmlinux | od -An -c | tr -d ' ')" = '177ELF' ]; then
    ok=1
    break
  fi
done
if [ -z "$ok" ]; then
  echo "build-test-guest: no XZ-compressed ELF found in $VMLINUZ" >&2
  exit 1
fi

# Initramfs.
R=root
mkdir -p $R/bin $R/dev $R/proc $R/sys $R/tmp $R/modules
cp bb/bin/busybox $R/bin/busybox
for m in virtio/virtio_ring virtio/virtio virtio/virtio_pci_legacy_dev \
  virtio/virtio_pci_modern_dev virtio/virtio_pci block/virtio_blk \
  acpi/button input/evdev char/virtio_console misc/pvpanic/pvpanic \
  misc/pvpanic/pvpanic-mmio; do
  cp "$MODDIR/drivers/$m.ko" $R/modules/
done

# qemu-ga with exactly the libraries the loader resolves from the packages
# above (a library found anywhere else is an error: the guest must not
# depend on this machine).
mkdir -p $R/sbin $R/lib/x86_64-linux-gnu $R/lib64 $R/www $R/var/run
cp qga/usr/sbin/qemu-ga $R/sbin/
LIBPATH="$PWD/qga/lib/x86_64-linux-gnu:$PWD/qga/usr/lib/x86_64-linux-gnu"
/lib64/ld-linux-x86-64.so.2 --list --library-path "$LIBPATH" qga/usr/sbin/qemu-ga >qga.libs
while read -r name _ path _; do
  case "$name" in
  linux-vdso.so.*) continue ;;
  /lib64/ld-linux-x86-64.so.2)
    cp -L qga/lib64/ld-linux-x86-64.so.2 $R/lib64/
    continue
    ;;
  esac
  case "$path" in
  "$PWD"/qga/*) cp -L "$path" $R/lib/x86_64-linux-gnu/ ;;
  *)
    echo "build-test-guest: qemu-ga needs $name, not in the downloaded packages ($path)" >&2
    exit 1
    ;;
  esac
done <qga.libs
echo HAVEN-OK >$R/www/index.html

cat >$R/bin/haven-fault <<'FAULT'
#!/bin/busybox sh
# haven-fault service|panic|hang: what the health tests do to the guest.
case "$1" in
service) killall httpd ;;
panic)
  echo 1 >/proc/sys/kernel/sysrq
  echo c >/proc/sysrq-trigger
  ;;
hang)
  # Answer nothing any more: every process but init is stopped (qemu-ga
  # included), then the kernel idles until the host kills the guest.
  (
    sleep 1
    kill -STOP -1
    echo freeze >/sys/power/state
  ) </dev/null >/dev/null 2>&1 &
  ;;
*)
  echo "usage: haven-fault service|panic|hang" >&2
  exit 2
  ;;
esac
FAULT

cat >$R/init <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev \
  virtio_pci virtio_blk button evdev virtio_console pvpanic pvpanic-mmio; do
  insmod /modules/$m.ko 2>/dev/null
done
exec </dev/null >/dev/ttyS0 2>&1

BOOTID=$(cat /proc/sys/kernel/random/uuid)

# A shell on the serial console (haven guest console), again when it exits.
(while :; do
  setsid sh -c 'exec sh </dev/ttyS0 >/dev/ttyS0 2>&1'
  sleep 1
done) &

# The service the health tests watch, and the guest agent when the guest
# has its channel.
ifconfig lo 127.0.0.1 up
httpd -p 80 -h /www && echo "HAVEN-HTTPD $BOOTID"
for p in /sys/class/virtio-ports/*; do
  [ -e "$p/name" ] || continue
  if [ "$(cat "$p/name")" = org.qemu.guest_agent.0 ]; then
    LD_LIBRARY_PATH=/lib/x86_64-linux-gnu /sbin/qemu-ga -d -m virtio-serial \
      -p "/dev/${p##*/}" -t /var/run -f /var/run/qemu-ga.pid &&
      echo "HAVEN-QGA $BOOTID"
  fi
done

# Power off on the ACPI power button: wait for any input event from it.
i=0
while [ $i -lt 30 ]; do
  found=""
  for d in /sys/class/input/event*; do
    [ -e "$d/device/name" ] || continue
    case "$(cat $d/device/name)" in
    *"Power Button"*) found=/dev/input/${d##*/} ;;
    esac
  done
  [ -n "$found" ] && [ -e "$found" ] && break
  i=$((i + 1))
  usleep 100000
done
if [ -n "$found" ]; then
  (
    if dd if="$found" of=/dev/null bs=24 count=1 2>/dev/null; then
      echo "HAVEN-POWEROFF $BOOTID"
      sync
      poweroff -f
    fi
    echo "HAVEN-NOACPI $BOOTID cannot read $found"
  ) &
else
  echo "HAVEN-NOACPI $BOOTID"
fi

echo "HAVEN-READY $BOOTID"
n=0
if [ -b /dev/vda ]; then
  # Shell builtins and busybox no-fork applets only: a fork per tick costs
  # a lot of CPU under TCG. "1<>" opens at offset 0 without truncating.
  pad=$(printf '%460s' '')
  while :; do
    n=$((n + 1))
    rec="HAVEN $BOOTID $n"
    printf '%s\n%s' "$rec" "${pad:0:$((511 - ${#rec}))}" 1<>/dev/vda
    sync
    [ $((n % 10)) -eq 0 ] && echo "HAVEN-COUNT $BOOTID $n"
    usleep 100000
  done
else
  while :; do
    n=$((n + 1))
    echo "HAVEN-COUNT $BOOTID $n"
    sleep 1
  done
fi
EOF
chmod 755 $R/init $R/bin/busybox $R/bin/haven-fault $R/sbin/qemu-ga

(cd $R && find . | cpio -o -H newc --quiet | gzip -9) >initrd.gz

install -m 644 vmlinux "$OUT/vmlinux.tmp"
install -m 644 initrd.gz "$OUT/initrd.gz.tmp"
mv "$OUT/vmlinux.tmp" "$OUT/vmlinux"
mv "$OUT/initrd.gz.tmp" "$OUT/initrd.gz"
echo "$KVER" >"$OUT/KERNEL"
echo "$VERSION" >"$OUT/STAMP"
echo "test guest built in $OUT (kernel $KVER)"
