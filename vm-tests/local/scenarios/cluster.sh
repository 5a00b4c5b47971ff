# cluster: the twin of the NixOS cluster VM test.
SCENARIO_DESC="two server VMs behind strict HAProxy (third VM): node-by-node restart to a new build and app v2 under load"
SCENARIO_VMS=(lb server1 server2) # lb is the hub of the star network
SCENARIO_VERDICT_ROLE=lb
SCENARIO_CONFIGS=(base v2)
SCENARIO_SWITCHES=(base:v2)
SCENARIO_TIMEOUT=600
SCENARIO_SMP=1
SCENARIO_MEM=1536
SCENARIO_PARAMS=(LOAD_CONNS=16 LOAD_MIN_SECONDS=30 LOAD_MAX_SECONDS=400 LOAD_DELAY_MS=500 LB_PORT=80 NODE_PORT=8080)

scenario_eval_source() {
  case "$1" in
    base) echo "nix:cluster.nix" ;;
    v2) echo "nix:cluster.v2.nix" ;;
  esac
}
scenario_boot_config() { [ "$1" = lb ] || echo base; }
scenario_overlay() { # ROLE OVERLAY
  if [ "$1" = lb ]; then
    mkdir -p "$2/etc/haproxy"
    cp "$HERE/scenarios/cluster.haproxy.cfg" "$2/etc/haproxy/haproxy.cfg"
  else
    install_app "$HERE/apps/version" "$2/srv/rip/app-v1" v1
    install_app "$HERE/apps/version" "$2/srv/rip/app-v2" v2
  fi
}
