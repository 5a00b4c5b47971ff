# socket-activation: the twin of the NixOS socket-activation VM test.
SCENARIO_DESC="socketActivation = true: systemctl restart rip-server under load refuses no connection"
SCENARIO_VMS=(server)
SCENARIO_VERDICT_ROLE=server
SCENARIO_CONFIGS=(base)
SCENARIO_TIMEOUT=420
SCENARIO_PARAMS=(LOAD_CONNS=16 LOAD_MIN_SECONDS=30 LOAD_MAX_SECONDS=300 LOAD_DELAY_MS=500 RESTARTS=3 HTTP_PORT=80)

scenario_eval_source() { echo "nix:socket-activation.nix"; }
scenario_overlay() { # ROLE OVERLAY
  install_app "$HERE/apps/version" "$2/srv/rip/app-v1" v1
}
