# rolling-restart (guest): under LOAD_CONNS (16) connections of load, for LOAD_MIN_SECONDS (30)
# at least and until every step is done:
#   RELOADS x `systemctl reload rip-server` (Type=notify-reload: returns once the roll is done),
#   an edit of the app under reload = "process" (the watcher rolls),
#   a switch to configuration v2 (new app version) done as switch-to-configuration decides;
# then: zero non-2xx, zero errors, v2 answers, the same main process throughout.
URL="http://127.0.0.1:$HTTP_PORT"

role_server() {
  local svc="$UNIT.service" pid i before t0
  server_up 150 || return 0
  expect_eq unit-type-is-notify-reload "$(unit_prop "$svc" Type)" notify-reload
  expect_eq serves-v1 "$(http_body "$URL/version")" v1
  pid="$(main_pid)"
  load_start rolling "$URL/ping" "$LOAD_CONNS" "$LOAD_MAX_SECONDS"
  sleep 3

  for i in $(seq "$RELOADS"); do
    before="$(worker_pids)"
    t0="$(uptime_s)"
    if systemctl reload "$svc"; then pass "reload-$i" "systemctl reload took $(took "$t0")s"; else fail "reload-$i"; fi
    wait_for 60 "reload-$i-rolled" has_new_pid "$before" && pass "reload-$i-rolled" "new workers after $(took "$t0")s"
    sleep 2
  done

  step "editing the app (reload = process)"
  t0="$(uptime_s)"
  printf 'export const version = "v1-edited";\n' >/srv/rip/app-v1/version.mjs
  wait_for 90 app-edit-rolled body_is v1-edited "$URL/version" && pass app-edit-rolled "after $(took "$t0")s"

  t0="$(uptime_s)"
  if switch_to v2; then pass switch-to-v2 "took $(took "$t0")s"; else fail switch-to-v2; fi
  expect_eq switch-reloads "$SWITCH_ACTION" reload
  wait_for 90 v2-after-switch body_is v2 "$URL/version" && pass v2-after-switch "after $(took "$t0")s"

  load_stop rolling "$LOAD_MIN_SECONDS"
  expect_eq same-main-pid "$(main_pid)" "$pid"
  expect_eq no-restarts "$(unit_prop "$svc" NRestarts)" 0
  expect_eq serves-v2 "$(http_body "$URL/version")" v2
}
