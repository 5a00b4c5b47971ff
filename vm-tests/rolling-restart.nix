# Rolling restarts under load drop nothing (DESIGN §5, §10).
#
# A client drives oha at 16 connections for 45 s while the server is
# reloaded with `systemctl reload` (Type=notify-reload: SIGHUP, RELOADING=1,
# READY=1 when the roll is done), has its app edited in place
# (reload = "process"), and is switched to a specialisation that deploys a
# new app version (a new config file: reloadTriggers, not a restart). oha's
# JSON must show no error and only 2xx answers; the server's main pid must
# not change; the new version must answer afterwards.
{ pkgs, self }:
let
  apps = import ./apps.nix { inherit pkgs; };
in
{
  name = "rip-server-rolling-restart";

  defaults.imports = [ self.nixosModules.default ];

  nodes = {
    server =
      { lib, ... }:
      {
        virtualisation.memorySize = 2048;
        virtualisation.cores = 2;

        services.rip-server = {
          enable = true;
          # A mutable directory, watched (reload = "process" is the default).
          app = "/srv/api";
          workers = 4;
          https.enable = false;
          http.port = 8080;
          openFirewall = true;
          accessLog.enable = false;
        };

        # Version 1 of the app, where services.rip-server.app points.
        systemd.services.rip-server-seed-app = {
          wantedBy = [ "rip-server.service" ];
          before = [ "rip-server.service" ];
          serviceConfig = {
            Type = "oneshot";
            RemainAfterExit = true;
          };
          script = ''
            mkdir -p /srv/api
            install -m 0644 ${apps.v1}/index.mjs /srv/api/index.mjs
          '';
        };

        # The next deploy: version 3 from the store.
        specialisation.new-version.configuration = {
          services.rip-server.app = lib.mkForce apps.v3;
        };
      };

    client =
      { pkgs, ... }:
      {
        environment.systemPackages = [
          pkgs.oha
          pkgs.curl
        ];
      };
  };

  testScript =
    { nodes, ... }:
    let
      newVersion = "${nodes.server.system.build.toplevel}/specialisation/new-version";
    in
    builtins.readFile ./load.py
    + ''
      start_all()
      server.wait_for_unit("rip-server.service")
      server.wait_for_open_port(8080)
      client.wait_for_unit("multi-user.target")
      client.wait_until_succeeds("curl -sf http://server:8080/ | grep -qx v1")
      main_pid = server.succeed("systemctl show -P MainPID rip-server").strip()

      start_load(client, "http://server:8080/", 45)
      server.wait_until_succeeds("ss -Htn state established '( sport = :8080 )' | grep -q .")

      with subtest("systemctl reload rolls the workers and waits for the roll"):
          for _ in range(3):
              server.succeed("systemctl reload rip-server")
          server.succeed("journalctl -u rip-server | grep -q 'rolling restart complete'")

      with subtest("an edit to the app rolls it (reload = process)"):
          server.succeed("sed -i s/v1/v2/ /srv/api/index.mjs")
          server.wait_until_succeeds("curl -sf http://localhost:8080/ | grep -qx v2")

      with subtest("a switch to a new app version reloads, never restarts"):
          server.succeed("${newVersion}/bin/switch-to-configuration test >&2")
          server.wait_until_succeeds("curl -sf http://localhost:8080/ | grep -qx v3")
          pid = server.succeed("systemctl show -P MainPID rip-server").strip()
          assert pid == main_pid, f"rip-server was restarted: pid {main_pid} -> {pid}"
          server.succeed("journalctl -u rip-server | grep -q 'Reloaded'")
          server.fail("journalctl -u rip-server | grep -q 'Stopping'")

      with subtest("everything above happened under load, and the load saw only 2xx"):
          assert_still_loading(client)
          finish_load(client, min_requests=1000)
          client.succeed("curl -sf http://server:8080/ | grep -qx v3")
    '';
}
