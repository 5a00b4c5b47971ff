#!/bin/bash
# activate.sh CONFIG [ROOT]: make CONFIG (staged by materialise.py under ROOT/rip-vm/configs/)
# the installed configuration, as NixOS' activation does for /etc: unit files into
# /etc/systemd/system with their .wants/.requires links, environment.etc entries, sysusers
# and tmpfiles snippets. What the previous configuration (ROOT/rip-vm/current) installed and
# this one does not is removed. It does not talk to systemd: at image time ROOT is the overlay
# and systemd reads the result at boot; in the guest, switch_to (lib.sh) reloads systemd.
set -euo pipefail
cfg="$1"
root="${2:-}"
src="$root/rip-vm/configs/$cfg"
sys="$root/etc/systemd/system"
[ -d "$src/units" ] || { echo "activate.sh: configuration '$cfg' is not staged in $src" >&2; exit 1; }
mkdir -p "$sys" "$root/etc/sysusers.d" "$root/etc/tmpfiles.d"

if [ -s "$root/rip-vm/current" ]; then
  prev="$root/rip-vm/configs/$(cat "$root/rip-vm/current")"
  for f in "$prev"/units/*; do
    rm -f "$sys/$(basename "$f")"
  done
  while read -r kind target unit; do
    rm -f "$sys/$target.$kind/$unit"
  done <"$prev/links"
  while read -r _ target _; do
    rm -f "$root/etc/$target"
  done <"$prev/etc"
fi

for f in "$src"/units/*; do
  install -m 0444 "$f" "$sys/$(basename "$f")"
done
while read -r kind target unit; do
  mkdir -p "$sys/$target.$kind"
  ln -sfn "/etc/systemd/system/$unit" "$sys/$target.$kind/$unit"
done <"$src/links"
while read -r how target source mode user group; do
  mkdir -p "$(dirname "$root/etc/$target")"
  case "$how" in
    symlink) ln -sfn "$source" "$root/etc/$target" ;;
    copy) install -m "$mode" -o "${user#+}" -g "${group#+}" "$root$source" "$root/etc/$target" ;;
    *) echo "activate.sh: unknown /etc entry kind '$how'" >&2; exit 1 ;;
  esac
done <"$src/etc"
install -m 0444 "$src/sysusers.conf" "$root/etc/sysusers.d/rip-vm.conf"
install -m 0444 "$src/tmpfiles.conf" "$root/etc/tmpfiles.d/rip-vm.conf"
echo "$cfg" >"$root/rip-vm/current"
