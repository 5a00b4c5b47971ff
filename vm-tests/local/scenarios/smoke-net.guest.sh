# smoke-net (guest): the server VM runs the unit; the client VM (10.77.0.10) reaches it at
# "server" (10.77.0.11), talks to its agent, and loads it with 16 connections.
role_server() {
  server_up 150 || return 0
  expect_eq unit-type "$(unit_prop "$UNIT.service" Type)" "$(cfg_info base type)"
  check listens-on-all-addresses code_is 200 "http://10.77.0.11:$HTTP_PORT/server"
}

role_client() {
  local out
  check no-rip-server-here test ! -e "/etc/systemd/system/$UNIT.service"
  wait_agent server 150 || return 0
  peer_active server 150 || return 0
  step "rip-server active on the server VM"
  check server-route-over-the-network code_is 200 "http://server:$HTTP_PORT/server"
  expect_eq app-answers-over-the-network "$(http_body "http://server:$HTTP_PORT/ping")" pong
  out="$(agent_call server ping 2>&1 || true)"
  expect_eq agent-answers "$out" "pong from server"
  load_start net "http://server:$HTTP_PORT/ping" "$LOAD_CONNS" "$LOAD_SECONDS"
  load_stop net "$LOAD_SECONDS"
}
