# tls-hosts: the twin of the NixOS TLS + hosts VM test.
SCENARIO_DESC="two hosts -> two apps over HTTPS, 80 -> 301, HSTS, public /status, DynamicUser + hardening"
SCENARIO_VMS=(server)
SCENARIO_VERDICT_ROLE=server
SCENARIO_CONFIGS=(base)
SCENARIO_TIMEOUT=300
SCENARIO_LOCAL_HOSTS="a.test b.test c.test"
SCENARIO_PARAMS=(LOAD_CONNS=16 LOAD_SECONDS=15 LOAD_DELAY_MS=250 HTTP_PORT=80 HTTPS_PORT=443)

scenario_eval_source() { echo "nix:tls-hosts.nix"; }
scenario_overlay() { # ROLE OVERLAY
  need_cmd openssl openssl
  install_app "$HERE/apps/version" "$2/srv/rip/app-a" app-a
  install_app "$HERE/apps/version" "$2/srv/rip/app-b" app-b
  mkdir -p "$2/etc/rip-vm/tls"
  # One self-signed certificate for both names; world-readable like nixpkgs' snakeoil test
  # certificates in the store (the dynamic user must read it).
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 7 -subj /CN=a.test \
    -addext "subjectAltName=DNS:a.test,DNS:b.test" \
    -keyout "$2/etc/rip-vm/tls/key.pem" -out "$2/etc/rip-vm/tls/cert.pem" 2>/dev/null ||
    die "openssl could not make the test certificate"
  chmod 0644 "$2/etc/rip-vm/tls/key.pem" "$2/etc/rip-vm/tls/cert.pem"
}
