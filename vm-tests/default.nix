# The NixOS VM tests, wired into the flake's `checks`. Each scenario has a
# host-level twin in the cargo test suite that runs without VMs:
#   rolling-restart  tests/rolling.rs (reloads, app edits under load) and
#                    tests/systemd.rs (notify-reload, a switch to a new app
#                    version under load, restarts with held sockets)
#   tls-hosts        tests/tls.rs (certificates, redirect, HSTS); the host
#                    registry's tests when it lands
#   cluster          tests/cluster.rs (drain, then switch, behind HAProxy)
{ pkgs, self }:
let
  run = file: pkgs.testers.runNixOSTest (import file { inherit pkgs self; });
in
{
  vm-rolling-restart = run ./rolling-restart.nix;
  vm-tls-hosts = run ./tls-hosts.nix;
  vm-cluster = run ./cluster.nix;
}
