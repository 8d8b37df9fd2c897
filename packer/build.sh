#!/bin/bash
# Builds the gatehouse appliance image in one command:
#
#   sudo packer/build.sh            # -> packer/output-appliance/gatehouse-appliance.qcow2, SHA256SUMS
#
# 1. the gatehouse release binary: $GATEHOUSE_BIN, else `cargo build --release --locked`;
# 2. the base image: packer/make-base-image.sh (cached, see there);
# 3. packer build packer/gatehouse.pkr.hcl, which provisions the binary and
#    appliance/ onto a fresh copy of the base image, every time.
#
# Environment:
#   GATEHOUSE_BIN     a gatehouse binary to put in the image (its debug info is
#                     stripped on the way, its symbols kept)
#   OUTPUT_DIR        default: packer/output-appliance (replaced)
#   RAW=1             also write gatehouse-appliance.raw
#   ACCELERATOR       tcg (default) or kvm
#   BUILD_TIMEOUT     seconds for the packer build, default 1800
#   CONSOLE_LOG       file for the build VM's serial console, default OUTPUT_DIR/../build-console.log
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
OUTPUT_DIR=${OUTPUT_DIR:-$HERE/output-appliance}
log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (the base image is made with debootstrap and loop devices)"
for tool in packer qemu-system-x86_64 qemu-img sha256sum; do
    command -v "$tool" >/dev/null || die "$tool is missing (apt-get install packer qemu-system-x86 qemu-utils)"
done

if [ -z "${GATEHOUSE_BIN:-}" ]; then
    log "building gatehouse (release)"
    (cd "$REPO" && cargo build --release --locked)
    GATEHOUSE_BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/gatehouse
fi
[ -x "$GATEHOUSE_BIN" ] || die "no gatehouse binary at $GATEHOUSE_BIN"

log "base image"
BASE=$("$HERE/make-base-image.sh")
BUILD_KEY=${BASE%.qcow2}.id_ed25519

WORK=$(mktemp -d /var/tmp/gatehouse-packer.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
if command -v objcopy >/dev/null; then
    objcopy --strip-debug "$GATEHOUSE_BIN" "$WORK/gatehouse"
else
    cp "$GATEHOUSE_BIN" "$WORK/gatehouse"
fi
chmod 0755 "$WORK/gatehouse"

log "packer build ($(du -h "$WORK/gatehouse" | cut -f1) binary onto $(basename "$BASE"))"
rm -rf "$OUTPUT_DIR"
mkdir -p "$(dirname "$OUTPUT_DIR")"
CONSOLE_LOG=${CONSOLE_LOG:-$(dirname "$OUTPUT_DIR")/build-console.log}
: >"$CONSOLE_LOG"
# No calls home; the cache and temporary files stay in the work directory.
export CHECKPOINT_DISABLE=1 PACKER_CACHE_DIR=$WORK/packer_cache TMPDIR=$WORK
RAW_VAR=false
[ "${RAW:-0}" = 1 ] && RAW_VAR=true
timeout "${BUILD_TIMEOUT:-1800}" packer build -color=false \
    -var "base_image=$BASE" \
    -var "base_image_checksum=sha256:$(sha256sum "$BASE" | cut -d' ' -f1)" \
    -var "build_ssh_key=$BUILD_KEY" \
    -var "gatehouse_bin=$WORK/gatehouse" \
    -var "repo_dir=$REPO" \
    -var "output_dir=$OUTPUT_DIR" \
    -var "raw=$RAW_VAR" \
    -var "accelerator=${ACCELERATOR:-tcg}" \
    -var "console_log=$CONSOLE_LOG" \
    "$HERE/gatehouse.pkr.hcl" \
    || die "packer build failed (build VM console: $CONSOLE_LOG)"
(cd "$OUTPUT_DIR" && sha256sum -c --quiet SHA256SUMS) || die "checksums do not match"
log "image: $OUTPUT_DIR/gatehouse-appliance.qcow2"
