# rolling-restart: the twin of the NixOS rolling-restart VM test.
SCENARIO_DESC="load >=16 conns >=30 s through 3 systemctl reloads, an app edit and a switch to v2"
SCENARIO_VMS=(server)
SCENARIO_VERDICT_ROLE=server
SCENARIO_CONFIGS=(base v2)
SCENARIO_SWITCHES=(base:v2)
# Its vCPUs share one host thread under TCG (run-local.sh): on a 2-core host its reloads take
# 27-40 s each and the whole run 187-324 s (seen here), so the load may last 480 s and the
# run 600 s.
SCENARIO_TIMEOUT=600
# LOAD_DELAY_MS paces each connection: under TCG a guest is ~50x slower than under KVM, and
# 16 unpaced connections would measure queueing on two workers rather than dropped requests.
SCENARIO_PARAMS=(LOAD_CONNS=16 LOAD_MIN_SECONDS=30 LOAD_MAX_SECONDS=480 LOAD_DELAY_MS=500 RELOADS=3 HTTP_PORT=80)

scenario_eval_source() {
  case "$1" in
    base) echo "nix:rolling-restart.nix" ;;
    v2) echo "nix:rolling-restart.v2.nix" ;;
  esac
}
scenario_overlay() { # ROLE OVERLAY
  install_app "$HERE/apps/version" "$2/srv/rip/app-v1" v1
  install_app "$HERE/apps/version" "$2/srv/rip/app-v2" v2
}
