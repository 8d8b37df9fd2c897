#!/bin/bash
# Makes the appliance's base disk image offline, from a Debian package mirror,
# with debootstrap: a bootable qcow2 disk (MBR, one ext4 partition, EXTLINUX)
# holding Debian 12 minbase, the packages in base-packages.txt, DHCP on every
# wired interface, and root SSH logins with a build-only key, which the
# packer build uses and removes (appliance/finalize.sh).
#
#   sudo packer/make-base-image.sh            # prints the image's path
#
# The image is cached under $GATEHOUSE_APPLIANCE_CACHE (default
# /var/cache/gatehouse-appliance) as base-<key>.qcow2, where <key> hashes this
# script, the package list, the suite and the mirrors: changing any of them
# makes a new image, and so does age (GATEHOUSE_BASE_MAX_AGE_DAYS, default 30,
# so that the security updates in it stay recent); GATEHOUSE_REBUILD_BASE=1
# forces one. The build key lies
# beside it as base-<key>.id_ed25519. Nothing of gatehouse is in the base
# image; the packer build provisions it every time.
#
# Environment:
#   DEBIAN_MIRROR           default: the first Debian URI in /etc/apt/sources.list*,
#                           else http://deb.debian.org/debian
#   DEBIAN_SECURITY_MIRROR  default: likewise for debian-security
#   DEBIAN_SUITE            default: bookworm
#   BASE_DISK_SIZE          default: 3G (packer can grow it; first boot grows
#                           the root file system to the disk)
#
# Needs root, debootstrap, fdisk (sfdisk), e2fsprogs, extlinux, qemu-utils and
# loop devices.
set -euo pipefail
umask 022

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PACKAGES_FILE=$HERE/base-packages.txt
CACHE=${GATEHOUSE_APPLIANCE_CACHE:-/var/cache/gatehouse-appliance}
SUITE=${DEBIAN_SUITE:-bookworm}
SIZE=${BASE_DISK_SIZE:-3G}

log() { printf '[base-image] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (debootstrap, loop devices, mount)"
for tool in debootstrap sfdisk mkfs.ext4 extlinux qemu-img losetup ssh-keygen flock; do
    command -v "$tool" >/dev/null || die "$tool is missing (apt-get install debootstrap fdisk e2fsprogs extlinux qemu-utils openssh-client util-linux)"
done
MBR_BIN=/usr/lib/EXTLINUX/mbr.bin
[ -f "$MBR_BIN" ] || die "$MBR_BIN is missing (apt-get install extlinux)"

# The mirrors this machine's apt uses (deb822 and one-line formats).
host_mirror() { # $1: debian | debian-security
    local want=$1 uri
    for uri in $(sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/*.sources 2>/dev/null) \
               $(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; break } }' \
                   /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null); do
        uri=${uri%/}
        case "$want:$uri" in
            debian-security:*debian-security*) echo "$uri"; return ;;
            debian:*debian-security*) ;;
            debian:*/debian) echo "$uri"; return ;;
        esac
    done
    echo "http://deb.debian.org/$want"
}
MIRROR=${DEBIAN_MIRROR:-$(host_mirror debian)}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-$(host_mirror debian-security)}
PACKAGES=$(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$PACKAGES_FILE" | tr -s ' \n' ',' | sed 's/,$//')

KEY=$( { cat "${BASH_SOURCE[0]}" "$PACKAGES_FILE"; echo "$SUITE $MIRROR $SECURITY_MIRROR $SIZE"; } | sha256sum | cut -c1-16)
IMAGE=$CACHE/base-$KEY.qcow2
BUILD_KEY=$CACHE/base-$KEY.id_ed25519

mkdir -p "$CACHE"
chmod 0700 "$CACHE"
exec 9>"$CACHE/.lock"
flock -w 1800 9 || die "another base image build holds $CACHE/.lock"

MAX_AGE=${GATEHOUSE_BASE_MAX_AGE_DAYS:-30}
if [ -s "$IMAGE" ] && [ -s "$BUILD_KEY" ] && [ "${GATEHOUSE_REBUILD_BASE:-0}" != 1 ]; then
    if [ -n "$(find "$IMAGE" -mtime "+$MAX_AGE")" ]; then
        log "cached image $IMAGE is older than $MAX_AGE days: rebuilding"
    elif qemu-img check -q "$IMAGE" 2>/dev/null; then
        log "cached: $IMAGE"
        echo "$IMAGE"
        exit 0
    fi
    log "cached image $IMAGE fails qemu-img check: rebuilding"
fi

log "building $IMAGE ($SUITE from $MIRROR, security from $SECURITY_MIRROR)"
WORK=$(mktemp -d "$CACHE/build.XXXXXX")
RAW=$WORK/disk.raw
ROOT=$WORK/root
LOOP=
cleanup() {
    set +e
    if [ -d "$ROOT" ]; then
        for m in dev/pts dev proc sys run; do
            mountpoint -q "$ROOT/$m" && umount -l "$ROOT/$m"
        done
        mountpoint -q "$ROOT" && umount "$ROOT"
    fi
    [ -n "$LOOP" ] && losetup -d "$LOOP"
    rm -rf "$WORK"
}
trap cleanup EXIT

# One bootable Linux partition from 1 MiB to the end. The loop device maps
# that partition (by offset: partition scanning needs udev, often absent).
truncate -s "$SIZE" "$RAW"
printf 'label: dos\nstart=2048, type=83, bootable\n' | sfdisk -q "$RAW"
dd if="$MBR_BIN" of="$RAW" bs=440 count=1 conv=notrunc status=none
PART_START=2048
PART_SECTORS=$(sfdisk -d "$RAW" | sed -n 's/.*start= *2048, size= *\([0-9]*\).*/\1/p')
[ -n "$PART_SECTORS" ] || die "cannot read the partition table back"
LOOP=$(losetup --find --show --offset $((PART_START * 512)) --sizelimit $((PART_SECTORS * 512)) "$RAW")
# EXTLINUX reads ext4, but not the 64bit feature.
mkfs.ext4 -q -L gatehouse-root -O ^64bit -E lazy_itable_init=0,lazy_journal_init=0 "$LOOP"
UUID=$(blkid -s UUID -o value "$LOOP" 2>/dev/null || tune2fs -l "$LOOP" | sed -n 's/^Filesystem UUID: *//p')
mkdir -p "$ROOT"
mount "$LOOP" "$ROOT"

log "debootstrap (minbase + $(echo "$PACKAGES" | tr ',' ' '))"
debootstrap --variant=minbase --components=main --include="$PACKAGES" \
    "$SUITE" "$ROOT" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -30 "$WORK/debootstrap.log" >&2; die "debootstrap failed"; }

mount --bind /dev "$ROOT/dev"
mount --bind /dev/pts "$ROOT/dev/pts"
mount -t proc proc "$ROOT/proc"
mount -t sysfs sys "$ROOT/sys"
mount -t tmpfs tmpfs "$ROOT/run"
in_root() { LC_ALL=C DEBIAN_FRONTEND=noninteractive chroot "$ROOT" "$@"; }

cat >"$ROOT/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY_MIRROR
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
: >"$ROOT/etc/apt/sources.list"
rm -f "$ROOT/etc/resolv.conf"
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
log "security and point-release updates"
in_root apt-get -q update >"$WORK/apt.log" 2>&1 || { tail -20 "$WORK/apt.log" >&2; die "apt-get update failed"; }
in_root apt-get -q -y -o Dpkg::Options::=--force-confold dist-upgrade >>"$WORK/apt.log" 2>&1 \
    || { tail -20 "$WORK/apt.log" >&2; die "apt-get dist-upgrade failed"; }
# Keep only the newest kernel (the upgrade may have brought one).
KERNELS=$(in_root dpkg-query -W -f '${Package} ${Status}\n' 'linux-image-[0-9]*' | awk '$NF == "installed" { print $1 }' | sort -V)
OLD_KERNELS=$(echo "$KERNELS" | head -n -1)
[ -z "$OLD_KERNELS" ] || in_root apt-get -q -y purge $OLD_KERNELS >>"$WORK/apt.log" 2>&1 || die "cannot purge $OLD_KERNELS"
in_root apt-get -q clean

# The system.
echo gatehouse >"$ROOT/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tgatehouse\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$ROOT/etc/hosts"
printf 'UUID=%s\t/\text4\terrors=remount-ro\t0\t1\n' "$UUID" >"$ROOT/etc/fstab"
cat >"$ROOT/etc/systemd/network/20-wired.network" <<'EOF'
[Match]
Name=en* eth*

[Network]
DHCP=yes
EOF
in_root systemctl enable systemd-networkd.service systemd-resolved.service >/dev/null 2>&1
ln -sf /run/systemd/resolve/stub-resolv.conf "$ROOT/etc/resolv.conf"
# A fresh machine id on each instance's first boot.
: >"$ROOT/etc/machine-id"
rm -f "$ROOT/var/lib/dbus/machine-id"

# Boot: EXTLINUX on the partition, the MBR chains to it. /vmlinuz and
# /initrd.img are kept by the kernel packages, so kernel upgrades need no hook.
[ -e "$ROOT/vmlinuz" ] && [ -e "$ROOT/initrd.img" ] || die "no /vmlinuz, /initrd.img in the image"
mkdir -p "$ROOT/boot/extlinux"
cat >"$ROOT/boot/extlinux/extlinux.conf" <<EOF
SERIAL 0 115200
DEFAULT debian
PROMPT 0
TIMEOUT 1
LABEL debian
    LINUX /vmlinuz
    INITRD /initrd.img
    APPEND root=UUID=$UUID ro console=tty0 console=ttyS0,115200n8 net.ifnames=1
EOF
extlinux --install "$ROOT/boot/extlinux" >/dev/null 2>&1 || die "extlinux --install failed"
# Through an offset loop device extlinux cannot see the partition's start:
# write it into the boot sector's hidden-sectors field.
printf "$(printf '\\x%02x\\x%02x\\x%02x\\x%02x' $((PART_START & 255)) $((PART_START >> 8 & 255)) $((PART_START >> 16 & 255)) $((PART_START >> 24 & 255)))" \
    | dd of="$LOOP" bs=1 seek=28 count=4 conv=notrunc status=none

# Build-only access for the packer communicator; appliance/finalize.sh
# removes it. Root has no password.
rm -f "$BUILD_KEY" "$BUILD_KEY.pub"
ssh-keygen -q -t ed25519 -N '' -C gatehouse-appliance-build -f "$BUILD_KEY"
install -d -m 0700 "$ROOT/root/.ssh"
install -m 0600 "$BUILD_KEY.pub" "$ROOT/root/.ssh/authorized_keys"
in_root passwd -l root >/dev/null
printf 'PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUseDNS no\n' \
    >"$ROOT/etc/ssh/sshd_config.d/00-build.conf"

rm -rf "$ROOT/var/lib/apt/lists/"* "$ROOT/var/cache/apt/"*.bin "$ROOT/var/log/"*.log
# Freed blocks still hold the downloaded packages: discard them, so the
# image holds only what is in use.
fstrim "$ROOT" >/dev/null 2>&1 || log "fstrim failed: the image will be larger"
for m in dev/pts dev proc sys run; do umount -l "$ROOT/$m"; done
umount "$ROOT"
e2fsck -fy "$LOOP" >/dev/null 2>&1 || true
losetup -d "$LOOP"
LOOP=

qemu-img convert -O qcow2 "$RAW" "$WORK/base.qcow2"
mv "$WORK/base.qcow2" "$IMAGE"
# Base images unused for two weeks are of no more use.
for old in $(find "$CACHE" -maxdepth 1 -name "base-*.qcow2" -mtime +14); do
    [ "$old" = "$IMAGE" ] || rm -f "$old" "${old%.qcow2}.id_ed25519" "${old%.qcow2}.id_ed25519.pub"
done
log "done: $IMAGE ($(du -h "$IMAGE" | cut -f1))"
echo "$IMAGE"
