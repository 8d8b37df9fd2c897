#!/bin/bash
# Smoke test of the gatehouse appliance, in one command on a clean clone:
#
#   sudo appliance/smoke-test.sh
#
# Builds the image (packer/build.sh: release binary unless GATEHOUSE_BIN is
# given, cached base image, packer build), boots it under QEMU with a NoCloud
# seed made here (a target at the host's PostgreSQL through QEMU's host alias
# 10.0.2.2, a client token, an admin token, a TLS certificate, a throwaway SSH
# key), forwards the gateway, admin and SSH ports with user-mode networking,
# and checks the appliance from outside and inside. Prints PASS/FAIL per
# check; exits nonzero on any failure.
#
# Environment:
#   GATEHOUSE_BIN      gatehouse binary for the image (default: cargo build --release)
#   APPLIANCE_IMAGE    test this image instead of building one
#   SMOKE_WORK         work directory (default /var/tmp/gatehouse-appliance-smoke)
#   PG_HOST, PG_PORT, PG_USER   the host's PostgreSQL (127.0.0.1, 5432, postgres)
#   ACCELERATOR        tcg (default) or kvm
#   BOOT_TIMEOUT       seconds until /readyz must answer 200 (default 600; TCG on a busy machine is slow)
#   SKIP_REBOOT=1      skip the reboot checks
#   KEEP_VM=1          leave the VM running at the end (prints how to reach it)
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
WORK=${SMOKE_WORK:-/var/tmp/gatehouse-appliance-smoke}
PG_HOST=${PG_HOST:-127.0.0.1}
PG_PORT=${PG_PORT:-5432}
PG_USER=${PG_USER:-postgres}
DB=appliance_smoke
BOOT_TIMEOUT=${BOOT_TIMEOUT:-600}
T0=$(date +%s)

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'FAIL  %s\n' "$*"; exit 1; }
[ "$(id -u)" = 0 ] || die "setup: needs root (the image build uses debootstrap and loop devices)"

# Debian packages the build and the test use; installed only when missing.
PACKAGES=(packer qemu-system-x86 qemu-utils debootstrap fdisk e2fsprogs extlinux dosfstools mtools
          openssh-client postgresql-client curl openssl binutils python3 clang libclang-dev libhyperscan-dev)
# Twice: installing one package can remove another of a different origin
# (Debian's qemu-system-x86 removes a newer qemu-utils), which the second
# pass puts back in the matching version.
for round in 1 2; do
    missing=()
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -gt 0 ] || break
    log "installing ${missing[*]}"
    { [ "$round" = 2 ] || apt-get update -qq; } && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
        || die "setup: cannot install ${missing[*]}"
done
for tool in qemu-img qemu-system-x86_64 packer debootstrap; do
    command -v "$tool" >/dev/null || die "setup: $tool is missing after installing ${PACKAGES[*]}"
done

FAILED=0
PASSED=0
pass() { PASSED=$((PASSED + 1)); printf 'PASS  %-28s %s\n' "$1" "${2:-}"; }
fail() { FAILED=$((FAILED + 1)); printf 'FAIL  %-28s %s\n' "$1" "${2:-}"; }
check() { # check NAME DETAIL-ON-FAILURE COMMAND...
    local name=$1 detail=$2
    shift 2
    if "$@"; then pass "$name"; else fail "$name" "$detail"; fi
}

# --- build ------------------------------------------------------------------
T_BUILD=$(date +%s)
if [ -n "${APPLIANCE_IMAGE:-}" ]; then
    IMAGE=$APPLIANCE_IMAGE
else
    OUTPUT_DIR=${OUTPUT_DIR:-$REPO/packer/output-appliance}
    OUTPUT_DIR=$OUTPUT_DIR "$REPO/packer/build.sh" || die "build: packer/build.sh failed"
    IMAGE=$OUTPUT_DIR/gatehouse-appliance.qcow2
fi
BUILD_SECS=$(( $(date +%s) - T_BUILD ))
[ -f "$IMAGE" ] || die "build: no image at $IMAGE"
pass "image built" "$(basename "$IMAGE"), $(du -h "$IMAGE" | cut -f1), ${BUILD_SECS}s"
if [ -f "$(dirname "$IMAGE")/SHA256SUMS" ]; then
    check "image checksum" "SHA256SUMS does not match" \
        bash -c "cd '$(dirname "$IMAGE")' && sha256sum -c --quiet SHA256SUMS"
fi

# --- the seed and the host side ------------------------------------------------
rm -rf "$WORK"
mkdir -p "$WORK/seed/gatehouse/tls"
chmod 0700 "$WORK"
QEMU_PID=
cleanup() {
    if [ -n "$QEMU_PID" ] && [ "${KEEP_VM:-0}" != 1 ] && kill -0 "$QEMU_PID" 2>/dev/null; then
        kill "$QEMU_PID" 2>/dev/null
        for _ in $(seq 1 20); do kill -0 "$QEMU_PID" 2>/dev/null || break; sleep 0.25; done
        kill -9 "$QEMU_PID" 2>/dev/null
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

pg_isready -q -h "$PG_HOST" -p "$PG_PORT" || die "setup: no PostgreSQL on $PG_HOST:$PG_PORT"
PSQL_HOST=(psql -X -q -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER")
if [ "$("${PSQL_HOST[@]}" -d postgres -Atc "select count(*) from pg_database where datname = '$DB'")" != 1 ]; then
    "${PSQL_HOST[@]}" -d postgres -c "create database $DB" || die "setup: cannot create database $DB"
fi
pgbench -q -i -s 1 -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" "$DB" >"$WORK/pgbench-init.log" 2>&1 \
    || die "setup: pgbench -i failed: $(tail -3 "$WORK/pgbench-init.log")"

GW_TOKEN=$(openssl rand -hex 24)
ADMIN_TOKEN=$(openssl rand -hex 24)
ssh-keygen -q -t ed25519 -N '' -C smoke-test -f "$WORK/id_ed25519"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=gatehouse-smoke \
    -keyout "$WORK/seed/gatehouse/tls/server.key" -out "$WORK/seed/gatehouse/tls/server.crt" 2>/dev/null
INSTANCE_ID=smoke-$(date +%s)
cat >"$WORK/seed/meta-data" <<EOF
instance-id: $INSTANCE_ID
local-hostname: gatehouse-smoke
EOF
cat >"$WORK/seed/user-data" <<EOF
#cloud-config
ssh_authorized_keys:
  - $(cat "$WORK/id_ed25519.pub")
EOF
cat >"$WORK/seed/gatehouse/targets.toml" <<EOF
# The host's PostgreSQL, through QEMU's user-mode network (10.0.2.2 is the
# host's loopback).
[[target]]
name = "smoke"
database = "$DB"
host = "10.0.2.2"
port = $PG_PORT
user = "$PG_USER"
tls = "prefer"
EOF
echo "smoke $GW_TOKEN smoke" >"$WORK/seed/gatehouse/identities"
echo "smoke-admin $ADMIN_TOKEN admin" >"$WORK/seed/gatehouse/admin-tokens"
# Fleet mode, with the host's PostgreSQL as the control database (the
# schema `gatehouse` in the smoke database).
cat >"$WORK/seed/gatehouse/settings" <<EOF
FLEET_CONTROL=host=10.0.2.2 port=$PG_PORT user=$PG_USER dbname=$DB
FLEET_INSTANCE=smoke-1
# QEMU's user-mode network to the host: plaintext, said to be trusted.
FLEET_TLS=disable
FLEET_ALLOW_CLEARTEXT=1
EOF
# A NoCloud seed: a FAT volume labelled CIDATA.
mkfs.vfat -C -n CIDATA "$WORK/seed.img" 4096 >/dev/null || die "setup: mkfs.vfat failed"
MTOOLS_SKIP_CHECK=1 mcopy -s -i "$WORK/seed.img" "$WORK/seed/meta-data" "$WORK/seed/user-data" "$WORK/seed/gatehouse" ::/ \
    || die "setup: mcopy failed"

qemu-img create -q -f qcow2 -b "$(realpath "$IMAGE")" -F qcow2 "$WORK/vm.qcow2" || die "setup: qemu-img create failed"
read -r GW_PORT ADMIN_PORT SSH_PORT < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(3)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')

# --- boot ------------------------------------------------------------------------
log "booting the appliance (gateway 127.0.0.1:$GW_PORT, admin :$ADMIN_PORT, ssh :$SSH_PORT)"
T_BOOT=$(date +%s)
# -cpu max: Hyperscan needs SSSE3, which TCG's default CPU model lacks.
qemu-system-x86_64 -accel "${ACCELERATOR:-tcg}" -cpu max -smp 2 -m 2048 -display none -no-user-config -nodefaults \
    -serial "file:$WORK/console.log" \
    -drive "file=$WORK/vm.qcow2,if=virtio,format=qcow2" \
    -drive "file=$WORK/seed.img,if=virtio,format=raw,readonly=on" \
    -nic "user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:$GW_PORT-:6432,hostfwd=tcp:127.0.0.1:$ADMIN_PORT-:9090,hostfwd=tcp:127.0.0.1:$SSH_PORT-:22" \
    >"$WORK/qemu.log" 2>&1 &
QEMU_PID=$!

# The admin API is HTTPS by default, with a certificate first boot makes;
# the wait for readiness does not know it yet (-k), the checks below do.
ADMIN=https://127.0.0.1:$ADMIN_PORT
ready=0
while [ $(( $(date +%s) - T_BOOT )) -lt "$BOOT_TIMEOUT" ]; do
    kill -0 "$QEMU_PID" 2>/dev/null || break
    if [ "$(curl -k -s -o /dev/null -w '%{http_code}' --max-time 3 "$ADMIN/readyz")" = 200 ]; then ready=1; break; fi
    # Give up early when the services failed.
    if grep -aq 'Failed to start .*gatehouse' "$WORK/console.log" 2>/dev/null; then sleep 5; break; fi
    sleep 2
done
BOOT_SECS=$(( $(date +%s) - T_BOOT ))
if [ $ready = 1 ]; then
    pass "boot to /readyz 200" "${BOOT_SECS}s"
else
    fail "boot to /readyz 200" "not within ${BOOT_TIMEOUT}s; console: $WORK/console.log"
    tail -25 "$WORK/console.log" | sed 's/^/    console| /'
    cat "$WORK/qemu.log" | sed 's/^/    qemu| /'
fi

SSH=(ssh -i "$WORK/id_ed25519" -p "$SSH_PORT" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
     -o LogLevel=ERROR -o ConnectTimeout=15 -o BatchMode=yes)
vm() { timeout 60 "${SSH[@]}" admin@127.0.0.1 "$@"; }

# --- from outside: gateway and admin API -------------------------------------------
CONN="host=127.0.0.1 port=$GW_PORT dbname=$DB user=smoke sslmode=require connect_timeout=20"
out=$(PGPASSWORD=$GW_TOKEN timeout 60 psql -X -Atc "select 40 + 2" "$CONN" 2>&1)
[ "$out" = 42 ] && pass "psql through the appliance" "select 40 + 2 = 42" || fail "psql through the appliance" "$out"

out=$(PGPASSWORD=wrong-token timeout 60 psql -X -Atc "select 1" "$CONN" 2>&1)
case "$out" in
    *"password authentication failed"*|*"authentication"*|*28P01*) pass "wrong token refused" ;;
    *) fail "wrong token refused" "$out" ;;
esac

out=$(PGPASSWORD=$GW_TOKEN timeout 60 psql -X -Atc "select 1" "host=127.0.0.1 port=$GW_PORT dbname=$DB user=smoke sslmode=disable connect_timeout=20" 2>&1)
[ "$out" != 1 ] && pass "cleartext login refused" "without TLS, off loopback" || fail "cleartext login refused" "logged in without TLS"

PGPASSWORD=$GW_TOKEN timeout 120 pgbench -n -c 4 -j 2 -T 10 "$CONN" >"$WORK/pgbench.log" 2>&1
rc=$?
tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$WORK/pgbench.log" | tail -1)
failed_tx=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$WORK/pgbench.log")
if [ $rc = 0 ] && [ -n "$tps" ] && [ "${failed_tx:-0}" = 0 ]; then
    pass "pgbench through the appliance" "4 clients, 10 s, tps $tps, $(sed -n 's/^number of transactions actually processed: //p' "$WORK/pgbench.log") transactions"
else
    fail "pgbench through the appliance" "rc $rc: $(tail -3 "$WORK/pgbench.log" | tr '\n' ' ')"
fi

vm sudo cat /etc/gatehouse/tls/admin.crt >"$WORK/admin.crt" 2>/dev/null
code() { curl -s --cacert "$WORK/admin.crt" -o "$WORK/http.out" -w '%{http_code}' --max-time 10 "$@"; }
[ "$(code "$ADMIN/healthz")" = 200 ] && pass "admin /healthz over HTTPS" "the instance's own certificate" || fail "admin /healthz over HTTPS" "$(cat "$WORK/http.out")"
c=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "http://127.0.0.1:$ADMIN_PORT/healthz")
[ "$c" != 200 ] && pass "admin API refuses plain HTTP" "HTTP code $c" || fail "admin API refuses plain HTTP" "served over http"
c=$(code -H "Authorization: Bearer $ADMIN_TOKEN" "$ADMIN/api/v1/sessions")
[ "$c" = 200 ] && pass "admin /api/v1/sessions" "$(head -c 120 "$WORK/http.out")" || fail "admin /api/v1/sessions" "HTTP $c"
c=$(code "$ADMIN/api/v1/sessions")
[ "$c" = 401 ] && pass "admin API needs its token" "HTTP 401 without" || fail "admin API needs its token" "HTTP $c without a token"
ok=0
for _ in $(seq 1 30); do
    code "$ADMIN/readyz" >/dev/null
    if python3 -c 'import json,sys; f=json.load(open(sys.argv[1]))["fleet"]; sys.exit(0 if f["instance"] == "smoke-1" and f["control_database"] == "connected" else 1)' "$WORK/http.out" 2>/dev/null; then ok=1; break; fi
    sleep 1
done
if [ $ok = 1 ] && [ "$("${PSQL_HOST[@]}" -d "$DB" -Atc "select name from gatehouse.instances where name = 'smoke-1'")" = smoke-1 ]; then
    pass "fleet mode from the seed" "instance smoke-1, control database connected, schema in $DB"
else
    fail "fleet mode from the seed" "$(head -c 300 "$WORK/http.out")"
fi
c=$(code -H "Authorization: Bearer $ADMIN_TOKEN" "$ADMIN/metrics")
[ "$c" = 200 ] && pass "admin /metrics" "$(grep -c '^gatehouse' "$WORK/http.out") gatehouse series" || fail "admin /metrics" "HTTP $c"
c=$(code -H "Authorization: Bearer $ADMIN_TOKEN" "$ADMIN/api/v1/recordings")
if [ "$c" = 200 ] && python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); sys.exit(0 if d["total"] >= 1 else 1)' "$WORK/http.out"; then
    pass "sessions recorded" "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["total"])' "$WORK/http.out") recordings listed"
else
    fail "sessions recorded" "HTTP $c: $(head -c 200 "$WORK/http.out")"
fi

# --- SSH ------------------------------------------------------------------------------
if vm true; then pass "ssh with the seed's key"; else fail "ssh with the seed's key" "admin@ cannot log in"; fi
out=$(timeout 30 ssh -p "$SSH_PORT" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ConnectTimeout=15 \
      -o BatchMode=yes -o PubkeyAuthentication=no -o PreferredAuthentications=password,keyboard-interactive \
      admin@127.0.0.1 true 2>&1)
rc=$?
case "$rc:$out" in
    255:*"Permission denied (publickey)"*) pass "password ssh refused" "server offers publickey only" ;;
    *) fail "password ssh refused" "rc $rc: $out" ;;
esac
out=$(timeout 30 "${SSH[@]}" root@127.0.0.1 true 2>&1)
[ $? = 255 ] && pass "root ssh refused" || fail "root ssh refused" "$out"
out=$(vm sudo sshd -T 2>&1 | grep -E '^(permitrootlogin|passwordauthentication|kbdinteractiveauthentication|authenticationmethods) ' | sort | tr '\n' ' ')
[ "$out" = "authenticationmethods publickey kbdinteractiveauthentication no passwordauthentication no permitrootlogin no " ] \
    && pass "sshd settings" "$out" || fail "sshd settings" "$out"
out=$(vm sudo awk -F: "'\$2 !~ /^[!*]/ { print \$1 }'" /etc/shadow 2>&1)
[ -z "$out" ] && pass "no password accounts" || fail "no password accounts" "$out"
out=$(vm 'sudo test -e /root/.ssh/authorized_keys -o -e /etc/ssh/sshd_config.d/00-build.conf && echo present' 2>&1)
[ -z "$out" ] && pass "build access removed" || fail "build access removed" "$out"

# --- inside -----------------------------------------------------------------------------
# Listening sockets: off loopback only SSH, the gateway, the admin API (and
# the DHCP client's socket on the interface).
vm ss -Hltun >"$WORK/ss.txt" 2>&1
extra=$(awk '{ print $1, $5 }' "$WORK/ss.txt" | while read -r proto addr; do
    port=${addr##*:}; host=${addr%:*}
    case "$host" in 127.*|'[::1]'|'127.0.0.53%lo') continue ;; esac
    case "$proto:$port" in tcp:22|tcp:6432|tcp:9090) ;; udp:68) case "$host" in *%*) ;; *) echo "$proto $addr" ;; esac ;; *) echo "$proto $addr" ;; esac
done | tr '\n' ' ')
if [ -s "$WORK/ss.txt" ] && [ -z "$extra" ]; then
    pass "only expected ports listen" "$(awk '{ print $1 "/" $5 }' "$WORK/ss.txt" | tr '\n' ' ')"
else
    fail "only expected ports listen" "unexpected: ${extra:-$(cat "$WORK/ss.txt")}"
fi
out=$(vm sudo nft list chain inet filter input 2>&1)
if grep -q 'policy drop' <<<"$out" && grep -q 'tcp dport 6432 accept' <<<"$out" && grep -q 'tcp dport 9090 accept' <<<"$out" \
   && grep -q 'tcp dport 22 accept' <<<"$out" && [ "$(grep -c 'accept$' <<<"$out")" -le 9 ]; then
    pass "firewall admits 22, 6432, 9090" "input policy drop"
else
    fail "firewall admits 22, 6432, 9090" "$(tr '\n' ' ' <<<"$out")"
fi

out=$(vm journalctl -b -u gatehouse --no-pager -o cat 2>&1)
if grep -q 'gatehouse serving' <<<"$out" && grep 'gatehouse serving' <<<"$out" | grep -q 'IoUring' && ! grep -q 'fall back to epoll' <<<"$out"; then
    pass "gatehouse runs on io_uring" "$(grep 'gatehouse serving' <<<"$out" | tail -1 | grep -o 'workers=[0-9]* driver=[A-Za-z]*')"
else
    fail "gatehouse runs on io_uring" "$(grep -E 'serving|epoll|io_uring' <<<"$out" | tail -3 | tr '\n' ' ')"
fi

out=$(vm sudo -u gatehouse /usr/local/bin/gatehouse verify --key /etc/gatehouse/recording-key.pub.pem /var/lib/gatehouse/recordings 2>&1 | tail -1)
if grep -q ' 0 failed (signatures checked)' <<<"$out" && ! grep -q '^0 recording' <<<"$out"; then
    pass "recordings verify in the VM" "$out"
else
    fail "recordings verify in the VM" "$out"
fi

out=$(vm sudo systemd-analyze security gatehouse.service --no-pager 2>&1 | grep 'Overall exposure level')
score=$(sed -n 's/.*gatehouse.service: \([0-9.]*\).*/\1/p' <<<"$out")
if [ -n "$score" ] && awk -v s="$score" 'BEGIN { exit !(s <= 2.0) }'; then
    pass "sandbox exposure <= 2.0" "systemd-analyze security: $score"
else
    fail "sandbox exposure <= 2.0" "${out:-no score}"
fi

out=$(vm 'pid=$(systemctl show -p MainPID --value gatehouse); [ "$pid" != 0 ] || exit 1; ps -o user= -p $pid; grep -E "^(CapEff|CapBnd|NoNewPrivs|Seccomp):" /proc/$pid/status | tr -s "\t " " " | tr "\n" " "' 2>&1)
if grep -q '^gatehouse' <<<"$out" && grep -q 'CapEff: 0000000000000000' <<<"$out" && grep -q 'NoNewPrivs: 1' <<<"$out" && grep -q 'Seccomp: 2' <<<"$out"; then
    pass "gatehouse unprivileged" "$(tr '\n' ' ' <<<"$out")"
else
    fail "gatehouse unprivileged" "$out"
fi

out=$(vm 'systemctl is-active gatehouse-firstboot.service; sudo stat -c "%U:%G %a %n" /etc/gatehouse /etc/gatehouse/gatehouse.toml /etc/gatehouse/tls/server.key /etc/gatehouse/tls/admin.key /etc/gatehouse/secrets/recording-key.pem /var/lib/gatehouse; hostname' 2>&1 | tr '\n' ' ')
case "$out" in
    "active root:gatehouse 750 /etc/gatehouse root:gatehouse 640 /etc/gatehouse/gatehouse.toml root:gatehouse 640 /etc/gatehouse/tls/server.key root:gatehouse 640 /etc/gatehouse/tls/admin.key gatehouse:gatehouse 600 /etc/gatehouse/secrets/recording-key.pem gatehouse:gatehouse 750 /var/lib/gatehouse gatehouse-smoke ")
        pass "first boot from the seed" "config, TLS (gateway and admin), recording key, hostname, state dir" ;;
    *) fail "first boot from the seed" "$out" ;;
esac

out=$(vm 'sudo test -d /var/log/journal/$(cat /etc/machine-id) && echo persistent' 2>&1)
[ "$out" = persistent ] && pass "journal persistent" || fail "journal persistent" "$out"

out=$(vm 'apt-config dump | grep -E "^APT::Periodic::(Unattended-Upgrade|Update-Package-Lists) \"1\";" | wc -l; systemctl is-enabled apt-daily-upgrade.timer; dpkg-query -W -f="\${Status}" unattended-upgrades' 2>&1 | tr '\n' ' ')
[ "$out" = "2 enabled install ok installed" ] && pass "unattended security updates" || fail "unattended security updates" "$out"

out=$(vm /usr/sbin/sysctl -n net.core.somaxconn net.ipv4.ip_local_port_range 2>&1 | tr '\n\t' '  ')
case "$out" in "65535 10240 65535 ") pass "sysctl tuning" "somaxconn 65535, ports 10240-65535" ;; *) fail "sysctl tuning" "$out" ;; esac

out=$(vm systemctl --failed --no-legend --plain 2>&1)
[ -z "$out" ] && pass "no failed units" || fail "no failed units" "$(tr '\n' ' ' <<<"$out")"

# --- reboot: the appliance boots by itself again, keeps its configuration
# (first boot does not run twice for one instance) and its journal.
if [ "${SKIP_REBOOT:-0}" != 1 ]; then
    T_REBOOT=$(date +%s)
    vm 'sudo systemctl reboot' >/dev/null 2>&1
    # Down first, then up again.
    while [ $(( $(date +%s) - T_REBOOT )) -lt 60 ] \
          && [ "$(curl -k -s -o /dev/null -w '%{http_code}' --max-time 2 "$ADMIN/readyz")" = 200 ]; do sleep 1; done
    ready=0
    while [ $(( $(date +%s) - T_REBOOT )) -lt "$BOOT_TIMEOUT" ]; do
        kill -0 "$QEMU_PID" 2>/dev/null || break
        if [ "$(curl -k -s -o /dev/null -w '%{http_code}' --max-time 3 "$ADMIN/readyz")" = 200 ]; then ready=1; break; fi
        sleep 2
    done
    if [ $ready = 1 ]; then
        pass "reboot to /readyz 200" "$(( $(date +%s) - T_REBOOT ))s"
        out=$(PGPASSWORD=$GW_TOKEN timeout 60 psql -X -Atc "select count(*) from pgbench_branches" "$CONN" 2>&1)
        [ "$out" = 1 ] && pass "psql after reboot" || fail "psql after reboot" "$out"
        out=$(vm 'journalctl --list-boots --no-pager | grep -c "^ *-\?[0-9]"; journalctl -b -u gatehouse-firstboot -o cat --no-pager | grep -c "configured already"' 2>&1 | tr '\n' ' ')
        case "$out" in
            "1 "*|"0 "*|*" 0 ") fail "journal and config kept" "boots, 'configured already': $out" ;;
            *) pass "journal and config kept" "boots in journal: ${out%% *}; first boot not repeated" ;;
        esac
    else
        fail "reboot to /readyz 200" "not within ${BOOT_TIMEOUT}s; console: $WORK/console.log"
    fi
fi

TOTAL=$(( $(date +%s) - T0 ))
echo
if [ "$FAILED" = 0 ]; then
    echo "smoke test: PASS ($PASSED checks; build ${BUILD_SECS}s, boot ${BOOT_SECS}s, total ${TOTAL}s)"
else
    echo "smoke test: FAIL ($FAILED of $((PASSED + FAILED)) checks failed; total ${TOTAL}s; console: $WORK/console.log)"
fi
if [ "${KEEP_VM:-0}" = 1 ]; then
    echo "VM left running (pid $QEMU_PID): ssh -i $WORK/id_ed25519 -p $SSH_PORT admin@127.0.0.1"
fi
[ "$FAILED" = 0 ]
