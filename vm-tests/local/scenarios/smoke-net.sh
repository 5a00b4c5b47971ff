# smoke-net: two VMs on the private network (QEMU socket netdevs on 127.0.0.1 only).
SCENARIO_DESC="two VMs: a client reaches rip-server on the server VM over the VM network, under load"
SCENARIO_VMS=(client server) # the first is the hub of the star network
SCENARIO_VERDICT_ROLE=client
SCENARIO_CONFIGS=(base)
SCENARIO_TIMEOUT=300
SCENARIO_PARAMS=(LOAD_CONNS=16 LOAD_SECONDS=8 HTTP_PORT=80)

scenario_eval_source() { echo "fixture:standin.json"; }
scenario_boot_config() { [ "$1" = server ] && echo base || true; }
scenario_overlay() { # ROLE OVERLAY
  [ "$1" = server ] && install_app "$PROJECT/apps/api" "$2/srv/rip/api" || true
}
