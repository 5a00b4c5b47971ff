# tls-hosts (guest): a.test and b.test (127.0.0.1 in /etc/hosts) are two apps behind one
# rip-server over HTTPS; the certificate verifies for both names; HSTS on HTTPS answers;
# http:// answers 301 to the same https:// URL; /status is public JSON; an unknown host gets
# 404; the server runs as a dynamic user under the unit's hardening, and Node works under it
# (a too strict SystemCallFilter or MemoryDenyWriteExecute kills the workers: every app check
# and the load would fail). Load: 16 connections on each host at once.
CA=/etc/rip-vm/tls/cert.pem

role_server() {
  local svc="$UNIT.service" pid hsts loc
  server_up 150 || return 0
  pid="$(main_pid)"
  expect_eq dynamic-user "$(unit_prop "$svc" DynamicUser)" yes
  check runs-as-a-dynamic-user test "$(stat -c %u "/proc/$pid")" -ge 61184
  expect_eq protect-system-strict "$(unit_prop "$svc" ProtectSystem)" strict
  step "hardening: NoNewPrivileges=$(unit_prop "$svc" NoNewPrivileges)" \
    "MemoryDenyWriteExecute=$(unit_prop "$svc" MemoryDenyWriteExecute)" \
    "SystemCallFilter=$(unit_prop "$svc" SystemCallFilter | cut -c1-60)..." \
    "CapabilityBoundingSet=$(unit_prop "$svc" CapabilityBoundingSet)"

  expect_eq a.test-serves-app-a "$(http_body --cacert "$CA" "https://a.test:$HTTPS_PORT/version")" app-a
  expect_eq b.test-serves-app-b "$(http_body --cacert "$CA" "https://b.test:$HTTPS_PORT/version")" app-b
  check certificate-verifies-for-b.test curl -sf --cacert "$CA" -o /dev/null "https://b.test:$HTTPS_PORT/ping"
  hsts="$(http_header Strict-Transport-Security --cacert "$CA" "https://a.test:$HTTPS_PORT/ping")"
  check hsts-header grep -q 'max-age=' <<<"$hsts"
  expect_eq http-redirects "$(http_code "http://a.test:$HTTP_PORT/some/path?q=1")" 301
  loc="$(http_header Location "http://a.test:$HTTP_PORT/some/path?q=1")"
  expect_eq redirect-location "$loc" "https://a.test/some/path?q=1"
  expect_eq public-status "$(http_code --cacert "$CA" "https://a.test:$HTTPS_PORT/status")" 200
  check public-status-is-json jq -e .status <<<"$(http_body --cacert "$CA" "https://a.test:$HTTPS_PORT/status")"
  expect_eq unknown-host-404 "$(http_code -k "https://c.test:$HTTPS_PORT/ping")" 404

  # Each load runs at least LOAD_SECONDS; b drains only after a is collected (a's drain and
  # its threads' hold take about 2 x LOAD_DRAIN_S), so each may run up to a minute longer.
  load_start a "https://a.test:$HTTPS_PORT/ping" "$LOAD_CONNS" "$((LOAD_SECONDS + 60))"
  load_start b "https://b.test:$HTTPS_PORT/ping" "$LOAD_CONNS" "$((LOAD_SECONDS + 60))"
  load_stop a "$LOAD_SECONDS"
  load_stop b "$LOAD_SECONDS"
  expect_eq same-main-pid "$(main_pid)" "$pid"
  expect_eq workers-alive-after-load "$(http_body --cacert "$CA" "https://b.test:$HTTPS_PORT/version")" app-b
}
