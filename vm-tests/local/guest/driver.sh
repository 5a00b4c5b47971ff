#!/bin/bash
# The scenario driver (rip-vm-driver.service, started once at boot): runs this VM's role of
# the scenario (scenario.sh defines role_<ROLE>), prints the verdict line and powers the VM
# off, unless the VM stays up to serve the driving VM (STAY_UP=1), which powers it off
# through the agent. Any unexpected error still ends in a failed verdict and a power-off.
set -euo pipefail
source /rip-vm/params.sh
source /rip-vm/lib.sh
source /rip-vm/scenario.sh

on_exit() {
  local rc=$?
  if [ "$RESULT_DONE" != 1 ]; then
    fail driver-error "the driver stopped at line ${BASH_LINENO[0]:-?} (exit $rc)"
    driver_result || true
  fi
  if [ "${VERDICT_ROLE:-}" = "$ROLE" ]; then
    poweroff_peers
  fi
  if [ "${STAY_UP:-0}" != 1 ] || ((${#FAILED[@]})); then
    systemctl poweroff --no-block
  fi
}
trap on_exit EXIT

emit "RIP-VM-BOOT role=$ROLE uptime_s=$T_START"
"role_${ROLE//-/_}"
driver_result
