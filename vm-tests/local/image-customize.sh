#!/bin/sh
# mmdebstrap --customize-hook for the guest root (argument: the root directory being built).
# It only removes what would slow a boot or wait for hardware and a console that are not there;
# everything scenario-specific arrives in the per-run overlay.
set -eu
root="$1"
sys="$root/etc/systemd/system"
mkdir -p "$sys"

# Units that wait for a TTY, a TPM, a first-boot prompt or a network that does not exist, or
# that only cost boot time in a throwaway VM. Masked, as `systemctl mask` would.
for unit in \
  systemd-firstboot.service getty.target serial-getty@ttyS0.service \
  systemd-logind.service systemd-user-sessions.service \
  systemd-ask-password-wall.path systemd-ask-password-console.path \
  systemd-pcrmachine.service systemd-pcrphase-sysinit.service systemd-pcrphase.service \
  systemd-pcrextend.socket systemd-pcrlock.socket \
  systemd-tpm2-setup-early.service systemd-tpm2-setup.service \
  systemd-binfmt.service proc-sys-fs-binfmt_misc.automount \
  sys-fs-fuse-connections.mount sys-kernel-config.mount sys-kernel-debug.mount \
  sys-kernel-tracing.mount dev-hugepages.mount \
  systemd-hibernate-clear.service systemd-random-seed.service \
  systemd-hostnamed.socket systemd-sysext.socket systemd-creds.socket \
  systemd-remount-fs.service systemd-networkd-wait-online.service \
  systemd-time-wait-sync.service systemd-update-utmp.service \
  ldconfig.service systemd-journal-catalog-update.service systemd-update-done.service \
  systemd-machine-id-commit.service e2scrub_reap.service \
  apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer fstrim.timer
do
  ln -sfn /dev/null "$sys/$unit"
done

# Not started at boot: haproxy is started by the cluster driver with its own configuration.
rm -f "$sys/multi-user.target.wants/haproxy.service" "$sys/getty.target.wants/getty@tty1.service"

# The journal lives in memory (the root is a tmpfs anyway) and is not echoed to the console;
# the guest driver writes its own lines there.
mkdir -p "$root/etc/systemd/journald.conf.d"
printf '[Journal]\nStorage=volatile\nForwardToConsole=no\n' >"$root/etc/systemd/journald.conf.d/rip-vm.conf"

# Every VM gets its own machine id and hostname from the overlay.
: >"$root/etc/machine-id"
