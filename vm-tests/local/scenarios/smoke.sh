# smoke: the chain works end to end on one VM.
SCENARIO_DESC="one VM: the unit starts rip-server from its store path under systemd; load; reload"
SCENARIO_VMS=(server)
SCENARIO_VERDICT_ROLE=server
SCENARIO_CONFIGS=(base)
SCENARIO_TIMEOUT=240
SCENARIO_PARAMS=(LOAD_CONNS=16 LOAD_SECONDS=8 HTTP_PORT=80)

# The smoke scenarios prove the machinery, not the module: their default input is the
# hand-written stand-in; --eval-json runs them on real eval-module.sh output.
scenario_eval_source() { echo "fixture:standin.json"; }

scenario_overlay() { # ROLE OVERLAY
  install_app "$PROJECT/apps/api" "$2/srv/rip/api"
}
