# cluster (guest), as vm-tests/cluster.nix: server1 and server2 run the unit; lb runs a strict
# HAProxy in front of them (retries 0, no redispatch) and the load (16 connections through
# HAProxy, at least LOAD_MIN_SECONDS and until the deploy is done). The deploy goes node by
# node: switch the node to v2 (a new build and app version) through its agent, as
# switch-to-configuration decides: a restart, whose stop drains first (/server answers 503 for
# shutdown_delay_ms while the app is still served, so HAProxy takes the node out for a 503 and
# not because it vanished); then the new build starts, HAProxy takes it back, the next node.
# Zero failed requests; afterwards every answer through the balancer is v2.
role_server1() { role_node; }
role_server2() { role_node; }
role_node() {
  server_up 150 || return 0
  expect_eq serves-v1 "$(http_body "http://127.0.0.1:$NODE_PORT/version")" v1
}

# haproxy_status SERVER: UP, DOWN, MAINT, ... as HAProxy's stats CSV says (column 18).
haproxy_status() {
  curl -s --max-time 5 'http://127.0.0.1:8404/stats;csv' |
    awk -F, -v s="$1" '$1 == "nodes" && $2 == s { print $18 }'
}
haproxy_up() { [ "$(haproxy_status "$1")" = UP ]; }
haproxy_counter() { # haproxy_counter COLUMN: the backend's value (econ = 14, eresp = 15)
  curl -s --max-time 5 'http://127.0.0.1:8404/stats;csv' |
    awk -F, -v c="$1" '$1 == "nodes" && $2 == "BACKEND" { print $c }'
}
# taken_out_for_503 NODE: HAProxy's journal says it took NODE out because /server said 503.
taken_out_for_503() {
  journalctl -u haproxy.service -o cat | grep -q "nodes/$1 is DOWN, reason: Layer7 wrong status, code: 503"
}

role_lb() {
  local node out action actions="" t0 i v all_v2=1 pid newpid
  for node in server1 server2; do
    wait_agent "$node" 150 || return 0
    peer_active "$node" 150 || return 0
  done
  if systemctl start haproxy.service; then pass haproxy-started; else fail haproxy-started; return 0; fi
  for node in server1 server2; do
    wait_for 60 "$node-up-in-haproxy" haproxy_up "$node" || return 0
  done
  expect_eq serves-v1-through-lb "$(http_body "http://127.0.0.1:$LB_PORT/version")" v1

  load_start cluster "http://127.0.0.1:$LB_PORT/ping" "$LOAD_CONNS" "$LOAD_MAX_SECONDS"
  sleep 3
  for node in server1 server2; do
    step "deploying v2 on $node"
    pid="$(agent_call "$node" main-pid 2>/dev/null | tail -n 1)"
    t0="$(uptime_s)"
    if out="$(agent_call "$node" switch v2 2>&1)"; then
      pass "$node-switch" "took $(took "$t0")s"
    else
      fail "$node-switch" "$(echo "$out" | tail -n 1)"
    fi
    action="$(sed -n 's/.*main unit: \([a-z]*\).*/\1/p' <<<"$out" | head -n1)"
    expect_eq "$node-switch-restarts" "$action" restart
    actions="$actions${actions:++}${action:-unknown}"
    newpid="$(agent_call "$node" main-pid 2>/dev/null | tail -n 1)"
    if [ -n "$newpid" ] && [ "$newpid" != 0 ] && [ "$newpid" != "$pid" ]; then
      pass "$node-restarted" "main pid $pid -> $newpid"
    else
      fail "$node-restarted" "main pid $pid -> $newpid"
    fi
    if agent_call "$node" journal-has "draining: /server answers 503" >/dev/null 2>&1; then
      pass "$node-drained"
    else
      fail "$node-drained" "no 'draining: /server answers 503' in the unit's journal"
    fi
    check "$node-taken-out-for-503" taken_out_for_503 "$node"
    wait_for 180 "$node-serves-v2" body_is v2 "http://$node:$NODE_PORT/version" &&
      pass "$node-serves-v2" "after $(took "$t0")s"
    wait_for 60 "$node-up-in-haproxy-after-deploy" haproxy_up "$node" &&
      pass "$node-up-in-haproxy-after-deploy"
  done
  SWITCH_ACTION="$actions"
  load_stop cluster "$LOAD_MIN_SECONDS"
  step "haproxy connection errors=$(haproxy_counter 14) response errors=$(haproxy_counter 15)"
  for i in $(seq 10); do
    v="$(http_body "http://127.0.0.1:$LB_PORT/version")"
    [ "$v" = v2 ] || all_v2=0
  done
  if ((all_v2)); then pass serves-v2-through-lb; else fail serves-v2-through-lb "last answer '$v'"; fi
}
