#!/bin/bash
# Provisions gatehouse onto the appliance image. Run as root inside the
# image by the packer build (packer/gatehouse.pkr.hcl):
#
#   install.sh DIR     DIR holds gatehouse (the binary), appliance/ (this
#                      directory) and gatehouse.example.toml
#
# Idempotent: the packer build runs it on a fresh copy of the base image
# every time, so the binary and these files are always the current ones.
set -euo pipefail
SRC=${1:?usage: install.sh DIR}
APP=$SRC/appliance
log() { printf '[install] %s\n' "$*"; }

# The binary, and everything it links present in the image.
install -m 0755 -o root -g root "$SRC/gatehouse" /usr/local/bin/gatehouse
if ldd /usr/local/bin/gatehouse | grep -q 'not found'; then
    ldd /usr/local/bin/gatehouse >&2
    log "gatehouse links libraries the image lacks (add their packages to packer/base-packages.txt)" >&2
    exit 1
fi
# The example configuration compiles the built-in secret rules (Hyperscan
# needs SSSE3: a CPU model with at least x86-64-v2).
/usr/local/bin/gatehouse check --config "$SRC/gatehouse.example.toml" >/dev/null
log "$(/usr/local/bin/gatehouse --version 2>/dev/null || echo gatehouse) installed; links: $(ldd /usr/local/bin/gatehouse | awk '/=>/ { print $1 }' | tr '\n' ' ')"

# Users: gatehouse runs the service; admin logs in with an SSH key only.
getent group gatehouse >/dev/null || groupadd --system gatehouse
getent passwd gatehouse >/dev/null || useradd --system --gid gatehouse --home-dir /var/lib/gatehouse \
    --no-create-home --shell /usr/sbin/nologin --comment "gatehouse database gateway" gatehouse
getent group sshlogin >/dev/null || groupadd --system sshlogin
getent passwd admin >/dev/null || useradd --create-home --shell /bin/bash --comment "appliance administrator" admin
usermod -a -G sudo,adm,systemd-journal,sshlogin admin
# No password can match '*': SSH keys are the only way in.
usermod -p '*' admin
passwd -l root >/dev/null

# The appliance's files, owned by root.
tar -C "$APP/rootfs" -cf - . | tar -C / -xf - --no-same-owner --no-overwrite-dir
chmod 0755 /usr/local/sbin/gatehouse-firstboot
chmod 0440 /etc/sudoers.d/90-gatehouse-admin
visudo -cq
chmod 0755 /etc/nftables.conf
install -d -m 0755 /usr/local/share/doc/gatehouse
install -m 0644 "$APP/README.md" /usr/local/share/doc/gatehouse/README.appliance.md
install -m 0644 "$SRC/gatehouse.example.toml" /usr/local/share/doc/gatehouse/gatehouse.example.toml

# Configuration in /etc/gatehouse (readable by the service, not writable);
# state, and recordings, in /var/lib/gatehouse.
install -d -o root -g gatehouse -m 0750 /etc/gatehouse /etc/gatehouse/tls /etc/gatehouse/secrets
install -d -o gatehouse -g gatehouse -m 0750 /var/lib/gatehouse /var/lib/gatehouse/recordings
install -d -m 2755 -g systemd-journal /var/log/journal

# Checks of what was installed.
nft -c -f /etc/nftables.conf
sshd -t
systemd-analyze verify /etc/systemd/system/gatehouse.service /etc/systemd/system/gatehouse-firstboot.service 2>&1 \
    | grep -v -e 'gatehouse.toml' -e '^$' || true
# @system-service names @aio, which holds io_uring_setup/enter/register.
if ! { systemd-analyze syscall-filter @system-service | grep -qx '[[:space:]]*@aio' \
       && systemd-analyze syscall-filter @aio | grep -qx '[[:space:]]*io_uring_setup'; }; then
    log "this systemd's @system-service lacks io_uring: gatehouse would fall back to epoll" >&2
    exit 1
fi

systemctl enable gatehouse-firstboot.service gatehouse.service nftables.service ssh.service \
    systemd-networkd.service systemd-resolved.service unattended-upgrades.service apt-daily.timer apt-daily-upgrade.timer 2>&1 \
    | grep -v '^Created symlink' || true
log "done"
