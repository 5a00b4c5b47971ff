# Two rip-server nodes behind HAProxy, deployed node by node under load with
# zero failed requests.
#
# HAProxy health-checks GET /server. The deploy switches each node to a
# specialisation with a new rip-server build and a new app version: the new
# package changes ExecStart, so the unit restarts. The stopping server
# answers /server with 503 for settings.shutdown_delay_ms while it still
# serves, HAProxy takes the node out, the listener closes, the new version
# starts, READY=1, HAProxy takes it back; then the next node. HAProxy is
# strict (retries 0, no redispatch), so zero failures shows the drain
# worked, not retries. The host-level twin is tests/cluster.rs.
{ pkgs, self }:
let
  apps = import ./apps.nix { inherit pkgs; };

  # Another build of the server: a new store path, hence a restart.
  upgraded = pkgs.symlinkJoin {
    name = "rip-server-upgraded";
    paths = [ self.packages.${pkgs.stdenv.hostPlatform.system}.default ];
    meta.mainProgram = "rip-server";
  };

  node =
    { lib, ... }:
    {
      virtualisation.memorySize = 1536;
      services.rip-server = {
        enable = true;
        app = apps.v1;
        workers = 2;
        https.enable = false;
        http.port = 8080;
        openFirewall = true;
        accessLog.enable = false;
        # Longer than HAProxy needs to see two failed checks (2 x 250 ms).
        settings.shutdown_delay_ms = 3000;
      };
      specialisation.upgrade.configuration = {
        services.rip-server = {
          app = lib.mkForce apps.v2;
          package = lib.mkForce upgraded;
        };
      };
    };
in
{
  name = "rip-server-cluster";

  defaults.imports = [ self.nixosModules.default ];

  nodes = {
    node1 = node;
    node2 = node;

    lb = {
      services.haproxy = {
        enable = true;
        config = ''
          defaults
              mode http
              timeout connect 2s
              timeout client 30s
              timeout server 30s
              timeout check 1s
              retries 0

          frontend web
              bind *:80
              default_backend nodes

          frontend stats
              bind 127.0.0.1:8404
              stats enable
              stats uri /stats

          backend nodes
              balance roundrobin
              option httpchk GET /server
              http-check expect status 200
              default-server check inter 250ms fall 2 rise 2
              server node1 node1:8080
              server node2 node2:8080
        '';
      };
      networking.firewall.allowedTCPPorts = [ 80 ];
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
      upgrade = name: "${nodes.${name}.system.build.toplevel}/specialisation/upgrade";
    in
    builtins.readFile ./load.py
    + ''
      def health(server):
          csv = lb.succeed("curl -sf 'http://127.0.0.1:8404/stats;csv'").splitlines()
          header = csv[0].lstrip("# ").split(",")
          for line in csv[1:]:
              fields = line.split(",")
              if fields[0] == "nodes" and fields[1] == server:
                  return fields[header.index("status")]
          return None

      upgrades = {"node1": "${upgrade "node1"}", "node2": "${upgrade "node2"}"}

      start_all()
      for node in [node1, node2]:
          node.wait_for_unit("rip-server.service")
          node.wait_for_open_port(8080)
      lb.wait_for_unit("haproxy.service")
      for name in upgrades:
          wait_for(f"haproxy to see {name} UP", lambda: health(name) == "UP")
      client.wait_until_succeeds("curl -sf http://lb/ | grep -qx v1")

      start_load(client, "http://lb/", 60)
      lb.wait_until_succeeds("ss -Htn state established '( sport = :80 )' | grep -q .")

      for node in [node1, node2]:
          name = node.name
          with subtest(f"{name}: drained, restarted on the new build, taken back"):
              pid = node.succeed("systemctl show -P MainPID rip-server").strip()
              node.succeed(f"{upgrades[name]}/bin/switch-to-configuration test >&2")
              assert node.succeed("systemctl show -P MainPID rip-server").strip() != pid, "not restarted"
              node.succeed("journalctl -u rip-server | grep -q 'draining: /server answers 503'")
              # Out of the pool because /server said 503, not because it vanished.
              lb.succeed(f"journalctl -u haproxy | grep -q 'nodes/{name} is DOWN, reason: Layer7 wrong status, code: 503'")
              wait_for(f"haproxy to see {name} UP again", lambda: health(name) == "UP")
              node.succeed("curl -sf http://localhost:8080/ | grep -qx v2")

      with subtest("the whole deploy happened under load, and the load saw only 2xx"):
          assert_still_loading(client)
          finish_load(client, min_requests=1000)
          client.succeed("curl -sf http://lb/ | grep -qx v2")
    '';
}
