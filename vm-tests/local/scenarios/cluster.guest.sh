# cluster (guest): server1 and server2 run the unit; lb runs HAProxy in front of them and the
# load (16 connections through HAProxy, at least LOAD_MIN_SECONDS and until the deploy is
# done). The deploy goes node by node: switch the node to v2 through its agent (as
# switch-to-configuration decides), wait until it serves v2 and HAProxy has it up again, then
# the next. Zero failed requests; afterwards every answer through the balancer is v2.
role_server1() { role_node; }
role_server2() { role_node; }
role_node() {
  server_up 150 || return 0
  expect_eq serves-v1 "$(http_body "http://127.0.0.1:$HTTP_PORT/version")" v1
}

# haproxy_status SERVER: UP, DOWN, MAINT, ... as HAProxy's stats CSV says (column 18).
haproxy_status() {
  curl -s --max-time 5 'http://127.0.0.1:8404/stats;csv' |
    awk -F, -v s="$1" '$1 == "app" && $2 == s { print $18 }'
}
haproxy_up() { [ "$(haproxy_status "$1")" = UP ]; }
haproxy_counter() { # haproxy_counter COLUMN: the backend's value (wretr = 16, wredis = 17)
  curl -s --max-time 5 'http://127.0.0.1:8404/stats;csv' |
    awk -F, -v c="$1" '$1 == "app" && $2 == "BACKEND" { print $c }'
}

role_lb() {
  local node out action actions="" t0 i v all_v2=1
  for node in server1 server2; do
    wait_agent "$node" 150 || return 0
    peer_active "$node" 150 || return 0
  done
  if systemctl start haproxy.service; then pass haproxy-started; else fail haproxy-started; return 0; fi
  for node in server1 server2; do
    wait_for 60 "$node-up-in-haproxy" haproxy_up "$node" || return 0
  done
  expect_eq serves-v1-through-lb "$(http_body "http://127.0.0.1:$HTTP_PORT/version")" v1

  load_start cluster "http://127.0.0.1:$HTTP_PORT/ping" "$LOAD_CONNS" "$LOAD_MAX_SECONDS"
  sleep 3
  for node in server1 server2; do
    step "deploying v2 on $node"
    t0="$(uptime_s)"
    if out="$(agent_call "$node" switch v2 2>&1)"; then
      pass "$node-switch" "took $(took "$t0")s"
    else
      fail "$node-switch" "$(echo "$out" | tail -n 1)"
    fi
    action="$(sed -n 's/.*main unit: \([a-z]*\).*/\1/p' <<<"$out" | head -n1)"
    expect_eq "$node-switch-reloads" "$action" reload
    actions="$actions${actions:++}${action:-unknown}"
    wait_for 180 "$node-serves-v2" body_is v2 "http://$node:$HTTP_PORT/version" &&
      pass "$node-serves-v2" "after $(took "$t0")s"
    wait_for 60 "$node-up-in-haproxy-after-deploy" haproxy_up "$node" &&
      pass "$node-up-in-haproxy-after-deploy"
  done
  SWITCH_ACTION="$actions"
  load_stop cluster "$LOAD_MIN_SECONDS"
  step "haproxy retries=$(haproxy_counter 16) redispatches=$(haproxy_counter 17)"
  for i in $(seq 10); do
    v="$(http_body "http://127.0.0.1:$HTTP_PORT/version")"
    [ "$v" = v2 ] || all_v2=0
  done
  if ((all_v2)); then pass serves-v2-through-lb; else fail serves-v2-through-lb "last answer '$v'"; fi
}
