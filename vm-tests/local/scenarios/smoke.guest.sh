# smoke (guest): boot -> rip-server.service active (sd_notify READY=1) from the store path the
# unit names, under a dynamic user; the app answers; 16 connections of load for a few seconds
# get only 2xx; `systemctl reload` (the unit's ExecReload) rolls the workers, same main PID.
role_server() {
  local svc="$UNIT.service" pid exe
  server_up 100 || return 0
  expect_eq unit-type "$(unit_prop "$svc" Type)" "$(cfg_info base type)"
  pid="$(main_pid)"
  exe="$(readlink "/proc/$pid/exe")"
  expect_eq main-process-is-the-store-binary "$exe" "$(cfg_info base package)/bin/rip-server"
  check runs-as-a-dynamic-user test "$(stat -c %u "/proc/$pid")" -ge 61184
  expect_eq app-answers "$(http_body "http://127.0.0.1:$HTTP_PORT/ping")" pong
  expect_eq server-route "$(http_code "http://127.0.0.1:$HTTP_PORT/server")" 200
  load_start ping "http://127.0.0.1:$HTTP_PORT/ping" "$LOAD_CONNS" "$LOAD_SECONDS"
  load_stop ping "$LOAD_SECONDS"
  if systemctl reload "$svc"; then pass systemctl-reload; else fail systemctl-reload; fi
  wait_for 60 answers-after-reload body_is pong "http://127.0.0.1:$HTTP_PORT/ping" && pass answers-after-reload
  expect_eq same-main-pid-after-reload "$(main_pid)" "$pid"
}
