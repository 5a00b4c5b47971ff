#!/bin/bash
# The per-VM agent (rip-vm-agent@.service, one instance per connection on port 7000 of the
# private VM network): lets the driving VM run a step here. One request line, one of
#   ping | wait-active SECONDS | switch CONFIG | main-pid | journal-has TEXT | status | poweroff
# and the answer is the step's output followed by "RIP-VM-AGENT-RC=<exit status>".
set -uo pipefail
source /rip-vm/params.sh
AGENT=1
source /rip-vm/lib.sh
IFS= read -r -t 30 line || exit 0
set -- $line
cmd="${1:-}"
step_here() {
  case "$cmd" in
    ping) echo "pong from $ROLE" ;;
    wait-active)
      server_up "${2:-120}" || return 1
      echo "$UNIT.service active on $ROLE" ;;
    switch) [ -n "${2:-}" ] || { echo "switch needs a configuration name"; return 2; }; switch_to "$2" ;;
    main-pid) main_pid ;;
    journal-has) # journal-has TEXT...: does the unit's journal (this boot) contain TEXT?
      shift
      journalctl -u "$UNIT.service" -o cat | grep -qF -- "$*" ;;
    status) systemctl --no-pager status "$UNIT.service" ;;
    poweroff) echo "powering off $ROLE" ;;
    *) echo "unknown agent command: $line"; return 2 ;;
  esac
}
out="$(mktemp)"
rc=0
step_here "$@" >"$out" 2>&1 || rc=$?
sed "s/^/[agent $ROLE] /" "$out" >/dev/console
cat "$out"
rm -f "$out"
echo "RIP-VM-AGENT-RC=$rc"
if [ "$cmd" = poweroff ]; then
  systemctl poweroff --no-block
fi
