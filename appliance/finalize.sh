#!/bin/bash
# The packer build's last step, inside the image: removes the build-only
# access and what makes an instance unique, so each instance starts afresh.
set -euo pipefail
log() { printf '[finalize] %s\n' "$*"; }

# Build-only root access over SSH.
rm -f /etc/ssh/sshd_config.d/00-build.conf
rm -rf /root/.ssh
passwd -l root >/dev/null
# No account may log in with a password: every hash is locked or impossible.
bad=$(awk -F: '$2 !~ /^[!*]/ { print $1 }' /etc/shadow)
if [ -n "$bad" ]; then
    log "accounts with a password: $bad" >&2
    exit 1
fi
sshd -t
[ "$(sshd -T 2>/dev/null | awk '$1 == "permitrootlogin" { print $2 }')" = no ] || { log "sshd still permits root logins" >&2; exit 1; }
[ "$(sshd -T 2>/dev/null | awk '$1 == "passwordauthentication" { print $2 }')" = no ] || { log "sshd still accepts passwords" >&2; exit 1; }

# Per instance: SSH host keys (gatehouse-firstboot makes them), machine id,
# first-boot state, configuration written from a seed, logs.
rm -f /etc/ssh/ssh_host_*
: >/etc/machine-id
rm -f /var/lib/dbus/machine-id /var/lib/systemd/random-seed
rm -rf /var/lib/gatehouse-firstboot
rm -f /etc/gatehouse/gatehouse.toml /etc/gatehouse/admin-token /etc/gatehouse/environment
rm -rf /etc/gatehouse/tls/* /etc/gatehouse/secrets/* /var/lib/gatehouse/recordings/*
rm -rf /var/log/journal/* /var/lib/systemd/network/* /var/lib/dhcp/* 2>/dev/null || true
find /var/log -type f -exec truncate -s 0 {} +
rm -rf /tmp/gatehouse-appliance /var/tmp/* /root/.bash_history
apt-get -q clean
rm -rf /var/lib/apt/lists/*

# Let the image hold only the blocks in use.
sync
fstrim -av || true
log "done"
