# socket-activation (guest): rip-server.socket listens on HTTP_PORT and hands the socket to
# rip-server.service (LISTEN_FDS). Under LOAD_CONNS connections of load (at least
# LOAD_MIN_SECONDS), RESTARTS x `systemctl restart rip-server`: each gives a new main process,
# and the load sees no refused connection, no error, no non-2xx.
URL="http://127.0.0.1:$HTTP_PORT"

role_server() {
  local svc="$UNIT.service" sock="$UNIT.socket" pid newpid i t0
  wait_for 150 socket-unit-active unit_active "$sock" || return 0
  pass socket-unit-active "$(unit_prop "$sock" Listen)"
  check socket-listens-on-the-port grep -q ":$HTTP_PORT " <<<"$(unit_prop "$sock" Listen) "
  # the service starts at boot or on the first connection; a request makes sure
  http_code "$URL/ping" >/dev/null
  server_up 150 || return 0
  pid="$(main_pid)"
  check server-got-the-socket grep -qz '^LISTEN_FDS=' "/proc/$pid/environ"
  expect_eq serves-v1 "$(http_body "$URL/version")" v1

  load_start restarts "$URL/ping" "$LOAD_CONNS" "$LOAD_MAX_SECONDS"
  sleep 3
  for i in $(seq "$RESTARTS"); do
    t0="$(uptime_s)"
    if systemctl restart "$svc"; then pass "restart-$i" "took $(took "$t0")s"; else fail "restart-$i"; fi
    newpid="$(main_pid)"
    if [ "$newpid" != "$pid" ] && [ "$newpid" != 0 ]; then
      pass "restart-$i-new-main-process" "$pid -> $newpid"
    else
      fail "restart-$i-new-main-process" "main pid $newpid (was $pid)"
    fi
    pid="$newpid"
    wait_for 150 "restart-$i-serving" body_is v1 "$URL/version" && pass "restart-$i-serving" "after $(took "$t0")s"
    check "restart-$i-got-the-socket" grep -qz '^LISTEN_FDS=' "/proc/$pid/environ"
    sleep 3
  done
  load_stop restarts "$LOAD_MIN_SECONDS"
  # the servers' own count of the load's answers (the driver's one /ping before the load aside)
  step "access log: $(($(journalctl -u "$svc" -o cat | grep -c ' access: .* path=/ping ') - 1)) answers to the load"
  check socket-unit-still-active unit_active "$sock"
}
