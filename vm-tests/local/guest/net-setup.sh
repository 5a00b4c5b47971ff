#!/bin/bash
# Static network for multi-VM scenarios: rip.ip=ADDR/PREFIX on the kernel command line puts
# ADDR on eth0 (virtio-net, wired by QEMU socket netdevs on the host's 127.0.0.1 only).
# Without rip.ip the VM has no NIC and this does nothing.
set -euo pipefail
ip=""
for arg in $(cat /proc/cmdline); do
  case "$arg" in rip.ip=*) ip="${arg#rip.ip=}" ;; esac
done
ip link set lo up
[ -n "$ip" ] || exit 0
release="$(uname -r)"
for mod in kernel/net/core/failover kernel/drivers/net/net_failover kernel/drivers/net/virtio_net; do
  f="$(ls /usr/lib/modules/"$release"/"$mod".ko* 2>/dev/null | head -n1)"
  [ -n "$f" ] || { echo "net-setup: module $mod missing from the overlay" >&2; exit 1; }
  grep -q "^$(basename "$mod") " /proc/modules || insmod "$f"
done
for _ in $(seq 50); do
  [ -e /sys/class/net/eth0 ] && break
  sleep 0.1
done
[ -e /sys/class/net/eth0 ] || { echo "net-setup: no eth0 after loading virtio_net" >&2; exit 1; }
ip addr add "$ip" dev eth0
ip link set eth0 up
echo "net-setup: eth0 $ip"
